/*
 * http/conditional.h - conditional and range requests (RFC 9110 13 and 14)
 * for a file: which answer (200, 206, 304 or 416) and its validator and
 * Content-Range headers.  No sockets: the file is known by its struct stat.
 *
 * Two steps, because the request head does not live as long as the answer:
 * http_read_conditions copies what the head asked while its bytes are
 * still there; later, with the file open, http_decide_file_answer judges
 * it against the file.
 */
#ifndef GRACEFUL_HTTP_CONDITIONAL_H
#define GRACEFUL_HTTP_CONDITIONAL_H

#include "parse.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <time.h>

/* A strong entity tag: '"', three 20-digit numbers, two '-', '"', NUL. */
#define HTTP_ETAG_MAX 72
/* Longest If-None-Match value kept for matching; a longer list never
 * matches, so the whole file is sent: slower, never wrong. */
#define HTTP_IF_NONE_MATCH_MAX 160

/*
 * What a GET or HEAD asked about the file, copied out of the request head
 * (whose bytes the caller overwrites with what follows it).
 */
struct http_conditions {
    bool if_none_match;             /* If-None-Match present */
    char none_match[HTTP_IF_NONE_MATCH_MAX]; /* its value; "" when too long */
    time_t if_modified_since;       /* -1: absent or not a valid date */
    bool range;                     /* a valid single byte range */
    long long first, last;          /* bytes=first-last; last -1: to the end */
    long long suffix;               /* bytes=-suffix; -1: not that form */
    bool if_range;                  /* If-Range present */
    char range_tag[HTTP_ETAG_MAX];  /* its entity tag, or "" */
    time_t range_date;              /* its date, or -1 */
};

enum http_file_answer {
    HTTP_ANSWER_FULL,               /* 200: the whole file */
    HTTP_ANSWER_PART,               /* 206: one range of it */
    HTTP_ANSWER_NOT_MODIFIED,       /* 304 */
    HTTP_ANSWER_UNSATISFIABLE       /* 416 */
};

/* Fill *cond from the fields of the parsed head req. */
void http_read_conditions(const struct http_request *req, struct http_conditions *cond);

/*
 * The file's strong entity tag into out[0..cap) (HTTP_ETAG_MAX is enough),
 * or "" if it does not fit.
 */
void http_format_etag(const struct stat *st, char *out, size_t cap);

/*
 * The answer for the file st, whose tag is etag; for HTTP_ANSWER_PART the
 * bytes to send are [*first, *first + *len), otherwise *first is 0 and
 * *len the file's size.  Reads the clock: a date in the future is ignored.
 */
enum http_file_answer http_decide_file_answer(const struct http_conditions *cond,
                                              const struct stat *st, const char *etag,
                                              long long *first, long long *len);

/*
 * The headers that go with answer (ETag, Last-Modified, Accept-Ranges,
 * Content-Range), each ending in CRLF, into out[0..cap) as a C string.
 * Returns false if they do not fit.
 */
bool http_format_file_headers(enum http_file_answer answer, const char *etag,
                              const struct stat *st, long long first, long long len,
                              char *out, size_t cap);

#endif /* GRACEFUL_HTTP_CONDITIONAL_H */
