/*
 * handler.c - one connection: read requests, route them, write responses.
 *
 * A connection thread spends its life waiting: for the next request, for the
 * rest of a body, for room in the send buffer, for a /sleep to end.  Every
 * one of those waits is a poll() that also watches the shutdown pipes from
 * struct conn_env, so shutdown never has to reach into a blocked syscall:
 *
 *   - drain_fd is watched only while the connection is idle (no byte of a
 *     next request has arrived).  Idle connections close at once when
 *     graceful shutdown begins; busy ones finish what they started, and
 *     so do requests already pipelined behind it; the response that
 *     leaves nothing pending says Connection: close (decided from
 *     env->draining, the same news as a flag: a load instead of a poll per
 *     response; see stop_keep_alive_if_draining).
 *   - force_fd is watched by every wait.  When it fires, the connection is
 *     cut wherever it is, any half-written upload is removed, and the
 *     thread returns so the server can join it.
 *
 * Sockets stay in blocking mode, but every recv/send passes MSG_DONTWAIT and
 * falls back to poll() on EAGAIN: the fast path is one syscall, and the slow
 * path is a wait that shutdown can interrupt.  (One exception: between
 * keep-alive requests, where the fast path almost never happens, read_head
 * waits first.)
 */
#define _GNU_SOURCE /* MSG_NOSIGNAL, SOCK_* flags */

#include "handler.h"
#include "log.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* A new connection is not idle, even at shutdown, until this long after
 * accept (see read_head). */
#define FIRST_REQUEST_GRACE_MS 250
/* An idle keep-alive connection is closed after this long. */
#define KEEPALIVE_TIMEOUT_MS 30000
/* A response the client does not read may stall this long. */
#define SEND_TIMEOUT_MS 10000
/* Closing in stages: how long and how much unread input we discard. */
#define LINGER_MS 1000
#define LINGER_BYTES (1 << 20)
/* Closing an idle connection: how long to wait for a request that was
 * already on its way (see conn_close). */
#define IDLE_CLOSE_WAIT_MS 5
/* Buffer for file bodies, both directions. */
#define IO_CHUNK 65536
#define FILE_NAME_MAX 128
#define SLEEP_MS_MAX 60000
/* An IMF-fixdate (RFC 9110 5.6.7), "Sun, 06 Nov 1994 08:49:37 GMT". */
#define HTTP_DATE_LEN 29
/* Our longest response head is about 380 bytes (a 206 with Date,
 * Content-Type, a 19-digit Content-Length, Connection: keep-alive, ETag,
 * Last-Modified, Accept-Ranges and Content-Range). */
#define RESPONSE_HEAD_MAX 512

/*
 * Everything a connection owns, in one block on its thread's stack: its
 * state, the head of the response being sent, and the request buffer.
 * Only the pages a thread touches are resident; an idle keep-alive
 * connection touches three of its stack (glibc's thread descriptor and
 * TLS, the frames above this block, and the block's low end, where the
 * state, the head and the first request bytes share a page with the frames
 * below) and no heap at all.  A heap block would cost a page of its own,
 * and a malloc and free per connection on arenas that the threads share
 * (bench figure 6 measures the memory per idle connection).
 */
struct conn {
    int fd;
    const struct conn_env *env;
    size_t len;             /* bytes of buf received and not yet consumed */
    bool cut;               /* force_fd fired: skip every courtesy, just close */
    bool client_done;       /* the client will send nothing more: conn_close */
    bool idle_close;        /* we end it while idle (drain, keep-alive timeout) */
    bool wrote;             /* something was sent: see before_write */
    bool nodelay;           /* TCP_NODELAY is set */
    long long started_ms;   /* now_ms() when we began serving it */
    time_t date_second;     /* the second `date` shows; -1: none yet */
    char date[HTTP_DATE_LEN + 1];
    char head[RESPONSE_HEAD_MAX];
    char buf[HTTP_HEAD_MAX];
};

/* ------------------------------------------------------------------ */
/* Waiting                                                            */
/* ------------------------------------------------------------------ */

enum wait_result { WAIT_READY, WAIT_DRAIN, WAIT_FORCE, WAIT_TIMEOUT, WAIT_ERROR };

static long long now_ms(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait until fd is ready for events, or force_fd fires, or (when watch_drain)
 * drain_fd fires, or deadline (a now_ms() value; -1: none) passes.  The socket
 * is checked before drain_fd: a request whose bytes have arrived is served
 * even when shutdown began at the same moment.
 */
static enum wait_result wait_fd(struct conn *c, short events, bool watch_drain,
                                long long deadline)
{
    struct pollfd fds[3] = {
        { .fd = c->fd, .events = events },
        { .fd = c->env->force_fd, .events = POLLIN },
        { .fd = watch_drain ? c->env->drain_fd : -1, .events = POLLIN },
    };

    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            long long left = deadline - now_ms();
            if (left <= 0)
                return WAIT_TIMEOUT;
            timeout = left > INT_MAX ? INT_MAX : (int)left;
        }
        int n = poll(fds, 3, timeout);
        if (n < 0) {
            /* Shutdown signals are blocked in this thread, but a debugger
             * or a signal a reader adds can still interrupt us. */
            if (errno == EINTR)
                continue;
            return WAIT_ERROR;
        }
        if (n == 0)
            return WAIT_TIMEOUT;
        if (fds[1].revents) {
            c->cut = true;
            return WAIT_FORCE;
        }
        /* POLLHUP/POLLERR count as ready: the recv or send that follows
         * reports what happened. */
        if (fds[0].revents)
            return WAIT_READY;
        if (fds[2].revents)
            return WAIT_DRAIN;
    }
}

/* ------------------------------------------------------------------ */
/* Building text without printf                                       */
/* ------------------------------------------------------------------ */

/*
 * A cursor filling a fixed buffer.  Response heads and the few other
 * strings a connection builds are assembled with these rather than
 * snprintf: glibc's printf keeps over a kilobyte of work buffers on the
 * stack, and that alone gave every connection thread another resident
 * stack page (see struct conn).  Running out of room is remembered, never
 * silent: callers check `full`.
 */
struct text {
    char *p;                /* where the next byte goes */
    char *end;              /* one past the last usable byte */
    bool full;              /* something did not fit */
};

static void text_mem(struct text *t, const char *s, size_t n)
{
    if (t->full || (size_t)(t->end - t->p) < n) {
        t->full = true;
        return;
    }
    memcpy(t->p, s, n);
    t->p += n;
}

static void text_str(struct text *t, const char *s)
{
    text_mem(t, s, strlen(s));
}

/* v in decimal, zero-padded to at least `width` digits. */
static void text_uint(struct text *t, unsigned long long v, size_t width)
{
    char digits[20];        /* enough for 2^64 - 1 */
    size_t n = 0;

    do {
        digits[sizeof digits - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 || (n < width && n < sizeof digits));
    text_mem(t, digits + sizeof digits - n, n);
}

/* NUL-terminate the text; false if it did not fit. */
static bool text_end(struct text *t)
{
    text_mem(t, "", 1);
    return !t->full;
}

/*
 * t (seconds since the epoch) as an HTTP date into out[HTTP_DATE_LEN + 1],
 * or "" when the clock is unusable (RFC 9110 6.6.1: then send no Date).
 * Not strftime: its day and month names follow the locale, and it would
 * drag snprintf's kilobyte of stack buffers into every thread (see struct
 * text).
 */
static void format_http_date(time_t t, char *out)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    struct text x = { .p = out, .end = out + HTTP_DATE_LEN + 1 };

    out[0] = '\0';
    if (t == (time_t)-1 || gmtime_r(&t, &tm) == NULL || tm.tm_year < 1000 - 1900 ||
        tm.tm_year > 9999 - 1900)
        return;
    text_mem(&x, days[tm.tm_wday], 3);
    text_str(&x, ", ");
    text_uint(&x, (unsigned)tm.tm_mday, 2);
    text_str(&x, " ");
    text_mem(&x, months[tm.tm_mon], 3);
    text_str(&x, " ");
    text_uint(&x, (unsigned)(tm.tm_year + 1900), 4);
    text_str(&x, " ");
    text_uint(&x, (unsigned)tm.tm_hour, 2);
    text_str(&x, ":");
    text_uint(&x, (unsigned)tm.tm_min, 2);
    text_str(&x, ":");
    text_uint(&x, (unsigned)tm.tm_sec, 2);
    text_str(&x, " GMT");
    if (!text_end(&x))
        out[0] = '\0';
}

/* The Date value for a response on c: formatted once a second per
 * connection, not once per response. */
static const char *conn_date(struct conn *c)
{
    time_t now = time(NULL);

    if (now != c->date_second) {
        format_http_date(now, c->date);
        c->date_second = now;
    }
    return c->date;
}

/* ------------------------------------------------------------------ */
/* Writing                                                            */
/* ------------------------------------------------------------------ */

/*
 * Nagle's algorithm holds a small segment back while an earlier small one
 * is unacknowledged, for up to the peer's delayed-ACK timeout (40 ms).  A
 * connection's first write has nothing before it and is never held, so a
 * connection that carries one response (a client that connects per
 * request) is spared the setsockopt(TCP_NODELAY): a syscall per
 * connection.  A later write may follow one still unacknowledged - a file
 * sent in chunks, pipelined responses, the answer after 100 Continue - so
 * from the second write on Nagle is off.
 */
static void before_write(struct conn *c)
{
    if (c->wrote && !c->nodelay) {
        int one = 1;
        /* Failure is harmless: only latency suffers. */
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->nodelay = true;
    }
    c->wrote = true;
}

/*
 * Send every byte of iov[0..iovcnt).  Returns 0, or -1 when the client is
 * gone, stopped reading for SEND_TIMEOUT_MS, or shutdown forced the cut.
 * MSG_NOSIGNAL turns a vanished client into EPIPE here instead of a SIGPIPE
 * that would kill the whole process (server.c also ignores SIGPIPE, but
 * this file stays safe when lifted into a program that does not).
 */
static int send_all(struct conn *c, struct iovec *iov, int iovcnt)
{
    long long deadline = now_ms() + SEND_TIMEOUT_MS;

    before_write(c);
    while (iovcnt > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
        ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            if (wait_fd(c, POLLOUT, false, deadline) != WAIT_READY)
                return -1;
            continue;
        }
        size_t sent = (size_t)n;
        while (iovcnt > 0 && sent >= iov->iov_len) {
            sent -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + sent;
            iov->iov_len -= sent;
        }
    }
    return 0;
}

