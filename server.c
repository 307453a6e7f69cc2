/*
 * server.c - a thread-per-connection HTTP server whose Ctrl+C is graceful.
 *
 * This file owns the process: options, the listening socket, signals, the
 * accept loop, the record of connection threads, the drain and the exit.
 * handler.c owns what happens on one connection.
 *
 * The shutdown sequence, in the order main() runs it.  First the set-up,
 * before any signal comes, that makes sure no signal is lost:
 *
 *   - Block the signals before any thread exists: start-up blocks SIGINT
 *     and SIGTERM first, so every connection thread inherits the blocked
 *     mask and the kernel can only deliver them to the main thread.
 *   - The accept loop waits in ppoll(), which unblocks the signals only
 *     while it waits (the drain's waits do the same).  A signal that
 *     arrives between our check of the signal count and the wait stays
 *     pending and interrupts ppoll() the moment it starts: no lost
 *     wake-up, no need for another connection to arrive.
 *   - The handler counts the signal (an atomic counter, not a flag: the
 *     second signal forces, see "force" below) and returns; ppoll() fails
 *     with EINTR and the loop ends.
 *
 * Then the phases, named as main() names them:
 *
 *   Stop accepting: stop the kernel starting new handshakes (a filter
 *     drops SYNs), take in the backlog and the handshakes already under
 *     way (clients that connected and sent a request are served, not
 *     reset), then close the listener, so new clients are refused at once
 *     instead of waiting in a backlog nobody will read.
 *   Drain: set the draining flag, then close the drain pipe.  Idle
 *     connections see the pipe and close; busy ones finish their request
 *     (and any already pipelined behind it) and, seeing the flag, the
 *     last response says Connection: close.
 *   Wait: join connection threads as each one finishes, until none are
 *     left, the grace period ends, or a second signal arrives.
 *   Force, if needed: close the force pipe; every wait in every handler
 *     wakes, cuts its connection and returns.  Join the rest.
 *   Exit: 0 if every connection finished on its own, 1 if any was cut.
 *
 * SIGHUP is a hot restart: a new process takes over the listening socket,
 * and once it is ready this one goes on from "stop accepting" (see "Hot
 * restart").
 */
#define _GNU_SOURCE /* ppoll, accept4, pipe2 (Linux and the BSDs; POSIX.1-2024) */

#include "handler.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/filter.h>       /* SO_ATTACH_FILTER: see stop_new_handshakes */
#include <linux/inet_diag.h>    /* sock_diag(7): see handshakes_under_way */
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>        /* TCP_SYN_RECV */
#endif

#define SERVER_VERSION "0.1.0"

/*
 * Each connection thread's stack.  The default (8 MiB of address space)
 * would cap us at a few thousand threads on a 32-bit system and wastes
 * address space everywhere.  A small stack is plenty: a connection keeps
 * its 17 KiB block here (see struct conn in handler.c) and an idle one
 * touches three pages, one of them glibc's thread descriptor and TLS;
 * file transfers keep their buffers on the heap.  Only the pages a thread
 * touches become resident.  Sanitizers need more, hence the override.
 */
#ifndef CONN_STACK_SIZE
#define CONN_STACK_SIZE ((size_t)256 * 1024)
#endif

/* How long to stop accepting after EMFILE/ENFILE, unless a thread ends
 * (and frees a descriptor) sooner. */
#define ACCEPT_PAUSE_MS 100

/* The wait for handshakes under way when we stop accepting (see
 * take_in_backlog): at most this long, asking the kernel again after this
 * long at first. */
#define HANDSHAKE_WAIT_S 1.5
#define HANDSHAKE_RECHECK_S 0.005

static double now_s(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);  /* cannot fail */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A timeout for ppoll(); s < 0 gives a zero one (callers pass NULL then). */
static struct timespec timespec_from_s(double s)
{
    struct timespec ts = { 0, 0 };
    if (s > 0) {
        ts.tv_sec = (time_t)s;
        ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    }
    return ts;
}

/* ------------------------------------------------------------------ */
/* Signals: the only global state, because a handler can reach no other. */
/* ------------------------------------------------------------------ */

/*
 * A handler may only touch lock-free atomics (C11 7.14.1.1); anything else,
 * including a mutex or stdio, can deadlock or corrupt state if the signal
 * interrupts the main thread in the middle of using it.
 */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "signal flags must be lock-free");
static atomic_uint signals_received;    /* SIGINT/SIGTERM count so far */
static atomic_int last_signal;          /* which one came last */
static atomic_uint restarts_requested;  /* SIGHUP count so far */

static void on_shutdown_signal(int sig)
{
    atomic_store(&last_signal, sig);
    atomic_fetch_add(&signals_received, 1);
}

static void on_restart_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&restarts_requested, 1);
}

/*
 * Block SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread it
 * will create) and install their handlers.  *orig_mask receives the mask we
 * started with (a restarted server gets it back), *wait_mask the mask to
 * use while waiting: the original one with the three signals unblocked.
 */
static int install_signal_handlers(sigset_t *orig_mask, sigset_t *wait_mask)
{
    sigset_t ours;
    struct sigaction sa;
    int rc;

    sigemptyset(&ours);
    sigaddset(&ours, SIGINT);
    sigaddset(&ours, SIGTERM);
    sigaddset(&ours, SIGHUP);
    /* pthread_sigmask returns the error number; it does not set errno. */
    rc = pthread_sigmask(SIG_BLOCK, &ours, orig_mask);
    if (rc != 0) {
        log_line("server: pthread_sigmask: %s", strerror(rc));
        return -1;
    }
    *wait_mask = *orig_mask;
    sigdelset(wait_mask, SIGINT);
    sigdelset(wait_mask, SIGTERM);
    sigdelset(wait_mask, SIGHUP);

    memset(&sa, 0, sizeof sa);
    /* Block all three while a handler runs so one never interrupts
     * another.  No SA_RESTART: the point of the signal is to interrupt the
     * wait, and ppoll() is never restarted anyway. */
    sa.sa_mask = ours;
    sa.sa_flags = 0;
    sa.sa_handler = on_shutdown_signal;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        log_line("server: sigaction: %s", strerror(errno));
        return -1;
    }
    sa.sa_handler = on_restart_signal;
    if (sigaction(SIGHUP, &sa, NULL) != 0) {
        log_line("server: sigaction(SIGHUP): %s", strerror(errno));
        return -1;
    }

    /* A client that disconnects while we write would raise SIGPIPE, whose
     * default action kills the whole process.  Ignored, the write fails
     * with EPIPE instead and only that connection ends. */
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        log_line("server: sigaction(SIGPIPE): %s", strerror(errno));
        return -1;
    }
    return 0;
}

static const char *signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
}

/* ------------------------------------------------------------------ */
/* Options                                                            */
/* ------------------------------------------------------------------ */

