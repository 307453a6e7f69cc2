/*
 * http/date.c - HTTP dates, both ways (see date.h).  No sockets; the clock
 * is read only to place a two-digit year.
 */
#define _DEFAULT_SOURCE /* timegm */

#include "date.h"

#include "text.h"

#include <stdbool.h>
#include <string.h>

/*
 * Not strftime: its day and month names follow the locale, and it would
 * drag snprintf's kilobyte of stack buffers into every thread (see text.h).
 */
void http_format_date(time_t t, char *out)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    struct http_text x = { .p = out, .end = out + HTTP_DATE_LEN + 1 };

    out[0] = '\0';
    if (t == (time_t)-1 || gmtime_r(&t, &tm) == NULL || tm.tm_year < 1000 - 1900 ||
        tm.tm_year > 9999 - 1900)
        return;
    http_text_mem(&x, days[tm.tm_wday], 3);
    http_text_str(&x, ", ");
    http_text_uint(&x, (unsigned)tm.tm_mday, 2);
    http_text_str(&x, " ");
    http_text_mem(&x, months[tm.tm_mon], 3);
    http_text_str(&x, " ");
    http_text_uint(&x, (unsigned)(tm.tm_year + 1900), 4);
    http_text_str(&x, " ");
    http_text_uint(&x, (unsigned)tm.tm_hour, 2);
    http_text_str(&x, ":");
    http_text_uint(&x, (unsigned)tm.tm_min, 2);
    http_text_str(&x, ":");
    http_text_uint(&x, (unsigned)tm.tm_sec, 2);
    http_text_str(&x, " GMT");
    if (!http_text_end(&x))
        out[0] = '\0';
}

/*
 * Match s[0..n) against one HTTP-date shape into *tm: 'D' a digit of the
 * day ('_' one that may be a space, for asctime's " 6"), 'Y' of the year,
 * 'h', 'i', 's' of the hour, minute and second, 'M' a letter of the month
 * name, 'a' any letter; anything else stands for itself.
 */
static bool match_date_shape(const char *s, size_t n, const char *shape, struct tm *tm)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const char fields[] = "DYhis";
    int v[5] = { 0 };       /* day, year, hour, minute, second */
    const char *month = NULL;

    if (n != strlen(shape))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char got = (unsigned char)s[i];
        const char *field = strchr(fields, shape[i] == '_' ? 'D' : shape[i]);
        if (shape[i] == '_' && got == ' ')
            continue;
        if (field != NULL) {        /* shape[i] is never NUL here */
            if (got < '0' || got > '9')
                return false;
            int k = (int)(field - fields);
            v[k] = v[k] * 10 + (got - '0');
        } else if (shape[i] == 'M' || shape[i] == 'a') {
            if (!((got >= 'a' && got <= 'z') || (got >= 'A' && got <= 'Z')))
                return false;
            if (shape[i] == 'M' && month == NULL)
                month = s + i;
        } else if (got != (unsigned char)shape[i]) {
            return false;
        }
    }
    const char *m = NULL;
    for (size_t k = 0; month != NULL && k + 3 <= sizeof months - 1 && m == NULL; k += 3)
        if (memcmp(months + k, month, 3) == 0)
            m = months + k;
    if (m == NULL || v[0] < 1 || v[0] > 31 || v[2] > 23 || v[3] > 59 || v[4] > 60)
        return false;
    memset(tm, 0, sizeof *tm);
    tm->tm_mday = v[0];
    tm->tm_mon = (int)((m - months) / 3);
    tm->tm_year = v[1] - 1900;
    tm->tm_hour = v[2];
    tm->tm_min = v[3];
    tm->tm_sec = v[4];
    return true;
}

/*
 * All three formats are accepted (RFC 9110 5.6.7): IMF-fixdate
 * "Sun, 06 Nov 1994 08:49:37 GMT", and the obsolete RFC 850
 * "Sunday, 06-Nov-94 08:49:37 GMT" and asctime "Sun Nov  6 08:49:37 1994".
 * Day names are not checked against the date.
 */
time_t http_parse_date(const char *s, size_t n)
{
    struct tm tm;
    size_t name = 0;

    if (match_date_shape(s, n, "aaa, DD MMM YYYY hh:ii:ss GMT", &tm) ||
        match_date_shape(s, n, "aaa MMM _D hh:ii:ss YYYY", &tm))
        return timegm(&tm);
    /* RFC 850: a whole day name, then a two-digit year. */
    while (name < n && ((s[name] >= 'a' && s[name] <= 'z') || (s[name] >= 'A' && s[name] <= 'Z')))
        name++;
    if (name < 6 || !match_date_shape(s + name, n - name, ", DD-MMM-YY hh:ii:ss GMT", &tm))
        return -1;
    /* A two-digit year more than 50 years ahead is in the last century
     * (RFC 9110 5.6.7). */
    struct tm now;
    time_t t = time(NULL);
    if (gmtime_r(&t, &now) == NULL)
        return -1;
    int this_year = now.tm_year + 1900;
    int year = this_year - this_year % 100 + tm.tm_year + 1900;
    if (year > this_year + 50)
        year -= 100;
    tm.tm_year = year - 1900;
    return timegm(&tm);
}
