"""Validators, conditional and range GETs on /files/NAME (RFC 9110 8.8,
13, 14): ETag and Last-Modified, If-None-Match and If-Modified-Since -> 304,
a single Range -> 206 or 416, If-Range; and what they are for: `curl -C -`
resuming a download cut by the grace deadline, `curl -z`."""

import calendar
import email.utils
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import HOST, assert_error, build_request, wait_until

DATA = bytes(range(256)) * 40          # 10240 bytes


def put(srv, name, body):
    with srv.connect() as c:
        r = c.request("PUT", f"/files/{name}", body=body)
    assert r.status in (200, 201)


def get(srv, name="f", headers=None, method="GET"):
    with srv.connect() as c:
        return c.request(method, f"/files/{name}", headers=headers or {})


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


@pytest.fixture
def filed(server):
    put(server, "f", DATA)
    return server


# ---------------------------------------------------------------- validators

@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_file_has_strong_etag_and_last_modified(filed, method):
    """GET/HEAD /files/NAME carry a strong quoted ETag, Last-Modified (the file's mtime) and Accept-Ranges: bytes."""
    r = get(filed, method=method)
    assert r.status == 200
    assert re.fullmatch(r'"[^"W]+"', r.header("etag")), r.header("etag")
    mtime = os.stat(filed.data_dir / "f").st_mtime
    lm = email.utils.parsedate_to_datetime(r.header("last-modified")).timestamp()
    assert lm == int(mtime)
    assert r.header("accept-ranges") == "bytes"


def test_etag_changes_when_the_file_is_replaced(filed):
    """Every upload makes a new ETag, even with the same length."""
    before = get(filed).header("etag")
    put(filed, "f", bytes(reversed(DATA)))
    after = get(filed).header("etag")
    assert before != after
    assert get(filed, headers={"If-None-Match": before}).status == 200


# ---------------------------------------------------------------- 304

@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_current_etag_is_304(filed, method):
    """If-None-Match with the current ETag -> 304 with ETag and Last-Modified, no body, no Content-Length; the connection stays."""
    etag = get(filed).header("etag")
    with filed.connect() as c:
        c.send(build_request(method, "/files/f", headers={"If-None-Match": etag})
               + build_request("GET", "/"))
        r = c.read_response(method)
        after = c.read_response("GET")
    assert r.status == 304
    assert r.header("etag") == etag and r.header("last-modified")
    assert r.header("content-length") is None
    assert after.status == 200           # nothing followed the 304's head


@pytest.mark.parametrize("value,status", [
    ("*", 304),
    ("W/{etag}", 304),
    ('"other", {etag}', 304),
    ('"other"', 200),
    ("{bare}", 200),
    ('"other", W/"x"', 200),
], ids=["COMP-INM-WILDCARD", "COMP-ETAG-WEAK", "in-list", "other", "COMP-INM-UNQUOTED",
        "no-match-list"])
def test_if_none_match_forms(filed, value, status):
    """If-None-Match: * and a (weakly compared) list containing our tag -> 304; other tags, or our tag unquoted -> 200."""
    etag = get(filed).header("etag")
    r = get(filed, headers={"If-None-Match": value.format(etag=etag, bare=etag.strip('"'))})
    assert r.status == status
    if status == 200:
        assert r.body == DATA


def test_if_modified_since(filed):
    """If-Modified-Since at or after Last-Modified -> 304; before it, invalid, or in the future -> 200 (COMP-IMS-INVALID, COMP-IMS-FUTURE)."""
    lm = get(filed).header("last-modified")
    t = email.utils.parsedate_to_datetime(lm).timestamp()
    assert get(filed, headers={"If-Modified-Since": lm}).status == 304
    assert get(filed, headers={"If-Modified-Since": http_date(t - 1)}).status == 200
    assert get(filed, headers={"If-Modified-Since": "yesterday"}).status == 200
    assert get(filed, headers={"If-Modified-Since": http_date(time.time() + 3600)}).status == 200


def test_if_none_match_takes_precedence_over_if_modified_since(filed):
    """COMP-INM-PRECEDENCE: a non-matching If-None-Match -> 200 even when If-Modified-Since alone would give 304."""
    lm = get(filed).header("last-modified")
    r = get(filed, headers={"If-None-Match": '"other"', "If-Modified-Since": lm})
    assert r.status == 200 and r.body == DATA


