"""Zero-downtime restarts: hot restart on SIGHUP, socket activation, and a
rolling deploy behind nginx.

A server started on SIGHUP is the child of the server it replaces, and all
of them write to the one stderr pipe this test reads.  The test process makes
itself a child subreaper, so each new server is reparented to it when its
parent exits and its exit status can be collected with waitpid().
"""
import contextlib
import ctypes
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import HOST, REPO, SERVER_BIN, bound, cpu_seconds, read_to_eof, wait_until

PR_SET_CHILD_SUBREAPER = 36
LISTENING = r"listening on 127\.0\.0\.1:(\d+)( \(inherited socket\))?"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper (prctl failed)")
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


class Family:
    """A server and the successors it starts on SIGHUP."""

    def __init__(self, binary, data_dir, *extra, argv0=None, env=None):
        # argv0: the path the server believes it was started from, and so
        # the one it runs again on SIGHUP.
        self.proc = subprocess.Popen(
            [str(argv0 or binary), "--host", HOST, "--port", "0", "--data-dir", str(data_dir),
             *extra],
            executable=str(binary), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env)
        self.pids = [self.proc.pid]
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()
        _, m = self.wait_line(LISTENING)
        self.port = int(m.group(1))

    @property
    def pid(self):
        """The server that is serving now."""
        return self.pids[-1]

    def _pump(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, pattern, start=0, timeout=10.0):
        """First stderr line at index >= start matching pattern: (index, match)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    m = rx.fullmatch(self.lines[i])
                    if m:
                        return i, m
                left = deadline - time.monotonic()
                assert left > 0, f"no line matching {pattern!r}:\n" + "\n".join(self.lines)
                self.cond.wait(min(left, 0.05))

    def wait_exit(self, pid, timeout=15.0):
        """Exit status of one of the family (ours to reap: child or orphan)."""
        if pid == self.proc.pid:
            return self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.005)
        raise AssertionError(f"pid {pid} still running after {timeout}s")

    def hand_over(self):
        """SIGHUP the serving server and wait until it hands over.  Returns
        the old one's pid and the index of its hand-over line."""
        start = len(self.lines)
        old = self.pid
        os.kill(old, signal.SIGHUP)
        i, m = self.wait_line(r"SIGHUP: started .* as pid (\d+); waiting until it is ready", start)
        new = int(m.group(1))
        i, _ = self.wait_line(rf"new server \(pid {new}\) is ready; handing over", i)
        self.pids.append(new)
        return old, i

    def restart(self):
        """hand_over(), then wait for the old server to exit.  Returns its
        exit status."""
        old, _ = self.hand_over()
        return self.wait_exit(old)

    def kill_all(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            try:
                self.wait_exit(pid, timeout=5)
            except (ChildProcessError, AssertionError):
                pass


@pytest.fixture
def family(tmp_path):
    """Factory: family(binary=None, *extra) with a copy of the server binary
    in tmp_path (so a test can replace it, as a deploy would)."""
    made = []

    def start(*extra, binary=None, argv0=None, env=None):
        if binary is None:
            binary = tmp_path / "server"
            shutil.copy2(SERVER_BIN, binary)
        f = Family(binary, tmp_path / "data", *extra, argv0=argv0, env=env)
        made.append(f)
        return f

    yield start
    for f in made:
        f.kill_all()
        print("\n".join(f.lines))


def get(port, target="/", timeout=10.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class SteadyLoad:
    """Keep-alive clients and a stream of new connections, until stop().

    A keep-alive client whose *reused* connection is closed before any byte
    of the response arrives retries on a new connection: HTTP allows exactly
    that (RFC 9112 section 9.3.1), since a server may close an idle
    connection just as a request is sent.  Everything else is a failure:
    a refused connect, a reset or truncated response, a non-200 status.
    """

    def __init__(self, port, keepalive_clients=32):
        self.port = port
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.retries = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._keepalive, args=(n,), daemon=True)
                        for n in range(keepalive_clients)]
        self.threads.append(threading.Thread(target=self._fresh, daemon=True))
        for t in self.threads:
            t.start()

    def _fail(self, what):
        with self.lock:
            self.failures.append(what)

    def _check(self, status, body, target):
        if status != 200 or not body:
            self._fail(f"{target}: status {status}, {len(body)} body bytes")
            return
        with self.lock:
            self.ok += 1

    def _keepalive(self, n):
        conn = None
        reused = False
        i = n
        while not self.stop_event.is_set():
            target = "/sleep?ms=10" if i % 3 == 0 else "/"
            i += 1
            if conn is None:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
                reused = False
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as e:
                conn.close()
                conn = None
                if reused:
                    with self.lock:
                        self.retries += 1
                    i -= 1      # the same request again, on a new connection
                else:
                    self._fail(f"{target} on a new connection: {e!r}")
                continue
            except Exception as e:  # noqa: BLE001 - any other failure counts
                self._fail(f"{target}: {e!r}")
                conn.close()
                conn = None
                continue
            self._check(resp.status, body, target)
            reused = True
            if resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fresh(self):
        while not self.stop_event.is_set():
            try:
                status, body = get(self.port)
            except Exception as e:  # noqa: BLE001
                self._fail(f"new connection: {e!r}")
                continue
            self._check(status, body, "/ (new connection)")

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(20)


