/*
 * minimal.c - the smallest thread-per-connection server whose Ctrl+C is
 * graceful: lesson/naive.c with the seven core steps of the README's
 * lesson applied (lesson/steps/01 to 07).  Nothing in it is Linux-only:
 * Linux and the BSDs have every call it makes (ppoll, pipe2 and accept4
 * are POSIX since 2024; macOS lacks them, and sigtimedwait).  Lift it into
 * your own server: the README's lesson ends with what to change.  The HTTP
 * is in lesson/http.c.
 *
 * The shutdown, in the order main() runs it:
 *   stop accepting  take in the backlog, then close the listener;
 *   drain           close the drain pipe: idle connections close, busy
 *                   ones finish and say Connection: close;
 *   wait            join threads as they finish, until none is left, the
 *                   grace deadline passes or a second signal comes;
 *   force           close the force pipe: every wait in every thread
 *                   wakes and cuts its connection; join the rest;
 *   exit            0, or 1 if anything was cut.
 *
 * lesson/hardened.c adds the advanced steps A1 to A4, which close the
 * last windows, microseconds wide, in which a client can meet a reset.
 *
 * Usage: minimal [PORT [GRACE_SECONDS]]
 */
#define _GNU_SOURCE /* the steps use ppoll, pipe2 and accept4 (POSIX.1-2024) */

#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * The handler counts signals instead of setting a flag: the first starts
 * the drain, the second forces.  A lock-free atomic is all a handler may
 * touch (C11 7.14.1.1); incrementing a volatile sig_atomic_t is not atomic.
 */
static atomic_uint signals_received;

static void on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_received, 1);
}

/*
 * ppoll() runs a pending signal's handler only when it really waits: if a
 * descriptor is ready at once (a steady stream of clients), it returns and
 * the signal stays pending.  Take it here, without waiting.
 */
static void take_pending_signal(const sigset_t *stopset)
{
    struct timespec now = { 0, 0 };

    if (sigtimedwait(stopset, NULL, &now) > 0)
        atomic_fetch_add(&signals_received, 1);
}

/* What the connection threads share with main(). */
struct shared {
    int drain_fd;               /* read end: readable once the drain begins */
    atomic_bool draining;       /* the same news, for a response to read */
    int force_fd;               /* read end: readable once connections are cut */
    int reaper_fd;              /* write end: one byte per finished thread */
    pthread_mutex_t lock;       /* guards finished */
    struct conn *finished;      /* threads that have ended, not yet joined */
};

struct conn {
    int fd;
    struct shared *sh;
    pthread_t thread;
    struct conn *next;          /* on sh->finished */
    size_t len;                 /* bytes of buf received, not yet answered */
    char buf[HTTP_HEAD_MAX];
};

/*
 * Wait until c->fd has events: 1.  The force pipe is always watched, and
 * while the connection is idle (no byte of a next request has arrived) the
 * drain pipe too: 0 means shutdown says stop; -1 an error.  The socket is
 * looked at before the drain pipe: a request that has arrived is served
 * even if the drain began with it.
 */
static int wait_for(struct conn *c, short events, bool idle)
{
    struct pollfd p[3] = {
        { .fd = c->fd, .events = events },
        { .fd = idle ? c->sh->drain_fd : -1, .events = POLLIN },
        { .fd = c->sh->force_fd, .events = POLLIN },
    };

    /* No EINTR: this thread blocks every signal we catch. */
    if (poll(p, 3, -1) < 0)
        return -1;
    return p[2].revents ? 0 : p[0].revents ? 1 : 0;
}

/* Read until buf holds a whole request head: its length, or 0 at the end. */
static size_t read_request(struct conn *c)
{
    size_t end;

    while ((end = http_head_length(c->buf, c->len)) == 0) {
        ssize_t n;
        if (c->len == sizeof c->buf)
            return c->len;      /* no whole head fits: http_parse says 431 */
        if (wait_for(c, POLLIN, c->len == 0) != 1)
            return 0;
        n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (n <= 0)
            return 0;
        c->len += (size_t)n;
    }
    return end;
}

/* GET /sleep: the slow work a graceful shutdown must wait for.  0 when
 * the time is up, -1 when the force pipe cut it short. */