struct options {
    const char *host;
    const char *port;       /* decimal, validated */
    double grace_s;         /* graceful drain before connections are cut */
    double header_timeout_s; /* see struct conn_env */
    size_t max_conns;       /* connection threads alive at once */
    const char *data_dir;
    long long max_body;     /* bytes */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: server [--host ADDR] [--port N] [--grace SECONDS]\n"
            "              [--max-conns N] [--data-dir DIR] [--max-body BYTES]\n"
            "              [--header-timeout SECONDS]\n"
            "\n"
            "  --host ADDR       numeric address to listen on (default 127.0.0.1)\n"
            "  --port N          TCP port, 0 for any free one (default 7878)\n"
            "  --grace SECONDS   on SIGINT/SIGTERM, how long in-flight requests may\n"
            "                    run before they are cut (default 30)\n"
            "  --max-conns N     connections served at once; more get 503 (default 1024)\n"
            "  --data-dir DIR    where PUT /files/NAME stores files (default ./data)\n"
            "  --max-body BYTES  largest accepted upload (default 104857600)\n"
            "  --header-timeout SECONDS\n"
            "                    a request head must arrive, and a body may stall,\n"
            "                    within this; else 408 (default 10)\n"
            "  --help, --version\n");
}

/* Parse a whole decimal integer in [min, max]; -1 if s is anything else. */
static int parse_integer(const char *s, long long min, long long max, long long *out)
{
    char *end;

    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parse decimal seconds in [min, 86400]; -1 if s is anything else. */
static int parse_seconds(const char *s, double min, double *out)
{
    char *end;

    errno = 0;
    double v = strtod(s, &end);
    /* The negated test also rejects NaN. */
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= 86400))
        return -1;
    *out = v;
    return 0;
}

/* Fills *o; returns -1 (after saying why) when the command line is bad. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { "grace", required_argument, NULL, 'g' },
        { "max-conns", required_argument, NULL, 'm' },
        { "data-dir", required_argument, NULL, 'd' },
        { "max-body", required_argument, NULL, 'b' },
        { "header-timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'H' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    long long v;
    int ch;

    *o = (struct options){
        .host = "127.0.0.1",
        .port = "7878",
        .grace_s = 30,
        /* 1024 threads is a comfortable load for one machine; beyond a few
         * thousand, thread-per-connection is the wrong design anyway. */
        .max_conns = 1024,
        .data_dir = "./data",
        .max_body = 100LL * 1024 * 1024,
        .header_timeout_s = 10,
    };
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            o->host = optarg;
            break;
        case 'p':
            if (parse_integer(optarg, 0, 65535, &v) != 0) {
                log_line("server: --port: not a port number: %s", optarg);
                return -1;
            }
            o->port = optarg;
            break;
        case 'g':
            if (parse_seconds(optarg, 0, &o->grace_s) != 0) {
                log_line("server: --grace: want seconds from 0 to 86400: %s", optarg);
                return -1;
            }
            break;
        case 't':
            if (parse_seconds(optarg, 0.001, &o->header_timeout_s) != 0) {
                log_line("server: --header-timeout: want seconds from 0.001 to 86400: %s",
                         optarg);
                return -1;
            }
            break;
        case 'm':
            if (parse_integer(optarg, 1, 1000000, &v) != 0) {
                log_line("server: --max-conns: want 1 to 1000000: %s", optarg);
                return -1;
            }
            o->max_conns = (size_t)v;
            break;
        case 'd':
            o->data_dir = optarg;
            break;
        case 'b':
            if (parse_integer(optarg, 0, LLONG_MAX, &v) != 0) {
                log_line("server: --max-body: want a byte count: %s", optarg);
                return -1;
            }
            o->max_body = v;
            break;
        case 'H':
            usage(stdout);
            exit(0);
        case 'V':
            printf("server %s\n", SERVER_VERSION);
            exit(0);
        default:
            return -1;  /* getopt_long has printed why */
        }
    }
    if (optind != argc) {
        log_line("server: unexpected argument: %s", argv[optind]);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The listening socket and the data directory                        */
/* ------------------------------------------------------------------ */

/* Write "HOST:PORT" (IPv6: "[HOST]:PORT") of a bound socket to name. */
static int describe_socket(int fd, char *name, size_t cap)
{
    struct sockaddr_storage addr = { .ss_family = AF_UNSPEC };
    socklen_t len = sizeof addr;
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0 ||
        getnameinfo((struct sockaddr *)&addr, len, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    (void)snprintf(name, cap, addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
    return 0;
}

/*
 * Bind and listen on host:port.  Returns the socket, or -1 after a one-line
 * error.
 */
static int open_listener(const char *host, const char *port)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
    };
    struct addrinfo *ai;
    int fd, rc, one = 1;

    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        log_line("server: --host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    /* Non-blocking: ppoll() may report a connection that the client resets
     * before we accept it, and accept() must then fail, not block. */
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_line("server: socket: %s", strerror(errno));
        goto out_free;
    }
    /* Without SO_REUSEADDR a restart right after Ctrl+C fails with
     * EADDRINUSE while the old connections sit in TIME_WAIT.  Should it
     * fail, only such restarts suffer: go on. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        log_line("server: setsockopt(SO_REUSEADDR): %s", strerror(errno));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno == EADDRINUSE)
            log_line("server: cannot listen on %s:%s: address already in use",
                     host, port);
        else
            log_line("server: cannot bind %s:%s: %s", host, port, strerror(errno));
        goto out_close;
    }
    if (listen(fd, SOMAXCONN) != 0) {
        log_line("server: listen on %s:%s: %s", host, port, strerror(errno));
        goto out_close;
    }
    freeaddrinfo(ai);
    return fd;

out_close:
    (void)close(fd);
out_free:
    freeaddrinfo(ai);
    return -1;
}

/*
 * The systemd socket-activation convention (sd_listen_fds(3)): when
 * LISTEN_PID is our pid and LISTEN_FDS is 1, descriptor 3 is a listening
 * socket someone else bound for us: systemd, or the server we replace on
 * SIGHUP.  Returns it, -1 when nothing was passed, or -2 after an error.
 */
#define LISTEN_FDS_START 3

static int inherited_listener(void)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    long long v;
    int accepting = 0;
    socklen_t len = sizeof accepting;

    /* LISTEN_PID guards against variables meant for another process that
     * leaked into our environment. */
    if (pid == NULL || fds == NULL || parse_integer(pid, 1, INT_MAX, &v) != 0 ||
        (pid_t)v != getpid())
        return -1;
    if (strcmp(fds, "1") != 0) {
        log_line("server: LISTEN_FDS=%s: want exactly one listening socket", fds);
        return -2;
    }
    int fd = LISTEN_FDS_START;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting) {
        log_line("server: LISTEN_FDS: descriptor %d is not a listening socket", fd);
        return -2;
    }
    /* Inherited descriptors come without our flags.  O_NONBLOCK is shared
     * with whoever else holds the socket, which wants it too. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        log_line("server: fcntl on the inherited socket: %s", strerror(errno));
        return -2;
    }
    /* As sd_listen_fds(3) does: our children must not take these as theirs. */
    (void)unsetenv("LISTEN_PID");
    (void)unsetenv("LISTEN_FDS");
    (void)unsetenv("LISTEN_FDNAMES");
    return fd;
}

/* Create the data directory if missing and open it: uploads then work on
 * names relative to this descriptor and cannot escape it. */
static int open_data_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        log_line("server: cannot create data dir %s: %s", path, strerror(errno));
        return -1;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        log_line("server: cannot open data dir %s: %s", path, strerror(errno));
    return fd;
}