def test_ten_restarts_under_load_lose_nothing(family):
    """10 SIGHUP restarts under steady load: no refused connection, no failed
    or truncated response, every old server exits 0."""
    fam = family()
    load = SteadyLoad(fam.port)
    try:
        assert wait_until(lambda: load.count() >= 200, timeout=20), "load did not start"
        statuses = []
        for _ in range(10):
            before = load.count()
            statuses.append(fam.restart())
            # Let the load run against the new server before the next restart.
            assert wait_until(lambda: load.count() >= before + 200, timeout=20), \
                "load stalled after a restart"
    finally:
        load.stop()
    print(f"{load.ok} responses, {load.retries} keep-alive retries")
    assert load.failures == [], load.failures[:10]
    assert statuses == [0] * 10
    assert len(set(fam.pids)) == 11
    # Each old server drained: one shutdown by SIGHUP and one exit 0 each.
    assert sum(1 for l in fam.lines if l.startswith("shutdown requested by SIGHUP")) == 10
    assert sum(1 for l in fam.lines if l == "exit 0: every connection finished") == 10
    status, _ = get(fam.port)
    assert status == 200


def deploy(path, content):
    """Replace a binary as a deploy does: a new file renamed over the old
    name (writing into a running binary fails with ETXTBSY)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(content)
    tmp.chmod(0o755)
    os.replace(tmp, path)


def test_broken_binary_keeps_old_server_serving(family, tmp_path):
    """A new binary that exits at once, or cannot be executed, leaves the old
    server serving with a clear log line; a good binary then takes over."""
    fam = family()
    binary = tmp_path / "server"
    good = tmp_path / "server.good"
    shutil.copy2(binary, good)

    # A script that exits at once; a file exec() refuses (the child's 127).
    for content, status in ((b"#!/bin/sh\nexit 3\n", 3),
                            (b"\x7fELF garbage, not a program", 127)):
        deploy(binary, content)
        start = len(fam.lines)
        os.kill(fam.pid, signal.SIGHUP)
        fam.wait_line(r"restart failed: new server \(pid \d+\) exited before it was ready, "
                      rf"exit status {status}; still serving", start)
        assert get(fam.port)[0] == 200
        assert fam.proc.poll() is None and fam.pid == fam.proc.pid

    os.replace(good, binary)
    assert fam.restart() == 0
    assert get(fam.port)[0] == 200


def test_successor_never_ready_is_stopped_at_the_restart_timeout(family, tmp_path):
    """--restart-timeout 1: a new binary that starts but never says it is
    ready is killed after a second; the old server says so, keeps serving
    without spinning, and takes the next SIGHUP as a new restart."""
    fam = family("--restart-timeout", "1")
    binary = tmp_path / "server"
    good = tmp_path / "server.good"
    shutil.copy2(binary, good)
    deploy(binary, b"#!/bin/sh\nexec sleep 60\n")     # alive, never ready

    start = len(fam.lines)
    cpu_before = cpu_seconds(fam.pid)
    os.kill(fam.pid, signal.SIGHUP)
    fam.wait_line(r"SIGHUP: started .* as pid \d+; waiting until it is ready", start)
    t0 = time.monotonic()
    fam.wait_line(r"restart failed: new server \(pid \d+\) was not ready in time, "
                  r"killed by signal 9; still serving", start, timeout=bound(10))
    waited = time.monotonic() - t0
    assert 0.8 <= waited <= bound(3.0), waited
    # Waiting was sleeping, not spinning.
    assert cpu_seconds(fam.pid) - cpu_before < 0.5
    assert get(fam.port)[0] == 200

    os.replace(good, binary)
    assert fam.restart() == 0
    assert get(fam.port)[0] == 200


def test_stop_while_a_successor_starts_stops_the_successor(family, tmp_path):
    """SIGTERM while the new server of a SIGHUP is still starting (a slow
    deploy): the old server kills it, says so, drains and exits 0, and
    nothing serves after the operator said stop."""
    fam = family()
    binary = tmp_path / "server"
    good = tmp_path / "server.good"
    shutil.copy2(binary, good)
    deploy(binary, b"#!/bin/sh\nsleep 2\nexec %s \"$@\"\n" % str(good).encode())

    start = len(fam.lines)
    old = fam.pid
    os.kill(old, signal.SIGHUP)
    _, m = fam.wait_line(r"SIGHUP: started .* as pid (\d+); waiting until it is ready", start)
    new = int(m.group(1))
    fam.pids.append(new)            # killed at the end if it outlives the test
    os.kill(old, signal.SIGTERM)
    fam.wait_line(rf"restart failed: new server \(pid {new}\) was stopped: shutdown requested, "
                  r"killed by signal 9; still serving", start)
    assert fam.wait_exit(old) == 0
    with pytest.raises(ProcessLookupError):     # killed, and reaped by its parent
        os.kill(new, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, fam.port), timeout=bound(3)).close()


def test_in_flight_sleep_and_upload_on_old_server_complete(family, tmp_path):
    """A /sleep and a half-sent upload in flight on the old server complete
    whole after the new server has taken over; the old one exits 0."""
    fam = family()
    body = os.urandom(300_000)

    sleeper = http.client.HTTPConnection(HOST, fam.port, timeout=10)
    sleeper.request("GET", "/")
    assert sleeper.getresponse().read()
    sleeper.request("GET", "/sleep?ms=800")

    up = socket.create_connection((HOST, fam.port), timeout=10)
    up.sendall(b"PUT /files/blob HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % len(body) + body[:1000])
    # The upload's temporary file exists before the new server starts (and
    # looks for leftovers): only its lock keeps it.
    data = tmp_path / "data"
    assert wait_until(lambda: [n for n in os.listdir(data) if n.startswith(".upload-")], 5)

    old, _ = fam.hand_over()

    up.sendall(body[1000:])
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = up.recv(4096)
        assert chunk, f"upload connection closed early: {reply!r}"
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 201 "), reply
    assert b"Connection: close" in reply
    up.close()

    resp = sleeper.getresponse()
    assert resp.status == 200 and resp.read() == b"slept 800 ms\n"
    assert resp.getheader("Connection") == "close"
    sleeper.close()

    assert fam.wait_exit(old) == 0
    assert (tmp_path / "data" / "blob").read_bytes() == body
    status_code, got = get(fam.port, "/files/blob")
    assert status_code == 200 and got == body


def test_second_sighup_during_restart_is_ignored(family, tmp_path):
    """While a new server is still starting, another SIGHUP is ignored with a
    log line; the restart then completes once."""
    real = tmp_path / "server.real"
    shutil.copy2(SERVER_BIN, real)
    gate = tmp_path / "gate"
    wrapper = tmp_path / "server"
    # A slow deploy: the new server starts only once the test opens the gate.
    wrapper.write_text(f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.01; done\n'
                       f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    # Started as the wrapper's path, so SIGHUP runs the wrapper.
    fam = family(binary=real, argv0=wrapper)

    start = len(fam.lines)
    os.kill(fam.pid, signal.SIGHUP)
    i, m = fam.wait_line(r"SIGHUP: started .* as pid (\d+); waiting until it is ready", start)
    os.kill(fam.pid, signal.SIGHUP)
    fam.wait_line(r"SIGHUP: a restart is already in progress; ignored", i)
    assert get(fam.port)[0] == 200      # the old one still serves meanwhile

    gate.touch()
    new = int(m.group(1))
    fam.wait_line(rf"new server \(pid {new}\) is ready; handing over", i)
    fam.pids.append(new)
    assert fam.wait_exit(fam.proc.pid) == 0
    assert sum(1 for l in fam.lines if l.startswith("SIGHUP: started")) == 1
    assert get(fam.port)[0] == 200


def test_systemd_notify_ready_and_new_main_pid(family, tmp_path):
    """With NOTIFY_SOCKET set, the server sends READY=1 and MAINPID= once it
    accepts, and so does its successor after SIGHUP, before the old exits."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    try:
        fam = family(env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notify.recv(256) == f"READY=1\nMAINPID={fam.pid}".encode()
        old = fam.pid
        assert fam.restart() == 0
        assert fam.pid != old
        assert notify.recv(256) == f"READY=1\nMAINPID={fam.pid}".encode()
    finally:
        notify.close()


def listening_socket():
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    return sock


@contextlib.contextmanager
def socket_activated(sock, listen_pid, data_dir, port):
    """The server with sock as descriptor 3 and LISTEN_FDS=1, as
    systemd-socket-activate would start it.  listen_pid: '$$' for the server
    itself (exec keeps the shell's pid).  Yields the process and its first
    stderr line; SIGTERMs it at the end and requires exit status 0."""
    def as_fd_3():
        os.dup2(sock.fileno(), 3)
    script = f'LISTEN_PID={listen_pid} LISTEN_FDS=1 exec "$0" "$@"'
    proc = subprocess.Popen(
        ["sh", "-c", script, SERVER_BIN, "--host", HOST, "--port", str(port),
         "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_fd_3, close_fds=False)
    try:
        yield proc, proc.stderr.readline().strip()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_socket_activation_uses_inherited_listener(tmp_path):
    """With LISTEN_FDS=1 and LISTEN_PID=its pid, the server serves descriptor
    3, including a client that connected before it started."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    early = socket.create_connection((HOST, port), timeout=10)
    early.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # --port is the same port: binding it would fail, so success proves the
    # inherited socket was used.
    with socket_activated(sock, "$$", tmp_path / "data", port) as (_, line):
        assert line == f"listening on 127.0.0.1:{port} (inherited socket)", line
        reply = early.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 "), reply
        assert get(port)[0] == 200
    early.close()


def test_socket_activation_leaves_the_socket_listening_for_the_next_instance(tmp_path):
    """systemd keeps a socket-activated listener across restarts: after one
    instance stops, a client that connects waits in the backlog and the next
    instance serves it.  The SYN filter we put on to stop accepting (lesson
    step A1) must come off a socket someone else holds before our close();
    left on, that socket would drop every SYN for good."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    first = socket.socket(fileno=os.dup(sock.fileno()))
    with socket_activated(first, "$$", tmp_path / "d1", port) as (_, line):
        assert line.endswith("(inherited socket)"), line
        assert get(port)[0] == 200
    # The first instance has exited 0; the test still holds the socket.
    try:
        waiting = socket.create_connection((HOST, port), timeout=bound(3))
    except socket.timeout:
        sock.close()
        pytest.fail("connect timed out: the socket drops SYNs after the server left")
    with waiting:
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with socket_activated(sock, "$$", tmp_path / "d2", port) as (_, line):
            assert line.endswith("(inherited socket)"), line
            waiting.settimeout(bound(10))
            assert read_to_eof(waiting).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("fds", ["2", "0", "x"])
def test_socket_activation_with_other_than_one_socket_refuses_to_start(tmp_path, fds):
    """LISTEN_FDS=2 (two sockets: which would we serve?), 0 or garbage, with
    LISTEN_PID ours: the server says so in one line and exits 1, serving
    neither descriptor 3 nor its own --port."""
    first, second = listening_socket(), listening_socket()

    def as_fds_3_and_4():
        os.dup2(first.fileno(), 3)
        os.dup2(second.fileno(), 4)
    script = f'LISTEN_PID=$$ LISTEN_FDS={fds} exec "$0" "$@"'
    proc = subprocess.run(["sh", "-c", script, SERVER_BIN, "--host", HOST, "--port", "0",
                           "--data-dir", str(tmp_path / "data")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          preexec_fn=as_fds_3_and_4, close_fds=False, timeout=bound(10))
    first.close()
    second.close()
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert f"server: LISTEN_FDS={fds}: want exactly one listening socket" in proc.stderr
    assert "listening on" not in proc.stderr, proc.stderr


def test_socket_activation_ignores_variables_for_another_pid(tmp_path):
    """LISTEN_PID naming another process: the variables are not ours, so the
    server binds its own --port as usual."""
    sock = listening_socket()
    inherited_port = sock.getsockname()[1]
    with socket_activated(sock, "1", tmp_path / "data", 0) as (_, line):
        m = re.fullmatch(LISTENING, line)
        assert m and m.group(2) is None, line
        assert int(m.group(1)) != inherited_port
        assert get(int(m.group(1)))[0] == 200


@pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"),
                    reason="nginx is not installed (apt-get install nginx); .ci/run installs it")
@pytest.mark.serial     # nginx on ports chosen beforehand, under load
def test_rolling_deploy_behind_nginx_sees_no_errors():
    """deploy/rolling_deploy.py: both instances replaced twice behind nginx
    under load, zero errors, every old instance exits 0."""
    out = subprocess.run(
        ["/usr/bin/python3", str(REPO / "deploy" / "rolling_deploy.py"),
         "--server", SERVER_BIN, "--rounds", "2"],
        capture_output=True, text=True, timeout=120)
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"requests: (\d+) ok, (\d+) errors", out.stdout)
    assert m and int(m.group(1)) > 0 and m.group(2) == "0", out.stdout


def test_first_signal_after_handover_keeps_draining(family):
    """After a hand-over, the old server takes its first SIGTERM as the stop
    it is already doing (Ctrl+C reaches both servers in a terminal; systemd
    signals the whole service): it says so, in-flight work still completes,
    exit 0."""
    fam = family()
    sleeper = http.client.HTTPConnection(HOST, fam.port, timeout=10)
    sleeper.request("GET", "/")
    assert sleeper.getresponse().read()
    sleeper.request("GET", "/sleep?ms=800")
    old, i = fam.hand_over()
    i, _ = fam.wait_line(r"shutdown requested by SIGHUP; draining 1 connection\(s\), grace 30 s", i)
    os.kill(old, signal.SIGTERM)
    # The signal was received and taken for the stop already under way
    # (a server that ignored it, or never saw it, would not say so).
    fam.wait_line(r"SIGTERM after hand-over: already draining", i)
    resp = sleeper.getresponse()
    assert resp.status == 200 and resp.read() == b"slept 800 ms\n"
    sleeper.close()
    assert fam.wait_exit(old) == 0
    assert not any(l.startswith("second ") for l in fam.lines), fam.lines
