"""Races a microsecond wide, made deterministic by the test-only build.

$SERVER_RACE_BIN (`make test` builds ./server-race) is the server compiled
with -DGRACEFUL_RACE_WINDOW_MS: its main thread holds still between the
accept loop's check of the flag and its wait, logging `race window open:
accept` and then `race window closed: accept` (with `; a signal came in
it` when a signal arrived meanwhile).  A test sends its signal when the window opens, so the
signal lands where a textbook loop loses it; the close line proves it did.
Should a loaded machine be so slow that the signal misses the window, the
round proves nothing and is tried again on a fresh server.
"""

import re
import signal
import socket

import pytest

from conftest import (HOST, SECOND_SIGNAL_RE, SERVER_RACE_BIN, SHUTDOWN_RE, bound, read_to_eof,
                      wait_until, warm_conn)
from halfopen import connect_half_open, let_in

OPEN = "race window open: accept"
CLOSED_RE = r"race window closed: accept(; a signal came in it)?"
ROUNDS = 3


def signal_inside_window(srv, sig, start):
    """Wait for a window to open at or after line start, send sig into it,
    and return whether the server saw it arrive inside the window."""
    i = srv.wait_line_index(OPEN, start, bound(10))
    srv.signal(sig)
    j = srv.wait_line_index(CLOSED_RE, i + 1, bound(10))
    return srv.lines[j].endswith("a signal came in it"), j


def race_server(start_server, *args, **kw):
    return start_server(*args, binary=SERVER_RACE_BIN, **kw)


SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"),
           pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_between_check_and_wait_is_not_lost(start_server, tmp_path, sig):
    """Lesson step 2: a signal that lands after the loop checked its flag but
    before it waits stays pending, and the wait takes it: exit 0 at once.  (A
    textbook loop has already read the flag: it then waits forever.)"""
    for n in range(ROUNDS):
        srv = race_server(start_server, data_dir=tmp_path / f"d{n}")
        came, _ = signal_inside_window(srv, sig, 0)
        if not came:
            assert srv.wait_exit(bound(5)) == 0
            continue
        assert srv.wait_exit(bound(2)) == 0
        assert srv.lines[-1] == "exit 0: every connection finished", srv.lines
        return
    pytest.fail(f"the signal missed the window {ROUNDS} times: machine overloaded?")


@pytest.mark.slow(4)
def test_signal_with_connection_threads_alive_reaches_the_main_thread(start_server, tmp_path):
    """Lesson step 2, signals blocked before any thread exists: with
    connection threads alive and the main thread busy (in the window, signals
    blocked), a process-directed SIGINT must still reach the main thread: the
    connection threads block it.  (If a connection thread took it, the main
    thread would sleep on in its wait.)"""
    for n in range(ROUNDS):
        srv = race_server(start_server, data_dir=tmp_path / f"d{n}")
        c = warm_conn(srv)
        srv.wait_threads(2)
        # Two windows come before the loop sleeps again: the first round's,
        # and the one after accepting c (its response may come back before
        # that window is even logged).  Wait for both to close, then wake
        # the loop with a second connection: the window it opens next has
        # both threads alive and nothing left in the backlog.  (Were poke
        # still in the backlog, it would wake the wait after the window,
        # whichever thread took the signal, and the round would prove nothing.)
        assert wait_until(lambda: srv.lines.count(OPEN) >= 2 and
                          srv.lines.count(OPEN) == len(srv.matching(CLOSED_RE)),
                          bound(10))
        start = len(srv.lines)
        poke = srv.connect()
        came, _ = signal_inside_window(srv, signal.SIGINT, start)
        if came:
            rc = srv.wait_exit(bound(3))
            assert rc == 0, srv.log_text()
            assert c.expect_eof(bound(1)) == "eof"
            poke.close()
            c.close()
            return
        srv.wait_exit(bound(5))
        poke.close()
        c.close()
    pytest.fail(f"the signal missed the window {ROUNDS} times: machine overloaded?")


@pytest.mark.slow(3)
def test_signal_pending_while_connections_keep_arriving_is_taken_at_once(start_server):
    """The ppoll subtlety (let_pending_signals_in): a signal pending when the
    wait returns with connections ready is taken in that very round, not
    postponed while the backlog stays full.  The race build accepts one
    batch of 16 per window, so a backlog of 100 keeps the listener ready for
    six rounds; the shutdown must begin right after the first."""
    srv = race_server(start_server, "--max-conns", "200")
    srv.wait_line_index(OPEN, 0, bound(10))     # the loop has started
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    clients = []
    try:
        for _ in range(100):
            s = socket.create_connection((HOST, srv.port), timeout=bound(30))
            s.sendall(request)
            clients.append(s)
        came, j = signal_inside_window(srv, signal.SIGINT, len(srv.lines))
        assert came, "the signal missed a 1 s window"
        # The round that ends this window must take the signal: the next
        # thing the main thread logs is the shutdown, not another window.
        k = srv.wait_line_index(f"{OPEN}|{SHUTDOWN_RE}", j + 1, bound(5))
        assert re.fullmatch(SHUTDOWN_RE, srv.lines[k]), \
            f"the loop went round again with the signal pending:\n{srv.log_text()}"
        for i, s in enumerate(clients):
            reply = read_to_eof(s)
            assert reply.startswith(b"HTTP/1.1 200 "), f"client {i}: {reply!r}"
        assert srv.wait_exit(bound(10)) == 0
    finally:
        for s in clients:
            s.close()


