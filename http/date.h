/*
 * http/date.h - HTTP dates (RFC 9110 5.6.7), both ways, without the locale
 * and without printf.
 */
#ifndef GRACEFUL_HTTP_DATE_H
#define GRACEFUL_HTTP_DATE_H

#include <stddef.h>
#include <time.h>

/* An IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT". */
#define HTTP_DATE_LEN 29

/*
 * t (seconds since the epoch) as an IMF-fixdate into out[HTTP_DATE_LEN + 1],
 * or "" when t is -1 or outside the years 1000-9999 (RFC 9110 6.6.1: a
 * server without a usable clock sends no Date).
 */
void http_format_date(time_t t, char *out);

/*
 * s[0..n), an HTTP-date in any of its three formats, as seconds since the
 * epoch; -1 when it is none of them.  A two-digit RFC 850 year is read
 * against the current year, so the result depends on the clock.
 */
time_t http_parse_date(const char *s, size_t n);

#endif /* GRACEFUL_HTTP_DATE_H */
