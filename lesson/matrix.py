#!/usr/bin/env python3
"""lesson/matrix.py: run gracecheck on every stage of the lesson, print the
matrix (checks as rows, stages as columns, ./server last) and compare it
with lesson/expected.txt.

    matrix.py --build DIR --server ./server [--server-race ./server-race]
              [--expected FILE] [--jobs N] [--full]

DIR holds what `make lesson-stages` built: NAME (a stage) and NAME-window
(the same stage linked with lesson/window.c, which holds the lesson's race
windows open).  Exit 0 when the matrix is the expected one, 1 when a cell
differs, 2 for a usage error.

Besides gracecheck's rows there are rows of the lesson's own, marked with
a "*": holes in windows a few microseconds wide, which gracecheck's checks
meet only in some runs, measured here with the same kind of real clients
and signals, each window held open by the window build (the first four),
or a client that is simply slow (the last):

  *lost-wakeup     step 2: the signal lands between the check and the
                   wait.  Signalled as soon as it says "listening on",
                   with nobody connected: it must exit.
  *signal-to-main  step 2: the signal must reach main, which waits for it,
                   with a connection thread alive: signalled right after
                   one request, its keep-alive connection still open; the
                   client leaves 0.5 s later.
  *listener-close  step A1: a client that connects between the last
                   accept() and the listener's close ("race window open:
                   close") must be refused, not let in and reset.
  *idle-close      step A3: a request sent as the drain closes an idle
                   connection ("race window open: idle-close") must meet
                   our FIN, not a RST.
  *first-request   step A4: a client that connects just before the signal
                   and sends its request 150 ms later must be served
                   (200, Connection: close), not closed unread.
"""

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GRACECHECK = os.environ.get("GRACECHECK", os.path.join(HERE, "..", "gracecheck", "gracecheck.py"))
PYTHON = os.environ.get("PYTHON", sys.executable)
GRACE = 2   # every stage that has a deadline gets this one

# gracecheck's rows, in its order; the lesson's own rows follow.
CHECKS = ["idle-exit", "blocked-signals", "signal-race", "refuse-new", "in-flight", "conn-close",
          "idle-keepalive", "partial-request", "pipelined", "backlog", "deadline",
          "second-signal", "under-load", "no-pileup", "sigpipe", "exit-status", "handshake"]
LESSON_ROWS = ["*lost-wakeup", "*signal-to-main", "*listener-close", "*idle-close",
               "*first-request"]
NOT_RUN = "."
RACE = "RACE"   # in expected.txt: the check races with itself here; not asserted


# ---------------------------------------------------------------- gracecheck

def gracecheck(command, out_json, only):
    """Run gracecheck's checks `only` on command; {check name: (result, figure)}."""
    if not only:
        return {}
    # Ready when GET / is answered, not when the port accepts: naive.c ends
    # its loop at the first connection after the signal, which a readiness
    # probe still in its backlog would be on a loaded machine (the
    # handshake cell then sees the listener close before its half-open
    # client is let in).
    argv = [PYTHON, GRACECHECK, "--slow", "/sleep?ms={ms}", "--grace", str(GRACE),
            "--ready-http", "/", "--repeat", "3", "--json", out_json, "--only", ",".join(only),
            "--"] + command
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=900)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"gracecheck exit {proc.returncode}: {proc.stdout.decode()[-500:]}")
    with open(out_json) as f:
        data = json.load(f)
    return {c["name"]: (c["result"], c["figure"]) for c in data["checks"]}


# ---------------------------------------------------------------- the lesson's rows

