/*
 * http/response.h - a response head, as text.  No sockets: handler.c
 * formats the head here and sends it, with the body, itself.
 */
#ifndef GRACEFUL_HTTP_RESPONSE_H
#define GRACEFUL_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

struct http_response {
    int status;
    const char *content_type;
    const char *extra_headers;  /* complete "Name: value\r\n" lines, or NULL */
    long long content_length;
    const void *body;           /* content_length bytes, or NULL: caller
                                   sends the body itself after the head */
    bool head_only;             /* HEAD: headers as for GET, no body */
    bool keep_alive;
    bool http10_keep_alive;     /* an HTTP/1.0 client asked for keep-alive */
};

/* The reason phrase for status ("Not Found"); "Unknown" for one we never send. */
const char *http_status_reason(int status);

/*
 * The response head into out[0..cap), with date as the Date value ("": no
 * Date).  Returns its length, or 0 if it does not fit (a bug: cap is sized
 * for the longest head we build).
 */
size_t http_format_head(const struct http_response *r, const char *date, char *out,
                        size_t cap);

/* "<status> <reason>\n" into out[0..cap): an error's body.  Returns out, or
 * NULL if it does not fit. */
const char *http_status_body(int status, char *out, size_t cap);

#endif /* GRACEFUL_HTTP_RESPONSE_H */
