/*
 * process/signals.c - the signal handlers and the counters they keep (see
 * signals.h).
 */
#define _GNU_SOURCE /* sigaction, sigpending, nanosleep: -std=c11 hides POSIX */

#include "signals.h"

#include "../log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int signals_install(sigset_t *orig_mask, sigset_t *wait_mask, sigset_t *stop_mask,
                    const char **failed)
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
        *failed = "pthread_sigmask";
        errno = rc;
        return -1;
    }
    *wait_mask = *orig_mask;
    sigdelset(wait_mask, SIGINT);
    sigdelset(wait_mask, SIGTERM);
    sigdelset(wait_mask, SIGHUP);
    *stop_mask = *wait_mask;
    sigaddset(stop_mask, SIGHUP);

    memset(&sa, 0, sizeof sa);
    /* Block all three while a handler runs so one never interrupts
     * another.  No SA_RESTART: the point of the signal is to interrupt the
     * wait, and ppoll() is never restarted anyway. */
    sa.sa_mask = ours;
    sa.sa_flags = 0;
    sa.sa_handler = on_shutdown_signal;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        *failed = "sigaction";
        return -1;
    }
    sa.sa_handler = on_restart_signal;
    if (sigaction(SIGHUP, &sa, NULL) != 0) {
        *failed = "sigaction(SIGHUP)";
        return -1;
    }

    /* A client that disconnects while we write would raise SIGPIPE, whose
     * default action kills the whole process.  Ignored, the write fails
     * with EPIPE instead and only that connection ends. */
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        *failed = "sigaction(SIGPIPE)";
        return -1;
    }
    return 0;
}

static const char *signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
}

const char *signals_last_name(void)
{
    return signal_name(atomic_load(&last_signal));
}

unsigned signals_shutdown_count(void)
{
    return atomic_load(&signals_received);
}

unsigned signals_restart_count(void)
{
    return atomic_load(&restarts_requested);
}

/*
 * ppoll() runs a pending signal's handler only when it actually waits: if a
 * descriptor is already ready when it is called, it returns at once and the
 * signal stays pending.  Under a steady stream of connections that could
 * postpone Ctrl+C for as long as the stream lasts.  So after a wait that
 * returned ready descriptors, if one of our signals is pending, open the
 * mask for an instant to let it in.  (A self-pipe would not have this
 * problem: the signal would just be one more ready descriptor.)
 */
void signals_let_pending_in(const sigset_t *wait_mask)
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

#ifdef GRACEFUL_RACE_WINDOW_MS
void race_window(const char *where)
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
#endif
