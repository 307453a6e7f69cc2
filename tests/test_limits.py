"""Slow and greedy clients, and a process short of resources: header
timeouts, many half-sent heads, no descriptors left, pthread_create failing,
a full disk, thousands of connections, and uploads left behind by a killed
server."""

import fcntl
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (SERVER_BIN, HOST, SHUTDOWN_RE, assert_error, bound, build_request,
                      cpu_seconds, proc_status, real_names, temp_uploads,
                      wait_until, warm_conn)

PARTIAL_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
STALE_RE = r"removed (\d+) unfinished upload\(s\) left by a killed server"


def put(srv, name, body):
    with srv.connect() as c:
        return c.request("PUT", f"/files/{name}", body=body)


# ---------------------------------------------------------------- header timeout

def trickle_until_answered(c, first, trickle, budget=8.0):
    """Send first, then trickle one byte about every 100 ms until the server
    answers.  Returns the seconds from sending first to the answer."""
    t0 = time.monotonic()
    c.send(first)
    for i in range(len(trickle)):
        if not c.send_tolerant(trickle[i:i + 1]):
            break
        # The pause between two bytes is a wait for the answer.
        if select.select([c.sock], [], [], 0.1)[0]:
            return time.monotonic() - t0
        if time.monotonic() - t0 > budget:
            break
    if select.select([c.sock], [], [], 1.0)[0]:
        return time.monotonic() - t0
    raise AssertionError(f"no answer after trickling for {time.monotonic() - t0:.1f} s")


def assert_408_and_closed(c):
    r = c.read_response(timeout=5)
    assert_error(r, 408)
    assert "close" in r.connection_tokens()
    assert c.expect_eof(5.0) == "eof"


def test_trickled_head_gets_408_within_header_timeout(start_server):
    """--header-timeout 1: a head trickled one byte per 100 ms gets 408 + close within ~1 s."""
    srv = start_server("--header-timeout", "1")
    with srv.connect(timeout=10) as c:
        answered = trickle_until_answered(c, b"GET / HTTP/1.1\r\n",
                                          b"X-Slow: " + b"a" * 200)
        assert_408_and_closed(c)
    assert 0.8 <= answered <= bound(3.0), answered
    assert srv.request("GET", "/").status == 200


@pytest.mark.slow(2.5)
def test_idle_keepalive_connection_closed_after_keepalive_timeout(start_server):
    """--keepalive-timeout 1: a keep-alive connection that stays silent after
    its answer is closed with a clean EOF about a second later, not before,
    so a client cannot hold a thread (and a --max-conns slot) for ever."""
    srv = start_server("--keepalive-timeout", "1")
    with warm_conn(srv, timeout=10) as c:
        t0 = time.monotonic()
        assert c.expect_eof(bound(10.0)) == "eof"
        elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= bound(3.0), elapsed
    assert srv.request("GET", "/").status == 200


def test_trickled_next_request_on_keepalive_gets_408(start_server):
    """--header-timeout 1 on keep-alive: idle time does not count, but a next head trickled from its first byte gets 408 within ~1 s."""
    srv = start_server("--header-timeout", "1")
    with warm_conn(srv, timeout=10) as c:
        # Idle for longer than the header timeout: that is allowed.
        assert c.expect_eof(1.5) == "timeout", "idle keep-alive closed by the header timeout"
        assert c.request("GET", "/").status == 200
        answered = trickle_until_answered(c, b"G", b"ET / HTTP/1.1\r\nX-Slow: " + b"a" * 200)
        assert_408_and_closed(c)
    assert 0.8 <= answered <= bound(3.0), answered


def test_next_request_in_two_pieces_after_a_long_idle_is_served(start_server):
    """--header-timeout 1: the head's clock starts at its first byte, not at
    the end of the last response.  After 1.5 s idle, a head sent in two
    pieces 0.3 s apart is answered 200, not 408 at once."""
    srv = start_server("--header-timeout", "1")
    with warm_conn(srv, timeout=10) as c:
        assert c.expect_eof(1.5) == "timeout", "idle keep-alive closed by the header timeout"
        c.send(b"GET / HTTP/1.1\r\n")
        assert c.expect_eof(0.3) == "timeout", "answered half a head"
        c.send(b"Host: x\r\n\r\n")
        assert c.read_response().status == 200


