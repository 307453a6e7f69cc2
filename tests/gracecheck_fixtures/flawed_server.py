#!/usr/bin/env python3
"""A small HTTP server whose shutdown is graceful, with flaws to switch on.

    flawed_server.py PORT [--grace SECONDS] [--flaw NAME]... [--pidfile FILE] [--dir DIR]

tests/test_gracecheck.py points gracecheck at it.  With no flaw it does what
every check asks (the same sequence as ./server: stop accepting, take in the
backlog, close the listener, close idle connections, finish the rest with
"Connection: close", cut at the deadline or a second signal, exit 1 if
anything was cut), so a check that fails with a flaw fails because of that
one flaw.  Each flaw is one of the known holes (see FLAWS).

GET / answers at once; GET /sleep?ms=N answers after N ms.  SIGINT and
SIGTERM stop it, even if it was started with them blocked.  --pidfile
appends this process's PID to FILE, so a test can tell whether the checker
left it behind.  --dir is a private directory it may use (gracecheck's {dir}).
Each flaw makes at least one of gracecheck's checks fail, and
tests/test_gracecheck.py says which, by the reason code of the failure.
"""

import argparse
import ctypes
import mmap
import os
import resource
import select
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from halfopen import attach_drop_syn, syn_recv_count  # noqa: E402  (gracecheck's)

FLAWS = {
    "ignore-signal": "SIGINT and SIGTERM are ignored",
    "keep-blocked": "started with SIGINT and SIGTERM blocked, it never unblocks them",
    "slow-exit": "after the drain, 1.5 s of clean-up before the exit",
    "exit-nonzero": "the exit status is 1 even when every request finished",
    "hang-at-exit": "after the drain the process never exits (a forgotten thread holds it)",
    "start-once": "it refuses to start (status 3) when the pidfile names an earlier run",
    "early-ready": "it says it listens (its ready line) 1 s before it does",
    "unstoppable": "its main thread waits in the kernel (state D) for a child that never "
                   "execs (posix_spawn's vfork, the child opening a FIFO): SIGSTOP cannot stop it",
    "shutdown-delay": "after the signal it keeps accepting and serving for 6 s before it stops",
    "keep-accepting": "it keeps accepting new connections until the drain ends",
    "filter-until-exit": "at the signal it drops new SYNs, but closes its listener only at exit",
    "conn-limit": "more than 64 connections at once: the new one is closed at once",
    "textbook-accept": "`while not stop: accept()`: the flag is seen only when a client connects",
    "startup-window": "the stop signals are ignored for 0.2 s after listen(), and one that comes then is lost",
    "keep-listening": "the listener stays open while draining (new clients wait in the "
                      "backlog, cut to 8 at the signal so that it fills at once)",
    "exit-at-once": "the first signal exits 0 at once, cutting requests in flight",
    "no-close-header": "responses written during the drain do not say Connection: close",
    "reset-idle": "idle connections are closed with a RST at drain",
    "close-unread": "at drain, answers still keep the connection, and its next request, "
                    "arrived but unread, is dropped by a bare close() (which sends a RST)",
    "idle-holds": "idle keep-alive connections are not closed at drain: they hold the exit",
    "drop-partial": "a connection with half a request head counts as idle and is closed",
    "drop-pipelined": "at drain, requests already buffered behind the current one are dropped",
    "empty-answers-at-drain": "responses written after the signal say 200 but have an empty body "
                              "(Content-Length: 0), as Caddy's to pipelined requests did",
    "skip-backlog": "the listener is closed without taking in connections already in its backlog",
    "reset-backlog": "the connections taken in from the backlog at the drain are closed with a RST",
    "no-handshake-wait": "the listener is closed without waiting for the handshakes under way",
    "no-deadline": "--grace is not enforced: the drain waits for ever",
    "answer-at-deadline": "at the deadline a slow request is answered 200 at once, its work "
                          "unfinished, instead of cut (the status still says 1)",
    "uncuttable-sleep": "the slow work does not watch the force pipe: nothing cuts it",
    "blocking-send": "answers are written with a blocking send, which the force pipe cannot "
                     "reach: a client that does not read holds its thread for ever",
    "reset-last": "a connection's last response is followed by a RST (SO_LINGER 0), not a FIN",
    "ignore-second": "a second signal during the drain is ignored",
    "exit-zero": "the exit status is 0 even when work was cut",
    "leak-fd": "a finished connection's socket is never closed",
    "leak-stacks": "a finished connection leaves a stack and its guard page mapped, "
                   "as a thread never joined does",
    "sigpipe": "SIGPIPE has its default action and write errors are ignored",
    "sigpipe-once": "SIGPIPE has its default action; a failed write ends the connection",
    "epipe-deadlock": "answers are written under a lock that a failed write never releases: "
                      "the server lives, and answers nothing more",
    "fd-exhaustion": "every finished connection's socket is leaked, under a limit of 128 "
                     "descriptors: accept() then fails with EMFILE and the server dies",
    "slow-answer": "every answer takes 100 ms",
}

