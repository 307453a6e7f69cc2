"""Hostile input: malformed, oversized, ambiguous or path-escaping requests.

Every case checks the whole contract, not just the status: the answer is a
short error with Connection: close, the server then closes (the client reads
EOF), nothing changes in the data directory or its parent, and the very next
client, on a new connection, is served normally.
"""

import os

import pytest

from conftest import build_request, check_hostile, real_names

HEAD_ONLY = b"Host: x\r\n\r\n"


# ---------------------------------------------------------------- garbage

@pytest.mark.parametrize("first", [b"\xff", b"\x00", b"\x01", b"{"],
                         ids=["0xff", "nul", "ctl", "brace"])
def test_binary_garbage_is_400(server, first):
    """Random binary bytes (starting with a non-token byte) -> 400 + close."""
    check_hostile(server, first + os.urandom(4095), 400)


@pytest.mark.parametrize("raw", [
    b"G\x00T / HTTP/1.1\r\n" + HEAD_ONLY,
    b"GET /a\x00b HTTP/1.1\r\n" + HEAD_ONLY,
    b"GET / HTTP/1.\x001\r\n" + HEAD_ONLY,
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-\x00A: b\r\nHost: x\r\n\r\n",
], ids=["method", "target", "version", "header-value", "host-value", "header-name"])
def test_nul_byte_is_400(server, raw):
    """A NUL byte in the request line or in a header -> 400 + close."""
    check_hostile(server, raw, 400)


# ---------------------------------------------------------------- request line

@pytest.mark.parametrize("raw,status", [
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\n" + HEAD_ONLY, 505),
    (b"GET / HTTP/2.0\r\n" + HEAD_ONLY, 505),
    (b"GET / HTTP/1.1x\r\n" + HEAD_ONLY, 400),
    (b"GET / HTTP/1.1 \r\n" + HEAD_ONLY, 400),
    (b"GET / http/1.1\r\n" + HEAD_ONLY, 400),
    (b"GET  / HTTP/1.1\r\n" + HEAD_ONLY, 400),
], ids=["no-version", "9.9", "2.0", "1.1x", "trailing-space", "lower-case",
        "double-space"])
def test_bad_request_line(server, raw, status):
    """Request line without version -> 400; HTTP/9.9, HTTP/2.0 -> 505; junk after HTTP/1.1 -> 400."""
    check_hostile(server, raw, status)


@pytest.mark.parametrize("raw,status", [
    (b"G(T / HTTP/1.1\r\n" + HEAD_ONLY, 400),
    (b"GE T / HTTP/1.1\r\n" + HEAD_ONLY, 400),
    (b"G\xc3\xa9T / HTTP/1.1\r\n" + HEAD_ONLY, 400),
    (b"FROB / HTTP/1.1\r\n" + HEAD_ONLY, 501),
], ids=["paren", "space", "non-ascii", "FROB"])
def test_bad_method(server, raw, status):
    """Method with odd characters (G(T, GE T) -> 400; unknown well-formed token FROB -> 501."""
    check_hostile(server, raw, status)


# ---------------------------------------------------------------- header syntax

@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tfolded\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\n",
], ids=["no-colon", "space-before-colon", "tab-before-colon", "obs-fold-space",
        "obs-fold-tab", "leading-space-first-header", "bare-lf", "bare-lf-header",
        "bare-lf-end"])
def test_bad_header_syntax_is_400(server, raw):
    """Header without colon, whitespace before colon, obs-fold, bare LF -> 400 + close."""
    check_hostile(server, raw, 400)


# ---------------------------------------------------------------- sizes

def test_huge_request_target_is_414(server):
    """A 100 KB request target -> 414 (answered even though the client is still sending)."""
    raw = b"GET /" + b"a" * (100 * 1024) + b" HTTP/1.1\r\n" + HEAD_ONLY
    check_hostile(server, raw, 414)


def test_huge_header_line_is_431(server):
    """A 100 KB header line -> 431."""
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (100 * 1024) + b"\r\n\r\n"
    check_hostile(server, raw, 431)