def test_silent_connection_closed_after_header_timeout(start_server):
    """--header-timeout 1: a connection that sends nothing is closed silently (EOF, no bytes) after ~1 s."""
    srv = start_server("--header-timeout", "1")
    with srv.connect(timeout=10) as c:
        t0 = time.monotonic()
        assert c.expect_eof(10.0) == "eof"     # fails if any byte arrives
        elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= bound(3.0), elapsed
    assert srv.request("GET", "/").status == 200


def test_stalled_upload_gets_408_and_temp_file_removed(start_server):
    """--header-timeout 1: a PUT whose body stalls gets 408 + close, its .upload-* is removed, the old file stays."""
    srv = start_server("--header-timeout", "1")
    old = b"previous version"
    assert put(srv, "doc.txt", old).status == 201
    with srv.connect(timeout=10) as c:
        c.send(build_request("PUT", "/files/doc.txt",
                             headers={"Content-Length": "1000"}) + b"0123456789")
        stalled_at = time.monotonic()
        assert wait_until(lambda: temp_uploads(srv.data_dir), 5), \
            "the upload never started"
        r = c.read_response(timeout=10)
        elapsed = time.monotonic() - stalled_at
        assert_error(r, 408)
        assert "close" in r.connection_tokens()
        # The temporary file is unlinked before the answer is sent.
        assert temp_uploads(srv.data_dir) == []
        assert c.expect_eof(5.0) == "eof"
    assert 0.8 <= elapsed <= bound(3.0), elapsed
    assert real_names(srv.data_dir) == ["doc.txt"]
    assert (srv.data_dir / "doc.txt").read_bytes() == old
    assert srv.request("GET", "/files/doc.txt").body == old


# ---------------------------------------------------------------- many slow clients

def test_300_half_sent_heads_do_not_delay_a_normal_client(start_server):
    """300 connections each holding a half-sent head: a normal GET / still completes within 1 s."""
    # --header-timeout 60: the heads stay half-sent for the whole test
    srv = start_server("--max-conns", "1000", "--header-timeout", "60")
    slow = []
    try:
        for _ in range(300):
            c = srv.connect(timeout=10)
            c.send(PARTIAL_HEAD)
            slow.append(c)
        srv.wait_threads(301, timeout=30)     # every one of them was accepted
        t0 = time.monotonic()
        r = srv.request("GET", "/")
        elapsed = time.monotonic() - t0
        assert r.status == 200
        assert elapsed < bound(1.0), elapsed
        # its thread ends; none of the slow clients was dropped meanwhile
        srv.wait_threads(301, timeout=10)
    finally:
        for c in slow:
            c.close()
    srv.wait_threads(1, timeout=10)


# ---------------------------------------------------------------- descriptors

NOFILE = 48


def _nofile_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.mark.serial     # measures the CPU time the server burns
def test_out_of_descriptors_pauses_accepts_without_spinning(start_server):
    """Out of descriptors (RLIMIT_NOFILE 48, 80 clients): accepts pause (no busy loop), every client is served later."""
    srv = start_server("--header-timeout", "60", preexec_fn=_nofile_limit)
    srv.wait_line(rf"descriptor limit {NOFILE} is below .*", timeout=0)
    clients = []
    try:
        # Heads without their final CRLF: each accepted client holds its
        # descriptor until we finish the head; the rest wait in the backlog.
        head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        for _ in range(80):
            c = srv.connect(timeout=20)
            c.send(head)
            clients.append(c)
        srv.wait_line(r"server: accept: Too many open files; pausing accepts", timeout=10)
        assert wait_until(lambda: srv.fd_count() == NOFILE, 10), srv.fd_count()
        held = srv.threads()

        # Measure the CPU the server burns while it cannot accept.  A loop
        # that polls the still-readable listener again at once spins a core.
        paused = r"server: accept: Too many open files; pausing accepts"
        cpu0, t0 = cpu_seconds(srv.pid), time.monotonic()
        pauses0 = len(srv.matching(paused))
        time.sleep(1.5)                         # the measurement window
        cpu = cpu_seconds(srv.pid) - cpu0
        window = time.monotonic() - t0
        # Each failed accept logs a line: one per 100 ms pause, or thousands
        # a second from a loop that spins.  Unlike the CPU time, the count
        # does not depend on how much CPU a loaded machine leaves the server.
        pauses = len(srv.matching(paused)) - pauses0
        assert pauses <= 3 * window / 0.1, f"{pauses} failed accepts in {window:.2f} s"
        assert srv.fd_count() == NOFILE and srv.threads() == held, \
            "descriptors were not exhausted for the whole window"
        assert cpu < bound(0.3), f"server used {cpu:.2f} s CPU in {window:.2f} s while out of fds"
        assert srv.running()

        # Finish every head: the accepted ones are answered and closed, which
        # frees descriptors for the ones still in the backlog.
        for c in clients:
            c.send(b"\r\n")
        for i, c in enumerate(clients):
            r = c.read_response(timeout=20)
            assert r.status == 200, f"client {i}: {r.status}"
    finally:
        for c in clients:
            c.close()
    assert srv.request("GET", "/").status == 200
    srv.wait_threads(1, timeout=10)


