"""The HTTP/1.1 protocol as served while running normally."""

import http.client
import subprocess
import time

import pytest

from conftest import HOST, assert_error, bound, build_request, wait_until


# ---------------------------------------------------------------- GET/HEAD /

def test_get_root_is_200_text_plain(server):
    """GET / -> 200, text/plain, short non-empty body matching Content-Length."""
    r = server.request("GET", "/")
    assert r.status == 200
    assert r.header("content-type", "").startswith("text/plain")
    assert 0 < len(r.body) <= 4096
    assert int(r.header("content-length")) == len(r.body)


def test_head_root_has_get_headers_and_no_body(server):
    """HEAD / -> same status/Content-Type/Content-Length as GET, and no body bytes."""
    with server.connect() as c:
        get = c.request("GET", "/")
        # HEAD then GET in one write: a body after HEAD would corrupt the 2nd parse.
        c.send(build_request("HEAD", "/") + build_request("GET", "/"))
        head = c.read_response("HEAD")
        get2 = c.read_response("GET")
    assert head.status == 200
    assert head.header("content-length") == get.header("content-length")
    assert head.header("content-type") == get.header("content-type")
    assert head.body == b""
    assert get2.status == 200 and get2.body == get.body


def test_curl_head_root(server):
    """curl -I / reports 200 with a Content-Length (real client, HEAD)."""
    p = subprocess.run(["curl", "-sS", "-I", "--max-time", "5",
                        f"http://{HOST}:{server.port}/"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("HTTP/1.1 200"), p.stdout
    assert any(l.lower().startswith("content-length:") for l in lines), p.stdout


def test_http_client_keep_alive_reuses_connection(server):
    """http.client: two GETs over one keep-alive connection both succeed."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
    try:
        conn.request("GET", "/")
        r1 = conn.getresponse()
        b1 = r1.read()
        sock1 = conn.sock
        conn.request("GET", "/")
        r2 = conn.getresponse()
        b2 = r2.read()
        assert conn.sock is sock1, "http.client had to reconnect"
    finally:
        conn.close()
    assert r1.status == r2.status == 200
    assert b1 == b2 and b1


# ---------------------------------------------------------------- /sleep

def test_sleep_waits_then_200(server):
    """GET /sleep?ms=300 -> 200, and not before 300 ms have passed."""
    t0 = time.monotonic()
    r = server.request("GET", "/sleep?ms=300")
    elapsed = time.monotonic() - t0
    assert r.status == 200
    assert elapsed >= 0.29, elapsed


def test_sleep_zero_is_200(server):
    """GET /sleep?ms=0 -> 200 (0 is in range)."""
    assert server.request("GET", "/sleep?ms=0").status == 200


@pytest.mark.parametrize("target", [
    "/sleep", "/sleep?ms=", "/sleep?ms=-1", "/sleep?ms=abc", "/sleep?ms=12abc",
    "/sleep?ms=60001", "/sleep?ms=99999999999999999999999999",
    "/sleep?ms=18446744073709551616",
])
def test_sleep_bad_ms_is_400(server, target):
    """Bad ms (missing, negative, non-numeric, > 60000, overflowing) -> 400."""
    t0 = time.monotonic()
    r = server.request("GET", target)
    assert_error(r, 400)
    assert time.monotonic() - t0 < bound(2.0)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("target", ["/nope", "/index.html", "/a/b/c"])
def test_unknown_path_is_404(server, target):
    """Unknown path -> 404 with a short body and Content-Length."""
    assert_error(server.request("GET", target), 404)


def test_unknown_method_is_501(server):
    """Unknown method token (FROB) -> 501."""
    assert_error(server.request("FROB", "/"), 501)


@pytest.mark.parametrize("method,target,allow", [
    ("DELETE", "/", {"GET", "HEAD", "POST", "OPTIONS"}),
    ("POST", "/sleep?ms=1", {"GET", "HEAD", "OPTIONS"}),
    ("PUT", "/", {"GET", "HEAD", "POST", "OPTIONS"}),
    ("DELETE", "/files/x", {"GET", "HEAD", "PUT", "OPTIONS"}),
    ("POST", "/files/x", {"GET", "HEAD", "PUT", "OPTIONS"}),
])
def test_method_not_allowed_is_405_with_allow(server, method, target, allow):
    """Known method not allowed on a route -> 405 with the route's Allow header."""
    body = b"" if method in ("PUT", "POST") else None
    r = server.request(method, target, body=body)
    assert_error(r, 405)
    got = {t.strip() for t in (r.header("allow") or "").split(",") if t.strip()}
    assert got == allow, r.header("allow")


def test_put_without_content_length_is_411(server):
    """PUT without Content-Length -> 411."""
    with server.connect() as c:
        r = c.request("PUT", "/files/x", headers={"Connection": "close"})
    assert_error(r, 411)


@pytest.mark.parametrize("method,target,status", [("PUT", "/files/x", 201), ("GET", "/", 200)])
def test_transfer_encoding_chunked_is_served(server, method, target, status):
    """Transfer-Encoding: chunked is read (test_chunked.py has the details)."""
    with server.connect() as c:
        c.send(build_request(method, target, headers=[("Transfer-Encoding", "chunked")])
               + b"2\r\nok\r\n0\r\n\r\n")
        r = c.read_response(method)
    assert r.status == status


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET / FOO/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
], ids=["garbage", "no-version", "extra-token", "bad-protocol", "bad-minor",
        "header-no-colon", "header-empty-name", "space-before-colon"])