static const char *status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default:  return "Unknown";
    }
}

struct response {
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

/*
 * The response head into out[0..cap), with date as the Date value ("": no
 * Date).  Returns its length, or 0 if it does not fit (a bug: cap is sized
 * for the longest head we build).
 */
static size_t format_head(const struct response *r, const char *date, char *out, size_t cap)
{
    struct text t = { .p = out, .end = out + cap };

    text_str(&t, "HTTP/1.1 ");
    text_uint(&t, (unsigned)r->status, 3);
    text_str(&t, " ");
    text_str(&t, status_reason(r->status));
    if (date[0] != '\0') {
        text_str(&t, "\r\nDate: ");
        text_str(&t, date);
    }
    /* 204 and 304 have no content, and no Content-Length (RFC 9110 8.6). */
    if (r->status != 204 && r->status != 304) {
        text_str(&t, "\r\nContent-Type: ");
        text_str(&t, r->content_type);
        text_str(&t, "\r\nContent-Length: ");
        text_uint(&t, (unsigned long long)r->content_length, 1);
    }
    text_str(&t, "\r\n");
    if (!r->keep_alive)
        text_str(&t, "Connection: close\r\n");
    else if (r->http10_keep_alive)
        text_str(&t, "Connection: keep-alive\r\n");
    if (r->extra_headers)
        text_str(&t, r->extra_headers);
    text_str(&t, "\r\n");
    return t.full ? 0 : (size_t)(t.p - out);
}

/*
 * Send the head and, if r->body is set, the body in one sendmsg(): a
 * response split over two writes can wait 40 ms for a delayed ACK (Nagle).
 */
static int send_response(struct conn *c, const struct response *r)
{
    size_t head_len = format_head(r, conn_date(c), c->head, sizeof c->head);
    if (head_len == 0)
        return -1;

    struct iovec iov[2] = {
        { .iov_base = c->head, .iov_len = head_len },
        { .iov_base = (void *)r->body,
          .iov_len = r->body && !r->head_only ? (size_t)r->content_length : 0 },
    };
    return send_all(c, iov, iov[1].iov_len ? 2 : 1);
}

/* "<status> <reason>\n" into out[0..cap): an error's body.  NULL if it
 * does not fit. */
static const char *status_body(int status, char *out, size_t cap)
{
    struct text t = { .p = out, .end = out + cap };

    text_uint(&t, (unsigned)status, 3);
    text_str(&t, " ");
    text_str(&t, status_reason(status));
    text_str(&t, "\n");
    return text_end(&t) ? out : NULL;
}

/* A short text response: "<status> <reason>\n" or the given text. */
static int send_text(struct conn *c, int status, const char *text,
                     const char *extra_headers, bool head_only, bool keep_alive,
                     bool http10_keep_alive)
{
    char body[64];
    if (text == NULL) {
        text = status_body(status, body, sizeof body);
        if (text == NULL)
            return -1;
    }
    struct response r = {
        .status = status,
        .content_type = "text/plain; charset=utf-8",
        .extra_headers = extra_headers,
        .content_length = (long long)strlen(text),
        .body = text,
        .head_only = head_only,
        .keep_alive = keep_alive,
        .http10_keep_alive = http10_keep_alive,
    };
    return send_response(c, &r);
}

/* An error that ends the connection: the request's framing can't be trusted
 * or its body was not read. */
static void send_error_and_close(struct conn *c, int status, bool head_only)
{
    const char *extra = status == 503 ? "Retry-After: 1\r\n" : NULL;
    (void)send_text(c, status, NULL, extra, head_only, false, false);
}

/* ------------------------------------------------------------------ */
/* Closing                                                            */
/* ------------------------------------------------------------------ */

/*
 * Tests only, like RACE_WINDOW in server.c: in the server-race build, run
 * with GRACEFUL_RACE_IDLE_CLOSE set, the thread that closes an idle
 * connection holds still for GRACEFUL_RACE_WINDOW_MS after it has looked
 * for input and before it closes, so a test can send a request exactly
 * then.  (Opt-in: the other race tests end connections at drain and must
 * not wait for it.)  Nothing in any other build.
 */
#ifdef GRACEFUL_RACE_WINDOW_MS
static void race_window_idle_close(void)
{
    struct timespec left = { GRACEFUL_RACE_WINDOW_MS / 1000,
                             (GRACEFUL_RACE_WINDOW_MS % 1000) * 1000000L };

    if (getenv("GRACEFUL_RACE_IDLE_CLOSE") == NULL)
        return;
    log_line("race window open: idle-close");
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
    log_line("race window closed: idle-close");
}
#define RACE_WINDOW_IDLE_CLOSE() race_window_idle_close()
#else
#define RACE_WINDOW_IDLE_CLOSE() ((void)0)
#endif

static void discard_input(struct conn *c, long long wait_ms, bool until_acked);

/*
 * Close the connection without destroying a response the client has not
 * read yet, and without resetting a request it is sending us.  close() on a
 * socket with unread input, or one that input reaches afterwards, makes
 * the kernel send a RST instead of a FIN (RFC 9112 section 9.6, RFC 1122
 * 4.2.2.13).  Two cases need care:
 *
 *   - Input is pending (an error answered before the body was read,
 *     pipelined requests): a client that receives the RST may drop the
 *     response still in its buffer.  So we close in stages: shut the write
 *     side (the client reads our response, then EOF), discard what it
 *     still sends until it closes too or LINGER_MS pass, then close.
 *   - We end an idle connection (at drain, or after the keep-alive
 *     timeout): the client may be sending its next request at this very
 *     moment, not yet knowing we close, and would see "connection reset"
 *     instead of the clean EOF after which clients retry (RFC 9112
 *     9.3.1).  So we send our FIN first (shutdown), then discard whatever
 *     arrives until the client's kernel acknowledges the FIN (TCP delivers
 *     its bytes in order, so whatever it sent before it received our FIN
 *     has arrived by then), the client closes too, or IDLE_CLOSE_WAIT_MS
 *     pass.  The bound is short on purpose: a request already on its way
 *     over loopback or a LAN arrives well within it, while a silent
 *     client's kernel delays its ACK of a FIN (Linux: 40 ms at least), and
 *     waiting for that would hold every idle connection at the drain.  A
 *     request that takes longer than the bound to arrive (a long round
 *     trip) can still meet a RST, as it would without the wait.
 *
 * A connection whose client said its last request was the last and sent it
 * without a body is closed at once: such a client sends nothing more (RFC
 * 9112 9.6), so asking the socket (a recv syscall per connection) would
 * only confirm it.  A cut connection is closed at once too: the deadline
 * has passed.
 */
static void conn_close(struct conn *c)
{
    char byte;
    bool unread = c->len > 0;

    if (!unread && !c->cut && !c->client_done)
        unread = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
    if (c->idle_close && !unread)
        RACE_WINDOW_IDLE_CLOSE();

    if ((unread || c->idle_close) && !c->cut && shutdown(c->fd, SHUT_WR) == 0)
        discard_input(c, unread ? LINGER_MS : IDLE_CLOSE_WAIT_MS, !unread);
    /* close() of a socket cannot fail in a way we could act on: the
     * descriptor is released either way (POSIX leaves EINTR unspecified;
     * Linux always releases it). */
    (void)close(c->fd);
}

/*
 * Has the peer's kernel acknowledged our FIN?  Until then the socket is in
 * FIN_WAIT1.  A socket that is not TCP (a Unix socket handed to us by
 * systemd) has no FIN to wait for.
 */
static bool fin_acknowledged(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;

    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return true;
    return ti.tcpi_state != TCP_FIN_WAIT1;
}

/*
 * After shutdown(SHUT_WR): read and discard what the client sends until it
 * closes its side, wait_ms pass, or (until_acked) nothing is pending and
 * our FIN is acknowledged.
 */
static void discard_input(struct conn *c, long long wait_ms, bool until_acked)
{
    long long deadline = now_ms() + wait_ms;
    size_t discarded = 0;

    /* The request buffer is ours to overwrite now; a stack array here
     * would cost every thread another page of memory. */
    while (discarded < LINGER_BYTES) {
        ssize_t n = recv(c->fd, c->buf, HTTP_HEAD_MAX, MSG_DONTWAIT);
        if (n > 0) {
            discarded += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return;         /* the client closed too, or the socket failed */
        if (until_acked && fin_acknowledged(c->fd))
            return;
        /* No event tells of the acknowledgement: input, EOF or the
         * deadline ends this wait. */
        if (wait_fd(c, POLLIN, false, deadline) != WAIT_READY)
            return;
    }
}

void conn_reject_busy(int fd)
{
    /*
     * Called from the accept loop, so nothing here may block.  A fresh
     * socket's send buffer is empty, so the 503 fits in one non-blocking
     * send.  Then we discard whatever part of the request has already
     * arrived, so that close() sends a FIN rather than a RST; bytes that
     * arrive later can still draw a RST, the price of not lingering in the
     * accept loop.
     */
    char head[RESPONSE_HEAD_MAX], date[HTTP_DATE_LEN + 1];
    static const char body[] = "503 Service Unavailable: too many connections\n";
    struct response r = {
        .status = 503,
        .content_type = "text/plain; charset=utf-8",
        .extra_headers = "Retry-After: 1\r\n",
        .content_length = (long long)sizeof body - 1,
        .body = body,
    };
    format_http_date(time(NULL), date);
    size_t head_len = format_head(&r, date, head, sizeof head);
    struct iovec iov[2] = {
        { .iov_base = head, .iov_len = head_len },
        { .iov_base = (void *)body, .iov_len = sizeof body - 1 },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
    char scratch[4096];

    /* Best effort: a client that vanished already needs no answer. */
    (void)sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)shutdown(fd, SHUT_WR);
    /* Bounded: a client that keeps sending must not hold the accept loop. */
    for (int i = 0; i < 16 && recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0; i++)
        ;
    (void)close(fd);
}

/* ------------------------------------------------------------------ */
/* Parsing (no sockets: see http_parse_request in handler.h)          */
/* ------------------------------------------------------------------ */

static bool is_tchar(unsigned char ch)
{
    /* RFC 9110 5.6.2 token characters. */
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9'))
        return true;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool is_vchar(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f;
}

static bool is_field_char(unsigned char ch)
{
    /* field-vchar, SP, HTAB, obs-text; no CTLs (NUL, CR, LF, DEL ...). */
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static enum http_parse_result parse_error(int *status, int code)
{
    *status = code;
    return HTTP_PARSE_ERROR;
}

static bool token_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static enum http_method method_from(const char *s, size_t n, bool *known)
{
    static const char *const others[] = {
        "DELETE", "PATCH", "TRACE", "CONNECT",
    };

    *known = true;
    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (n == 3 && memcmp(s, "GET", 3) == 0)
        return HTTP_GET;
    if (n == 4 && memcmp(s, "HEAD", 4) == 0)
        return HTTP_HEAD;
    if (n == 3 && memcmp(s, "PUT", 3) == 0)
        return HTTP_PUT;
    if (n == 7 && memcmp(s, "OPTIONS", 7) == 0)
        return HTTP_OPTIONS;
    if (n == 4 && memcmp(s, "POST", 4) == 0)
        return HTTP_POST;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (strlen(others[i]) == n && memcmp(s, others[i], n) == 0)
            return HTTP_OTHER_KNOWN;
    *known = false;
    return HTTP_OTHER_KNOWN;
}

/*
 * Validate a request line, method SP target SP HTTP/D.D, of n bytes.  When
 * !complete, s is only the start of the line: return PARTIAL if it could
 * still become valid, so garbage is rejected at its first bad byte rather
 * than after a timeout.
 */
static enum http_parse_result parse_request_line(const char *s, size_t n,
                                                 bool complete,
                                                 struct http_request *req,
                                                 int *status)
{
    static const char version[] = "HTTP/D.D";
    size_t i = 0;

    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    size_t method_len = i;
    /* Longer than any method we know: not implemented, whatever follows
     * (414 is about the target, not the method). */
    if (method_len > HTTP_METHOD_MAX)
        return parse_error(status, 501);
    if (i == n)
        return complete ? parse_error(status, 400) : HTTP_PARSE_PARTIAL;
    if (s[i] != ' ' || method_len == 0)
        return parse_error(status, 400);

    size_t target_start = ++i;
    while (i < n && is_vchar((unsigned char)s[i]))
        i++;
    size_t target_len = i - target_start;
    /* A fragment is for the client alone; one sent to us is a malformed
     * target (RFC 9112 3.2: origin-form has no fragment). */
    if (memchr(s + target_start, '#', target_len) != NULL)
        return parse_error(status, 400);
    if (i == n)
        return complete ? parse_error(status, 400) : HTTP_PARSE_PARTIAL;
    if (s[i] != ' ' || target_len == 0)
        return parse_error(status, 400);

    size_t v = ++i;
    for (size_t k = 0; v + k < n; k++) {
        if (k >= sizeof version - 1)
            return parse_error(status, 400);
        char want = version[k];
        char got = s[v + k];
        if (want == 'D' ? (got < '0' || got > '9') : got != want)
            return parse_error(status, 400);
    }
    if (n - v < sizeof version - 1)
        return complete ? parse_error(status, 400) : HTTP_PARSE_PARTIAL;

    if (s[v + 5] != '1')
        return parse_error(status, 505);
    bool known;
    req->method = method_from(s, method_len, &known);
    if (!known)
        return parse_error(status, 501);
    req->target = s + target_start;
    req->target_len = target_len;
    /* HTTP/1.2 and later minor versions are compatible with 1.1. */
    req->minor_version = s[v + 7] == '0' ? 0 : 1;
    return HTTP_PARSE_DONE;
}

/* Content-Length: 1*DIGIT, no sign, no spaces, no overflow. */
static bool parse_content_length(const char *s, size_t n, long long *out)
{
    long long v = 0;

    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        int d = s[i] - '0';
        if (v > (LLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void parse_connection_tokens(const char *s, size_t n,
                                    struct http_request *req)
{
    size_t i = 0;

    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        size_t start = i;
        while (i < n && s[i] != ',' && s[i] != ' ' && s[i] != '\t')
            i++;
        if (token_eq(s + start, i - start, "close"))
            req->conn_close = 1;
        else if (token_eq(s + start, i - start, "keep-alive"))
            req->conn_keep_alive = 1;
    }
}

/*
 * Host: uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2), strictly: not
 * empty, a reg-name or an IP literal in brackets, a port of 1-5 digits.
 * A comma, space, '/', '@' or '?' is not part of a host: a list of hosts,
 * a path or userinfo sent as Host is rejected, not guessed at.
 */
static bool valid_host(const char *s, size_t n)
{
    size_t i = 0;

    if (n > 0 && s[0] == '[') {
        /* IP-literal: hex digits, ':' and '.' (IPv6, IPv4-mapped) or an
         * IPvFuture; checked loosely, but it must end in ']'. */
        for (i = 1; i < n && s[i] != ']'; i++)
            if (!is_tchar((unsigned char)s[i]) && s[i] != ':')
                return false;
        if (i == n || i == 1)
            return false;
        i++;
    } else {
        /* reg-name: unreserved, pct-encoded, sub-delims but ','. */
        while (i < n && s[i] != ':') {
            unsigned char ch = (unsigned char)s[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || (ch != '\0' && strchr("-._~%!$&'()*+;=", ch));
            if (!ok)
                return false;
            i++;
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (s[i] != ':' || n - i - 1 == 0 || n - i - 1 > 5)
        return false;
    for (i++; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/*
 * Transfer-Encoding's value: 0 if it is exactly "chunked" (case-insensitive,
 * RFC 9112 7), else the status to answer.  Strict, since the framing of
 * the body depends on it:
 *   - chunked must be the last coding, or the length of the body cannot be
 *     known: 400 (RFC 9112 6.3); that includes "identity", "xchunked" and
 *     "chunked;a=b", which are not chunked;
 *   - chunked twice ("chunked, chunked") is forbidden (RFC 9112 6.1): 400;
 *   - an empty element (an empty value, a leading, trailing or double
 *     comma) is 400: RFC 9110 5.6.1 asks a recipient to skip empty list
 *     elements, but in a framing header we refuse to guess;
 *   - other codings before chunked (gzip, chunked) are valid but not
 *     implemented: 501 (RFC 9112 6.1).
 */
static int parse_transfer_encoding(const char *s, size_t n)
{
    size_t i = 0;
    bool other = false, chunked_last = false;

    for (;;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t start = i;
        while (i < n && is_tchar((unsigned char)s[i]))
            i++;
        size_t len = i - start;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        bool params = i < n && s[i] == ';';
        while (i < n && s[i] != ',')     /* parameters: any coding but chunked */
            i++;
        if (len == 0)
            return 400;                  /* empty element, or junk */
        if (chunked_last)
            return 400;                  /* something after chunked */
        if (!params && token_eq(s + start, len, "chunked"))
            chunked_last = true;
        else
            other = true;
        if (i == n)
            break;
        i++;                            /* the comma */
    }
    if (!chunked_last)
        return 400;
    return other ? 501 : 0;
}

/* Keep a field's value; a second line of it leaves an empty value (see
 * struct http_request). */
static void keep_field(const char **field, size_t *len, const char *value, size_t value_len)
{
    *len = *field == NULL ? value_len : 0;
    *field = value;
}

/* One complete header line (without CRLF). */
static enum http_parse_result parse_header(const char *s, size_t n,
                                           struct http_request *req,
                                           int *status)
{
    size_t i = 0;

    /* A line starting with whitespace is obs-fold, rejected (RFC 9112 5.2). */
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ':')
        return parse_error(status, 400);
    const char *name = s;
    size_t name_len = i++;

    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    const char *value = s + i;
    for (; i < n; i++)
        if (!is_field_char((unsigned char)s[i]))
            return parse_error(status, 400);
    size_t value_len = (size_t)(s + n - value);
    while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        value_len--;

    if (token_eq(name, name_len, "Content-Length")) {
        long long cl;
        if (!parse_content_length(value, value_len, &cl))
            return parse_error(status, 400);
        /* Two different lengths is the classic request-smuggling shape. */
        if (req->content_length >= 0 && req->content_length != cl)
            return parse_error(status, 400);
        req->content_length = cl;
    } else if (token_eq(name, name_len, "Host")) {
        if (req->has_host || !valid_host(value, value_len))
            return parse_error(status, 400);
        req->has_host = 1;
    } else if (token_eq(name, name_len, "Transfer-Encoding")) {
        /* One line only: two would be one list split in two, and a
         * proxy that reads only one of them frames the body otherwise.
         * HTTP/1.0 has no transfer codings (RFC 9112 6.1). */
        if (req->chunked || req->minor_version == 0)
            return parse_error(status, 400);
        int st = parse_transfer_encoding(value, value_len);
        if (st != 0)
            return parse_error(status, st);
        req->chunked = 1;
    } else if (token_eq(name, name_len, "Connection")) {
        parse_connection_tokens(value, value_len, req);
    } else if (token_eq(name, name_len, "Expect")) {
        if (!token_eq(value, value_len, "100-continue"))
            return parse_error(status, 417);
        req->expect_continue = 1;
    } else if (token_eq(name, name_len, "If-None-Match")) {
        keep_field(&req->if_none_match, &req->if_none_match_len, value, value_len);
    } else if (token_eq(name, name_len, "If-Modified-Since")) {
        keep_field(&req->if_modified_since, &req->if_modified_since_len, value, value_len);
    } else if (token_eq(name, name_len, "Range")) {
        keep_field(&req->range, &req->range_len, value, value_len);
    } else if (token_eq(name, name_len, "If-Range")) {
        keep_field(&req->if_range, &req->if_range_len, value, value_len);
    }
    return HTTP_PARSE_DONE;
}

enum http_parse_result http_parse_request(const char *buf, size_t len,
                                          struct http_request *req,
                                          int *status)
{
    size_t pos = 0;
    int headers = 0;
    bool have_request_line = false;

    memset(req, 0, sizeof *req);
    req->content_length = -1;

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    while (pos + 2 <= len && buf[pos] == '\r' && buf[pos + 1] == '\n')
        pos += 2;

    for (;;) {
        const char *line = buf + pos;
        const char *lf = memchr(line, '\n', len - pos);

        if (lf == NULL) {
            size_t have = len - pos;
            if (!have_request_line) {
                /* The CR of the CRLF may have arrived without its LF. */
                size_t check = have > 0 && line[have - 1] == '\r' ? have - 1 : have;
                if (parse_request_line(line, check, false, req, status) == HTTP_PARSE_ERROR)
                    return HTTP_PARSE_ERROR;
                if (have > HTTP_REQUEST_LINE_MAX)
                    return parse_error(status, 414);
            }
            if (len >= HTTP_HEAD_MAX)
                return parse_error(status, have_request_line ? 431 : 414);
            return HTTP_PARSE_PARTIAL;
        }
        /* Lines end in CRLF; a bare LF is rejected rather than guessed at. */
        if (lf == line || lf[-1] != '\r')
            return parse_error(status, 400);
        size_t n = (size_t)(lf - line) - 1;
        pos += n + 2;
        if (pos > HTTP_HEAD_MAX)
            return parse_error(status, have_request_line ? 431 : 414);

        if (!have_request_line) {
            if (parse_request_line(line, n, true, req, status) != HTTP_PARSE_DONE)
                return HTTP_PARSE_ERROR;
            if (n > HTTP_REQUEST_LINE_MAX)
                return parse_error(status, 414);
            have_request_line = true;
            continue;
        }
        if (n == 0)
            break;
        if (++headers > HTTP_HEADERS_MAX)
            return parse_error(status, 431);
        if (parse_header(line, n, req, status) != HTTP_PARSE_DONE)
            return HTTP_PARSE_ERROR;
    }

    /* RFC 9112 3.2: a 1.1 request without Host gets 400. */
    if (req->minor_version == 1 && !req->has_host)
        return parse_error(status, 400);
    /* Both framings at once is the classic smuggling shape; RFC 9112 6.1
     * lets a server reject it, and we do (then close: see reply_error). */
    if (req->chunked && req->content_length >= 0)
        return parse_error(status, 400);
    req->head_len = pos;
    return HTTP_PARSE_DONE;
}

/* ------------------------------------------------------------------ */
/* Decoding chunked bodies (no sockets: see http_chunked_decode)      */
/* ------------------------------------------------------------------ */

/*
 * chunked-body = *chunk last-chunk trailer-section CRLF      (RFC 9112 7.1)
 * chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *
 * One state per place in that grammar where the next byte is judged
 * differently.  Strict throughout: the size is hex digits only, with no
 * sign, "0x" or whitespace; every line ends in CRLF; an extension is
 * ";name" or ";name=value" with no whitespace (RFC 9112 7.1.1 allows BWS
 * around ';' and '=', which no client we know sends) and is ignored; a
 * trailer field is parsed like a header field and discarded (RFC 9112
 * 7.1.2: never merged into the head, so a Content-Length there frames
 * nothing).
 */
enum chunk_state {
    CHUNK_SIZE,             /* hex digits of a chunk size */
    CHUNK_EXT_NAME,         /* after ';': an extension name */
    CHUNK_EXT_VALUE,        /* after '=': a token, or a quoted string */
    CHUNK_EXT_QUOTED,       /* inside a quoted-string value */
    CHUNK_EXT_ESCAPE,       /* after a backslash inside it */
    CHUNK_EXT_QUOTE_END,    /* after its closing quote */
    CHUNK_SIZE_LF,          /* the size line's CR seen: LF next */
    CHUNK_DATA,             /* size bytes of data */
    CHUNK_DATA_CR,          /* the CRLF after the data */
    CHUNK_DATA_LF,
    CHUNK_TRAILER_START,    /* a trailer field, or the final CRLF */
    CHUNK_TRAILER_NAME,
    CHUNK_TRAILER_VALUE,
    CHUNK_TRAILER_LF,
    CHUNK_END_LF,           /* the final CRLF's LF */
    CHUNK_FINISHED          /* done, or failed: no more input wanted */
};

void http_chunked_init(struct http_chunked *d, long long max_body)
{
    memset(d, 0, sizeof *d);
    d->state = CHUNK_SIZE;
    d->max_body = max_body < 0 ? 0 : max_body;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* qdtext or the byte after a backslash (RFC 9110 5.6.4), minus '"' and '\'. */
static bool is_qdtext(unsigned char ch)
{
    return ch == '\t' || ch == ' ' || ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) ||
           (ch >= 0x5d && ch <= 0x7e) || ch >= 0x80;
}

/*
 * The end of a chunk-size line's size or extension token: ';' starts an
 * extension, CR ends the line.  Anything else, or an empty token, is 400.
 */
static enum http_parse_result chunk_token_end(struct http_chunked *d, unsigned char ch)
{
    if (d->token_len == 0)
        return HTTP_PARSE_ERROR;
    d->token_len = 0;
    if (ch == ';')
        d->state = CHUNK_EXT_NAME;
    else if (ch == '\r')
        d->state = CHUNK_SIZE_LF;
    else
        return HTTP_PARSE_ERROR;
    return HTTP_PARSE_PARTIAL;
}

/*
 * Judge one framing byte (anything but chunk data).  Returns PARTIAL to go
 * on, DONE after the last byte of the body, or ERROR with *status set.
 */
static enum http_parse_result chunk_step(struct http_chunked *d, unsigned char ch, int *status)
{
    int digit;

    *status = 400;
    if (d->state <= CHUNK_EXT_QUOTE_END && ++d->line_len > HTTP_CHUNK_LINE_MAX)
        return HTTP_PARSE_ERROR;
    if (d->state >= CHUNK_TRAILER_START && d->state <= CHUNK_TRAILER_LF &&
        ++d->trailer_len > HTTP_HEAD_MAX) {
        *status = 431;
        return HTTP_PARSE_ERROR;
    }
    switch (d->state) {
    case CHUNK_SIZE:
        digit = hex_value(ch);
        if (digit >= 0) {
            if (++d->token_len > HTTP_CHUNK_SIZE_DIGITS)
                return HTTP_PARSE_ERROR;
            d->size = d->size * 16 + (unsigned)digit;
            return HTTP_PARSE_PARTIAL;
        }
        /* The size is complete: refuse it now if its data would take the
         * body past the limit, before a byte of that data arrives. */
        if (d->token_len > 0 && d->size > (unsigned long long)(d->max_body - d->total)) {
            *status = 413;
            return HTTP_PARSE_ERROR;
        }
        return chunk_token_end(d, ch);
    case CHUNK_EXT_NAME:
        if (is_tchar(ch)) {
            d->token_len++;
            return HTTP_PARSE_PARTIAL;
        }
        if (ch == '=' && d->token_len > 0) {
            d->token_len = 0;
            d->state = CHUNK_EXT_VALUE;
            return HTTP_PARSE_PARTIAL;
        }
        return chunk_token_end(d, ch);
    case CHUNK_EXT_VALUE:
        if (ch == '"' && d->token_len == 0) {
            d->state = CHUNK_EXT_QUOTED;
            return HTTP_PARSE_PARTIAL;
        }
        if (is_tchar(ch)) {
            d->token_len++;
            return HTTP_PARSE_PARTIAL;
        }
        return chunk_token_end(d, ch);
    case CHUNK_EXT_QUOTED:
        if (ch == '"')
            d->state = CHUNK_EXT_QUOTE_END;
        else if (ch == '\\')
            d->state = CHUNK_EXT_ESCAPE;
        else if (!is_qdtext(ch))
            return HTTP_PARSE_ERROR;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_EXT_ESCAPE:
        if (!is_qdtext(ch) && ch != '"' && ch != '\\')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_EXT_QUOTED;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_EXT_QUOTE_END:
        d->token_len = 1;       /* the quoted string was the token */
        return chunk_token_end(d, ch);
    case CHUNK_SIZE_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->line_len = 0;
        d->state = d->size == 0 ? CHUNK_TRAILER_START : CHUNK_DATA;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_DATA_CR:
        if (ch != '\r')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_DATA_LF;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_DATA_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_SIZE;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_START:
        if (ch == '\r') {
            d->state = CHUNK_END_LF;
            return HTTP_PARSE_PARTIAL;
        }
        /* A name, as in the head: no obs-fold, no empty name. */
        if (!is_tchar(ch))
            return HTTP_PARSE_ERROR;
        if (++d->trailers > HTTP_HEADERS_MAX) {
            *status = 431;
            return HTTP_PARSE_ERROR;
        }
        d->state = CHUNK_TRAILER_NAME;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_NAME:
        if (ch == ':')
            d->state = CHUNK_TRAILER_VALUE;
        else if (!is_tchar(ch))
            return HTTP_PARSE_ERROR;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_VALUE:
        if (ch == '\r')
            d->state = CHUNK_TRAILER_LF;
        else if (!is_field_char(ch))
            return HTTP_PARSE_ERROR;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_TRAILER_START;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_END_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_FINISHED;
        return HTTP_PARSE_DONE;
    default:
        return HTTP_PARSE_ERROR;    /* CHUNK_FINISHED: nothing more */
    }
}

enum http_parse_result http_chunked_decode(struct http_chunked *d,
                                           const char *in, size_t len,
                                           char *out, size_t *out_len,
                                           size_t *used, int *status)
{
    size_t i = 0, o = 0;

    *out_len = 0;
    *used = 0;
    while (i < len) {
        if (d->state == CHUNK_DATA) {
            size_t n = len - i;
            if (n > d->size)
                n = (size_t)d->size;
            /* memmove: out may be in, a little behind the input. */
            memmove(out + o, in + i, n);
            i += n;
            o += n;
            d->size -= n;
            d->total += (long long)n;
            *out_len = o;
            if (d->size == 0)
                d->state = CHUNK_DATA_CR;
            continue;
        }
        enum http_parse_result r = chunk_step(d, (unsigned char)in[i++], status);
        if (r == HTTP_PARSE_ERROR) {
            d->state = CHUNK_FINISHED;
            *used = i;
            return r;
        }
        if (r == HTTP_PARSE_DONE) {
            *used = i;
            return r;
        }
    }
    *used = i;
    return HTTP_PARSE_PARTIAL;
}

/* ------------------------------------------------------------------ */
/* Reading requests                                                   */
/* ------------------------------------------------------------------ */

enum head_result {
    HEAD_OK,        /* *req is a complete request head */
    HEAD_ERROR,     /* answer *status and close */
    HEAD_TIMEOUT,   /* partial head stalled: answer 408 and close */
    HEAD_END        /* close without an answer: EOF, idle at shutdown,
                       idle timeout, reset, or cut */
};

enum recv_result { RECV_GOT, RECV_AGAIN, RECV_END };

/*
 * One non-blocking read of request bytes into c->buf: RECV_GOT, RECV_AGAIN
 * (nothing there yet), or RECV_END (the client closed, mid-head or not:
 * nothing to say to it; or an error).  *parse says whether the new bytes
 * are worth a re-parse.
 */
static enum recv_result recv_more(struct conn *c, bool *parse)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, HTTP_HEAD_MAX - c->len, MSG_DONTWAIT);
        if (n > 0) {
            /* Re-parse only when a line may have completed, or while the
             * request line is incomplete (to reject garbage early): a
             * client trickling one byte at a time must not cost a full
             * parse per byte. */
            *parse = memchr(c->buf + c->len, '\n', (size_t)n) != NULL ||
                     memchr(c->buf, '\n', c->len) == NULL ||
                     c->len + (size_t)n == HTTP_HEAD_MAX;
            c->len += (size_t)n;
            return RECV_GOT;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return RECV_AGAIN;
        return RECV_END;
    }
}

/*
 * Read until c->buf holds a complete request head.  The connection counts
 * as idle, and so closes when graceful shutdown begins, only while not one
 * byte of the next request has arrived.
 */
static enum head_result read_head(struct conn *c, bool first,
                                  struct http_request *req, int *status)
{
    long long deadline = -1;
    bool parse = c->len > 0;    /* pipelined bytes from the last request */
    /*
     * After a response the client must read it before it sends its next
     * request, so a recv() at once almost always fails with EAGAIN: a
     * wasted syscall per request.  So wait first; a request that is already there (pipelined) ends the wait at
     * once.  A new connection's request usually is there: read first.
     */
    bool wait_first = !first && c->len == 0;

    if (first)
        deadline = now_ms() + c->env->header_timeout_ms;
    for (;;) {
        if (parse) {
            enum http_parse_result r = http_parse_request(c->buf, c->len, req, status);
            if (r == HTTP_PARSE_DONE)
                return HEAD_OK;
            if (r == HTTP_PARSE_ERROR)
                return HEAD_ERROR;
        }
        bool idle = c->len == 0;
        if (!idle && deadline < 0)
            deadline = now_ms() + c->env->header_timeout_ms;

        if (!wait_first) {
            enum recv_result got = recv_more(c, &parse);
            if (got == RECV_GOT)
                continue;
            if (got == RECV_END)
                return HEAD_END;
        }
        wait_first = false;
        parse = false;
        long long wait_until = idle && !first ? now_ms() + KEEPALIVE_TIMEOUT_MS : deadline;
        /*
         * A connection accepted a moment ago has almost surely sent its
         * request, which is still on the wire: closing it as idle would
         * fail a client that did nothing wrong (and that, on a fresh
         * connection, will not retry).  So drain ignores it for a short
         * while; Go's net/http does the same (golang/go#22682).
         */
        long long grace_end = c->started_ms + FIRST_REQUEST_GRACE_MS;
        bool in_grace = idle && first && now_ms() < grace_end;
        if (in_grace && grace_end < wait_until)
            wait_until = grace_end;
        switch (wait_fd(c, POLLIN, idle && !in_grace, wait_until)) {
        case WAIT_READY:
            continue;
        case WAIT_TIMEOUT:
            if (in_grace)
                continue;   /* wait again, now watching drain_fd */
            c->idle_close = idle;
            return idle ? HEAD_END : HEAD_TIMEOUT;
        case WAIT_DRAIN:
            c->idle_close = true;
            return HEAD_END;
        default:
            return HEAD_END;
        }
    }
}

/* Remove the first n bytes of c->buf, keeping what follows (pipelining). */
static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* ------------------------------------------------------------------ */
/* Routes                                                             */
/* ------------------------------------------------------------------ */

/* What the connection does after a request. */
enum next { NEXT_KEEP, NEXT_CLOSE };

struct exchange {
    struct conn *c;
    const struct http_request *req;
    bool head_only;
    bool keep_alive;        /* the client allows it and shutdown has not begun */
    bool http10_keep_alive;
};

/*
 * Has any byte of a next request arrived?  Pipelined bytes may already be in
 * c->buf, or still in the socket's receive queue: MSG_PEEK looks without
 * taking them.
 */
static bool next_request_started(struct conn *c)
{
    char byte;

    return c->len > 0 || recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/*
 * The drain's rule for a connection, decided when a response is written,
 * not when its request arrived: a /sleep or an upload that began before
 * Ctrl+C answers during the drain.  If the client has already sent (even
 * part of) its next request, that request was on its way before we could
 * say "close", so the connection stays for it, as an idle-at-drain
 * connection with a byte of its next request does (read_head).  Only the
 * response that leaves nothing pending says Connection: close, which tells
 * the client not to send a request we would not serve.  Dropping a request
 * that has arrived would be worse than slow: the client cannot tell whether
 * it ran, so it cannot safely retry a PUT.  The grace deadline still bounds
 * a client that keeps pipelining.
 */
static void stop_keep_alive_if_draining(struct exchange *x)
{
    if (x->keep_alive && atomic_load(x->c->env->draining) &&
        !next_request_started(x->c))
        x->keep_alive = false;
}

static int reply_text(struct exchange *x, int status, const char *text,
                      const char *extra)
{
    stop_keep_alive_if_draining(x);
    return send_text(x->c, status, text, extra, x->head_only, x->keep_alive,
                     x->http10_keep_alive);
}

static enum next reply_error(struct exchange *x, int status, const char *extra)
{
    /* 404, 405 and 416 to a request without a body leave the framing intact, so
     * the connection can stay; after any other error, or with a body left
     * unread, we cannot be sure where the next request starts. */
    if ((status != 404 && status != 405 && status != 416) || x->req->content_length > 0)
        x->keep_alive = false;
    if (reply_text(x, status, NULL, extra) != 0)
        return NEXT_CLOSE;
    return x->keep_alive ? NEXT_KEEP : NEXT_CLOSE;
}

static enum next reply_ok(struct exchange *x, int status, const char *text)
{
    if (reply_text(x, status, text, NULL) != 0)
        return NEXT_CLOSE;
    return x->keep_alive ? NEXT_KEEP : NEXT_CLOSE;
}

/* OPTIONS: 204 with what the route allows. */
static enum next reply_options(struct exchange *x, const char *allow)
{
    if (reply_text(x, 204, "", allow) != 0)
        return NEXT_CLOSE;
    return x->keep_alive ? NEXT_KEEP : NEXT_CLOSE;
}

static enum next route_root(struct exchange *x)
{
    return reply_ok(x, 200,
                    "graceful: a thread-per-connection server. Try /sleep?ms=2000 "
                    "and press Ctrl+C.\n");
}

/* /sleep?ms=N: simulated slow work that graceful shutdown waits for. */
static enum next route_sleep(struct exchange *x, long ms)
{
    /* Sleep on force_fd, not drain_fd: graceful shutdown lets this work
     * finish; only the deadline or a second signal cuts it short. */
    struct conn *c = x->c;
    long long deadline = now_ms() + ms;
    struct pollfd p = { .fd = c->env->force_fd, .events = POLLIN };
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        int n = poll(&p, 1, (int)left);
        if (n > 0) {
            c->cut = true;
            return NEXT_CLOSE;
        }
        if (n < 0 && errno != EINTR)
            return NEXT_CLOSE;
    }
    char text[32];
    struct text t = { .p = text, .end = text + sizeof text };
    text_str(&t, "slept ");
    text_uint(&t, (unsigned long long)ms, 1);
    text_str(&t, " ms\n");
    if (!text_end(&t))
        return NEXT_CLOSE;
    return reply_ok(x, 200, text);
}

/* NAME: 1..FILE_NAME_MAX of [A-Za-z0-9._-], no leading dot.  This alone
 * keeps every name inside the data directory: no '/', no "..", and no
 * percent-decoding, so "%2e%2e" is just an invalid name. */
static bool valid_file_name(const char *s, size_t n)
{
    if (n == 0 || n > FILE_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static int status_for_write_error(int err)
{
    return err == ENOSPC || err == EDQUOT ? 507 : 500;
}

/*
 * strerror() for a connection thread: strerror() itself may format an
 * unknown error into one static buffer shared by every thread.
 */
static const char *error_text(int err, char *buf, size_t cap)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(err, buf, cap);   /* the GNU variant returns the text */
#else
    return strerror_r(err, buf, cap) == 0 ? buf : "unknown error";
#endif
}

static const char *method_name(const struct exchange *x)
{
    return x->req->method == HTTP_PUT ? "PUT" : x->head_only ? "HEAD" : "GET";
}

/*
 * A file request failed on our side: answer 500, or 507 when the disk is
 * full, and leave one line in the log saying which step failed and why
 * (the client only learns the status).
 */
static enum next reply_failure(struct exchange *x, const char *name, const char *step,
                               int err)
{
    int status = status_for_write_error(err);
    char text[128];
    log_line("conn: %s /files/%s: %d %s: %s: %s", method_name(x), name, status,
             status_reason(status), step, error_text(err, text, sizeof text));
    return reply_error(x, status, NULL);
}

/* A download that ended before its last byte: the client sees a body
 * shorter than Content-Length, so the log says why. */
static void log_download_cut(const struct exchange *x, const char *name, off_t sent,
                             off_t size, const char *why)
{
    log_line("conn: %s /files/%s: cut after %lld of %lld bytes: %s", method_name(x), name,
             (long long)sent, (long long)size, why);
}

/* ------------------------------------------------------------------ */
/* Conditional and range requests (RFC 9110 13 and 14)                */
/* ------------------------------------------------------------------ */

/* A strong entity tag: '"', three 20-digit numbers, two '-', '"', NUL. */
#define ETAG_MAX 72
/* Longest If-None-Match value kept for matching; a longer list never
 * matches, so the whole file is sent: slower, never wrong. */
#define IF_NONE_MATCH_MAX 160

/*
 * What a GET or HEAD asked about the file, taken from the request head
 * before serve_request consumes it (the head's bytes are overwritten by
 * what follows).
 */
struct conditions {
    bool if_none_match;             /* If-None-Match present */
    char none_match[IF_NONE_MATCH_MAX]; /* its value; "" when too long */
    time_t if_modified_since;       /* -1: absent or not a valid date */
    bool range;                     /* a valid single byte range */
    long long first, last;          /* bytes=first-last; last -1: to the end */
    long long suffix;               /* bytes=-suffix; -1: not that form */
    bool if_range;                  /* If-Range present */
    char range_tag[ETAG_MAX];       /* its entity tag, or "" */
    time_t range_date;              /* its date, or -1 */
};

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
 * An HTTP-date as seconds since the epoch, or -1.  All three formats are
 * accepted (RFC 9110 5.6.7): IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT",
 * and the obsolete RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" and asctime
 * "Sun Nov  6 08:49:37 1994".  Day names are not checked against the date.
 */
static time_t parse_http_date(const char *s, size_t n)
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

/*
 * Range: "bytes=first-last", "bytes=first-" or "bytes=-suffix" (RFC 9110
 * 14.1.2).  Anything else - another unit, several ranges, last < first -
 * is not a range we serve, and is ignored (RFC 9110 14.2 allows it): the
 * whole file is sent.
 */
static void parse_range(const char *s, size_t n, struct conditions *cond)
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
        if (!parse_content_length(dash + 1, b, &cond->suffix))
            return;
    } else {
        if (!parse_content_length(s, a, &cond->first))
            return;
        if (b > 0 && (!parse_content_length(dash + 1, b, &cond->last) || cond->last < cond->first))
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

static void read_conditions(const struct http_request *req, struct conditions *cond)
{
    cond->if_none_match = req->if_none_match != NULL;
    cond->none_match[0] = '\0';
    if (cond->if_none_match)
        copy_value(req->if_none_match, req->if_none_match_len, cond->none_match,
                   sizeof cond->none_match);
    cond->if_modified_since = req->if_modified_since == NULL ? -1 :
        parse_http_date(req->if_modified_since, req->if_modified_since_len);
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
        cond->range_date = parse_http_date(req->if_range, req->if_range_len);
}

/*
 * The file's entity tag: its inode, size and modification time in ns.  An
 * upload renames a new file over the name, so every upload changes it.
 * Strong: two versions with the same tag have the same bytes.
 */
static void format_etag(const struct stat *st, char *out, size_t cap)
{
    struct text t = { .p = out, .end = out + cap };

    text_str(&t, "\"");
    text_uint(&t, (unsigned long long)st->st_ino, 1);
    text_str(&t, "-");
    text_uint(&t, (unsigned long long)st->st_size, 1);
    text_str(&t, "-");
    text_uint(&t, (unsigned long long)st->st_mtim.tv_sec * 1000000000ULL +
                  (unsigned long long)st->st_mtim.tv_nsec, 1);
    text_str(&t, "\"");
    if (!text_end(&t))
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

enum file_answer { ANSWER_FULL, ANSWER_PART, ANSWER_NOT_MODIFIED, ANSWER_UNSATISFIABLE };

/*
 * Evaluate the conditions in RFC 9110 13.2.2's order: If-None-Match, or
 * else If-Modified-Since, may answer 304; then a Range (kept only when an
 * If-Range validator still matches, strongly) answers 206 with
 * [*first, *first + *len) or 416.  Otherwise the whole file.
 */
static enum file_answer decide_file_answer(const struct conditions *cond, const struct stat *st,
                                           const char *etag, long long *first, long long *len)
{
    long long size = (long long)st->st_size;

    *first = 0;
    *len = size;
    if (cond->if_none_match) {
        if (none_match_hits(cond->none_match, etag))
            return ANSWER_NOT_MODIFIED;
    } else if (cond->if_modified_since >= 0 && cond->if_modified_since <= time(NULL) &&
               st->st_mtime <= cond->if_modified_since) {
        /* A date in the future is not a valid validator: ignored. */
        return ANSWER_NOT_MODIFIED;
    }
    if (!cond->range)
        return ANSWER_FULL;
    if (cond->if_range && strcmp(cond->range_tag, etag) != 0 &&
        (cond->range_date < 0 || cond->range_date != st->st_mtime))
        return ANSWER_FULL;
    if (cond->suffix >= 0) {
        *len = cond->suffix < size ? cond->suffix : size;
        *first = size - *len;
        return *len > 0 ? ANSWER_PART : ANSWER_UNSATISFIABLE;
    }
    if (cond->first >= size)
        return ANSWER_UNSATISFIABLE;
    *first = cond->first;
    long long last = cond->last < 0 || cond->last >= size ? size - 1 : cond->last;
    *len = last - cond->first + 1;
    return ANSWER_PART;
}

/*
 * The validator headers, and for a 206 or 416 the Content-Range, into
 * out[0..cap).  False if they do not fit (a bug: cap is sized for them).
 */
static bool format_file_headers(enum file_answer answer, const char *etag,
                                const struct stat *st, long long first, long long len,
                                char *out, size_t cap)
{
    struct text t = { .p = out, .end = out + cap };
    char modified[HTTP_DATE_LEN + 1];

    format_http_date(st->st_mtime, modified);
    if (answer != ANSWER_UNSATISFIABLE) {
        text_str(&t, "ETag: ");
        text_str(&t, etag);
        text_str(&t, "\r\n");
        if (modified[0] != '\0') {
            text_str(&t, "Last-Modified: ");
            text_str(&t, modified);
            text_str(&t, "\r\n");
        }
    }
    if (answer != ANSWER_NOT_MODIFIED)
        text_str(&t, "Accept-Ranges: bytes\r\n");
    if (answer == ANSWER_PART || answer == ANSWER_UNSATISFIABLE) {
        text_str(&t, "Content-Range: bytes ");
        if (answer == ANSWER_PART) {
            text_uint(&t, (unsigned long long)first, 1);
            text_str(&t, "-");
            text_uint(&t, (unsigned long long)(first + len - 1), 1);
        } else {
            text_str(&t, "*");
        }
        text_str(&t, "/");
        text_uint(&t, (unsigned long long)st->st_size, 1);
        text_str(&t, "\r\n");
    }
    return text_end(&t);
}

static enum next get_file(struct exchange *x, const char *name,
                          const struct conditions *cond)
{
    struct conn *c = x->c;
    /* O_NONBLOCK: opening a FIFO someone left in the data directory would
     * otherwise block until a writer appears, beyond the reach of the
     * force pipe; this way it opens, and fstat below answers 404. */
    int fd = openat(c->env->data_dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT || errno == ELOOP)
            return reply_error(x, 404, NULL);
        return reply_failure(x, name, "open", errno);
    }

    enum next next = NEXT_CLOSE;
    struct stat st;
    char *chunk = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        next = reply_error(x, 404, NULL);
        goto out_close;
    }
    /*
     * The open descriptor pins this version of the file: an upload that
     * renames a new version over NAME meanwhile does not change the bytes
     * we send, so Content-Length and the validators stay true.
     */
    char etag[ETAG_MAX], extra[RESPONSE_HEAD_MAX / 2];
    long long first, length;
    format_etag(&st, etag, sizeof etag);
    enum file_answer answer = decide_file_answer(cond, &st, etag, &first, &length);
    if (!format_file_headers(answer, etag, &st, first, length, extra, sizeof extra)) {
        next = reply_failure(x, name, "formatting the headers", ENOBUFS);
        goto out_close;
    }
    if (answer == ANSWER_UNSATISFIABLE) {
        next = reply_error(x, 416, extra);
        goto out_close;
    }
    chunk = malloc(IO_CHUNK);
    if (chunk == NULL) {
        next = reply_failure(x, name, "malloc", ENOMEM);
        goto out_close;
    }

    stop_keep_alive_if_draining(x);
    struct response r = {
        .status = answer == ANSWER_PART ? 206 : answer == ANSWER_NOT_MODIFIED ? 304 : 200,
        .content_type = "application/octet-stream",
        .extra_headers = extra,
        .content_length = length,
        .head_only = x->head_only,
        .keep_alive = x->keep_alive,
        .http10_keep_alive = x->http10_keep_alive,
    };
    off_t sent = 0;
    /* next stays NEXT_CLOSE on every failure: the response is incomplete. */
    if (send_response(c, &r) != 0)
        goto out_send_failed;
    if (x->head_only || answer == ANSWER_NOT_MODIFIED) {
        next = x->keep_alive ? NEXT_KEEP : NEXT_CLOSE;
        goto out_free;
    }
    while (sent < length) {
        size_t want = length - sent < IO_CHUNK ? (size_t)(length - sent) : IO_CHUNK;
        ssize_t n = pread(fd, chunk, want, (off_t)first + sent);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {       /* cannot keep Content-Length's promise: cut */
            char text[128];
            log_download_cut(x, name, sent, length,
                             n == 0 ? "the file shrank" : error_text(errno, text, sizeof text));
            goto out_free;
        }
        struct iovec iov = { .iov_base = chunk, .iov_len = (size_t)n };
        if (send_all(c, &iov, 1) != 0)
            goto out_send_failed;
        sent += n;
    }
    next = x->keep_alive ? NEXT_KEEP : NEXT_CLOSE;
    goto out_free;
out_send_failed:
    log_download_cut(x, name, sent, length,
                     c->cut ? "cut by shutdown" : "the client is gone or stopped reading");
out_free:
    free(chunk);
out_close:
    (void)close(fd);    /* read-only: nothing to lose */
    return next;
}

/* Write all of buf to a file; returns 0 or an errno value. */
static int write_file_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

enum body_result {
    BODY_OK,
    BODY_GONE,          /* the client left, or shutdown cut the upload */
    BODY_TIMEOUT,       /* the body stalled: 408 */
    BODY_WRITE_ERROR,   /* the file could not take it: 500 or 507 */
    BODY_BAD            /* chunked framing broken or too big: *status */
};

/*
 * The one wait of every body read: receive up to cap bytes into buf, and
 * *got how many.  Watches force_fd but not drain_fd: an upload in flight at
 * Ctrl+C is finished, not dropped.  A body may stall no longer than the
 * head timeout between two reads.
 */
static enum body_result recv_body(struct conn *c, char *buf, size_t cap, size_t *got)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, cap, MSG_DONTWAIT);
        if (n > 0) {
            *got = (size_t)n;
            return BODY_OK;
        }
        if (n == 0)
            return BODY_GONE;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return BODY_GONE;
        enum wait_result w = wait_fd(c, POLLIN, false, now_ms() + c->env->header_timeout_ms);
        if (w == WAIT_TIMEOUT)
            return BODY_TIMEOUT;
        if (w != WAIT_READY)
            return BODY_GONE;
    }
}

/*
 * Copy the request body (content_length bytes; the first of them may already
 * be in c->buf) into fd, or discard it when fd is -1.  Reads never go past
 * the body, so a pipelined next request stays in c->buf or in the socket.
 */
static enum body_result copy_body(struct conn *c, long long length, int fd,
                                  int *write_errno)
{
    size_t buffered = c->len < (unsigned long long)length ? c->len : (size_t)length;
    if (fd >= 0 && (*write_errno = write_file_all(fd, c->buf, buffered)) != 0)
        return BODY_WRITE_ERROR;
    consume(c, buffered);
    long long left = length - (long long)buffered;
    if (left == 0)
        return BODY_OK;

    char *chunk = malloc(IO_CHUNK);
    if (chunk == NULL) {
        *write_errno = ENOMEM;
        return BODY_WRITE_ERROR;
    }
    enum body_result result = BODY_OK;
    while (left > 0 && result == BODY_OK) {
        size_t n = 0;
        result = recv_body(c, chunk, left < IO_CHUNK ? (size_t)left : IO_CHUNK, &n);
        if (result == BODY_OK && fd >= 0 && (*write_errno = write_file_all(fd, chunk, n)) != 0)
            result = BODY_WRITE_ERROR;
        left -= (long long)n;
    }
    free(chunk);
    return result;
}

/*
 * Decode a chunked request body (Transfer-Encoding: chunked) into fd, or
 * discard it when fd is -1.  The decoder works in place in c->buf: each
 * piece received is decoded over itself, written out, and consumed.  Reads
 * may run past the body's end; whatever follows it (a pipelined request)
 * stays in c->buf.  The waits are copy_body's (recv_body).  BODY_BAD sets
 * *status: 400 for broken framing, 413 as soon as a chunk size takes the
 * total past --max-body, 431 for oversized trailers.
 */
static enum body_result read_chunked_body(struct conn *c, int fd, int *write_errno,
                                          int *status)
{
    struct http_chunked d;

    http_chunked_init(&d, c->env->max_body);
    for (;;) {
        size_t decoded, used;
        enum http_parse_result r = http_chunked_decode(&d, c->buf, c->len, c->buf,
                                                       &decoded, &used, status);
        if (r == HTTP_PARSE_ERROR)
            return BODY_BAD;
        if (fd >= 0 && (*write_errno = write_file_all(fd, c->buf, decoded)) != 0)
            return BODY_WRITE_ERROR;
        consume(c, used);
        if (r == HTTP_PARSE_DONE)
            return BODY_OK;
        /* PARTIAL used every byte: c->buf is empty. */
        size_t got = 0;
        enum body_result b = recv_body(c, c->buf, HTTP_HEAD_MAX, &got);
        if (b != BODY_OK)
            return b;
        c->len = got;
    }
}

/*
 * Expect: 100-continue: tell the client to send its body, before we read
 * it.  Only to HTTP/1.1: a 1.0 client knows no 1xx (RFC 9110 15.2).
 * Returns 0, or -1 when the client is gone.
 */
static int send_continue(struct exchange *x)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct iovec iov = { .iov_base = (void *)cont, .iov_len = sizeof cont - 1 };

    if (!x->req->expect_continue || x->req->minor_version != 1)
        return 0;
    return send_all(x->c, &iov, 1);
}

/*
 * Read and discard the body of a request that no upload stores.  Returns 0
 * when it is gone and the route may answer; otherwise -1 and *next (an
 * error was answered, or the client is gone).
 */
static int discard_body(struct exchange *x, enum next *next)
{
    struct conn *c = x->c;
    const struct http_request *req = x->req;
    int err = 0, status = 400;

    if (!req->chunked && req->content_length > c->env->max_body) {
        *next = reply_error(x, 413, NULL);      /* before reading any of it */
        return -1;
    }
    if (send_continue(x) != 0) {
        *next = NEXT_CLOSE;
        return -1;
    }
    enum body_result b = req->chunked ? read_chunked_body(c, -1, &err, &status)
                                      : copy_body(c, req->content_length, -1, &err);
    if (b == BODY_OK)
        return 0;
    *next = b == BODY_BAD       ? reply_error(x, status, NULL)
            : b == BODY_TIMEOUT ? reply_error(x, 408, NULL)
                                : NEXT_CLOSE;   /* client gone or cut */
    return -1;
}

/*
 * A temporary upload file is flock()ed from its creation until it has been
 * renamed or unlinked, and the kernel drops the lock when the last
 * descriptor of it closes, however the process ends.  That is how
 * uploads_remove_stale tells a leftover of a killed server from the live
 * upload of a server sharing the directory.  The pid in the name cannot
 * tell: pids are reused, and in containers every server is pid 1 of its
 * own namespace, so two servers sharing a volume can even pick the same
 * name.  Hence O_EXCL, and on EEXIST another name: an existing file is
 * never ours to delete.  flock, not fcntl(F_SETLK): an fcntl lock belongs
 * to the process, so any close() of the file anywhere in it would drop it,
 * and it never conflicts with another lock of the same process.
 *
 * Every step that changes a temporary name (the writer's rename or unlink,
 * the cleaner's unlink) is taken holding the file's lock, after checking
 * that the name still leads to the locked file: a name may have been
 * unlinked and taken again by a new upload in between.
 */
#define UPLOAD_NAME_TRIES 8

/* Do two stat results describe the same file? */
static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/*
 * Create and lock a new temporary file in dir; its name goes to tmp and its
 * identity to *held.  Returns the descriptor, or -1 with errno set.
 */
static int upload_temp_create(int dir, int conn_fd, char *tmp, size_t cap,
                              struct stat *held)
{
    for (unsigned try = 0; try < UPLOAD_NAME_TRIES; try++) {
        /* Names starting with '.' are never valid upload names, so
         * temporary files cannot collide with real ones. */
        struct text t = { .p = tmp, .end = tmp + cap };
        text_str(&t, ".upload-");
        text_uint(&t, (unsigned long long)getpid(), 1);
        text_str(&t, "-");
        text_uint(&t, (unsigned)conn_fd, 1);
        if (try > 0) {
            text_str(&t, "-");
            text_uint(&t, try, 1);
        }
        if (!text_end(&t)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            return -1;
        }
        /* Between the create and the lock, a server starting up may find
         * the file unlocked, take it for a leftover and unlink it (it holds
         * the lock while it does: EWOULDBLOCK); so once locked, check that
         * the name still leads to this file.  Where locking fails for
         * another reason (ENOLCK: NFS without its lock service), go on
         * unlocked: the cleaner cannot lock the file either, and keeps it. */
        struct stat named;
        if ((flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) &&
            fstat(fd, held) == 0 &&
            fstatat(dir, tmp, &named, AT_SYMLINK_NOFOLLOW) == 0 && same_file(held, &named))
            return fd;
        /* Being removed, or already gone, by a server starting up; if a
         * stat failed instead, the file stays for the next start-up to
         * remove.  Try the next name either way. */
        (void)close(fd);
    }
    errno = EEXIST;     /* every name taken: 500 */
    return -1;
}

/* Unlink our temporary file, if its name is still ours (see above). */
static void upload_temp_remove(int dir, const char *tmp, const struct stat *held)
{
    struct stat named;
    /* Nothing to do if even the unlink fails: start-up removes the file,
     * and the old NAME is untouched either way. */
    if (fstatat(dir, tmp, &named, AT_SYMLINK_NOFOLLOW) == 0 && same_file(held, &named))
        (void)unlinkat(dir, tmp, 0);
}

/*
 * PUT /files/NAME: write to a temporary file, fsync it, rename it over NAME,
 * fsync the directory.  rename() is atomic, so readers see the old file or
 * the new one, never a mix; the two fsyncs make the new one survive a crash.
 * Every path that does not reach the rename unlinks the temporary file.
 */
static enum next put_file(struct exchange *x, const char *name)
{
    struct conn *c = x->c;
    const struct http_request *req = x->req;
    int dir = c->env->data_dir_fd;

    if (req->content_length < 0 && !req->chunked)
        return reply_error(x, 411, NULL);
    if (req->content_length > c->env->max_body)
        return reply_error(x, 413, NULL);   /* before reading any of it */

    char tmp[64];
    struct stat held, st;
    int fd = upload_temp_create(dir, c->fd, tmp, sizeof tmp, &held);
    if (fd < 0)
        return reply_failure(x, name, "creating the temporary file", errno);

    if (send_continue(x) != 0) {
        upload_temp_remove(dir, tmp, &held);    /* while locked: see below */
        (void)close(fd);
        return NEXT_CLOSE;
    }

    int err = 0, status = 400;
    const char *step = "write";     /* the step that failed, for the log */
    enum body_result body = req->chunked ? read_chunked_body(c, fd, &err, &status)
                                         : copy_body(c, req->content_length, fd, &err);
    /* On Linux, fsync reports every write error still pending, deferred
     * ones (NFS, quotas) included, so the close() after it has nothing
     * left to report.  The file stays open, and so locked, until it is
     * renamed. */
    if (body == BODY_OK && fsync(fd) != 0) {
        body = BODY_WRITE_ERROR;
        err = errno;
        step = "fsync";
    }
    /* rename() goes by name: make sure the name is still ours, so that
     * whatever a server that ignores the locks has done (an older version
     * of this one deleted names that clashed) never publishes its file. */
    if (body == BODY_OK && (fstatat(dir, tmp, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                            !same_file(&held, &st))) {
        body = BODY_WRITE_ERROR;
        err = EIO;
        step = "the temporary file's name was taken over";
    }
    bool existed = body == BODY_OK && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (body == BODY_OK && renameat(dir, tmp, dir, name) != 0) {
        body = BODY_WRITE_ERROR;
        err = errno;
        step = "rename";
    }
    if (body != BODY_OK) {
        /* Removed before the close that unlocks it: once unlocked, the
         * file may be cleaned away and its name taken by another server's
         * upload, which this unlink would then delete. */
        upload_temp_remove(dir, tmp, &held);
        (void)close(fd);    /* a failed upload: nothing of it to keep */
        if (body == BODY_TIMEOUT)
            return reply_error(x, 408, NULL);
        if (body == BODY_BAD)
            return reply_error(x, status, NULL);
        if (body == BODY_WRITE_ERROR)
            return reply_failure(x, name, step, err);
        return NEXT_CLOSE;  /* client gone or cut: nobody to answer */
    }
    (void)close(fd);        /* after fsync: see above */
    /* Make the rename itself durable.  If that fails the new file is in
     * place but may not survive a crash: the client must not be told it
     * is stored. */
    if (fsync(dir) != 0)
        return reply_failure(x, name, "fsync of the data directory", errno);
    return reply_ok(x, existed ? 200 : 201, existed ? "replaced\n" : "created\n");
}

/*
 * Remove name from dir if it is a temporary upload nobody is writing: one
 * we can lock (see upload_temp_create).  A file system that cannot lock
 * keeps its leftovers: better one left over than a live upload deleted.
 */
static bool remove_if_abandoned(int dir, const char *name)
{
    /* Read-write: NFS emulates flock with a byte-range lock, and an
     * exclusive one needs a file open for writing.  O_NONBLOCK: a FIFO
     * given a temporary name must not hang start-up. */
    const int flags = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = openat(dir, name, O_RDWR | flags);
    if (fd < 0 && errno == EACCES)
        fd = openat(dir, name, O_RDONLY | flags);
    if (fd < 0)
        return false;
    struct stat held, named;
    bool removed = false;
    /* Once we hold the lock, the name must still lead to the file we
     * locked: its writer may have finished meanwhile, renamed it away and
     * closed it, and the name may even be a new upload's by now. */
    if (fstat(fd, &held) == 0 && S_ISREG(held.st_mode) &&
        flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        fstatat(dir, name, &named, AT_SYMLINK_NOFOLLOW) == 0 && same_file(&held, &named))
        removed = unlinkat(dir, name, 0) == 0;
    (void)close(fd);        /* nothing written: nothing to lose; drops the lock */
    return removed;
}

int uploads_remove_stale(int data_dir_fd)
{
    static const char prefix[] = ".upload-";
    int removed = 0;

    /* fdopendir takes ownership of the descriptor it is given: hand it a
     * duplicate so the caller's stays open. */
    int fd = fcntl(data_dir_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        (void)close(fd);
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        /* Regular files only, since opening a device has side effects
         * (DT_UNKNOWN, where the file system does not say, is checked
         * after opening). */
        if ((e->d_type == DT_REG || e->d_type == DT_UNKNOWN) &&
            strncmp(e->d_name, prefix, sizeof prefix - 1) == 0 &&
            remove_if_abandoned(data_dir_fd, e->d_name))
            removed++;
    (void)closedir(dir);    /* read-only: nothing to lose */
    return removed;
}

/* ms=N, N in 0..SLEEP_MS_MAX; -1 for anything else. */
static long parse_sleep_query(const char *q, size_t n)
{
    long ms = 0;

    if (n < 4 || n > 8 || memcmp(q, "ms=", 3) != 0)
        return -1;
    for (size_t i = 3; i < n; i++) {
        if (q[i] < '0' || q[i] > '9')
            return -1;
        ms = ms * 10 + (q[i] - '0');
    }
    return ms <= SLEEP_MS_MAX ? ms : -1;
}

/* Where a request goes, decided while its head is still in c->buf. */
struct route {
    enum { ROUTE_ROOT, ROUTE_SLEEP, ROUTE_FILE, ROUTE_OPTIONS, ROUTE_ERROR } kind;
    int status;                 /* ROUTE_ERROR: what to answer */
    const char *allow;          /* ROUTE_OPTIONS, ROUTE_ERROR 405: the Allow header */
    long sleep_ms;              /* ROUTE_SLEEP */
    char name[FILE_NAME_MAX + 1]; /* ROUTE_FILE: a valid file name */
};

static void route_error(struct route *rt, int status, const char *allow)
{
    rt->kind = ROUTE_ERROR;
    rt->status = status;
    rt->allow = allow;
}

/* OPTIONS on a route answers what route_error's 405 would list. */
static void route_allowed(struct route *rt, const struct http_request *req, const char *allow)
{
    if (req->method == HTTP_OPTIONS) {
        rt->kind = ROUTE_OPTIONS;
        rt->allow = allow;
    } else {
        route_error(rt, 405, allow);
    }
}

static void resolve_route(const struct http_request *req, struct route *rt)
{
    static const char get_head[] = "Allow: GET, HEAD, OPTIONS\r\n";
    static const char get_head_post[] = "Allow: GET, HEAD, POST, OPTIONS\r\n";
    static const char get_head_put[] = "Allow: GET, HEAD, PUT, OPTIONS\r\n";
    const char *t = req->target;
    size_t n = req->target_len;
    bool get_or_head = req->method == HTTP_GET || req->method == HTTP_HEAD;

    /* asterisk-form (RFC 9112 3.2.4): OPTIONS about the server as a whole. */
    if (n == 1 && t[0] == '*') {
        if (req->method == HTTP_OPTIONS)
            route_allowed(rt, req, "Allow: GET, HEAD, POST, PUT, OPTIONS\r\n");
        else
            route_error(rt, 400, NULL);
        return;
    }
    /* absolute-form (RFC 9112 3.2.2, which a server MUST accept): use only
     * the path after the authority.  Schemes are case-insensitive. */
    size_t scheme = 0;
    if (n > 4 && strncasecmp(t, "http", 4) == 0) {
        scheme = t[4] == 's' || t[4] == 'S' ? 5 : 4;
        scheme = n > scheme + 3 && memcmp(t + scheme, "://", 3) == 0 ? scheme + 3 : 0;
    }
    if (scheme > 0) {
        const char *slash = memchr(t + scheme, '/', n - scheme);
        if (slash == NULL) {
            route_error(rt, 400, NULL);
            return;
        }
        n -= (size_t)(slash - t);
        t = slash;
    }
    const char *q = memchr(t, '?', n);
    size_t path_len = q ? (size_t)(q - t) : n;

    if (t[0] != '/') {
        route_error(rt, 400, NULL);
    } else if (path_len == 1) {
        /* POST / takes a body and discards it: a client (or a conformance
         * probe) can check that its body is read, whatever its framing. */
        if (get_or_head || req->method == HTTP_POST)
            rt->kind = ROUTE_ROOT;
        else
            route_allowed(rt, req, get_head_post);
    } else if (path_len == 6 && memcmp(t, "/sleep", 6) == 0) {
        rt->sleep_ms = q ? parse_sleep_query(q + 1, n - path_len - 1) : -1;
        if (!get_or_head)
            route_allowed(rt, req, get_head);
        else if (rt->sleep_ms < 0)
            route_error(rt, 400, NULL);
        else
            rt->kind = ROUTE_SLEEP;
    } else if (path_len > 7 && memcmp(t, "/files/", 7) == 0) {
        const char *name = t + 7;
        size_t name_len = path_len - 7;
        if (!valid_file_name(name, name_len)) {
            route_error(rt, 400, NULL);
        } else if (!get_or_head && req->method != HTTP_PUT) {
            route_allowed(rt, req, get_head_put);
        } else {
            rt->kind = ROUTE_FILE;
            memcpy(rt->name, name, name_len);
            rt->name[name_len] = '\0';
        }
    } else {
        route_error(rt, 404, NULL);
    }
}

/* Serve one parsed request; its head is at the start of c->buf. */
static enum next serve_request(struct conn *c, struct http_request *req)
{
    struct exchange x = {
        .c = c,
        .req = req,
        .head_only = req->method == HTTP_HEAD,
        .keep_alive = req->minor_version == 1 ? !req->conn_close
                                              : req->conn_keep_alive && !req->conn_close,
    };
    x.http10_keep_alive = req->minor_version == 0 && x.keep_alive;
    /* A client that ends the connection after this request (Connection:
     * close, or HTTP/1.0 without keep-alive) and sends no body has sent
     * its last byte: see conn_close. */
    c->client_done = !x.keep_alive && req->content_length <= 0 && !req->chunked;

    struct route rt;
    struct conditions cond;
    resolve_route(req, &rt);
    bool stored = rt.kind == ROUTE_FILE && req->method == HTTP_PUT;
    bool posted = rt.kind == ROUTE_ROOT && req->method == HTTP_POST;
    /* Only PUT and POST / take a body.  Any other request with one closes
     * afterwards: a Content-Length body is left unread rather than
     * guessed past (conn_close discards it), and a chunked one, though
     * read and discarded below, came where no body belongs. */
    if (req->method != HTTP_PUT && !posted && (req->content_length > 0 || req->chunked))
        x.keep_alive = false;
    if (rt.kind == ROUTE_FILE && req->method != HTTP_PUT)
        read_conditions(req, &cond);
    /* From here on c->buf holds what follows the head (a body, pipelined
     * requests), so the target and the fields it pointed into are gone. */
    consume(c, req->head_len);
    req->target = NULL;
    req->target_len = 0;
    req->if_none_match = req->if_modified_since = req->range = req->if_range = NULL;

    /* POST / discards its body.  So does every other route that stores
     * nothing with a chunked body: its framing is judged as strictly as an
     * upload's, so a broken one is answered with 400 whatever the route. */
    enum next next;
    if (!stored && (req->chunked || (posted && req->content_length > 0)) &&
        discard_body(&x, &next) != 0)
        return next;

    switch (rt.kind) {
    case ROUTE_ROOT:
        return route_root(&x);
    case ROUTE_SLEEP:
        return route_sleep(&x, rt.sleep_ms);
    case ROUTE_FILE:
        return req->method == HTTP_PUT ? put_file(&x, rt.name) : get_file(&x, rt.name, &cond);
    case ROUTE_OPTIONS:
        return reply_options(&x, rt.allow);
    case ROUTE_ERROR:
        break;
    }
    return reply_error(&x, rt.status, rt.allow);
}

/* The fields one by one: a struct assignment or memset would also write
 * the 16 KiB request buffer, making all its pages resident for nothing. */
static void conn_init(struct conn *c, int fd, const struct conn_env *env)
{
    c->fd = fd;
    c->env = env;
    c->len = 0;
    c->cut = false;
    c->client_done = false;
    c->idle_close = false;
    c->wrote = false;
    c->nodelay = false;
    c->started_ms = now_ms();
    c->date_second = (time_t)-1;
    c->date[0] = '\0';
}

void conn_serve(int fd, const struct conn_env *env)
{
    struct conn conn;
    struct conn *c = &conn;
    conn_init(c, fd, env);
    for (bool first = true;; first = false) {
        struct http_request req;
        int status = 0;
        enum head_result r = read_head(c, first, &req, &status);
        if (r == HEAD_END)
            break;
        if (r == HEAD_TIMEOUT || r == HEAD_ERROR) {
            send_error_and_close(c, r == HEAD_TIMEOUT ? 408 : status, false);
            break;
        }
        if (serve_request(c, &req) != NEXT_KEEP)
            break;
    }
    conn_close(c);
}
