#!/usr/bin/env python3
"""gracecheck: does an HTTP server's graceful shutdown keep its promises?

    gracecheck.py [options] -- COMMAND ARGS...

The tool starts COMMAND once per check (and once per repeat), each time in
its own process group with {port} replaced by a free port and {dir} by a
fresh private directory.  It waits until the port accepts connections (or
--ready-line matches a line of the server's stderr), drives real clients
over 127.0.0.1, sends the stop signal, and watches what the clients see and
when and how the process exits.  Each check is one function below; its
docstring names the hole it looks for and, where the lesson has one, the
lesson step that closes it (numbered as in the main README).

Exit status: 0 every applicable check passed, 1 a check failed, 2 a usage
error (or a command that never became ready).  Python 3 standard library
only.  Read gracecheck/README.md for the options and what each check means.
"""

import argparse
import ctypes
import errno
import json
import os
import random
import re
import select
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple

# --------------------------------------------------------------------------
# The bounds every check is judged by.  They are the contract, stated once.

EXIT_BOUND = 1.0     # an exit the server owes "at once" must come within this
HANG_BOUND = 5.0     # past this we stop waiting, kill the group and say so
READY_BOUND = 15.0   # a server that is not ready by then did not start
SETTLE = 0.3         # time given to the server to take in what we sent
                     # before the signal: a black box has nothing to wait on
IO_BOUND = 5.0       # a client waits this long for bytes before giving up
PILEUP_MAPS = 200    # memory mappings the second 1,000 connections may add
PILEUP_BOUND = 120.0  # the 2,000 connections of no-pileup must be made by then

# The graceful stops real servers document: INT (./server, lighttpd, Caddy),
# TERM (gunicorn, uvicorn, Node, h2o), QUIT (nginx), USR1 (HAProxy's soft
# stop), WINCH (Apache's graceful-stop), USR2 for whoever uses it.
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "QUIT": signal.SIGQUIT,
           "USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2, "WINCH": signal.SIGWINCH}

Outcome = namedtuple("Outcome", "result figure detail reason")
# reason: for a FAIL, a short code naming the condition that failed, stable
# across releases and unique within its check (e.g. "late", "status"): the
# `reason` of the JSON file, listed per check in gracecheck/README.md.  Every
# failed() call names its code as a literal, its first argument:
# tests/test_gracecheck.py reads them from this file and proves each one.


def passed(figure, detail=""):
    return Outcome("PASS", figure, detail, "")


def failed(reason, figure, detail=""):
    return Outcome("FAIL", figure, detail, reason)


def not_applicable(reason):
    return Outcome("n/a", reason, "", "")


class NotReady(Exception):
    """The server command did not become ready (it exited, or READY_BOUND)."""


# --------------------------------------------------------------------------
# The checks, first: each starts its own server(s) and returns an Outcome.
# The machinery they use (Server, Client) follows them.

def check_idle_exit(cfg):
    """Idle server ignores the stop signal (lesson step 1).

    A loop of `while (!stop) accept(...)` with SA_RESTART (or signal(), which
    implies it on Linux) restarts accept() after the handler runs, so the
    flag is only seen when the next client connects: signal(7) "Interruption
    of system calls and library functions by signal handlers"; accept(2).
    Pass: every one of --repeat runs exits within 1 s of the signal, status 0.
    """
    times = []
    for run in range(cfg.repeat):
        with Server(cfg) as server:
            time.sleep(SETTLE)   # idle means settled, not still starting up
            server.signal()
            server.wait_exit(HANG_BOUND)
            took = server.exit_after_signal()
            if took is None:
                return failed("hang", f"no exit within {HANG_BOUND:g} s (run {run + 1})",
                              "the idle server ignored the signal; killed"
                              + server.stderr_tail("; stderr: "))
            times.append(took)
            figure = f"{ms(took)}, {describe_status(server.status)} (run {run + 1})"
            if took > EXIT_BOUND:
                return failed("late", figure, f"exit must come within {EXIT_BOUND:g} s"
                              + server.stderr_tail("; stderr: "))
            if server.status != 0:
                return failed("status", figure, "an idle stop cut nothing: the status must be 0"
                              + server.stderr_tail("; stderr: "))
    return passed(f"median {ms(statistics.median(times))} over {len(times)} "
                  f"(max {ms(max(times))}), status 0")


def check_blocked_signals(cfg):
    """Started with the stop signals blocked, the server never stops (lesson step 2).

    The signal mask is inherited across fork(2) and kept across execve(2)
    (sigprocmask(2), signal(7) "Signal mask and pending signals"), and a
    launcher that blocks SIGINT and SIGTERM to take them itself (with
    sigwaitinfo(2) or signalfd(2), which need them blocked) passes that
    mask on to the server it forks, unless it restores it first.
    A server that only installs handlers, or that blocks them itself and
    waits with a mask taken from the one it inherited, then never gets the
    signal: it stays pending for ever.  The server is started with SIGINT,
    SIGTERM and the stop signal blocked, and signalled once idle.
    Pass: exit within 1 s of the signal, status 0 (as idle-exit).
    """
    with Server(cfg, blocked={signal.SIGINT, signal.SIGTERM, cfg.signal}) as server:
        time.sleep(SETTLE)
        server.signal()
        server.wait_exit(HANG_BOUND)
        took = server.exit_after_signal()
        if took is None:
            return failed("hang", f"no exit within {HANG_BOUND:g} s",
                          f"started with {blocked_names(cfg)} blocked, the server never "
                          "unblocked them; killed" + server.stderr_tail("; stderr: "))
        figure = f"exit {ms(took)} after the signal, {describe_status(server.status)}"
        if took > EXIT_BOUND:
            return failed("late", figure, f"exit must come within {EXIT_BOUND:g} s"
                          + server.stderr_tail("; stderr: "))
        if server.status != 0:
            return failed("status", figure, "an idle stop cut nothing: the status must be 0"
                          + server.stderr_tail("; stderr: "))
        return passed(figure, f"started with {blocked_names(cfg)} blocked")


def blocked_names(cfg):
    names = ["SIGINT", "SIGTERM"]
    if cfg.signal_name not in names:
        names.append(cfg.signal_name)
    return ", ".join(names[:-1]) + " and " + names[-1]


def check_signal_race(cfg):
    """Signal lost between the flag check and the wait (lesson step 2).

    `while (!stop) accept()` loses a signal that lands after `!stop` is read
    and before accept() blocks; the fix is pselect/ppoll with the signal
    unblocked only inside the wait, or a self-pipe: pselect(2) "The reason
    that pselect() is needed"; signal-safety(7).  The signal is sent right
    after readiness 20 times, and 20 times right as a connection arrives
    (its request, with Connection: close, sent just before the signal, so
    no keep-alive connection is left to hold the exit).
    Pass: the server never hangs (every run exits within 5 s).
    """
    times = []
    for when in ("after readiness", "as a connection arrives"):
        for run in range(20):
            with Server(cfg) as server:
                client = None
                if when != "after readiness":
                    client = Client(server.port)
                    client.send(client.request(cfg.path, close=True))
                server.signal()
                server.wait_exit(HANG_BOUND)
                took = server.exit_after_signal()
                if client:
                    client.close()
                if took is None:
                    return failed("hang", f"hung {when} (run {run + 1} of 20)",
                                  f"no exit within {HANG_BOUND:g} s; killed")
                times.append(took)
    return passed(f"40 of 40 exited, max {ms(max(times))}")


