#!/usr/bin/env python3
"""A second opinion on the survey's FAILs, from raw sockets, curl, ss and tcpdump.

    confirm.py NAME SCENARIO [RUNS]     (NAME as in `survey.py --list`)

It shares nothing with gracecheck's clients or checks: it starts the
survey's command for NAME itself (its own template filling, readiness by
curl, signal to the leader or to the --pid-file PID), plays one scenario
with plain sockets or curl, and prints what the client saw with times from
the signal.  With RUNS (1 to 50) it plays the scenario that many times, one
server at a time, and ends with a tally of each run's result.  Every run
kills its server's process group, on error too.  Scenarios:

  idle-exit       signal an idle server; time to its exit, status
  conn-close      curl -v a keep-alive slow request across the signal: headers
  idle-keepalive  20 connections served once + 20 silent; signal; EOF or RST, exit time
  keepalive-before  no signal: 100 keep-alive connections, one GET / each (Connection
                  header, closed or not); then gracecheck's idle-keepalive order
                  (served, silent, ...) until a GET waits 5 s
  pipelined       3 requests in one write (slow first); signal; each response's
                  status line and Content-Length (curl of each URL before, first)
  partial-request the request line; signal; the rest of the head 100 ms later;
                  what came back
  backlog         SIGSTOP the group (and wait until it is stopped), 4 connect+send a
                  keep-alive GET (as gracecheck; CONFIRM_CLOSE=1: with Connection:
                  close), signal, SIGCONT; per client
  deadline        a 6 s request through curl; signal; curl's result and the exit
  second-signal   a 6 s request; signal; the same signal 0.3 s later; the exit
  in-flight       20 curls of 1 s in parallel; signal; each curl's status and
                  body size (one curl of the same URL before the signal first)
  blocked-signals the command started with SIGINT, SIGTERM and its stop signal
                  blocked (sigprocmask, inherited by exec); signal once idle
  signal-race     the signal as soon as the readiness URL answers 200; exit within 5 s
                  or not (then the processes left, and the exit within 40 s more)
  refuse-new      a 3 s request in flight; signal; connect + GET / every 20 ms
                  (CONFIRM_GAP_MS) for 1.5 s; connects slower than 0.5 s listed
  under-load      32 keep-alive clients looping GET / + 2 threads opening new
                  connections, signal at 0.5 s; per request: answered, EOF before a
                  response, RST after the request, truncated, timeout (lost: RST after
                  the request, truncated, timeout, as gracecheck counts), with times
  handshake       a client socket with a drop-everything classic BPF filter (one
                  instruction, ret #0) connects, so the server's SYN-ACK never reaches
                  it; `ss -tn state syn-recv` shows it held; signal; filter off; the
                  connect's result and a Connection: close GET; tcpdump on lo (the
                  server's port) when installed
"""
import ctypes
import errno
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import survey   # noqa: E402  (the table of commands only)

SIGS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "QUIT": signal.SIGQUIT,
        "USR1": signal.SIGUSR1, "WINCH": signal.SIGWINCH}


def opt(options, name, default=None):
    return options[options.index(name) + 1] if name in options else default


PREPARED = {}    # row name -> (scratch dir, substitutions): built once per confirm.py run


def prepared(row):
    if row["name"] not in PREPARED:
        scratch = tempfile.mkdtemp(prefix="confirm-build-")
        try:
            PREPARED[row["name"]] = (scratch, row["prepare"](scratch) if row["prepare"] else {})
        except BaseException:
            subprocess.run(["rm", "-rf", scratch])
            raise
    return PREPARED[row["name"]][1]


