/*
 * http/text.c - building short strings without printf (see text.h for why).
 * No sockets, no allocation: a pure function of its arguments.
 */
#include "text.h"

#include <string.h>

void http_text_mem(struct http_text *t, const char *s, size_t n)
{
    if (t->full || (size_t)(t->end - t->p) < n) {
        t->full = true;
        return;
    }
    memcpy(t->p, s, n);
    t->p += n;
}

void http_text_str(struct http_text *t, const char *s)
{
    http_text_mem(t, s, strlen(s));
}

void http_text_uint(struct http_text *t, unsigned long long v, size_t width)
{
    char digits[20];        /* enough for 2^64 - 1 */
    size_t n = 0;

    do {
        digits[sizeof digits - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 || (n < width && n < sizeof digits));
    http_text_mem(t, digits + sizeof digits - n, n);
}

bool http_text_end(struct http_text *t)
{
    http_text_mem(t, "", 1);
    return !t->full;
}
