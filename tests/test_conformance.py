"""HTTP/1.1 conformance beyond bodies: Host validation (RFC 9112 3.2, RFC
9110 7.2), OPTIONS, fragments and over-long methods in the request line.

Test ids follow Http11Probe's where one matches."""

import os

import pytest

from conftest import assert_error, build_request
from test_hostile import check_hostile


# ---------------------------------------------------------------- Host

@pytest.mark.parametrize("host", [
    "127.0.0.1:8080/path", "a, b", "a,b", "user@h", "", "h:", "h:abc", "h:123456",
    "[::1", "[]", "a b", "h?x", "h/", "h:80:80", "[::1]x", "h\\x",
], ids=["COMP-HOST-WITH-PATH", "SMUG-MULTIPLE-HOST-COMMA", "comma-no-space",
        "COMP-HOST-WITH-USERINFO", "COMP-HOST-EMPTY-VALUE", "empty-port", "port-letters",
        "port-6-digits", "ipv6-unclosed", "ipv6-empty", "inner-space", "query", "slash",
        "two-ports", "junk-after-ipv6", "backslash"])
def test_bad_host_value_is_400(server, host):
    """Host must be uri-host[:port]: a path, a list, userinfo, an empty value or a bad port -> 400 + close."""
    check_hostile(server, build_request("GET", "/", host=host), 400)


@pytest.mark.parametrize("host", [
    "localhost", "127.0.0.1", "127.0.0.1:7878", "[::1]", "[::1]:80",
    "example.com", "xn--bcher-kva.example", "a_b.c-d~e", "h%41", "h:0",
])
def test_good_host_value_is_served(server, host):
    """reg-name, IPv4 and bracketed IPv6, with or without a port of 1-5 digits -> served."""
    with server.connect() as c:
        r = c.request("GET", "/", host=host)
        assert r.status == 200
        assert "close" not in r.connection_tokens()
        assert c.request("GET", "/").status == 200


# ---------------------------------------------------------------- OPTIONS

def allow_set(r):
    return {t.strip() for t in (r.header("allow") or "").split(",") if t.strip()}


@pytest.mark.parametrize("target,allow", [
    ("*", {"GET", "HEAD", "POST", "PUT", "OPTIONS"}),
    ("/", {"GET", "HEAD", "POST", "OPTIONS"}),
    ("/sleep?ms=5", {"GET", "HEAD", "OPTIONS"}),
    ("/files/x", {"GET", "HEAD", "PUT", "OPTIONS"}),
], ids=["COMP-OPTIONS-STAR", "root", "sleep", "file"])
def test_options_is_204_with_allow(server, target, allow):
    """OPTIONS * and OPTIONS /path -> 204 with the route's Allow, no Content-Length, no body; the connection stays."""
    with server.connect() as c:
        c.send(build_request("OPTIONS", target) + build_request("GET", "/"))
        r = c.read_response("OPTIONS")
        after = c.read_response("GET")
    assert r.status == 204
    assert allow_set(r) == allow
    assert r.header("content-length") is None
    assert "close" not in r.connection_tokens()
    # The GET's response follows at once: the 204 carried no body.
    assert after.status == 200


def test_options_unknown_path_is_404(server):
    """OPTIONS on a path that does not exist -> 404."""
    assert_error(server.request("OPTIONS", "/nope"), 404)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST"])
def test_asterisk_target_other_than_options_is_400(server, method):
    """The asterisk-form target is for OPTIONS only: GET * -> 400."""
    body = b"" if method in ("PUT", "POST") else None
    r = server.request(method, "*", body=body)
    assert r.status == 400


# ---------------------------------------------------------------- request line

@pytest.mark.parametrize("target", ["/#frag", "/files/x#y", "/?a=1#b", "#", "/sleep?ms=1#"],
                         ids=["root", "file", "query", "only", "empty-fragment"])
def test_fragment_in_target_is_400(server, target):
    """A #fragment in the request target -> 400 + close (RFC 9112 3.2: no fragment in origin-form)."""
    check_hostile(server, build_request("GET", target), 400)


@pytest.mark.parametrize("length", [33, 100, 9000, 20000])
def test_over_long_method_is_501_not_414(server, length):
    """A method token longer than 32 bytes -> 501 (a method we do not implement), never 414, however long."""
    raw = b"M" * length + b" / HTTP/1.1\r\nHost: x\r\n\r\n"
    check_hostile(server, raw, 501)


def test_32_byte_unknown_method_is_501(server):
    """The longest accepted method token, unknown -> 501 as for FROB; a long target is still 414."""
    check_hostile(server, b"M" * 32 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", 501)
    check_hostile(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)


# ---------------------------------------------------------------- POST /

@pytest.mark.parametrize("framing", ["content-length", "chunked", "none", "zero"])
def test_post_root_reads_and_discards_its_body(server, framing):
    """COMP-POST-CL-BODY, -CL-ZERO, -NO-CL-NO-TE, COMP-CHUNKED-BODY: POST / reads its body (either framing), discards it, answers 200, and the connection stays in step."""
    body = b"hello" * 1000
    if framing == "content-length":
        raw = build_request("POST", "/", body=body)
    elif framing == "chunked":
        raw = build_request("POST", "/", headers=[("Transfer-Encoding", "chunked")]) \
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    elif framing == "zero":
        raw = build_request("POST", "/", headers=[("Content-Length", "0")])
    else:
        raw = build_request("POST", "/")
    with server.connect() as c:
        c.send(raw + build_request("GET", "/files/none"))
        r = c.read_response("POST")
        assert r.status == 200 and "close" not in r.connection_tokens()
        # The body was consumed exactly: the next request is the GET.
        assert c.read_response("GET").status == 404
    assert os.listdir(server.data_dir) == []


def test_post_root_over_max_body_is_413(start_server):
    """POST / with Content-Length over --max-body -> 413 + close, before the body."""
    srv = start_server("--max-body", "100")
    check_hostile(srv, build_request("POST", "/", headers=[("Content-Length", "101")]), 413)


# ---------------------------------------------------------------- absolute-form

@pytest.mark.parametrize("target,status", [
    ("http://example.com/", 200), ("HTTP://example.com/", 200),
    ("https://example.com/", 200), ("HTTPS://example.com/", 200),
    ("HTTPZ://example.com/", 400), ("H-TTP://example.com/", 400),
    ("https://example.com", 400),
])
def test_absolute_form_targets(server, target, status):
    """h1spec: absolute-form with http or https, any case -> served by path; another scheme, or no path -> 400."""
    r = server.request("GET", target, host="example.com")
    assert r.status == status


@pytest.mark.parametrize("version,interim", [("HTTP/1.1", [100]), ("HTTP/1.0", [])],
                         ids=["1.1", "COMP-NO-1XX-HTTP10"])
def test_post_root_expect_100_continue(server, version, interim):
    """POST / with Expect: 100-continue: HTTP/1.1 gets 100 before it sends the body, then 200; HTTP/1.0 never gets a 1xx."""
    with server.connect() as c:
        c.send(build_request("POST", "/", version=version,
                             headers={"Expect": "100-continue", "Content-Length": "5"}))
        if interim:
            assert c.read_head(timeout=5).status == 100
        c.send(b"hello")
        r = c.read_response("POST")
    assert r.status == 200
    assert [i.status for i in r.interim] == []
