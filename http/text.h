/*
 * http/text.h - building short strings without printf.
 *
 * A cursor filling a fixed buffer.  Response heads and the few other
 * strings a connection builds are assembled with these rather than
 * snprintf: glibc's printf keeps over a kilobyte of work buffers on the
 * stack, and that alone gave every connection thread another resident
 * stack page (see struct conn in handler.c).  Running out of room is
 * remembered, never silent: callers check `full`, or the result of
 * http_text_end.
 *
 *     char buf[32];
 *     struct http_text t = { .p = buf, .end = buf + sizeof buf };
 *     http_text_str(&t, "slept ");
 *     http_text_uint(&t, ms, 1);
 *     if (!http_text_end(&t))
 *         ...it did not fit...
 */
#ifndef GRACEFUL_HTTP_TEXT_H
#define GRACEFUL_HTTP_TEXT_H

#include <stdbool.h>
#include <stddef.h>

struct http_text {
    char *p;                /* where the next byte goes */
    char *end;              /* one past the last usable byte */
    bool full;              /* something did not fit */
};

/* Append s[0..n); if it does not fit, append nothing and set t->full. */
void http_text_mem(struct http_text *t, const char *s, size_t n);

/* Append the C string s (without its NUL), like http_text_mem. */
void http_text_str(struct http_text *t, const char *s);

/* Append v in decimal, zero-padded to at least `width` digits (at most 20). */
void http_text_uint(struct http_text *t, unsigned long long v, size_t width);

/* NUL-terminate the text.  Returns true if everything fitted, false if
 * anything (this NUL included) did not. */
bool http_text_end(struct http_text *t);

#endif /* GRACEFUL_HTTP_TEXT_H */