class Run:
    def __init__(self, row, blocked=(), settle=0.3):
        self.row = row
        self.proc = None
        self.t0 = None
        self.exit_seen = threading.Event()
        self.dir = tempfile.mkdtemp(prefix="confirm-")
        try:
            self._start(row, blocked, settle)
        except BaseException:
            self.end()          # what was started is killed, even on error
            raise

    def _start(self, row, blocked, settle):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        fill = lambda t: t.replace("{port}", str(self.port)).replace("{dir}", self.dir)
        o = row["options"]
        for i, a in enumerate(o):
            if a == "--render":
                with open(o[i + 1]) as f, open(os.path.join(self.dir, os.path.basename(o[i + 1])), "w") as g:
                    g.write(fill(f.read()))
        subst = prepared(row)
        argv = [fill(subst.get(a, a)) for a in row["command"]]
        self.sig = SIGS[opt(o, "--signal", "INT")]
        mask = lambda: signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=mask if blocked else None)
        ready = opt(o, "--ready-http", "/")
        for _ in range(1500):
            if self.curl_status(ready) == "200":
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"exited with status {self.proc.returncode} before it was ready")
            time.sleep(0.01)
        else:
            raise SystemExit("not ready")
        self.target = self.proc.pid
        pidfile = opt(o, "--pid-file")
        if pidfile:
            with open(fill(pidfile)) as f:
                self.target = int(f.read().strip())
        time.sleep(settle)

    def curl_status(self, path):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                              f"http://127.0.0.1:{self.port}{path}"], capture_output=True, text=True)
        return out.stdout

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def signal(self, sig=None):
        first = self.t0 is None
        self.wall0 = time.time()
        self.t0 = time.monotonic()
        os.kill(self.target, sig or self.sig)
        if first:
            threading.Thread(target=self._note_exit, daemon=True).start()

    def _note_exit(self):
        """The time of the leader's exit, seen when it happens (waitid with
        WNOWAIT leaves the child for wait() to reap, which waits for this)."""
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
            self.exited_at = time.monotonic()
        except OSError:
            pass
        finally:
            self.exit_seen.set()

    def since(self):
        return f"{(time.monotonic() - self.t0) * 1000:.0f} ms"

    def wait_exit(self, bound):
        if not self.exit_seen.wait(bound):
            return f"no exit within {bound:g} s"
        rc = self.proc.wait()
        at = getattr(self, "exited_at", None) or time.monotonic()
        return f"exit {(at - self.t0) * 1000:.0f} ms after the signal, status {rc}"

    def end(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


def group_stopped(pgid, bound):
    """Wait until every process of the group is stopped (state T in
    /proc/PID/stat), at most bound seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        states = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:       # state, ppid, pgrp
                states.append(fields[0])
        if states and all(st in "Tt" for st in states):
            return True
        time.sleep(0.002)
    return False


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def req(path, close=False):
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode()


def read_all(s, bound=8.0):
    """Everything until EOF, RST or the bound: (bytes, how it ended)."""
    s.settimeout(bound)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, "EOF"
            data += chunk
    except ConnectionResetError:
        return data, "RST"
    except socket.timeout:
        return data, "timeout"


# ---------------------------------------------------------------------------
# The scenarios below were added to confirm the cells the first ones could
# not: a held handshake, the load race, a signal at startup, a half-sent
# request, and gunicorn's sync workers before any signal.

class Conn:
    """One raw connection and a reader of HTTP/1.1 responses, written for
    confirm.py alone (Content-Length, chunked, or delimited by the close)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def more(self):
        """Read more: "" when bytes came, else "EOF", "RST", "timeout" or
        "error ENAME"."""
        try:
            chunk = self.s.recv(65536)
        except ConnectionResetError:
            return "RST"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return f"error {errno.errorcode.get(e.errno, e)}"
        if not chunk:
            return "EOF"
        self.buf += chunk
        return ""

    def response(self):
        """(kind, status, body length, headers): kind "answered", or how it
        ended: "EOF" or "RST" before any byte, "truncated" after some,
        "timeout", "error ENAME"."""
        def cut(end):
            return ("truncated" if self.buf or end == "truncated" else end), None, 0, {}
        while b"\r\n\r\n" not in self.buf:
            end = self.more()
            if end:
                return cut(end)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return "truncated", None, 0, {}
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        if "content-length" in headers:
            need = int(headers["content-length"])
            while len(self.buf) < need:
                if self.more():
                    return "truncated", status, 0, headers
            self.buf = self.buf[need:]
            return "answered", status, need, headers
        if headers.get("transfer-encoding", "").lower() == "chunked":
            size_total = 0
            while True:
                while b"\r\n" not in self.buf:
                    if self.more():
                        return "truncated", status, 0, headers
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    if self.more():
                        return "truncated", status, 0, headers
                self.buf = self.buf[size + 2:]
                if size == 0:
                    return "answered", status, size_total, headers
                size_total += size
        if status in (204, 304) or status < 200:
            return "answered", status, 0, headers
        while True:
            end = self.more()
            if end == "EOF":
                n, self.buf = len(self.buf), b""
                return "answered", status, n, headers
            if end:
                return "truncated", status, 0, headers


SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27          # socket(7), asm-generic/socket.h
DROP_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0)      # classic BPF, one instruction: ret #0