@pytest.mark.slow(3)
def test_request_arriving_as_an_idle_connection_closes_meets_a_fin_not_a_reset(start_server):
    """An idle keep-alive connection closed by the drain, while its client
    sends the next request at that very moment (inside the window, after the
    thread looked for input and before it closes): the client reads a clean
    EOF, a close it can retry after (RFC 9112 9.3.1), not a RST; exit 0.
    (close() with the request unread would reset it.)"""
    srv = race_server(start_server, env={"GRACEFUL_RACE_IDLE_CLOSE": "1"})
    c = warm_conn(srv)
    srv.signal(signal.SIGINT)
    i = srv.wait_line_index("race window open: idle-close", 0, bound(10))
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert srv.wait_line_index("race window closed: idle-close", i + 1, bound(10)) > i
    assert c.expect_eof(bound(2)) == "eof"
    c.close()
    assert srv.wait_exit(bound(5)) == 0


@pytest.mark.slow(2)
def test_client_connecting_between_the_last_accept_and_close_is_refused_not_reset(start_server):
    """Stopping accepting in two stages (lesson step A1, the SYN filter before
    the listener's close): a client whose connect() comes after the drain's
    last accept() and before the listener closes (inside the window) is
    refused, which any client may retry, not let in by the kernel and then
    reset by close() with its request sent.  Its SYN is dropped; the
    one it sends again a second later finds the listener closed."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for n in range(ROUNDS):
        srv = race_server(start_server, env={"GRACEFUL_RACE_CLOSE": "1"})
        srv.wait_line_index(OPEN, 0, bound(10))     # listening
        srv.signal(signal.SIGINT)
        i = srv.wait_line_index("race window open: close", 0, bound(10))
        with socket.socket() as s:
            s.settimeout(bound(8))
            inside = not srv.matching("race window closed: close.*")
            try:
                s.connect((HOST, srv.port))
            except ConnectionRefusedError:
                outcome = "refused"
            else:
                s.sendall(request)
                try:
                    outcome = f"let in, then read {read_to_eof(s)!r}"
                except ConnectionResetError:
                    outcome = "let in, then reset with its request sent"
        srv.wait_line_index("race window closed: close", i + 1, bound(10))
        assert srv.wait_exit(bound(5)) == 0
        if inside:
            assert outcome == "refused", outcome
            return
    pytest.fail(f"the connect missed the window {ROUNDS} times: machine overloaded?")


def test_handshake_under_way_when_the_drain_begins_is_let_in_and_served(start_server):
    """Stopping accepting waits for the handshakes already under way (lesson
    step A2).  A client whose SYN the server answered before the signal counts
    itself connected once the SYN-ACK reaches it, and may send its request at
    once: a listener closed before its last ACK arrives would reset it.  Here
    the client's own socket filter holds its handshake half-open across the
    signal; then it comes off, the server's SYN-ACK comes again (a second after
    the first), and the client must be let in, served and closed cleanly; exit
    0.  (Whether the response says Connection: close depends on whether it is
    written before or after the drain begins, a moment later.  A server that
    closes at once never sends that SYN-ACK again: the client is refused.)"""
    srv = start_server()
    with connect_half_open(HOST, srv.port, bound(5)) as s:
        srv.signal(signal.SIGINT)
        srv.wait_line(r"server: waiting for 1 handshake\(s\) under way", bound(5))
        assert let_in(s, bound(5)) is None
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_to_eof(s)
    assert reply.startswith(b"HTTP/1.1 200 "), reply     # then a clean EOF, no reset
    assert srv.wait_exit(bound(5)) == 0


def test_second_signal_while_waiting_for_handshakes_cuts_at_once(start_server):
    """The second signal may come while stop accepting still waits for a
    handshake under way (up to 1.5 s): it ends that wait, and it still cuts,
    though the drain's own wait never sees it arrive.  Exit 1 at once, the
    slow request cut; not a drain to the end of the grace period."""
    srv = start_server("--grace", "30")
    c = warm_conn(srv)
    c.send_request("GET", "/sleep?ms=20000")
    with connect_half_open(HOST, srv.port, bound(5)):
        srv.signal(signal.SIGINT)
        srv.wait_line(r"server: waiting for 1 handshake\(s\) under way", bound(5))
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(bound(5)) == 1
    m = srv.wait_line(SECOND_SIGNAL_RE, 0)
    assert m.group(1) == "SIGINT" and m.group(2) == "1", srv.lines
    assert srv.lines[-1] == "exit 1: cut 1 connection(s)", srv.lines
    assert c.expect_eof(bound(2)) in ("eof", "reset")