# ---------------------------------------------------------------- threads

def test_pthread_create_failure_answers_503_and_recovers(start_server):
    """pthread_create failing (RLIMIT_AS too low for a new stack) -> 503 + Retry-After, logged; serves again once possible."""
    with open(SERVER_BIN, "rb") as f:
        if b"__asan_init" in f.read():
            # ASan maps per-thread state of its own when a thread starts
            # and aborts when that fails, before pthread_create can return
            # EAGAIN: the limit tests ASan, not the server.
            pytest.skip("an address-space limit aborts AddressSanitizer itself")
    srv = start_server()
    # Let the process create every malloc arena it will ever want (glibc
    # caps them at 8 per core) while memory is plentiful: later threads
    # then reuse arenas, and the only new mapping a connection needs is
    # its thread's stack, which is what must fail.
    n_warm = min(8 * (os.cpu_count() or 1) + 2, 200)
    warm = [warm_conn(srv) for _ in range(n_warm)]
    for c in warm:
        c.close()
    srv.wait_threads(1, timeout=10)

    old = resource.prlimit(srv.pid, resource.RLIMIT_AS)
    vm = int(proc_status(srv.pid, "VmSize")) * 1024
    limit = vm + 3 * 512 * 1024     # room for a few 256 KiB stacks, not for 50
    # Only the soft limit: raising a hard limit back needs CAP_SYS_RESOURCE.
    resource.prlimit(srv.pid, resource.RLIMIT_AS, (limit, old[1]))
    conns, rejected = [], None
    try:
        for _ in range(n_warm + 50):
            c = srv.connect(timeout=10)
            r = c.request("GET", "/")
            if r.status == 503:
                rejected = r
                assert c.expect_eof(5.0) == "eof"
                c.close()
                break
            assert r.status == 200
            conns.append(c)
        assert rejected is not None, \
            f"no 503 after {len(conns)} connections (VmSize {proc_status(srv.pid, 'VmSize')} kB)"
        assert_error(rejected, 503)
        assert rejected.header("retry-after") is not None
        assert "close" in rejected.connection_tokens()
        srv.wait_line(r"server: pthread_create: Resource temporarily unavailable", timeout=5)
        assert srv.running()
        # the connections that got a thread still work
        assert conns and conns[0].request("GET", "/").status == 200
    finally:
        if srv.running():
            resource.prlimit(srv.pid, resource.RLIMIT_AS, old)
        for c in conns:
            c.close()
    srv.wait_threads(1, timeout=10)
    assert srv.request("GET", "/").status == 200
    more = [warm_conn(srv) for _ in range(len(conns) + 5)]
    for c in more:
        c.close()


# ---------------------------------------------------------------- disk full