# ---------------------------------------------------------------- ranges

@pytest.mark.parametrize("spec,first,last", [
    ("bytes=0-0", 0, 0),
    ("bytes=100-199", 100, 199),
    ("bytes=10000-", 10000, 10239),
    ("bytes=-10", 10230, 10239),
    ("bytes=-999999", 0, 10239),
    ("bytes=10200-99999", 10200, 10239),
    ("BYTES=5-6", 5, 6),
])
def test_single_range_is_206(filed, spec, first, last):
    """Range a-b, a- and -n -> 206 with Content-Range and exactly those bytes; the connection stays."""
    with filed.connect() as c:
        r = c.request("GET", "/files/f", headers={"Range": spec})
        assert r.status == 206
        assert r.header("content-range") == f"bytes {first}-{last}/{len(DATA)}"
        assert r.body == DATA[first:last + 1]
        assert c.request("GET", "/").status == 200


@pytest.mark.parametrize("spec", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
def test_unsatisfiable_range_is_416(filed, spec):
    """A range starting at or past the end, or an empty suffix -> 416 with Content-Range: bytes */size."""
    r = get(filed, headers={"Range": spec})
    assert_error(r, 416)
    assert r.header("content-range") == f"bytes */{len(DATA)}"


def test_416_keeps_the_connection_open(filed):
    """A 416 is an answer like any other: the keep-alive connection stays
    open, and requests pipelined behind it are served."""
    with filed.connect() as c:
        c.send(build_request("GET", "/files/f", headers={"Range": "bytes=99999-"})
               + build_request("GET", "/"))
        r = c.read_response()
        assert_error(r, 416)
        assert "close" not in r.connection_tokens()
        assert c.read_response().status == 200
        assert c.request("GET", "/files/f").status == 200    # still open


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=a-b",
                                  "bytes=", "bytes=1-2-3", "bytes= 1-2"],
                         ids=["multi", "reversed", "unit", "letters", "empty", "junk", "space"])
def test_range_we_do_not_serve_is_ignored(filed, spec):
    """Several ranges, another unit or bad syntax: Range is ignored (RFC 9110 14.2) -> 200, whole file."""
    r = get(filed, headers={"Range": spec})
    assert r.status == 200 and r.body == DATA


def test_range_on_head_is_ignored(filed):
    """Range is defined for GET only: HEAD with Range -> 200 with the full length."""
    r = get(filed, headers={"Range": "bytes=0-9"}, method="HEAD")
    assert r.status == 200 and int(r.header("content-length")) == len(DATA)


def test_if_range(filed):
    """If-Range with the current ETag or Last-Modified -> 206; with an old tag, a weak tag or another date -> 200, whole file."""
    r0 = get(filed)
    etag, lm = r0.header("etag"), r0.header("last-modified")
    t = email.utils.parsedate_to_datetime(lm).timestamp()
    rng = {"Range": "bytes=0-9"}
    assert get(filed, headers={**rng, "If-Range": etag}).status == 206
    assert get(filed, headers={**rng, "If-Range": lm}).status == 206
    for other in ['"old"', "W/" + etag, http_date(t - 1)]:
        r = get(filed, headers={**rng, "If-Range": other})
        assert r.status == 200 and r.body == DATA, other


# ---------------------------------------------------------------- curl

def curl(*args, timeout=30):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args],
                          capture_output=True, timeout=timeout + 10)


