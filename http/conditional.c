/*
 * http/conditional.c - conditional and range requests (see conditional.h).
 */
#define _POSIX_C_SOURCE 200809L /* st_mtim */

#include "conditional.h"

#include "date.h"
#include "text.h"

#include <string.h>
#include <strings.h>

/*
 * Range: "bytes=first-last", "bytes=first-" or "bytes=-suffix" (RFC 9110
 * 14.1.2).  Anything else - another unit, several ranges, last < first -
 * is not a range we serve, and is ignored (RFC 9110 14.2 allows it): the
 * whole file is sent.
 */
static void parse_range(const char *s, size_t n, struct http_conditions *cond)
{
    static const char unit[] = "bytes=";
    const size_t u = sizeof unit - 1;

    if (n <= u || strncasecmp(s, unit, u) != 0)
        return;
    s += u;
    n -= u;
    const char *dash = memchr(s, '-', n);
    if (dash == NULL)
        return;
    /* Positions are 1*DIGIT, the grammar of Content-Length. */
    size_t a = (size_t)(dash - s), b = n - a - 1;
    if (a == 0) {
        if (!http_parse_digits(dash + 1, b, &cond->suffix))
            return;
    } else {
        if (!http_parse_digits(s, a, &cond->first))
            return;
        if (b > 0 && (!http_parse_digits(dash + 1, b, &cond->last) || cond->last < cond->first))
            return;
    }
    cond->range = true;
}

/* Copy the value to out[0..cap) as a C string, or "" when it does not fit. */
static void copy_value(const char *s, size_t n, char *out, size_t cap)
{
    if (n >= cap)
        n = 0;
    memcpy(out, s, n);
    out[n] = '\0';
}

void http_read_conditions(const struct http_request *req, struct http_conditions *cond)
{
    cond->if_none_match = req->if_none_match != NULL;
    cond->none_match[0] = '\0';
    if (cond->if_none_match)
        copy_value(req->if_none_match, req->if_none_match_len, cond->none_match,
                   sizeof cond->none_match);
    cond->if_modified_since = req->if_modified_since == NULL ? -1 :
        http_parse_date(req->if_modified_since, req->if_modified_since_len);
    cond->range = false;
    cond->first = 0;
    cond->last = -1;
    cond->suffix = -1;
    /* Range is defined for GET only (RFC 9110 14.2). */
    if (req->range != NULL && req->method == HTTP_GET)
        parse_range(req->range, req->range_len, cond);
    cond->if_range = req->if_range != NULL;
    cond->range_tag[0] = '\0';
    cond->range_date = -1;
    if (cond->if_range && req->if_range_len > 0 && req->if_range[0] == '"')
        copy_value(req->if_range, req->if_range_len, cond->range_tag, sizeof cond->range_tag);
    else if (cond->if_range)
        cond->range_date = http_parse_date(req->if_range, req->if_range_len);
}

/*
 * The file's entity tag: its inode, size and modification time in ns.  An
 * upload renames a new file over the name, so every upload changes it.
 * Strong: two versions with the same tag have the same bytes.
 */
void http_format_etag(const struct stat *st, char *out, size_t cap)
{
    struct http_text t = { .p = out, .end = out + cap };

    http_text_str(&t, "\"");
    http_text_uint(&t, (unsigned long long)st->st_ino, 1);
    http_text_str(&t, "-");
    http_text_uint(&t, (unsigned long long)st->st_size, 1);
    http_text_str(&t, "-");
    http_text_uint(&t, (unsigned long long)st->st_mtim.tv_sec * 1000000000ULL +
                       (unsigned long long)st->st_mtim.tv_nsec, 1);
    http_text_str(&t, "\"");
    if (!http_text_end(&t))
        out[0] = '\0';
}

/*
 * Does the If-None-Match list name our tag?  "*" matches any file.  The
 * comparison is weak (RFC 9110 8.8.3.2): a "W/" prefix is ignored.  An
 * element that is not a quoted tag matches nothing.
 */
