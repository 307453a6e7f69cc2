/*
 * http/chunked.h - the chunked-body decoder (RFC 9112 7.1), like the
 * request parser (parse.h): bytes in, decoded bytes or an error out, no
 * sockets (fuzz/fuzz_chunked.c, http/test.c).
 */
#ifndef GRACEFUL_HTTP_CHUNKED_H
#define GRACEFUL_HTTP_CHUNKED_H

/* enum http_parse_result, and the head's limits that trailers share. */
#include "parse.h"

#include <stddef.h>

/*
 * It is incremental: the body may arrive in pieces of any size, cut
 * anywhere, and the decoder keeps between calls only the few counters
 * below, never input bytes.  Initialise with http_chunked_init; the fields
 * are its own.
 */
struct http_chunked {
    int state;              /* where in the chunked-body grammar */
    unsigned long long size; /* the chunk size being read, then the data
                               bytes of the chunk still to come */
    long long total;        /* decoded bytes so far */
    long long max_body;     /* decoded bytes allowed in all */
    size_t line_len;        /* bytes of the current chunk-size line */
    size_t token_len;       /* bytes of the current size or extension token */
    size_t trailer_len;     /* bytes of trailer fields so far */
    int trailers;           /* trailer fields so far */
};

/* Most hex digits in a chunk size, leading zeros included (2^64 - 1). */
#define HTTP_CHUNK_SIZE_DIGITS 16
/* Longest chunk-size line: size and extensions, and the CR that ends it. */
#define HTTP_CHUNK_LINE_MAX 1024

/* Start decoding a new body, of at most max_body decoded bytes (0 when
 * negative). */
void http_chunked_init(struct http_chunked *d, long long max_body);

/*
 * Decode the next piece in[0..len) of a chunked body.  The decoded data
 * goes to out (room for len bytes; out may be in itself, as the decoded
 * bytes never overtake the input), its length to *out_len, and the number
 * of input bytes used to *used.  Returns HTTP_PARSE_PARTIAL when all of in
 * was used and the body goes on; HTTP_PARSE_DONE when the body (its final
 * CRLF included) ended at in + *used, and what follows belongs to the next
 * request; HTTP_PARSE_ERROR with *status 400 (bad framing), 413 (a chunk
 * size takes the decoded total past max_body: decided before its data
 * arrives) or 431 (trailer fields beyond the head limits).  After DONE or
 * ERROR, any further input is an error.  Never reads past in + len.
 */
enum http_parse_result http_chunked_decode(struct http_chunked *d,
                                           const char *in, size_t len,
                                           char *out, size_t *out_len,
                                           size_t *used, int *status);

#endif /* GRACEFUL_HTTP_CHUNKED_H */