def test_malformed_request_is_400(server, raw):
    """Malformed request line or header -> 400."""
    with server.connect() as c:
        c.send(raw)
        r = c.read_response()
    assert_error(r, 400)


def test_http11_without_host_is_400(server):
    """HTTP/1.1 request without Host -> 400."""
    assert_error(server.request("GET", "/", host=None), 400)


def test_http10_without_host_is_fine(server):
    """HTTP/1.0 request without Host is served (Host is only required in 1.1)."""
    assert server.request("GET", "/", host=None, version="HTTP/1.0").status == 200


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/9.9"])
def test_unsupported_version_is_505(server, version):
    """HTTP/2.0 or HTTP/9.9 -> 505."""
    assert_error(server.request("GET", "/", version=version), 505)


# ---------------------------------------------------------------- connections

def test_http11_keep_alive_by_default(server):
    """HTTP/1.1: the connection stays open for several requests."""
    with server.connect() as c:
        for _ in range(5):
            r = c.request("GET", "/")
            assert r.status == 200
            assert "close" not in r.connection_tokens()


def test_connection_close_is_honoured(server):
    """Connection: close -> response says Connection: close, then server closes."""
    with server.connect() as c:
        r = c.request("GET", "/", headers={"Connection": "close"})
        assert r.status == 200
        assert "close" in r.connection_tokens()
        assert c.expect_eof(2.0) == "eof"


def test_http10_closes_after_response(server):
    """HTTP/1.0 without keep-alive: server closes after the response."""
    with server.connect() as c:
        r = c.request("GET", "/", version="HTTP/1.0")
        assert r.status == 200
        assert c.expect_eof(2.0) == "eof"


def test_http10_keep_alive(server):
    """HTTP/1.0 + Connection: keep-alive -> response says keep-alive, conn reusable."""
    with server.connect() as c:
        for _ in range(3):
            r = c.request("GET", "/", version="HTTP/1.0",
                          headers={"Connection": "keep-alive"})
            assert r.status == 200
            assert "keep-alive" in r.connection_tokens()


