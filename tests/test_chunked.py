"""Chunked request bodies (Transfer-Encoding: chunked, RFC 9112 7.1).

PUT /files/NAME with a chunked body keeps every guarantee of a
Content-Length upload; the strict framing rules of the chunk decoder
(http_chunked_decode) are checked here through the real server, one
malformed shape per case, with the hostile-input contract of
test_hostile.check_hostile (short error, Connection: close, EOF, nothing on
disk, the next client served).  Names in the ids follow Http11Probe's
SMUG-CHUNK-* / SMUG-TE-* / COMP-CHUNKED-* tests where one matches.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (GRACE_OVER_RE, HOST, assert_error, build_request, check_hostile,
                      real_names, temp_uploads, wait_until, warm_conn)


TE = ("Transfer-Encoding", "chunked")


def chunked(data, size=None):
    """data as a chunked body: chunks of `size` bytes (one chunk if None)."""
    out = b""
    step = size or max(len(data), 1)
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def put_raw(name, raw_body, headers=(TE,)):
    """Bytes of a PUT /files/NAME with the given (already framed) body."""
    return build_request("PUT", f"/files/{name}", headers=list(headers)) + raw_body


def put_chunked(srv, name, raw_body, headers=(TE,)):
    with srv.connect() as c:
        c.send(put_raw(name, raw_body, headers))
        return c.read_response("PUT")


# ---------------------------------------------------------------- storing

def test_chunked_put_stores_decoded_bytes_201_then_200(server):
    """Chunked PUT -> 201 and the decoded bytes on disk; again -> 200, replaced."""
    first = bytes(range(256)) * 100 + b"0\r\n\r\n"
    r = put_chunked(server, "c.bin", chunked(first, 1000))
    assert r.status == 201
    assert (server.data_dir / "c.bin").read_bytes() == first
    second = os.urandom(70000)
    assert put_chunked(server, "c.bin", chunked(second, 65536)).status == 200
    assert server.request("GET", "/files/c.bin").body == second
    assert real_names(server.data_dir) == ["c.bin"]


def test_chunked_empty_body_stores_empty_file(server):
    """COMP-CHUNKED-EMPTY: only the last chunk -> 201, an empty file."""
    assert put_chunked(server, "empty", b"0\r\n\r\n").status == 201
    assert (server.data_dir / "empty").read_bytes() == b""


@pytest.mark.parametrize("raw,data", [
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    (b"5;name\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b"5;a=b;c=\"x y;\\\"q\\\"\"\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nContent-Length: 50\r\n\r\n", b"hello"),
    (b"1\r\nh\r\n1\r\ni\r\n0\r\n\r\n", b"hi"),
], ids=["hex-upper", "hex-lower", "leading-zeros", "extension", "quoted-extension",
        "trailers-discarded", "many-chunks"])
def test_valid_chunked_shapes_are_stored(server, raw, data):
    """COMP-CHUNKED-HEX-UPPERCASE/-EXTENSION/-TRAILER-VALID, SMUG-TRAILER-CL: valid shapes -> 201, data decoded, extensions and trailers ignored."""
    with server.connect() as c:
        c.send(put_raw("v", raw) + build_request("GET", "/files/v"))
        assert c.read_response("PUT").status == 201
        # The pipelined GET proves the decoder stopped exactly at the
        # body's end (a trailer's Content-Length framed nothing).
        after = c.read_response("GET")
    assert after.status == 200 and after.body == data


@pytest.mark.parametrize("value", ["chunked", "Chunked", "CHUNKED", "chunked ",
                                   "\tchunked"],
                         ids=["lower", "SMUG-TE-CASE-MISMATCH", "upper",
                              "SMUG-TE-TRAILING-SPACE", "SMUG-TE-TAB-BEFORE-VALUE"])
def test_transfer_encoding_chunked_spellings_accepted(server, value):
    """Coding names are case-insensitive (RFC 9112 7) and OWS around a field value is not part of it."""
    r = put_chunked(server, "s", chunked(b"spelled"), headers=[("Transfer-Encoding", value)])
    assert r.status == 201
    assert (server.data_dir / "s").read_bytes() == b"spelled"


def test_chunked_body_sent_byte_by_byte(server):
    """The decoder is incremental: a body sent one byte per packet is stored whole."""
    data = b"incremental " * 20
    raw = chunked(data, 7).replace(b"\r\n0\r\n", b"\r\n0;e=\"q\"\r\nT: v\r\n")
    with server.connect() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(build_request("PUT", "/files/slow", headers=[TE]))
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
        r = c.read_response("PUT")
    assert r.status == 201
    assert (server.data_dir / "slow").read_bytes() == data


def test_chunked_expect_100_continue(server):
    """Expect: 100-continue with a chunked body: 100, then the body, then 201."""
    with server.connect() as c:
        c.send(build_request("PUT", "/files/e", headers=[TE, ("Expect", "100-continue")]))
        assert c.read_head(timeout=5).status == 100
        c.send(chunked(b"after continue"))
        assert c.read_response("PUT").status == 201
    assert (server.data_dir / "e").read_bytes() == b"after continue"


def test_chunked_put_keeps_connection_alive(server):
    """After a chunked PUT the connection stays open for the next request."""
    with server.connect() as c:
        c.send(put_raw("k", chunked(b"one")))
        r = c.read_response("PUT")
        assert r.status == 201 and "close" not in r.connection_tokens()
        assert c.request("GET", "/files/k").body == b"one"


def curl(*args, stdin=None, timeout=60):
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args],
                       stdin=stdin, capture_output=True, timeout=timeout + 10)
    assert p.returncode == 0, p.stderr
    return p


def test_curl_T_dash_round_trips_50_mb_chunked(server, tmp_path):
    """`curl -T -` (stdin, so chunked) uploads 50 MB -> 201; the download is identical."""
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    url = f"http://{HOST}:{server.port}/files/stream.bin"
    with open(src, "rb") as stdin:
        p = curl("-v", "-T", "-", "-o", "/dev/null", "-w", "%{http_code}", url, stdin=stdin)
    assert p.stdout == b"201"
    assert re.search(rb"(?im)^> transfer-encoding: chunked\r?$", p.stderr), p.stderr[-2000:]
    out = tmp_path / "out.bin"
    assert curl("-o", str(out), "-w", "%{http_code}", url).stdout == b"200"
    assert out.stat().st_size == 50 << 20
    with open(src, "rb") as a, open(out, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            assert x == y
            if not x:
                break
    assert real_names(server.data_dir) == ["stream.bin"]


# ---------------------------------------------------------------- the upload guarantees

def test_chunked_upload_goes_through_temp_fsync_rename_dir_fsync(server):
    """strace of the server: the chunked body is written to a .upload-* temp file, fsynced, renamed over NAME, then the directory is fsynced."""
    if shutil.which("strace") is None:
        pytest.skip("strace not installed")
    log = server.data_dir.parent / "strace.log"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(server.pid), "-o", str(log),
                               "-e", "trace=openat,fsync,rename,renameat,renameat2"],
                              stderr=subprocess.PIPE)
    try:
        # strace prints nothing when attached; a traced request shows it is.
        attached = wait_until(lambda: tracer.poll() is not None
                              or server.request("GET", "/files/probe").status == 404
                              and log.exists() and log.stat().st_size > 0, 10, 0.1)
        if tracer.poll() is not None or not attached:
            pytest.skip(f"strace cannot attach here: {tracer.stderr.read()!r}")
        with server.connect() as c:
            c.send(put_raw("durable", chunked(b"d" * 100000, 4096)))
            assert c.read_response("PUT").status == 201
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    text = log.read_text()
    m = re.search(r'openat\(\d+, "(\.upload-[^"]+)", [^)]*O_EXCL[^)]*\) = (\d+)', text)
    assert m, text
    tmp, fd = m.group(1), m.group(2)
    rest = text[m.end():]
    fsync_file = re.search(rf"fsync\({fd}[)<]", rest)
    rename = re.search(rf'rename\w*\(\d+, "{re.escape(tmp)}", \d+, "durable"', rest)
    assert fsync_file and rename, text
    assert fsync_file.start() < rename.start()
    assert re.search(r"fsync\(\d+", rest[rename.end():]), "no directory fsync after the rename"
    assert (server.data_dir / "durable").read_bytes() == b"d" * 100000


@pytest.mark.parametrize("how", ["close", "reset", "half-close"])
def test_client_gone_mid_chunked_upload_keeps_old_file(server, how):
    """Client closing, resetting or half-closing (body ends before the last chunk) mid-upload: old NAME intact, no temp file."""
    old = b"old content"
    assert put_chunked(server, "doc", chunked(old)).status == 201
    c = server.connect()
    c.send(put_raw("doc", b"10000\r\n" + b"n" * 50000))
    assert wait_until(lambda: temp_uploads(server.data_dir), 5), real_names(server.data_dir)
    if how == "reset":
        c.reset()
    elif how == "close":
        c.close()
    else:
        c.sock.shutdown(socket.SHUT_WR)
        assert c.expect_eof(5.0) == "eof"    # a cut upload: nothing to answer
        c.close()
    server.wait_threads(1, timeout=5)
    assert real_names(server.data_dir) == ["doc"]
    assert (server.data_dir / "doc").read_bytes() == old


def test_chunked_upload_in_flight_at_sigint_completes(server):
    """Chunked upload half-sent when SIGINT arrives: completes, 201 with close, stored whole, exit 0."""
    body = os.urandom(200000)
    raw = chunked(body, 30000)
    c = warm_conn(server)
    c.send(build_request("PUT", "/files/late", headers=[TE]) + raw[:100000])
    assert wait_until(lambda: temp_uploads(server.data_dir), 5)
    server.signal(signal.SIGINT)
    server.wait_line(r"shutdown requested by SIGINT; .*")
    c.send(raw[100000:])
    r = c.read_response("PUT")
    assert r.status == 201
    assert "close" in r.connection_tokens()
    assert server.wait_exit(5) == 0
    assert (server.data_dir / "late").read_bytes() == body
    assert real_names(server.data_dir) == ["late"]


def test_chunked_upload_cut_at_grace_deadline_keeps_old_file(start_server):
    """Grace expiring on a stalled chunked upload: exit 1, old file intact, no temp files."""
    srv = start_server("--grace", "0.5")
    old = b"precious"
    assert put_chunked(srv, "keep", chunked(old)).status == 201
    c = warm_conn(srv)
    c.send(put_raw("keep", b"100000\r\n" + b"N" * 40000))
    assert wait_until(lambda: temp_uploads(srv.data_dir), 5)
    t0 = time.monotonic()
    srv.signal(signal.SIGINT)
    assert srv.wait_exit(5) == 1
    assert time.monotonic() - t0 < 3.0
    assert srv.matching(GRACE_OVER_RE)
    assert real_names(srv.data_dir) == ["keep"]
    assert (srv.data_dir / "keep").read_bytes() == old


def test_stalled_chunked_upload_gets_408(start_server):
    """--header-timeout 1: a chunked body that stalls gets 408 + close within ~1 s; temp removed, old file kept."""
    srv = start_server("--header-timeout", "1")
    assert put_chunked(srv, "doc", chunked(b"previous")).status == 201
    with srv.connect(timeout=10) as c:
        c.send(put_raw("doc", b"3e8\r\n0123456789"))
        stalled_at = time.monotonic()
        assert wait_until(lambda: temp_uploads(srv.data_dir), 5)
        r = c.read_response(timeout=10)
        elapsed = time.monotonic() - stalled_at
        assert_error(r, 408)
        assert "close" in r.connection_tokens()
        assert temp_uploads(srv.data_dir) == []
    assert 0.8 <= elapsed <= 3.0, elapsed
    assert (srv.data_dir / "doc").read_bytes() == b"previous"


@pytest.mark.parametrize("raw", [
    b"3e9\r\n",
    b"200\r\n" + b"a" * 512 + b"\r\n1ea\r\n",
    b"3e8\r\n" + b"a" * 1000 + b"\r\n1\r\n",
    b"ffffffffffffffff\r\n",
], ids=["one-chunk", "second-chunk", "one-byte-over", "2^64-1"])
def test_chunked_over_max_body_is_413_before_its_data(start_server, raw):
    """--max-body 1000: the chunk size that takes the decoded total past it -> 413 at once, before its data is sent; nothing stored."""
    srv = start_server("--max-body", "1000")
    # Only the size line of the offending chunk goes out: the 413 must
    # arrive without its data.
    r = check_hostile(srv, put_raw("big", raw), 413, may_start_upload=True)
    assert r.interim == []
    assert real_names(srv.data_dir) == []


def test_chunked_of_exactly_max_body_is_accepted(start_server):
    """--max-body 1000: 1000 decoded bytes in several chunks -> 201."""
    srv = start_server("--max-body", "1000")
    data = os.urandom(1000)
    assert put_chunked(srv, "fits", chunked(data, 300)).status == 201
    assert (srv.data_dir / "fits").read_bytes() == data


# ---------------------------------------------------------------- malformed framing

BAD_CHUNKED = {
    # chunk size
    "empty-size": b"\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-HEX-PREFIX": b"0x5\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-NEGATIVE": b"-5\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-SIZE-PLUS": b"+5\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-LEADING-SP": b" 5\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-SIZE-TRAILING-OWS": b"5 \r\nhello\r\n0\r\n\r\n",
    "size-trailing-tab": b"5\t\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-UNDERSCORE": b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    "not-hex": b"g\r\nhello\r\n0\r\n\r\n",
    "17-digits": b"00000000000000005\r\nhello\r\n0\r\n\r\n",
    "COMP-CHUNK-SIZE-OVERFLOW": b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-INVALID-SIZE-DESYNC": b"5x\r\nhello\r\n0\r\n\r\n",
    # line endings
    "SMUG-CHUNK-LF-TERM-size": b"5\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-BARE-CR-TERM": b"5\rhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-LF-TERM-data": b"5\r\nhello\n0\r\n\r\n",
    "data-bare-cr": b"5\r\nhello\r0\r\n\r\n",
    "SMUG-CHUNK-MISSING-TRAILING-CRLF": b"5\r\nhello0\r\n\r\n",
    "SMUG-CHUNK-SPILL": b"5\r\nhello!!\r\n0\r\n\r\n",
    "last-chunk-lf": b"5\r\nhello\r\n0\n\r\n",
    "final-bare-lf": b"5\r\nhello\r\n0\r\n\n",
    # extensions
    "SMUG-CHUNK-BARE-SEMICOLON": b"5;\r\nhello\r\n0\r\n\r\n",
    "ext-space-before-semicolon": b"5 ;a\r\nhello\r\n0\r\n\r\n",
    "ext-space-after-semicolon": b"5; a\r\nhello\r\n0\r\n\r\n",
    "ext-empty-name": b"5;=b\r\nhello\r\n0\r\n\r\n",
    "ext-empty-value": b"5;a=\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-EXT-INVALID-TOKEN": b"5;a[b]\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-EXT-CTRL": b"5;a\x01\r\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-EXT-LF": b"5;a\nhello\r\n0\r\n\r\n",
    "SMUG-CHUNK-EXT-CR": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    "ext-quote-unterminated": b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
    "ext-quote-ctrl": b"5;a=\"\x00\"\r\nhello\r\n0\r\n\r\n",
    "ext-after-quote": b"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",
    # trailers
    "SMUG-CHUNK-LF-TRAILER": b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
    "trailer-obs-fold": b"5\r\nhello\r\n0\r\nX-T: 1\r\n folded\r\n\r\n",
    "trailer-no-colon": b"5\r\nhello\r\n0\r\nNoColon\r\n\r\n",
    "trailer-space-before-colon": b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",
    "trailer-nul": b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n",
    "trailer-empty-name": b"5\r\nhello\r\n0\r\n: v\r\n\r\n",
    "trailer-name-space": b"5\r\nhello\r\n0\r\nX T: 1\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(BAD_CHUNKED.values()), ids=list(BAD_CHUNKED))
@pytest.mark.parametrize("method,target", [("PUT", "/files/bad"), ("POST", "/")],
                         ids=["put", "post"])
def test_malformed_chunked_body_is_400(server, raw, method, target):
    """Every malformed chunk shape -> 400 + close, nothing stored; a body no route stores is judged the same."""
    check_hostile(server, build_request(method, target, headers=[TE]) + raw, 400,
                  may_start_upload=True)


def test_64k_chunk_extension_is_400(server):
    """SMUG-CHUNK-EXT-LONG: a 64 KiB chunk extension -> 400 (the size line is bounded)."""
    raw = b"5;a=" + b"b" * 65536 + b"\r\nhello\r\n0\r\n\r\n"
    check_hostile(server, put_raw("ext", raw), 400, may_start_upload=True)


def test_long_chunk_extension_within_bound_is_ignored(server):
    """A 1000-byte extension (under the 1024-byte size-line bound) is ignored: 201."""
    raw = b"5;a=" + b"b" * 994 + b"\r\nhello\r\n0\r\n\r\n"
    assert put_chunked(server, "ext", raw).status == 201


@pytest.mark.parametrize("raw", [
    b"5\r\nhello\r\n0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(101)) + b"\r\n",
    b"5\r\nhello\r\n0\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
], ids=["101-fields", "20k-field"])
def test_oversized_trailers_are_431(server, raw):
    """Trailers are held to the head's limits (100 fields, 16 KiB) -> 431."""
    check_hostile(server, put_raw("tr", raw), 431, may_start_upload=True)