def attach_drop_all(sock):
    """Every segment to sock is dropped: struct sock_fprog {u16 len; filter *}."""
    prog = ctypes.create_string_buffer(DROP_ALL, len(DROP_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", 1, ctypes.addressof(prog)))


def ss_syn_recv(port):
    """`ss -Htn state syn-recv` on the server's port: one line per handshake."""
    out = subprocess.run(["ss", "-Htn", "state", "syn-recv", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=5).stdout
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


class Capture:
    """tcpdump on lo, the server's port only; stop() gives its lines."""

    def __init__(self, port):
        self.proc = None
        if not shutil.which("tcpdump"):
            return
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-l", "-tt", "-S", f"tcp port {port}"],
                                     stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL)
        for _ in range(300):
            self.err.seek(0)
            if "listening on" in self.err.read() or self.proc.poll() is not None:
                break
            time.sleep(0.01)

    def stop(self):
        if self.proc is None:
            return ["(tcpdump not installed: no capture)"]
        time.sleep(0.1)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.seek(0)
        return self.out.read().splitlines()


def handshake(run):
    """One client's handshake held half-open by its own drop-all filter."""
    cap = Capture(run.port)
    s = socket.socket()
    tag = "?"
    try:
        attach_drop_all(s)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", run.port))
        me = s.getsockname()[1]
        deadline = time.monotonic() + 3
        lines = []
        while time.monotonic() < deadline:
            lines = [l for l in ss_syn_recv(run.port) if l.endswith(f":{me}")]
            if lines:
                break
            time.sleep(0.005)
        if not lines:
            print("ss never showed the handshake in SYN-RECV")
            return "not held"
        print("before the signal, ss -tn state syn-recv:", lines[0])
        run.signal()
        time.sleep(0.05)
        after = [l for l in ss_syn_recv(run.port) if l.endswith(f":{me}")]
        print(f"{run.since()}: ss syn-recv still lists it: {'yes' if after else 'no'}")
        s.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        print(f"{run.since()}: filter off")
        _, w, _ = select.select([], [s], [], 5)
        if not w:
            print(f"{run.since()}: connect still pending after 5 s")
            tag = "connect pending 5 s"
        else:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                tag = f"connect: {errno.errorcode.get(err, err)}"
                print(f"{run.since()}: {tag}")
            else:
                print(f"{run.since()}: connected; GET / with Connection: close")
                s.setblocking(True)
                try:
                    s.sendall(req("/", close=True))
                    data, how = read_all(s, 5)
                except OSError as e:
                    data, how = b"", f"send: {errno.errorcode.get(e.errno, e)}"
                first = data.split(b"\r\n")[0].decode("latin-1")
                tag = f"answered {first!r}, then {how}" if data else f"let in, then {how}"
                print(f"{run.since()}: {len(data)} bytes, {tag}")
        print(run.wait_exit(6))
    finally:
        s.close()
        for line in cap.stop():
            if not line.strip():
                continue
            try:
                at = (float(line.split()[0]) - run.wall0) * 1000 if run.t0 is not None else None
            except ValueError:
                at = None
            print(f"  tcpdump {at:+9.1f} ms: " if at is not None else "  tcpdump: ", line.split(" ", 1)[-1])
    return tag


def under_load(run):
    """gracecheck's under-load, counted the same way, by its own clients: 32
    keep-alive clients looping GET / and 2 threads opening new connections;
    the signal at 0.5 s.  Lost (what gracecheck FAILs): a RST after a whole
    request was sent, a truncated response, a timeout; clean: EOF before
    any byte of a response, a refused connect, a RST on the send itself."""
    base = Conn(connect(run.port))
    base.s.sendall(req("/", close=True))
    kind, bstatus, blen, _ = base.response()
    base.s.close()
    if kind != "answered":
        print(f"baseline GET /: {kind}")
        return "no baseline"
    lock = threading.Lock()
    counts = {}
    events = []
    stop = [time.monotonic() + 6.0]

    def when():
        return f"{(time.monotonic() - run.t0) * 1000:.1f} ms after the signal" if run.t0 else "before the signal"

    def note(what, where=""):
        with lock:
            counts[what] = counts.get(what, 0) + 1
            if what in ("RST after the request", "truncated", "timeout", "not as before") \
                    or what.startswith(("error", "connect error")):
                events.append(f"{what} on {where}, {when()}")

    def one(c, where, close=False):
        """Send a GET on c; what it got; False when the connection is done."""
        try:
            c.s.sendall(req("/", close))
        except ConnectionResetError:
            note("RST on the send (clean)")
            return False
        except BrokenPipeError:
            note("EOF before a response (clean)")
            return False
        kind, status, length, headers = c.response()
        if kind == "answered":
            note("answered" if (status, length) == (bstatus, blen) else "not as before", where)
            return "close" not in headers.get("connection", "").lower()
        note({"EOF": "EOF before a response (clean)", "RST": "RST after the request"}.get(kind, kind), where)
        return False

    def dial():
        try:
            return Conn(socket.create_connection(("127.0.0.1", run.port), timeout=5))
        except (ConnectionRefusedError, ConnectionResetError):
            note("refused")
        except socket.timeout:
            note("timeout", "a connect")
        except OSError as e:
            note(f"connect error {errno.errorcode.get(e.errno, e)}", "a connect")
        return None

    def keepalive():
        c = dial()
        if c is None:
            return
        with c.s:
            n = 0
            while time.monotonic() < stop[0] and n < 100000:
                n += 1
                if not one(c, f"keep-alive request {n}"):
                    return

    def fresh():
        n = 0
        while time.monotonic() < stop[0] and n < 5000:
            n += 1
            c = dial()
            if c is None:
                if run.proc.poll() is not None:
                    return
                time.sleep(0.005)
                continue
            with c.s:
                one(c, "a new connection")

    threads = [threading.Thread(target=keepalive, daemon=True) for _ in range(32)]
    threads += [threading.Thread(target=fresh, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    run.signal()
    exit_ = run.wait_exit(5)
    stop[0] = min(stop[0], time.monotonic())
    for t in threads:
        t.join(12)
    lost = sum(counts.get(k, 0) for k in ("RST after the request", "truncated", "timeout"))
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" (baseline {bstatus}, {blen} bytes)")
    for e in events[:12]:
        print("  ", e)
    if len(events) > 12:
        print(f"   ... {len(events) - 12} more")
    print(exit_)
    tag = "lost" if lost else "none lost"
    if counts.get("not as before"):
        tag += ", some not as before"
    if exit_.startswith("no exit"):
        tag += ", no exit in 5 s"
    return tag


def signal_race(run):
    """The signal right after the first 200 (no settling time)."""
    run.signal()
    out = run.wait_exit(5)
    print(out)
    if out.startswith("no exit"):
        ps = subprocess.run(["ps", "-o", "pid,ppid,stat,etimes,args", "-s", str(run.proc.pid)],
                            capture_output=True, text=True).stdout
        print("left at 5 s:\n" + ps.rstrip())
        out2 = run.wait_exit(40)
        print("then:", out2)
        return "no exit in 5 s"
    return "exit within 5 s"


def partial_request(run):
    """The request line sent, the signal, the rest of the head 100 ms later."""
    s = connect(run.port)
    s.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.3)
    run.signal()
    time.sleep(0.1)
    try:
        s.sendall(b"Host: x\r\n\r\n")
        sent = "rest of the head sent"
    except OSError as e:
        sent = f"rest of the head: {errno.errorcode.get(e.errno, e)}"
    data, how = read_all(s, 5)
    s.close()
    first = data.split(b"\r\n")[0].decode("latin-1")
    tag = f"answered {first!r}" if data else how
    print(f"{sent} at {run.since()}; then {len(data)} bytes ({tag}), then {how}")
    print(run.wait_exit(6))
    return tag


def keepalive_before(run):
    """No signal: 100 keep-alive connections, each GET / and kept open;
    then gracecheck's idle-keepalive order (a served one, a silent one, ...)
    until a GET waits 5 s."""
    conns = []
    got = {}
    try:
        for i in range(100):
            c = Conn(connect(run.port))
            c.s.settimeout(5)
            c.s.sendall(req("/"))
            t = time.monotonic()
            kind, status, _, headers = c.response()
            end = ""
            if kind == "answered":
                c.s.settimeout(0.2)
                end = c.more() or "bytes"
                c.s.settimeout(5)
            key = f"{kind} {status or ''} Connection: {headers.get('connection', '(none)')}, then {end or kind}"
            got.setdefault(key, []).append((time.monotonic() - t) * 1000)
            conns.append(c)
        print("100 keep-alive connections, one GET / each, no signal:")
        for k, ms in got.items():
            print(f"  {len(ms)} x {k} (max {max(ms):.0f} ms)")
    finally:
        for c in conns:
            c.s.close()
    conns = []
    tag = "200 connections served or open"
    try:
        for i in range(200):
            c = Conn(connect(run.port))
            conns.append(c)
            if i % 2:
                continue
            c.s.settimeout(5)
            c.s.sendall(req("/"))
            t = time.monotonic()
            kind, status, _, _ = c.response()
            if kind != "answered":
                print(f"then gracecheck's order: GET / on connection {i + 1} of 200: {kind} after "
                      f"{(time.monotonic() - t) * 1000:.0f} ms, with {i // 2} silent connections open "
                      f"and {i // 2} served (no signal sent)")
                tag = f"connection {i + 1}: {kind}"
                break
    finally:
        for c in conns:
            c.s.close()
    return tag


NEW_SCENARIOS = {"handshake": handshake, "under-load": under_load, "signal-race": signal_race,
                 "partial-request": partial_request, "keepalive-before": keepalive_before}


def scenario(run, name):
    slow = survey.SLOW[1]
    if name == "idle-exit":
        run.signal()
        print(run.wait_exit(10))
    elif name == "conn-close":
        curl = subprocess.Popen(["curl", "-sv", "-m", "8", "-o", "/dev/null", run.url(slow.replace("{ms}", "1000"))],
                                stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        run.signal()
        err = curl.communicate()[1]
        print("".join(line + "\n" for line in err.splitlines() if line.startswith(("<", "*"))
                      and ("Connection" in line or "HTTP/" in line or "closing" in line.lower()
                           or "left intact" in line)))
        print(run.wait_exit(10))
    elif name == "idle-keepalive":
        served = []
        for _ in range(20):
            s = connect(run.port)
            s.sendall(req("/"))
            s.settimeout(5)
            s.recv(65536)
            served.append(s)
        silent = [connect(run.port) for _ in range(20)]
        time.sleep(0.3)
        run.signal()
        ends = {}
        lock = threading.Lock()

        def watch(s, kind):
            _, how = read_all(s, 8)
            with lock:
                ends.setdefault((kind, how), []).append(run.since())
        threads = [threading.Thread(target=watch, args=(s, k)) for k, group in
                   (("served", served), ("silent", silent)) for s in group]
        for t in threads:
            t.start()
        exit_ = run.wait_exit(10)
        for t in threads:
            t.join()
        for (kind, how), times in sorted(ends.items()):
            print(f"{len(times)} {kind} connections: {how}, last at {max(times, key=lambda x: float(x.split()[0]))}")
        print(exit_)
    elif name == "pipelined":
        for path in (slow.replace("{ms}", "1000"), "/"):
            print(f"before the signal, {path}:", subprocess.run(
                ["curl", "-s", "-m", "8", "-o", "/dev/null", "-w", "http %{http_code}, %{size_download} bytes",
                 run.url(path)], capture_output=True, text=True).stdout)
        s = connect(run.port)
        s.sendall(req(slow.replace("{ms}", "1000")) + req("/") + req("/"))
        time.sleep(0.3)
        run.signal()
        data, how = read_all(s, 8)
        print(f"{data.count(b'HTTP/1.1 ')} of 3 responses, then {how}")
        for line in data.split(b"\r\n"):
            if line.startswith(b"HTTP/") or line.lower().startswith(b"content-length"):
                print("  ", line.decode("latin-1"))
        print(run.wait_exit(10))
    elif name == "backlog":
        os.killpg(run.proc.pid, signal.SIGSTOP)
        if not group_stopped(run.proc.pid, 2.0):
            print("the group did not stop within 2 s")
        clients = []
        for _ in range(4):
            s = connect(run.port)
            s.sendall(req("/", close=os.environ.get("CONFIRM_CLOSE") == "1"))
            clients.append(s)
        run.signal()
        os.killpg(run.proc.pid, signal.SIGCONT)
        ends = []
        for i, s in enumerate(clients):
            data, how = read_all(s, 8)
            print(f"client {i + 1}: {len(data)} bytes ({data[:15]!r}), then {how}")
            ends.append("answered" if data.startswith(b"HTTP/1.1 ") else how if not data else "truncated")
        print(run.wait_exit(10))
        return ", ".join(f"{ends.count(k)} {k}" for k in sorted(set(ends)))
    elif name in ("deadline", "second-signal"):
        curl = subprocess.Popen(["curl", "-s", "-m", "12", "-o", "/dev/null", "-w", "%{http_code}",
                                 run.url(slow.replace("{ms}", "6000"))],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        run.signal()
        if name == "second-signal":
            time.sleep(0.3)
            os.kill(run.target, run.sig)
        exit_ = run.wait_exit(10)
        out = curl.communicate()[0]
        print(f"curl: http_code {out or '000'}, exit {curl.returncode} (18 partial, 52 empty reply, 56 reset)")
        print(exit_)
    elif name == "in-flight":
        print("before the signal:", subprocess.run(
            ["curl", "-s", "-m", "8", "-o", "/dev/null", "-w", "http %{http_code}, %{size_download} bytes",
             run.url(slow.replace("{ms}", "1000"))], capture_output=True, text=True).stdout)
        curls = [subprocess.Popen(["curl", "-s", "-m", "8", "-o", "/dev/null", "-w", "%{http_code}, %{size_download} bytes",
                                   run.url(slow.replace("{ms}", "1000"))],
                                  stdout=subprocess.PIPE, text=True) for _ in range(20)]
        time.sleep(0.3)
        run.signal()
        results = {}
        for c in curls:
            out = c.communicate()[0]
            key = f"http {out}, curl exit {c.returncode}"
            results[key] = results.get(key, 0) + 1
        print(", ".join(f"{n} x {k}" for k, n in results.items()))
        print(run.wait_exit(10))
    elif name == "blocked-signals":
        run.signal()
        print(run.wait_exit(10))
    elif name == "refuse-new":
        gap = int(os.environ.get("CONFIRM_GAP_MS", "20")) / 1000
        curl = subprocess.Popen(["curl", "-s", "-m", "12", "-o", "/dev/null",
                                 run.url(slow.replace("{ms}", "3000"))])
        time.sleep(0.3)
        run.signal()
        seen = []
        slow_connects = []
        while time.monotonic() - run.t0 < 1.5 and len(seen) < 2000:
            at = run.since()
            started = time.monotonic()
            try:
                # 3.5 s: long enough for the SYN retry at 1 s and the next at 3 s
                s = socket.create_connection(("127.0.0.1", run.port), timeout=3.5)
                took = time.monotonic() - started
                s.sendall(req("/", close=True))
                data, how = read_all(s, 2)
                kind = f"answered {data[:12]!r}" if data else f"accepted, then {how}"
                s.close()
            except ConnectionRefusedError:
                took = time.monotonic() - started
                kind = "refused"
            except OSError as e:
                took = time.monotonic() - started
                kind = f"error {errno.errorcode.get(e.errno, e) if e.errno else e}"
            seen.append((at, kind))
            if took > 0.5:
                slow_connects.append(f"connect at {at}: {kind} after {took * 1000:.0f} ms")
            time.sleep(gap)
        kinds = {}
        for at, k in seen:
            kinds.setdefault(k, []).append(at)
        for k, ats in kinds.items():
            print(f"{len(ats)} connects {k}: first at {ats[0]}, last at {ats[-1]}")
        for line in slow_connects:
            print(line)
        curl.wait()
        print(run.wait_exit(10))
        return ", ".join(sorted(k.split(" b'")[0] for k in kinds)) + \
            (f"; {len(slow_connects)} slow connect(s)" if slow_connects else "")
    elif name in NEW_SCENARIOS:
        return NEW_SCENARIOS[name](run)
    else:
        raise SystemExit(f"no scenario {name}")


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    name, what = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) == 4 else 1
    if not 1 <= runs <= 50:
        raise SystemExit("RUNS: 1 to 50")
    row = next((r for r in survey.servers() if r["name"] == name), None)
    if row is None:
        raise SystemExit(f"no server {name} (survey.py --list)")
    blocked = {signal.SIGINT, signal.SIGTERM, SIGS[opt(row["options"], "--signal", "INT")]} \
        if what == "blocked-signals" else ()
    tally = {}
    try:
        for i in range(runs):
            if runs > 1:
                print(f"-- run {i + 1} of {runs}", flush=True)
            run = Run(row, blocked, settle=0.0 if what == "signal-race" else 0.3)
            try:
                tag = scenario(run, what)
            finally:
                run.end()
            if tag:
                tally[tag] = tally.get(tag, 0) + 1
            sys.stdout.flush()
    finally:
        for scratch, _ in PREPARED.values():
            subprocess.run(["rm", "-rf", scratch])
    if tally:
        print(f"== {name} {what}: {runs} run{'s' if runs > 1 else ''}: "
              + "; ".join(f"{k}: {n} of {runs}" for k, n in sorted(tally.items())))


if __name__ == "__main__":
    main()
