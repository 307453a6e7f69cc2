/*
 * server.c - a thread-per-connection HTTP server whose Ctrl+C is graceful.
 *
 * This file owns the process: the accept loop, the record of connection
 * threads, and the shutdown, which main() runs as a sequence of named
 * phases.  handler.c owns what happens on one connection; process/ holds
 * the plumbing around the pattern (the command line, the listener's Linux
 * extras, hot restart and systemd); log.c is the one log.
 *
 * First the set-up, before any signal comes, that makes sure no signal is
 * lost:
 *
 *   - Block the signals before any thread exists: start-up blocks SIGINT
 *     and SIGTERM first, so every connection thread inherits the blocked
 *     mask and the kernel can only deliver them to the main thread.
 *   - The accept loop waits in ppoll(), which unblocks the signals only
 *     while it waits (the shutdown's waits do the same).  A signal that
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
 *     left, the grace deadline passes, or a second signal arrives.
 *   Force, if needed: close the force pipe; every wait in every handler
 *     wakes, cuts its connection and returns.  Join the rest.
 *   Exit: 0 if every connection finished on its own, 1 if any was cut.
 *
 * Like Go's Server.Shutdown(ctx), each phase is a function of a deadline,
 * not of signals: its wait returns when a signal interrupts it, and main
 * alone decides what the signal means.  Helpers return -1 with errno set
 * (pthread_* functions, the error number) and their callers decide what to
 * log.  Every clock is CLOCK_MONOTONIC in integer milliseconds (now_ms).
 * The (void)close() of a pipe end or the data directory is deliberate: on
 * Linux the descriptor is released whatever close returns (close(2): do
 * not retry, even on EINTR, or another thread's new descriptor may go),
 * and neither has written data that an error could report lost.
 *
 * SIGHUP is a hot restart: a new process takes over the listening socket,
 * and once it is ready this one goes on from "stop accepting" (see
 * process/restart.h).
 */
#define _GNU_SOURCE /* ppoll, accept4, pipe2 (Linux and the BSDs; POSIX.1-2024) */

#include "handler.h"
#include "log.h"
#include "process/listener.h"
#include "process/options.h"
#include "process/restart.h"
#include "process/resources.h"
#include "process/signals.h"
#include "process/stacks.h"
#include "uploads.h"

#include <errno.h>
#include <fcntl.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How main's accept loop ended. */
enum serve_end { SERVED_UNTIL_SIGNAL, SERVED_UNTIL_HANDOVER, SERVED_UNTIL_ERROR };

/* How a shutdown wait ended.  WAIT_SIGNAL: a signal interrupted it, and the
 * caller decides what that signal means; WAIT_FAILED: errno says why. */
enum wait_end { WAIT_DONE, WAIT_DEADLINE, WAIT_SIGNAL, WAIT_FAILED };

struct server;      /* the process: listener, threads, pipes (below) */

static long long now_ms(void);
static struct server *start_up(const struct options *o, char **argv);
static enum serve_end serve(struct server *srv);
static unsigned cutting_signal(bool handed_over);
static bool is_cutting_signal(unsigned cut_at);
static const char *shutdown_reason(enum serve_end end);
static size_t live_count(struct server *srv);
static void stop_accepting(struct server *srv, bool take_in);
static void begin_drain(struct server *srv);
static enum wait_end wait_for_connections(struct server *srv, long long deadline_ms);
static size_t cut_remaining(struct server *srv, enum wait_end why, const char *signal_name);
static int join_remaining(struct server *srv);
static void server_destroy(struct server *srv);