def test_disk_full_upload_is_507_and_old_file_kept(start_server, tmp_path):
    """Disk full (1 MiB tmpfs): a 2 MiB PUT -> 507, temp file removed, old file intact, server keeps serving."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {p.stderr.strip()}")
    srv = None
    try:
        data = mnt / "data"
        srv = start_server(data_dir=data)
        old = b"keep me\n"
        assert put(srv, "keep.txt", old).status == 201

        body = os.urandom(2 * 1024 * 1024)
        with srv.connect(timeout=15) as c:
            # Send from a thread: the server answers once the disk is full,
            # long before it has read the whole body.
            sender = threading.Thread(target=c.send_tolerant, daemon=True, args=(
                build_request("PUT", "/files/keep.txt", body=body),))
            sender.start()
            r = c.read_response("PUT", timeout=15)
            assert_error(r, 507)
            assert "close" in r.connection_tokens()
            srv.wait_line(r"conn: PUT /files/keep\.txt: 507 Insufficient Storage: "
                          r"(write|fsync): " + os.strerror(28))    # ENOSPC
            assert temp_uploads(data) == []
            sender.join(10)
        assert real_names(data) == ["keep.txt"]
        assert (data / "keep.txt").read_bytes() == old
        assert srv.request("GET", "/files/keep.txt").body == old
        assert put(srv, "small.txt", b"still works").status == 201
        assert (data / "small.txt").read_bytes() == b"still works"
        assert srv.request("GET", "/").status == 200
    finally:
        if srv is not None:
            srv.kill()          # it holds the data dir open: umount needs it gone
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---------------------------------------------------------------- 3000 connections

N_MANY = 3000


@pytest.mark.serial     # 3000 connections load the machine, and any test beside it
def test_3000_keepalive_connections_then_sigint(start_server):
    """3000 concurrent keep-alive connections each get 200; SIGINT then exits 0 within 2 s and every client sees EOF."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < N_MANY + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {N_MANY + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    sel = selectors.DefaultSelector()
    try:
        srv = start_server("--max-conns", "4000")   # inherits the raised limit
        request = build_request("GET", "/")
        for _ in range(N_MANY):
            s = socket.create_connection((HOST, srv.port), timeout=10)
            s.sendall(request)
            socks.append(s)
        bufs = {}
        for s in socks:
            s.setblocking(False)
            bufs[s] = b""
            sel.register(s, selectors.EVENT_READ)
        pending = set(socks)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj
                data = s.recv(65536)
                assert data, "server closed a keep-alive connection"
                bufs[s] += data
                head, sep, body = bufs[s].partition(b"\r\n\r\n")
                if not sep:
                    continue
                lines = head.split(b"\r\n")
                assert lines[0].startswith(b"HTTP/1.1 200 "), lines[0]
                cl = [int(l.split(b":", 1)[1]) for l in lines[1:]
                      if l.lower().startswith(b"content-length:")]
                if len(body) >= cl[0]:
                    assert len(body) == cl[0]
                    assert not any(l.lower() == b"connection: close" for l in lines)
                    pending.discard(s)
                    sel.unregister(s)
        assert not pending, f"{len(pending)} of {N_MANY} got no response"
        srv.wait_threads(N_MANY + 1, timeout=30)

        t0 = time.monotonic()
        srv.signal(signal.SIGINT)
        rc = srv.wait_exit(10)
        elapsed = time.monotonic() - t0
        assert rc == 0
        assert elapsed < bound(2.0), elapsed
        assert srv.wait_line(SHUTDOWN_RE, 0).group(2) == str(N_MANY)
        assert srv.lines[-1] == "exit 0: every connection finished"
        for i, s in enumerate(socks):
            s.settimeout(5)
            assert s.recv(1) == b"", f"client {i}: data instead of EOF"
    finally:
        sel.close()
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------- start-up