/*
 * Each connection holds a descriptor, and one more while it uploads.  The
 * soft limit is often 1024 while the hard one is far higher; raising the
 * soft limit to the hard one is what it is there for.  If even that is too
 * low for --max-conns, say so now rather than surprise anyone later.
 */
static void raise_fd_limit(size_t max_conns)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_line("server: getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            /* Keep the old limit, and read it back for the check below. */
            log_line("server: setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
            if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
                return;
        }
    }
    rlim_t need = (rlim_t)max_conns * 2 + 16;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_line("descriptor limit %llu is below the %llu that --max-conns %zu "
                 "may need; accepting pauses whenever descriptors run out",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)need, max_conns);
}

/* ------------------------------------------------------------------ */
/* The record of connection threads                                   */
/* ------------------------------------------------------------------ */

/*
 * The record: every thread we start is counted in n_live from before it
 * starts until it finishes, then sits on the finished list until main joins
 * it.  A finishing thread writes one byte to the reaper pipe, which the main
 * loop polls next to the listener, so it is joined at once.  Handles never
 * pile up (the textbook version keeps every pthread_t it ever created), and
 * the drain learns of the last exit within microseconds instead of polling.
 * main needs no list of live threads: it never reaches into a connection;
 * closing the force pipe is how it cuts them.
 */
struct conn_thread {
    pthread_t thread;
    int fd;                         /* the connection; conn_serve closes it */
    struct server *srv;
    struct conn_thread *next;       /* finished list, or spare list */
    char *stack;                    /* a guard page, then CONN_STACK_SIZE */
};

struct server {
    pthread_mutex_t lock;           /* guards n_live and finished */
    size_t n_live;                  /* started and not yet finished */
    struct conn_thread *finished;   /* finished, waiting to be joined */
    int reap_r, reap_w;             /* reaper pipe: a byte per finished thread */
    int drain_w, force_w;           /* closing these starts each phase */
    atomic_bool draining;           /* set just before drain_w is closed */
    struct conn_thread *spare;      /* joined; kept with their stacks */
    size_t n_spare;                 /* spare and n_spare are main's alone */
    size_t page_size;
    pthread_attr_t attr;            /* joinable; the stack is set per thread */
    struct conn_env env;            /* what every handler sees */
    size_t max_conns;
};

/*
 * Thread stacks are ours, not glibc's.  glibc would hand out stacks from
 * its cache and, at every thread exit, madvise(MADV_DONTNEED) the unused
 * part of the stack.  When threads exit on both cores at once, the kernel
 * turns those calls into TLB flushes of every core (inter-processor
 * interrupts); glibc also unmaps the stacks that overflow its 40 MiB
 * cache, with the same effect.  A stack given with pthread_attr_setstack
 * glibc neither advises nor unmaps, so we keep each joined thread's
 * record, stack included, for the next connection: once warm, starting a
 * connection thread maps nothing and ending one unmaps nothing.  What
 * glibc did that we must do ourselves: the guard page, the lowest page of
 * each stack, PROT_NONE so that an overflow faults instead of writing over
 * whatever lies below.
 */
#define SPARE_THREADS_MAX 256

