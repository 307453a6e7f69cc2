"""Fixtures and helpers for the graceful-shutdown server's integration tests.

Everything here talks to 127.0.0.1 only.  Synchronisation is done by waiting
for log lines, for responses, or by polling a condition with a deadline
(wait_until) - never by sleeping for a guessed amount of time.
"""

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_BIN = os.environ.get("SERVER_BIN", str(REPO / "server"))
# The test-only build with widened race windows (tests/test_race.py).
SERVER_RACE_BIN = os.environ.get("SERVER_RACE_BIN", str(REPO / "server-race"))
HOST = "127.0.0.1"

# Every timing bound a test asserts (answered within 1 s, under 0.3 s of
# CPU, ...) goes through bound(): `make asan` and `make tsan` set
# GRACEFUL_TIME_SCALE, since instrumented builds are several times slower.
# The plain suite keeps its bounds exactly (scale 1).
TIME_SCALE = float(os.environ.get("GRACEFUL_TIME_SCALE", "1"))


def bound(seconds):
    """A timing bound, scaled for slow (sanitizer) builds."""
    return seconds * TIME_SCALE

LISTENING_RE = r"listening on 127\.0\.0\.1:(\d+)"
SHUTDOWN_RE = (r"shutdown requested by (SIGINT|SIGTERM); "
               r"draining (\d+) connection\(s\), grace ([0-9.]+) s")
GRACE_OVER_RE = r"grace period over; cutting (\d+) connection\(s\)"
SECOND_SIGNAL_RE = r"second (SIGINT|SIGTERM); cutting (\d+) connection\(s\)"
EXIT0_RE = r"exit 0: every connection finished"
EXIT1_RE = r"exit 1: cut (\d+) connection\(s\)"


# --------------------------------------------------------------------------
# running at once: `make test` runs the suite on several pytest-xdist workers,
# then the tests marked serial alone (see the Makefile's test recipe).

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "serial: must run alone, with nothing else loading the machine (it "
        "measures CPU use, holds a timing bound that other load would break, "
        "loads the machine heavily itself, or uses ports fixed beforehand); "
        "`make test` runs these in a second, serial pytest run")
    config.addinivalue_line(
        "markers",
        "slow(seconds): takes about that many seconds, mostly waiting; on "
        "xdist workers the longest start first")