# ---------------------------------------------------------------- Transfer-Encoding values

@pytest.mark.parametrize("headers,status", [
    ([("Transfer-Encoding", "chunked, gzip")], 400),
    ([("Transfer-Encoding", "identity")], 400),
    ([("Transfer-Encoding", "xchunked")], 400),
    ([("Transfer-Encoding", "chunked;a=b")], 400),
    ([("Transfer-Encoding", "")], 400),
    ([("Transfer-Encoding", ",chunked")], 400),
    ([("Transfer-Encoding", "chunked,")], 400),
    ([("Transfer-Encoding", "gzip,,chunked")], 400),
    ([("Transfer-Encoding", "chunked, chunked")], 400),
    ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], 400),
    ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")], 400),
    ([("Transfer-Encoding", "\x0bchunked")], 400),
    ([("Transfer-Encoding", "\x0cchunked")], 400),
    ([("Transfer-Encoding", "gzip, chunked")], 501),
    ([("Transfer-Encoding", "deflate,chunked")], 501),
], ids=["SMUG-TE-NOT-FINAL-CHUNKED", "SMUG-TE-IDENTITY", "SMUG-TE-XCHUNKED",
        "SMUG-CHUNKED-WITH-PARAMS", "SMUG-TE-EMPTY-VALUE", "SMUG-TE-LEADING-COMMA",
        "SMUG-TE-TRAILING-COMMA", "empty-element", "SMUG-TE-DOUBLE-CHUNKED",
        "two-te-lines", "SMUG-TE-DUPLICATE-HEADERS", "SMUG-TE-VTAB", "SMUG-TE-FORMFEED",
        "gzip-then-chunked", "deflate-then-chunked"])
