"""uNetworking's h1spec cases, replayed against the server: each request
with the status ranges it accepts, or, for a request cut short, no answer
within h1spec's 0.5 s.  These are the 40 cases of the public list we could
read (the issue's run had 33); the server passes all of them."""

import select
import socket
import time

import pytest

from conftest import HOST

WAIT = None     # the request is incomplete: the server must still be waiting

CASES = [
    (b"G", WAIT),
    (b"GET ", WAIT),
    (b"GET /hello", WAIT),
    (b"GET /hello ", WAIT),
    (b"GET /hello HTTP", WAIT),
    (b"GET /hello HTTP/1.1", WAIT),
    (b"GET /hello HTTP/1.1\r", WAIT),
    (b"GET /hello HTTP/1.1\r\n", WAIT),
    (b"GET /hello HTTP/1.1\r\nHos", WAIT),
    (b"GET /hello HTTP/1.1\r\nHost:", WAIT),
    (b"GET /hello HTTP/1.1\r\nHost: ", WAIT),
    (b"GET /hello HTTP/1.1\r\nHost: localhost", WAIT),
    (b"GET /hello HTTP/1.1\r\nHost: localhost\r", WAIT),
    (b"GET /hello HTTP/1.1\r\nHost: localhost\r\n", WAIT),
    (b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r", WAIT),
    (b"GET / \r\n\r\n", [(400, 599)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n\r\n", [(100, 100), (200, 299)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", [(200, 299)]),
    (b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n", [(200, 299)]),
    (b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(200, 299)]),
    (b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(200, 299)]),
    (b"GET HTTPS://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(200, 299)]),
    (b"GET HTTPZ://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(400, 499)]),
    (b"GET H-TTP://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(400, 499)]),
    (b"GET HTTP://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(200, 299)]),
    (b"GET   HTTP/1.1\r\nHost: example.com\r\n\r\n", [(400, 499)]),
    (b"GET ^ HTTP/1.1\r\nHost: example.com\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/1.1\r\nhoSt:\texample.com\r\nempty:\r\n\r\n", [(200, 299)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Invalid[]: test\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: -123456789123456789123456789\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: -1234\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: abc\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Empty-Header: \r\n\r\n", [(200, 299)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Bad-Control-Char: test\x07\r\n\r\n", [(400, 499)]),
    (b"GET / HTTP/9.9\r\nHost: example.com\r\n\r\n", [(400, 599)]),
    (b"Extra lineGET / HTTP/1.1\r\nHost: example.com\r\n\r\n", [(400, 599)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\n\rSome-Header: Test\r\n\r\n", [(400, 499)]),
    (b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello", [(200, 299), (404, 404)]),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", [(400, 499)]),
]


ANSWERED = [(raw, accept) for raw, accept in CASES if accept is not WAIT]
INCOMPLETE = [raw for raw, accept in CASES if accept is WAIT]


@pytest.mark.parametrize("raw,accept", ANSWERED, ids=[repr(r[:40])[2:-1] for r, _ in ANSWERED])
def test_h1spec_case(server, raw, accept):
    """Each complete h1spec request gets a status in its accepted ranges."""
    with socket.create_connection((HOST, server.port), timeout=5) as s:
        s.sendall(raw)
        data = s.recv(100)
    status = int(data.split(b"\r\n", 1)[0].split(b" ")[1])
    assert any(lo <= status <= hi for lo, hi in accept), data


def test_h1spec_incomplete_requests_are_not_answered(server):
    """The 15 h1spec fragments (a request cut anywhere before its blank line) get no answer within h1spec's 0.5 s: the server waits for the rest."""
    socks = [socket.create_connection((HOST, server.port), timeout=5) for _ in INCOMPLETE]
    try:
        for s, raw in zip(socks, INCOMPLETE):
            s.sendall(raw)
        deadline = time.monotonic() + 0.5
        ready = []
        while time.monotonic() < deadline and not ready:
            ready, _, _ = select.select(socks, [], [], max(0.0, deadline - time.monotonic()))
        assert not ready, [INCOMPLETE[socks.index(s)] for s in ready]
    finally:
        for s in socks:
            s.close()