static int pause_ms(const struct shared *sh, int ms)
{
    struct pollfd p = { .fd = sh->force_fd, .events = POLLIN };

    return poll(&p, 1, ms) == 0 ? 0 : -1;
}

static int send_all(struct conn *c, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN && wait_for(c, POLLOUT, false) == 1)
            continue;   /* a client that does not read can be cut too */
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * A thread's last act: put itself on the finished list and wake main(),
 * which joins it at once, so handles and stacks never pile up.  (Normal
 * mutexes and valid joinable threads: these pthread calls cannot fail.)
 */
static void finish(struct conn *c)
{
    struct shared *sh = c->sh;

    pthread_mutex_lock(&sh->lock);
    c->next = sh->finished;
    sh->finished = c;
    pthread_mutex_unlock(&sh->lock);
    /* Non-blocking: if the pipe is full, main is awake already. */
    if (write(sh->reaper_fd, "", 1) < 0 && errno != EAGAIN)
        perror("reaper pipe");
}

/* One connection: answer its requests in order until it ends. */
static void *serve(void *arg)
{
    struct conn *c = arg;
    size_t end;

    while ((end = read_request(c)) > 0) {
        struct http_request rq;
        char out[HTTP_REPLY_MAX];
        http_parse(c->buf, end, &rq);
        c->len -= end;          /* what is left is the next request's start */
        memmove(c->buf, c->buf + end, c->len);
        if (rq.sleep_ms > 0 && pause_ms(c->sh, rq.sleep_ms) != 0)
            break;
        /* Draining: tell the client this is the last response, unless its
         * next request has begun to arrive (then that one is served too). */
        if (atomic_load(&c->sh->draining) && c->len == 0)
            rq.keep_alive = false;
        if (send_all(c, out, http_format(&rq, out, sizeof out)) != 0 || !rq.keep_alive)
            break;
    }
    close(c->fd);
    finish(c);
    return NULL;
}

/* Join the threads on the finished list; returns how many. */
static size_t reap(struct shared *sh, int reaper_rd)
{
    char bytes[64];
    struct conn *c;
    size_t n = 0;

    /* Empty the pipe first: a thread that finishes after we take the list
     * writes its byte after this read, and wakes us again. */
    while (read(reaper_rd, bytes, sizeof bytes) > 0)
        ;
    pthread_mutex_lock(&sh->lock);
    c = sh->finished;
    sh->finished = NULL;
    pthread_mutex_unlock(&sh->lock);
    for (; c != NULL; n++) {
        struct conn *next = c->next;
        pthread_join(c->thread, NULL);
        free(c);
        c = next;
    }
    return n;
}

static long long now_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);  /* cannot fail */
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Accept one waiting connection and start its thread: 0, or -1 if none. */
static int accept_one(int listener, struct shared *sh, size_t *live)
{
    struct conn *c;
    int rc = ENOMEM, fd;

    /* accept4 with no flags: on the BSDs accept() would pass the
     * listener's O_NONBLOCK on to the connection. */
    do
        fd = accept4(listener, NULL, NULL, 0);
    while (fd < 0 && errno == ECONNABORTED);    /* that client gave up */
    if (fd < 0)
        return -1;
    if ((c = calloc(1, sizeof *c)) != NULL) {
        c->fd = fd;
        c->sh = sh;
        rc = pthread_create(&c->thread, NULL, serve, c);
    }
    if (rc != 0) {
        fprintf(stderr, "no thread for a connection: %s\n", strerror(rc));
        free(c);
        close(fd);
    } else {
        (*live)++;
    }
    return 0;
}

/* The whole number in arg if it is one from 0 to max, else -1. */
static long parse_number(const char *arg, long max)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(arg, &end, 10);
    return errno != 0 || end == arg || *end != '\0' || n < 0 || n > max ? -1 : n;
}