/* A guard page and CONN_STACK_SIZE bytes above it; NULL if out of memory. */
static char *stack_map(size_t page_size)
{
    char *m = mmap(NULL, page_size + CONN_STACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (mprotect(m, page_size, PROT_NONE) != 0) {
        (void)munmap(m, page_size + CONN_STACK_SIZE);
        return NULL;
    }
    return m;
}

/* A record with a stack for a new thread, spare or new; NULL if out of memory. */
static struct conn_thread *conn_thread_get(struct server *srv)
{
    struct conn_thread *t = srv->spare;

    if (t != NULL) {
        srv->spare = t->next;
        srv->n_spare--;
        return t;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->stack = stack_map(srv->page_size);
    if (t->stack == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

/*
 * Keep a joined thread's record and stack for the next connection, up to
 * SPARE_THREADS_MAX of them (a spare stack keeps the pages its threads
 * touched, 12 KiB for most, so about 3 MiB): beyond that, a burst of
 * connections would hold its peak of stacks for good.  While draining
 * every one is kept: nothing is started any more, and the exit that
 * follows frees the address space in one go, instead of a munmap (and its
 * TLB shootdown) per stack.
 */
static void conn_thread_put(struct server *srv, struct conn_thread *t)
{
    if (srv->n_spare >= SPARE_THREADS_MAX && !atomic_load(&srv->draining)) {
        (void)munmap(t->stack, srv->page_size + CONN_STACK_SIZE);
        free(t);
        return;
    }
    t->next = srv->spare;
    srv->spare = t;
    srv->n_spare++;
}

static void *conn_thread_main(void *arg)
{
    struct conn_thread *t = arg;
    struct server *srv = t->srv;

    conn_serve(t->fd, &srv->env);

    pthread_mutex_lock(&srv->lock);
    t->next = srv->finished;
    srv->finished = t;
    srv->n_live--;
    pthread_mutex_unlock(&srv->lock);

    /* From here on main may join us and free t: touch nothing of it.  The
     * pipe is non-blocking; if it is full, main has wake-ups pending anyway. */
    char byte = 0;
    if (write(srv->reap_w, &byte, 1) < 0) {
        /* EAGAIN: see above.  Nothing else can happen to a pipe main holds. */
    }
    return NULL;
}

/* Join every finished thread. */
static void reap_finished(struct server *srv)
{
    char bytes[256];

    /* Empty the pipe before taking the list: a thread that finishes after
     * we take it writes a fresh byte, so it cannot be missed. */
    while (read(srv->reap_r, bytes, sizeof bytes) > 0)
        ;
    pthread_mutex_lock(&srv->lock);
    struct conn_thread *t = srv->finished;
    srv->finished = NULL;
    pthread_mutex_unlock(&srv->lock);

    while (t) {
        struct conn_thread *next = t->next;
        /* The thread has at most its return left to run: this is quick. */
        int rc = pthread_join(t->thread, NULL);
        if (rc != 0)
            log_line("server: pthread_join: %s", strerror(rc));
        conn_thread_put(srv, t);
        t = next;
    }
}

static size_t live_count(struct server *srv)
{
    pthread_mutex_lock(&srv->lock);
    size_t n = srv->n_live;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

/* Start a thread for fd, or answer 503 if we are at the cap or cannot. */
static void start_conn_thread(struct server *srv, int fd)
{
    pthread_mutex_lock(&srv->lock);
    bool full = srv->n_live >= srv->max_conns;
    if (!full)
        srv->n_live++;      /* counted before it runs, so it can't be missed */
    pthread_mutex_unlock(&srv->lock);
    if (full) {
        conn_reject_busy(fd);
        return;
    }

    /* No record or stack: pthread_create's own answer when it cannot
     * allocate a stack. */
    int rc = EAGAIN;
    struct conn_thread *t = conn_thread_get(srv);
    if (t != NULL) {
        t->fd = fd;
        t->srv = srv;
        rc = pthread_attr_setstack(&srv->attr, t->stack + srv->page_size, CONN_STACK_SIZE);
        /* Each thread owns its own heap argument: never the address of a
         * variable the next accept() overwrites. */
        if (rc == 0)
            rc = pthread_create(&t->thread, &srv->attr, conn_thread_main, t);
    }
    if (rc != 0) {
        /* pthread_* return the error number; errno is not set. */
        log_line("server: pthread_create: %s", strerror(rc));
        if (t != NULL)
            conn_thread_put(srv, t);
        pthread_mutex_lock(&srv->lock);
        srv->n_live--;
        pthread_mutex_unlock(&srv->lock);
        conn_reject_busy(fd);
    }
}

/* ------------------------------------------------------------------ */
/* Accepting                                                          */
/* ------------------------------------------------------------------ */

/*
 * At most this many accepts before the loop polls again, and so also
 * joins the threads that finished meanwhile.  Unbounded, a client that
 * reconnects as fast as we accept (ab -c8) keeps the backlog from ever
 * emptying; no thread is joined for that long, and each finished one holds
 * its stack, which then stays as a spare, so memory would creep up with
 * the load.  The price is one more ppoll() per batch.
 */
#define ACCEPT_BATCH 16

/*
 * Accept the connections waiting in the backlog, up to batch of them.
 * Returns true when accepting must pause because we are out of
 * descriptors: the pending connection stays in the backlog and the
 * listener stays readable, so polling it again at once would spin at 100%
 * CPU.
 */
static bool accept_pending(struct server *srv, int listen_fd, int batch)
{
    for (int i = 0; i < batch; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
                return false;           /* backlog empty */
            case EINTR:
            case ECONNABORTED:          /* client gave up while queued */
            case EPROTO:
                continue;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                log_line("server: accept: %s; pausing accepts", strerror(errno));
                return true;
            default:
                log_line("server: accept: %s", strerror(errno));
                return false;
            }
        }
        /* No TCP_NODELAY here: handler.c sets it on the connections that
         * need it, at their second write (see before_write there). */
        start_conn_thread(srv, fd);
    }
    return false;
}

/*
 * Stopping accepting ends in closing the listener, and close(2) of a
 * listening socket resets every connection left in its backlog: clients
 * whose connect() has returned, some with their request already sent.
 * Taking in the backlog first is not enough, because the kernel goes on
 * completing handshakes for us until the very close(): one that completes
 * after our last accept() is reset.  So we first tell the kernel to stop.
 * There is no call for that (no "un-listen"); a socket filter does it
 * (socket(7), SO_ATTACH_FILTER): on a TCP socket the filter sees each
 * segment from its TCP header on, and this one drops every segment with
 * SYN set.  No new handshake starts.  The last segments of handshakes
 * already under way carry no SYN and pass, as does everything on
 * connections already queued (accepted sockets inherit the filter, and
 * never receive a SYN).  A client whose SYN was dropped sends it again
 * after the initial retransmission timeout, one second (RFC 6298 2.1),
 * finds the listener closed and is refused: safe to retry, unlike a reset
 * after its request was sent.  Handshakes already under way when the
 * filter went on are waited for: see take_in_backlog.  Linux only;
 * elsewhere this fails with ENOPROTOOPT and the window stays.
 */
static int stop_new_handshakes(int listen_fd)
{
#ifdef SO_ATTACH_FILTER
    static struct sock_filter drop_syn[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),         /* TCP flags byte */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x02, 0, 1), /* SYN set? */
        BPF_STMT(BPF_RET | BPF_K, 0),                   /* yes: drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),          /* no: keep it all */
    };
    struct sock_fprog prog = { .len = sizeof drop_syn / sizeof drop_syn[0],
                               .filter = drop_syn };
    return setsockopt(listen_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
#else
    (void)listen_fd;
    errno = ENOPROTOOPT;
    return -1;
#endif
}

static int handshakes_under_way(int listen_fd);     /* below: how sock_diag counts */

/*
 * Stop accepting, once the filter is on: take in the backlog, and the
 * handshakes already under way.  A client counts itself connected as soon
 * as our SYN-ACK reaches it and may be sending its request; if its last
 * ACK reached us after our last accept, close() would reset it.  So count
 * first, then accept: once the count is 0, no handshake can start (the
 * filter) and every one that completed is in the backlog, which the
 * accepts then empty.  While some are under way, wait for the listener to
 * become readable (one completed), and ask again after HANDSHAKE_RECHECK_S,
 * then twice as long each time, since no event tells of a handshake that
 * the kernel drops instead (and each count walks the kernel's whole table
 * of TCP sockets: a millisecond or more, see bench/results.md).  At
 * most HANDSHAKE_WAIT_S: a SYN-ACK lost on the way is sent again after one
 * second (RFC 6298 2.1) and answered a round trip later, and handshakes
 * that never finish (a SYN flood) must not hold the shutdown.  A second
 * signal ends the wait too.  Handshakes the kernel answered with a SYN
 * cookie, as it does when the queue of handshakes is full, leave no socket
 * to count and are not waited for.
 */
static void take_in_backlog(struct server *srv, int listen_fd, unsigned cut_at,
                            const sigset_t *wait_mask)
{
    double deadline = now_s() + HANDSHAKE_WAIT_S, recheck = HANDSHAKE_RECHECK_S;
    bool told = false;

    for (;;) {
        int under_way = handshakes_under_way(listen_fd);
        if (under_way < 0)
            log_line("server: cannot count the handshakes under way: %s", strerror(errno));
        (void)accept_pending(srv, listen_fd, SOMAXCONN);
        if (under_way <= 0)
            return;
        if (!told) {
            log_line("server: waiting for %d handshake(s) under way", under_way);
            told = true;
        }
        double left = deadline - now_s();
        if (left <= 0 || atomic_load(&signals_received) >= cut_at) {
            log_line("server: closing the listener with %d handshake(s) under way", under_way);
            return;
        }
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        struct timespec wait = timespec_from_s(left < recheck ? left : recheck);
        recheck *= 2;
        /* EINTR is a signal: the loop looks at the count again. */
        if (ppoll(&p, 1, &wait, wait_mask) < 0 && errno != EINTR) {
            log_line("server: waiting for handshakes: %s", strerror(errno));
            return;
        }
    }
}

#ifdef __linux__
/*
 * How many sockets of this family on this local port are in SYN_RECV, as
 * the kernel's socket diagnostics report them (sock_diag(7); ss(8) asks
 * the same way): a handshake whose SYN we received and answered, whose
 * client's last ACK we have not (yet).  -1 with errno set on failure.
 */
static int count_syn_recv(int nl, int family, in_port_t port)
{
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 req;
    } ask = {
        .nh = { .nlmsg_len = sizeof ask, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
        .req = { .sdiag_family = (unsigned char)family, .sdiag_protocol = IPPROTO_TCP,
                 .idiag_states = 1u << TCP_SYN_RECV, .id.idiag_sport = port },
    };
    union { struct nlmsghdr nh; char bytes[8192]; } reply;   /* aligned */
    int count = 0;

    /* No EINTR: the main thread blocks our signals outside its ppoll(). */
    if (send(nl, &ask, sizeof ask, 0) != (ssize_t)sizeof ask)
        return -1;
    for (;;) {
        ssize_t n = recv(nl, &reply, sizeof reply, 0);
        if (n <= 0) {
            if (n == 0)
                errno = EPROTO;     /* the dump ended without NLMSG_DONE */
            return -1;
        }
        /* NLMSG_OK and NLMSG_NEXT, spelled out without their int casts. */
        for (size_t off = 0; off + NLMSG_HDRLEN <= (size_t)n;) {
            const struct nlmsghdr *h = (const struct nlmsghdr *)(reply.bytes + off);
            if (h->nlmsg_len < NLMSG_HDRLEN || h->nlmsg_len > (size_t)n - off) {
                errno = EPROTO;
                return -1;
            }
            if (h->nlmsg_type == NLMSG_DONE)
                return count;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                errno = e->error < 0 ? -e->error : EPROTO;
                return -1;
            }
            count++;
            off += NLMSG_ALIGN(h->nlmsg_len);
        }
    }
}
#endif

/*
 * How many handshakes on listen_fd's port are under way: 0 for a socket
 * that has none (not TCP), -1 with errno set if the kernel cannot say.
 */
static int handshakes_under_way(int listen_fd)
{
    struct sockaddr_storage addr = { .ss_family = AF_UNSPEC };
    socklen_t len = sizeof addr;

    if (getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6)
        return 0;
#ifdef __linux__
    /* sin_port and sin6_port are at the same offset. */
    in_port_t port = ((const struct sockaddr_in *)&addr)->sin_port;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return -1;
    /* An IPv6 listener takes IPv4 clients too, whose handshakes are IPv4's. */
    int n = count_syn_recv(nl, AF_INET, port);
    if (n >= 0 && addr.ss_family == AF_INET6) {
        int n6 = count_syn_recv(nl, AF_INET6, port);
        n = n6 < 0 ? -1 : n + n6;
    }
    int saved = errno;
    (void)close(nl);        /* a netlink socket has nothing to flush */
    errno = saved;
    return n;
#else
    errno = ENOSYS;
    return -1;
#endif
}

/*
 * The end of "stop accepting".  A socket we inherited (from systemd, or
 * from the server we took over from) may still be held by whoever gave it
 * to us, and it goes on listening after our close(): leave it as we found
 * it.  Its backlog then survives our close and needs no filter.  (If we
 * are its last holder, a successor whose predecessor has exited, the
 * window comes back for the few microseconds between the detach and the
 * close.)  Returns -1 with errno set if the filter could not be taken off;
 * the listener is closed either way.
 */
static int close_listener(int listen_fd, bool inherited)
{
    int rc = 0;
#ifdef SO_DETACH_FILTER
    /* The value is ignored, but Linux refuses an option shorter than an
     * int.  ENOENT means no filter was attached: nothing to undo. */
    int unused = 0;
    if (inherited &&
        setsockopt(listen_fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) != 0 &&
        errno != ENOENT)
        rc = -1;
#else
    (void)inherited;
#endif
    int saved = errno;
    /* A listening socket has no unsent data, so close() cannot fail in a
     * way we could act on. */
    (void)close(listen_fd);
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Hot restart on SIGHUP                                              */
/* ------------------------------------------------------------------ */

/*
 * SIGHUP starts our binary again, from the path we were started from (so a
 * newly deployed version is picked up) and with our arguments, and hands it
 * the listening socket as descriptor 3 with LISTEN_FDS=1 and LISTEN_PID set
 * for it alone: the socket-activation convention, so the same start-up code
 * serves systemd.  The listener is never closed while either process holds
 * it, so no connection waiting in the backlog is ever reset: both processes
 * accept from the one queue until the old one stops.
 *
 * The new process says it can accept by writing one byte to a pipe whose
 * descriptor it finds in GRACEFUL_READY_FD.  A pipe answers both questions:
 * a byte means ready; EOF without a byte means it died, or exec failed,
 * before that.  Only on the byte does the old process stop accepting and
 * drain exactly as on SIGTERM; on EOF it logs why and goes on serving.
 */
#define READY_FD_ENV "GRACEFUL_READY_FD"
#define RESTART_READY_TIMEOUT_S 30.0

/* What exec needs, prepared at start-up. */
struct self_exec {
    char path[PATH_MAX];    /* empty when it could not be found */
    char **argv;            /* main's argv: the same arguments again */
    sigset_t orig_mask;     /* the signal mask we were started with */
};

struct restart {
    pid_t pid;              /* the new process; 0 when none is starting */
    int ready_r;            /* read end of its readiness pipe, or -1 */
    double deadline;        /* when we stop waiting for it */
};

/*
 * argv[0] as we were started (we never chdir, so a relative path stays
 * right), or its match on PATH when started by bare name.  Not
 * /proc/self/exe: that names the file we are running, which a deploy has
 * just replaced with the version we want.
 */
static void find_self(const char *argv0, char *out, size_t cap)
{
    out[0] = '\0';
    if (strchr(argv0, '/') != NULL) {
        (void)snprintf(out, cap, "%s", argv0);
        return;
    }
    const char *dirs = getenv("PATH");
    while (dirs != NULL && *dirs != '\0') {
        size_t len = strcspn(dirs, ":");
        (void)snprintf(out, cap, "%.*s/%s", (int)len, dirs, argv0);
        if (access(out, X_OK) == 0)
            return;
        dirs += len + (dirs[len] == ':');
    }
    out[0] = '\0';
}

/* Our environment minus any socket-activation variables, plus the new
 * process's: LISTEN_FDS=1, listen_pid and ready_var.  NULL if out of memory. */
static char **restart_environment(char *listen_pid, char *ready_var)
{
    extern char **environ;
    static const char *const drop[] = {
        "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", READY_FD_ENV "=",
    };
    static char listen_fds[] = "LISTEN_FDS=1";
    size_t n = 0, k = 0;

    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 4, sizeof *envp);
    if (envp == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bool keep = true;
        for (size_t d = 0; d < sizeof drop / sizeof drop[0]; d++)
            if (strncmp(environ[i], drop[d], strlen(drop[d])) == 0)
                keep = false;
        if (keep)
            envp[k++] = environ[i];
    }
    envp[k++] = listen_fds;
    envp[k++] = listen_pid;
    envp[k++] = ready_var;
    envp[k] = NULL;
    return envp;
}

/*
 * In the child, between fork() and exec.  fork() copied one thread of a
 * multi-threaded process, with every lock the others held (malloc's,
 * stdio's) frozen in whatever state it was in; only async-signal-safe
 * functions are allowed until exec.  So no malloc and no printf here: the
 * environment was built before fork(), and our pid, known only now, is
 * written into it by hand.
 */
static void exec_new_server(const struct self_exec *self, int listen_fd, int ready_w,
                            char *pid_digits, char **envp)
{
    char tmp[16];
    size_t n = 0;
    for (pid_t pid = getpid(); pid > 0 && n < sizeof tmp; pid /= 10)
        tmp[n++] = (char)('0' + pid % 10);
    while (n > 0)
        *pid_digits++ = tmp[--n];
    *pid_digits = '\0';

    /* dup2() gives the copy no FD_CLOEXEC; if the listener is already 3,
     * clear the flag by hand.  Every other descriptor we own is
     * close-on-exec and vanishes at exec, as the new process expects. */
    if (listen_fd == LISTEN_FDS_START) {
        if (fcntl(listen_fd, F_SETFD, 0) != 0)
            _exit(126);
    } else if (dup2(listen_fd, LISTEN_FDS_START) < 0) {
        _exit(126);
    }
    if (fcntl(ready_w, F_SETFD, 0) != 0)
        _exit(126);
    /* The child is single-threaded now, so sigprocmask is the right call. */
    (void)sigprocmask(SIG_SETMASK, &self->orig_mask, NULL);
    execve(self->path, self->argv, envp);
    _exit(127);     /* the old server sees EOF on the pipe and carries on */
}

static void restart_begin(struct restart *r, const struct self_exec *self, int listen_fd)
{
    int p[2];

    if (self->path[0] == '\0') {
        log_line("SIGHUP: cannot restart: the path of this binary is unknown");
        return;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        log_line("server: restart: pipe: %s", strerror(errno));
        return;
    }
    /* Keep the write end above descriptor 3, where dup2() puts the
     * listener in the child. */
    int ready_w = fcntl(p[1], F_DUPFD_CLOEXEC, LISTEN_FDS_START + 1);
    (void)close(p[1]);
    if (ready_w < 0) {
        log_line("server: restart: fcntl: %s", strerror(errno));
        (void)close(p[0]);
        return;
    }
    char listen_pid[32] = "LISTEN_PID=";   /* the child appends its pid */
    char ready_var[48];
    (void)snprintf(ready_var, sizeof ready_var, "%s=%d", READY_FD_ENV, ready_w);
    char **envp = restart_environment(listen_pid, ready_var);
    pid_t pid = envp ? fork() : -1;
    if (pid == 0)
        exec_new_server(self, listen_fd, ready_w, listen_pid + strlen(listen_pid), envp);
    int fork_errno = envp ? errno : ENOMEM;
    free(envp);
    (void)close(ready_w);
    if (pid < 0) {
        log_line("SIGHUP: cannot restart: %s", strerror(fork_errno));
        (void)close(p[0]);
        return;
    }
    r->pid = pid;
    r->ready_r = p[0];
    r->deadline = now_s() + RESTART_READY_TIMEOUT_S;
    log_line("SIGHUP: started %s as pid %d; waiting until it is ready",
             self->path, (int)pid);
}

/* The new process did not make it: reap it and go on serving. */
static void restart_abandon(struct restart *r, const char *why)
{
    int status = 0;

    /* Harmless if it has exited already (a zombie ignores signals), and it
     * makes the waitpid below certain to return. */
    (void)kill(r->pid, SIGKILL);
    while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status))
        log_line("restart failed: new server (pid %d) %s, exit status %d; still serving",
                 (int)r->pid, why, WEXITSTATUS(status));
    else
        log_line("restart failed: new server (pid %d) %s, killed by signal %d; "
                 "still serving", (int)r->pid, why,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    (void)close(r->ready_r);
    r->pid = 0;
    r->ready_r = -1;
}