@pytest.mark.parametrize("method, target, status", [("PUT", "/nope", 404), ("PUT", "/", 405)])
def test_error_before_an_unread_body_closes_so_the_body_is_never_a_request(server, method,
                                                                          target, status):
    """A 404 or 405 answered before the request's body was read: the body is
    left unread, so the connection must close (Connection: close, then EOF).
    Kept open, a body that looks like a request would be served as one
    (request smuggling)."""
    smuggled = build_request("GET", "/sleep?ms=7")
    with server.connect() as c:
        c.send(build_request(method, target, body=smuggled))
        r = c.read_response()
        assert r.status == status
        assert "close" in r.connection_tokens()
        assert c.expect_eof(2.0) == "eof"     # fails on the smuggled 200


def test_http10_keep_alive_and_close_together_closes(server):
    """HTTP/1.0 with Connection: keep-alive, close -> close wins (RFC 9112
    9.3): the response says close and the server closes after it."""
    with server.connect() as c:
        r = c.request("GET", "/", version="HTTP/1.0",
                      headers={"Connection": "keep-alive, close"})
        assert r.status == 200
        assert "keep-alive" not in r.connection_tokens()
        assert c.expect_eof(2.0) == "eof"


@pytest.mark.parametrize("target", ["/nope", "/files/missing"])
def test_head_error_has_no_body_and_pipelining_stays_in_step(server, target):
    """HEAD that gets an error: the same head as GET, no body (RFC 9110
    9.3.2), so the next pipelined response starts right after that head."""
    with server.connect() as c:
        c.send(build_request("HEAD", target) + build_request("GET", "/"))
        r = c.read_response("HEAD")
        assert r.status >= 400 and int(r.header("content-length")) > 0
        nxt = c.read_response("GET")    # fails on a body's bytes as a status line
        assert nxt.status == 200 and nxt.body.startswith(b"graceful")


def test_pipelined_requests_answered_in_order(server):
    """Several requests in one write are answered in order."""
    batch = (build_request("GET", "/sleep?ms=100")
             + build_request("GET", "/nope")
             + build_request("PUT", "/files/pipe", body=b"pipelined body")
             + build_request("GET", "/files/pipe")
             + build_request("HEAD", "/")
             + build_request("GET", "/"))
    with server.connect() as c:
        c.send(batch)
        rs = [c.read_response(m) for m in ("GET", "GET", "PUT", "GET", "HEAD", "GET")]
    assert [r.status for r in rs] == [200, 404, 201, 200, 200, 200]
    assert rs[3].body == b"pipelined body"
    assert rs[4].body == b""


def test_max_conns_rejects_with_503(start_server):
    """At --max-conns N open connections, the next client gets 503 + Retry-After + close."""
    srv = start_server("--max-conns", "2")
    a = srv.connect()
    b = srv.connect()
    assert a.request("GET", "/").status == 200
    assert b.request("GET", "/").status == 200
    srv.wait_threads(3)
    with srv.connect() as c:
        r = c.read_response()
        assert_error(r, 503)
        assert r.header("retry-after") is not None
        assert "close" in r.connection_tokens()
        assert c.expect_eof(2.0) == "eof"
    # the two admitted connections are unaffected
    assert a.request("GET", "/").status == 200
    # once one leaves, a new client is admitted again
    b.close()

    def admitted():
        with srv.connect() as d:
            d.send_request("GET", "/", headers={"Connection": "close"})
            return d.read_response().status == 200
    assert wait_until(admitted, 5, interval=0.02)
    a.close()
    srv.wait_threads(1)


def test_max_conns_503_reaches_a_real_client(start_server):
    """curl hitting a full server sees the 503 (the rejection is not lost to a reset)."""
    srv = start_server("--max-conns", "1")
    a = srv.connect()
    assert a.request("GET", "/").status == 200
    srv.wait_threads(2)
    codes = []
    for _ in range(5):
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--max-time", "5", f"http://{HOST}:{srv.port}/"],
                           capture_output=True, text=True, timeout=10)
        codes.append(p.stdout)
    a.close()
    assert codes == ["503"] * 5