static bool none_match_hits(const char *list, const char *etag)
{
    size_t tag_len = strlen(etag);
    const char *p = list;

    if (strcmp(list, "*") == 0)
        return true;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        const char *end = p;
        if (*p == '"') {
            end = strchr(p + 1, '"');
            if (end == NULL)
                return false;
            end++;
            if ((size_t)(end - p) == tag_len && memcmp(p, etag, tag_len) == 0)
                return true;
        }
        while (*end != '\0' && *end != ',')
            end++;
        p = end;
    }
    return false;
}

/*
 * Evaluate the conditions in RFC 9110 13.2.2's order: If-None-Match, or
 * else If-Modified-Since, may answer 304; then a Range (kept only when an
 * If-Range validator still matches, strongly) answers 206 with
 * [*first, *first + *len) or 416.  Otherwise the whole file.
 */
enum http_file_answer http_decide_file_answer(const struct http_conditions *cond,
                                              const struct stat *st, const char *etag,
                                              long long *first, long long *len)
{
    long long size = (long long)st->st_size;

    *first = 0;
    *len = size;
    if (cond->if_none_match) {
        if (none_match_hits(cond->none_match, etag))
            return HTTP_ANSWER_NOT_MODIFIED;
    } else if (cond->if_modified_since >= 0 && cond->if_modified_since <= time(NULL) &&
               st->st_mtime <= cond->if_modified_since) {
        /* A date in the future is not a valid validator: ignored. */
        return HTTP_ANSWER_NOT_MODIFIED;
    }
    if (!cond->range)
        return HTTP_ANSWER_FULL;
    if (cond->if_range && strcmp(cond->range_tag, etag) != 0 &&
        (cond->range_date < 0 || cond->range_date != st->st_mtime))
        return HTTP_ANSWER_FULL;
    if (cond->suffix >= 0) {
        *len = cond->suffix < size ? cond->suffix : size;
        *first = size - *len;
        return *len > 0 ? HTTP_ANSWER_PART : HTTP_ANSWER_UNSATISFIABLE;
    }
    if (cond->first >= size)
        return HTTP_ANSWER_UNSATISFIABLE;
    *first = cond->first;
    long long last = cond->last < 0 || cond->last >= size ? size - 1 : cond->last;
    *len = last - cond->first + 1;
    return HTTP_ANSWER_PART;
}

/*
 * The validator headers, and for a 206 or 416 the Content-Range, into
 * out[0..cap).  False if they do not fit (a bug: cap is sized for them).
 */
bool http_format_file_headers(enum http_file_answer answer, const char *etag,
                              const struct stat *st, long long first, long long len,
                              char *out, size_t cap)
{
    struct http_text t = { .p = out, .end = out + cap };
    char modified[HTTP_DATE_LEN + 1];

    http_format_date(st->st_mtime, modified);
    if (answer != HTTP_ANSWER_UNSATISFIABLE) {
        http_text_str(&t, "ETag: ");
        http_text_str(&t, etag);
        http_text_str(&t, "\r\n");
        if (modified[0] != '\0') {
            http_text_str(&t, "Last-Modified: ");
            http_text_str(&t, modified);
            http_text_str(&t, "\r\n");
        }
    }
    if (answer != HTTP_ANSWER_NOT_MODIFIED)
        http_text_str(&t, "Accept-Ranges: bytes\r\n");
    if (answer == HTTP_ANSWER_PART || answer == HTTP_ANSWER_UNSATISFIABLE) {
        http_text_str(&t, "Content-Range: bytes ");
        if (answer == HTTP_ANSWER_PART) {
            http_text_uint(&t, (unsigned long long)first, 1);
            http_text_str(&t, "-");
            http_text_uint(&t, (unsigned long long)(first + len - 1), 1);
        } else {
            http_text_str(&t, "*");
        }
        http_text_str(&t, "/");
        http_text_uint(&t, (unsigned long long)st->st_size, 1);
        http_text_str(&t, "\r\n");
    }
    return http_text_end(&t);
}