def test_many_header_lines_is_431(server):
    """5000 short header lines -> 431."""
    raw = (b"GET / HTTP/1.1\r\nHost: x\r\n"
           + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
    check_hostile(server, raw, 431)


# ---------------------------------------------------------------- framing

@pytest.mark.parametrize("values", [
    ["-1"], ["abc"], ["99999999999999999999999"], ["18446744073709551616"],
    ["+5"], ["5 5"], ["0x10"], [""], ["5", "6"], ["5, 5"],
], ids=["negative", "abc", "overflow", "2^64", "plus", "inner-space", "hex",
        "empty", "two-different", "list"])
def test_bad_content_length_is_400(server, values):
    """Content-Length -1, abc, 64-bit overflow, two different values ... -> 400 + close."""
    hdrs = [("Content-Length", v) for v in values]
    raw = build_request("PUT", "/files/cl", headers=hdrs) + b"hello"
    check_hostile(server, raw, 400)


def test_duplicate_identical_content_length_is_accepted(server):
    """Two identical Content-Length headers are accepted: the PUT stores the body (201)."""
    raw = build_request("PUT", "/files/dup", headers=[("Content-Length", "5"),
                                                      ("Content-Length", "5")]) + b"hello"
    with server.connect() as c:
        c.send(raw)
        r = c.read_response("PUT")
        assert r.status == 201
        assert c.request("GET", "/files/dup").body == b"hello"
    assert real_names(server.data_dir) == ["dup"]


@pytest.mark.parametrize("method,target", [("PUT", "/files/te"), ("GET", "/")],
                         ids=["put", "get"])
def test_transfer_encoding_with_content_length_is_400(server, method, target):
    """Transfer-Encoding: chunked together with Content-Length -> 400 + close (test_chunked.py has the rest)."""
    raw = (build_request(method, target,
                         headers=[("Transfer-Encoding", "chunked"), ("Content-Length", "5")])
           + b"5\r\nhello\r\n0\r\n\r\n")
    check_hostile(server, raw, 400)


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
], ids=["missing", "two-different", "two-same"])
def test_bad_host_is_400(server, raw):
    """HTTP/1.1 without Host, or with two Host headers -> 400 + close."""
    check_hostile(server, raw, 400)


@pytest.mark.parametrize("method,target", [("GET", "/"), ("PUT", "/files/ex")])
def test_unknown_expectation_is_417(server, method, target):
    """Expect: something-else -> 417 + close (nothing stored)."""
    body = b"hello" if method == "PUT" else None
    raw = build_request(method, target, headers={"Expect": "something-else"}, body=body)
    check_hostile(server, raw, 417)


@pytest.mark.parametrize("target", [
    "/sleep?ms=-1", "/sleep?ms=abc", "/sleep?ms=99999999999999999999",
    "/sleep?ms=60001", "/sleep", "/sleep?", "/sleep?ms=", "/sleep?ms=1&ms=2",
])
def test_bad_sleep_is_400(server, target):
    """/sleep with ms negative, non-numeric, overflowing, > 60000 or missing -> 400 + close."""
    check_hostile(server, build_request("GET", target), 400)


# ---------------------------------------------------------------- file names

ESCAPING_NAMES = [
    b"..", b"../x", b"%2e%2e", b"%2e%2e%2fx", b"a%2Fb", b"a/b", b".hidden",
    b".", b"..%2f..%2fx", b"x" * 129, b"a\x00b", b"..\x00", b"a\\b", b"%00",
]
NAME_IDS = ["dotdot", "dotdot-x", "pct-dotdot", "pct-dotdot-slash-x", "pct-slash",
            "slash", "hidden", "dot", "pct-up-up", "129-chars", "nul", "dotdot-nul",
            "backslash", "pct-nul"]


@pytest.mark.parametrize("name", ESCAPING_NAMES, ids=NAME_IDS)
@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_escaping_file_name_is_400(server, method, name):
    """Upload names that could leave the data dir (.., %2e%2e, a/b, .hidden, 129 chars, NUL) -> 400, nothing created."""
    body = b"evil" if method == "PUT" else b""
    head = f"{method} /files/".encode() + name + b" HTTP/1.1\r\nHost: x\r\n"
    if method == "PUT":
        head += b"Content-Length: 4\r\n"
    check_hostile(server, head + b"\r\n" + body, 400)
    assert real_names(server.data_dir) == []
    assert sorted(os.listdir(server.data_dir.parent)) == ["data"]


def test_128_char_name_is_accepted(server):
    """A 128-character name is the longest accepted (PUT 201, GET returns it)."""
    name = "n" * 128
    with server.connect() as c:
        assert c.request("PUT", f"/files/{name}", body=b"long").status == 201
        assert c.request("GET", f"/files/{name}").body == b"long"
    assert real_names(server.data_dir) == [name]


# ---------------------------------------------------------------- --max-body

@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_declared_body_over_max_body_is_413_before_body(start_server, expect):
    """Content-Length > --max-body -> 413 before any body byte is sent, no 100 Continue, close."""
    srv = start_server("--max-body", "1000")
    hdrs = [("Content-Length", "1001")]
    if expect:
        hdrs.append(("Expect", "100-continue"))
    # Only the head goes out: the 413 must arrive without the body.
    r = check_hostile(srv, build_request("PUT", "/files/big", headers=hdrs), 413)
    assert r.interim == [], "a 100 Continue was sent before the 413"
    assert real_names(srv.data_dir) == []


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_body_of_exactly_max_body_is_accepted(start_server, expect):
    """Content-Length exactly --max-body is accepted (201), with or without Expect: 100-continue."""
    srv = start_server("--max-body", "1000")
    body = os.urandom(1000)
    hdrs = [("Content-Length", "1000")]
    with srv.connect() as c:
        if expect:
            hdrs.append(("Expect", "100-continue"))
            c.send(build_request("PUT", "/files/fits", headers=hdrs))
            assert c.read_head(timeout=5).status == 100
            c.send(body)
        else:
            c.send(build_request("PUT", "/files/fits", headers=hdrs) + body)
        assert c.read_response("PUT").status == 201
    assert (srv.data_dir / "fits").read_bytes() == body
