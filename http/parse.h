/*
 * http/parse.h - the request-head parser: bytes in, a parsed request head
 * or an error out.  No sockets, no allocation, no clock: it can be fuzzed
 * (fuzz/fuzz_parser.c) and unit-tested (http/test.c) on its own, and
 * `make unit` fails if any of http/ calls more than memory, string and
 * calendar functions (the Makefile's http-pure).
 */
#ifndef GRACEFUL_HTTP_PARSE_H
#define GRACEFUL_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

enum http_method {
    HTTP_GET, HTTP_HEAD, HTTP_PUT, HTTP_OPTIONS, HTTP_POST,
    HTTP_OTHER_KNOWN /* DELETE, PATCH, ... */
};

/* A parsed request head. */
struct http_request {
    enum http_method method;
    const char *target;     /* points into the caller's buffer */
    size_t target_len;
    int minor_version;      /* HTTP/1.<minor_version>: 0 or 1 */
    long long content_length; /* -1 when the header is absent */
    int has_host;
    int chunked;            /* Transfer-Encoding: chunked (then no
                               Content-Length, and HTTP/1.1) */
    int conn_close;         /* Connection: close */
    int conn_keep_alive;    /* Connection: keep-alive */
    int expect_continue;    /* Expect: 100-continue */
    /*
     * Fields for conditional and range requests, as raw values pointing
     * into the caller's buffer (NULL when absent).  A field sent twice
     * keeps an empty value, which never matches and never parses: the
     * whole file is then sent, which is always a correct answer.
     */
    const char *if_none_match;
    size_t if_none_match_len;
    const char *if_modified_since;
    size_t if_modified_since_len;
    const char *range;
    size_t range_len;
    const char *if_range;
    size_t if_range_len;
    size_t head_len;        /* bytes of the head, including the blank line */
    /*
     * The parser's own, for http_parse_request_resume: after PARTIAL,
     * where the first line not yet complete starts, the header fields
     * before it, and whether the request line was among them.
     */
    size_t resume_pos;
    int resume_fields;
    bool resume_past_request_line;
};

enum http_parse_result {
    HTTP_PARSE_DONE,        /* *req holds a complete head */
    HTTP_PARSE_PARTIAL,     /* no error yet; more bytes are needed */
    HTTP_PARSE_ERROR        /* *status holds the HTTP status to answer */
};

/* Largest request head accepted (request line plus headers). */
#define HTTP_HEAD_MAX 16384
/* Largest request line; a longer one is answered with 414. */
#define HTTP_REQUEST_LINE_MAX 8192
/* Most header fields accepted; more is answered with 431. */
#define HTTP_HEADERS_MAX 100

/* Longest method accepted; a longer token is answered with 501 at once. */
#define HTTP_METHOD_MAX 32

/*
 * Parse the request head at the start of buf[0..len).  Returns
 * HTTP_PARSE_DONE and fills *req, HTTP_PARSE_PARTIAL when buf holds only a
 * prefix of a valid head, or HTTP_PARSE_ERROR and sets *status (400, 414,
 * 417, 431, 501, 505).  Never reads past buf + len.
 */
enum http_parse_result http_parse_request(const char *buf, size_t len,
                                          struct http_request *req,
                                          int *status);

/*
 * The same, resumed: when last_len is not 0, buf[0..last_len) was parsed by
 * the previous call, which returned HTTP_PARSE_PARTIAL into this same *req,
 * and buf has only grown since.  The lines that call found complete are not
 * parsed again, so a head arriving a line at a time costs one parse of
 * each line instead of one of the whole head per line (picohttpparser's
 * last_len, which only saves the search for the blank line).  last_len 0 is
 * http_parse_request.  Same results, byte for byte.
 */
enum http_parse_result http_parse_request_resume(const char *buf, size_t len,
                                                 size_t last_len,
                                                 struct http_request *req,
                                                 int *status);

/*
 * The character classes and the number grammar that the chunk decoder
 * (trailer fields) and the range logic (positions) share with the head.
 */

/* A token character (RFC 9110 5.6.2): what a method or field name is made of. */
bool http_is_tchar(unsigned char ch);

/* A byte allowed in a field value: field-vchar, SP, HTAB, obs-text; no CTLs. */
bool http_is_field_char(unsigned char ch);

/*
 * s[0..n) as 1*DIGIT (Content-Length's grammar: no sign, no spaces) into
 * *out.  Returns false, and leaves *out alone, when it is empty, holds
 * anything but digits, or overflows a long long.
 */
bool http_parse_digits(const char *s, size_t n, long long *out);

#endif /* GRACEFUL_HTTP_PARSE_H */
