/*
 * http/parse.c - the request-head parser (see parse.h).  No sockets: the
 * caller hands it the bytes received so far, as often as it likes.
 */
#include "parse.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

bool http_is_tchar(unsigned char ch)
{
    /* RFC 9110 5.6.2 token characters. */
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9'))
        return true;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool is_vchar(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f;
}

bool http_is_field_char(unsigned char ch)
{
    /* No CTLs: NUL, CR, LF, DEL ... */
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static enum http_parse_result parse_error(int *status, int code)
{
    *status = code;
    return HTTP_PARSE_ERROR;
}

static bool token_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static enum http_method method_from(const char *s, size_t n, bool *known)
{
    static const char *const others[] = {
        "DELETE", "PATCH", "TRACE", "CONNECT",
    };

    *known = true;
    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (n == 3 && memcmp(s, "GET", 3) == 0)
        return HTTP_GET;
    if (n == 4 && memcmp(s, "HEAD", 4) == 0)
        return HTTP_HEAD;
    if (n == 3 && memcmp(s, "PUT", 3) == 0)
        return HTTP_PUT;
    if (n == 7 && memcmp(s, "OPTIONS", 7) == 0)
        return HTTP_OPTIONS;
    if (n == 4 && memcmp(s, "POST", 4) == 0)
        return HTTP_POST;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (strlen(others[i]) == n && memcmp(s, others[i], n) == 0)
            return HTTP_OTHER_KNOWN;
    *known = false;
    return HTTP_OTHER_KNOWN;
}

/*
 * Validate a request line, method SP target SP HTTP/D.D, of n bytes.  When
 * !complete, s is only the start of the line: return PARTIAL if it could
 * still become valid, so garbage is rejected at its first bad byte rather
 * than after a timeout.
 */
static enum http_parse_result parse_request_line(const char *s, size_t n,
                                                 bool complete,
                                                 struct http_request *req,
                                                 int *status)
{
    static const char version[] = "HTTP/D.D";
    size_t i = 0;

    while (i < n && http_is_tchar((unsigned char)s[i]))
        i++;
    size_t method_len = i;
    /* Longer than any method we know: not implemented, whatever follows
     * (414 is about the target, not the method). */
    if (method_len > HTTP_METHOD_MAX)
        return parse_error(status, 501);
    if (i == n)
        return complete ? parse_error(status, 400) : HTTP_PARSE_PARTIAL;
    if (s[i] != ' ' || method_len == 0)
        return parse_error(status, 400);

    size_t target_start = ++i;
    while (i < n && is_vchar((unsigned char)s[i]))
        i++;
    size_t target_len = i - target_start;
    /* A fragment is for the client alone; one sent to us is a malformed
     * target (RFC 9112 3.2: origin-form has no fragment). */
    if (memchr(s + target_start, '#', target_len) != NULL)
        return parse_error(status, 400);
    if (i == n)
        return complete ? parse_error(status, 400) : HTTP_PARSE_PARTIAL;
    if (s[i] != ' ' || target_len == 0)
        return parse_error(status, 400);

    size_t v = ++i;
    for (size_t k = 0; v + k < n; k++) {
        if (k >= sizeof version - 1)
            return parse_error(status, 400);
        char want = version[k];
        char got = s[v + k];
        if (want == 'D' ? (got < '0' || got > '9') : got != want)
            return parse_error(status, 400);
    }
    if (n - v < sizeof version - 1)
        return complete ? parse_error(status, 400) : HTTP_PARSE_PARTIAL;

    if (s[v + 5] != '1')
        return parse_error(status, 505);
    bool known;
    req->method = method_from(s, method_len, &known);
    if (!known)
        return parse_error(status, 501);
    req->target = s + target_start;
    req->target_len = target_len;
    /* HTTP/1.2 and later minor versions are compatible with 1.1. */
    req->minor_version = s[v + 7] == '0' ? 0 : 1;
    return HTTP_PARSE_DONE;
}

bool http_parse_digits(const char *s, size_t n, long long *out)
{
    long long v = 0;

    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        int d = s[i] - '0';
        if (v > (LLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void parse_connection_tokens(const char *s, size_t n,
                                    struct http_request *req)
{
    size_t i = 0;

    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        size_t start = i;
        while (i < n && s[i] != ',' && s[i] != ' ' && s[i] != '\t')
            i++;
        if (token_eq(s + start, i - start, "close"))
            req->conn_close = 1;
        else if (token_eq(s + start, i - start, "keep-alive"))
            req->conn_keep_alive = 1;
    }
}

/*
 * Host: uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2), strictly: not
 * empty, a reg-name or an IP literal in brackets, a port of 1-5 digits.
 * A comma, space, '/', '@' or '?' is not part of a host: a list of hosts,
 * a path or userinfo sent as Host is rejected, not guessed at.
 */
static bool valid_host(const char *s, size_t n)
{
    size_t i = 0;

    if (n > 0 && s[0] == '[') {
        /* IP-literal: hex digits, ':' and '.' (IPv6, IPv4-mapped) or an
         * IPvFuture; checked loosely, but it must end in ']'. */
        for (i = 1; i < n && s[i] != ']'; i++)
            if (!http_is_tchar((unsigned char)s[i]) && s[i] != ':')
                return false;
        if (i == n || i == 1)
            return false;
        i++;
    } else {
        /* reg-name: unreserved, pct-encoded, sub-delims but ','. */
        while (i < n && s[i] != ':') {
            unsigned char ch = (unsigned char)s[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || (ch != '\0' && strchr("-._~%!$&'()*+;=", ch));
            if (!ok)
                return false;
            i++;
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (s[i] != ':' || n - i - 1 == 0 || n - i - 1 > 5)
        return false;
    for (i++; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/*
 * Transfer-Encoding's value: 0 if it is exactly "chunked" (case-insensitive,
 * RFC 9112 7), else the status to answer.  Strict, since the framing of
 * the body depends on it:
 *   - chunked must be the last coding, or the length of the body cannot be
 *     known: 400 (RFC 9112 6.3); that includes "identity", "xchunked" and
 *     "chunked;a=b", which are not chunked;
 *   - chunked twice ("chunked, chunked") is forbidden (RFC 9112 6.1): 400;
 *   - an empty element (an empty value, a leading, trailing or double
 *     comma) is 400: RFC 9110 5.6.1 asks a recipient to skip empty list
 *     elements, but in a framing header we refuse to guess;
 *   - other codings before chunked (gzip, chunked) are valid but not
 *     implemented: 501 (RFC 9112 6.1).
 */
static int parse_transfer_encoding(const char *s, size_t n)
{
    size_t i = 0;
    bool other = false, chunked_last = false;

    for (;;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t start = i;
        while (i < n && http_is_tchar((unsigned char)s[i]))
            i++;
        size_t len = i - start;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        bool params = i < n && s[i] == ';';
        while (i < n && s[i] != ',')     /* parameters: any coding but chunked */
            i++;
        if (len == 0)
            return 400;                  /* empty element, or junk */
        if (chunked_last)
            return 400;                  /* something after chunked */
        if (!params && token_eq(s + start, len, "chunked"))
            chunked_last = true;
        else
            other = true;
        if (i == n)
            break;
        i++;                            /* the comma */
    }
    if (!chunked_last)
        return 400;
    return other ? 501 : 0;
}

/* Keep a field's value; a second line of it leaves an empty value (see
 * struct http_request). */
static void keep_field(const char **field, size_t *len, const char *value, size_t value_len)
{
    *len = *field == NULL ? value_len : 0;
    *field = value;
}

/* One complete header line (without CRLF). */
static enum http_parse_result parse_header(const char *s, size_t n,
                                           struct http_request *req,
                                           int *status)
{
    size_t i = 0;

    /* A line starting with whitespace is obs-fold, rejected (RFC 9112 5.2). */
    while (i < n && http_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ':')
        return parse_error(status, 400);
    const char *name = s;
    size_t name_len = i++;

    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    const char *value = s + i;
    for (; i < n; i++)
        if (!http_is_field_char((unsigned char)s[i]))
            return parse_error(status, 400);
    size_t value_len = (size_t)(s + n - value);
    while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        value_len--;

    if (token_eq(name, name_len, "Content-Length")) {
        long long cl;
        if (!http_parse_digits(value, value_len, &cl))
            return parse_error(status, 400);
        /* Two different lengths is the classic request-smuggling shape. */
        if (req->content_length >= 0 && req->content_length != cl)
            return parse_error(status, 400);
        req->content_length = cl;
    } else if (token_eq(name, name_len, "Host")) {
        if (req->has_host || !valid_host(value, value_len))
            return parse_error(status, 400);
        req->has_host = 1;
    } else if (token_eq(name, name_len, "Transfer-Encoding")) {
        /* One line only: two would be one list split in two, and a
         * proxy that reads only one of them frames the body otherwise.
         * HTTP/1.0 has no transfer codings (RFC 9112 6.1). */
        if (req->chunked || req->minor_version == 0)
            return parse_error(status, 400);
        int st = parse_transfer_encoding(value, value_len);
        if (st != 0)
            return parse_error(status, st);
        req->chunked = 1;
    } else if (token_eq(name, name_len, "Connection")) {
        parse_connection_tokens(value, value_len, req);
    } else if (token_eq(name, name_len, "Expect")) {
        if (!token_eq(value, value_len, "100-continue"))
            return parse_error(status, 417);
        req->expect_continue = 1;
    } else if (token_eq(name, name_len, "If-None-Match")) {
        keep_field(&req->if_none_match, &req->if_none_match_len, value, value_len);
    } else if (token_eq(name, name_len, "If-Modified-Since")) {
        keep_field(&req->if_modified_since, &req->if_modified_since_len, value, value_len);
    } else if (token_eq(name, name_len, "Range")) {
        keep_field(&req->range, &req->range_len, value, value_len);
    } else if (token_eq(name, name_len, "If-Range")) {
        keep_field(&req->if_range, &req->if_range_len, value, value_len);
    }
    return HTTP_PARSE_DONE;
}

enum http_parse_result http_parse_request(const char *buf, size_t len,
                                          struct http_request *req,
                                          int *status)
{
    return http_parse_request_resume(buf, len, 0, req, status);
}

enum http_parse_result http_parse_request_resume(const char *buf, size_t len,
                                                 size_t last_len,
                                                 struct http_request *req,
                                                 int *status)
{
    size_t pos = 0;
    int headers = 0;
    bool have_request_line = false;

    if (last_len == 0) {
        memset(req, 0, sizeof *req);
        req->content_length = -1;
    } else {
        /* The lines before resume_pos were complete last time, and
         * judged: what they said is in *req already. */
        pos = req->resume_pos;
        headers = req->resume_fields;
        have_request_line = req->resume_past_request_line;
    }

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    while (!have_request_line && pos + 2 <= len && buf[pos] == '\r' && buf[pos + 1] == '\n')
        pos += 2;

    for (;;) {
        const char *line = buf + pos;
        const char *lf = memchr(line, '\n', len - pos);

        if (lf == NULL) {
            size_t have = len - pos;
            if (!have_request_line) {
                /* The CR of the CRLF may have arrived without its LF. */
                size_t check = have > 0 && line[have - 1] == '\r' ? have - 1 : have;
                if (parse_request_line(line, check, false, req, status) == HTTP_PARSE_ERROR)
                    return HTTP_PARSE_ERROR;
                /* Measured like a whole line, without its CR: the answer
                 * must not depend on how the bytes arrive. */
                if (check > HTTP_REQUEST_LINE_MAX)
                    return parse_error(status, 414);
            }
            if (len >= HTTP_HEAD_MAX)
                return parse_error(status, have_request_line ? 431 : 414);
            req->resume_pos = pos;
            req->resume_fields = headers;
            req->resume_past_request_line = have_request_line;
            return HTTP_PARSE_PARTIAL;
        }
        /* Lines end in CRLF; a bare LF is rejected rather than guessed at. */
        if (lf == line || lf[-1] != '\r')
            return parse_error(status, 400);
        size_t n = (size_t)(lf - line) - 1;
        pos += n + 2;
        if (pos > HTTP_HEAD_MAX)
            return parse_error(status, have_request_line ? 431 : 414);

        if (!have_request_line) {
            if (parse_request_line(line, n, true, req, status) != HTTP_PARSE_DONE)
                return HTTP_PARSE_ERROR;
            if (n > HTTP_REQUEST_LINE_MAX)
                return parse_error(status, 414);
            have_request_line = true;
            continue;
        }
        if (n == 0)
            break;
        if (++headers > HTTP_HEADERS_MAX)
            return parse_error(status, 431);
        if (parse_header(line, n, req, status) != HTTP_PARSE_DONE)
            return HTTP_PARSE_ERROR;
    }

    /* RFC 9112 3.2: a 1.1 request without Host gets 400. */
    if (req->minor_version == 1 && !req->has_host)
        return parse_error(status, 400);
    /* Both framings at once is the classic smuggling shape; RFC 9112 6.1
     * lets a server reject it, and we do (then close: see reply_error). */
    if (req->chunked && req->content_length >= 0)
        return parse_error(status, 400);
    req->head_len = pos;
    return HTTP_PARSE_DONE;
}
