/*
 * http/route.c - this server's routes (see route.h).
 */
#include "route.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* NAME: 1..HTTP_FILE_NAME_MAX of [A-Za-z0-9._-], no leading dot.  This alone
 * keeps every name inside the data directory: no '/', no "..", and no
 * percent-decoding, so "%2e%2e" is just an invalid name. */
static bool valid_file_name(const char *s, size_t n)
{
    if (n == 0 || n > HTTP_FILE_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* ms=N, N in 0..HTTP_SLEEP_MS_MAX; -1 for anything else. */
static long parse_sleep_query(const char *q, size_t n)
{
    long ms = 0;

    if (n < 4 || n > 8 || memcmp(q, "ms=", 3) != 0)
        return -1;
    for (size_t i = 3; i < n; i++) {
        if (q[i] < '0' || q[i] > '9')
            return -1;
        ms = ms * 10 + (q[i] - '0');
    }
    return ms <= HTTP_SLEEP_MS_MAX ? ms : -1;
}

static void route_error(struct http_route *rt, int status, const char *allow)
{
    rt->kind = HTTP_ROUTE_ERROR;
    rt->status = status;
    rt->allow = allow;
}

/* OPTIONS on a route answers what route_error's 405 would list. */
static void route_allowed(struct http_route *rt, const struct http_request *req, const char *allow)
{
    if (req->method == HTTP_OPTIONS) {
        rt->kind = HTTP_ROUTE_OPTIONS;
        rt->allow = allow;
    } else {
        route_error(rt, 405, allow);
    }
}

void http_resolve_route(const struct http_request *req, struct http_route *rt)
{
    static const char get_head[] = "Allow: GET, HEAD, OPTIONS\r\n";
    static const char get_head_post[] = "Allow: GET, HEAD, POST, OPTIONS\r\n";
    static const char get_head_put[] = "Allow: GET, HEAD, PUT, OPTIONS\r\n";
    const char *t = req->target;
    size_t n = req->target_len;
    bool get_or_head = req->method == HTTP_GET || req->method == HTTP_HEAD;

    /* asterisk-form (RFC 9112 3.2.4): OPTIONS about the server as a whole. */
    if (n == 1 && t[0] == '*') {
        if (req->method == HTTP_OPTIONS)
            route_allowed(rt, req, "Allow: GET, HEAD, POST, PUT, OPTIONS\r\n");
        else
            route_error(rt, 400, NULL);
        return;
    }
    /* absolute-form (RFC 9112 3.2.2, which a server MUST accept): use only
     * the path after the authority.  Schemes are case-insensitive. */
    size_t scheme = 0;
    if (n > 4 && strncasecmp(t, "http", 4) == 0) {
        scheme = t[4] == 's' || t[4] == 'S' ? 5 : 4;
        scheme = n > scheme + 3 && memcmp(t + scheme, "://", 3) == 0 ? scheme + 3 : 0;
    }
    if (scheme > 0) {
        const char *slash = memchr(t + scheme, '/', n - scheme);
        /* No path, or no host: an http URI with an empty host is invalid,
         * and a recipient MUST reject it (RFC 9110 4.2.1). */
        if (slash == NULL || slash == t + scheme) {
            route_error(rt, 400, NULL);
            return;
        }
        n -= (size_t)(slash - t);
        t = slash;
    }
    const char *q = memchr(t, '?', n);
    size_t path_len = q ? (size_t)(q - t) : n;

    if (t[0] != '/') {
        route_error(rt, 400, NULL);
    } else if (path_len == 1) {
        /* POST / takes a body and discards it: a client (or a conformance
         * probe) can check that its body is read, whatever its framing. */
        if (get_or_head || req->method == HTTP_POST)
            rt->kind = HTTP_ROUTE_ROOT;
        else
            route_allowed(rt, req, get_head_post);
    } else if (path_len == 6 && memcmp(t, "/sleep", 6) == 0) {
        rt->sleep_ms = q ? parse_sleep_query(q + 1, n - path_len - 1) : -1;
        if (!get_or_head)
            route_allowed(rt, req, get_head);
        else if (rt->sleep_ms < 0)
            route_error(rt, 400, NULL);
        else
            rt->kind = HTTP_ROUTE_SLEEP;
    } else if (path_len > 7 && memcmp(t, "/files/", 7) == 0) {
        const char *name = t + 7;
        size_t name_len = path_len - 7;
        if (!valid_file_name(name, name_len)) {
            route_error(rt, 400, NULL);
        } else if (!get_or_head && req->method != HTTP_PUT) {
            route_allowed(rt, req, get_head_put);
        } else {
            rt->kind = HTTP_ROUTE_FILE;
            memcpy(rt->name, name, name_len);
            rt->name[name_len] = '\0';
        }
    } else {
        route_error(rt, 404, NULL);
    }
}
