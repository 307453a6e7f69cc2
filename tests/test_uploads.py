"""PUT/GET/HEAD /files/NAME: storage, names, limits, 100-continue, atomic
replacement, and uploads caught by disconnects or by shutdown."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import (GRACE_OVER_RE, HOST, LISTENING_RE, SERVER_BIN, Server,
                      assert_error, bound, build_request, real_names,
                      temp_uploads, wait_until, warm_conn)


def put(srv, name, body, **kw):
    with srv.connect() as c:
        return c.request("PUT", f"/files/{name}", body=body, **kw)


# ---------------------------------------------------------------- basics

def test_put_new_201_replace_200_and_get_exact_bytes(server):
    """PUT new -> 201, PUT again -> 200; GET returns the exact bytes as octet-stream."""
    first = bytes(range(256)) * 40 + b"\r\n\r\n\x00end"
    second = b"replacement \x00\xff content"
    assert put(server, "blob.bin", first).status == 201
    r = server.request("GET", "/files/blob.bin")
    assert r.status == 200 and r.body == first
    assert r.header("content-type") == "application/octet-stream"
    assert put(server, "blob.bin", second).status == 200
    assert server.request("GET", "/files/blob.bin").body == second
    assert (server.data_dir / "blob.bin").read_bytes() == second
    assert real_names(server.data_dir) == ["blob.bin"]


def test_head_file_has_length_and_no_body(server):
    """HEAD /files/NAME: Content-Length of the file, octet-stream, no body."""
    data = b"x" * 12345
    assert put(server, "h.dat", data).status == 201
    with server.connect() as c:
        c.send(build_request("HEAD", "/files/h.dat") + build_request("GET", "/"))
        head = c.read_response("HEAD")
        after = c.read_response("GET")
    assert head.status == 200
    assert int(head.header("content-length")) == len(data)
    assert head.header("content-type") == "application/octet-stream"
    assert after.status == 200   # proves no body bytes followed the HEAD response


def test_empty_file(server):
    """PUT with Content-Length: 0 stores an empty file; GET returns 0 bytes."""
    assert put(server, "empty", b"").status == 201
    r = server.request("GET", "/files/empty")
    assert r.status == 200 and r.body == b"" and r.header("content-length") == "0"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_missing_file_is_404(server, method):
    """GET/HEAD of a file that does not exist -> 404."""
    with server.connect() as c:
        r = c.request(method, "/files/does-not-exist")
    assert r.status == 404


@pytest.mark.parametrize("name", ["a", "A.b_c-D9", "file.tar.gz", "x" * 128, "-dash", "_u"])
def test_valid_names_accepted(server, name):
    """NAME of 1..128 letters/digits/._- without a leading dot is accepted."""
    assert put(server, name, b"ok").status == 201
    assert server.request("GET", f"/files/{name}").body == b"ok"
    assert real_names(server.data_dir) == [name]


BAD_NAMES = ["..", ".hidden", ".", "%2e%2e", "a%2Fb", "a/b", "x" * 129,
             "a%20b", "a:b", "caf%C3%A9", "../etc", "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_bad_names_are_400_and_write_nothing(server, name, method):
    """Bad NAME (.., .hidden, %2e%2e, a%2Fb, a/b, too long, ...) -> 400; nothing written."""
    body = b"evil" if method == "PUT" else None
    with server.connect() as c:
        r = c.request(method, f"/files/{name}", body=body,
                      headers={"Connection": "close"})
    assert_error(r, 400)
    assert real_names(server.data_dir) == []
    assert not os.path.exists(server.data_dir.parent / "evil")


# ---------------------------------------------------------------- limits

def test_body_over_max_body_is_413_before_reading(start_server):
    """Content-Length > --max-body -> 413 sent without waiting for the body."""
    srv = start_server("--max-body", "1000")
    with srv.connect() as c:
        c.send(build_request("PUT", "/files/big", headers={"Content-Length": "1001"}))
        r = c.read_response(timeout=bound(3))   # we never send the body
    assert_error(r, 413)
    assert real_names(srv.data_dir) == []
    assert put(srv, "fits", b"y" * 1000).status == 201


@pytest.mark.parametrize("method, target, ok", [("POST", "/", 200), ("PUT", "/files/b", 201)])
def test_max_body_boundary(start_server, method, target, ok):
    """--max-body 10: a body of exactly 10 bytes is read and answered (POST /
    reads and discards it), 11 bytes get 413; with either framing."""
    srv = start_server("--max-body", "10")
    for framing in ("length", "chunked"):
        for size, status in ((10, ok), (11, 413)):
            body = b"x" * size
            where = f"{target}-{framing}" if method == "PUT" else target   # each PUT new: 201
            with srv.connect() as c:
                if framing == "length":
                    c.send(build_request(method, where, body=body))
                else:
                    c.send(build_request(method, where, headers={"Transfer-Encoding": "chunked"})
                           + b"%x\r\n%s\r\n0\r\n\r\n" % (size, body))
                r = c.read_response(timeout=bound(3))
            assert r.status == status, (framing, size, r.status)


def test_413_with_expect_continue_sends_no_100(start_server):
    """Too-large body with Expect: 100-continue -> 413 and no 100 Continue."""
    srv = start_server("--max-body", "10")
    with srv.connect() as c:
        c.send(build_request("PUT", "/files/big", headers={
            "Content-Length": "11", "Expect": "100-continue"}))
        r = c.read_response(timeout=bound(3))
    assert_error(r, 413)
    assert r.interim == []


def test_expect_100_continue(server):
    """Expect: 100-continue -> interim 100 before the body is sent, then 201."""
    body = b"z" * 5000
    with server.connect() as c:
        c.send(build_request("PUT", "/files/cont", headers={
            "Content-Length": str(len(body)), "Expect": "100-continue"}))
        interim = c.read_head(timeout=bound(3))
        assert interim.status == 100
        c.send(body)
        r = c.read_response("PUT")
    assert r.status == 201
    assert (server.data_dir / "cont").read_bytes() == body


def test_curl_upload_and_download(server, tmp_path):
    """curl -T (2 MiB, with Expect: 100-continue) -> 201 then 200; curl download is exact."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    url = f"http://{HOST}:{server.port}/files/curl.bin"

    def curl(*args):
        p = subprocess.run(["curl", "-sS", "--max-time", "20", *args],
                           capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout

    assert curl("-T", str(src), "-o", "/dev/null", "-w", "%{http_code}", url) == b"201"
    assert curl("-T", str(src), "-o", "/dev/null", "-w", "%{http_code}", url) == b"200"
    out = tmp_path / "out.bin"
    assert curl("-o", str(out), "-w", "%{http_code}", url) == b"200"
    assert out.read_bytes() == src.read_bytes()
    assert real_names(server.data_dir) == ["curl.bin"]


# ---------------------------------------------------------------- atomicity

@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_disconnect_mid_upload_keeps_old_file(server, how):
    """Client vanishing mid-upload: old NAME intact, no .upload-* temp files."""
    old = b"old content"
    assert put(server, "doc", old).status == 201
    c = server.connect()
    c.send(build_request("PUT", "/files/doc", headers={"Content-Length": "100000"})
           + b"n" * 50000)
    # the upload has really started: its temp file exists
    assert wait_until(lambda: temp_uploads(server.data_dir), 5), \
        real_names(server.data_dir)
    if how == "reset":
        c.reset()
    else:
        c.close()
    server.wait_threads(1, timeout=5)
    assert real_names(server.data_dir) == ["doc"]
    assert (server.data_dir / "doc").read_bytes() == old
    assert server.request("GET", "/files/doc").body == old


def test_upload_in_flight_at_sigint_completes(server):
    """Upload half-sent when SIGINT arrives: completes, 201, stored whole, exit 0."""
    body = os.urandom(200000)
    c = warm_conn(server)
    c.send(build_request("PUT", "/files/late", headers={"Content-Length": str(len(body))})
           + body[:100000])
    assert wait_until(lambda: temp_uploads(server.data_dir), 5)
    server.signal(signal.SIGINT)
    server.wait_line(r"shutdown requested by SIGINT; .*")
    c.send(body[100000:])
    r = c.read_response("PUT")
    assert r.status == 201
    assert "close" in r.connection_tokens()
    assert server.wait_exit(5) == 0
    assert (server.data_dir / "late").read_bytes() == body
    assert real_names(server.data_dir) == ["late"]


def test_forced_exit_mid_upload_keeps_old_file(start_server):
    """Grace expiring on a stalled upload: exit 1, old file intact, no temp files."""
    srv = start_server("--grace", "0.5")
    old = b"precious"
    assert put(srv, "keep", old).status == 201
    assert (srv.data_dir / "keep").read_bytes() == old
    c = warm_conn(srv)
    c.send(build_request("PUT", "/files/keep", headers={"Content-Length": "100000"})
           + b"N" * 40000)
    assert wait_until(lambda: temp_uploads(srv.data_dir), 5)
    t0 = time.monotonic()
    srv.signal(signal.SIGINT)
    assert srv.wait_exit(5) == 1
    assert time.monotonic() - t0 < bound(3.0)
    assert srv.matching(GRACE_OVER_RE)
    assert srv.lines[-1] == "exit 1: cut 1 connection(s)"
    assert real_names(srv.data_dir) == ["keep"]
    assert (srv.data_dir / "keep").read_bytes() == old


def test_second_signal_mid_upload_keeps_old_file(start_server):
    """Second SIGINT on a stalled upload: exit 1, old file intact, no temp files."""
    srv = start_server("--grace", "30")
    old = b"precious too"
    assert put(srv, "keep2", old).status == 201
    c = warm_conn(srv)
    c.send(build_request("PUT", "/files/keep2", headers={"Content-Length": "100000"})
           + b"N" * 40000)
    assert wait_until(lambda: temp_uploads(srv.data_dir), 5)
    srv.signal(signal.SIGINT)
    srv.wait_line(r"shutdown requested by SIGINT; .*")
    srv.signal(signal.SIGINT)
    assert srv.wait_exit(5) == 1
    assert real_names(srv.data_dir) == ["keep2"]
    assert (srv.data_dir / "keep2").read_bytes() == old


def test_concurrent_uploads_to_different_names(server):
    """Interleaved uploads on two connections each store their own bytes."""
    a_body, b_body = os.urandom(60000), os.urandom(70000)
    a, b = server.connect(), server.connect()
    a.send(build_request("PUT", "/files/a", headers={"Content-Length": str(len(a_body))})
           + a_body[:30000])
    b.send(build_request("PUT", "/files/b", headers={"Content-Length": str(len(b_body))})
           + b_body[:30000])
    a.send(a_body[30000:])
    b.send(b_body[30000:])
    assert a.read_response("PUT").status == 201
    assert b.read_response("PUT").status == 201
    a.close()
    b.close()
    assert (server.data_dir / "a").read_bytes() == a_body
    assert (server.data_dir / "b").read_bytes() == b_body
    assert real_names(server.data_dir) == ["a", "b"]


@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="strace is not installed (make test-deps installs it)")
def test_upload_fsyncs_renames_over_name_then_fsyncs_directory(tmp_path, monkeypatch):
    """The syscalls behind "whole or nothing, and durable", watched with
    strace: the temporary file is fsynced, then renamed over NAME (NAME is
    never unlinked, so readers always find the old file or the new one),
    then the directory is fsynced so the rename survives a crash."""
    # LeakSanitizer cannot run under ptrace (the rest of ASan can).
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    data = tmp_path / "data"
    trace = tmp_path / "trace"
    srv = Server(["-f", "-qq", "-e", "trace=openat,fsync,fdatasync,renameat,renameat2,unlinkat",
                  "-o", str(trace), SERVER_BIN, "--host", HOST, "--port", "0",
                  "--data-dir", str(data)], data, binary=shutil.which("strace"))
    try:
        srv.port = int(srv.wait_line(LISTENING_RE, bound(10)).group(1))
        for body in (b"first version\n", b"second version\n" * 1000):
            r = put(srv, "doc", body)
            assert r.status in (200, 201)
            assert (data / "doc").read_bytes() == body
        # The server is strace's child: signal it, not strace.
        with open(f"/proc/{srv.pid}/task/{srv.pid}/children") as f:
            server_pid = int(f.read().split()[0])
        os.kill(server_pid, signal.SIGINT)
        assert srv.wait_exit(bound(10)) == 0    # strace exits with its status
    finally:
        srv.kill()
    calls = [re.sub(r"^\d+\s+", "", line) for line in trace.read_text().splitlines()]
    text = "\n".join(calls)
    m = re.search(rf'openat\(AT_FDCWD, "{re.escape(str(data))}", [^)]*O_DIRECTORY[^)]*\) = (\d+)',
                  text)
    assert m, text
    data_fd = m.group(1)
    assert not re.search(r'unlinkat\(\d+, "doc"', text), "NAME was unlinked:\n" + text
    uploads = 0
    for i, call in enumerate(calls):
        m = re.match(rf'openat\({data_fd}, "(\.upload-[^"]+)", [^)]*O_CREAT[^)]*\) = (\d+)', call)
        if not m:
            continue
        tmp, fd = m.groups()
        rest = calls[i + 1:]
        fsync_file = next(k for k, c in enumerate(rest) if re.match(rf"f(data)?sync\({fd}\)\s+= 0", c)) \
            if any(re.match(rf"f(data)?sync\({fd}\)\s+= 0", c) for c in rest) else None
        rename = next((k for k, c in enumerate(rest) if re.match(
            rf'renameat2?\({data_fd}, "{re.escape(tmp)}", {data_fd}, "doc"(, 0)?\)\s+= 0', c)), None)
        fsync_dir = next((k for k, c in enumerate(rest) if rename is not None and k > rename
                          and re.match(rf"fsync\({data_fd}\)\s+= 0", c)), None)
        assert fsync_file is not None, f"{tmp} was never fsynced:\n{text}"
        assert rename is not None, f"{tmp} was never renamed over doc:\n{text}"
        assert fsync_file < rename, f"{tmp} renamed before it was fsynced:\n{text}"
        assert fsync_dir is not None, f"no fsync of the directory after the rename:\n{text}"
        uploads += 1
    assert uploads == 2, text


# ---------------------------------------------------------------- failures are logged

def test_failed_rename_is_500_logged_and_temp_removed(server):
    """NAME is a non-empty directory, so rename() fails (EISDIR): 500, one
    `conn:` log line naming the step and the error, no temporary file left,
    the directory untouched, and the server goes on."""
    (server.data_dir / "taken").mkdir()
    (server.data_dir / "taken" / "inside").write_bytes(b"x")
    r = put(server, "taken", b"new content")
    assert_error(r, 500)
    line = server.wait_line(r"conn: PUT /files/taken: 500 Internal Server Error: "
                            r"rename: (.+)")
    assert line.group(1) == os.strerror(21)     # EISDIR
    assert temp_uploads(server.data_dir) == []
    assert (server.data_dir / "taken" / "inside").read_bytes() == b"x"
    assert put(server, "other", b"fine").status == 201
