#!/usr/bin/env python3
"""Benchmark ./server beside Go's net/http and Debian's nginx, in the same run.

Go (bench/go/main.go, built with Debian's golang-go) is the same pattern in
another runtime: one goroutine per connection, Server.Shutdown.  nginx (one
worker) is the event-loop reference.  Where go is missing its column is
skipped with a note.

Run from the repository root:

    /usr/bin/python3 bench/bench.py            # full: 3 runs a figure, ~15 min
    /usr/bin/python3 bench/bench.py --quick    # CI: one short run a figure

The full run writes bench/results.md and bench/drain.png.  --quick writes
bench/results-quick.md and bench/drain-quick.png instead, unless --write is
given.  Targets that are missed are reported in the table as "missed"; the
exit status is 1 only when a tool is missing or the benchmark itself could
not run a figure.

Only 127.0.0.1 is ever contacted.  Every loop is bounded in count and in
time, and every process started here is stopped in a finally block (nginx and
the server each run in their own process group, so a worker can never be
left behind).  Synchronisation waits for what it needs - the server's
"listening on" line, nginx's "start worker process" log line, a response, a
process exit (pidfd) - never for a guessed amount of time; the one timed wait
is the 200 ms of figure 5, which is part of that scenario.

Python standard library only.
"""

import argparse
import errno
import os
import random
import re
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVER_BIN = REPO / "server"
NGINX_TEMPLATE = BENCH_DIR / "nginx.conf"
HOST = "127.0.0.1"

LISTENING_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
WORKER_RE = re.compile(r"start worker process (\d+)")

# Tools, and the Debian package that provides each.
TOOLS = [
    ("make", "make"),
    ("gcc", "gcc"),
    ("wrk", "wrk"),
    ("ab", "apache2-utils"),
    ("nginx", "nginx"),
    ("gnuplot", "gnuplot-nox"),
]

# Set once the tools are found.
TOOL = {}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes: every one we start is in LIVE until it is reaped

LIVE = []


def spawn(args, **kw):
    """Popen in a new session (own process group, no terminal signals)."""
    proc = subprocess.Popen([str(a) for a in args], start_new_session=True,
                            stdin=subprocess.DEVNULL, **kw)
    LIVE.append(proc)
    return proc


def group_members(pgid):
    """PIDs whose process group is pgid (read from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces or parens.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def kill_group(proc):
    """SIGKILL proc's whole process group (it leads one), then reap proc."""
    if proc.poll() is None or group_members(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"bench: process {proc.pid} did not die after SIGKILL")
    # Orphans of a group whose leader is gone (an nginx worker, say).
    deadline = time.monotonic() + 5
    while group_members(proc.pid) and time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    if proc in LIVE:
        LIVE.remove(proc)


def kill_all():
    for proc in list(LIVE):
        kill_group(proc)


def proc_status(pid):
    """(VmRSS in KiB, Threads) from /proc/PID/status; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    thr = re.search(r"^Threads:\s+(\d+)", text, re.M)
    if not rss or not thr:
        return None     # a zombie has no memory left
    return int(rss.group(1)), int(thr.group(1))


def proc_cpu_s(pid):
    """CPU seconds (user + system) a process has used so far, its ended
    threads included; 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # utime and stime are fields 14 and 15 of proc(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(cond, timeout, interval=0.002):
    """Poll cond() until truthy or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def pidfd_open(pid):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def timed_exit(proc, sig, limit_s):
    """Send sig and time it until proc has exited and is reaped (waitpid).

    Returns (seconds, exit status).  If proc is still running limit_s later
    it is killed and RuntimeError is raised.
    """
    pfd = pidfd_open(proc.pid)
    try:
        if pfd is not None:
            poller = select.poll()
            poller.register(pfd, select.POLLIN)
            t0 = time.perf_counter()
            os.kill(proc.pid, sig)
            if not poller.poll(limit_s * 1000):
                kill_group(proc)
                raise RuntimeError(f"pid {proc.pid} still running {limit_s} s "
                                   f"after {signal.Signals(sig).name}; killed")
            rc = proc.wait()
            t1 = time.perf_counter()
        else:   # no pidfd: blocking waitpid, with a watchdog
            timer = threading.Timer(limit_s, kill_group, args=(proc,))
            timer.start()
            try:
                t0 = time.perf_counter()
                os.kill(proc.pid, sig)
                rc = proc.wait()
                t1 = time.perf_counter()
            finally:
                timer.cancel()
            if rc == -signal.SIGKILL:
                raise RuntimeError(f"pid {proc.pid} still running {limit_s} s "
                                   f"after {signal.Signals(sig).name}; killed")
    finally:
        if pfd is not None:
            os.close(pfd)
    return t1 - t0, rc


# --------------------------------------------------------------------------
# ./server


class Server:
    """A running ./server; its stderr collected line by line."""

    def __init__(self, tmp, extra=()):
        self.data_dir = tempfile.mkdtemp(prefix="data-", dir=tmp)
        self._start([SERVER_BIN, "--port", "0", "--data-dir", self.data_dir,
                     "--max-conns", "20000", *extra])

    def _start(self, argv):
        self.lines = []
        self._cond = threading.Condition()
        self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        try:
            self.port = int(self.wait_line(LISTENING_RE, 10).group(1))
        except BaseException:
            self.stop()
            raise

    def _pump(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, rx, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise RuntimeError(f"server: no line matching {rx.pattern!r} "
                                       f"in {timeout} s; stderr: {self.lines}")
                self._cond.wait(min(left, 0.5))

    def status(self):
        return proc_status(self.pid)

    def cpu_s(self):
        return proc_cpu_s(self.pid)

    def sigint_exit(self, limit_s=10):
        """SIGINT; returns (ms to exit, exit status)."""
        secs, rc = timed_exit(self.proc, signal.SIGINT, limit_s)
        self._reader.join(2)
        if self.proc in LIVE:
            LIVE.remove(self.proc)
        return secs * 1000, rc

    def graceful_exit(self, limit_s=10):
        """Its graceful stop (SIGINT), which must end in exit 0; returns ms."""
        ms, rc = self.sigint_exit(limit_s)
        if rc != 0:
            raise RuntimeError(f"server exited {rc}")
        return ms

    def stop(self):
        kill_group(self.proc)
        self._reader.join(2)
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class GoServer(Server):
    """bench/go/main.go: the same pattern in Go's net/http, one goroutine
    per connection, drained by Server.Shutdown on SIGINT (exit 0 when every
    connection finished)."""

    def __init__(self, exe):
        self._start([exe, "-addr", f"{HOST}:0", "-grace", "30"])


def build_go(tmp):
    """Build bench/go/main.go with Debian's golang-go, standard library
    only (GO111MODULE=off: nothing is fetched); the executable's path, or
    None and why."""
    go = shutil.which("go") or shutil.which("go", path="/usr/lib/go/bin")
    if go is None:
        return None, "go not found (Debian package golang-go): the Go column is skipped"
    exe = os.path.join(tmp, "go-graceful")
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", CGO_ENABLED="0",
               GOCACHE=os.path.join(tmp, "gocache"), GOPATH=os.path.join(tmp, "gopath"))
    try:
        r = subprocess.run([go, "build", "-o", exe, str(BENCH_DIR / "go" / "main.go")],
                           env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"go build failed ({exc}): the Go column is skipped"
    if r.returncode != 0:
        return None, (f"go build failed: {(r.stderr or r.stdout).strip()[-300:]}: "
                      f"the Go column is skipped")
    return exe, first_line([go, "version"])


def get_root(port, want_body=False):
    """One GET / on a fresh connection: its status (and body)."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        buf = bytearray()
        for _ in range(10000):
            data = s.recv(65536)
            if not data:
                break
            buf += data
    r = parse_response(buf)
    if r is None:
        raise ConnectionError("GET /: incomplete answer")
    return (r[0], bytes(buf[r[2]:r[1]])) if want_body else r[0]