def check_refuse_new(cfg):
    """Listener left open while draining: new clients hang in the backlog.

    Once the server has decided to stop, a connection it will never serve
    should be refused at once (ECONNREFUSED), not accepted by the kernel into
    a backlog nobody reads and reset later: listen(2), close(2) of a
    listening socket; Go's Server.Shutdown "first closing all open
    listeners".  A slow request keeps the server draining.  A server that
    stops new handshakes just before it closes its listener may drop a SYN
    that arrives in between; the client's retry a second later (RFC 6298
    2.1) is then refused while the server drains, and that counts as refused
    when it was sent; so does a reset before connect() returns (see
    connect_error_kind).  Pass: a connect started within 1 s of the signal
    is refused, and no connect is left hanging.
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    with Server(cfg) as server:
        slow = start_slow(server, 2500)
        time.sleep(SETTLE)
        server.signal()
        accepted = 0
        while True:
            started = time.monotonic()
            if started - server.signal_at > HANG_BOUND:
                return failed("no-refusal", f"no refusal within {HANG_BOUND:g} s",
                              f"{accepted} new connections accepted after the signal")
            try:
                # Long enough for one SYN retry, not for a second (at 3 s).
                with socket.create_connection(("127.0.0.1", server.port), timeout=2.0):
                    accepted += 1
            except OSError as e:
                if connect_error_kind(e) == "refused":
                    break
                if connect_error_kind(e) == "hung":
                    return failed("connect-hung", f"a connect {ms(started - server.signal_at)} "
                                  "after the signal hung for 2 s", f"{accepted} accepted before it")
                raise       # the client's own trouble: run() reports it
            time.sleep(0.005)
        took = started - server.signal_at
        waited = time.monotonic() - started
        draining = server.alive()
        state = "while draining" if draining else "after the process exited"
        for c in slow:
            c.close()
        figure = f"first refusal {ms(took)} after the signal ({state})"
        if waited > EXIT_BOUND / 2:
            figure += f", {ms(waited)} after its SYN: refused on the retry"
        if took > EXIT_BOUND:
            return failed("late", figure,
                          f"{accepted} new connections were accepted after the signal")
        if waited > EXIT_BOUND / 2 and not draining:
            # A full backlog drops SYNs too; then only the exit refused it.
            return failed("syn-dropped", figure, "its SYN went unanswered until the process exited "
                          f"({accepted} connections accepted after the signal before it)")
        return passed(figure, f"{accepted} connections accepted after the signal before that")


def check_in_flight(cfg):
    """In-flight requests cut at shutdown.

    A graceful stop finishes the requests it has already started: Go's
    Server.Shutdown "waiting indefinitely for connections to return to idle";
    nginx's QUIT "graceful shutdown" (nginx.org/en/docs/control.html).
    20 slow requests (1 s) are in flight when the signal comes; each client
    closes its connection once it has its response, as curl would (a client
    that keeps it open is idle-keepalive's business).
    Pass: all 20 get a whole 200 response that is what the same request got
    before the signal (same status, same body length: a 200 with an empty
    body is not an answer), and the process exits within 1 s of the last one.
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    with Server(cfg) as server:
        before = baseline(server, cfg.slow_path(1000))
        clients = start_slow(server, 1000, count=20)
        time.sleep(SETTLE)
        server.signal()
        replies, times = read_in_threads(clients, close=True)
        last = max(times)
        server.wait_exit(max(0.0, last + HANG_BOUND - time.monotonic()))
        for c in clients:
            c.close()
        whole = sum(1 for r in replies if r.kind == "ok" and r.status == 200)
        if whole < 20:
            return failed("not-whole", f"{whole} of 20 whole",
                          summarize(r.kind if r.kind != "ok" else f"status {r.status}"
                                    for r in replies)
                          + f"; process {describe_status(server.status)}")
        unlike = [r for r in replies if not before.matches(r)]
        if unlike:
            return failed("not-as-before", f"{20 - len(unlike)} of 20 as before the signal",
                          f"before: {before}; after: "
                          + summarize(before.describe(r) for r in unlike)
                          + f"; process {describe_status(server.status)}")
        if server.exit_at is None:
            return failed("no-exit", f"20 of 20 whole; no exit within {HANG_BOUND:g} s after the last",
                          "killed")
        after = server.exit_at - last
        figure = f"20 of 20 whole; exit {ms(max(after, 0))} after the last response"
        if after > EXIT_BOUND:
            return failed("late", figure, f"exit must come within {EXIT_BOUND:g} s of the last response")
        return passed(figure, describe_status(server.status))


def check_conn_close(cfg):
    """Keep-alive response during the drain without Connection: close, or RST.

    A server that will close a connection after a response should say so in
    that response ("close" connection option) and close in stages so the
    client reads it, not with a RST: RFC 9112 section 9.6 "Tear-down";
    RFC 1122 4.2.2.13 (close with unread data sends RST).
    Pass: a keep-alive response written during the drain carries
    `Connection: close`, and the connection then ends with FIN (EOF).
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    with Server(cfg) as server:
        (client,) = start_slow(server, 800)
        time.sleep(SETTLE)
        server.signal()
        reply = client.read_reply()
        if reply.kind != "ok":
            client.close()
            return failed("unanswered", f"response {reply.kind}", "the request in flight was not answered")
        says = reply.headers.get("connection", "")
        end = client.read_end()
        client.close()
        figure = f"Connection: {says or '(none)'}; then {end}"
        if "close" not in says.lower():
            return failed("no-close-header", figure,
                          "a response written during the drain must say Connection: close")
        if end != "eof":
            return failed("not-fin", figure, "the connection must end with a FIN (EOF), not a RST")
        return passed(figure)


def check_idle_keepalive(cfg):
    """Idle keep-alive connections hold the exit (lesson step 5).

    Joining every connection thread waits forever on a client that keeps its
    connection open and sends nothing; idle connections must be closed at
    once (RFC 9112 section 9.6: a server may close an idle connection at any
    time; Go's Shutdown "closing all idle connections").  100 connections
    served once and kept open, 100 that never sent a byte.
    Pass: exit within 1 s; every client reads EOF, none a RST.
    """
    with Server(cfg) as server:
        clients = []
        for i in range(200):
            c = open_client(server.port)
            if c is None:
                unready = f"connection {i + 1} of 200 refused"
            elif i % 2 == 0:
                reply = c.get(cfg.path)
                unready = f"{cfg.path} on connection {i + 1} of 200 got {reply.kind}" \
                    if reply.kind != "ok" else ""
            else:
                unready = ""
            if unready:
                # Not a drain failure: the open connections the check needs
                # could not be had at all (a server that serves one
                # connection at a time blocks on the first silent one).
                for k in clients + ([c] if c else []):
                    k.close()
                return failed("before-signal", unready + " before the signal",
                              f"{len(clients)} connections open and served; no signal was sent: "
                              "the drain was not measured")
            clients.append(c)
        time.sleep(SETTLE)
        server.signal()
        ends = read_ends(clients, HANG_BOUND)
        server.wait_exit(max(0.0, server.signal_at + HANG_BOUND - time.monotonic()))
        took = server.exit_after_signal()
        hung = "" if took is not None else \
            f" ({server.snapshot()})" + server.stderr_tail("; stderr: ", 5)
        for c in clients:
            c.close()
        eofs = ends.count("eof")
        figure = (f"exit {ms(took)}" if took is not None else f"no exit in {HANG_BOUND:g} s") \
            + f"; {eofs} of 200 EOF"
        if took is None or took > EXIT_BOUND:
            return failed("late", figure, "exit must come within 1 s with idle connections open" + hung)
        if eofs < 200:
            return failed("not-eof", figure, summarize(ends))
        return passed(figure, describe_status(server.status))


class Baseline(namedtuple("Baseline", "status length")):
    """What a request got before the signal: its status and body length."""

    def matches(self, reply):
        return reply.kind == "ok" and reply.status == self.status and len(reply.body) == self.length

    def kind(self, reply):
        """reply.kind, or "not as before" for a whole response unlike this."""
        return "not as before" if reply.kind == "ok" and not self.matches(reply) else reply.kind

    def describe(self, reply):
        if reply.kind != "ok":
            return reply.kind
        return f"{reply.status} with {len(reply.body)} bytes"

    def __str__(self):
        return f"{self.status} with {self.length} bytes"


def baseline(server, path):
    """The Baseline of path, asked before the signal on a connection of its
    own (Connection: close).  A server that cannot answer it is a client
    error: there is nothing to compare with."""
    c = Client(server.port)
    try:
        reply = c.get(path, close=True)
    finally:
        c.close()
    if reply.kind != "ok":
        raise OSError(f"the baseline request {path} got {reply.kind} before the signal")
    return Baseline(reply.status, len(reply.body))


def read_ends(clients, timeout):
    """Wait (all at once) for each idle client's connection to end.  Each
    closes its side once it has read the end, as a real client would."""
    ends = ["timeout"] * len(clients)
    sel = selectors.DefaultSelector()
    for i, c in enumerate(clients):
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    pending = len(clients)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            i = key.data
            try:
                data = key.fileobj.recv(65536)
                if data:
                    ends[i] = "data"   # bytes we did not ask for
                    continue
                ends[i] = "eof"
            except ConnectionResetError:
                ends[i] = "reset"
            except BlockingIOError:
                continue
            sel.unregister(key.fileobj)
            key.fileobj.close()
            pending -= 1
    sel.close()
    return ends


def check_partial_request(cfg):
    """A request head that was arriving when the signal came is dropped.

    The server treats a connection whose head is half read as idle and
    closes it, though the client has started a request it must answer
    (RFC 9112 section 9.6; section 9.5 "Failures and Timeouts": close idle
    connections, not ones mid-request).  The rest of the head is sent
    100 ms after the signal.  Pass: the whole response arrives.
    """
    with Server(cfg) as server:
        client = Client(server.port)
        req = client.request(cfg.path)
        cut = req.index(b"\r\n") + 2
        client.send(req[:cut])
        time.sleep(SETTLE)
        server.signal()
        time.sleep(0.1)
        try:
            client.send(req[cut:])
            reply = client.read_reply()
        except OSError as e:
            reply = Reply("reset" if isinstance(e, ConnectionResetError) else "eof", None, {}, b"")
        client.close()
        server.wait_exit(HANG_BOUND)
        if reply.kind != "ok":
            return failed("unanswered", f"response {reply.kind}",
                          "the half-sent request was not answered"
                          + f"; process {describe_status(server.status)}")
        return passed(f"status {reply.status}, whole")


def check_pipelined(cfg):
    """Pipelined requests that had already arrived are dropped at drain.

    A server must answer, in order, every request it has received on a
    connection before it closes it (RFC 9112 section 9.3.2 "Pipelining");
    dropping them silently loses requests the client will not retry if
    they are not idempotent.  A slow request and two cheap ones are sent in
    one write; the signal comes while the slow one runs.
    Pass: all three are answered, each as the same request was before the
    signal (same status, same body length).
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    with Server(cfg) as server:
        before = [baseline(server, cfg.slow_path(600)), baseline(server, cfg.path)]
        before.append(before[1])
        client = Client(server.port)
        client.send(client.request(cfg.slow_path(600)) + client.request(cfg.path)
                    + client.request(cfg.path))
        time.sleep(SETTLE)
        server.signal()
        replies = []
        for _ in range(3):
            r = client.read_reply()
            replies.append(r)
            if r.kind != "ok":
                break
        client.close()
        server.wait_exit(HANG_BOUND)
        answered = sum(1 for r in replies if r.kind == "ok")
        figure = f"{answered} of 3 answered"
        if answered < 3:
            return failed("dropped", figure,
                          f"then {replies[-1].kind}; process {describe_status(server.status)}")
        unlike = [f"request {i + 1}: {b.describe(r)}, before {b}"
                  for i, (b, r) in enumerate(zip(before, replies)) if not b.matches(r)]
        if unlike:
            return failed("not-as-before", f"3 of 3 answered, {3 - len(unlike)} as before the signal",
                          "; ".join(unlike))
        return passed(figure, f"last says Connection: {replies[-1].headers.get('connection', '(none)')}")


def check_backlog(cfg):
    """Connections waiting in the backlog are reset at shutdown.

    Closing a listening socket resets every connection still queued in its
    backlog, though the kernel completed their handshake and their clients
    have sent a request (listen(2), "backlog"; tcp(7)).  The server is stopped
    with SIGSTOP while 4 clients connect and send; then the signal and
    SIGCONT.  Pass: each one is answered, or closed with a FIN before any
    byte of a response; none is reset or truncated.
    """
    with Server(cfg) as server:
        time.sleep(SETTLE)
        server.signal_group(signal.SIGSTOP)
        try:
            if not wait_until(lambda: group_stopped(server.proc.pid), HANG_BOUND):
                return failed("not-stopped", "could not stop the server with SIGSTOP")
            clients = []
            for _ in range(4):
                c = Client(server.port, connect=False)
                c.sock.settimeout(0.5)
                try:
                    c.sock.connect(("127.0.0.1", server.port))
                except OSError:
                    c.close()
                    continue   # the backlog is full: not this check's concern
                c.sock.settimeout(IO_BOUND)
                c.send(c.request(cfg.path))
                clients.append(c)
            server.signal()
        finally:
            server.signal_group(signal.SIGCONT)
        replies, _ = read_in_threads(clients)
        for c in clients:
            c.close()
        server.wait_exit(HANG_BOUND)
        kinds = ["answered" if r.kind == "ok" else
                 "closed (FIN)" if r.kind == "eof" else r.kind for r in replies]
        figure = summarize(kinds) or "no client connected"
        bad = [k for k in kinds if k not in ("answered", "closed (FIN)")]
        if not clients:
            return failed("none-connected", figure,
                          "no connection completed while the server was stopped")
        if bad:
            return failed("reset", figure, "a client that sent a whole request must not be reset")
        return passed(figure, describe_status(server.status))


def check_deadline(cfg):
    """No drain deadline: one slow client holds the exit forever (lesson step 6).

    A drain must end: after the grace period what is left is cut and the
    exit status says so (systemd.kill(5): TimeoutStopSec then SIGKILL; Go's
    Shutdown takes a context for exactly this; nginx
    worker_shutdown_timeout).  Two runs.  (a) A request slower than
    --grace G is in flight.  (b) A client pipelines cheap requests and
    never reads, until the server stops taking them in (1 s without
    progress): the server's answers have filled the socket buffers, and
    a thread that writes with a blocking send() is stuck in it, where
    neither a flag nor a pipe reaches it (send(2): "When the message does
    not fit into the send buffer of the socket, send() normally blocks").
    Pass: (a) exit within G + 1 s of the signal, non-zero status, request
    cut; (b) exit within G + 1 s of the signal.
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    if cfg.grace is None:
        return not_applicable("needs --grace")
    bound = cfg.grace + EXIT_BOUND
    with Server(cfg) as server:
        (client,) = start_slow(server, int((cfg.grace + 3) * 1000))
        time.sleep(SETTLE)
        server.signal()
        server.wait_exit(bound + HANG_BOUND)
        reply = client.read_reply() if server.exit_at is not None else None
        client.close()
        took = server.exit_after_signal()
        if took is None:
            return failed("hang", f"no exit within {bound + HANG_BOUND:g} s", "killed")
        slow = f"exit {ms(took)} after the signal (bound {bound:g} s), {describe_status(server.status)}"
        if took > bound:
            return failed("late", slow, "the grace deadline was not enforced")
        if server.status == 0:
            return failed("status-zero", slow, "work was cut, yet the status says success")
        if reply is not None and reply.kind == "ok" and reply.status == 200:
            return failed("not-cut", slow, "the slow request was answered: it was not cut")
        cut = reply.kind if reply else "?"
    with Server(cfg) as server:
        client, sent = stuff_unread(server, cfg.path)
        server.signal()
        server.wait_exit(bound)
        took = server.exit_after_signal()
        hung = "" if took is not None else f" ({server.snapshot()})"
        client.close()
        if took is None:
            return failed("unread-held", f"slow request: {slow}; with a client that does not "
                          f"read: no exit within {bound:g} s",
                          f"{sent // 1024} KiB of requests sent, none of the answers read: the "
                          "thread writing them was not cut at the deadline" + hung)
    return passed(f"{slow}; with a client that does not read: exit {ms(took)}",
                  f"the slow request: {cut}; {sent // 1024} KiB of requests left unread")


def stuff_unread(server, path):
    """A connection that pipelines requests for path and never reads the
    answers, sent until the server takes nothing more for 1 s: (the
    Client, bytes sent).  Its small receive buffer leaves the server's
    answers in the server's own buffers.  A server that takes in 64 MiB
    or goes on for HANG_BOUND without stalling is not holding its answers
    (nginx closes after 1,000 requests and discards the rest)."""
    client = Client(server.port, connect=False)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sock.connect(("127.0.0.1", server.port))
    client.sock.setblocking(False)
    burst = client.request(path) * 256
    sent, give_up = 0, time.monotonic() + HANG_BOUND
    while time.monotonic() < give_up and sent < 64 << 20:
        _, writable, _ = select.select([], [client.sock], [], EXIT_BOUND)
        if not writable:
            break                   # the server has stopped reading
        try:
            sent += client.sock.send(burst)
        except BlockingIOError:
            continue
        except OSError:
            break                   # the server closed it: nothing is held
    return client, sent


def check_second_signal(cfg):
    """A second signal does not cut the drain short.

    The operator who presses Ctrl+C twice wants out now: the second signal
    should cut what is left and exit non-zero (Go's signal.NotifyContext
    docs: "stop ... restores the default behavior"; nginx documents TERM/INT
    as "fast shutdown", QUIT as graceful).  A long request is in flight, the
    signal comes, and a second one 300 ms later.
    Pass: exit within 1 s of the second signal, non-zero status.
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    long_ms = int(max(10.0, (cfg.grace or 0) + 10) * 1000)
    with Server(cfg) as server:
        (client,) = start_slow(server, long_ms)
        time.sleep(SETTLE)
        server.signal()
        if server.wait_exit(0.3):
            client.close()
            return failed("exit-before-second",
                          f"exited {describe_status(server.status)} before the second signal",
                          "the first signal did not wait for the request in flight")
        second_at = time.monotonic()
        server.signal()
        server.wait_exit(HANG_BOUND)
        client.close()
        if server.exit_at is None:
            return failed("no-exit", f"no exit within {HANG_BOUND:g} s of the second signal",
                          "killed")
        took = server.exit_at - second_at
        figure = f"exit {ms(took)} after the second signal, {describe_status(server.status)}"
        if took > EXIT_BOUND:
            return failed("late", figure, f"must exit within {EXIT_BOUND:g} s of the second signal")
        if server.status == 0:
            return failed("status-zero", figure, "work was cut, yet the status says success")
        if cfg.grace is not None and server.exit_after_signal() >= cfg.grace - 0.05:
            return failed("at-deadline", figure,
                          f"the exit came with the grace deadline ({cfg.grace:g} s), "
                                  "not with the second signal")
        return passed(figure)


def check_under_load(cfg):
    """Requests lost or reset when the signal comes under load.

    Under a stream of new connections and busy keep-alive connections the
    drain races with accept() and with requests arriving on idle connections:
    a request already fully sent must be answered or its connection closed
    cleanly (RFC 9112 section 9.3.1 "Retrying Requests": the client may then
    retry), never reset or truncated (RFC 9112 section 9.6).
    32 keep-alive clients plus 2 threads opening new connections; the signal
    after 0.5 s.  Pass: 0 truncated, 0 reset after a request was sent, and
    every response the same as before the signal (status, body length).
    """
    with Server(cfg) as server:
        lock = threading.Lock()
        before = baseline(server, cfg.path)
        counts = {"completed": 0, "refused": 0, "closed": 0, "truncated": 0,
                  "reset": 0, "reset before sending": 0, "timeout": 0, "not as before": 0}
        stop_at = [time.monotonic() + 0.5 + HANG_BOUND]
        bad = []     # where each reset, truncation or timeout happened

        def count(kind, where=""):
            kind = {"ok": "completed", "eof": "closed"}.get(kind, kind)
            with lock:
                counts[kind] += 1
                if kind in ("reset", "truncated", "timeout", "not as before") and len(bad) < 5:
                    after = time.monotonic() - server.signal_at if server.signal_at else None
                    bad.append(f"{kind} on {where}"
                               + (f", {ms(after)} after the signal" if after is not None
                                  else ", before the signal"))

        def keepalive_client():
            c = open_client(server.port)
            if c is None:
                count("refused")
                return
            with c.sock:
                n = 0
                while time.monotonic() < stop_at[0]:
                    n += 1
                    reply = c.get(cfg.path)
                    count(before.kind(reply), f"keep-alive request {n}")
                    if reply.kind != "ok" or "close" in reply.headers.get("connection", "").lower():
                        return

        def new_connections():
            n = 0
            while time.monotonic() < stop_at[0] and n < 5000:
                n += 1
                c = open_client(server.port)
                if c is None:
                    count("refused")
                    if not server.alive():
                        return
                    time.sleep(0.005)
                    continue
                with c.sock:
                    count(before.kind(c.get(cfg.path)), "a new connection")

        def guarded(body):
            def run():
                try:
                    body()
                except socket.timeout:
                    count("timeout", "connect")      # a connect left hanging
                except OSError as e:
                    count("reset", f"connect ({e.strerror or e})")
            return run

        threads = [threading.Thread(target=guarded(keepalive_client), daemon=True)
                   for _ in range(32)]
        threads += [threading.Thread(target=guarded(new_connections), daemon=True)
                    for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        server.signal()
        server.wait_exit(HANG_BOUND)
        stop_at[0] = min(stop_at[0], time.monotonic())
        for t in threads:
            t.join()
        took = server.exit_after_signal()
        figure = (f"{counts['completed']} completed, {counts['refused']} refused, "
                  f"{counts['closed']} closed before a response, "
                  f"{counts['truncated']} truncated, {counts['reset']} reset")
        if counts["reset before sending"]:
            figure += f" ({counts['reset before sending']} more before sending)"
        if counts["timeout"]:
            figure += f", {counts['timeout']} timed out"
        if counts["not as before"]:
            figure += f", {counts['not as before']} answered unlike before the signal ({before})"
        if took is None:
            return failed("no-exit", figure, f"no exit within {HANG_BOUND:g} s; killed")
        if counts["truncated"] or counts["reset"] or counts["timeout"]:
            return failed("lost", figure, f"exit {ms(took)} after the signal; " + "; ".join(bad))
        if counts["not as before"]:
            return failed("not-as-before", figure,
                          f"exit {ms(took)} after the signal; " + "; ".join(bad))
        return passed(figure, f"exit {ms(took)} after the signal, {describe_status(server.status)}")


def check_no_pileup(cfg):
    """Finished connections leave threads, stacks or descriptors behind (lesson step 3).

    A thread that is never joined (nor detached) leaves the task list when
    it ends, but its stack stays mapped until exit: pthread_join(3)
    "Failure to join with a thread that is joinable ... produces a zombie
    thread ... it still consumes some system resources"; glibc maps 8 MiB
    of address space per stack.  A socket never closed keeps a descriptor:
    close(2).  2,000 sequential connections.  Pass: the process group's
    threads and descriptors return within +-2 of the baseline taken after a
    warm-up, and fewer than 200 memory mappings (/proc/PID/maps) are added
    over the second 1,000 connections.  A stack left mapped adds two, the
    stack and its guard page, whatever its size (8 MiB with glibc, 128 KiB
    with musl), so a pile-up adds 2,000; a runtime that reserves memory in
    large steps (a malloc arena, Go's heap) adds a few, now and then.  The
    figure also gives VmSize, which a pile-up grows by 8 GiB a thousand
    with glibc, but which a new malloc arena also grows by 64 MiB at once.
    """
    with Server(cfg) as server:
        pgid = server.proc.pid

        def one():
            c = Client(server.port)
            with c.sock:
                return c.get(cfg.path, close=True)

        for _ in range(20):
            one()
        time.sleep(SETTLE)
        base = mid = group_usage(pgid)
        bad, done, give_up = None, 0, time.monotonic() + PILEUP_BOUND
        while done < 2000 and time.monotonic() < give_up:
            try:
                reply = one()
            except OSError as e:
                reply = Reply(f"error ({e.strerror or e})", None, {}, b"")
            if reply.kind != "ok":
                bad = reply.kind
                break
            done += 1
            if done == 1000:
                mid = group_usage(pgid)

        def back(usage):
            return (abs(usage.threads - base.threads) <= 2 and abs(usage.fds - base.fds) <= 2
                    and usage.maps - mid.maps < PILEUP_MAPS)

        near = wait_until(lambda: back(group_usage(pgid)), 3.0, 0.05)
        after = group_usage(pgid)
        figure = (f"threads {base.threads} -> {after.threads}, "
                  f"descriptors {base.fds} -> {after.fds}, "
                  f"mappings {mid.maps - base.maps:+d} then {after.maps - mid.maps:+d}, "
                  f"VmSize {(after.vm_kib - base.vm_kib) / 1024:+.0f} MiB")
        if bad:
            return failed("stopped-answering", figure + f"; connection {done + 1} of 2000: {bad}",
                          "the server stopped answering")
        if done < 2000:
            return failed("too-slow", figure + f"; only {done} of 2000 connections "
                          f"in {PILEUP_BOUND:g} s")
        if not near:
            return failed("not-back", figure, "threads or descriptors not back within +-2 of the baseline, "
                                  f"or {PILEUP_MAPS} memory mappings or more added over the "
                                  "second 1,000 connections, 3 s after the last")
        return passed(figure)


def check_sigpipe(cfg):
    """SIGPIPE kills the server (lesson step 7).

    Writing to a socket whose peer has gone raises SIGPIPE, whose default
    action ends the process: send(2) "EPIPE ... the calling thread also
    receives SIGPIPE, unless MSG_NOSIGNAL is set"; signal(7).  Two ways to
    leave: (a) a client pipelines 2,000 requests, reads the start of the
    answers and resets, three times; (b) with --slow, a client sends a
    100 ms request and 50 more behind it, then closes at once, three times.
    In (b) the server has our FIN when it writes, so our kernel's RST puts
    its socket in error EPIPE, and its very first failing send raises
    SIGPIPE (tcp(7): a RST in CLOSE_WAIT): a server that stops writing after
    one error survives (a) but not (b).  Pass: the server lives and still
    answers.
    """
    ways = ["reset"] + (["close"] if cfg.slow else [])
    with Server(cfg) as server:
        for way in ways:
            for _ in range(3):
                c = Client(server.port)
                if way == "reset":
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    c.send(c.request(cfg.path) * 2000)
                    c.read_reply()
                    c.reset()
                    wait = 0.1
                else:
                    c.send(c.request(cfg.slow_path(100)) + c.request(cfg.path) * 50)
                    c.close()
                    wait = 0.4          # the slow answer, then the writes that fail
                if server.wait_exit(wait):
                    break
            if server.wait_exit(SETTLE):
                if way == "reset":
                    return failed("died-on-reset", describe_status(server.status),
                                  "the server died after a client reset")
                return failed("died-on-close", describe_status(server.status),
                              "the server died after a client closed with requests unanswered")
        reply = Client(server.port).get(cfg.path, close=True)
        if reply.kind != "ok":
            return failed("not-answering", f"then {cfg.path}: {reply.kind}",
                          "the server lives but no longer answers")
        left = " and 3 closes" if cfg.slow else " (--slow adds 3 early closes)"
        return passed(f"alive and answering after 3 resets{left}")


def check_exit_status(cfg):
    """The exit status lies about what happened to the work.

    A supervisor or a script only sees the status: 0 must mean every request
    finished, non-zero that work was cut (exit(3); systemd.service(5)
    SuccessExitStatus=).  A clean drain of a 300 ms request, then a cut:
    a request past --grace if given, otherwise a second signal.
    Pass: 0 for the clean drain, non-zero for the cut.
    """
    if not cfg.slow:
        return not_applicable("needs --slow")
    with Server(cfg) as server:
        (client,) = start_slow(server, 300)
        time.sleep(0.1)
        server.signal()
        reply = client.read_reply()
        client.close()
        server.wait_exit(HANG_BOUND)
        clean = server.status
        figure = f"clean drain: {describe_status(clean)}, request {reply.kind}"
        if reply.kind != "ok":
            return failed("clean-unanswered", figure,
                          "the request of a drain with time enough was not answered")
        if clean != 0:
            return failed("clean-nonzero", figure, "a drain that finished its work must exit 0")
    with Server(cfg) as server:
        long_ms = int(((cfg.grace or 0) + 10) * 1000)
        (client,) = start_slow(server, long_ms)
        time.sleep(SETTLE)
        server.signal()
        how = "past the grace period"
        if cfg.grace is None:
            how = "second signal"
            if not server.wait_exit(0.3):
                server.signal()
        server.wait_exit((cfg.grace or 0) + HANG_BOUND)
        client.close()
        cut = server.status
        figure = f"clean drain: {describe_status(clean)}; cut ({how}): {describe_status(cut)}"
        if cut is None:
            return failed("cut-no-exit", figure, "no exit; killed")
        if cut == 0:
            return failed("cut-zero", figure, "work was cut, yet the status says success")
        return passed(figure)


def check_handshake(cfg):
    """A handshake under way at the signal is refused or reset (lesson step A2).

    A client counts itself connected once the server's SYN-ACK reaches it,
    and may send its request at once; the server's kernel queues the
    connection for accept() only when the client's last ACK arrives.  A
    listener closed in between takes the half-open connection with it, and
    the client's request meets a RST: listen(2), tcp(7).  Under load that
    window is met in a run or two in a hundred; here one client holds its
    handshake half-open with its own socket filter, which drops the
    server's SYN-ACK, until the server's kernel counts it (sock_diag(7)),
    then the signal; then the filter comes off and the next SYN-ACK
    (repeated a second after the first, if the server still listens) lets
    it in.  Pass: its request (Connection: close) is answered whole, or the
    connection is closed with FIN before any byte of a response (clean, as
    everywhere in this tool: nothing ran, the client may retry); the server
    exits.  A refusal fails here: it stands for the RST that a client whose
    SYN-ACK had arrived would meet.  Linux only.
    """
    with Server(cfg) as server:
        try:
            sock = connect_half_open("127.0.0.1", server.port, IO_BOUND)
        except OSError as e:
            return not_applicable(f"cannot hold a handshake half-open here: {e}")
        client = Client(server.port, sock=sock)
        with sock:
            server.signal()
            err = let_in(sock, HANG_BOUND)
            if err:
                return failed("refused", f"its connect: {err}",
                              "the listener closed with the handshake under way; a client "
                              "whose SYN-ACK had arrived would have sent its request into a RST")
            reply = client.get(cfg.path, close=True)
            if reply.kind == "eof":
                what = "let in, then FIN before a response"
            elif reply.kind == "ok":
                end = client.read_end()
                if end != "eof":
                    return failed("not-fin", f"answered {reply.status}, then {end}",
                                  "the connection did not end with FIN")
                what = f"let in and answered {reply.status}, then FIN"
            else:
                return failed("unanswered", f"let in, then {reply.kind}",
                              "the handshake completed, the request was not answered")
        if not server.wait_exit(HANG_BOUND):
            return failed("no-exit", f"{what}; no exit within {HANG_BOUND:g} s")
        return passed(f"{what}; {describe_status(server.status)}")


CHECKS = [
    ("idle-exit", check_idle_exit),
    ("blocked-signals", check_blocked_signals),
    ("signal-race", check_signal_race),
    ("refuse-new", check_refuse_new),
    ("in-flight", check_in_flight),
    ("conn-close", check_conn_close),
    ("idle-keepalive", check_idle_keepalive),
    ("partial-request", check_partial_request),
    ("pipelined", check_pipelined),
    ("backlog", check_backlog),
    ("deadline", check_deadline),
    ("second-signal", check_second_signal),
    ("under-load", check_under_load),
    ("no-pileup", check_no_pileup),
    ("sigpipe", check_sigpipe),
    ("exit-status", check_exit_status),
    ("handshake", check_handshake),
]


# --------------------------------------------------------------------------
# The server under test: one process group, watched from start to reaping.

LIVE_SERVERS = set()   # reached by the tool's own signal handlers: killed on exit


class Server:
    """One run of the command, in its own session and process group.

    The leader is reaped only after its whole group has been killed: while it
    is an unreaped zombie its PID (and so its process group ID) cannot be
    reused, so killpg() can never reach a stranger's process.
    """

    def __init__(self, cfg, blocked=None):
        self.cfg = cfg
        self.blocked = blocked       # signals to start it with blocked
        self.dir = tempfile.mkdtemp(prefix="gracecheck-")
        self.port = None
        self.proc = None
        self.lines = []              # (stream, text) as the server printed them
        self.exit_at = None          # time.monotonic() of the leader's exit
        self.status = None           # returncode: >= 0 exit status, < 0 -signal
        self.signal_at = None
        self._reaping = threading.Lock()   # no signal may race the reaping
        self._exited = threading.Event()
        self._ready_line = threading.Event()
        self.target = None           # the PID the stop signal goes to (--pid-file)

    # ---- start and readiness

    def fill(self, text):
        """{port} and {dir} filled in: nothing else in the text is touched
        (configuration files are full of other braces)."""
        return text.replace("{port}", str(self.port)).replace("{dir}", self.dir)

    def start(self):
        self.port = free_port()
        argv = [self.fill(a) for a in self.cfg.command]
        for template in self.cfg.render:
            with open(template) as f:
                text = f.read()
            with open(os.path.join(self.dir, os.path.basename(template)), "w") as f:
                f.write(self.fill(text))
        # The signal mask is inherited across fork and exec: block the
        # signals in this thread around the start, as a launcher would (a
        # preexec_fn is not safe with threads running).  One that comes
        # for the tool meanwhile stays pending and is taken after.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, self.blocked) if self.blocked else None
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise NotReady(f"cannot run {argv[0]}: {e.strerror}") from None
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        LIVE_SERVERS.add(self)
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            threading.Thread(target=self._collect, args=(stream, name), daemon=True).start()
        if self.cfg.log:
            threading.Thread(target=self._follow_log, args=(self.fill(self.cfg.log),),
                             daemon=True).start()
        threading.Thread(target=self._watch_exit, daemon=True).start()
        self._wait_ready()
        return self

    def _collect(self, stream, name):
        for raw in iter(stream.readline, b""):
            self._line(name, raw)
        stream.close()

    def _line(self, name, raw):
        # stderr, stdout and the --log file are the server's word alike
        # (Node's console.log, uvicorn's and gunicorn's logs differ in which)
        text = raw.decode("utf-8", "replace").rstrip("\n")
        self.lines.append((name, text))
        if self.cfg.ready_line and re.search(self.cfg.ready_line, text):
            self._ready_line.set()

    def _follow_log(self, path):
        """--log: the lines of a log file the server writes, as they come,
        until the server has exited (and then what is left)."""
        f, partial = None, b""
        while True:
            done = self._exited.is_set()
            if f is None:
                try:
                    f = open(path, "rb")
                except OSError:
                    pass
            if f is not None:
                partial += f.read()
                *whole, partial = partial.split(b"\n")
                for raw in whole:
                    self._line("log", raw)
            if done:
                break
            time.sleep(0.01)
        if f is not None:
            f.close()

    def _watch_exit(self):
        # WNOWAIT: learn the exit time now, but leave the zombie in place
        # until the group is killed (see the class docstring).
        while True:
            try:
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        self.exit_at = time.monotonic()
        with self._reaping:
            kill_group(self.proc.pid)
            self.status = self.proc.wait()
            self._exited.set()
        LIVE_SERVERS.discard(self)

    def _wait_ready(self):
        deadline = time.monotonic() + READY_BOUND
        while time.monotonic() < deadline:
            if self._exited.is_set():
                raise NotReady(f"exited before it was ready ({describe_status(self.status)};"
                               " a server that daemonizes must run in the foreground)"
                               + self.stderr_tail(" stderr: "))
            if self._ready(deadline):
                return
        self.kill()
        why = f"; {self.why_not_ready}" if self.why_not_ready else ""
        raise NotReady(f"not ready within {READY_BOUND:g} s{why}" + self.stderr_tail(" stderr: "))

    why_not_ready = ""

    def _ready(self, deadline):
        """One look at every readiness the options ask for (all must hold):
        the log line, the HTTP 200, the PID file; by default the port."""
        cfg = self.cfg
        if cfg.ready_line and not self._ready_line.wait(0.01):
            self.why_not_ready = f"no line matched {cfg.ready_line!r}"
            return False
        if cfg.ready_http:
            got = http_status(self.port, cfg.ready_http, min(1.0, max(0.05, deadline - time.monotonic())))
            if got != 200:
                self.why_not_ready = f"GET {cfg.ready_http}: {got or 'no answer'}"
                time.sleep(0.01)
                return False
        elif not cfg.ready_line and not port_accepts(self.port):
            time.sleep(0.01)
            return False
        if cfg.pid_file:
            pid, why = read_pid_file(self.fill(cfg.pid_file), self.proc.pid)
            if pid is None:
                self.why_not_ready = why
                time.sleep(0.01)
                return False
            self.target = pid
        return True

    # ---- signals and exit

    def signal(self, sig=None):
        """The stop signal, to the leader only, as `kill PID` would send it.
        Once the leader is reaped its PID may belong to someone else: no
        signal is sent then."""
        if self.signal_at is None:
            self.signal_at = time.monotonic()
        with self._reaping:
            if not self._exited.is_set():
                pid = self.proc.pid
                # --pid-file: the server's own PID, checked again to be in
                # the group (while the leader is unreaped, the group is ours)
                if self.target is not None and in_group(self.target, self.proc.pid):
                    pid = self.target
                os.kill(pid, sig or self.cfg.signal)

    def signal_group(self, sig):
        with self._reaping:
            if not self._exited.is_set():
                kill_group(self.proc.pid, sig)

    def alive(self):
        return not self._exited.is_set()

    def wait_exit(self, timeout):
        """True if the leader exited within timeout seconds from now."""
        return self._exited.wait(timeout)

    def exit_after_signal(self):
        """Seconds from the first signal to the exit (None if no exit)."""
        if self.exit_at is None or self.signal_at is None:
            return None
        return self.exit_at - self.signal_at

    def kill(self):
        """SIGKILL the whole group and wait until it is reaped."""
        if self.proc is not None:
            self.signal_group(signal.SIGKILL)
            self._exited.wait(HANG_BOUND)
        shutil.rmtree(self.dir, ignore_errors=True)

    def snapshot(self):
        """What a server that did not exit is doing: its threads by the
        kernel function each waits in (/proc/PID/task/TID/wchan)."""
        waits = {}
        for pid in group_members(self.proc.pid):
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                        where = f.read().strip() or "running"
                    waits[where] = waits.get(where, 0) + 1
            except OSError:
                continue
        return "threads waiting in " + ", ".join(
            f"{w} x{n}" for w, n in sorted(waits.items())) if waits else "no process"

    def stderr_tail(self, prefix, n=3):
        tail = [t for s, t in self.lines if s in ("stderr", "log")][-n:]
        return prefix + " | ".join(tail) if tail else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        return False


def kill_group(pgid, sig=signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass   # nothing left in the group (EPERM: only zombies remain)


def kill_live_servers():
    for server in list(LIVE_SERVERS):
        server.kill()


def group_members(pgid):
    """PIDs of the live (non-zombie) processes in process group pgid."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue   # exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


Usage = namedtuple("Usage", "threads fds maps vm_kib")


def group_usage(pgid):
    """Threads, descriptors, memory mappings and VmSize (KiB), summed over
    the process group."""
    threads = fds = maps = vm_kib = 0
    for pid in group_members(pgid):
        try:
            threads += len(os.listdir(f"/proc/{pid}/task"))
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/maps") as f:
                maps += sum(1 for _ in f)
            with open(f"/proc/{pid}/status") as f:
                vm_kib += next((int(line.split()[1]) for line in f
                                if line.startswith("VmSize:")), 0)
        except OSError:
            continue
    return Usage(threads, fds, maps, vm_kib)


def group_stopped(pgid):
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "Tt":
            return False
    return True


def describe_status(status):
    if status is None:
        return "still running"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"status {status}"


def in_group(pid, pgid):
    """True if pid is a live process in process group pgid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[2]) == pgid and fields[0] != "Z"


def read_pid_file(path, pgid):
    """(pid, None) once path holds the PID of a process in group pgid, else
    (None, why).  A PID outside the group is never signalled: a stale file
    from an earlier run could name anyone's process."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None, f"no PID file {path}"
    if not text.isdigit():
        return None, f"PID file {path} holds {text[:20]!r}"
    pid = int(text)
    if not in_group(pid, pgid):
        return None, f"PID {pid} in {path} is not a process the command started"
    return pid, None


def http_status(port, path, timeout):
    """The status of GET path on 127.0.0.1:port (None if no whole status
    line came within timeout)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Connection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(m.group(1)) if m else None


def free_port():
    """A port nothing is bound to now, for the server to bind in a moment.

    Not one bind(0) would give: bind(0) and connect() everywhere else on the
    machine (a test suite running tests at once, say) take their ports from
    the kernel's ephemeral range, so one of them could take the port between
    this check and the server's own bind.  A port above that range, or
    between 10000 and its start (below 10000, fixed-port services), can only
    be taken by another caller of this function."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    ports = [*range(10000, min(low, 65536)), *range(max(high + 1, 10000), 65536)]
    for _ in range(200 if ports else 0):
        port = random.choice(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until(cond, timeout, interval=0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def ms(seconds):
    milli = seconds * 1000
    return f"{milli:.1f} ms" if abs(milli) < 10 else f"{milli:.0f} ms"


# --------------------------------------------------------------------------
# A handshake held half-open (the handshake check; the project's tests use
# it too, through tests/halfopen.py).  Linux: socket(7) SO_ATTACH_FILTER,
# sock_diag(7).

SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
# A classic BPF program, struct sock_filter {u16 code; u8 jt, jf; u32 k}
# four times: drop every segment with SYN set.  On a connecting socket,
# that is the server's SYN-ACK.
DROP_SYN = struct.pack("=" + "HBBI" * 4,
                       0x30, 0, 0, 13,            # ld  [13]: the TCP flags byte
                       0x45, 0, 1, 0x02,          # jset #SYN
                       0x06, 0, 0, 0,             # ret #0: drop
                       0x06, 0, 0, 0xffffffff)    # ret #-1: keep


def attach_drop_syn(sock):
    """Attach DROP_SYN to sock (struct sock_fprog: a length, a pointer)."""
    program = ctypes.create_string_buffer(DROP_SYN, len(DROP_SYN))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HP", 4, ctypes.addressof(program)))


def syn_recv_count(port):
    """Handshakes under way on port (IPv4 and IPv6), as sock_diag(7)
    reports them, what `ss -tn state syn-recv` asks: the kernel's count."""
    return sum(_syn_recv_count(family, port) for family in (socket.AF_INET, socket.AF_INET6))


def _syn_recv_count(family, port):
    netlink_sock_diag, sock_diag_by_family, tcp_syn_recv = 4, 20, 3
    nlmsg_error, nlmsg_done = 2, 3
    # struct inet_diag_req_v2: family, protocol, ext, pad, states, then the
    # socket id (source port, destination port, addresses, interface, cookie).
    req = (struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << tcp_syn_recv)
           + struct.pack("!HH", port, 0) + bytes(16 + 16 + 4 + 8))
    msg = struct.pack("=IHHII", 16 + len(req), sock_diag_by_family, 0x1 | 0x300, 1, 0) + req
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink_sock_diag) as nl:
        nl.send(msg)
        count = 0
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    raise OSError(errno.EPROTO, "sock_diag: a malformed reply")
                if kind == nlmsg_done:
                    return count
                if kind == nlmsg_error:
                    raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "sock_diag")
                count += 1
                off += (length + 3) & ~3