BODY = b"hello from the fixture\n"

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def leak_a_stack():
    """The flaw leak-stacks: map what pthread_create(3) maps for a thread's
    stack, a guard page (PROT_NONE) and 8 MiB above it, and never unmap
    it, as a thread never joined leaves it.  (Read-only, never touched: it
    costs address space only.)"""
    size, guard = 8 << 20, mmap.PAGESIZE
    addr = LIBC.mmap(None, guard + size, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap")
    if LIBC.mprotect(addr + guard, size, mmap.PROT_READ) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
LINGER = 0.5      # how long a staged close reads what the client still sends


class Fixture:
    def __init__(self, port, grace, flaws, workdir=None):
        self.port = port
        self.grace = grace
        self.flaws = flaws
        self.workdir = workdir
        self.write_lock = threading.Lock()     # epipe-deadlock only
        self.signals = 0                       # written by the signal handler only
        self.draining = False
        self.drain_r, self.drain_w = os.pipe()   # closed: idle connections close
        self.force_r, self.force_w = os.pipe()   # closed: every wait is cut
        self.threads = []
        self.leaked = []
        self.cut = 0
        self.lock = threading.Lock()

    # ---- the process: listener, signals, accept loop, drain, exit

    def run(self):
        if "sigpipe" in self.flaws or "sigpipe-once" in self.flaws:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if "fd-exhaustion" in self.flaws:
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        stop = {signal.SIGINT, signal.SIGTERM}
        # Blocked, not ignored, until the handlers are in place: one that
        # comes as soon as the port takes connections (gracecheck sends it
        # then) waits, pending, however late this process runs next.  A
        # launcher may have blocked them already (the mask survives fork and
        # exec): remember which.
        launched_blocked = stop & signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        if "startup-window" in self.flaws:
            # The hole: a stop signal that comes before the handlers are in
            # place is ignored, so lost (the window is held open below).
            for sig in stop:
                signal.signal(sig, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
        if "early-ready" in self.flaws:
            print(f"listening on 127.0.0.1:{self.port}", file=sys.stderr, flush=True)
            time.sleep(1.0)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(128)
        if "startup-window" in self.flaws:
            time.sleep(0.2)
        if "unstoppable" in self.flaws:
            self.wait_in_state_d()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(wake_w)
        for sig in stop:
            signal.signal(sig, signal.SIG_IGN if "ignore-signal" in self.flaws else self.on_signal)
        # Unblocked before any connection thread exists, so that every thread
        # inherits the mask; the flaw keep-blocked leaves blocked what the
        # launcher blocked.
        keep = launched_blocked if "keep-blocked" in self.flaws else set()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop - keep)
        if "early-ready" not in self.flaws:
            print(f"listening on 127.0.0.1:{self.port}", file=sys.stderr, flush=True)
        if "textbook-accept" in self.flaws:
            self.accept_textbook()
        else:
            self.accept_until_signal()
        if "exit-at-once" in self.flaws:
            os._exit(0)
        if "shutdown-delay" in self.flaws:
            self.accept_for(6.0)
        if "skip-backlog" in self.flaws:
            self.listener.close()
        elif "filter-until-exit" in self.flaws:
            attach_drop_syn(self.listener)
        elif "keep-listening" in self.flaws:
            self.listener.listen(8)
        elif "keep-accepting" not in self.flaws:
            self.take_in_backlog_and_close()
        self.draining = True
        os.close(self.drain_w)
        self.wait_for_connections()
        self.listener.close()
        if "hang-at-exit" in self.flaws:
            threading.Event().wait()
        if "slow-exit" in self.flaws:
            time.sleep(1.5)
        if "exit-nonzero" in self.flaws:
            sys.exit(1)
        sys.exit(1 if self.cut and "exit-zero" not in self.flaws else 0)

    def wait_in_state_d(self):
        """The flaw unstoppable: posix_spawn() waits (vfork) until its child
        execs, and the child first opens a FIFO nobody writes to."""
        fifo = os.path.join(self.workdir, "fifo")
        os.mkfifo(fifo)
        os.posix_spawn("/bin/true", ["true"], os.environ,
                       file_actions=[(os.POSIX_SPAWN_OPEN, 3, fifo, os.O_RDONLY, 0)])

    def accept_for(self, seconds):
        """The flaw shutdown-delay: go on as if no signal had come."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.listener], [], [], end - time.monotonic())
            if ready:
                self.spawn(self.listener.accept()[0])

    def read_wake(self):
        try:
            os.read(self.wake_r, 64)
        except BlockingIOError:
            pass   # woken by a signal whose byte another read took

    def on_signal(self, signum, frame):
        self.signals += 1

    def accept_textbook(self):
        while self.signals == 0:
            conn, _ = self.listener.accept()   # restarted after the handler (PEP 475)
            self.spawn(conn)

    def accept_until_signal(self):
        while self.signals == 0:
            ready, _, _ = select.select([self.listener, self.wake_r], [], [])
            if self.wake_r in ready:
                self.read_wake()
            if self.listener in ready and self.signals == 0:
                conn, _ = self.listener.accept()
                self.spawn(conn)

    def take_in_backlog_and_close(self):
        """Stop new handshakes (a socket filter that drops SYNs), take in
        the connections queued and the handshakes under way, which the
        kernel counts, then close the listener.  Without the filter, a
        client whose handshake completes between the last accept and the
        close is reset; without the wait, one whose SYN-ACK is on its way
        is refused or reset."""
        attach_drop_syn(self.listener)
        self.listener.setblocking(False)
        recheck, give_up = 0.005, time.monotonic() + 1.5
        while True:
            # Count first: a handshake that ends after the count is accepted below.
            under_way = 0 if "no-handshake-wait" in self.flaws else syn_recv_count(self.port)
            try:
                while True:
                    conn = self.listener.accept()[0]
                    conn.setblocking(True)
                    if "reset-backlog" in self.flaws:
                        # Once its request is in (a second at most), so the
                        # client meets the RST with its request sent.
                        conn.settimeout(1.0)
                        try:
                            conn.recv(1, socket.MSG_PEEK)
                        except OSError:
                            pass
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                        conn.close()
                        continue
                    self.spawn(conn)
            except BlockingIOError:
                pass
            if under_way == 0 or time.monotonic() > give_up:
                break
            select.select([self.listener], [], [], recheck)
            recheck *= 2
        self.listener.close()

    def spawn(self, conn):
        self.threads = [x for x in self.threads if x.is_alive()]
        if "conn-limit" in self.flaws and len(self.threads) >= 64:
            conn.close()
            return
        t = threading.Thread(target=self.serve, args=(conn,))
        t.start()
        self.threads.append(t)

    def wait_for_connections(self):
        deadline = time.monotonic() + self.grace
        forced = False
        while any(t.is_alive() for t in self.threads):
            over = time.monotonic() > deadline and "no-deadline" not in self.flaws
            second = self.signals >= 2 and "ignore-second" not in self.flaws
            if (over or second) and not forced:
                forced = True
                os.close(self.force_w)
            watch = [self.wake_r]
            if "keep-accepting" in self.flaws:
                watch.append(self.listener)
            ready, _, _ = select.select(watch, [], [], 0.02)
            if self.listener in ready:
                self.spawn(self.listener.accept()[0])
            self.read_wake()
        for t in self.threads:
            t.join()

    # ---- one connection

    def serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    idle = not buf or "drop-partial" in self.flaws
                    if idle and self.draining and "close-unread" in self.flaws:
                        return self.close_unread(conn)
                    if idle and self.draining and "idle-holds" not in self.flaws \
                            and not self.has_input(conn):
                        return self.close(conn, reset="reset-idle" in self.flaws,
                                          idle_at_drain=True)
                    watch = [conn, self.force_r]
                    if idle and "idle-holds" not in self.flaws:
                        watch.append(self.drain_r)
                    ready, _, _ = select.select(watch, [], [])
                    if self.force_r in ready:
                        return self.cut_conn(conn)
                    if self.drain_r in ready and "close-unread" in self.flaws:
                        return self.close_unread(conn)
                    if conn in ready:
                        data = conn.recv(65536)
                        if not data:
                            return conn.close()
                        buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                if not self.answer(conn, head, buf):
                    return
        finally:
            if "leak-fd" in self.flaws and conn.fileno() >= 0:
                if len(self.leaked) < 100:     # enough to see, not enough for EMFILE
                    self.leaked.append(os.dup(conn.fileno()))
                conn.close()
            if "fd-exhaustion" in self.flaws and conn.fileno() >= 0:
                self.leaked.append(os.dup(conn.fileno()))   # until EMFILE
                conn.close()
            if "leak-stacks" in self.flaws:
                leak_a_stack()

    def has_input(self, conn):
        try:
            return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return False

    def answer(self, conn, head, rest):
        """Answer one request; False when the connection is done."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        path = parts[1] if len(parts) > 1 else "/"
        client_close = any(l.lower().replace(" ", "") == "connection:close" for l in lines[1:])
        if path.startswith("/sleep"):
            ms = int(path.partition("ms=")[2] or 0)
            if "uncuttable-sleep" in self.flaws:
                time.sleep(ms / 1000)
            else:
                ready, _, _ = select.select([self.force_r], [], [], ms / 1000)
                if ready and "answer-at-deadline" in self.flaws:
                    with self.lock:
                        self.cut += 1
                elif ready:
                    return self.cut_conn(conn)
        if "slow-answer" in self.flaws:
            time.sleep(0.1)
        more = b"\r\n\r\n" in rest and "drop-pipelined" not in self.flaws
        # close-unread answers at drain as if nothing had changed, so that
        # every busy client sends its next request into the bare close():
        # otherwise the flaw shows only on a connection caught between its
        # answer and its next request, which a loaded machine can miss.
        last = client_close or (self.draining and not more and "close-unread" not in self.flaws)
        say_close = last and not (self.draining and "no-close-header" in self.flaws
                                  and not client_close)
        status = 200 if path == "/" or path.startswith("/sleep") else 404
        body = b"" if self.draining and "empty-answers-at-drain" in self.flaws else BODY
        head_out = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
                    f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                    + ("Connection: close\r\n" if say_close else "") + "\r\n").encode()
        if "sigpipe" in self.flaws:
            for part in (head_out, body):
                try:
                    conn.send(part)
                except OSError:
                    pass
        elif "epipe-deadlock" in self.flaws:
            self.write_lock.acquire()
            self.send_all(conn, head_out + body)   # an error leaves the lock held
            self.write_lock.release()
        elif not self.send_all(conn, head_out + body):
            return self.cut_conn(conn)
        if last:
            self.close(conn, reset="reset-last" in self.flaws)
            return False
        return True

    def send_all(self, conn, data):
        """Write data without blocking where the force pipe cannot reach:
        False when the force pipe cut the wait.  (The flaw blocking-send:
        a plain blocking sendall.)"""
        if "blocking-send" in self.flaws:
            conn.sendall(data)
            return True
        view = memoryview(data)
        while view:
            try:
                view = view[conn.send(view, socket.MSG_DONTWAIT):]
            except BlockingIOError:
                ready, _, _ = select.select([self.force_r], [conn], [])
                if ready:
                    return False
        return True

    def close(self, conn, reset=False, idle_at_drain=False):
        """Close without destroying what the client has not read, nor a
        request it is sending: a staged close (RFC 9112 section 9.6) when
        input is pending, and always for an idle connection closed by the
        drain, whose client may be sending its next request right now: a
        close() that meets that request sends a RST, the FIN of shutdown()
        lets the client read a clean end."""
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        elif idle_at_drain or self.has_input(conn):
            conn.shutdown(socket.SHUT_WR)
            end = time.monotonic() + LINGER
            conn.settimeout(LINGER)
            try:
                while time.monotonic() < end and conn.recv(65536):
                    pass
            except OSError:
                pass
        if not {"leak-fd", "fd-exhaustion"} & self.flaws:
            conn.close()

    def close_unread(self, conn):
        """The flaw close-unread: a request that arrives at drain is dropped
        with a bare close(), which, with that request unread, sends a RST.
        (To fail every time, the flaw waits up to 1 s for that request.)"""
        select.select([conn], [], [], 1.0)
        conn.close()

    def cut_conn(self, conn):
        with self.lock:
            self.cut += 1
        conn.close()
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", type=int)
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--flaw", action="append", default=[], choices=sorted(FLAWS))
    p.add_argument("--pidfile")
    p.add_argument("--dir")
    args = p.parse_args()
    if args.pidfile:
        if ("start-once" in args.flaw and os.path.exists(args.pidfile)
                and open(args.pidfile).read().strip()):
            print("start-once: an earlier run is in the pidfile", file=sys.stderr)
            sys.exit(3)
        with open(args.pidfile, "a") as f:
            f.write(f"{os.getpid()}\n")
    Fixture(args.port, args.grace, set(args.flaw), args.dir).run()


if __name__ == "__main__":
    main()