def dead_pid():
    """A pid no process has right now."""
    pid = 999999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def locked_temp(path, content):
    """A temporary upload file held the way a live server holds its own:
    open, with an exclusive flock.  Keep the returned file open."""
    f = open(path, "wb")
    f.write(content)
    f.flush()
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def test_startup_removes_unlocked_leftovers_and_keeps_live_uploads(start_server, tmp_path):
    """Start-up removes unlocked .upload-* files, even when their pid is alive (pid 1: the
    container case), and keeps a locked one (a live upload of another server) and a FIFO."""
    data = tmp_path / "data"
    data.mkdir()
    stale = f".upload-{dead_pid()}-5"
    pid1 = ".upload-1-6"             # a killed server that was pid 1 in its container
    live = f".upload-{dead_pid()}-7"  # another pid namespace's live upload: its pid means nothing here
    fifo = ".upload-2-8"
    (data / stale).write_bytes(b"half an upload")
    (data / pid1).write_bytes(b"half another")
    os.mkfifo(data / fifo)
    (data / "real.txt").write_bytes(b"real")
    with locked_temp(data / live, b"someone is writing this"):
        srv = start_server(data_dir=data)
        assert srv.wait_line(STALE_RE, timeout=0).group(1) == "2"
        assert real_names(data) == sorted([live, fifo, "real.txt"])
        assert (data / live).read_bytes() == b"someone is writing this"
        assert srv.request("GET", "/files/real.txt").body == b"real"


def test_upload_never_takes_over_another_servers_temp_name(start_server, tmp_path):
    """Two servers sharing a directory can have the same pid (pid 1 in containers) and so
    pick the same temporary name: the second one must choose another, not delete the first's."""
    data = tmp_path / "data"
    srv = start_server(data_dir=data)
    # Every name this server could pick first, held by "another server".
    held = {fd: locked_temp(data / f".upload-{srv.pid}-{fd}", b"theirs") for fd in range(64)}
    try:
        body = b"mine" * 1000
        c = srv.connect()
        c.send(build_request("PUT", "/files/doc", headers={"Content-Length": str(len(body))})
               + body[:100])
        # The clash happened: the server had to take its second name.
        assert wait_until(lambda: [n for n in temp_uploads(data) if n.endswith("-1")], 5), \
            temp_uploads(data)
        c.send(body[100:])
        assert c.read_response().status == 201
        assert (data / "doc").read_bytes() == body
        for fd, f in held.items():
            path = data / f".upload-{srv.pid}-{fd}"
            assert os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            assert path.read_bytes() == b"theirs"
        assert len(temp_uploads(data)) == 64
    finally:
        for f in held.values():
            f.close()


def test_starting_server_keeps_another_servers_upload_in_progress(start_server, tmp_path):
    """A second server started on the same directory (another container, or a restart)
    leaves the first one's upload in progress alone: the first holds its lock."""
    data = tmp_path / "data"
    first = start_server(data_dir=data)
    body = os.urandom(200_000)
    c = first.connect()
    c.send(build_request("PUT", "/files/blob", headers={"Content-Length": str(len(body))})
           + body[:1000])
    assert wait_until(lambda: temp_uploads(data), 5)
    temp = temp_uploads(data)

    second = start_server(data_dir=data)
    assert not second.matching(STALE_RE)
    assert temp_uploads(data) == temp

    c.send(body[1000:])
    assert c.read_response().status == 201
    assert (data / "blob").read_bytes() == body
    assert second.request("GET", "/files/blob").body == body


def test_sigkilled_mid_upload_leftover_removed_at_next_start(start_server, tmp_path):
    """A server SIGKILLed mid-upload leaves .upload-*; the next start removes it and the old file is intact."""
    data = tmp_path / "data"
    srv = start_server(data_dir=data)
    old = b"old and whole"
    assert put(srv, "doc", old).status == 201
    c = srv.connect()
    c.send(build_request("PUT", "/files/doc", headers={"Content-Length": "100000"})
           + b"n" * 5000)
    assert wait_until(lambda: temp_uploads(data), 5), real_names(data)
    leftover = temp_uploads(data)
    assert leftover == [f".upload-{srv.pid}-{leftover[0].rsplit('-', 1)[1]}"]
    srv.proc.send_signal(signal.SIGKILL)
    srv.wait_exit(5)            # exited: the kernel has dropped its lock
    c.close()
    assert temp_uploads(data) == leftover

    srv2 = start_server(data_dir=data)
    assert srv2.wait_line(STALE_RE, timeout=0).group(1) == "1"
    assert real_names(data) == ["doc"]
    assert (data / "doc").read_bytes() == old
    assert srv2.request("GET", "/files/doc").body == old