/* The readiness pipe is readable: true if the new process is ready. */
static bool restart_ready(struct restart *r)
{
    char byte;
    ssize_t n = read(r->ready_r, &byte, 1);

    if (n == 1) {
        log_line("new server (pid %d) is ready; handing over", (int)r->pid);
        (void)close(r->ready_r);
        r->ready_r = -1;
        return true;
    }
    restart_abandon(r, "exited before it was ready");
    return false;
}

/* Run in a server started with an inherited listener: tell the server we
 * replace that we can accept.  Only then does it stop accepting. */
static void tell_old_server_ready(void)
{
    const char *v = getenv(READY_FD_ENV);
    long long fd;

    if (v == NULL || parse_integer(v, LISTEN_FDS_START + 1, INT_MAX, &fd) != 0)
        return;
    (void)unsetenv(READY_FD_ENV);
    if (write((int)fd, "R", 1) != 1)
        log_line("server: telling the old server we are ready: %s", strerror(errno));
    (void)close((int)fd);
}

/*
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: one
 * datagram to the AF_UNIX socket named in NOTIFY_SOCKET.  MAINPID= matters
 * after a hot restart: the new server is the old one's child, and without
 * it systemd would take the old one's exit for the service stopping.
 */
static void notify_systemd_ready(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char msg[64];

    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';     /* the abstract namespace */
    int n = snprintf(msg, sizeof msg, "READY=1\nMAINPID=%ld", (long)getpid());
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_line("server: socket(AF_UNIX): %s", strerror(errno));
        return;
    }
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        log_line("server: notifying systemd: %s", strerror(errno));
    (void)close(fd);
}