/* A listening TCP socket on 127.0.0.1:port, or -1. */
static int listen_on(int port)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    /* Non-blocking, so that the backlog can be emptied at shutdown. */
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
                    bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
                    listen(fd, SOMAXCONN) != 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    long port = argc > 1 ? parse_number(argv[1], 65535) : 7878;
    long grace = argc > 2 ? parse_number(argv[2], 3600) : 10;  /* seconds before forcing */
    int listener = port < 0 ? -1 : listen_on((int)port);
    struct sigaction sa = { .sa_handler = on_signal };
    sigset_t stopset, waitmask;
    struct shared sh = { .lock = PTHREAD_MUTEX_INITIALIZER };
    int drain[2], force[2], reaper[2], status = 0;
    size_t live = 0;            /* threads started and not yet joined */

    if (port < 0 || grace < 0) {
        fprintf(stderr, "usage: %s [PORT [GRACE_SECONDS]]\n", argv[0]);
        return 2;
    }
    if (listener < 0 || pipe(drain) != 0 || pipe(force) != 0 ||
        pipe2(reaper, O_NONBLOCK) != 0) {
        perror("start");
        return 1;
    }
    sh.drain_fd = drain[0];
    sh.force_fd = force[0];
    sh.reaper_fd = reaper[1];
    /* No SA_RESTART: ppoll() is never restarted anyway, but no other
     * blocking call a reader adds should silently swallow the signal. */
    sigemptyset(&sa.sa_mask);
    /* A write to a connection its client has closed raises SIGPIPE, whose
     * default action ends the process; ignored, the write fails with EPIPE
     * and only that connection ends. */
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
        signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        perror("sigaction");
        return 1;
    }
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGINT);
    sigaddset(&stopset, SIGTERM);
    /* Before any thread exists: every thread inherits the blocked mask, so
     * the kernel can deliver the signals only to main, inside ppoll().
     * pthread_sigmask cannot fail with a valid `how`. */
    pthread_sigmask(SIG_BLOCK, &stopset, &waitmask);
    sigdelset(&waitmask, SIGINT);       /* even if our parent blocked them */
    sigdelset(&waitmask, SIGTERM);
    fprintf(stderr, "listening on 127.0.0.1:%ld\n", port);
    while (atomic_load(&signals_received) == 0) {
        struct pollfd p[2] = {
            { .fd = listener, .events = POLLIN },
            { .fd = reaper[0], .events = POLLIN },
        };
        /* A signal that arrives after the check stays pending, and ppoll()
         * unblocks it and starts waiting in one atomic step: the pending
         * signal interrupts the wait the moment it begins. */
        int ready = ppoll(p, 2, NULL, &waitmask);
        take_pending_signal(&stopset);
        if (ready < 1 || atomic_load(&signals_received) > 0)
            continue;
        if (p[1].revents)
            live -= reap(&sh, reaper[0]);
        if (p[0].revents)
            accept_one(listener, &sh, &live);
    }
    /* Stop accepting: take in the backlog, then close the listener.  Clients
     * that connected before the signal are served, not reset, and new ones
     * are refused at once instead of waiting where nobody will look. */
    while (accept_one(listener, &sh, &live) == 0)
        ;
    close(listener);
    /* Drain: closing the write end makes the read end readable in every
     * thread at once, and for good: a broadcast with no lock and no list.
     * The flag first, so that a thread the pipe wakes sees it. */
    atomic_store(&sh.draining, true);
    close(drain[1]);
    /* Wait: join threads as they finish, until none is left, the grace
     * deadline passes or a second signal comes (it interrupts ppoll). */
    long long deadline = now_ms() + grace * 1000;
    while (live > 0 && atomic_load(&signals_received) < 2 && now_ms() < deadline) {
        struct pollfd p = { .fd = reaper[0], .events = POLLIN };
        long long left = deadline - now_ms();
        struct timespec t = { (time_t)(left / 1000), (long)(left % 1000) * 1000000L };
        if (ppoll(&p, 1, &t, &waitmask) > 0)
            live -= reap(&sh, reaper[0]);
        take_pending_signal(&stopset);
    }
    /* Force: every wait in every thread wakes, cuts its connection and
     * returns; join the rest.  Exit 1: work was cut. */
    if (live > 0) {
        status = 1;
        close(force[1]);
    }
    while (live > 0) {
        struct pollfd p = { .fd = reaper[0], .events = POLLIN };
        if (poll(&p, 1, -1) > 0)
            live -= reap(&sh, reaper[0]);
    }
    return status;                      /* exit */
}