@pytest.hookimpl(trylast=True)     # after -m has deselected what it does
def pytest_collection_modifyitems(config, items):
    """On xdist workers: start the longest tests first, on different workers.

    xdist's load scheduling (3.1) hands each of N workers a first chunk of
    len(items) // N // 4 consecutive tests, then more as each runs low.  In
    the files' order the tests marked slow sit together, so one worker got
    nearly all of them (gracecheck's two whole runs, 18 s and 16 s, and the
    rest) and finished long after the others.  Here each slow test, longest
    first, goes to the worker with the least slow time so far, at the front
    of that worker's first chunk; every other test keeps its order.  Every
    worker computes the same order, as xdist requires.  A plain (serial)
    run keeps the files' order."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 2:
        return

    def seconds(item):
        slow = item.get_closest_marker("slow")
        return slow.args[0] if slow else 0

    chunk = max(len(items) // workers // 4, 2)
    slow = sorted((i for i in items if seconds(i)), key=seconds, reverse=True)
    load = [0.0] * workers
    placed = [[] for _ in range(workers)]
    for item in slow:
        w = min(range(workers), key=lambda k: (len(placed[k]) >= chunk, load[k]))
        load[w] += seconds(item)
        placed[w].append(item)
    rest = iter(i for i in items if not seconds(i))
    order = []
    for w in range(workers):
        for k in range(chunk):
            order.append(placed[w][k] if k < len(placed[w]) else next(rest, None))
    order += [item for w in range(workers) for item in placed[w][chunk:]]
    order += list(rest)
    items[:] = [item for item in order if item is not None]


# --------------------------------------------------------------------------
# generic helpers

def wait_until(cond, timeout=5.0, interval=0.005):
    """Poll cond() until it returns a truthy value or timeout seconds pass.

    Returns the last value of cond() (truthy on success, falsy on timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def require_binary(binary=SERVER_BIN):
    if not os.access(binary, os.X_OK):
        pytest.fail(f"server binary {binary} missing: run `make test` first "
                    f"(or set SERVER_BIN / SERVER_RACE_BIN)", pytrace=False)


def run_server_cmd(*args, timeout=5.0):
    """Run the binary to completion (for CLI tests); returns CompletedProcess."""
    require_binary()
    return subprocess.run([SERVER_BIN, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def real_names(directory):
    """Sorted directory listing."""
    return sorted(os.listdir(directory))


def temp_uploads(directory):
    return [n for n in os.listdir(directory) if n.startswith(".upload-")]


def tree_state(root):
    """Every entry under root (root included) -> (type, size, mtime_ns).

    Comparing two snapshots shows any file created, removed or written
    anywhere in the tree, and (through directory mtimes) a file that was
    created and removed again in between."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            kind = "d" if os.path.isdir(p) and not os.path.islink(p) else "f"
            size = 0 if kind == "d" else st.st_size
            state[os.path.relpath(p, root)] = (kind, size, st.st_mtime_ns)
    return state


def proc_status(pid, field):
    """A field of /proc/PID/status as its first word (e.g. 'VmSize' -> kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    raise KeyError(field)


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()   # fields from 3 (state) on
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# the server process

class Server:
    """A running ./server with its stderr collected line by line."""

    def __init__(self, args, data_dir, preexec_fn=None, binary=SERVER_BIN, env=None):
        require_binary(binary)
        self.binary = binary
        self.args = [binary, *args]
        self.data_dir = Path(data_dir)
        self.port = None
        self._runtime_threads = None
        self._lines = []
        self._stdout = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     preexec_fn=preexec_fn,
                                     env=None if env is None else {**os.environ, **env})
        self.pid = self.proc.pid
        self._err_thread = threading.Thread(
            target=self._pump, args=(self.proc.stderr, self._lines), daemon=True)
        self._out_thread = threading.Thread(
            target=self._pump, args=(self.proc.stdout, self._stdout), daemon=True)
        self._err_thread.start()
        self._out_thread.start()

    def _pump(self, pipe, sink):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # ---- log lines
    @property
    def lines(self):
        with self._cond:
            return list(self._lines)

    def log_text(self):
        return "\n".join(self.lines)

    def wait_line(self, pattern, timeout=5.0):
        """Wait for a stderr line that fully matches pattern; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    m = rx.fullmatch(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None
                                      and not self._err_thread.is_alive()):
                    raise AssertionError(
                        f"no stderr line matching {pattern!r} within {timeout}s; "
                        f"stderr so far:\n{chr(10).join(self._lines)}")
                self._cond.wait(min(remaining, 0.05))

    def wait_line_index(self, pattern, start=0, timeout=5.0):
        """Wait for a stderr line at index >= start that fully matches
        pattern; return its index."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self._lines)):
                    if rx.fullmatch(self._lines[i]):
                        return i
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None
                                      and not self._err_thread.is_alive()):
                    raise AssertionError(
                        f"no stderr line matching {pattern!r} after line {start} "
                        f"within {timeout}s; stderr so far:\n{chr(10).join(self._lines)}")
                self._cond.wait(min(remaining, 0.05))

    def matching(self, pattern):
        rx = re.compile(pattern)
        return [m for m in (rx.fullmatch(l) for l in self.lines) if m]

    # ---- process
    def signal(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)

    def running(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout):
        """Wait for exit; returns the status. Fails the test on timeout."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server still running {timeout}s later; stderr:\n{self.log_text()}")
        self._err_thread.join(2)
        self._out_thread.join(2)
        return rc

    def threads(self):
        """Threads: from /proc/PID/status (None once the process is gone)."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("Threads:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def runtime_threads(self):
        """Threads the process has that are not the server's own: a TSan
        runtime starts a background thread; an uninstrumented build has none."""
        if self._runtime_threads is None:
            # gcc links libtsan.so; clang links the runtime statically.
            with open(self.binary, "rb") as f:
                self._runtime_threads = 1 if b"__tsan_init" in f.read() else 0
        return self._runtime_threads

    def wait_threads(self, n, timeout=5.0):
        """Wait until Threads: is n (1 main thread + 1 per connection), plus
        any thread a sanitizer runtime adds."""
        want = n + self.runtime_threads()
        ok = wait_until(lambda: self.threads() == want or not self.running(), timeout)
        assert self.running(), f"server died (status {self.proc.returncode})"
        assert ok, f"expected {want} thread(s), have {self.threads()}"

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # ---- clients
    def connect(self, **kw):
        return Conn(self.port, **kw)

    def request(self, method, target, **kw):
        """One request on a fresh connection; returns the Response."""
        with self.connect() as c:
            return c.request(method, target, **kw)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._err_thread.join(2)
        self._out_thread.join(2)
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


@pytest.fixture
def start_server(tmp_path):
    """Factory: start_server(*extra_args, data_dir=None, wait=True,
    preexec_fn=None, binary=SERVER_BIN) -> Server.

    preexec_fn runs in the child before exec (e.g. to set resource limits).
    Always adds --host 127.0.0.1 --port 0 --data-dir DIR; waits for the
    listening line and fills in server.port.  Leftover servers are SIGKILLed
    at teardown and their stderr printed (shown on failure).
    """
    servers = []

    def start(*extra, data_dir=None, wait=True, port="0", preexec_fn=None,
              binary=SERVER_BIN, env=None):
        d = Path(data_dir) if data_dir is not None else tmp_path / "data"
        args = ["--host", HOST, "--port", str(port), "--data-dir", str(d), *extra]
        srv = Server(args, d, preexec_fn=preexec_fn, binary=binary, env=env)
        servers.append(srv)
        if wait:
            m = srv.wait_line(LISTENING_RE, timeout=5.0)
            srv.port = int(m.group(1))
        return srv

    yield start

    for srv in servers:
        srv.kill()
        print(f"--- {' '.join(srv.args)} (status {srv.proc.returncode}) stderr:")
        print(srv.log_text())


@pytest.fixture
def server(start_server):
    """A server with default options."""
    return start_server()


# --------------------------------------------------------------------------
# the client side

@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: dict          # lower-cased name -> value (last one wins)
    header_list: list      # [(name, value)] as received
    body: bytes
    interim: list = field(default_factory=list)   # 1xx responses before it

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def connection_tokens(self):
        v = self.header("connection", "")
        return {t.strip().lower() for t in v.split(",") if t.strip()}


def build_request(method, target, headers=None, body=None,
                  version="HTTP/1.1", host=HOST):
    """Bytes of one request.  Adds Host (unless host=None) and, when body is
    not None and no Content-Length/Transfer-Encoding was given, Content-Length."""
    hdrs = list(headers.items() if isinstance(headers, dict) else (headers or []))
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body is not None and "content-length" not in names \
            and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return head.encode("latin-1") + (body or b"")


class Conn:
    """A client socket with a read buffer, so pipelined responses parse."""

    def __init__(self, port, timeout=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_tolerant(self, data):
        """Send what the server will take: a server that answers and closes
        before reading everything makes sendall fail; the answer is still
        readable, so that is not an error here.  Returns True if all was sent."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send_request(self, method, target, **kw):
        self.send(build_request(method, target, **kw))

    def request(self, method, target, **kw):
        self.send_request(method, target, **kw)
        return self.read_response(method)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            raise EOFError("connection closed by server")
        self.buf += chunk

    def _read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_to_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def read_head(self, timeout=None):
        """Read one response head (status line + headers); no body."""
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.fullmatch(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        header_list = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            assert sep, f"bad response header line {line!r}"
            header_list.append((name.strip(), value.strip()))
        return Response(m.group(1), int(m.group(2)), m.group(3) or "",
                        {k.lower(): v for k, v in header_list}, header_list, b"")

    def read_response(self, method="GET", timeout=None):
        """Read one whole final response (skipping and recording 1xx)."""
        interim = []
        while True:
            resp = self.read_head(timeout)
            if 100 <= resp.status < 200:
                interim.append(resp)
                continue
            break
        resp.interim = interim
        if method == "HEAD" or resp.status in (204, 304):
            return resp
        cl = resp.header("content-length")
        if cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            resp.body = self._read_to_eof()
        return resp

    def expect_eof(self, timeout=1.0):
        """Wait up to timeout for the server to close: returns 'eof' (clean
        b''), 'reset', or 'timeout'; fails if unexpected data arrives."""
        assert not self.buf, f"unexpected buffered data {self.buf[:200]!r}"
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return "timeout"
        except ConnectionResetError:
            return "reset"
        assert data == b"", f"expected EOF, got data {data[:200]!r}"
        return "eof"

    def reset(self):
        """Close with SO_LINGER 0, so the server sees RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


def warm_conn(srv, timeout=5.0):
    """A keep-alive connection on which one GET / already completed, so the
    server has accepted it and its thread is running."""
    c = srv.connect(timeout=timeout)
    r = c.request("GET", "/")
    assert r.status == 200, r
    assert "close" not in r.connection_tokens()
    return c


def check_hostile(srv, raw, status, may_start_upload=False):
    """Send raw on a fresh connection and check the hostile-input contract:
    a short error with Connection: close, then EOF; nothing changed in the
    data directory or its parent; the next client, on a new connection, is
    served.  With may_start_upload, a temporary file may have come and gone
    (so directory times may change): then only the names must be the same.
    Returns the error response."""
    def snapshot():
        if may_start_upload:
            return real_names(srv.data_dir), real_names(srv.data_dir.parent)
        return tree_state(srv.data_dir.parent)

    before = snapshot()
    with srv.connect(timeout=10) as c:
        # The server may answer and stop reading before all of raw is sent.
        c.send_tolerant(raw)
        r = c.read_response(timeout=10)
        assert_error(r, status)
        assert "close" in r.connection_tokens(), r.header_list
        assert c.expect_eof(5.0) == "eof"
    assert snapshot() == before, "files changed on disk"
    assert srv.request("GET", "/").status == 200
    return r


def read_to_eof(sock):
    """Everything a plain socket receives until a clean EOF; a reset raises
    ConnectionResetError, so a test that calls it asserts there was none."""
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return reply
        reply += chunk


def connect_refused(port):
    """True if a connect() to the port is refused right now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect((HOST, port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return False


def assert_error(resp, status):
    """An error response with the given status, a Content-Length and a short
    non-empty body."""
    assert resp.status == status, f"expected {status}, got {resp.status} {resp.reason}"
    cl = resp.header("content-length")
    assert cl is not None, f"{status} response has no Content-Length"
    assert int(cl) == len(resp.body)
    assert 0 < len(resp.body) <= 1024, f"error body {resp.body!r} not short/non-empty"