/* ------------------------------------------------------------------ */
/* The accept loop                                                    */
/* ------------------------------------------------------------------ */

enum loop_end { LOOP_SIGNAL, LOOP_HANDED_OVER, LOOP_ERROR };

/*
 * Tests only.  `make test` also builds server-race with
 * -DGRACEFUL_RACE_WINDOW_MS=N, in which the main thread holds still for
 * N ms at five places where a race is microseconds wide: in the accept
 * loop between the check of the flag and the wait (where a textbook loop
 * loses a signal, lesson step 2), between the last accept of "stop
 * accepting" and its close of the listener, in the drain and in the join
 * after a cut between counting the live threads and reaping, and after a
 * second signal before counting what is left to cut.
 * A test can then put its signal, its connect, or the end of its last
 * connection exactly inside the window.  In every other build this is
 * nothing.
 */
#ifdef GRACEFUL_RACE_WINDOW_MS
static void race_window(const char *where)
{
    unsigned before = atomic_load(&signals_received);
    struct timespec left = { GRACEFUL_RACE_WINDOW_MS / 1000,
                             (GRACEFUL_RACE_WINDOW_MS % 1000) * 1000000L };
    sigset_t pending;

    log_line("race window open: %s", where);
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;   /* a handler ran here (signals unblocked): the window stays open */
    bool came = atomic_load(&signals_received) != before ||
                (sigpending(&pending) == 0 &&
                 (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1));
    log_line("race window closed: %s%s", where, came ? "; a signal came in it" : "");
}
#define RACE_WINDOW(where) race_window(where)
/* This one would hold every shutdown still, so only tests that set
 * GRACEFUL_RACE_CLOSE get it. */
#define RACE_WINDOW_CLOSE() \
    (getenv("GRACEFUL_RACE_CLOSE") != NULL ? race_window("close") : (void)0)
#else
#define RACE_WINDOW(where) ((void)0)
#define RACE_WINDOW_CLOSE() ((void)0)
#endif

/*
 * ppoll() runs a pending signal's handler only when it actually waits: if a
 * descriptor is already ready when it is called, it returns at once and the
 * signal stays pending.  Under a steady stream of connections that could
 * postpone Ctrl+C for as long as the stream lasts.  So after a wait that
 * returned ready descriptors, if one of our signals is pending, open the
 * mask for an instant to let it in.  (A self-pipe would not have this
 * problem: the signal would just be one more ready descriptor.)
 */
