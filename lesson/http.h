/*
 * lesson/http.h - the HTTP every lesson stage shares: no sockets, no
 * threads, no signals.  Keeping it out of the stages keeps their
 * diffs to the one thing the lesson is about, shutdown.
 *
 * It is a small, honest HTTP/1.1: GET and HEAD of / and /sleep?ms=N, with
 * Content-Length on every response, keep-alive by default in HTTP/1.1,
 * Connection: close honoured, HTTP/1.0 closing, pipelined requests answered
 * in order by the caller.  A request with a body is answered 501 and the
 * connection closes, since its framing is not followed.
 */
#ifndef LESSON_HTTP_H
#define LESSON_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_HEAD_MAX 8192   /* the largest request head we read */
#define HTTP_REPLY_MAX 512   /* the largest response http_format writes */
#define HTTP_SLEEP_MAX 60000 /* the longest /sleep, in ms */

struct http_request {
    int status;         /* the answer: 200, 400, 404, 405, 431, 501, 505 */
    int sleep_ms;       /* GET /sleep?ms=N: wait N ms before answering; else -1 */
    bool head_only;     /* HEAD: the same head, no body */
    bool keep_alive;    /* the connection may carry another request */
};

/* The length of the request head at the start of buf[0..len), through its
 * blank line; 0 while it has not all arrived. */
size_t http_head_length(const char *buf, size_t len);

/* Parse the head buf[0..len) (len from http_head_length, or a full buffer
 * that holds no whole head: 431) into *rq. */
void http_parse(const char *buf, size_t len, struct http_request *rq);

/* Write the response to *rq into out (cap >= HTTP_REPLY_MAX); returns its
 * length.  rq->keep_alive chooses Connection: keep-alive or close. */
size_t http_format(const struct http_request *rq, char *out, size_t cap);

#endif
