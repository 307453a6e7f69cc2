/*
 * http/test.c - the unit test of http/: every rule of docs/protocol.md that
 * the socket-free code decides, one table row each, run in-process in a
 * fraction of a second (`make unit`; `make test` runs it before pytest).
 *
 * Table-driven, like picohttpparser's test.c: a row is an input and what it
 * must give.  Each input is copied to the very end of a mapped page, before
 * a page mapped with no access, so a read past the end is a crash, with or
 * without ASan (the mutation sweep builds without it).  Beyond each row's
 * verdict, two promises are checked on every row:
 *   - the head parser decides on bytes already seen: every prefix of an
 *     input gives PARTIAL, or the very error the whole input gives, and
 *     the input fed byte by byte, each parse resuming the last, gives what
 *     the whole input gives (the server parses as bytes arrive);
 *   - the chunk decoder is incremental: the input in one piece, byte by
 *     byte, and cut in two at every place gives the same verdict, status,
 *     decoded bytes and end.
 *
 * Prints a line per failure and, last, "N passed, M failed"; exits 1 if
 * any check failed.
 */
#define _DEFAULT_SOURCE /* st_mtim, MAP_ANONYMOUS */

#include "chunked.h"
#include "conditional.h"
#include "date.h"
#include "parse.h"
#include "response.h"
#include "route.h"
#include "text.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

static bool check(bool ok, int line, const char *what, const char *detail)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL http/test.c:%d: %s%s%s\n", line, what, detail[0] ? ": " : "", detail);
    }
    return ok;
}

#define CHECK(ok, what) check((ok), __LINE__, (what), "")

/* The pages that hold n bytes, and the no-access page after them. */
static size_t pages_for(size_t n, size_t *page)
{
    *page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + *page - 1) / *page * *page;
}

/* A copy of s[0..n) that ends where a no-access page begins (see the top);
 * give it back with release(p, n). */
static char *exact_copy(const char *s, size_t n)
{
    size_t page, span = pages_for(n, &page);
    char *base = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);

    if (base == MAP_FAILED || mprotect(base + span, page, PROT_NONE) != 0) {
        perror("mmap");
        exit(2);
    }
    memcpy(base + span - n, s, n);
    return base + span - n;
}

static void release(char *p, size_t n)
{
    size_t page, span = pages_for(n, &page);

    munmap(p + n - span, span + page);
}

/* ------------------------------------------------------------------ */
/* The request-head parser                                            */
/* ------------------------------------------------------------------ */

#define H11 "GET / HTTP/1.1\r\nHost: a\r\n"     /* a 1.1 head, still open */
#define PUT11 "PUT /files/a HTTP/1.1\r\nHost: a\r\n"
#define DONE HTTP_PARSE_DONE, 0
#define PARTIAL HTTP_PARSE_PARTIAL, 0
#define ERROR(status) HTTP_PARSE_ERROR, status

struct parse_case {
    const char *rule;           /* the rule, as docs/protocol.md words it */
    const char *input;
    enum http_parse_result result;
    int status;                 /* for HTTP_PARSE_ERROR */
};