def connect_half_open(host, port, timeout):
    """A socket whose SYN has reached the server and whose SYN-ACK its filter
    drops: returned once the server's kernel counts the handshake under way.
    let_in() then lets the next SYN-ACK through."""
    s = socket.socket()
    try:
        attach_drop_syn(s)
        before = syn_recv_count(port)
        s.setblocking(False)
        s.connect_ex((host, port))
        deadline = time.monotonic() + timeout
        while syn_recv_count(port) <= before:
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "the handshake never showed up half-open")
            time.sleep(0.001)   # asking the kernel again: it has no event for this
        return s
    except BaseException:
        s.close()
        raise


def let_in(s, timeout):
    """Take the filter off and wait for the handshake to end: None when the
    socket is connected (then blocking, with timeout), else the error's name,
    e.g. "ECONNREFUSED"."""
    s.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    _, writable, _ = select.select([], [s], [], timeout)
    if not writable:
        return "timed out"
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return errno.errorcode.get(err, str(err))
    s.setblocking(True)
    s.settimeout(timeout)
    return None


# --------------------------------------------------------------------------
# A small HTTP/1.1 client that reports exactly what the wire did.

Reply = namedtuple("Reply", "kind status headers body")
# kind: "ok" a whole response; "eof" the connection closed before any byte
# of it (a clean refusal); "truncated" part of a response, then the end;
# "reset" a RST after the request was sent; "reset before sending" a RST
# that made the send itself fail; "timeout" nothing for IO_BOUND.