int main(int argc, char **argv)
{
    struct options opt;

    if (parse_options(argc, argv, &opt) != 0) {
        usage(stderr);
        return 2;
    }
    /* Signals blocked, listener open, "listening on" logged. */
    struct server *srv = start_up(&opt, argv);
    if (srv == NULL)
        return 1;

    /* Serve until SIGINT/SIGTERM, or until a successor is ready (SIGHUP). */
    enum serve_end served = serve(srv);
    unsigned cut_at = cutting_signal(served == SERVED_UNTIL_HANDOVER);

    /* Stop accepting.  After a hand-over the successor takes the backlog. */
    stop_accepting(srv, served == SERVED_UNTIL_SIGNAL);
    log_line("shutdown requested by %s; draining %zu connection(s), grace %g s",
             shutdown_reason(served), live_count(srv), (double)opt.grace_ms / 1000);

    /* Drain. */
    begin_drain(srv);

    /* Wait, until the grace deadline or the signal that cuts, which may
     * have come already while stop accepting waited for handshakes. */
    long long deadline_ms = now_ms() + opt.grace_ms;
    enum wait_end waited = WAIT_SIGNAL;
    if (signals_shutdown_count() < cut_at)
        while ((waited = wait_for_connections(srv, deadline_ms)) == WAIT_SIGNAL &&
               !is_cutting_signal(cut_at))
            ;
    if (waited == WAIT_FAILED)
        log_line("server: waiting for connections: %s", strerror(errno));

    /* Force. */
    size_t cut = 0;
    if (waited != WAIT_DONE)
        cut = cut_remaining(srv, waited, signals_last_name());
    if (join_remaining(srv) != 0) {
        /* Threads still run, and use what server_destroy frees: exit
         * without it.  EINTR is one more signal while cutting, the
         * operator's last word for a thread no pipe can wake (see
         * join_remaining). */
        if (errno == EINTR)
            log_line("%s while cutting; exiting with %zu thread(s) stuck",
                     signals_last_name(), live_count(srv));
        else
            log_line("server: waiting for the cut threads: %s; exiting with %zu thread(s) "
                     "running", strerror(errno), live_count(srv));
        _exit(1);
    }

    /* Exit: 0 if every connection finished on its own, 1 if any was cut. */
    server_destroy(srv);
    if (cut > 0) {
        log_line("exit 1: cut %zu connection(s)", cut);
        return 1;
    }
    if (served == SERVED_UNTIL_ERROR) {
        log_line("exit 1: the accept loop failed");
        return 1;
    }
    log_line("exit 0: every connection finished");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Constants                                                          */
/* ------------------------------------------------------------------ */

/* How long to stop accepting after EMFILE/ENFILE, unless a thread ends
 * (and frees a descriptor) sooner. */
#define ACCEPT_PAUSE_MS 100

/* The wait for handshakes under way when we stop accepting (see
 * take_in_backlog): at most this long, asking the kernel again after this
 * long at first. */
#define HANDSHAKE_WAIT_MS 1500
#define HANDSHAKE_RECHECK_MS 5

/* ------------------------------------------------------------------ */
/* Time                                                               */
/* ------------------------------------------------------------------ */

/* Milliseconds on the monotonic clock, as handler.c counts them. */
static long long now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);  /* cannot fail */
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A ppoll() timeout of ms milliseconds; ms < 0 gives a zero one (callers
 * pass NULL then, to wait without one). */
static struct timespec timespec_from_ms(long long ms)
{
    struct timespec ts = { 0, 0 };
    if (ms > 0) {
        ts.tv_sec = (time_t)(ms / 1000);
        ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    }
    return ts;
}

/* ------------------------------------------------------------------ */
/* What a signal means                                                */
/* ------------------------------------------------------------------ */

/*
 * What main reads between the phases; the phases themselves never look at
 * the signals.  The signal that cuts the drain short is the next
 * SIGINT/SIGTERM.  After a hand-over it is the one after: the first
 * (Ctrl+C reaches both servers in a terminal; systemd signals the whole
 * service) means "stop", which this one is doing already.
 */
static unsigned cutting_signal(bool handed_over)
{
    unsigned cut_at = signals_shutdown_count() + 1;
    if (handed_over)
        cut_at++;
    return cut_at;
}

/* A signal interrupted a wait: true if it is the one that cuts.  Only
 * SIGINT and SIGTERM can interrupt the shutdown's waits (stop_mask), so a
 * signal that does not cut is the first after a hand-over. */
static bool is_cutting_signal(unsigned cut_at)
{
    if (signals_shutdown_count() >= cut_at)
        return true;
    log_line("%s after hand-over: already draining", signals_last_name());
    return false;
}