@pytest.mark.slow(2)
def test_curl_C_dash_resumes_a_download_cut_by_the_grace_deadline(start_server, tmp_path):
    """A slow download cut by --grace (server exit 1, curl exit 18) resumes after the restart with `curl -C -`: 206 and the exact file."""
    data_dir = tmp_path / "data"
    srv = start_server("--grace", "0.5", data_dir=data_dir)
    # Loopback socket buffers hold over 10 MB, which the server sends at
    # once: the file is big enough that far more is left when grace ends,
    # and the rate high enough that curl reads the buffered part quickly.
    src = os.urandom(48 << 20)
    put(srv, "big.bin", src)
    out = tmp_path / "out.bin"
    slow = subprocess.Popen(["curl", "-sS", "--limit-rate", "8M", "-o", str(out),
                             f"http://{HOST}:{srv.port}/files/big.bin"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: out.exists() and out.stat().st_size > 0, 10)
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(10) == 1
        assert slow.wait(10) == 18      # CURLE_PARTIAL_FILE
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    partial = out.stat().st_size
    assert 0 < partial < len(src)

    again = start_server("--grace", "0.5", data_dir=data_dir)
    p = curl("-C", "-", "-o", str(out), "-w", "%{http_code}",
             f"http://{HOST}:{again.port}/files/big.bin")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"206"
    assert out.read_bytes() == src


def test_curl_z_downloads_only_when_newer(filed, tmp_path):
    """`curl -z FILE` sends If-Modified-Since: 304 (nothing written) when the copy is as new, 200 when it is older."""
    url = f"http://{HOST}:{filed.port}/files/f"
    mtime = os.stat(filed.data_dir / "f").st_mtime
    copy = tmp_path / "copy"
    copy.write_bytes(b"stale")
    os.utime(copy, (mtime, mtime))
    p = curl("-z", str(copy), "-o", str(tmp_path / "new"), "-w", "%{http_code}", url)
    assert p.returncode == 0 and p.stdout == b"304", p.stderr
    assert not (tmp_path / "new").exists() or (tmp_path / "new").read_bytes() == b""
    os.utime(copy, (mtime - 100, mtime - 100))
    p = curl("-z", str(copy), "-o", str(tmp_path / "new"), "-w", "%{http_code}", url)
    assert p.returncode == 0 and p.stdout == b"200", p.stderr
    assert (tmp_path / "new").read_bytes() == DATA


def obsolete_dates(t):
    """t in the two obsolete HTTP-date formats (RFC 9110 5.6.7)."""
    g = time.gmtime(t)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    days = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
    rfc850 = (f"{days[g.tm_wday]}, {g.tm_mday:02d}-{months[g.tm_mon - 1]}-{g.tm_year % 100:02d} "
              f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT")
    asctime = (f"{days[g.tm_wday][:3]} {months[g.tm_mon - 1]} {g.tm_mday:2d} "
               f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} {g.tm_year}")
    return {"rfc850": rfc850, "asctime": asctime}


@pytest.mark.parametrize("form", ["rfc850", "asctime"])
def test_if_modified_since_obsolete_date_formats(filed, form):
    """RFC 9110 5.6.7: the RFC 850 and asctime date formats are accepted too: at Last-Modified -> 304, a second before -> 200."""
    lm = get(filed).header("last-modified")
    t = email.utils.parsedate_to_datetime(lm).timestamp()
    assert get(filed, headers={"If-Modified-Since": obsolete_dates(t)[form]}).status == 304
    assert get(filed, headers={"If-Modified-Since": obsolete_dates(t - 1)[form]}).status == 200


def test_obsolete_dates_single_digit_day_and_two_digit_year(filed):
    """asctime pads a one-digit day with a space ("Mar  5"), RFC 850 has a two-digit year ("24" is 2024, "77" is 1977): both parsed, so a file last modified then -> 304."""
    t0 = calendar.timegm((2024, 3, 5, 12, 0, 0))
    os.utime(filed.data_dir / "f", (t0, t0))
    assert get(filed).header("last-modified") == "Tue, 05 Mar 2024 12:00:00 GMT"
    for ims in ["Tue Mar  5 12:00:00 2024", "Tuesday, 05-Mar-24 12:00:00 GMT"]:
        assert get(filed, headers={"If-Modified-Since": ims}).status == 304, ims
    for ims in ["Mon Mar  4 12:00:00 2024", "Monday, 04-Mar-24 12:00:00 GMT"]:
        assert get(filed, headers={"If-Modified-Since": ims}).status == 200, ims
    # A two-digit year more than 50 years ahead is in the past century:
    # "77" is 1977 (as 2077 it would be a future date, ignored: 200).
    t1 = calendar.timegm((1977, 3, 5, 12, 0, 0))
    os.utime(filed.data_dir / "f", (t1, t1))
    assert get(filed, headers={"If-Modified-Since": "Saturday, 05-Mar-77 12:00:00 GMT"}).status == 304