class Client:
    """One TCP connection to the server, with a read buffer for pipelining."""

    def __init__(self, port, timeout=IO_BOUND, connect=True, sock=None):
        self.port = port
        self.buf = b""
        if sock is not None:
            self.sock = sock            # connected already, or about to be
            return
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if connect:
            self.sock.connect(("127.0.0.1", port))

    def request(self, path, close=False):
        return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                + ("Connection: close\r\n" if close else "")
                + "\r\n").encode()

    def send(self, data):
        self.sock.sendall(data)

    def get(self, path, close=False):
        try:
            self.send(self.request(path, close))
        except ConnectionResetError:
            return Reply("reset before sending", None, {}, b"")
        except BrokenPipeError:
            return Reply("eof", None, {}, b"")
        return self.read_reply()

    def _fill(self):
        """Read more bytes; '' on EOF, or the error kind."""
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "timeout"
        if not chunk:
            return "eof"
        self.buf += chunk
        return ""

    def read_reply(self):
        """The next whole response, or what cut it short."""
        while b"\r\n\r\n" not in self.buf:
            err = self._fill()
            if err:
                if err == "eof" and self.buf:
                    err = "truncated"
                if err == "reset" and self.buf:
                    err = "truncated"
                return Reply(err, None, {}, self.buf)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return Reply("truncated", None, {}, self.buf)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.buf = rest
        if "content-length" in headers:
            need = int(headers["content-length"])
            while len(self.buf) < need:
                err = self._fill()
                if err:
                    return Reply("truncated", status, headers, self.buf)
            body, self.buf = self.buf[:need], self.buf[need:]
            return Reply("ok", status, headers, body)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked(status, headers)
        if status in (204, 304) or 100 <= status < 200:
            return Reply("ok", status, headers, b"")
        while True:                    # delimited by the close itself
            err = self._fill()
            if err == "eof":
                body, self.buf = self.buf, b""
                return Reply("ok", status, headers, body)
            if err:
                return Reply("truncated", status, headers, self.buf)

    def _read_chunked(self, status, headers):
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if self._fill():
                    return Reply("truncated", status, headers, body)
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                return Reply("truncated", status, headers, body)
            while len(self.buf) < size + 2:
                if self._fill():
                    return Reply("truncated", status, headers, body)
            if size == 0:
                # no trailers expected from the servers we test; skip CRLF
                self.buf = self.buf[2:]
                return Reply("ok", status, headers, body)
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]

    def read_end(self):
        """How the connection ends once the responses are read: eof or reset."""
        while True:
            err = self._fill()
            if err:
                return err if not self.buf else f"{err} after {len(self.buf)} extra bytes"
            if len(self.buf) > 1 << 20:
                return "more data"

    def reset(self):
        """Close with a RST (SO_LINGER with a zero timeout)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()

    def close(self):
        self.sock.close()


def connect_error_kind(error):
    """What a failed connect() means for the client: "refused" (ECONNREFUSED,
    or ECONNRESET: the server's RST came after its SYN-ACK but before
    connect() returned, a handshake the closing listener took with it;
    either way nothing was sent and the client may retry), "hung" (no answer
    within the connect's timeout), or "other" (the client's own trouble,
    EADDRNOTAVAIL, say)."""
    if isinstance(error, (ConnectionRefusedError, ConnectionResetError)):
        return "refused"
    if isinstance(error, socket.timeout):
        return "hung"
    return "other"


def open_client(port, timeout=IO_BOUND):
    """A connected Client, or None if the connection was refused (or reset
    before connect() returned: no request was sent on it)."""
    try:
        return Client(port, timeout)
    except (ConnectionRefusedError, ConnectionResetError):
        return None


def start_slow(server, ms_, count=1, close=False):
    """count connections, each with a slow request sent; the Clients."""
    clients = []
    for _ in range(count):
        c = Client(server.port)
        c.send(c.request(server.cfg.slow_path(ms_), close))
        clients.append(c)
    return clients


def read_in_threads(clients, close=False):
    """Read one reply on each client at once; the Replies and their times.
    With close, each client closes its connection once it has its reply."""
    replies = [None] * len(clients)
    times = [None] * len(clients)

    def read(i):
        replies[i] = clients[i].read_reply()
        times[i] = time.monotonic()
        if close:
            clients[i].close()

    threads = [threading.Thread(target=read, args=(i,), daemon=True)
               for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies, times


def summarize(kinds):
    counts = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


# --------------------------------------------------------------------------
# Command line

class Config:
    def __init__(self, args, command):
        self.command = command
        self.signal = SIGNALS[args.signal.upper().removeprefix("SIG")]
        self.signal_name = "SIG" + args.signal.upper().removeprefix("SIG")
        self.slow = args.slow
        self.path = args.path
        self.grace = args.grace
        self.repeat = args.repeat
        self.ready_line = args.ready_line
        self.ready_http = args.ready_http
        self.pid_file = args.pid_file
        self.render = args.render or []
        self.log = args.log
        self.verbose = args.verbose

    def slow_path(self, ms_):
        return self.slow.replace("{ms}", str(ms_))


class UsageError(Exception):
    pass


def parse_args(argv):
    if "--" in argv:
        i = argv.index("--")
        opts, command = argv[:i], argv[i + 1:]
    else:
        opts, command = argv, []
    p = argparse.ArgumentParser(
        prog="gracecheck.py",
        usage="gracecheck.py [options] -- COMMAND ARGS...",
        description="Check an HTTP server's graceful shutdown. {port} and "
                    "{dir} in COMMAND become a free port and a fresh directory.")
    p.add_argument("--signal", default="INT", help="graceful-stop signal: INT, TERM, QUIT, USR1, USR2 or WINCH (default INT)")
    p.add_argument("--slow", metavar="PATH", help="a path that answers after {ms} milliseconds, e.g. '/sleep?ms={ms}'")
    p.add_argument("--path", default="/", help="a cheap path that answers 200 (default /)")
    p.add_argument("--grace", type=float, metavar="SECONDS", help="the server's drain deadline")
    p.add_argument("--ready-line", metavar="REGEX", help="ready when this matches a line of the server's stderr, stdout or --log file (default: the port accepts)")
    p.add_argument("--ready-http", metavar="PATH", help="ready when GET PATH answers 200 (e.g. a proxied path, so the backend is up too)")
    p.add_argument("--log", metavar="FILE", help="a log file the server writes, e.g. {dir}/error.log: --ready-line reads it too, and its lines join stderr's in the failure details")
    p.add_argument("--pid-file", metavar="FILE", help="send the stop signal to the PID the server writes to FILE (e.g. {dir}/httpd.pid), not to the command's own process; it must be in the command's process group, and the command must exit when it does")
    p.add_argument("--render", metavar="TEMPLATE", action="append", help="before each start, write TEMPLATE into {dir} under its own name with {port} and {dir} filled in (repeatable)")
    p.add_argument("--only", metavar="A,B", help="run only these checks")
    p.add_argument("--skip", metavar="A,B", help="skip these checks")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="runs of the timing checks (default 5)")
    p.add_argument("-v", "--verbose", action="store_true", help="show details and the server's stderr")

    def error(message):
        raise UsageError(message)
    p.error = error
    args = p.parse_args(opts)
    if args.list:
        return args, None
    if not command:
        raise UsageError("no server command: put it after --")
    if args.signal.upper().removeprefix("SIG") not in SIGNALS:
        raise UsageError(f"--signal: want {', '.join(SIGNALS)}, not {args.signal}")
    if args.slow is not None and "{ms}" not in args.slow:
        raise UsageError("--slow: the path must contain {ms}")
    if args.grace is not None and not 0 <= args.grace <= 600:
        raise UsageError("--grace: want seconds from 0 to 600")
    if args.repeat < 1:
        raise UsageError("--repeat: want 1 or more")
    for template in args.render or []:
        if not os.path.isfile(template):
            raise UsageError(f"--render: no file {template}")
    if args.ready_http is not None and not args.ready_http.startswith("/"):
        raise UsageError("--ready-http: the path must start with /")
    rendered = []
    for template in args.render or []:
        with open(template) as f:
            rendered.append(f.read())
    if not any("{port}" in a for a in command + rendered):
        raise UsageError("the command (or a --render template) must contain {port}, so each server listens where the tool looks")
    names = [n for n, _ in CHECKS]
    for opt in ("only", "skip"):
        value = getattr(args, opt)
        if value:
            unknown = [n for n in value.split(",") if n not in names]
            if unknown:
                raise UsageError(f"--{opt}: no check named {', '.join(unknown)} (see --list)")
    return args, Config(args, command)


def selected(args):
    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()
    return [(n, f) for n, f in CHECKS if (only is None or n in only) and n not in skip]


def unignore_stop_signals():
    """A signal the tool was started with ignored (a non-interactive shell
    ignores SIGINT and SIGQUIT in a command it runs with &; nohup ignores
    SIGHUP) stays ignored in every server it starts: exec keeps SIG_IGN,
    execve(2).  A shell or a Python server keeps a signal ignored on entry
    ignored, and would then "hang" through no fault of its own.  exec resets
    a caught signal to SIG_DFL, so each stop signal found ignored here is
    caught, by a handler that ignores it: the tool behaves as it was started
    to, the servers get the default a launcher such as systemd gives them."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: None)