def server_body():
    """The body of ./server's GET /, fetched from a short-lived server."""
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        with Server(tmp) as srv:
            status, body = get_root(srv.port, want_body=True)
            if status != 200:
                raise RuntimeError(f"GET / answered {status}")
            return body


# --------------------------------------------------------------------------
# nginx


def nginx_quote(body):
    """body as the inside of an nginx "..." string, or None if it cannot be."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if "$" in text or any(ord(c) < 32 and c not in "\n\r\t" for c in text):
        return None
    return (text.replace("\\", "\\\\").replace('"', '\\"')
            .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground with one worker, all its files in a temp dir."""

    def __init__(self, tmp, body):
        quoted = nginx_quote(body)
        if quoted is None:      # same size, plain bytes
            quoted = "x" * (len(body) - 1) + "\\n"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else hard
        last_err = ""
        for _attempt in range(5):   # another process may take the free port
            self.dir = tempfile.mkdtemp(prefix="nginx-", dir=tmp)
            self.port = free_port()
            conf = NGINX_TEMPLATE.read_text()
            for key, value in {
                "@PREFIX@": self.dir + "/",
                "@PORT@": str(self.port),
                "@RLIMIT_NOFILE@": str(nofile),
                "@WORKER_CONNECTIONS@": str(min(20000, nofile - 64)),
                "@BODY@": quoted,
            }.items():
                conf = conf.replace(key, value)
            self.conf = Path(self.dir, "nginx.conf")
            self.conf.write_text(conf)
            self.errlog = Path(self.dir, "error.log")
            with open(Path(self.dir, "stderr.txt"), "wb") as err:
                self.proc = spawn([TOOL["nginx"], "-p", self.dir + "/", "-e", self.errlog,
                                   "-c", self.conf, "-g", "daemon off;"],
                                  stdout=subprocess.DEVNULL, stderr=err)
            self.pid = self.proc.pid
            # Ready when the worker is up and the port answers; nginx prints
            # nothing on stdout, so watch its log and the port, bounded.
            self.worker = wait_until(self._ready, 10)
            if self.worker:
                return
            last_err = self._log_tail()
            kill_group(self.proc)
        raise RuntimeError(f"nginx did not start: {last_err}")

    def _log_tail(self):
        text = ""
        for name in ("stderr.txt", "error.log"):
            try:
                text += Path(self.dir, name).read_text(errors="replace")
            except OSError:
                pass
        return text.strip()[-600:]

    def _ready(self):
        if self.proc.poll() is not None:
            return -1   # ended: stop waiting, retried by the caller
        try:
            m = WORKER_RE.search(self.errlog.read_text(errors="replace"))
        except OSError:
            return None
        if not m:
            return None
        # A connect alone succeeds as soon as the master listens; a whole
        # answer means the worker is up and serving.
        try:
            if get_root(self.port) != 200:
                return None
        except OSError:
            return None
        return int(m.group(1))

    def status(self):
        """(VmRSS of master + worker in KiB, threads of the worker)."""
        master, worker = proc_status(self.pid), proc_status(self.worker)
        if master is None or worker is None:
            return None
        return master[0] + worker[0], worker[1]

    def cpu_s(self):
        return proc_cpu_s(self.pid) + proc_cpu_s(self.worker)

    def sigquit_exit(self, limit_s=10):
        """Graceful stop (SIGQUIT); returns (ms to exit of the master, status)."""
        secs, rc = timed_exit(self.proc, signal.SIGQUIT, limit_s)
        if group_members(self.pid):
            raise RuntimeError("nginx worker outlived its master")
        if self.proc in LIVE:
            LIVE.remove(self.proc)
        return secs * 1000, rc

    def graceful_exit(self, limit_s=10):
        """Its graceful stop (SIGQUIT); returns ms."""
        return self.sigquit_exit(limit_s)[0]

    def stop(self):
        kill_group(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# clients


def parse_response(buf):
    """(status, end of response, start of body) once buf holds a whole
    response with Content-Length; None before."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    head = bytes(buf[:i]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
    length = int(m.group(1)) if m else 0
    if len(buf) < i + 4 + length:
        return None
    return status, i + 4 + length, i + 4


def closes_after(buf, body_start):
    head = bytes(buf[:body_start]).decode("latin-1")
    return re.search(r"(?im)^connection:\s*close\s*$", head) is not None


GET_ROOT = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def open_keepalive(port, n, timeout, window=256):
    """Open n connections to port, each served one GET / (200), left open.

    At most `window` are connecting or waiting for their answer at once, so
    the listen backlog never overflows.  Returns the open sockets.
    """
    sel = selectors.DefaultSelector()
    done, pending = [], {}
    started = 0
    deadline = time.monotonic() + timeout
    try:
        while len(done) < n:
            while started < n and len(pending) < window:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                rc = s.connect_ex((HOST, port))
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    raise OSError(rc, f"connection {started + 1}: {os.strerror(rc)}")
                state = {"sock": s, "buf": bytearray(), "sent": False}
                sel.register(s, selectors.EVENT_WRITE, state)
                pending[s] = state
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(done)} of {n} connections served "
                                   f"within {timeout} s")
            for key, _ in sel.select(min(left, 1.0)):
                st = key.data
                s = st["sock"]
                if not st["sent"]:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect after {len(done)} open: "
                                           f"{os.strerror(err)}")
                    s.send(GET_ROOT)    # 37 bytes into an empty buffer
                    st["sent"] = True
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                data = s.recv(65536)
                if not data:
                    raise ConnectionError(f"connection closed unanswered after "
                                          f"{len(done)} open")
                st["buf"] += data
                r = parse_response(st["buf"])
                if r:
                    if r[0] != 200:
                        raise RuntimeError(f"GET / answered {r[0]} after {len(done)} open")
                    sel.unregister(s)
                    del pending[s]
                    done.append(s)
    except BaseException:
        close_all(done)
        close_all(list(pending))
        raise
    finally:
        sel.close()
    return done


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def run_tool(args, timeout):
    """Run wrk/ab; returns its stdout (raises with its stderr on failure)."""
    r = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} exited {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[-500:]}")
    return r.stdout


def wrk(port, conns, secs, close=False):
    """Requests/s and requests done, from wrk, and a note on errors (or '')."""
    args = [TOOL["wrk"], "-t2", f"-c{conns}", f"-d{secs}s"]
    if close:
        args += ["-H", "Connection: close"]
    out = run_tool(args + [f"http://{HOST}:{port}/"], timeout=secs + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if not m or not done:
        raise RuntimeError(f"no Requests/sec in wrk output: {out[-300:]}")
    notes = []
    m2 = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m2:
        notes.append(f"{m2.group(1)} non-2xx")
    m3 = re.search(r"Socket errors:\s+(.*)", out)
    if m3:
        notes.append(f"socket errors: {m3.group(1).strip()}")
    return float(m.group(1)), int(done.group(1)), "; ".join(notes)


def ab(port, n, time_limit, conc=8):
    """ab -n n -c conc (a new connection per request), for at most
    time_limit seconds: (complete, failed, req/s)."""
    args = [TOOL["ab"], "-q", "-r", "-t", str(time_limit), "-n", str(n), "-c", str(conc),
            f"http://{HOST}:{port}/"]
    out = run_tool(args, timeout=time_limit + 60)
    complete = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    return complete, failed + (int(non2xx.group(1)) if non2xx else 0), rps


# --------------------------------------------------------------------------
# results

WHO = ("ours", "go", "nginx")
NAMES = {"ours": "./server", "go": "Go net/http", "nginx": "nginx, 1 worker"}


def median(xs):
    return statistics.median(xs)


def spread(xs, fmt):
    """'median (min–max)', or just the value for one run."""
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(median(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"


def ratios(a, b):
    """Per-round ratios a[i] / b[i] (rounds where both ran)."""
    return [x / y for x, y in zip(a, b) if y > 0]


def f_int(x):
    return f"{x:,.0f}"


def f_us(x):
    return f"{x:.1f} µs"


def f_ms(x):
    return f"{x:.2f} ms"


def f_kib(x):
    return f"{x:.1f} KiB"


def f_mib(x):
    return f"{x:.1f} MiB"


def f_ratio(x):
    return f"{x:.2f}x"


class Results:
    HEAD = ("figure", "ours", "Go net/http", "nginx, 1 worker", "ours ÷ Go",
            "ours ÷ nginx", "target", "met?")

    def __init__(self, quick):
        self.quick = quick
        self.rows = []
        self.notes = []
        self.errors = []
        self.timeline = None    # one-paragraph summary of the drain timeline

    def row(self, figure, got=None, fmt=None, target="—", met=None, cells=None):
        """A table row.  got maps who -> list of per-round values (lists of
        the same length, one value per round); the ratio columns are the
        median (min–max) of the per-round ratios.  cells overrides the
        ours/Go/nginx cells with text."""
        got = got or {}
        cells = dict(cells or {})
        for who in WHO:
            if who not in cells:
                cells[who] = spread(got.get(who, []), fmt) if fmt else "—"
        r_go = spread(ratios(got.get("ours", []), got.get("go", [])), f_ratio) \
            if got.get("go") and got.get("ours") else "—"
        r_ngx = spread(ratios(got.get("ours", []), got.get("nginx", [])), f_ratio) \
            if got.get("nginx") and got.get("ours") else "—"
        if met is None:
            verdict = "—"
        else:
            verdict = "yes" if met else "missed"
            if self.quick:
                verdict += "*"
        self.rows.append((figure, cells["ours"], cells["go"], cells["nginx"],
                          r_go, r_ngx, target, verdict))

    def error(self, figure, exc):
        self.errors.append(figure)
        self.rows.append((figure, f"error: {exc}", "—", "—", "—", "—", "—", "error"))

    def note(self, text):
        log(f"  note: {text}")
        self.notes.append(text)

    def table(self):
        lines = ["| " + " | ".join(self.HEAD) + " |",
                 "|" + "|".join("---" for _ in self.HEAD) + "|"]

        def number(row):
            m = re.match(r"(\d+)\.", row[0])
            return int(m.group(1)) if m else 99
        for r in sorted(self.rows, key=number):     # stable: runs keep their order
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
        return "\n".join(lines)


def med_ratio(got, a, b):
    """Median of the per-round ratios got[a] / got[b]; None if b did not run."""
    rs = ratios(got.get(a, []), got.get(b, []))
    return median(rs) if rs else None


# --------------------------------------------------------------------------
# the figures


class Bench:
    def __init__(self, args, tmp, body, go_exe, floor_exe):
        self.quick = args.quick
        self.tmp = tmp
        self.body = body
        self.go_exe = go_exe
        self.floor_exe = floor_exe
        self.who = [w for w in WHO if w != "go" or go_exe]
        self.runs = 1 if args.quick else 3
        self.res = Results(args.quick)

    def start(self, who):
        if who == "ours":
            return Server(self.tmp)
        if who == "go":
            return GoServer(self.go_exe)
        return Nginx(self.tmp, self.body)

    def order(self, i):
        """Rotate who goes first, so none always gets a cold start."""
        k = i % len(self.who)
        return self.who[k:] + self.who[:k]

    def go_part(self, got, want, what):
        """The Go half of a target: (met or None when Go did not run, text)."""
        r = med_ratio(got, "ours", "go")
        if r is None:
            return None, f"{what}: Go not measured"
        return want(r), f"{what}: {r:.2f}x"

    def floor_churn(self):
        """CPU µs to start, end and join one empty thread (bench/floor.c)."""
        n = 2000 if self.quick else 20000
        return float(run_tool([self.floor_exe, "churn", n], 120))

    def floor_count(self):
        """ms for one count of the handshakes under way (sock_diag), the
        median of 20 on a fresh listener, with the TCP table as it is now."""
        return float(run_tool([self.floor_exe, "count", 20], 120))

    def floor_idle(self, n):
        """(ms, CPU ms) to wake, end and join n bare idle threads, and the
        KiB of RSS each of them added while asleep."""
        ms, cpu, kib = map(float, run_tool([self.floor_exe, "idle", n], 120).split())
        return ms, cpu, kib

    # 1 and 2 ------------------------------------------------------------

    def throughput(self):
        secs = 1 if self.quick else 5
        figures = (
            ("1. keep-alive throughput, wrk -t2 -c64 (req/s)", "wrk", 64, False),
            ("2. new connection per request, wrk -t2 -c32 Connection: close (req/s)",
             "wrk", 32, True),
            ("2. new connection per request, ab -c32 (req/s)", "ab", 32, True),
        )
        procs = {}
        try:
            for who in self.who:
                procs[who] = self.start(who)
            for label, tool, conns, close in figures:
                try:
                    self._throughput_figure(procs, label, tool, conns, close, secs)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    self.fail(label, exc)
                for who, p in procs.items():
                    if p.proc.poll() is not None:
                        raise RuntimeError(f"{who} (pid {p.pid}) died during the load "
                                           f"(status {p.proc.returncode})")
        finally:
            for p in procs.values():
                p.stop()

    def _throughput_figure(self, procs, label, tool, conns, close, secs):
        got = {w: [] for w in self.who}
        cpu = {w: [] for w in self.who}     # µs of CPU per request
        floor = []
        for i in range(self.runs):
            for who in self.order(i):
                cpu0 = procs[who].cpu_s()
                if tool == "wrk":
                    rps, done, note = wrk(procs[who].port, conns, secs, close)
                else:
                    done, failed, rps = ab(procs[who].port, 10**7, secs, conns)
                    note = f"{failed} failed" if failed else ""
                cpu[who].append((procs[who].cpu_s() - cpu0) * 1e6 / max(done, 1))
                got[who].append(rps)
                log(f"  {label[:2]} {tool} run {i + 1} {who}: {rps:,.0f} req/s, "
                    f"{cpu[who][-1]:.1f} µs CPU/request {note}")
                if note:
                    self.res.note(f"{label[:2]} {tool} {who} run {i + 1}: {note}")
            if close:
                floor.append(self.floor_churn())
        if not close:
            met_go, t_go = self.go_part(got, lambda r: r >= 1.3, "≥ 1.3x Go")
            r_ngx = med_ratio(got, "ours", "nginx")
            met = r_ngx >= 0.95 and met_go is not False
            self.res.row(label, got, f_int, f"{t_go}; ≥ 0.95x nginx: {r_ngx:.2f}x", met)
            self.res.row(f"{label[:2]} its CPU per request (µs, from /proc; nginx: "
                         f"master+worker)", cpu, f_us)
            return
        met_go, t_go = self.go_part(got, lambda r: r >= 1.2, "≥ 1.2x Go")
        self.res.row(label, got, f_int, t_go, met_go)
        if tool != "wrk":
            self.res.row(f"{label[:2]} {tool} -c{conns}: its CPU per request (µs)", cpu, f_us)
            return
        # CPU: at most nginx's plus 1.15x the bare-thread floor, per round.
        bound = [n + 1.15 * f for n, f in zip(cpu["nginx"], floor)]
        over = [o / b for o, b in zip(cpu["ours"], bound)]
        self.res.row(f"{label[:2]} its CPU per request (µs, from /proc; nginx: "
                     f"master+worker)", cpu, f_us,
                     f"≤ nginx + 1.15 × floor = {median(bound):.1f} µs "
                     f"(ours ÷ that: {median(over):.2f}x)", median(over) <= 1.0)
        self.res.row(f"{label[:2]} floor: start, end and join one empty thread "
                     f"(µs of CPU, bench/floor.c), same rounds", cells={"ours": spread(floor, f_us)})
        self.res.note(f"floor, figure 2: ours used {median(cpu['ours']) - median(cpu['nginx']):.1f}"
                      f" µs more CPU per request than nginx; starting, ending and joining a"
                      f" bare thread alone costs {median(floor):.1f} µs")

    # 3 -------------------------------------------------------------------

    def idle_shutdown(self):
        label = "3. idle shutdown, signal → exit (ms)"
        n = 3 if self.quick else 10
        got = {w: [] for w in self.who}
        floor = []
        for i in range(n):
            for who in self.order(i):
                with self.start(who) as p:
                    if who == "nginx":
                        ms, rc = p.sigquit_exit(5)
                    else:
                        ms, rc = p.sigint_exit(5)
                        if rc != 0:
                            raise RuntimeError(f"{who} exited {rc} when idle")
                got[who].append(ms)
            floor.append(self.floor_count())
        log(f"  3: {got}; floor {floor}")
        med = median(got["ours"])
        self.res.row(label + f", median of {n} fresh processes", got, f_ms,
                     "≤ 1 ms", med <= 1.0)
        self.res.row("3. floor: the one count of the handshakes under way when we stop accepting "
                     "(sock_diag walks the kernel's whole TCP table; ms, bench/floor.c), "
                     "same rounds", cells={"ours": spread(floor, f_ms)})

    # 4 and 6 -------------------------------------------------------------

    def idle_connections(self):
        sizes = (500, 1000)
        got = {n: {w: [] for w in self.who} for n in sizes}
        per_conn = {w: [] for w in self.who}
        floor = {n: [] for n in sizes}
        floor_kib = []
        for i in range(self.runs):
            for n in sizes:
                for who in self.order(i):
                    ms, per = self._idle_once(who, n, i)
                    got[n][who].append(ms)
                    if n == 1000:
                        per_conn[who].append(per)
                fms, fcpu, fkib = self.floor_idle(n)
                floor[n].append(fms)
                if n == 1000:
                    floor_kib.append(fkib)
                log(f"  4 run {i + 1} floor {n}: {fms:.2f} ms, {fcpu:.1f} ms CPU, "
                    f"{fkib:.1f} KiB/thread")
        for n in sizes:
            g = got[n]
            met_go, t_go = self.go_part(g, lambda r: r <= 1.0, "≤ Go")
            target, met = t_go, met_go
            if n == 1000:
                rf = median(ratios(g["ours"], floor[n]))
                target += f"; ≤ 1.5x floor: {rf:.2f}x"
                met = (met is not False) and rf <= 1.5
            self.res.row(f"4. shutdown with {n} idle keep-alive conns, signal → exit (ms)",
                         g, f_ms, target, met)
            self.res.row(f"4. floor: wake, end and join {n} bare idle threads "
                         f"(ms, bench/floor.c), same rounds",
                         cells={"ours": spread(floor[n], f_ms)})
        self.res.note(f"floor, figure 4: ours took {median(got[1000]['ours']):.1f} ms to exit "
                      f"with 1000 idle connections; waking, ending and joining 1000 bare "
                      f"threads alone takes {median(floor[1000]):.1f} ms")
        met_go, t_go = self.go_part(per_conn, lambda r: r <= 1.0, "≤ Go")
        med = median(per_conn["ours"])
        self.res.row("6. RSS per idle keep-alive conn, 1000 open (KiB; nginx: master+worker)",
                     per_conn, f_kib, f"≤ 12 KiB; {t_go}",
                     med <= 12 and met_go is not False)
        self.res.row("6. floor: RSS per bare thread asleep in poll(), 1000 of them "
                     "(KiB, bench/floor.c), same rounds",
                     cells={"ours": spread(floor_kib, f_kib)})

    def _idle_once(self, who, n, i):
        """Open n idle keep-alive connections to a fresh who, then its
        graceful stop: (ms to exit, KiB of RSS per connection)."""
        with self.start(who) as p:
            # One request first (nginx's readiness check made one too), so
            # "before" already holds one-off allocations.
            if get_root(p.port) != 200:
                raise RuntimeError(f"{who}: GET / failed")
            if who == "ours":
                wait_until(lambda: (p.status() or (0, 0))[1] == 1, 5)
            before = p.status()
            socks = open_keepalive(p.port, n, timeout=60)
            try:
                during = p.status()
                ms = p.graceful_exit(10)
            finally:
                close_all(socks)
        per = (during[0] - before[0]) / n
        log(f"  4/6 run {i + 1} {who} {n}: exit {ms:.2f} ms, RSS {before[0]} → "
            f"{during[0]} KiB ({per:.1f} KiB/conn), threads {during[1]}")
        if who == "ours" and during[1] != n + 1:
            self.res.note(f"4/6 run {i + 1}: ours had {during[1]} threads "
                          f"with {n} connections open")
        return ms, per

    # 5 -------------------------------------------------------------------

    def drain_overshoot(self):
        got = {w: [] for w in self.who if w != "nginx"}
        all_ok = True
        for i in range(self.runs):
            for who in self.order(i):
                if who == "nginx":
                    continue    # no /sleep route
                with self.start(who) as srv:
                    ms, ok, detail = self._overshoot_once(srv)
                log(f"  5 run {i + 1} {who}: overshoot {ms:.2f} ms; {detail}")
                if not ok:
                    self.res.note(f"5 run {i + 1} {who}: {detail}")
                    if who == "ours":
                        all_ok = False
                got[who].append(ms)
        med = median(got["ours"])
        self.res.row("5. drain overshoot: exit − last of 20 /sleep?ms=1000 answers (ms)",
                     got, f_ms, "≤ 1 ms, all 20 answered 200", med <= 1 and all_ok,
                     cells=None if all_ok else
                     {"ours": spread(got["ours"], f_ms) + " (not all 200!)"})

    def _overshoot_once(self, srv):
        n = 20
        req = b"GET /sleep?ms=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        socks = []
        pfd = pidfd_open(srv.pid)
        if pfd is None:
            raise RuntimeError("figure 5 needs os.pidfd_open (Linux ≥ 5.3)")
        sel = selectors.DefaultSelector()
        try:
            for _ in range(n):
                s = socket.create_connection((HOST, srv.port), timeout=5)
                s.sendall(req)
                socks.append(s)
            time.sleep(0.2)     # the scenario: SIGINT 200 ms after the last send
            t_sig = time.perf_counter()
            os.kill(srv.pid, signal.SIGINT)
            state = {}
            for s in socks:
                s.setblocking(False)
                state[s] = bytearray()
                sel.register(s, selectors.EVENT_READ, s)
            sel.register(pfd, selectors.EVENT_READ, None)
            done, statuses, t_exit = {}, [], None
            deadline = time.monotonic() + 10
            while (len(done) + len(statuses) < n or t_exit is None) \
                    and time.monotonic() < deadline:
                events = sel.select(1.0)
                now = time.perf_counter()
                for key, _ in events:
                    if key.data is None:
                        t_exit = now
                        sel.unregister(pfd)
                        continue
                    s = key.data
                    try:
                        data = s.recv(65536)
                    except OSError as exc:
                        statuses.append(f"error {exc}")
                        sel.unregister(s)
                        continue
                    if not data:
                        statuses.append("closed unanswered")
                        sel.unregister(s)
                        continue
                    state[s] += data
                    r = parse_response(state[s])
                    if r:
                        done[s] = (now, r[0])
                        sel.unregister(s)
            if t_exit is None:
                raise RuntimeError("server did not exit within 10 s of SIGINT")
            rc = srv.proc.wait(5)
            if srv.proc in LIVE:
                LIVE.remove(srv.proc)
            codes = sorted(st for _, st in done.values())
            ok = len(done) == n and all(c == 200 for c in codes) and rc == 0
            last = max((t for t, _ in done.values()), default=t_sig)
            detail = (f"{sum(c == 200 for c in codes)}/{n} answered 200"
                      f"{'; others: ' + ', '.join(map(str, statuses)) if statuses else ''}"
                      f"; last answer {1000 * (last - t_sig):.1f} ms after SIGINT, "
                      f"exit status {rc}")
            return 1000 * (t_exit - last), ok, detail
        finally:
            sel.close()
            os.close(pfd)
            close_all(socks)

    # 7 -------------------------------------------------------------------

    def scale(self):
        n = 2000 if self.quick else 10000
        got = {w: [] for w in self.who}
        rss = {w: [] for w in self.who}
        for i in range(self.runs):
            for who in self.order(i):
                with self.start(who) as p:
                    t0 = time.monotonic()
                    socks = open_keepalive(p.port, n, timeout=120)
                    opened = time.monotonic() - t0
                    try:
                        kib, threads = p.status()
                        ms = p.graceful_exit(10)
                    finally:
                        close_all(socks)
                log(f"  7 run {i + 1} {who}: {n} opened in {opened:.1f} s, RSS "
                    f"{kib / 1024:.1f} MiB, threads {threads}, exit {ms:.1f} ms")
                got[who].append(ms)
                rss[who].append(kib / 1024)
        self.res.row(f"7. {n:,} keep-alive conns open: signal → exit (ms)", got, f_ms,
                     "≤ 300 ms", median(got["ours"]) <= 300)
        self.res.row(f"7. RSS with {n:,} keep-alive conns open (MiB; nginx: master+worker)",
                     rss, f_mib)

    # 8 -------------------------------------------------------------------

    def churn(self):
        first = 10000
        total = 20000 if self.quick else 1000000
        limit = 60 if self.quick else 240       # seconds for the second ab
        got = {w: {"rss": [], "thr": []} for w in self.who}
        # Go and nginx run once: they are the references for "flat".
        plan = [("ours", i) for i in range(self.runs)] + \
            [(w, 0) for w in self.who if w != "ours"]
        for who, i in plan:
            with self.start(who) as p:
                settle = (lambda: (p.status() or (0, 0))[1] == 1) \
                    if who == "ours" else (lambda: True)
                c1, f1, _ = ab(p.port, first, 120)
                wait_until(settle, 5)
                rss0, thr0 = p.status()
                c2, f2, rps2 = ab(p.port, total - first, limit)
                wait_until(settle, 5)
                rss1, thr1 = p.status()
            done = c1 + c2
            log(f"  8 {who} run {i + 1}: {done:,} conns ({rps2:,.0f}/s), RSS {rss0} → "
                f"{rss1} KiB, threads {thr0} → {thr1}, failed {f1 + f2}")
            if done < total:
                self.res.note(f"8 {who} run {i + 1}: ab reached only {done:,} of "
                              f"{total:,} connections in its {limit} s limit")
            if f1 + f2:
                self.res.note(f"8 {who} run {i + 1}: ab counted {f1 + f2} failed requests")
            if who == "ours" and i == 0:
                self.res.note(f"8 ours run 1: after {c1:,} conns RSS {rss0 / 1024:.2f} MiB,"
                              f" {thr0} thread(s); after {done:,} RSS {rss1 / 1024:.2f} MiB,"
                              f" {thr1} thread(s); ab {rps2:,.0f} conn/s")
            got[who]["rss"].append((rss1 - rss0) / 1024)
            got[who]["thr"].append(thr1 - thr0)
        fmt_thr = lambda x: f"{x:+.0f}"  # noqa: E731
        fmt_rss = lambda x: f"{x:+.2f} MiB"  # noqa: E731
        once = lambda w, k, f: spread(got[w][k], f) + ("" if w == "ours" else " (1 run)")  # noqa: E731
        self.res.row(f"8. RSS drift, {first:,} → {total:,} conns via ab -c8 (MiB)",
                     target="within ±1 MiB", met=abs(median(got["ours"]["rss"])) <= 1,
                     cells={w: once(w, "rss", fmt_rss) for w in self.who})
        self.res.row(f"8. thread drift, {first:,} → {total:,} conns (Go: OS threads)",
                     target="within ±2", met=abs(median(got["ours"]["thr"])) <= 2,
                     cells={w: once(w, "thr", fmt_thr) for w in self.who})

    # timeline --------------------------------------------------------------

    def drain_timeline(self, png):
        with self.start("ours") as srv:
            data = timeline_run(srv)
        self.res.timeline = render_timeline(data, png, self.tmp)
        log(f"  {self.res.timeline}")

    def fail(self, label, exc):
        log(f"bench: {label}: {exc}")
        traceback.print_exc()
        self.res.error(label, exc)


# --------------------------------------------------------------------------
# the drain timeline


def timeline_run(srv, clients=50, seed=2024):
    """Run the load and the shutdown; returns the raw events.

    50 clients each keep one /sleep?ms=random(200..1500) in flight (keep-alive,
    reconnecting when told to close), a prober tries a new connection every
    5 ms, and /proc/PID/status is sampled every 2 ms.  SIGINT goes 300 ms
    after all clients are being served; recording ends 50 ms after exit.
    """
    rng = random.Random(seed)
    pfd = pidfd_open(srv.pid)
    if pfd is None:
        raise RuntimeError("the timeline needs os.pidfd_open (Linux ≥ 5.3)")
    sel = selectors.DefaultSelector()
    sel.register(pfd, selectors.EVENT_READ, ("exit", None))
    ev = {"completed": [], "refused": [], "reset": [], "bad": [], "probe_ok": [],
          "threads": []}
    socks = set()
    now = time.perf_counter

    def connect(kind, c=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((HOST, srv.port))
        if rc == errno.ECONNREFUSED:
            ev["refused"].append(now())
            s.close()
            if c is not None:
                c["stopped"] = True
            return
        if rc not in (0, errno.EINPROGRESS):
            ev["reset"].append(now())
            s.close()
            if c is not None:
                c["stopped"] = True
            return
        socks.add(s)
        if c is not None:
            c.update(sock=s, buf=bytearray(), connected=False)
        sel.register(s, selectors.EVENT_WRITE, (kind, c if c is not None else s))

    def finish(s):
        sel.unregister(s)
        socks.discard(s)
        s.close()

    def send_request(c):
        ms = rng.randint(200, 1500)
        c["sock"].send(f"GET /sleep?ms={ms} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        c["sent"] += 1
        sel.modify(c["sock"], selectors.EVENT_READ, ("client", c))

    cl = [{"sock": None, "buf": bytearray(), "stopped": False, "sent": 0}
          for _ in range(clients)]
    t_start = now()
    for c in cl:
        connect("client", c)
    t_sig = t_exit = None
    sig_at = None
    next_sample = next_probe = now()
    hard_deadline = t_start + 20
    try:
        while True:
            t = now()
            if t > hard_deadline:
                raise RuntimeError("timeline: server still running 20 s in")
            if t_exit is not None and t > t_exit + 0.05:
                break
            if sig_at is None and all(c["sent"] for c in cl):
                st = proc_status(srv.pid)
                if st and st[1] >= clients + 1:
                    sig_at = t + 0.3
            if sig_at is not None and t_sig is None and t >= sig_at:
                t_sig = now()
                os.kill(srv.pid, signal.SIGINT)
            if t >= next_sample:
                if t_exit is None:
                    st = proc_status(srv.pid)
                    if st:
                        ev["threads"].append((now(), st[1]))
                next_sample += 0.002
            if t >= next_probe:
                connect("probe")
                next_probe += 0.005
            timeout = max(0.0, min(next_sample, next_probe) - now())
            for key, mask in sel.select(timeout):
                kind, obj = key.data
                stamp = now()
                if kind == "exit":
                    t_exit = stamp
                    sel.unregister(pfd)
                    srv.proc.wait(5)
                    if srv.proc in LIVE:
                        LIVE.remove(srv.proc)
                    ev["threads"].append((stamp, 0))
                    continue
                s = key.fileobj if kind == "probe" else obj["sock"]
                if mask & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == errno.ECONNREFUSED:
                        ev["refused"].append(stamp)
                    elif err:
                        ev["reset"].append(stamp)
                    elif kind == "probe":
                        ev["probe_ok"].append(stamp)
                    if kind == "probe" or err:
                        finish(s)
                        if kind == "client":
                            obj["stopped"] = True
                    else:
                        send_request(obj)
                    continue
                c = obj
                try:
                    data = s.recv(65536)
                except OSError:
                    data = None
                if not data:    # reset, or closed before the answer
                    ev["reset"].append(stamp)
                    finish(s)
                    c["stopped"] = True
                    continue
                c["buf"] += data
                r = parse_response(c["buf"])
                if not r:
                    continue
                ev["completed" if r[0] == 200 else "bad"].append(stamp)
                close = closes_after(c["buf"], r[2])
                del c["buf"][:r[1]]
                if close:
                    finish(s)
                    connect("client", c)
                else:
                    send_request(c)
    finally:
        sel.close()
        os.close(pfd)
        close_all(list(socks))
    if t_sig is None:
        raise RuntimeError("timeline: the load never reached 50 connections")
    return {"t_sig": t_sig, "t_exit": t_exit, "t_start": t_start, "ev": ev,
            "log": list(srv.lines)}


def gnuplot_terminal():
    out = subprocess.run([TOOL["gnuplot"], "-e", "set terminal"], capture_output=True,
                         text=True, timeout=30)
    text = out.stdout + out.stderr
    if re.search(r"^\s*pngcairo\s", text, re.M):
        return "pngcairo size 1200,700 font 'DejaVu Sans,11'"
    if re.search(r"^\s*png\s", text, re.M):
        return "png size 1200,700"
    return None


def render_timeline(data, png, tmp):
    t_sig, t_exit, ev = data["t_sig"], data["t_exit"], data["ev"]
    ms = lambda t: 1000 * (t - t_sig)  # noqa: E731
    x0 = max(ms(data["t_start"]), -400.0)
    x1 = ms(t_exit) + 50
    d = Path(tempfile.mkdtemp(prefix="timeline-", dir=tmp))

    def cumulative(name, times):
        path = d / f"{name}.dat"
        times = sorted(times)
        n0 = sum(1 for t in times if ms(t) < x0)
        rows = [f"{x0:.3f} {n0}"]
        n = n0
        for t in times:
            if ms(t) >= x0:
                n += 1
                rows.append(f"{ms(t):.3f} {n}")
        rows.append(f"{x1:.3f} {n}")
        path.write_text("\n".join(rows) + "\n")
        return path

    completed = cumulative("completed", ev["completed"])
    refused = cumulative("refused", ev["refused"])
    threads = d / "threads.dat"
    threads.write_text("".join(f"{ms(t):.3f} {n}\n" for t, n in ev["threads"]
                               if ms(t) >= x0) + f"{x1:.3f} 0\n")
    term = gnuplot_terminal()
    if term is None:
        raise RuntimeError("gnuplot has neither the pngcairo nor the png terminal")
    exit_ms = ms(t_exit)
    after = [t for t in ev["completed"] if t >= t_sig]
    refused_after = [t for t in ev["refused"] if t >= t_sig]
    at_sig = [n for t, n in ev["threads"] if t <= t_sig]
    thr_at_sig = at_sig[-1] if at_sig else 0
    script = f"""
set terminal {term}
set output '{png}'
set title "Graceful shutdown of ./server under load: 50 clients with /sleep?ms=200..1500 in flight, a connect attempt every 5 ms\\nSIGINT at t = 0; exit at {exit_ms:.0f} ms"
set xlabel "time since SIGINT (ms)"
set ylabel "requests completed (cumulative) / threads alive"
set y2label "connection attempts refused (cumulative)"
set xrange [{x0:.1f}:{x1:.1f}]
set yrange [0:*]
set y2range [0:*]
set ytics nomirror
set y2tics
set grid xtics ytics
set key below horizontal box maxcols 3 width -2
set bmargin 6
set arrow 1 from 0, graph 0 to 0, graph 1 nohead dashtype 2 linewidth 2 linecolor rgb "#cc0000"
set label 1 "SIGINT" at 0, graph 0.97 offset 0.5, 0 textcolor rgb "#cc0000"
set arrow 2 from {exit_ms:.3f}, graph 0 to {exit_ms:.3f}, graph 1 nohead dashtype 2 linewidth 2 linecolor rgb "#333333"
set label 2 "exit" at {exit_ms:.3f}, graph 0.97 offset -3.5, 0
plot '{completed}' using 1:2 with steps linewidth 2 linecolor rgb "#1f77b4" title "requests completed with 200", \\
     '{threads}' using 1:2 with steps linewidth 2 linecolor rgb "#2ca02c" title "server threads alive", \\
     '{refused}' using 1:2 axes x1y2 with steps linewidth 2 linecolor rgb "#d62728" title "connection attempts refused, ECONNREFUSED (right axis)"
"""
    script_path = d / "drain.gp"
    script_path.write_text(script)
    r = subprocess.run([TOOL["gnuplot"], str(script_path)], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"gnuplot failed: {r.stderr.strip()[-500:]}")
    last = max(after, default=t_sig)
    first_refused = min(refused_after, default=None)
    return (f"{thr_at_sig} server threads alive at SIGINT; "
            f"{len(after)} requests completed after it (last at {ms(last):.0f} ms), "
            f"{len(ev['bad'])} non-200; {len(refused_after)} connection attempts "
            f"refused after SIGINT (first at "
            f"{'—' if first_refused is None else f'{ms(first_refused):.1f}'} ms); "
            f"{len(ev['reset'])} connections reset or closed unanswered; "
            f"exit {exit_ms:.1f} ms after SIGINT, {exit_ms - ms(last):.1f} ms after "
            f"the last answer")


# --------------------------------------------------------------------------
# setup


def find_tools():
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    missing = []
    for name, pkg in TOOLS:
        found = shutil.which(name, path=path)
        if found:
            TOOL[name] = found
        else:
            missing.append((name, pkg))
    if "gnuplot" in TOOL and gnuplot_terminal() is None:
        missing.append(("gnuplot png terminal", "gnuplot-nox"))
    if missing:
        print("bench: missing: " + ", ".join(f"{n} (Debian package {p})" for n, p in missing))
        sudo = "" if os.geteuid() == 0 else "sudo "
        pkgs = " ".join(dict.fromkeys(p for _, p in missing))
        print(f"install with: {sudo}apt-get install -y {pkgs}")
        sys.exit(1)


def first_line(args):
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (r.stdout.strip() or r.stderr.strip())
    return text.splitlines()[0] if text else "?"


def build():
    """make server, with the Makefile's normal flags (not CFLAGS from the
    environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CFLAGS", "LDFLAGS", "CC")}
    r = subprocess.run([TOOL["make"], "--no-print-directory", "-C", str(REPO), "server"],
                       env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not os.access(SERVER_BIN, os.X_OK):
        print(r.stdout + r.stderr)
        print("bench: `make server` failed")
        sys.exit(1)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "built"


def build_floor(tmp):
    """Compile bench/floor.c into tmp with the Makefile's optimisation."""
    exe = os.path.join(tmp, "floor")
    run_tool([TOOL["gcc"], "-std=c11", "-O2", "-pthread", "-o", exe,
              BENCH_DIR / "floor.c", BENCH_DIR.parent / "lesson" / "handshakes.c"], 120)
    return exe


def git_desc():
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "server.c", "handler.c", "handler.h", "uploads.c", "uploads.h",
                                "log.c", "log.h", "http", "process", "Makefile"],
                               capture_output=True, text=True, timeout=30).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
        return rev + (f" + uncommitted changes to {', '.join(dirty)}" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine():
    cores = os.cpu_count()
    model = "?"
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = m.group(1).strip() if m else "?"
        mem = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(mem.group(1)) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        mem = "?"
    return cores, model, mem


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


HAND_MARK = "<!-- Written by hand from here on: bench.py keeps it when it rewrites this file. -->"


def kept_by_hand(path):
    """The hand-written part of an existing results file (the log of what
    was measured and why), from HAND_MARK to the end; '' if none."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    i = text.find(HAND_MARK)
    return "\n" + text[i:] if i >= 0 else ""


def on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="one short run per figure (CI); targets not enforced")
    ap.add_argument("--write", action="store_true",
                    help="with --quick: write bench/results.md and bench/drain.png "
                         "anyway (default bench/results-quick.md, drain-quick.png)")
    ap.add_argument("--only", default="",
                    help="comma-separated subset of: 1,3,4,5,7,8,drain "
                         "(1 also runs 2, 4 also runs 6); for development")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)

    find_tools()
    started = time.monotonic()
    log(f"bench: make server: {build()}")
    nofile = raise_nofile()
    if nofile < 10000 + 200:
        log(f"bench: warning: descriptor limit {nofile} is below what figure 7 needs")

    full_out = not args.quick or args.write
    results_path = BENCH_DIR / ("results.md" if full_out else "results-quick.md")
    png_path = BENCH_DIR / ("drain.png" if full_out else "drain-quick.png")
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    cores, model, mem = machine()
    versions = {
        "wrk": first_line([TOOL["wrk"], "-v"]).split(" Copyright")[0],
        "nginx": first_line([TOOL["nginx"], "-v"]),
        "gcc": first_line([TOOL["gcc"], "--version"]),
        "ab": first_line([TOOL["ab"], "-V"]).replace("This is ", "").split(" <")[0],
        "gnuplot": first_line([TOOL["gnuplot"], "-V"]),
    }
    load = Path("/proc/loadavg").read_text().split()[:3]
    tmp = tempfile.mkdtemp(prefix="bench-")
    failed = False
    try:
        body = server_body()
        go_exe, versions["go"] = build_go(tmp)
        b = Bench(args, tmp, body, go_exe, build_floor(tmp))
        if go_exe is None:
            b.res.note(versions["go"])
        log(f"bench: GET / body is {len(body)} bytes; nginx returns the same bytes; "
            f"Go: {versions['go']}")
        steps = [
            ("1", "1./2. throughput", b.throughput),
            ("3", "3. idle shutdown", b.idle_shutdown),
            ("4", "4./6. idle keep-alive connections", b.idle_connections),
            ("5", "5. drain overshoot", b.drain_overshoot),
            ("7", "7. scale", b.scale),
            ("8", "8. connection churn", b.churn),
            ("drain", "drain timeline", lambda: b.drain_timeline(png_path)),
        ]
        for key, label, fn in steps:
            if only and key not in only:
                continue
            log(f"bench: {label} ({time.monotonic() - started:.0f} s in)")
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - reported, then go on
                b.fail(label, exc)
            finally:
                kill_all()      # stragglers of a figure that failed midway
        res = b.res
        failed = bool(res.errors)
    finally:
        kill_all()
        shutil.rmtree(tmp, ignore_errors=True)

    wall = time.monotonic() - started
    mode = ("quick (--quick: one short run per figure; * = indicative, targets "
            "not enforced)" if args.quick else
            "full (3 runs per figure: median (min–max); figure 3: 10 fresh processes)")
    header = [
        "# ./server beside Go's net/http and nginx",
        "",
        f"Generated by `bench/bench.py{' --quick' if args.quick else ''}` on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} in {wall:.0f} s.",
        "",
        f"- mode: {mode}",
        f"- machine: {cores} cores ({model}), {mem}, kernel {os.uname().release}, "
        f"load average at start {' '.join(load)} (a shared machine: figures are noisy)",
        f"- server: {git_desc()}, built by `make server` (the Makefile's flags)",
        f"- {versions['wrk']}",
        f"- {versions['nginx']} (1 worker, bench/nginx.conf), ab: {versions['ab']}",
        f"- Go: {versions.get('go', '?')} (bench/go/main.go, GOMAXPROCS = cores)",
        f"- gcc: {versions['gcc']}",
        f"- {versions['gnuplot']}; python {sys.version.split()[0]}; RLIMIT_NOFILE {nofile}",
        "",
    ]
    legend = [
        "",
        "ours ÷ Go and ours ÷ nginx: ratios from the same round (median (min–max) of "
        "the per-round ratios; the order of the three rotates each round): higher is "
        "better for req/s, lower is better for times, CPU and memory. Times run from "
        "the signal to the end of waitpid() in the benchmark (ours and Go: SIGINT; "
        "nginx: SIGQUIT, its graceful stop, to the master's exit). RSS is VmRSS from "
        "/proc/PID/status (nginx: master + worker). The floor rows (bench/floor.c: "
        "bare threads, no sockets) run in the same rounds as their figure.",
    ]
    body_md = "\n".join(header) + "\n" + res.table() + "\n" + "\n".join(legend) + "\n"
    if res.notes:
        body_md += "\n## Notes\n\n" + "\n".join(f"- {n}" for n in res.notes) + "\n"
    if res.timeline:
        body_md += (f"\n## Drain timeline\n\n{res.timeline}\n\n"
                    f"![graceful shutdown under load]({png_path.name})\n")
    print()
    print(res.table())
    print()
    if only:
        log(f"bench: --only given: not writing {results_path.name}")
    else:
        results_path.write_text(body_md + kept_by_hand(results_path))
        log(f"bench: wrote {results_path.relative_to(REPO)}"
            f"{' and ' + str(png_path.relative_to(REPO)) if png_path.exists() else ''}")
    log(f"bench: done in {wall:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_all()