class Stage:
    """One run of a stage binary in its own process group."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     env=None if env is None else {**os.environ, **env})
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.stderr = b""       # what it has said so far
        self.port = None

    def wait_for_line(self, text, timeout):
        """True once the stage has said text on stderr; False after timeout s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = self.proc.stderr.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                self.stderr += chunk
            if text in self.stderr:
                return True
            if time.monotonic() > deadline or (self.proc.poll() is not None and not chunk):
                return False
            time.sleep(0.001)   # polling a pipe: nothing to synchronise with

    def wait_listening(self, timeout=10.0):
        """Block until the stage prints its "listening on" line."""
        if not self.wait_for_line(b"listening on", timeout):
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode} before listening")
            raise RuntimeError("no 'listening on' line")

    def exited_within(self, seconds):
        try:
            self.proc.wait(seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(template, env=None):
    """Start a command whose {port} and {dir} are filled in; wait until it listens."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="lesson-probe-")
    st = Stage([a.replace("{port}", str(port)).replace("{dir}", tmp) for a in template], env)
    st.port = port
    st.wait_listening()
    return st


def request(port, path="/", close=False):
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def read_response(sock):
    """Read one response with a Content-Length body; True if whole."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        body += chunk
    return True


def three_runs(command, one_run, passed, env=None):
    """Start command three times, each time until it listens, and run
    one_run(stage) on it: None if that run passed, else what the client saw."""
    for run in range(3):
        st = start(command, env)
        try:
            failure = one_run(st)
        finally:
            st.kill()
        if failure:
            return "FAIL", f"{failure} (run {run + 1})"
    return "PASS", passed


def probe_lost_wakeup(window_binary):
    """Step 2: signalled at once, in the widened gap before the first wait."""
    def one_run(st):
        st.proc.send_signal(signal.SIGINT)
        if not st.exited_within(2.0):
            return "no exit within 2 s"
        return f"status {st.proc.returncode}" if st.proc.returncode != 0 else None
    return three_runs(window_binary, one_run, "3 of 3 exited")


def probe_signal_to_main(window_binary):
    """Step 2: signalled right after a request, its connection still open."""
    def one_run(st):
        with socket.create_connection(("127.0.0.1", st.port), timeout=5) as s:
            s.sendall(request(st.port))
            if not read_response(s):
                return "no response before the signal"
            st.proc.send_signal(signal.SIGINT)
            time.sleep(0.5)     # a client that leaves after a while
        return None if st.exited_within(3.0) else "no exit within 3.5 s"
    return three_runs(window_binary, one_run, "3 of 3 exited")


def probe_listener_close(window_binary):
    """Step A1: a client connects inside the widened gap before close(listener)."""
    def one_run(st):
        st.proc.send_signal(signal.SIGINT)
        if not st.wait_for_line(b"race window open: close", 6.0):
            return "the listener not closed within 6 s"
        with socket.socket() as s:
            s.settimeout(8)     # a dropped SYN is sent again after 1 s, then 3 s
            try:
                s.connect(("127.0.0.1", st.port))
            except ConnectionRefusedError:
                pass            # refused: any client may retry that
            else:
                s.sendall(request(st.port, close=True))
                try:
                    if not read_response(s):
                        return "let in, then closed unanswered"
                except ConnectionResetError:
                    return "let in, then reset with its request sent"
        return None if st.exited_within(5.0) else "no exit within 5 s"
    # ./server's race build opens this window only when asked to.
    return three_runs(window_binary, one_run, "3 of 3 refused or served, none reset",
                      {"GRACEFUL_RACE_CLOSE": "1"})


def probe_idle_close(window_binary):
    """Step A3: a request sent inside the widened gap before an idle close."""
    def one_run(st):
        with socket.create_connection(("127.0.0.1", st.port), timeout=5) as s:
            s.sendall(request(st.port))
            if not read_response(s):
                return "no response before the signal"
            st.proc.send_signal(signal.SIGINT)
            if not st.wait_for_line(b"race window open: idle-close", 4.0):
                return "the idle connection not closed within 4 s"
            s.sendall(request(st.port))
            try:
                # A response (Connection: close) or EOF is clean; after EOF
                # a client retries.  A reset is not.
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                return "the request sent as it closed was reset"
        return None if st.exited_within(5.0) else "no exit within 5 s"
    # ./server's race build opens this window only when asked to.
    return three_runs(window_binary, one_run, "3 of 3 met a FIN, not a reset",
                      {"GRACEFUL_RACE_IDLE_CLOSE": "1"})


def probe_first_request(binary):
    """Step A4: a new connection whose request comes 150 ms after the signal."""
    def one_run(st):
        with socket.create_connection(("127.0.0.1", st.port), timeout=5) as s:
            st.proc.send_signal(signal.SIGINT)
            s.settimeout(0.15)
            try:
                early = s.recv(4096)
                return ("closed before its first request" if not early
                        else f"sent {early[:40]!r} unasked")
            except socket.timeout:
                pass            # nothing for 150 ms: the connection is still ours
            except ConnectionResetError:
                return "reset before its first request"
            s.settimeout(5)
            s.sendall(request(st.port))
            reply = b""
            try:
                while chunk := s.recv(4096):
                    reply += chunk
            except (ConnectionResetError, socket.timeout) as e:
                return f"{type(e).__name__} after {len(reply)} bytes"
            if not reply.startswith(b"HTTP/1.1 200"):
                return f"no 200: {reply[:40]!r}"
            if not re.search(rb"(?i)\r\nconnection: *close\r\n", reply):
                return "served, but not with Connection: close"
        if not st.exited_within(5.0) or st.proc.returncode != 0:
            return "no exit 0 within 5 s"
        return None
    return three_runs(binary, one_run, "3 of 3 served, with Connection: close")


# The lesson's rows: each probe, and whether it runs on the window build.
PROBES = {"*lost-wakeup": (probe_lost_wakeup, True),
          "*signal-to-main": (probe_signal_to_main, True),
          "*listener-close": (probe_listener_close, True),
          "*idle-close": (probe_idle_close, True),
          "*first-request": (probe_first_request, False)}


def lesson_rows(command, window_command, race_command, rows_wanted):
    rows = {}
    for name, (probe, windowed) in PROBES.items():
        target = command if not windowed else (
            window_command if name in ("*lost-wakeup", "*signal-to-main") else race_command)
        if target is None or name not in rows_wanted:
            continue            # not run: nothing to run it on, or not needed
        try:
            rows[name] = probe(target)
        except (OSError, RuntimeError) as e:
            rows[name] = ("FAIL", f"error: {e}")
    return rows


# ---------------------------------------------------------------- the matrix

def run_cells(column, tmp, only):
    """The cells `only` of one column: gracecheck's rows, then the lesson's."""
    name, command, window_command, race_command = column
    checks = [r for r in only if r in CHECKS]
    out = os.path.join(tmp, f"{name}-{'-'.join(checks)}.json")
    cells = gracecheck(command, out, checks)
    cells.update(lesson_rows(command, window_command, race_command, only))
    return name, cells


def parts(rows):
    """A column's rows cut into what runs at once: each row alone (every
    check and every probe starts servers of its own).  A column's rows take
    a minute or two one after another, mostly waiting for a server to drain
    or to hang; cut up, the matrix takes about as long as its slowest row."""
    return [[r] for r in rows]


def read_expected(path):
    """The expected matrix: a header of column names, then one row a line."""
    with open(path) as f:
        lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
    columns = lines[0][1:]
    return {(row[0], col): cell for row in lines[1:] for col, cell in zip(columns, row[1:])}


def print_matrix(columns, results, expected, file=sys.stdout):
    names = [c[0] for c in columns]
    width = max(len(n) for n in names) + 1
    print("check".ljust(17) + "".join(n.ljust(width) for n in names).rstrip(), file=file)
    for row in CHECKS + LESSON_ROWS:
        cells = []
        for n in names:
            cell = results[n].get(row, (NOT_RUN,))[0]
            if expected.get((row, n)) == RACE and cell != NOT_RUN:
                cell += "~"
            cells.append(cell.ljust(width))
        print(row.ljust(17) + "".join(cells).rstrip(), file=file)


def main():
    if "--probe" in sys.argv[1:] and "--build" not in sys.argv[1:]:
        sys.argv += ["--build", "", "--server", ""]     # not used by --probe
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", required=True, help="the directory make lesson built the stages in")
    p.add_argument("--server", required=True, help="./server, for the last column")
    p.add_argument("--server-race", help="./server-race, the test suite's race build: "
                   "the last column's *idle-close row runs on it (not run without it)")
    p.add_argument("--expected", default=os.path.join(HERE, "expected.txt"))
    p.add_argument("--jobs", type=int, default=10, help="cells run at once")
    p.add_argument("--write", metavar="FILE", help="also write the matrix and every figure here")
    p.add_argument("--probe", nargs=2, metavar=("ROW", "STAGE"),
                   help="run one of the lesson's rows (without its *) on one stage "
                        "binary, print its result and exit 0 if it passed (the README's "
                        "demos use this)")
    p.add_argument("--full", action="store_true",
                   help="run every cell, even those the expected matrix says are red here "
                        "and in the next column")
    args = p.parse_args()
    if args.probe:
        row, stage = args.probe
        if "*" + row not in PROBES:
            p.error(f"--probe: no row *{row}; the rows are {', '.join(PROBES)}")
        try:
            result, figure = PROBES["*" + row][0]([os.path.abspath(stage), "{port}", str(GRACE)])
        except (OSError, RuntimeError) as e:
            result, figure = "FAIL", f"error: {e}"
        print(f"{result} {figure}")
        return 0 if result == "PASS" else 1

    built = [f for f in os.listdir(args.build)
             if re.fullmatch(r"[0-9A]\d-[a-z0-9-]+", f) and not f.endswith("-window")]
    # The core's stages, minimal, the advanced stages, hardened.
    stages = (sorted(f for f in built if f[0] == "0") + ["minimal"]
              + sorted(f for f in built if f[0] == "A") + ["hardened"])
    missing = [s for s in stages if not os.path.exists(os.path.join(args.build, s))]
    if missing or len(stages) < 3:
        print(f"matrix: {args.build} lacks {', '.join(missing) or 'the stages'}: "
              "run make lesson-stages", file=sys.stderr)
        return 2
    columns = []
    for s in stages:
        short = {"00": "naive"}.get(s.split("-")[0], s.split("-")[0])
        binary = os.path.join(os.path.abspath(args.build), s)
        window = [binary + "-window", "{port}", str(GRACE)]
        columns.append((short, [binary, "{port}", str(GRACE)], window, window))
    # ./server's *lost-wakeup and *signal-to-main run unwidened: its race
    # build holds still at more places than these probes' bounds allow for.
    # Its close and idle-close windows open only when asked (the probes do).
    args_server = ["--port", "{port}", "--grace", str(GRACE), "--data-dir", "{dir}"]
    server = [os.path.abspath(args.server)] + args_server
    server_race = ([os.path.abspath(args.server_race)] + args_server
                   if args.server_race else None)
    columns.append(("server", server, server, server_race))

    expected = read_expected(args.expected)
    names = [c[0] for c in columns]

    def needed(i):
        """The rows worth running in column i: all of them in the first column
        and in minimal, hardened and server; elsewhere, a row that is red here
        and red in the next column too tells nothing new (the column before
        the step that turns it green shows it red), and costs a hang of
        seconds."""
        rows = CHECKS + LESSON_ROWS
        if args.full or i == 0 or names[i] in ("minimal", "hardened", "server"):
            return rows
        return [r for r in rows if expected.get((r, names[i])) != "FAIL"
                or expected.get((r, names[i + 1])) != "FAIL"]

    results = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="lesson-matrix-") as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            jobs = {name: [pool.submit(run_cells, c, tmp, part) for part in parts(needed(i))]
                    for i, (c, name) in enumerate(zip(columns, names))}
            for name, column_jobs in jobs.items():
                for job in column_jobs:
                    results[name].update(job.result()[1])
                print(f"matrix: {name} done", file=sys.stderr, flush=True)

    print_matrix(columns, results, expected)
    if args.write:
        with open(args.write, "w") as f:
            print_matrix(columns, results, expected, f)
            for name, *_ in columns:
                for row in CHECKS + LESSON_ROWS:
                    result, figure = results[name].get(row, (NOT_RUN, ""))
                    print(f"{name:8} {row:17} {result:5} {figure}", file=f)

    wrong = []
    for name, *_ in columns:
        for row in CHECKS + LESSON_ROWS:
            want = expected.get((row, name))
            got, figure = results[name].get(row, (NOT_RUN, ""))
            if got != NOT_RUN and want != RACE and want != got:
                wrong.append(f"  {row} / {name}: expected {want}, got {got} ({figure})")
    if wrong:
        print("matrix: differs from " + os.path.relpath(args.expected) + ":\n" + "\n".join(wrong))
        return 1
    print(f"matrix: as expected ({os.path.relpath(args.expected)}); {NOT_RUN} = not run: "
          "red here and in the next column (make lesson LESSON_FULL=1 runs them); "
          "~ = not asserted: the check races with itself there (expected.txt says why)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