def test_transfer_encoding_values(server, headers, status):
    """chunked not last, chunked twice, empty elements, two TE lines -> 400; an unimplemented coding before chunked -> 501."""
    check_hostile(server, put_raw("te", chunked(b"hello"), headers), status,
                  may_start_upload=True)


@pytest.mark.parametrize("headers", [
    [TE, ("Content-Length", "5")],
    [("Content-Length", "5"), TE],
    [("Content-Length", "100"), TE],
], ids=["SMUG-TECL", "SMUG-CLTE", "SMUG-CLTE-DESYNC"])
@pytest.mark.parametrize("method,target", [("PUT", "/files/x"), ("GET", "/")])
def test_transfer_encoding_with_content_length_is_400(server, headers, method, target):
    """SMUG-CL-TE-BOTH: Transfer-Encoding and Content-Length together -> 400 + close, in either order."""
    raw = build_request(method, target, headers=headers) + chunked(b"hello")
    check_hostile(server, raw, 400, may_start_upload=True)


def test_transfer_encoding_in_http10_is_400(server):
    """SMUG-TE-HTTP10: Transfer-Encoding in an HTTP/1.0 request -> 400 + close."""
    raw = build_request("PUT", "/files/x", headers=[TE], version="HTTP/1.0") + chunked(b"hi")
    check_hostile(server, raw, 400, may_start_upload=True)


@pytest.mark.parametrize("method,target,status", [
    ("GET", "/", 200), ("POST", "/", 200), ("PUT", "/", 405),
    ("GET", "/files/none", 404),
])
def test_chunked_body_on_other_routes_is_read_and_discarded(server, method, target, status):
    """COMP-CHUNKED-BODY on routes that store nothing: the body is read to its end and discarded, then the route's answer; nothing stored."""
    with server.connect() as c:
        c.send(build_request(method, target, headers=[TE]) + chunked(b"x" * 5000, 1000))
        r = c.read_response(method)
    assert r.status == status
    assert real_names(server.data_dir) == []