def on_tool_signal(signum, frame):
    raise KeyboardInterrupt


def run(args, cfg):
    results = []
    print(f"gracecheck: {' '.join(cfg.command)}  (stop signal {cfg.signal_name})", flush=True)
    for name, check in selected(args):
        started = time.monotonic()
        try:
            outcome = check(cfg)
        except NotReady as e:
            if not results:
                raise
            outcome = failed("not-started", "the server did not start", str(e))
        except OSError as e:
            outcome = failed("client-error", f"client error: {e.strerror or e}", repr(e))
        finally:
            kill_live_servers()
        results.append({"name": name, "result": outcome.result, "reason": outcome.reason,
                        "figure": outcome.figure, "detail": outcome.detail})
        line = f"{outcome.result:<5} {name:<16} {outcome.figure}"
        if cfg.verbose:
            line += f"  [{time.monotonic() - started:.1f} s]"
        print(line, flush=True)
        if outcome.result == "FAIL":
            print(f"      {'':<16} [{outcome.reason}] {outcome.detail}".rstrip(), flush=True)
        elif outcome.detail and cfg.verbose:
            print(f"      {'':<16} {outcome.detail}", flush=True)
    return results


def main(argv=None):
    try:
        args, cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"gracecheck: {e}", file=sys.stderr)
        return 2
    if args.list:
        for name, check in CHECKS:
            print(f"{name:<16} {check.__doc__.splitlines()[0]}")
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_tool_signal)
    unignore_stop_signals()
    try:
        results = run(args, cfg)
    except NotReady as e:
        print(f"gracecheck: the server command did not start: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gracecheck: interrupted; every server it started is killed", file=sys.stderr)
        return 130
    finally:
        kill_live_servers()
    failures = [r["name"] for r in results if r["result"] == "FAIL"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cfg.command, "signal": cfg.signal_name,
                       "checks": results}, f, indent=2)
            f.write("\n")
    print(f"gracecheck: {len(failures)} failed" + (f": {', '.join(failures)}" if failures else "")
          + f", {sum(r['result'] == 'PASS' for r in results)} passed, "
          f"{sum(r['result'] == 'n/a' for r in results)} n/a", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