static void let_pending_signals_in(const sigset_t *wait_mask)
{
    sigset_t pending, blocked;

    if (sigpending(&pending) != 0 ||
        !(sigismember(&pending, SIGINT) || sigismember(&pending, SIGTERM) ||
          sigismember(&pending, SIGHUP)))
        return;
    /* The handler runs as the mask opens; the flag is then set. */
    (void)pthread_sigmask(SIG_SETMASK, wait_mask, &blocked);
    (void)pthread_sigmask(SIG_SETMASK, &blocked, NULL);
}

/*
 * Serve until SIGINT or SIGTERM, or until a server started on SIGHUP is
 * ready to take over.  The signals are blocked everywhere except inside
 * ppoll(), which installs wait_mask and waits in one atomic step, so a
 * signal landing after the while-condition but before the wait is not lost
 * (the race a plain poll() or accept() loop has).
 */
static enum loop_end accept_loop(struct server *srv, int listen_fd,
                                 const struct self_exec *self, const sigset_t *wait_mask)
{
    enum { LISTENER, REAPER, READY };
    struct pollfd fds[3] = {
        [LISTENER] = { .fd = listen_fd, .events = POLLIN },
        [REAPER] = { .fd = srv->reap_r, .events = POLLIN },
        [READY] = { .fd = -1, .events = POLLIN },
    };
    struct restart restart = { .pid = 0, .ready_r = -1 };
    unsigned restarts_seen = 0;
    bool paused = false;

    while (atomic_load(&signals_received) == 0) {
        unsigned hups = atomic_load(&restarts_requested);
        if (hups != restarts_seen) {
            restarts_seen = hups;
            if (restart.pid != 0)
                log_line("SIGHUP: a restart is already in progress; ignored");
            else
                restart_begin(&restart, self, listen_fd);
        }

        /* poll() ignores negative descriptors: that is how we pause. */
        fds[LISTENER].fd = paused ? -1 : listen_fd;
        fds[READY].fd = restart.ready_r;
        double wait_s = paused ? ACCEPT_PAUSE_MS / 1000.0 : -1;
        if (restart.pid != 0) {
            double left = restart.deadline - now_s();
            if (wait_s < 0 || left < wait_s)
                wait_s = left > 0 ? left : 0;
        }
        struct timespec timeout = timespec_from_s(wait_s);
        RACE_WINDOW("accept");
        int n = ppoll(fds, 3, wait_s >= 0 ? &timeout : NULL, wait_mask);
        if (n < 0) {
            if (errno == EINTR)
                continue;   /* one of our signals: the loop sees it */
            log_line("server: ppoll: %s", strerror(errno));
            if (restart.pid != 0)
                restart_abandon(&restart, "was stopped: the accept loop failed");
            return LOOP_ERROR;
        }
        paused = false;     /* timed out, or a thread ended and freed an fd */
        let_pending_signals_in(wait_mask);
        if (fds[REAPER].revents & POLLIN)
            reap_finished(srv);
        if (fds[READY].revents && restart_ready(&restart))
            return LOOP_HANDED_OVER;
        if (restart.pid != 0 && now_s() >= restart.deadline)
            restart_abandon(&restart, "was not ready in time");
        if (fds[LISTENER].revents & POLLIN)
            paused = accept_pending(srv, listen_fd, ACCEPT_BATCH);
    }
    /* Asked to stop while a successor was starting: stop it too, or it
     * would start serving after the operator said stop. */
    if (restart.pid != 0)
        restart_abandon(&restart, "was stopped: shutdown requested");
    return LOOP_SIGNAL;
}

/* ------------------------------------------------------------------ */
/* Draining                                                           */
/* ------------------------------------------------------------------ */

enum drain_end { DRAIN_DONE, DRAIN_DEADLINE, DRAIN_SECOND_SIGNAL };

/*
 * Join threads as they finish until none are left, the grace period ends,
 * or the signal count reaches cut_at (ppoll unblocks them here too).
 */
static enum drain_end wait_for_connections(struct server *srv, double grace_s,
                                           unsigned cut_at, const sigset_t *wait_mask)
{
    double deadline = now_s() + grace_s;
    struct pollfd reaper = { .fd = srv->reap_r, .events = POLLIN };
    unsigned seen = atomic_load(&signals_received);

    for (;;) {
        /* Count before reaping: a thread no longer counted has already put
         * itself on the finished list, so this reap joins it. */
        size_t live = live_count(srv);
        if (live > 0)
            RACE_WINDOW("reap");
        reap_finished(srv);
        if (live == 0)
            return DRAIN_DONE;
        /* The last thread may have finished between the count and the
         * reap, which then read its byte: count again, or the wait below
         * would sleep until the deadline for a byte that came already. */
        if (live_count(srv) == 0)
            continue;
        double left = deadline - now_s();
        if (left <= 0)
            return DRAIN_DEADLINE;
        struct timespec timeout = timespec_from_s(left);
        if (ppoll(&reaper, 1, &timeout, wait_mask) < 0 && errno != EINTR) {
            log_line("server: ppoll: %s", strerror(errno));
            return DRAIN_DEADLINE;
        }
        unsigned got = atomic_load(&signals_received);
        if (got >= cut_at)
            return DRAIN_SECOND_SIGNAL;
        /* Below cut_at yet new: only the first signal after a hand-over. */
        if (got != seen)
            log_line("%s after hand-over: already draining",
                     signal_name(atomic_load(&last_signal)));
        seen = got;
    }
}

/*
 * After force_w is closed every wait in every handler wakes, and the
 * threads return within microseconds: join them all.  What the force pipe
 * cannot wake is a thread inside a syscall that is not a wait of ours (an
 * fsync on a hung disk, say).  For that one case, one more SIGINT/SIGTERM
 * exits without joining: the operator's last word, kinder than SIGKILL
 * because it still says why.
 */
static void join_all(struct server *srv, const sigset_t *wait_mask)
{
    unsigned seen = atomic_load(&signals_received);
    struct pollfd reaper = { .fd = srv->reap_r, .events = POLLIN };

    for (;;) {
        size_t live = live_count(srv);  /* before reaping: see above */
        if (live > 0)
            RACE_WINDOW("join");
        reap_finished(srv);
        if (live == 0)
            return;
        /* Its byte is read (see above), and after a cut no deadline is
         * left to end the wait below: without this count, for ever. */
        if (live_count(srv) == 0)
            continue;
        if (ppoll(&reaper, 1, NULL, wait_mask) < 0 && errno != EINTR) {
            log_line("server: ppoll: %s", strerror(errno));
            return;
        }
        if (atomic_load(&signals_received) != seen) {
            log_line("%s while cutting; exiting with %zu thread(s) stuck",
                     signal_name(atomic_load(&last_signal)), live_count(srv));
            _exit(1);
        }
    }
}

/* ------------------------------------------------------------------ */
/* main                                                               */
/* ------------------------------------------------------------------ */

