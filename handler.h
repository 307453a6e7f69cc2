/*
 * handler.h - the narrow interface between the process (server.c) and one
 * connection (handler.c).
 *
 * server.c accepts a socket, starts a thread and calls conn_serve(); it never
 * looks inside HTTP.  handler.c never looks at signals, the listener or the
 * other threads: everything it must know about the process's shutdown arrives
 * as two file descriptors it can poll(), and one flag it can read, described
 * below.
 */
#ifndef GRACEFUL_HANDLER_H
#define GRACEFUL_HANDLER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What every connection shares; owned by server.c, read-only to handlers. */
struct conn_env {
    int data_dir_fd;        /* open directory: uploads live here */
    /*
     * The two shutdown phases, as the read ends of pipes whose write ends
     * server.c closes.  Closing a write end is a broadcast: from then on
     * every poll() on the read end reports it readable (EOF), in every
     * thread, forever - like closing a channel in Go.
     */
    int drain_fd;           /* readable once graceful shutdown has begun */
    int force_fd;           /* readable once remaining work must be cut */
    /*
     * Drain as a flag, for the question every response asks ("has drain
     * begun? then say Connection: close").  server.c sets it just before
     * it closes the drain pipe.  Asking drain_fd costs a poll() syscall per
     * response (a third of the syscalls of a keep-alive request); this is
     * a plain memory load.  The waits still watch drain_fd: a thread
     * blocked in poll() cannot watch a flag.
     */
    const atomic_bool *draining;
    long long max_body;     /* largest accepted request body, in bytes */
    /*
     * A request head must arrive whole within this many ms of its first
     * byte (of the connection, for a first request), and a body may stall
     * no longer than this between two reads; either answers 408.
     */
    int header_timeout_ms;
};

/*
 * Serve HTTP/1.1 requests on the connected socket fd until the client
 * closes, an error ends the connection, or shutdown makes it idle or cuts
 * it.  Closes fd before returning, in stages where unread input could turn
 * the close into a reset (see conn_close()).
 */
void conn_serve(int fd, const struct conn_env *env);

/*
 * Answer a connection that will get no thread (server at --max-conns, or
 * pthread_create failed) with 503 and Connection: close, then close fd.
 * Never blocks: it is called from the accept loop.
 */
void conn_reject_busy(int fd);

/*
 * Remove temporary upload files (".upload-PID-FD", "-N" added on a name clash) left in the data
 * directory by servers that no longer run (killed with SIGKILL, or a crash:
 * every orderly path removes its own).  A file is a leftover when nobody
 * holds its lock; see upload_temp_create.  Returns how many it removed.
 */
int uploads_remove_stale(int data_dir_fd);

/*
 * The request parser: bytes in, a parsed request head or an error out, no
 * sockets involved (so it can be fuzzed and unit-tested on its own).
 */
enum http_method {
    HTTP_GET, HTTP_HEAD, HTTP_PUT, HTTP_OPTIONS, HTTP_POST,
    HTTP_OTHER_KNOWN /* DELETE, PATCH, ... */
};

struct http_request {
    enum http_method method;
    const char *target;     /* points into the caller's buffer */
    size_t target_len;
    int minor_version;      /* HTTP/1.<minor_version>: 0 or 1 */
    long long content_length; /* -1 when the header is absent */
    int has_host;
    int chunked;            /* Transfer-Encoding: chunked (then no
                               Content-Length, and HTTP/1.1) */
    int conn_close;         /* Connection: close */
    int conn_keep_alive;    /* Connection: keep-alive */
    int expect_continue;    /* Expect: 100-continue */
    /*
     * Fields for conditional and range requests, as raw values pointing
     * into the caller's buffer (NULL when absent).  A field sent twice
     * keeps an empty value, which never matches and never parses: the
     * whole file is then sent, which is always a correct answer.
     */
    const char *if_none_match;
    size_t if_none_match_len;
    const char *if_modified_since;
    size_t if_modified_since_len;
    const char *range;
    size_t range_len;
    const char *if_range;
    size_t if_range_len;
    size_t head_len;        /* bytes of the head, including the blank line */
};

enum http_parse_result {
    HTTP_PARSE_DONE,        /* *req holds a complete head */
    HTTP_PARSE_PARTIAL,     /* no error yet; more bytes are needed */
    HTTP_PARSE_ERROR        /* *status holds the HTTP status to answer */
};

/* Largest request head accepted (request line plus headers). */
#define HTTP_HEAD_MAX 16384
/* Largest request line; a longer one is answered with 414. */
#define HTTP_REQUEST_LINE_MAX 8192
/* Most header fields accepted; more is answered with 431. */
#define HTTP_HEADERS_MAX 100

/* Longest method accepted; a longer token is answered with 501 at once. */
#define HTTP_METHOD_MAX 32

/*
 * Parse the request head at the start of buf[0..len).  Returns
 * HTTP_PARSE_DONE and fills *req, HTTP_PARSE_PARTIAL when buf holds only a
 * prefix of a valid head, or HTTP_PARSE_ERROR and sets *status (400, 414,
 * 417, 431, 501, 505).  Never reads past buf + len.
 */
enum http_parse_result http_parse_request(const char *buf, size_t len,
                                          struct http_request *req,
                                          int *status);

/*
 * The chunked-body decoder (RFC 9112 7.1), like the request parser: bytes
 * in, decoded bytes or an error out, no sockets.  It is incremental: the
 * body may arrive in pieces of any size, cut anywhere, and the decoder
 * keeps between calls only the few counters below, never input bytes.
 * Initialise with http_chunked_init; the fields are its own.
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
/* Longest chunk-size line (size and extensions, without CRLF). */
#define HTTP_CHUNK_LINE_MAX 1024

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

#endif /* GRACEFUL_HANDLER_H */