static const char *shutdown_reason(enum serve_end end)
{
    switch (end) {
    case SERVED_UNTIL_SIGNAL:
        return signals_last_name();
    case SERVED_UNTIL_HANDOVER:
        return "SIGHUP";
    case SERVED_UNTIL_ERROR:
        break;
    }
    return "an accept loop error";
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
struct server {
    pthread_mutex_t lock;           /* guards n_live and finished */
    size_t n_live;                  /* started and not yet finished */
    struct conn_thread *finished;   /* finished, waiting to be joined */
    int reap_r, reap_w;             /* reaper pipe: a byte per finished thread */
    int drain_w, force_w;           /* closing these starts each phase */
    atomic_bool draining;           /* set just before drain_w is closed */
    struct spare_threads spare;     /* joined; kept with their stacks */
    pthread_attr_t attr;            /* joinable; the stack is set per thread */
    struct conn_env env;            /* what every handler sees */
    size_t max_conns;
    long long restart_timeout_ms;   /* a successor's time to say it is ready */
    int listen_fd;
    bool inherited;                 /* listen_fd was handed to us (restart.h) */
    sigset_t wait_mask;             /* the accept loop's, see signals_install */
    sigset_t stop_mask;             /* the shutdown's waits' */
    struct self_exec self;          /* what a hot restart execs */
};

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
        spare_threads_put(&srv->spare, t, atomic_load(&srv->draining));
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
    struct conn_thread *t = spare_threads_get(&srv->spare);
    if (t != NULL) {
        t->fd = fd;
        t->srv = srv;
        rc = pthread_attr_setstack(&srv->attr, spare_threads_stack(&srv->spare, t),
                                   CONN_STACK_SIZE);
        /* Each thread owns its own heap argument: never the address of a
         * variable the next accept() overwrites. */
        if (rc == 0)
            rc = pthread_create(&t->thread, &srv->attr, conn_thread_main, t);
    }
    if (rc != 0) {
        /* pthread_* return the error number; errno is not set. */
        log_line("server: pthread_create: %s", strerror(rc));
        if (t != NULL)
            spare_threads_put(&srv->spare, t, false);
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

/* ------------------------------------------------------------------ */
/* The accept loop                                                    */
/* ------------------------------------------------------------------ */

/* A successor that did not make it: reap it, say why, and go on serving. */
static void give_up_restart(struct restart *r, const char *why)
{
    pid_t pid = r->pid;
    int status = restart_abandon(r);

    if (WIFEXITED(status))
        log_line("restart failed: new server (pid %d) %s, exit status %d; still serving",
                 (int)pid, why, WEXITSTATUS(status));
    else
        log_line("restart failed: new server (pid %d) %s, killed by signal %d; "
                 "still serving", (int)pid, why,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* SIGHUP: start a successor, unless one is starting already. */
static void begin_restart(struct server *srv, struct restart *r)
{
    const char *failed = "";

    if (r->pid != 0) {
        log_line("SIGHUP: a restart is already in progress; ignored");
    } else if (srv->self.path[0] == '\0') {
        log_line("SIGHUP: cannot restart: the path of this binary is unknown");
    } else if (restart_begin(r, &srv->self, srv->listen_fd, &failed) != 0) {
        log_line("SIGHUP: cannot restart: %s: %s", failed, strerror(errno));
    } else {
        r->deadline_ms = now_ms() + srv->restart_timeout_ms;
        log_line("SIGHUP: started %s as pid %d; waiting until it is ready",
                 srv->self.path, (int)r->pid);
    }
}

/*
 * Serve until SIGINT or SIGTERM, or until a server started on SIGHUP is
 * ready to take over.  The signals are blocked everywhere except inside
 * ppoll(), which installs wait_mask and waits in one atomic step, so a
 * signal landing after the while-condition but before the wait is not lost
 * (the race a plain poll() or accept() loop has).
 */
static enum serve_end serve(struct server *srv)
{
    const int listen_fd = srv->listen_fd;
    const sigset_t *wait_mask = &srv->wait_mask;
    enum { LISTENER, REAPER, READY };
    struct pollfd fds[3] = {
        [LISTENER] = { .fd = listen_fd, .events = POLLIN },
        [REAPER] = { .fd = srv->reap_r, .events = POLLIN },
        [READY] = { .fd = -1, .events = POLLIN },
    };
    struct restart restart = { .pid = 0, .ready_r = -1 };
    unsigned restarts_seen = 0;
    bool paused = false;

    while (signals_shutdown_count() == 0) {
        unsigned hups = signals_restart_count();
        if (hups != restarts_seen) {
            restarts_seen = hups;
            begin_restart(srv, &restart);
        }

        /* poll() ignores negative descriptors: that is how we pause. */
        fds[LISTENER].fd = paused ? -1 : listen_fd;
        fds[READY].fd = restart.ready_r;
        long long wait_ms = paused ? ACCEPT_PAUSE_MS : -1;
        if (restart.pid != 0) {
            long long left = restart.deadline_ms - now_ms();
            if (wait_ms < 0 || left < wait_ms)
                wait_ms = left > 0 ? left : 0;
        }
        struct timespec timeout = timespec_from_ms(wait_ms);
        RACE_WINDOW("accept");
        int n = ppoll(fds, 3, wait_ms >= 0 ? &timeout : NULL, wait_mask);
        if (n < 0) {
            if (errno == EINTR)
                continue;   /* one of our signals: the loop sees it */
            log_line("server: ppoll: %s", strerror(errno));
            if (restart.pid != 0)
                give_up_restart(&restart, "was stopped: the accept loop failed");
            return SERVED_UNTIL_ERROR;
        }
        paused = false;     /* timed out, or a thread ended and freed an fd */
        signals_let_pending_in(wait_mask);
        if (fds[REAPER].revents & POLLIN)
            reap_finished(srv);
        if (fds[READY].revents) {
            if (restart_ready(&restart)) {
                log_line("new server (pid %d) is ready; handing over", (int)restart.pid);
                return SERVED_UNTIL_HANDOVER;
            }
            give_up_restart(&restart, "exited before it was ready");
        }
        if (restart.pid != 0 && now_ms() >= restart.deadline_ms)
            give_up_restart(&restart, "was not ready in time");
        if (fds[LISTENER].revents & POLLIN)
            paused = accept_pending(srv, listen_fd, ACCEPT_BATCH);
    }
    /* Asked to stop while a successor was starting: stop it too, or it
     * would start serving after the operator said stop. */
    if (restart.pid != 0)
        give_up_restart(&restart, "was stopped: shutdown requested");
    return SERVED_UNTIL_SIGNAL;
}

/* ------------------------------------------------------------------ */
/* The shutdown phases                                                */
/* ------------------------------------------------------------------ */

/*
 * Stop accepting, once the filter is on: take in the backlog, and the
 * handshakes already under way.  A client counts itself connected as soon
 * as our SYN-ACK reaches it and may be sending its request; if its last
 * ACK reached us after our last accept, close() would reset it.  So count
 * first, then accept: once the count is 0, no handshake can start (the
 * filter) and every one that completed is in the backlog, which the
 * accepts then empty.  While some are under way, wait for the listener to
 * become readable (one completed), and ask again after HANDSHAKE_RECHECK_MS,
 * then twice as long each time, since no event tells of a handshake that
 * the kernel drops instead (and each count walks the kernel's whole table
 * of TCP sockets: a millisecond or more, see bench/results.md).  Until
 * deadline_ms at most: a SYN-ACK lost on the way is sent again after one
 * second (RFC 6298 2.1) and answered a round trip later, and handshakes
 * that never finish (a SYN flood) must not hold the shutdown.  A signal
 * ends the wait too: only SIGINT and SIGTERM get in (stop_mask), and after
 * the one that started the shutdown the next one cuts.  Handshakes the
 * kernel answered with a SYN cookie, as it does when the queue of
 * handshakes is full, leave no socket to count and are not waited for.
 */
static void take_in_backlog(struct server *srv, long long deadline_ms)
{
    const int listen_fd = srv->listen_fd;
    long long recheck_ms = HANDSHAKE_RECHECK_MS;
    bool told = false, interrupted = false;

    for (;;) {
        int under_way = listener_handshakes_under_way(listen_fd);
        if (under_way < 0)
            log_line("server: cannot count the handshakes under way: %s", strerror(errno));
        (void)accept_pending(srv, listen_fd, SOMAXCONN);
        if (under_way <= 0)
            return;
        if (!told) {
            log_line("server: waiting for %d handshake(s) under way", under_way);
            told = true;
        }
        long long left = deadline_ms - now_ms();
        if (left <= 0 || interrupted) {
            log_line("server: closing the listener with %d handshake(s) under way", under_way);
            return;
        }
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        struct timespec wait = timespec_from_ms(left < recheck_ms ? left : recheck_ms);
        recheck_ms *= 2;
        /* EINTR is a signal: count and accept once more, then close. */
        if (ppoll(&p, 1, &wait, &srv->stop_mask) < 0) {
            if (errno != EINTR) {
                log_line("server: waiting for handshakes: %s", strerror(errno));
                return;
            }
            interrupted = true;
        }
    }
}

/*
 * Stop accepting.  Clients already in the backlog have connected and sent
 * their request; closing the listener would reset them.  So first stop the
 * kernel starting new handshakes, then take in the ones it completed and
 * those under way: they are served under the drain's rules.  Then close
 * the listener, refusing new clients now rather than leaving them in the
 * backlog.  After a hand-over there is nothing to take in: the new server
 * holds the socket too, so for clients nothing closes, the queue just has
 * one reader fewer.
 */
static void stop_accepting(struct server *srv, bool take_in)
{
    if (take_in) {
        if (listener_stop_new_handshakes(srv->listen_fd) != 0)
            log_line("server: cannot stop new handshakes before closing the listener: %s",
                     strerror(errno));
        take_in_backlog(srv, now_ms() + HANDSHAKE_WAIT_MS);
    }
    RACE_WINDOW_CLOSE();
    if (listener_close(srv->listen_fd, srv->inherited) != 0)
        log_line("server: cannot take the SYN filter off the inherited listener: %s",
                 strerror(errno));
    srv->listen_fd = -1;
}

/* Drain: tell every handler, with the flag for responses about to be
 * written, then the pipe for threads waiting in poll(). */
static void begin_drain(struct server *srv)
{
    atomic_store(&srv->draining, true);
    (void)close(srv->drain_w);
    srv->drain_w = -1;
}

/*
 * Wait: join threads as they finish until none are left (WAIT_DONE) or
 * deadline_ms passes (WAIT_DEADLINE).  A signal interrupts the wait
 * (WAIT_SIGNAL): ppoll unblocks SIGINT and SIGTERM here too, and the caller
 * decides whether to wait on.
 */
static enum wait_end wait_for_connections(struct server *srv, long long deadline_ms)
{
    struct pollfd reaper = { .fd = srv->reap_r, .events = POLLIN };

    for (;;) {
        /* Count before reaping: a thread no longer counted has already put
         * itself on the finished list, so this reap joins it. */
        size_t live = live_count(srv);
        if (live > 0)
            RACE_WINDOW("reap");
        reap_finished(srv);
        if (live == 0)
            return WAIT_DONE;
        /* The last thread may have finished between the count and the
         * reap, which then read its byte: count again, or the wait below
         * would sleep until the deadline for a byte that came already. */
        if (live_count(srv) == 0)
            continue;
        long long left = deadline_ms - now_ms();
        if (left <= 0)
            return WAIT_DEADLINE;
        struct timespec timeout = timespec_from_ms(left);
        if (ppoll(&reaper, 1, &timeout, &srv->stop_mask) < 0)
            return errno == EINTR ? WAIT_SIGNAL : WAIT_FAILED;
    }
}

/*
 * Force: wake every remaining wait in every handler; the threads cut their
 * connections and return.  why is how the wait ended: the second signal
 * (signal_name), the deadline, or a wait that failed.  Returns how many
 * were cut.
 */
static size_t cut_remaining(struct server *srv, enum wait_end why, const char *signal_name)
{
    size_t cut;

    if (why == WAIT_SIGNAL) {
        RACE_WINDOW("cut");
        cut = live_count(srv);
        log_line("second %s; cutting %zu connection(s)", signal_name, cut);
    } else {
        cut = live_count(srv);
        log_line("%s; cutting %zu connection(s)",
                 why == WAIT_DEADLINE ? "grace period over" : "cannot wait on", cut);
    }
    (void)close(srv->force_w);
    srv->force_w = -1;
    return cut;
}

/*
 * After the force pipe is closed every wait in every handler wakes, and the
 * threads return within microseconds: join them all.  What the pipe cannot
 * wake is a thread inside a syscall that is not a wait of ours (an fsync
 * on a hung disk, say), so the wait has no deadline but a signal ends it:
 * returns -1 with errno EINTR then (the caller exits without joining), or
 * with ppoll's errno.
 */
static int join_remaining(struct server *srv)
{
    struct pollfd reaper = { .fd = srv->reap_r, .events = POLLIN };

    for (;;) {
        size_t live = live_count(srv);  /* before reaping: see above */
        if (live > 0)
            RACE_WINDOW("join");
        reap_finished(srv);
        if (live == 0)
            return 0;
        /* Its byte is read (see above), and after a cut no deadline is
         * left to end the wait below: without this count, for ever. */
        if (live_count(srv) == 0)
            continue;
        if (ppoll(&reaper, 1, NULL, &srv->stop_mask) < 0)
            return -1;
    }
}

/* ------------------------------------------------------------------ */
/* Start-up and clean-up                                              */
/* ------------------------------------------------------------------ */

/*
 * The pipes and the thread attributes of srv, which must be zeroed.
 * Returns -1 with errno set (pthread_*'s error number put there) and
 * *failed naming the call.
 */
static int server_init(struct server *srv, const struct options *o, int data_dir_fd,
                       const char **failed)
{
    int reap[2], drain[2], force[2];
    int rc;

    atomic_init(&srv->draining, false);
    /* O_NONBLOCK on the reaper: neither a worker's write nor main's
     * emptying read may ever block. */
    *failed = "pipe";
    if (pipe2(reap, O_CLOEXEC | O_NONBLOCK) != 0)
        return -1;
    if (pipe2(drain, O_CLOEXEC) != 0)
        goto out_reap;
    if (pipe2(force, O_CLOEXEC) != 0)
        goto out_drain;
    rc = pthread_attr_init(&srv->attr);
    if (rc != 0) {
        *failed = "pthread_attr";
        errno = rc;
        goto out_force;
    }
    rc = pthread_mutex_init(&srv->lock, NULL);
    if (rc != 0) {
        *failed = "pthread_mutex_init";
        pthread_attr_destroy(&srv->attr);
        errno = rc;
        goto out_force;
    }
    spare_threads_init(&srv->spare);
    srv->reap_r = reap[0];
    srv->reap_w = reap[1];
    srv->drain_w = drain[1];
    srv->force_w = force[1];
    srv->max_conns = o->max_conns;
    srv->restart_timeout_ms = o->restart_timeout_ms;
    srv->env = (struct conn_env){
        .data_dir_fd = data_dir_fd,
        .drain_fd = drain[0],
        .force_fd = force[0],
        .draining = &srv->draining,
        .max_body = o->max_body,
        .header_timeout_ms = o->header_timeout_ms,
        .keepalive_timeout_ms = o->keepalive_timeout_ms,
    };
    return 0;

out_force:
    (void)close(force[0]);
    (void)close(force[1]);
out_drain:
    (void)close(drain[0]);
    (void)close(drain[1]);
out_reap:
    rc = errno;
    (void)close(reap[0]);
    (void)close(reap[1]);
    errno = rc;
    return -1;
}

/* Called once every thread is joined. */
static void server_destroy(struct server *srv)
{
    spare_threads_free(&srv->spare);
    pthread_mutex_destroy(&srv->lock);
    pthread_attr_destroy(&srv->attr);
    (void)close(srv->reap_r);
    (void)close(srv->reap_w);
    (void)close(srv->env.drain_fd);
    (void)close(srv->env.force_fd);
    if (srv->force_w >= 0)
        (void)close(srv->force_w);      /* no cut: nobody needed it */
    (void)close(srv->env.data_dir_fd);
    free(srv);
}

/*
 * The listening socket: the one handed to us (systemd, or the server we
 * replace) wins over --host/--port, since binding those would fail while
 * the other holds them.  Returns it, or -1 after saying why.
 */
static int open_listener(const struct options *o, bool *inherited)
{
    int fd = activation_listener();
    *inherited = fd >= 0;
    if (fd >= 0)
        return fd;
    if (errno == EINVAL) {
        log_line("server: LISTEN_FDS=%s: want exactly one listening socket",
                 getenv("LISTEN_FDS"));
        return -1;
    }
    if (errno == ENOTSOCK) {
        log_line("server: LISTEN_FDS: descriptor %d is not a listening socket",
                 LISTEN_FDS_START);
        return -1;
    }
    if (errno != ENOENT) {
        log_line("server: fcntl on the inherited socket: %s", strerror(errno));
        return -1;
    }

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
    };
    struct addrinfo *ai;
    const char *failed = "";
    int rc = getaddrinfo(o->host, o->port, &hints, &ai);
    if (rc != 0) {
        log_line("server: --host %s: %s", o->host, gai_strerror(rc));
        return -1;
    }
    fd = listener_open(ai->ai_addr, ai->ai_addrlen, &failed);
    freeaddrinfo(ai);
    if (fd >= 0)
        return fd;
    if (errno == EADDRINUSE)
        log_line("server: cannot listen on %s:%s: address already in use", o->host, o->port);
    else
        log_line("server: cannot listen on %s:%s: %s: %s", o->host, o->port, failed,
                 strerror(errno));
    return -1;
}

/*
 * Everything before the accept loop: the signals blocked before any thread
 * exists (see the top of this file), the data directory, the listener,
 * the pipes, the readiness line.  Returns the server, or NULL after saying
 * why.
 */
static struct server *start_up(const struct options *o, char **argv)
{
    struct server *srv = calloc(1, sizeof *srv);
    const char *failed = "";
    char address[128];
    rlim_t limit;
    int data_dir_fd = -1;

    if (srv == NULL) {
        log_line("server: %s", strerror(errno));
        return NULL;
    }
    srv->self.argv = argv;
    if (signals_install(&srv->self.orig_mask, &srv->wait_mask, &srv->stop_mask,
                                &failed) != 0) {
        log_line("server: %s: %s", failed, strerror(errno));
        goto out_free;
    }
    restart_find_self(&srv->self, argv[0]);
    if (raise_fd_limit(&limit, &failed) != 0)
        log_line("server: %s(RLIMIT_NOFILE): %s", failed, strerror(errno));
    rlim_t need = (rlim_t)o->max_conns * 2 + 16;
    /* Say so now rather than surprise anyone later. */
    if (limit != RLIM_INFINITY && limit < need)
        log_line("descriptor limit %llu is below the %llu that --max-conns %zu "
                 "may need; accepting pauses whenever descriptors run out",
                 (unsigned long long)limit, (unsigned long long)need, o->max_conns);
    data_dir_fd = open_data_dir(o->data_dir, &failed);
    if (data_dir_fd < 0) {
        log_line("server: cannot %s data dir %s: %s", failed, o->data_dir, strerror(errno));
        goto out_free;
    }
    /* Not fatal: a leftover only takes space, and is removed next time. */
    int stale = uploads_remove_stale(data_dir_fd);
    if (stale < 0)
        log_line("server: cannot look for unfinished uploads: %s", strerror(errno));
    else if (stale > 0)
        log_line("removed %d unfinished upload(s) left by a killed server", stale);

    srv->listen_fd = open_listener(o, &srv->inherited);
    if (srv->listen_fd < 0)
        goto out_data_dir;
    if (listener_describe(srv->listen_fd, address, sizeof address) != 0) {
        log_line("server: cannot read back the listening address");
        goto out_listener;
    }
    if (server_init(srv, o, data_dir_fd, &failed) != 0) {
        log_line("server: %s: %s", failed, strerror(errno));
        goto out_listener;
    }
    /* The readiness line: tests and scripts wait for it. */
    log_line("listening on %s%s", address, srv->inherited ? " (inherited socket)" : "");
    /* systemd first: by the time the old server exits, systemd must
     * already follow this one. */
    if (notify_systemd_ready(&failed) != 0)
        log_line("server: notifying systemd: %s: %s", failed, strerror(errno));
    if (srv->inherited && restart_tell_old_server_ready() != 0)
        log_line("server: telling the old server we are ready: %s", strerror(errno));
    return srv;

out_listener:
    (void)close(srv->listen_fd);
out_data_dir:
    (void)close(data_dir_fd);
out_free:
    free(srv);
    return NULL;
}