static int server_init(struct server *srv, const struct options *o, int data_dir_fd)
{
    int reap[2], drain[2], force[2];
    int rc;

    memset(srv, 0, sizeof *srv);
    atomic_init(&srv->draining, false);
    /* O_NONBLOCK on the reaper: neither a worker's write nor main's
     * emptying read may ever block. */
    if (pipe2(reap, O_CLOEXEC | O_NONBLOCK) != 0) {
        log_line("server: pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(drain, O_CLOEXEC) != 0) {
        log_line("server: pipe: %s", strerror(errno));
        goto out_reap;
    }
    if (pipe2(force, O_CLOEXEC) != 0) {
        log_line("server: pipe: %s", strerror(errno));
        goto out_drain;
    }
    rc = pthread_attr_init(&srv->attr);
    if (rc != 0) {
        log_line("server: pthread_attr: %s", strerror(rc));
        goto out_force;
    }
    rc = pthread_mutex_init(&srv->lock, NULL);
    if (rc != 0) {
        log_line("server: pthread_mutex_init: %s", strerror(rc));
        pthread_attr_destroy(&srv->attr);
        goto out_force;
    }
    srv->page_size = (size_t)sysconf(_SC_PAGESIZE);
    srv->reap_r = reap[0];
    srv->reap_w = reap[1];
    srv->drain_w = drain[1];
    srv->force_w = force[1];
    srv->max_conns = o->max_conns;
    srv->env = (struct conn_env){
        .data_dir_fd = data_dir_fd,
        .drain_fd = drain[0],
        .force_fd = force[0],
        .draining = &srv->draining,
        .max_body = o->max_body,
        .header_timeout_ms = (int)(o->header_timeout_s * 1000),
    };
    return 0;

out_force:
    (void)close(force[0]);
    (void)close(force[1]);
out_drain:
    (void)close(drain[0]);
    (void)close(drain[1]);
out_reap:
    (void)close(reap[0]);
    (void)close(reap[1]);
    return -1;
}

/* Called once every thread is joined; pipes' write ends are closed already. */
static void server_destroy(struct server *srv)
{
    /* The spare records are heap memory, freed here like the rest; their
     * stacks are left to the exit that follows (see conn_thread_put). */
    while (srv->spare != NULL) {
        struct conn_thread *t = srv->spare;
        srv->spare = t->next;
        free(t);
    }
    pthread_mutex_destroy(&srv->lock);
    pthread_attr_destroy(&srv->attr);
    (void)close(srv->reap_r);
    (void)close(srv->reap_w);
    (void)close(srv->env.drain_fd);
    (void)close(srv->env.force_fd);
}

int main(int argc, char **argv)
{
    struct options opt;
    struct server srv;
    struct self_exec self = { .argv = argv };
    sigset_t wait_mask;
    char address[128];
    int listen_fd, data_dir_fd;

    if (parse_options(argc, argv, &opt) != 0) {
        usage(stderr);
        return 2;
    }
    /* Block the signals before any thread exists: see the top of this file. */
    if (install_signal_handlers(&self.orig_mask, &wait_mask) != 0)
        return 1;
    find_self(argv[0], self.path, sizeof self.path);
    raise_fd_limit(opt.max_conns);
    data_dir_fd = open_data_dir(opt.data_dir);
    if (data_dir_fd < 0)
        return 1;
    int stale = uploads_remove_stale(data_dir_fd);
    if (stale > 0)
        log_line("removed %d unfinished upload(s) left by a killed server", stale);

    /* A socket handed to us (systemd, or the server we replace) wins over
     * --host/--port: binding those would fail while the other holds them. */
    listen_fd = inherited_listener();
    bool inherited = listen_fd >= 0;
    if (listen_fd == -1)
        listen_fd = open_listener(opt.host, opt.port);
    if (listen_fd < 0 || describe_socket(listen_fd, address, sizeof address) != 0) {
        if (listen_fd >= 0) {
            log_line("server: cannot read back the listening address");
            (void)close(listen_fd);
        }
        (void)close(data_dir_fd);
        return 1;
    }
    if (server_init(&srv, &opt, data_dir_fd) != 0) {
        (void)close(listen_fd);
        (void)close(data_dir_fd);
        return 1;
    }
    /* The readiness line: tests and scripts wait for it. */
    log_line("listening on %s%s", address, inherited ? " (inherited socket)" : "");
    /* systemd first: by the time the old server exits, systemd must
     * already follow this one. */
    notify_systemd_ready();
    if (inherited)
        tell_old_server_ready();

    /* The accept loop waits in ppoll() until the handler counts a signal. */
    enum loop_end end = accept_loop(&srv, listen_fd, &self, &wait_mask);
    const char *reason;
    unsigned cut_at = atomic_load(&signals_received) + 1;  /* the signal that cuts */
    bool failed = false;
    switch (end) {
    case LOOP_HANDED_OVER:
        reason = "SIGHUP";
        /* The first SIGINT/SIGTERM after a hand-over (Ctrl+C reaches both
         * servers in a terminal; systemd signals the whole service) means
         * "stop", which this one is doing already: only the next one cuts. */
        cut_at++;
        break;
    case LOOP_SIGNAL:
        reason = signal_name(atomic_load(&last_signal));
        /* Stop accepting, first half.  Clients already in the backlog have
         * connected and sent their request; closing the listener would
         * reset them.  Stop the kernel starting new handshakes, then take
         * in the ones it completed and those under way: they are served
         * under the drain's rules. */
        if (stop_new_handshakes(listen_fd) != 0)
            log_line("server: cannot stop new handshakes before closing the listener: %s",
                     strerror(errno));
        take_in_backlog(&srv, listen_fd, cut_at, &wait_mask);
        break;
    case LOOP_ERROR:
    default:
        reason = "an accept loop error";
        failed = true;
        break;
    }

    /* Stop accepting, second half: refuse new clients now rather than leave
     * them in the backlog.  After a hand-over the new server holds the
     * socket too, so for clients nothing closes: the queue just has one
     * reader fewer. */
    RACE_WINDOW_CLOSE();
    if (close_listener(listen_fd, inherited) != 0)
        log_line("server: cannot take the SYN filter off the inherited listener: %s",
                 strerror(errno));
    log_line("shutdown requested by %s; draining %zu connection(s), grace %g s",
             reason, live_count(&srv), opt.grace_s);

    /* Drain: broadcast "drain" to every handler: the flag for responses
     * about to be written, then the pipe for threads waiting in poll(). */
    atomic_store(&srv.draining, true);
    (void)close(srv.drain_w);

    /* Wait: until every connection has finished, the grace period ends or
     * a second signal arrives. */
    size_t cut = 0;
    switch (wait_for_connections(&srv, opt.grace_s, cut_at, &wait_mask)) {
    case DRAIN_DONE:
        break;
    case DRAIN_DEADLINE:
        cut = live_count(&srv);
        log_line("grace period over; cutting %zu connection(s)", cut);
        break;
    case DRAIN_SECOND_SIGNAL:
        RACE_WINDOW("cut");
        cut = live_count(&srv);
        log_line("second %s; cutting %zu connection(s)",
                 signal_name(atomic_load(&last_signal)), cut);
        break;
    }
    /* Force: wake every remaining wait; handlers cut and return. */
    (void)close(srv.force_w);
    join_all(&srv, &wait_mask);

    /* Exit: 0 if every connection finished on its own, 1 if any was cut. */
    server_destroy(&srv);
    (void)close(data_dir_fd);
    if (cut > 0) {
        log_line("exit 1: cut %zu connection(s)", cut);
        return 1;
    }
    if (failed) {
        log_line("exit 1: the accept loop failed");
        return 1;
    }
    log_line("exit 0: every connection finished");
    return 0;
}
