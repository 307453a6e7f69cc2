/* lesson/http.c - see http.h. */
#define _POSIX_C_SOURCE 200809L /* strncasecmp */

#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t http_head_length(const char *buf, size_t len)
{
    for (size_t i = 4; i <= len; i++)
        if (memcmp(buf + i - 4, "\r\n\r\n", 4) == 0)
            return i;
    return 0;
}

/* The value of header NAME in the head (NUL-terminated), or NULL. */
static const char *header(const char *head, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':')
            return p + 3 + n + strspn(p + 3 + n, " \t");
    return NULL;
}

/* Does a header value (up to its CRLF) hold TOKEN in its comma list? */
static bool has_token(const char *value, const char *token)
{
    size_t n = strlen(token);

    while (value && *value != '\r') {
        value += strspn(value, " \t,");
        if (strncasecmp(value, token, n) == 0 && strchr(" \t,\r", value[n]))
            return true;
        value += strcspn(value, ",\r");
    }
    return false;
}

/* N from "/sleep?ms=N" (0 to HTTP_SLEEP_MAX digits only), else -1. */
static int sleep_ms(const char *target)
{
    const char *digits = target + strlen("/sleep?ms=");
    size_t n = strspn(digits, "0123456789");

    long ms;

    if (strncmp(target, "/sleep?ms=", strlen("/sleep?ms=")) != 0 ||
        n == 0 || n > 5 || digits[n] != '\0')
        return -1;
    ms = strtol(digits, NULL, 10);      /* five digits at most: no overflow */
    return ms > HTTP_SLEEP_MAX ? -1 : (int)ms;
}

void http_parse(const char *buf, size_t len, struct http_request *rq)
{
    char head[HTTP_HEAD_MAX + 1], method[8], target[256], minor[2];
    const char *length;
    int end = 0;

    *rq = (struct http_request){ .status = 400, .sleep_ms = -1 };
    if (len < 4 || len > HTTP_HEAD_MAX || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0) {
        rq->status = 431;
        return;
    }
    memcpy(head, buf, len);
    head[len] = '\0';
    if (sscanf(head, "%7[A-Z] %255[^ \r\n] HTTP/1.%1[0-9]%n", method, target,
               minor, &end) != 3 || strncmp(head + end, "\r\n", 2) != 0)
        return;
    if (minor[0] > '1') {
        rq->status = 505;
        return;
    }
    length = header(head, "content-length");
    if (header(head, "transfer-encoding") || (length && strspn(length, "0") !=
                                              strcspn(length, " \t\r"))) {
        rq->status = 501;
        return;
    }
    rq->keep_alive = minor[0] == '1' ? !has_token(header(head, "connection"), "close")
                                     : has_token(header(head, "connection"), "keep-alive");
    rq->head_only = strcmp(method, "HEAD") == 0;
    rq->sleep_ms = sleep_ms(target);
    if (!rq->head_only && strcmp(method, "GET") != 0)
        rq->status = 405;
    else if (strcmp(target, "/") != 0 && rq->sleep_ms < 0)
        rq->status = 404;
    else
        rq->status = 200;
    if (rq->status != 200)
        rq->sleep_ms = -1;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Bad Request";
    }
}

size_t http_format(const struct http_request *rq, char *out, size_t cap)
{
    char body[64];
    int n;

    if (rq->status == 200 && rq->sleep_ms >= 0)
        (void)snprintf(body, sizeof body, "slept %d ms\n", rq->sleep_ms);
    else if (rq->status == 200)
        (void)snprintf(body, sizeof body, "hello from the lesson\n");
    else
        (void)snprintf(body, sizeof body, "%d %s\n", rq->status, reason(rq->status));
    n = snprintf(out, cap, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                 "Content-Length: %zu\r\nConnection: %s\r\n%s\r\n%s",
                 rq->status, reason(rq->status), strlen(body),
                 rq->keep_alive ? "keep-alive" : "close",
                 rq->status == 405 ? "Allow: GET, HEAD\r\n" : "",
                 rq->head_only ? "" : body);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}
