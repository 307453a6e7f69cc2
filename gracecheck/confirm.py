#!/usr/bin/env python3
"""A second opinion on the survey's FAILs, from raw sockets and curl.

    confirm.py NAME SCENARIO      (NAME as in `survey.py --list`)

It shares nothing with gracecheck's clients or checks: it starts the
survey's command for NAME itself (its own template filling, readiness by
curl, signal to the leader or to the --pid-file PID), plays one scenario
with plain sockets or curl, and prints what the client saw with times from
the signal.  Scenarios:

  idle-exit       signal an idle server; time to its exit, status
  conn-close      curl -v a keep-alive slow request across the signal: headers
  idle-keepalive  20 connections served once + 20 silent; signal; EOF or RST, exit time
  pipelined       3 requests in one write (slow first); signal; each response's
                  status line and Content-Length (curl of each URL before, first)
  backlog         SIGSTOP the group, 4 connect+send a keep-alive GET (as gracecheck;
                  CONFIRM_CLOSE=1: with Connection: close), signal, SIGCONT; per client
  deadline        a 6 s request through curl; signal; curl's result and the exit
  second-signal   a 6 s request; signal; the same signal 0.3 s later; the exit
  in-flight       20 curls of 1 s in parallel; signal; each curl's status and
                  body size (one curl of the same URL before the signal first)
  blocked-signals the command started with SIGINT, SIGTERM and its stop signal
                  blocked (sigprocmask, inherited by exec); signal once idle
  refuse-new      a 3 s request in flight; signal; connect + GET / every 20 ms for 1.5 s
  handshake       (not here: it needs a socket filter; see the README)
"""
import os
import signal
import socket
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


class Run:
    def __init__(self, row, blocked=()):
        self.row = row
        self.dir = tempfile.mkdtemp(prefix="confirm-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        fill = lambda t: t.replace("{port}", str(self.port)).replace("{dir}", self.dir)
        o = row["options"]
        for i, a in enumerate(o):
            if a == "--render":
                with open(o[i + 1]) as f, open(os.path.join(self.dir, os.path.basename(o[i + 1])), "w") as g:
                    g.write(fill(f.read()))
        scratch = tempfile.mkdtemp(prefix="confirm-build-")
        subst = row["prepare"](scratch) if row["prepare"] else {}
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
            time.sleep(0.01)
        else:
            raise SystemExit("not ready")
        self.target = self.proc.pid
        pidfile = opt(o, "--pid-file")
        if pidfile:
            with open(fill(pidfile)) as f:
                self.target = int(f.read().strip())
        time.sleep(0.3)

    def curl_status(self, path):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                              f"http://127.0.0.1:{self.port}{path}"], capture_output=True, text=True)
        return out.stdout

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def signal(self, sig=None):
        self.t0 = time.monotonic()
        os.kill(self.target, sig or self.sig)

    def since(self):
        return f"{(time.monotonic() - self.t0) * 1000:.0f} ms"

    def wait_exit(self, bound):
        try:
            rc = self.proc.wait(bound)
            return f"exit {self.since()} after the signal, status {rc}"
        except subprocess.TimeoutExpired:
            return f"no exit within {bound:g} s"

    def end(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


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
        clients = []
        for _ in range(4):
            s = connect(run.port)
            s.sendall(req("/", close=os.environ.get("CONFIRM_CLOSE") == "1"))
            clients.append(s)
        run.signal()
        os.killpg(run.proc.pid, signal.SIGCONT)
        for i, s in enumerate(clients):
            data, how = read_all(s, 8)
            print(f"client {i + 1}: {len(data)} bytes ({data[:15]!r}), then {how}")
        print(run.wait_exit(10))
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
        curl = subprocess.Popen(["curl", "-s", "-m", "12", "-o", "/dev/null",
                                 run.url(slow.replace("{ms}", "3000"))])
        time.sleep(0.3)
        run.signal()
        seen = []
        while time.monotonic() - run.t0 < 1.5:
            at = run.since()
            try:
                s = socket.create_connection(("127.0.0.1", run.port), timeout=2)
                s.sendall(req("/", close=True))
                data, how = read_all(s, 2)
                seen.append((at, f"answered {data[:12]!r}" if data else f"accepted, then {how}"))
                s.close()
            except ConnectionRefusedError:
                seen.append((at, "refused"))
            except OSError as e:
                seen.append((at, f"error {e}"))
            time.sleep(0.02)
        kinds = {}
        for at, k in seen:
            kinds.setdefault(k, []).append(at)
        for k, ats in kinds.items():
            print(f"{len(ats)} connects {k}: first at {ats[0]}, last at {ats[-1]}")
        curl.wait()
        print(run.wait_exit(10))
    else:
        raise SystemExit(f"no scenario {name}")


def main():
    name, what = sys.argv[1], sys.argv[2]
    row = next(r for r in survey.servers() if r["name"] == name)
    blocked = {signal.SIGINT, signal.SIGTERM, SIGS[opt(row["options"], "--signal", "INT")]} \
        if what == "blocked-signals" else ()
    run = Run(row, blocked)
    try:
        scenario(run, what)
    finally:
        run.end()


if __name__ == "__main__":
    main()