static const struct parse_case parse_cases[] = {
    /* Versions and methods. */
    { "HTTP/1.1 with Host", H11 "\r\n", DONE },
    { "HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", DONE },
    { "HTTP/1.2 is treated as 1.1", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", DONE },
    { "HTTP/2.0 is 505", "GET / HTTP/2.0\r\n\r\n", ERROR(505) },
    { "HTTP/0.9 is 505", "GET / HTTP/0.9\r\n\r\n", ERROR(505) },
    { "a version not HTTP/D.D is 400", "GET / HTTP/1.10\r\n\r\n", ERROR(400) },
    { "a lower-case version is 400", "GET / http/1.1\r\n\r\n", ERROR(400) },
    { "a registered method we do not route parses", "DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", DONE },
    { "an unknown method is 501", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    { "methods are case-sensitive (9110 9.1)", "get / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    { "a method over 32 bytes is 501 at once, never 414",
      "GETGETGETGETGETGETGETGETGETGETGET", ERROR(501) },
    { "a method of 32 bytes is only unknown", "GETGETGETGETGETGETGETGETGETGETGE / HTTP/1.1\r\n\r\n",
      ERROR(501) },
    { "a method of 32 bytes is still a method: the version is judged first",
      "GETGETGETGETGETGETGETGETGETGETGE / HTTP/2.0\r\n\r\n", ERROR(505) },
    /* Known methods are matched whole: one byte off is another, unknown, method. */
    { "GEX is not GET", "GEX / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    { "HEAX is not HEAD", "HEAX / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    { "PUX is not PUT", "PUX / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    { "OPTIONX is not OPTIONS", "OPTIONX / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    { "POSX is not POST", "POSX / HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(501) },
    /* request-line = method SP request-target SP HTTP-version (9112 3). */
    { "a request line of a method alone is 400", "GET\r\n\r\n", ERROR(400) },
    { "a request line without a version is 400", "GET /\r\n\r\n", ERROR(400) },
    { "a version cut short is 400", "GET / HTTP/1\r\n\r\n", ERROR(400) },
    { "a version of 7 bytes is 400", "GET / HTTP/1.\r\nHost: a\r\n\r\n", ERROR(400) },
    { "a version not starting HTTP/ is 400", "GET / XTTP/1.1\r\nHost: a\r\n\r\n", ERROR(400) },
    { "a NUL after the version is 400", "GET / HTTP/1.1\0\r\nHost: a\r\n\r\n", ERROR(400) },
    { "an empty method is 400", " / HTTP/1.1\r\n\r\n", ERROR(400) },
    { "two spaces after the method are 400", "GET  / HTTP/1.1\r\n\r\n", ERROR(400) },
    { "an empty line before the request line is ignored (9112 2.2)", "\r\n\r\n" H11 "\r\n", DONE },
    { "a target with a #fragment is 400 (9112 3.2)", "GET /#x HTTP/1.1\r\nHost: a\r\n\r\n",
      ERROR(400) },
    { "a control byte in the target is 400", "GET /\x01 HTTP/1.1\r\n\r\n", ERROR(400) },
    { "DEL in the target is 400", "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", ERROR(400) },
    /* Lines. */
    { "a bare LF ending the request line is 400", "GET / HTTP/1.1\nHost: a\r\n\r\n", ERROR(400) },
    { "a bare LF ending a header line is 400", "GET / HTTP/1.1\r\nHost: a\n\r\n", ERROR(400) },
    { "a bare CR in a header value is 400", H11 "X: a\rb\r\n\r\n", ERROR(400) },
    { "a NUL in a header value is 400", H11 "X: a\0b\r\n\r\n", ERROR(400) },
    { "DEL in a header value is 400", H11 "X: a\x7f\r\n\r\n", ERROR(400) },
    { "obs-text in a header value is allowed", H11 "X: caf\xc3\xa9\r\n\r\n", DONE },
    { "obs-fold is 400 (9112 5.2)", H11 "X: a\r\n b\r\n\r\n", ERROR(400) },
    { "whitespace before the colon is 400", H11 "X : a\r\n\r\n", ERROR(400) },
    { "a header without a colon is 400", H11 "X\r\n\r\n", ERROR(400) },
    { "an empty header name is 400", H11 ": a\r\n\r\n", ERROR(400) },
    { "a line starting with a space is 400, even with a colon (9112 5.2)", H11 " X: a\r\n\r\n",
      ERROR(400) },
    /* field-name = token; tchar = ALPHA / DIGIT / "!#$%&'*+-.^_`|~" (9110 5.6.2). */
    { "a field name of every tchar, letters and digits at their ends",
      H11 "azAZ09!#$%&'*+-.^_`|~: a\r\n\r\n", DONE },
    /* Host. */
    { "HTTP/1.1 without Host is 400 (9112 3.2)", "GET / HTTP/1.1\r\n\r\n", ERROR(400) },
    { "Host twice is 400", H11 "Host: a\r\n\r\n", ERROR(400) },
    { "an empty Host is 400", "GET / HTTP/1.1\r\nHost:\r\n\r\n", ERROR(400) },
    { "Host with a path is 400", "GET / HTTP/1.1\r\nHost: h/path\r\n\r\n", ERROR(400) },
    { "Host with userinfo is 400", "GET / HTTP/1.1\r\nHost: user@h\r\n\r\n", ERROR(400) },
    { "Host as a list is 400", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", ERROR(400) },
    { "Host with a comma is 400", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", ERROR(400) },
    { "Host with an empty port is 400", "GET / HTTP/1.1\r\nHost: h:\r\n\r\n", ERROR(400) },
    { "Host with a 6-digit port is 400", "GET / HTTP/1.1\r\nHost: h:123456\r\n\r\n", ERROR(400) },
    { "Host with a port not digits is 400", "GET / HTTP/1.1\r\nHost: h:8a\r\n\r\n", ERROR(400) },
    { "Host with an unclosed IP literal is 400", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
      ERROR(400) },
    { "Host: name:port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", DONE },
    { "Host: IPv4", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", DONE },
    { "Host: IPv6 literal with port", "GET / HTTP/1.1\r\nHost: [::1]:7878\r\n\r\n", DONE },
    { "Host: a reg-name of letters and digits at their ends",
      "GET / HTTP/1.1\r\nHost: azAZ09.example\r\n\r\n", DONE },
    { "Host with a 5-digit port", "GET / HTTP/1.1\r\nHost: h:19999\r\n\r\n", DONE },
    { "Host starting with a byte no host has is 400", "GET / HTTP/1.1\r\nHost: /h\r\n\r\n",
      ERROR(400) },
    { "Host with an empty IP literal is 400", "GET / HTTP/1.1\r\nHost: []\r\n\r\n", ERROR(400) },
    { "Host with a bad byte first in the IP literal is 400",
      "GET / HTTP/1.1\r\nHost: [@::1]\r\n\r\n", ERROR(400) },
    /* Content-Length. */
    { "Content-Length: digits", PUT11 "Content-Length: 5\r\n\r\n", DONE },
    { "Content-Length with a sign is 400", PUT11 "Content-Length: +5\r\n\r\n", ERROR(400) },
    { "Content-Length negative is 400", PUT11 "Content-Length: -1\r\n\r\n", ERROR(400) },
    { "Content-Length in hex is 400", PUT11 "Content-Length: 0x5\r\n\r\n", ERROR(400) },
    { "an empty Content-Length is 400", PUT11 "Content-Length:\r\n\r\n", ERROR(400) },
    { "Content-Length as a list is 400", PUT11 "Content-Length: 5, 5\r\n\r\n", ERROR(400) },
    { "Content-Length overflowing is 400",
      PUT11 "Content-Length: 99999999999999999999\r\n\r\n", ERROR(400) },
    { "two different Content-Lengths are 400 (smuggling)",
      PUT11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", ERROR(400) },
    { "Content-Length 0, then another, is 400 (smuggling)",
      PUT11 "Content-Length: 0\r\nContent-Length: 5\r\n\r\n", ERROR(400) },
    { "the largest Content-Length, 2^63 - 1, parses",
      PUT11 "Content-Length: 9223372036854775807\r\n\r\n", DONE },
    { "Content-Length 2^63 overflows: 400", PUT11 "Content-Length: 9223372036854775808\r\n\r\n",
      ERROR(400) },
    { "the same Content-Length twice is one length",
      PUT11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", DONE },
    /* Transfer-Encoding. */
    { "Transfer-Encoding: chunked", PUT11 "Transfer-Encoding: chunked\r\n\r\n", DONE },
    { "Chunked: coding names are case-insensitive (9112 7)",
      PUT11 "Transfer-Encoding: Chunked\r\n\r\n", DONE },
    { "CHUNKED", PUT11 "Transfer-Encoding: CHUNKED\r\n\r\n", DONE },
    { "chunked with trailing space", PUT11 "Transfer-Encoding: chunked \r\n\r\n", DONE },
    { "chunked after a tab", PUT11 "Transfer-Encoding:\tchunked\r\n\r\n", DONE },
    { "Transfer-Encoding with Content-Length is 400 (9112 6.1)",
      PUT11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", ERROR(400) },
    { "Transfer-Encoding with Content-Length: 0 is 400 too",
      PUT11 "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", ERROR(400) },
    { "Content-Length with Transfer-Encoding is 400, either order",
      PUT11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ERROR(400) },
    { "Transfer-Encoding in HTTP/1.0 is 400 (9112 6.1)",
      "PUT /files/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ERROR(400) },
    { "chunked not last is 400 (9112 6.3)", PUT11 "Transfer-Encoding: chunked, gzip\r\n\r\n",
      ERROR(400) },
    { "identity is not chunked: 400", PUT11 "Transfer-Encoding: identity\r\n\r\n", ERROR(400) },
    { "xchunked is not chunked: 400", PUT11 "Transfer-Encoding: xchunked\r\n\r\n", ERROR(400) },
    { "chunked;a=b is not chunked: 400", PUT11 "Transfer-Encoding: chunked;a=b\r\n\r\n",
      ERROR(400) },
    { "gzip alone: chunked is not last, 400", PUT11 "Transfer-Encoding: gzip\r\n\r\n",
      ERROR(400) },
    { "chunked twice in one line is 400 (9112 6.1)",
      PUT11 "Transfer-Encoding: chunked, chunked\r\n\r\n", ERROR(400) },
    { "two Transfer-Encoding lines, even identical, are 400",
      PUT11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ERROR(400) },
    { "an empty Transfer-Encoding is 400", PUT11 "Transfer-Encoding:\r\n\r\n", ERROR(400) },
    { "a leading comma in Transfer-Encoding is 400", PUT11 "Transfer-Encoding: , chunked\r\n\r\n",
      ERROR(400) },
    { "a trailing comma in Transfer-Encoding is 400", PUT11 "Transfer-Encoding: chunked,\r\n\r\n",
      ERROR(400) },
    { "a double comma in Transfer-Encoding is 400",
      PUT11 "Transfer-Encoding: gzip,, chunked\r\n\r\n", ERROR(400) },
    { "a vertical tab in Transfer-Encoding is 400", PUT11 "Transfer-Encoding: \vchunked\r\n\r\n",
      ERROR(400) },
    { "a coding before chunked is 501 (9112 6.1)", PUT11 "Transfer-Encoding: gzip, chunked\r\n\r\n",
      ERROR(501) },
    { "whitespace before a comma is OWS (9110 5.6.1)",
      PUT11 "Transfer-Encoding: gzip ,chunked\r\n\r\n", ERROR(501) },
    /* Expect. */
    { "Expect: 100-continue", PUT11 "Expect: 100-continue\r\n\r\n", DONE },
    { "an unknown Expect is 417", PUT11 "Expect: something\r\n\r\n", ERROR(417) },
    /* Partial heads. */
    { "a head without its blank line is partial", H11, PARTIAL },
    { "a request line whose CR came without its LF is partial", "GET / HTTP/1.1\r", PARTIAL },
    { "garbage is rejected at its first bad byte", "GET /\x01", ERROR(400) },
};

/* Parse s[0..n) from a buffer of exactly n bytes. */
static enum http_parse_result parse(const char *s, size_t n, struct http_request *req, int *status)
{
    char *buf = exact_copy(s, n);
    *status = 0;
    enum http_parse_result r = http_parse_request(buf, n, req, status);
    /* The caller only looks at scalar fields after this: the pointers
     * into buf are checked in parse_fields below. */
    release(buf, n);
    return r;
}

static void test_parse_case(const struct parse_case *c, size_t n)
{
    struct http_request req;
    int status;
    char detail[96];

    enum http_parse_result r = parse(c->input, n, &req, &status);
    snprintf(detail, sizeof detail, "got %d/%d, want %d/%d", (int)r, status, (int)c->result,
             c->status);
    check(r == c->result && (r != HTTP_PARSE_ERROR || status == c->status), __LINE__, c->rule,
          detail);
    if (r == HTTP_PARSE_DONE)
        check(req.head_len == n, __LINE__, c->rule, "head_len is the whole input");
    /* Every prefix: PARTIAL, or already this very error. */
    bool prefixes_ok = true;
    for (size_t k = 0; k < n && prefixes_ok; k++) {
        enum http_parse_result p = parse(c->input, k, &req, &status);
        prefixes_ok = p == HTTP_PARSE_PARTIAL ||
                      (c->result == HTTP_PARSE_ERROR && p == HTTP_PARSE_ERROR &&
                       status == c->status);
        if (!prefixes_ok)
            snprintf(detail, sizeof detail, "a prefix of %zu bytes gave %d/%d", k, (int)p, status);
    }
    check(prefixes_ok, __LINE__, c->rule, prefixes_ok ? "" : detail);
    /* Byte by byte, resumed: the same outcome as whole (handler.c's
     * read_head resumes as bytes arrive). */
    char *buf = exact_copy(c->input, n);
    size_t last = 0;
    enum http_parse_result p = HTTP_PARSE_PARTIAL;
    for (size_t k = 1; k <= n && p == HTTP_PARSE_PARTIAL; k++) {
        p = http_parse_request_resume(buf, k, last, &req, &status);
        last = k;
    }
    snprintf(detail, sizeof detail, "resumed byte by byte: got %d/%d", (int)p, status);
    check(p == r && (p != HTTP_PARSE_ERROR || status == c->status) &&
          (p != HTTP_PARSE_DONE || req.head_len == n), __LINE__, c->rule, detail);
    release(buf, n);
}

/* A head of `fields` header lines "X-N: v", each of value_len bytes. */
static char *head_with_fields(int fields, size_t value_len, size_t *len)
{
    size_t cap = 64 + (size_t)fields * (value_len + 16);
    char *s = malloc(cap), *p = s;

    if (s == NULL)
        exit(2);
    p += sprintf(p, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < fields; i++) {
        p += sprintf(p, "X-%d: ", i);
        memset(p, 'v', value_len);
        p += value_len;
        p += sprintf(p, "\r\n");
    }
    p += sprintf(p, "\r\n");
    *len = (size_t)(p - s);
    return s;
}

/* A request line with a target of target_len bytes. */
static char *long_target(size_t target_len, size_t *len)
{
    char *s = malloc(target_len + 64), *p = s;

    if (s == NULL)
        exit(2);
    p += sprintf(p, "GET /");
    memset(p, 'a', target_len - 1);
    p += target_len - 1;
    p += sprintf(p, " HTTP/1.1\r\nHost: a\r\n\r\n");
    *len = (size_t)(p - s);
    return s;
}

/* Parse s[0..n) fed byte by byte, each call resuming the last. */
static enum http_parse_result parse_resumed(const char *s, size_t n, struct http_request *req,
                                            int *status)
{
    enum http_parse_result r = HTTP_PARSE_PARTIAL;

    *status = 0;
    for (size_t k = 1; k <= n && r == HTTP_PARSE_PARTIAL; k++)
        r = http_parse_request_resume(s, k, k - 1, req, status);
    return r;
}

/* count empty lines, then `then`. */
static char *empty_lines(size_t count, const char *then, size_t *len)
{
    char *s = malloc(2 * count + strlen(then) + 1);

    if (s == NULL)
        exit(2);
    size_t n = strlen(then);

    for (size_t i = 0; i < count; i++) {
        s[2 * i] = '\r';
        s[2 * i + 1] = '\n';
    }
    memcpy(s + 2 * count, then, n + 1);     /* with its NUL */
    *len = 2 * count + n;
    return s;
}

static void test_parse_limits(void)
{
    struct http_request req;
    int status;
    size_t n;
    char *s;

    /* HTTP_HEADERS_MAX fields pass (Host is one of them); one more is 431. */
    s = head_with_fields(HTTP_HEADERS_MAX - 1, 1, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_DONE, "100 header fields are accepted");
    CHECK(parse_resumed(s, n, &req, &status) == HTTP_PARSE_DONE,
          "100 header fields, resumed byte by byte, are accepted");
    free(s);
    s = head_with_fields(HTTP_HEADERS_MAX, 1, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 431,
          "101 header fields are 431");
    CHECK(parse_resumed(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 431,
          "101 header fields are 431, resumed byte by byte too (the count resumes)");
    free(s);
    /* A head of 16 KiB passes; over it is 431, complete or not. */
    s = head_with_fields(1, HTTP_HEAD_MAX - 34, &n);
    CHECK(n == HTTP_HEAD_MAX && parse(s, n, &req, &status) == HTTP_PARSE_DONE,
          "a head of exactly 16 KiB passes");
    free(s);
    s = head_with_fields(2, HTTP_HEAD_MAX / 2, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 431,
          "a head over 16 KiB is 431");
    CHECK(parse(s, HTTP_HEAD_MAX, &req, &status) == HTTP_PARSE_ERROR && status == 431,
          "16 KiB of an unfinished head is 431");
    free(s);
    /* A request line over 8 KiB is 414, complete or not. */
    s = long_target(HTTP_REQUEST_LINE_MAX, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 414,
          "a request line over 8 KiB is 414");
    CHECK(parse(s, HTTP_REQUEST_LINE_MAX + 1, &req, &status) == HTTP_PARSE_ERROR &&
          status == 414, "8 KiB of an unfinished request line is 414");
    free(s);
    s = long_target(HTTP_REQUEST_LINE_MAX - 20, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_DONE, "a request line under 8 KiB passes");
    free(s);
    /* long_target's request line is its target and 13 bytes. */
    s = long_target(HTTP_REQUEST_LINE_MAX - 13, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_DONE, "a request line of exactly 8 KiB passes");
    CHECK(parse(s, HTTP_REQUEST_LINE_MAX, &req, &status) == HTTP_PARSE_PARTIAL,
          "8 KiB of an unfinished request line is partial");
    /* The unfinished line is measured without its CR, like the finished
     * one: the answer must not depend on how the bytes arrive. */
    CHECK(parse(s, HTTP_REQUEST_LINE_MAX + 1, &req, &status) == HTTP_PARSE_PARTIAL,
          "8 KiB of request line and its CR is partial, like the whole line");
    free(s);
    s = long_target(HTTP_REQUEST_LINE_MAX - 12, &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 414,
          "a request line of 8 KiB + 1 is 414");
    free(s);
    /* Empty lines before the request line (9112 2.2) count toward the head:
     * with no request line yet, too much of them is 414, not 431. */
    s = empty_lines(HTTP_HEAD_MAX / 2, "", &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 414,
          "16 KiB of empty lines is 414");
    free(s);
    s = empty_lines(HTTP_HEAD_MAX / 2 - 2, "GET / HTTP/1.1\r\n", &n);
    CHECK(parse(s, n, &req, &status) == HTTP_PARSE_ERROR && status == 414,
          "a request line ending past 16 KiB of empty lines is 414");
    free(s);
}

/* The fields of a parsed head, from a buffer that stays alive. */
static void test_parse_fields(void)
{
    static const char head[] =
        "\r\nPUT http://h/files/a?x HTTP/1.1\r\n"
        "Host: h\r\n"
        "Connection: keep-alive, Close\r\n"
        "Expect: 100-continue\r\n"
        "Transfer-Encoding: chunked\r\n"
        "If-None-Match: \"x\" \t\r\n"
        "Range: bytes=1-2\r\n"
        "Range: bytes=3-4\r\n"
        "\r\nNEXT";
    size_t n = sizeof head - 1;
    char *buf = exact_copy(head, n);
    struct http_request req;
    int status = 0;

    CHECK(http_parse_request(buf, n, &req, &status) == HTTP_PARSE_DONE, "fields: parses");
    CHECK(req.head_len == n - 4, "fields: head_len stops at the blank line (pipelining)");
    CHECK(req.method == HTTP_PUT && req.minor_version == 1, "fields: method and version");
    CHECK(req.target == buf + 6 && req.target_len == 18, "fields: target points into buf");
    CHECK(req.conn_close && req.conn_keep_alive, "fields: Connection tokens, any case");
    CHECK(req.expect_continue && req.chunked && req.content_length == -1,
          "fields: Expect, chunked, no Content-Length");
    CHECK(req.if_none_match_len == 3 && memcmp(req.if_none_match, "\"x\"", 3) == 0,
          "fields: a value loses its trailing spaces and tabs");
    CHECK(req.range != NULL && req.range_len == 0,
          "fields: a field sent twice keeps an empty value");
    CHECK(req.if_modified_since == NULL && req.if_range == NULL, "fields: absent fields are NULL");
    release(buf, n);
}

/* ------------------------------------------------------------------ */
/* The chunk decoder                                                  */
/* ------------------------------------------------------------------ */

#define BIG (1LL << 40)         /* a body limit that never bites */

struct chunk_case {
    const char *rule;
    const char *input;
    long long max_body;
    enum http_parse_result result;
    int status;
    const char *decoded;        /* DONE and PARTIAL: the decoded bytes */
    size_t end;                 /* DONE: input bytes that were the body */
};

#define BAD(rule, input) { rule, input, BIG, HTTP_PARSE_ERROR, 400, "", 0 }
#define GOOD(rule, input, decoded) { rule, input, BIG, HTTP_PARSE_DONE, 0, decoded, sizeof(input) - 1 }

static const struct chunk_case chunk_cases[] = {
    GOOD("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"),
    GOOD("several chunks", "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", "hello"),
    GOOD("an empty body", "0\r\n\r\n", ""),
    /* chunk-size = 1*HEXDIG, either case (9112 7.1; 9110 5.6.1's HEXDIG). */
    GOOD("upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
    GOOD("lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
    GOOD("the digit 9", "9\r\n012345678\r\n0\r\n\r\n", "012345678"),
    GOOD("the hex digit F", "F\r\n0123456789abcde\r\n0\r\n\r\n", "0123456789abcde"),
    GOOD("two hex digits: 0x1f is 31", "1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
         "0123456789abcdef0123456789abcde"),
    GOOD("16 hex digits, leading zeros", "0000000000000002\r\nhi\r\n0\r\n\r\n", "hi"),
    GOOD("an extension name is ignored", "2;a\r\nhi\r\n0\r\n\r\n", "hi"),
    GOOD("an extension with a token value", "2;a=b;c=d\r\nhi\r\n0;e\r\n\r\n", "hi"),
    GOOD("an extension with a quoted value", "2;a=\"x \\\" y\"\r\nhi\r\n0\r\n\r\n", "hi"),
    /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (9110 5.6.4). */
    GOOD("a quoted value of qdtext at the edges of its ranges",
         "2;a=\"\t !#[]~\x80\xff\"\r\nhi\r\n0\r\n\r\n", "hi"),
    GOOD("a quoted value with an escaped backslash", "2;a=\"\\\\\"\r\nhi\r\n0\r\n\r\n", "hi"),
    GOOD("trailer fields are discarded", "2\r\nhi\r\n0\r\nX-T: 1\r\nContent-Length: 9\r\n\r\n", "hi"),
    { "what follows the body is not used", "0\r\n\r\nGET", BIG, HTTP_PARSE_DONE, 0, "", 5 },
    { "a body that stops before the last chunk is partial", "5\r\nhel", BIG, HTTP_PARSE_PARTIAL, 0,
      "hel", 0 },
    { "a body without its final CRLF is partial", "0\r\n", BIG, HTTP_PARSE_PARTIAL, 0, "", 0 },
    BAD("a 0x prefix is 400", "0x5\r\nhello\r\n0\r\n\r\n"),
    BAD("a + sign is 400", "+5\r\nhello\r\n0\r\n\r\n"),
    BAD("a - sign is 400", "-5\r\nhello\r\n0\r\n\r\n"),
    BAD("a leading space is 400", " 5\r\nhello\r\n0\r\n\r\n"),
    BAD("a trailing space is 400", "5 \r\nhello\r\n0\r\n\r\n"),
    BAD("an underscore is 400", "1_0\r\nhello\r\n0\r\n\r\n"),
    BAD("17 hex digits are 400", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
    BAD("an empty size is 400", "\r\nhello\r\n0\r\n\r\n"),
    BAD("a size line ending in bare LF is 400", "5\nhello\r\n0\r\n\r\n"),
    BAD("a size line ending in bare CR is 400", "5\rhello\r\n0\r\n\r\n"),
    BAD("data not followed by CRLF is 400", "5\r\nhelloX\r\n0\r\n\r\n"),
    BAD("data followed by bare LF is 400", "5\r\nhello\n0\r\n\r\n"),
    BAD("data longer than its size is 400 (desync)", "3\r\nhello\r\n0\r\n\r\n"),
    BAD("a trailer ending in bare LF is 400", "0\r\nX: 1\n\r\n"),
    BAD("a trailer that folds is 400", "0\r\nX: 1\r\n 2\r\n\r\n"),
    BAD("a trailer without a name is 400", "0\r\n: 1\r\n\r\n"),
    BAD("a trailer with a control byte is 400", "0\r\nX: \x01\r\n\r\n"),
    BAD("a final line ending in bare LF is 400", "0\r\n\n"),
    BAD("a bare semicolon is 400", "2;\r\nhi\r\n0\r\n\r\n"),
    BAD("an extension name not a token is 400", "2;@\r\nhi\r\n0\r\n\r\n"),
    BAD("an empty extension value is 400", "2;a=\r\nhi\r\n0\r\n\r\n"),
    BAD("a control byte in an extension is 400", "2;a=\"\x01\"\r\nhi\r\n0\r\n\r\n"),
    BAD("DEL in a quoted value is 400", "2;a=\"\x7f\"\r\nhi\r\n0\r\n\r\n"),
    BAD("a control byte after a backslash is 400", "2;a=\"\\\x01\"\r\nhi\r\n0\r\n\r\n"),
    BAD("a LF in an extension is 400", "2;a\nb\r\nhi\r\n0\r\n\r\n"),
    BAD("a CR in an extension is 400", "2;a\rb\r\nhi\r\n0\r\n\r\n"),
    BAD("whitespace before ';' is 400", "2 ;a\r\nhi\r\n0\r\n\r\n"),
    BAD("whitespace after ';' is 400", "2; a\r\nhi\r\n0\r\n\r\n"),
    BAD("whitespace around '=' is 400", "2;a =b\r\nhi\r\n0\r\n\r\n"),
    BAD("text after a quoted value is 400", "2;a=\"b\"c\r\nhi\r\n0\r\n\r\n"),
    { "a chunk size past max_body is 413 before its data", "b\r\nhello world\r\n0\r\n\r\n", 10,
      HTTP_PARSE_ERROR, 413, "", 0 },
    { "chunks past max_body together are 413", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 10,
      HTTP_PARSE_ERROR, 413, "", 0 },
    { "a body of exactly max_body passes", "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10,
      HTTP_PARSE_DONE, 0, "helloworld", 25 },
    { "a negative max_body is 0: one byte is 413", "1\r\nx\r\n0\r\n\r\n", -1, HTTP_PARSE_ERROR,
      413, "", 0 },
    { "the largest size over any limit is 413", "ffffffffffffffff\r\n", BIG, HTTP_PARSE_ERROR, 413,
      "", 0 },
};

struct decoded {
    enum http_parse_result r;
    int status;
    size_t end;                 /* input bytes used in all */
    size_t out_len;
    char out[1024];
};

/* Decode in[0..len) in pieces of `piece` bytes (0: all at once), then, if
 * cut is not 0, in two pieces cut there instead.  In place, as the server
 * decodes. */
static void decode(const char *in, size_t len, long long max_body, size_t piece, size_t cut,
                   struct decoded *o)
{
    struct http_chunked d;

    http_chunked_init(&d, max_body);
    o->r = HTTP_PARSE_PARTIAL;
    o->status = 0;
    o->end = 0;
    o->out_len = 0;
    while (o->end < len) {
        size_t n = len - o->end;
        if (cut > 0)
            n = o->end < cut ? cut : n;
        else if (piece > 0 && piece < n)
            n = piece;
        char *buf = exact_copy(in + o->end, n);
        size_t got, used;
        o->r = http_chunked_decode(&d, buf, n, buf, &got, &used, &o->status);
        if (o->out_len + got <= sizeof o->out)
            memcpy(o->out + o->out_len, buf, got);
        release(buf, n);
        o->out_len += got;
        o->end += used;
        if (o->r != HTTP_PARSE_PARTIAL)
            break;
    }
}

static bool same(const struct decoded *a, const struct decoded *b)
{
    /* The status means something only with HTTP_PARSE_ERROR. */
    return a->r == b->r && (a->r != HTTP_PARSE_ERROR || a->status == b->status) &&
           a->out_len == b->out_len &&
           memcmp(a->out, b->out, a->out_len) == 0 && (a->r == HTTP_PARSE_PARTIAL || a->end == b->end);
}

static void test_chunk_case(const struct chunk_case *c)
{
    size_t len = strlen(c->input);
    struct decoded whole, part;
    char detail[96];

    decode(c->input, len, c->max_body, 0, 0, &whole);
    snprintf(detail, sizeof detail, "got %d/%d, want %d/%d", (int)whole.r, whole.status,
             (int)c->result, c->status);
    check(whole.r == c->result && (c->result != HTTP_PARSE_ERROR || whole.status == c->status),
          __LINE__, c->rule, detail);
    if (c->result != HTTP_PARSE_ERROR)
        check(whole.out_len == strlen(c->decoded) &&
              memcmp(whole.out, c->decoded, whole.out_len) == 0, __LINE__, c->rule,
              "the decoded bytes");
    if (c->result == HTTP_PARSE_DONE)
        check(whole.end == c->end, __LINE__, c->rule, "where the body ends");
    /* Byte by byte, and cut in two at every place: the same outcome. */
    decode(c->input, len, c->max_body, 1, 0, &part);
    check(same(&whole, &part), __LINE__, c->rule, "byte by byte differs from whole");
    bool cuts_ok = true;
    for (size_t k = 1; k < len && cuts_ok; k++) {
        decode(c->input, len, c->max_body, 0, k, &part);
        cuts_ok = same(&whole, &part);
        if (!cuts_ok)
            snprintf(detail, sizeof detail, "cut at %zu differs from whole", k);
    }
    check(cuts_ok, __LINE__, c->rule, cuts_ok ? "" : detail);
}

static void test_chunk_limits(void)
{
    struct decoded o;
    static char body[2 * HTTP_HEAD_MAX + 64];
    char *p = body;

    /* A size line of 1024 bytes with its CR passes; 1025 is 400. */
    p += sprintf(p, "1;");
    memset(p, 'a', HTTP_CHUNK_LINE_MAX - 3);
    p += HTTP_CHUNK_LINE_MAX - 3;
    p += sprintf(p, "\r\nx\r\n0\r\n\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_DONE, "a chunk-size line of 1024 bytes, its CR included, passes");
    p = body;
    p += sprintf(p, "1;");
    memset(p, 'a', HTTP_CHUNK_LINE_MAX - 2);
    p += HTTP_CHUNK_LINE_MAX - 2;
    p += sprintf(p, "\r\nx\r\n0\r\n\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_ERROR && o.status == 400, "a chunk-size line of 1025 bytes, its CR included, is 400");
    /* The same, when the line ends in a quoted value: its CR counts too. */
    p = body;
    p += sprintf(p, "1;a=\"");
    memset(p, 'a', HTTP_CHUNK_LINE_MAX - 7);
    p += HTTP_CHUNK_LINE_MAX - 7;
    p += sprintf(p, "\"\r\nx\r\n0\r\n\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_DONE, "a size line of 1024 bytes ending in a quoted value passes");
    p = body;
    p += sprintf(p, "1;a=\"");
    memset(p, 'a', HTTP_CHUNK_LINE_MAX - 6);
    p += HTTP_CHUNK_LINE_MAX - 6;
    p += sprintf(p, "\"\r\nx\r\n0\r\n\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_ERROR && o.status == 400,
          "a size line of 1025 bytes ending in a quoted value is 400");
    /* Each size line is measured from its own start. */
    p = body;
    p += sprintf(p, "1\r\nx\r\n1;");
    memset(p, 'a', HTTP_CHUNK_LINE_MAX - 3);
    p += HTTP_CHUNK_LINE_MAX - 3;
    p += sprintf(p, "\r\nx\r\n0\r\n\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_DONE, "a second size line of 1024 bytes passes");
    /* Trailers: 100 fields pass, 101 are 431; over 16 KiB is 431. */
    p = body;
    p += sprintf(p, "0\r\n");
    for (int i = 0; i < HTTP_HEADERS_MAX; i++)
        p += sprintf(p, "T: 1\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_PARTIAL, "100 trailer fields pass");
    p += sprintf(p, "T: 1\r\n");
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_ERROR && o.status == 431, "101 trailer fields are 431");
    p = body;
    p += sprintf(p, "0\r\nT: ");
    memset(p, 'v', HTTP_HEAD_MAX);
    p += HTTP_HEAD_MAX;
    decode(body, (size_t)(p - body), BIG, 0, 0, &o);
    CHECK(o.r == HTTP_PARSE_ERROR && o.status == 431, "trailers over 16 KiB are 431");
    /* Exactly: the trailer lines, their CRLFs and the final CR count (16 KiB
     * at most); "T: " and its CRLF are 5 bytes, the final CR 1. */
    for (size_t v = HTTP_HEAD_MAX - 6; v <= HTTP_HEAD_MAX - 5; v++) {
        p = body;
        p += sprintf(p, "0\r\nT: ");
        memset(p, 'v', v);
        p += v;
        p += sprintf(p, "\r\n\r\n");
        decode(body, (size_t)(p - body), BIG, 0, 0, &o);
        CHECK(v == HTTP_HEAD_MAX - 6 ? o.r == HTTP_PARSE_DONE
                                     : o.r == HTTP_PARSE_ERROR && o.status == 431,
              v == HTTP_HEAD_MAX - 6 ? "a trailer section of exactly 16 KiB passes"
                                     : "a trailer section of 16 KiB + 1 is 431");
    }
    /* After DONE or ERROR, more input is an error. */
    struct http_chunked d;
    char buf[] = "0\r\n\r\n";
    size_t got, used;
    int status = 0;
    http_chunked_init(&d, BIG);
    CHECK(http_chunked_decode(&d, buf, 5, buf, &got, &used, &status) == HTTP_PARSE_DONE,
          "a finished decoder: done");
    CHECK(http_chunked_decode(&d, buf, 1, buf, &got, &used, &status) == HTTP_PARSE_ERROR,
          "a finished decoder takes no more input");
    char again[] = "0\r\n\r\n", lf[] = "\n";
    http_chunked_init(&d, BIG);
    (void)http_chunked_decode(&d, again, 5, again, &got, &used, &status);
    CHECK(http_chunked_decode(&d, lf, 1, lf, &got, &used, &status) == HTTP_PARSE_ERROR,
          "a finished decoder takes no more input, not even another LF");
    char bad[] = "X", good[] = "0\r\n\r\n";
    http_chunked_init(&d, BIG);
    CHECK(http_chunked_decode(&d, bad, 1, bad, &got, &used, &status) == HTTP_PARSE_ERROR,
          "a failed decoder: failed");
    CHECK(http_chunked_decode(&d, good, 5, good, &got, &used, &status) == HTTP_PARSE_ERROR,
          "a failed decoder takes no more input, not even a good body");
}

/* ------------------------------------------------------------------ */
/* Dates                                                              */
/* ------------------------------------------------------------------ */

#define NOV_6_1994 784111777    /* Sun, 06 Nov 1994 08:49:37 GMT */

struct date_case {
    const char *rule;
    const char *text;
    time_t t;                   /* -1: not an HTTP-date */
};

static const struct date_case date_cases[] = {
    { "IMF-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994 },
    { "RFC 850, two-digit year", "Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994 },
    { "asctime, space-padded day", "Sun Nov  6 08:49:37 1994", NOV_6_1994 },
    { "asctime, two-digit day", "Sun Nov 16 08:49:37 1994", NOV_6_1994 + 10 * 86400 },
    { "the epoch", "Thu, 01 Jan 1970 00:00:00 GMT", 0 },
    { "a leap second is accepted", "Sat, 31 Dec 2016 23:59:60 GMT", 1483228800 },
    { "day names are not checked", "Mon, 06 Nov 1994 08:49:37 GMT", NOV_6_1994 },
    { "a day name is any letters, A to z", "AZz, 06 Nov 1994 08:49:37 GMT", NOV_6_1994 },
    { "RFC 850: a day name is any letters, A to z", "AZzday, 06-Nov-94 08:49:37 GMT", NOV_6_1994 },
    { "a digit where the day name goes", "1un, 06 Nov 1994 08:49:37 GMT", -1 },
    { "RFC 850: a digit in the day name", "1unday, 06-Nov-94 08:49:37 GMT", -1 },
    { "RFC 850: a day name of 5 letters", "Monda, 06-Nov-94 08:49:37 GMT", -1 },
    { "a day name alone", "Sunday", -1 },
    { "a month matching two letters of one", "Sun, 06 Nox 1994 08:49:37 GMT", -1 },
    { "second 61", "Sun, 06 Nov 1994 08:49:61 GMT", -1 },
    { "not GMT", "Sun, 06 Nov 1994 08:49:37 UTC", -1 },
    { "day 32", "Sun, 32 Nov 1994 08:49:37 GMT", -1 },
    { "day 0", "Sun, 00 Nov 1994 08:49:37 GMT", -1 },
    { "hour 24", "Sun, 06 Nov 1994 24:49:37 GMT", -1 },
    { "minute 60", "Sun, 06 Nov 1994 08:60:37 GMT", -1 },
    { "an unknown month", "Sun, 06 Foo 1994 08:49:37 GMT", -1 },
    { "a one-digit day in IMF-fixdate", "Sun, 6 Nov 1994 08:49:37 GMT", -1 },
    { "RFC 850 with a short day name", "Sun, 06-Nov-94 08:49:37 GMT", -1 },
    { "trailing text", "Sun, 06 Nov 1994 08:49:37 GMT ", -1 },
    { "empty", "", -1 },
    { "a number", "784111777", -1 },
};

static void test_dates(void)
{
    char out[HTTP_DATE_LEN + 1];

    for (size_t i = 0; i < sizeof date_cases / sizeof date_cases[0]; i++) {
        const struct date_case *c = &date_cases[i];
        char *s = exact_copy(c->text, strlen(c->text));
        time_t t = http_parse_date(s, strlen(c->text));
        release(s, strlen(c->text));
        check(t == c->t, __LINE__, c->rule, c->text);
    }
    http_format_date(NOV_6_1994, out);
    CHECK(strcmp(out, "Sun, 06 Nov 1994 08:49:37 GMT") == 0, "format: IMF-fixdate");
    http_format_date(0, out);
    CHECK(strcmp(out, "Thu, 01 Jan 1970 00:00:00 GMT") == 0, "format: the epoch");
    http_format_date((time_t)-1, out);
    CHECK(out[0] == '\0', "format: no clock, no Date");
    http_format_date((time_t)253402300800LL, out);     /* year 10000 */
    CHECK(out[0] == '\0', "format: a year past 9999 gives no Date");
    /* IMF-fixdate's year is 4DIGIT (9110 5.6.7): 1000 to 9999. */
    http_format_date((time_t)253402300799LL, out);
    CHECK(strcmp(out, "Fri, 31 Dec 9999 23:59:59 GMT") == 0, "format: the last second of 9999");
    http_format_date((time_t)-30610224000LL, out);
    CHECK(strcmp(out, "Wed, 01 Jan 1000 00:00:00 GMT") == 0, "format: the first second of 1000");
    http_format_date((time_t)-30610224001LL, out);
    CHECK(out[0] == '\0', "format: a year before 1000 gives no Date");
    time_t now = time(NULL);
    http_format_date(now, out);
    CHECK(http_parse_date(out, strlen(out)) == now, "format then parse: the same second");

    /* RFC 850: a two-digit year more than 50 years ahead is in the past
     * century (9110 5.6.7); one up to 50 years ahead is in this one. */
    struct tm tm;
    gmtime_r(&now, &tm);
    int year = tm.tm_year + 1900;
    char s[64];
    snprintf(s, sizeof s, "Sunday, 06-Nov-%02d 08:49:37 GMT", (year + 50) % 100);
    gmtime_r(&(time_t){ http_parse_date(s, strlen(s)) }, &tm);
    CHECK(tm.tm_year + 1900 == year + 50, "RFC 850: 50 years ahead stays in this century");
    snprintf(s, sizeof s, "Sunday, 06-Nov-%02d 08:49:37 GMT", (year + 51) % 100);
    gmtime_r(&(time_t){ http_parse_date(s, strlen(s)) }, &tm);
    CHECK(tm.tm_year + 1900 == year + 51 - 100, "RFC 850: 51 years ahead is the past century");
}

/* ------------------------------------------------------------------ */
/* Conditional and range requests                                     */
/* ------------------------------------------------------------------ */

#define ETAG "\"42-1000-784111777000000005\""
#define FILE_HEAD "GET /files/a HTTP/1.1\r\nHost: a\r\n"

struct cond_case {
    const char *rule;
    const char *fields;         /* header lines after FILE_HEAD ("GET" may become "HEAD") */
    bool head;                  /* a HEAD request */
    enum http_file_answer answer;
    long long first, len;
};

static const struct cond_case cond_cases[] = {
    { "no conditions: the whole file", "", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-None-Match: the current tag is 304", "If-None-Match: " ETAG "\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "If-None-Match: weak comparison ignores W/", "If-None-Match: W/" ETAG "\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "If-None-Match: * matches any file", "If-None-Match: *\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "If-None-Match: a list naming the tag", "If-None-Match: \"x\", " ETAG "\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "If-None-Match: another tag is 200", "If-None-Match: \"x\"\r\n", false, HTTP_ANSWER_FULL,
      0, 1000 },
    { "If-None-Match: an unquoted tag matches nothing",
      "If-None-Match: 42-1000-784111777000000005\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-None-Match: an empty tag, then the current one", "If-None-Match: \"\", " ETAG "\r\n",
      false, HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "If-None-Match: W without / is no weak prefix", "If-None-Match: WX" ETAG "\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "If-None-Match sent twice never matches",
      "If-None-Match: " ETAG "\r\nIf-None-Match: " ETAG "\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Modified-Since sent twice never matches",
      "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
      "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Modified-Since: the file's own date is 304",
      "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", false, HTTP_ANSWER_NOT_MODIFIED, 0,
      1000 },
    { "If-Modified-Since: a later date is 304",
      "If-Modified-Since: Sun, 06 Nov 2011 08:49:37 GMT\r\n", false, HTTP_ANSWER_NOT_MODIFIED, 0,
      1000 },
    { "If-Modified-Since: an earlier date is 200",
      "If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Modified-Since in the future is ignored (9110 13.1.3)",
      "If-Modified-Since: Sun, 06 Nov 2950 08:49:37 GMT\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Modified-Since not an HTTP-date is ignored", "If-Modified-Since: yesterday\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Modified-Since in asctime", "If-Modified-Since: Sun Nov  6 08:49:37 1994\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "If-None-Match takes precedence over If-Modified-Since",
      "If-None-Match: \"x\"\r\nIf-Modified-Since: Sun, 06 Nov 2011 08:49:37 GMT\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "Range a-b", "Range: bytes=0-9\r\n", false, HTTP_ANSWER_PART, 0, 10 },
    { "Range a-", "Range: bytes=990-\r\n", false, HTTP_ANSWER_PART, 990, 10 },
    { "Range -n", "Range: bytes=-10\r\n", false, HTTP_ANSWER_PART, 990, 10 },
    { "Range -1: the last byte", "Range: bytes=-1\r\n", false, HTTP_ANSWER_PART, 999, 1 },
    { "Range 0-0: the first byte", "Range: bytes=0-0\r\n", false, HTTP_ANSWER_PART, 0, 1 },
    { "Range a-b, b the size: to the end", "Range: bytes=990-1000\r\n", false, HTTP_ANSWER_PART,
      990, 10 },
    { "Range -n longer than the file", "Range: bytes=-2000\r\n", false, HTTP_ANSWER_PART, 0,
      1000 },
    { "Range a-b past the end", "Range: bytes=500-5000\r\n", false, HTTP_ANSWER_PART, 500, 500 },
    { "Range unit is case-insensitive", "Range: BYTES=1-1\r\n", false, HTTP_ANSWER_PART, 1, 1 },
    { "Range starting at the end is 416", "Range: bytes=1000-\r\n", false,
      HTTP_ANSWER_UNSATISFIABLE, 0, 1000 },
    { "Range -0 is 416", "Range: bytes=-0\r\n", false, HTTP_ANSWER_UNSATISFIABLE, 0, 0 },
    { "several ranges: Range ignored (9110 14.2)", "Range: bytes=0-1,5-6\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "another unit: Range ignored", "Range: items=0-1\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "last < first: Range ignored", "Range: bytes=5-1\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "a Range sent twice is ignored", "Range: bytes=0-1\r\nRange: bytes=0-1\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "Range on HEAD is ignored (9110 14.2)", "Range: bytes=0-9\r\n", true, HTTP_ANSWER_FULL, 0,
      1000 },
    { "If-Range with the current tag: 206", "Range: bytes=0-9\r\nIf-Range: " ETAG "\r\n", false,
      HTTP_ANSWER_PART, 0, 10 },
    { "If-Range with another tag: 200", "Range: bytes=0-9\r\nIf-Range: \"x\"\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Range with a weak tag: 200 (strong comparison)",
      "Range: bytes=0-9\r\nIf-Range: W/" ETAG "\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "If-Range with the file's date: 206",
      "Range: bytes=0-9\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n", false, HTTP_ANSWER_PART,
      0, 10 },
    { "If-Range with another date: 200",
      "Range: bytes=0-9\r\nIf-Range: Sun, 06 Nov 1994 08:49:38 GMT\r\n", false, HTTP_ANSWER_FULL,
      0, 1000 },
    { "If-Range sent twice never matches",
      "Range: bytes=0-9\r\nIf-Range: " ETAG "\r\nIf-Range: " ETAG "\r\n", false,
      HTTP_ANSWER_FULL, 0, 1000 },
    { "304 comes before the range", "If-None-Match: *\r\nRange: bytes=0-9\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
};

static struct stat test_file(void)
{
    struct stat st;

    memset(&st, 0, sizeof st);
    st.st_ino = 42;
    st.st_size = 1000;
    st.st_mtim.tv_sec = NOV_6_1994;
    st.st_mtim.tv_nsec = 5;
    return st;
}

/* A file last modified at the epoch, and its tag: dates of 0 are valid. */
#define EPOCH "Thu, 01 Jan 1970 00:00:00 GMT"
#define EPOCH_ETAG "\"42-1000-0\""

static const struct cond_case epoch_cases[] = {
    { "the epoch: no conditions is the whole file", "", false, HTTP_ANSWER_FULL, 0, 1000 },
    { "the epoch: If-Modified-Since the epoch is 304", "If-Modified-Since: " EPOCH "\r\n", false,
      HTTP_ANSWER_NOT_MODIFIED, 0, 1000 },
    { "the epoch: If-Range with the epoch is 206", "Range: bytes=0-9\r\nIf-Range: " EPOCH "\r\n",
      false, HTTP_ANSWER_PART, 0, 10 },
    { "the epoch: If-Range with another tag is 200",
      "Range: bytes=0-9\r\nIf-Range: \"x\"\r\n", false, HTTP_ANSWER_FULL, 0, 1000 },
};

/* Read the conditions of a GET (or HEAD) of FILE_HEAD with these fields
 * into *cond, and decide.  *cond is the caller's, and may hold an earlier
 * request's conditions: nothing of them may show. */
static enum http_file_answer answer_for(const char *fields, bool head, struct http_conditions *cond,
                                        const struct stat *st, const char *etag, long long *first,
                                        long long *len)
{
    char buf[1024];
    struct http_request req;
    int status;

    snprintf(buf, sizeof buf, "%s%s%s\r\n", head ? "HEAD" : "GET", &FILE_HEAD[3], fields);
    if (!CHECK(http_parse_request(buf, strlen(buf), &req, &status) == HTTP_PARSE_DONE,
               "the head parses"))
        return (enum http_file_answer)-1;
    http_read_conditions(&req, cond);
    memset(buf, 'x', sizeof buf);           /* the head's bytes are gone */
    *first = *len = -7;                     /* whatever the caller had */
    return http_decide_file_answer(cond, st, etag, first, len);
}

static void test_cond_cases(const struct cond_case *cases, size_t count, const struct stat *st)
{
    char etag[HTTP_ETAG_MAX], detail[96];
    struct http_conditions cond;            /* one for all, as each row must set it all */

    http_format_etag(st, etag, sizeof etag);
    for (size_t i = 0; i < count; i++) {
        const struct cond_case *c = &cases[i];
        long long first = -7, len = -7;     /* kept when the head does not parse */
        enum http_file_answer a = answer_for(c->fields, c->head, &cond, st, etag, &first, &len);
        snprintf(detail, sizeof detail, "got %d [%lld, +%lld), want %d [%lld, +%lld)", (int)a,
                 first, len, (int)c->answer, c->first, c->len);
        /* [first, first + len) is what is sent: 416 sends nothing. */
        check(a == c->answer &&
              (a == HTTP_ANSWER_UNSATISFIABLE || (first == c->first && len == c->len)),
              __LINE__, c->rule, detail);
    }
}

/* Fill the stack below this frame with 'x', for the callee that comes next. */
static __attribute__((noinline)) void paint_stack(void)
{
    volatile char paint[4096];

    for (size_t i = 0; i < sizeof paint; i++)
        paint[i] = 'x';
}

static void test_conditions(void)
{
    struct stat st = test_file(), epoch = test_file();
    char etag[HTTP_ETAG_MAX];
    struct http_conditions cond;
    long long first, len;

    http_format_etag(&st, etag, sizeof etag);
    CHECK(strcmp(etag, ETAG) == 0, "ETag: inode, size and mtime in ns");
    test_cond_cases(cond_cases, sizeof cond_cases / sizeof cond_cases[0], &st);
    epoch.st_mtim.tv_sec = 0;
    epoch.st_mtim.tv_nsec = 0;
    http_format_etag(&epoch, etag, sizeof etag);
    CHECK(strcmp(etag, EPOCH_ETAG) == 0, "ETag: at the epoch");
    test_cond_cases(epoch_cases, sizeof epoch_cases / sizeof epoch_cases[0], &epoch);

    /* A request's conditions leave nothing behind for the next one. */
    http_format_etag(&st, etag, sizeof etag);
    answer_for("Range: bytes=0-9\r\nIf-Range: " ETAG "\r\n", false, &cond, &st, etag, &first, &len);
    CHECK(answer_for("Range: bytes=0-9\r\nIf-Range: Sun, 06 Nov 1994 08:49:38 GMT\r\n", false,
                     &cond, &st, etag, &first, &len) == HTTP_ANSWER_FULL,
          "If-Range: another date after a request whose If-Range had the tag: 200");
    answer_for("Range: bytes=0-9\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n", false, &cond,
               &st, etag, &first, &len);
    CHECK(answer_for("Range: bytes=0-9\r\nIf-Range: \"x\"\r\n", false, &cond, &st, etag, &first,
                     &len) == HTTP_ANSWER_FULL,
          "If-Range: another tag after a request whose If-Range had the date: 200");

    /* If-None-Match is kept up to HTTP_IF_NONE_MATCH_MAX - 1 bytes; a
     * longer one is ignored, whatever it holds. */
    for (size_t n = HTTP_IF_NONE_MATCH_MAX - 1; n <= HTTP_IF_NONE_MATCH_MAX; n++) {
        char fields[512], pad[HTTP_IF_NONE_MATCH_MAX];
        size_t k = n - (sizeof ETAG - 1) - 4;  /* "pad", ETAG */
        memset(pad, 'p', k);
        pad[k] = '\0';
        snprintf(fields, sizeof fields, "If-None-Match: \"%s\", %s\r\n", pad, ETAG);
        enum http_file_answer a = answer_for(fields, false, &cond, &st, etag, &first, &len);
        CHECK(n < HTTP_IF_NONE_MATCH_MAX ? a == HTTP_ANSWER_NOT_MODIFIED : a == HTTP_ANSWER_FULL,
              n < HTTP_IF_NONE_MATCH_MAX ? "If-None-Match of 159 bytes naming the tag: 304"
                                         : "If-None-Match of 160 bytes is ignored: 200");
    }
    {
        char fields[512], pad[256];
        memset(pad, 'p', 200);
        pad[200] = '\0';
        snprintf(fields, sizeof fields, "If-None-Match: *, \"%s\"\r\n", pad);
        CHECK(answer_for(fields, false, &cond, &st, etag, &first, &len) == HTTP_ANSWER_FULL,
              "If-None-Match too long to keep is ignored, even starting with *");
    }

    /* If-Modified-Since: now is not in the future (9110 13.1.3).  Tried
     * until the clock does not tick during the decision. */
    bool decided = false;
    for (int tries = 0; tries < 5 && !decided; tries++) {
        char fields[128], date[HTTP_DATE_LEN + 1];
        time_t now = time(NULL);
        http_format_date(now, date);
        snprintf(fields, sizeof fields, "If-Modified-Since: %s\r\n", date);
        enum http_file_answer a = answer_for(fields, false, &cond, &st, etag, &first, &len);
        if (time(NULL) == now) {
            decided = true;
            CHECK(a == HTTP_ANSWER_NOT_MODIFIED, "If-Modified-Since: now is 304");
        }
    }
    CHECK(decided, "If-Modified-Since: now could be tried within a second");

    char out[256];
    CHECK(http_format_file_headers(HTTP_ANSWER_PART, etag, &st, 990, 10, out, sizeof out) &&
          strcmp(out, "ETag: " ETAG "\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                      "Accept-Ranges: bytes\r\nContent-Range: bytes 990-999/1000\r\n") == 0,
          "206 headers: validators and Content-Range");
    CHECK(http_format_file_headers(HTTP_ANSWER_UNSATISFIABLE, etag, &st, 0, 1000, out,
                                   sizeof out) &&
          strcmp(out, "Accept-Ranges: bytes\r\nContent-Range: bytes */1000\r\n") == 0,
          "416 headers: Content-Range bytes */size");
    CHECK(http_format_file_headers(HTTP_ANSWER_NOT_MODIFIED, etag, &st, 0, 1000, out,
                                   sizeof out) &&
          strstr(out, "Accept-Ranges") == NULL && strstr(out, "ETag: ") == out,
          "304 headers: validators only");
    CHECK(!http_format_file_headers(HTTP_ANSWER_FULL, etag, &st, 0, 1000, out, 40),
          "headers that do not fit say so");

    /* Numbers are written as they are, one digit when one is enough. */
    struct stat small = test_file();
    small.st_ino = 7;
    small.st_size = 5;
    small.st_mtim.tv_sec = 0;
    small.st_mtim.tv_nsec = 3;
    http_format_etag(&small, etag, sizeof etag);
    CHECK(strcmp(etag, "\"7-5-3\"") == 0, "ETag: single digits, unpadded");
    CHECK(http_format_file_headers(HTTP_ANSWER_PART, etag, &small, 0, 1, out, sizeof out) &&
          strcmp(out, "ETag: \"7-5-3\"\r\nLast-Modified: " EPOCH "\r\n"
                      "Accept-Ranges: bytes\r\nContent-Range: bytes 0-0/5\r\n") == 0,
          "206 headers: single digits, unpadded");
    char tiny[5] = "xxxx";
    http_format_etag(&small, tiny, sizeof tiny);
    CHECK(tiny[0] == '\0', "an ETag that does not fit is empty");
    /* A date an IMF-fixdate cannot write: no Last-Modified at all.  The
     * stack is painted first, so a byte of the date that was never written
     * is not a lucky NUL. */
    struct stat far = test_file();
    far.st_mtim.tv_sec = (time_t)253402300800LL;     /* year 10000 */
    paint_stack();
    CHECK(http_format_file_headers(HTTP_ANSWER_FULL, "\"t\"", &far, 0, 1000, out, sizeof out) &&
          strcmp(out, "ETag: \"t\"\r\nAccept-Ranges: bytes\r\n") == 0,
          "a modification time past 9999: no Last-Modified");
}

/* ------------------------------------------------------------------ */
/* Routes                                                             */
/* ------------------------------------------------------------------ */

#define ALLOW_GH "Allow: GET, HEAD, OPTIONS\r\n"
#define ALLOW_GHP "Allow: GET, HEAD, POST, OPTIONS\r\n"
#define ALLOW_GHU "Allow: GET, HEAD, PUT, OPTIONS\r\n"
#define ALLOW_ALL "Allow: GET, HEAD, POST, PUT, OPTIONS\r\n"

struct route_case {
    const char *rule;
    const char *request_line;   /* without CRLF */
    enum http_route_kind kind;
    int status;                 /* HTTP_ROUTE_ERROR */
    const char *allow;          /* OPTIONS and 405, else NULL */
    const char *name;           /* HTTP_ROUTE_FILE */
    long sleep_ms;              /* HTTP_ROUTE_SLEEP */
};

static const struct route_case route_cases[] = {
    { "GET /", "GET / HTTP/1.1", HTTP_ROUTE_ROOT, 0, NULL, NULL, 0 },
    { "POST / reads its body", "POST / HTTP/1.1", HTTP_ROUTE_ROOT, 0, NULL, NULL, 0 },
    { "PUT / is 405 with Allow", "PUT / HTTP/1.1", HTTP_ROUTE_ERROR, 405, ALLOW_GHP, NULL, 0 },
    { "DELETE / is 405 with Allow", "DELETE / HTTP/1.1", HTTP_ROUTE_ERROR, 405, ALLOW_GHP, NULL,
      0 },
    { "OPTIONS / is 204 with Allow", "OPTIONS / HTTP/1.1", HTTP_ROUTE_OPTIONS, 0, ALLOW_GHP, NULL,
      0 },
    { "OPTIONS * is about the server (9112 3.2.4)", "OPTIONS * HTTP/1.1", HTTP_ROUTE_OPTIONS, 0,
      ALLOW_ALL, NULL, 0 },
    { "the * target with anything but OPTIONS is 400", "GET * HTTP/1.1", HTTP_ROUTE_ERROR, 400,
      NULL, NULL, 0 },
    { "/sleep?ms=N", "GET /sleep?ms=250 HTTP/1.1", HTTP_ROUTE_SLEEP, 0, NULL, NULL, 250 },
    { "/sleep?ms=60000 is the longest", "GET /sleep?ms=60000 HTTP/1.1", HTTP_ROUTE_SLEEP, 0, NULL,
      NULL, 60000 },
    { "/sleep?ms=60001 is 400", "GET /sleep?ms=60001 HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL,
      0 },
    { "/sleep?ms=0 does not sleep", "GET /sleep?ms=0 HTTP/1.1", HTTP_ROUTE_SLEEP, 0, NULL, NULL, 0 },
    { "/sleep?ms=9: one digit", "GET /sleep?ms=9 HTTP/1.1", HTTP_ROUTE_SLEEP, 0, NULL, NULL, 9 },
    { "/sleep without ms is 400", "GET /sleep HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "/sleep?ms= without digits is 400", "GET /sleep?ms= HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL,
      NULL, 0 },
    { "/sleep?ms:5 is 400", "GET /sleep?ms:5 HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "/sleep?ms=000001: six digits are 400", "GET /sleep?ms=000001 HTTP/1.1", HTTP_ROUTE_ERROR,
      400, NULL, NULL, 0 },
    { "/sleex is no /sleep", "GET /sleex?ms=1 HTTP/1.1", HTTP_ROUTE_ERROR, 404, NULL, NULL, 0 },
    { "/sleep?ms=-1 is 400", "GET /sleep?ms=-1 HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "PUT /sleep is 405", "PUT /sleep?ms=1 HTTP/1.1", HTTP_ROUTE_ERROR, 405, ALLOW_GH, NULL, 0 },
    { "GET /files/NAME", "GET /files/a.b_c-1 HTTP/1.1", HTTP_ROUTE_FILE, 0, NULL, "a.b_c-1", 0 },
    { "PUT /files/NAME", "PUT /files/a HTTP/1.1", HTTP_ROUTE_FILE, 0, NULL, "a", 0 },
    { "a query after NAME is not part of it", "GET /files/a?x=1 HTTP/1.1", HTTP_ROUTE_FILE, 0,
      NULL, "a", 0 },
    { "POST /files/NAME is 405", "POST /files/a HTTP/1.1", HTTP_ROUTE_ERROR, 405, ALLOW_GHU, NULL,
      0 },
    { "OPTIONS /files/NAME", "OPTIONS /files/a HTTP/1.1", HTTP_ROUTE_OPTIONS, 0, ALLOW_GHU, NULL,
      0 },
    { "NAME is never percent-decoded", "GET /files/%2e%2e HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL,
      NULL, 0 },
    { "NAME: %41 is not A", "GET /files/%41 HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "NAME: letters and digits at their ends", "GET /files/azAZ09 HTTP/1.1", HTTP_ROUTE_FILE, 0,
      NULL, "azAZ09", 0 },
    { "/filesXa is no /files/", "GET /filesXa HTTP/1.1", HTTP_ROUTE_ERROR, 404, NULL, NULL, 0 },
    { "NAME has no leading dot", "GET /files/.upload-1-2 HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL,
      NULL, 0 },
    { "NAME has no slash", "GET /files/a/b HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "an empty NAME is 404", "GET /files/ HTTP/1.1", HTTP_ROUTE_ERROR, 404, NULL, NULL, 0 },
    { "an unknown path is 404", "GET /nope HTTP/1.1", HTTP_ROUTE_ERROR, 404, NULL, NULL, 0 },
    { "absolute-form: the path is used (9112 3.2.2)", "GET http://h:1/files/a HTTP/1.1",
      HTTP_ROUTE_FILE, 0, NULL, "a", 0 },
    { "absolute-form: https, any case", "GET HTTPS://h/ HTTP/1.1", HTTP_ROUTE_ROOT, 0, NULL, NULL,
      0 },
    { "absolute-form without a path is 400", "GET http://h HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL,
      NULL, 0 },
    { "absolute-form: https in lower case", "GET https://h/files/a HTTP/1.1", HTTP_ROUTE_FILE, 0,
      NULL, "a", 0 },
    { "another scheme is 400", "GET ftp://h/ HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "a scheme one letter off http is 400", "GET htts://h/ HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL,
      NULL, 0 },
    { "http:/ is not http://", "GET http:/h/ HTTP/1.1", HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "a target starting with http but no :// is 400", "GET http/files/a HTTP/1.1",
      HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
    { "absolute-form with an empty host is 400 (9110 4.2.1)", "GET http:///files/a HTTP/1.1",
      HTTP_ROUTE_ERROR, 400, NULL, NULL, 0 },
};

static void test_routes(void)
{
    char head[256], name[HTTP_FILE_NAME_MAX + 16];

    for (size_t i = 0; i < sizeof route_cases / sizeof route_cases[0]; i++) {
        const struct route_case *c = &route_cases[i];
        struct http_request req;
        struct http_route rt;
        int status;
        snprintf(head, sizeof head, "%s\r\nHost: h\r\n\r\n", c->request_line);
        if (!check(http_parse_request(head, strlen(head), &req, &status) == HTTP_PARSE_DONE,
                   __LINE__, c->rule, "the head parses"))
            continue;
        memset(&rt, 0x5a, sizeof rt);      /* every answer sets what it means */
        http_resolve_route(&req, &rt);
        bool ok = rt.kind == c->kind;
        if (ok && c->kind == HTTP_ROUTE_ERROR)
            ok = rt.status == c->status;
        if (ok && (c->kind == HTTP_ROUTE_OPTIONS || c->status == 405))
            ok = c->allow != NULL && rt.allow != NULL && strcmp(rt.allow, c->allow) == 0;
        if (ok && c->kind == HTTP_ROUTE_FILE)
            ok = strcmp(rt.name, c->name) == 0;
        if (ok && c->kind == HTTP_ROUTE_SLEEP)
            ok = rt.sleep_ms == c->sleep_ms;
        check(ok, __LINE__, c->rule, c->request_line);
    }
    /* NAME is 1-128 bytes. */
    for (size_t n = HTTP_FILE_NAME_MAX; n <= HTTP_FILE_NAME_MAX + 1; n++) {
        struct http_request req;
        struct http_route rt;
        int status;
        memset(name, 'a', n);
        name[n] = '\0';
        snprintf(head, sizeof head, "GET /files/%s HTTP/1.0\r\n\r\n", name);
        (void)http_parse_request(head, strlen(head), &req, &status);
        http_resolve_route(&req, &rt);
        CHECK(n == HTTP_FILE_NAME_MAX ? rt.kind == HTTP_ROUTE_FILE
                                      : rt.kind == HTTP_ROUTE_ERROR && rt.status == 400,
              n == HTTP_FILE_NAME_MAX ? "a NAME of 128 bytes" : "a NAME of 129 bytes is 400");
    }
}

/* ------------------------------------------------------------------ */
/* Response heads and the text builder                                */
/* ------------------------------------------------------------------ */

/* The reason phrase of every status this server sends (RFC 9110 15). */
static const struct {
    int status;
    const char *reason;
} reasons[] = {
    { 100, "Continue" },
    { 200, "OK" },
    { 201, "Created" },
    { 204, "No Content" },
    { 206, "Partial Content" },
    { 304, "Not Modified" },
    { 400, "Bad Request" },
    { 404, "Not Found" },
    { 405, "Method Not Allowed" },
    { 408, "Request Timeout" },
    { 411, "Length Required" },
    { 413, "Content Too Large" },
    { 414, "URI Too Long" },
    { 416, "Range Not Satisfiable" },
    { 417, "Expectation Failed" },
    { 431, "Request Header Fields Too Large" },
    { 500, "Internal Server Error" },
    { 501, "Not Implemented" },
    { 503, "Service Unavailable" },
    { 505, "HTTP Version Not Supported" },
    { 507, "Insufficient Storage" },
};

/* out[0..n) is exactly the string want. */
static bool is(const char *out, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(out, want, n) == 0;
}

static void test_responses(void)
{
    char out[512];
    struct http_response r = {
        .status = 200, .content_type = "text/plain", .content_length = 5, .keep_alive = true,
    };

    static const char ok[] = "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                             "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n";
    CHECK(http_format_head(&r, "Sun, 06 Nov 1994 08:49:37 GMT", out, sizeof out) == sizeof ok - 1 &&
          memcmp(out, ok, sizeof ok - 1) == 0, "a 200 head");
    r.keep_alive = false;
    r.extra_headers = "Retry-After: 1\r\n";
    r.status = 503;
    size_t n = http_format_head(&r, "", out, sizeof out);
    CHECK(is(out, n, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 5\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"), "no Date without a clock; Connection: close; extra headers");
    r.keep_alive = true;
    r.http10_keep_alive = true;
    r.extra_headers = NULL;
    r.status = 304;
    n = http_format_head(&r, "", out, sizeof out);
    CHECK(is(out, n, "HTTP/1.1 304 Not Modified\r\nConnection: keep-alive\r\n\r\n"),
          "304: no Content-Length (9110 8.6); keep-alive said to HTTP/1.0");
    r.status = 204;
    n = http_format_head(&r, "", out, sizeof out);
    CHECK(is(out, n, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"),
          "204: no Content-Length");
    CHECK(http_format_head(&r, "", out, 20) == 0, "a head that does not fit is 0");
    CHECK(strcmp(http_status_body(431, out, sizeof out), "431 Request Header Fields Too Large\n") == 0,
          "an error's body");
    CHECK(http_status_body(431, out, 8) == NULL, "an error's body that does not fit is NULL");
    CHECK(strcmp(http_status_reason(299), "Unknown") == 0, "an unknown status");
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "%d %s\n", reasons[i].status, reasons[i].reason);
        check(strcmp(http_status_body(reasons[i].status, out, sizeof out), want) == 0, __LINE__,
              "each status has its reason phrase", want);
    }
    /* status-code = 3DIGIT (RFC 9112 4), whatever the number. */
    CHECK(strcmp(http_status_body(99, out, sizeof out), "099 Unknown\n") == 0,
          "an error's body: three digits");
    r.status = 99;
    n = http_format_head(&r, "", out, sizeof out);
    CHECK(n > 13 && memcmp(out, "HTTP/1.1 099 ", 13) == 0, "a status line: three digits");

    struct http_text t = { .p = out, .end = out + 9 };
    http_text_uint(&t, 7, 3);
    http_text_str(&t, "-");
    http_text_uint(&t, 1234, 1);
    CHECK(http_text_end(&t) && strcmp(out, "007-1234") == 0, "text: zero padding, then the NUL");
    t = (struct http_text){ .p = out, .end = out + 8 };
    http_text_str(&t, "12345678");
    CHECK(!http_text_end(&t), "text: no room for the NUL is remembered");
    t = (struct http_text){ .p = out, .end = out + 32 };
    http_text_uint(&t, 18446744073709551615ULL, 1);
    CHECK(http_text_end(&t) && strcmp(out, "18446744073709551615") == 0, "text: 2^64 - 1");
    t = (struct http_text){ .p = out, .end = out + 32 };
    http_text_uint(&t, 5, 25);
    CHECK(http_text_end(&t) && strcmp(out, "00000000000000000005") == 0,
          "text: zero padding stops at 20 digits");
}

int main(void)
{
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        /* An input with a NUL in it (its rule says so) goes on after it. */
        size_t n = strlen(c->input);
        if (strstr(c->rule, "NUL") != NULL)
            n += 1 + strlen(c->input + n + 1);
        test_parse_case(c, n);
    }
    test_parse_limits();
    test_parse_fields();
    for (size_t i = 0; i < sizeof chunk_cases / sizeof chunk_cases[0]; i++)
        test_chunk_case(&chunk_cases[i]);
    test_chunk_limits();
    test_dates();
    test_conditions();
    test_routes();
    test_responses();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
