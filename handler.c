/*
 * handler.c - one connection: read requests, route them, write responses.
 * What the bytes mean (the parser, the chunk decoder, dates, conditions,
 * routes, response heads) is decided in http/, which never sees a socket;
 * this file owns the socket, the files and the waits.
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

#include "http/chunked.h"
#include "http/conditional.h"
#include "http/date.h"
#include "http/parse.h"
#include "http/response.h"
#include "http/route.h"
#include "http/text.h"
#include "uploads.h"

#include <errno.h>
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* A new connection is not idle, even at shutdown, until this long after
 * accept (see read_head). */
#define FIRST_REQUEST_GRACE_MS 250
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
/* Writing                                                            */
/* ------------------------------------------------------------------ */

/* The Date value for a response on c: formatted once a second per
 * connection, not once per response. */
static const char *conn_date(struct conn *c)
{
    time_t now = time(NULL);

    if (now != c->date_second) {
        http_format_date(now, c->date);
        c->date_second = now;
    }
    return c->date;
}

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

/*
 * Send the head and, if r->body is set, the body in one sendmsg(): a
 * response split over two writes can wait 40 ms for a delayed ACK (Nagle).
 */
static int send_response(struct conn *c, const struct http_response *r)
{
    size_t head_len = http_format_head(r, conn_date(c), c->head, sizeof c->head);
    if (head_len == 0)
        return -1;

    struct iovec iov[2] = {
        { .iov_base = c->head, .iov_len = head_len },
        { .iov_base = (void *)r->body,
          .iov_len = r->body && !r->head_only ? (size_t)r->content_length : 0 },
    };
    return send_all(c, iov, iov[1].iov_len ? 2 : 1);
}

/* A short text response: "<status> <reason>\n" or the given text. */
static int send_text(struct conn *c, int status, const char *text,
                     const char *extra_headers, bool head_only, bool keep_alive,
                     bool http10_keep_alive)
{
    char body[64];
    if (text == NULL) {
        text = http_status_body(status, body, sizeof body);
        if (text == NULL)
            return -1;
    }
    struct http_response r = {
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
 * Tests only, like RACE_WINDOW in process/signals.h: in the server-race build, run
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
    struct http_response r = {
        .status = 503,
        .content_type = "text/plain; charset=utf-8",
        .extra_headers = "Retry-After: 1\r\n",
        .content_length = (long long)sizeof body - 1,
        .body = body,
    };
    http_format_date(time(NULL), date);
    size_t head_len = http_format_head(&r, date, head, sizeof head);
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
            /* Parse only when a line may have completed, or while the
             * request line is incomplete (to reject garbage early): a
             * client trickling one byte at a time must not cost a parse
             * per byte (even a resumed one scans the unfinished line). */
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
    size_t parsed_len = 0;      /* c->len at the last parse: the next resumes */
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
            /* Lines complete at the last parse are not parsed again:
             * c->buf only grows until the head is complete. */
            enum http_parse_result r = http_parse_request_resume(c->buf, c->len, parsed_len,
                                                                 req, status);
            if (r == HTTP_PARSE_DONE)
                return HEAD_OK;
            if (r == HTTP_PARSE_ERROR)
                return HEAD_ERROR;
            parsed_len = c->len;
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
        long long wait_until = idle && !first ? now_ms() + c->env->keepalive_timeout_ms : deadline;
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
    struct http_text t = { .p = text, .end = text + sizeof text };
    http_text_str(&t, "slept ");
    http_text_uint(&t, (unsigned long long)ms, 1);
    http_text_str(&t, " ms\n");
    if (!http_text_end(&t))
        return NEXT_CLOSE;
    return reply_ok(x, 200, text);
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
             http_status_reason(status), step, error_text(err, text, sizeof text));
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
/* Downloads and uploads                                              */
/* ------------------------------------------------------------------ */

static enum next get_file(struct exchange *x, const char *name,
                          const struct http_conditions *cond)
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
    char etag[HTTP_ETAG_MAX], extra[RESPONSE_HEAD_MAX / 2];
    long long first, length;
    http_format_etag(&st, etag, sizeof etag);
    enum http_file_answer answer = http_decide_file_answer(cond, &st, etag, &first, &length);
    if (!http_format_file_headers(answer, etag, &st, first, length, extra, sizeof extra)) {
        next = reply_failure(x, name, "formatting the headers", ENOBUFS);
        goto out_close;
    }
    if (answer == HTTP_ANSWER_UNSATISFIABLE) {
        next = reply_error(x, 416, extra);
        goto out_close;
    }
    chunk = malloc(IO_CHUNK);
    if (chunk == NULL) {
        next = reply_failure(x, name, "malloc", ENOMEM);
        goto out_close;
    }

    stop_keep_alive_if_draining(x);
    struct http_response r = {
        .status = answer == HTTP_ANSWER_PART ? 206 : answer == HTTP_ANSWER_NOT_MODIFIED ? 304 : 200,
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
    if (x->head_only || answer == HTTP_ANSWER_NOT_MODIFIED) {
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
     * whatever another process did to it (one that ignores the locks may
     * delete a name that clashes with its own) never publishes its file. */
    if (body == BODY_OK && (fstatat(dir, tmp, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                            !upload_same_file(&held, &st))) {
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

    struct http_route rt;
    struct http_conditions cond;
    http_resolve_route(req, &rt);
    bool stored = rt.kind == HTTP_ROUTE_FILE && req->method == HTTP_PUT;
    bool posted = rt.kind == HTTP_ROUTE_ROOT && req->method == HTTP_POST;
    /* Only PUT and POST / take a body.  Any other request with one closes
     * afterwards: a Content-Length body is left unread rather than
     * guessed past (conn_close discards it), and a chunked one, though
     * read and discarded below, came where no body belongs. */
    if (req->method != HTTP_PUT && !posted && (req->content_length > 0 || req->chunked))
        x.keep_alive = false;
    if (rt.kind == HTTP_ROUTE_FILE && req->method != HTTP_PUT)
        http_read_conditions(req, &cond);
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
    case HTTP_ROUTE_ROOT:
        return route_root(&x);
    case HTTP_ROUTE_SLEEP:
        return route_sleep(&x, rt.sleep_ms);
    case HTTP_ROUTE_FILE:
        return req->method == HTTP_PUT ? put_file(&x, rt.name) : get_file(&x, rt.name, &cond);
    case HTTP_ROUTE_OPTIONS:
        return reply_options(&x, rt.allow);
    case HTTP_ROUTE_ERROR:
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
