/*
 * process/signals.h - SIGINT, SIGTERM and SIGHUP: the handlers, which only
 * count, and what the main thread reads of them.  The counters are the
 * process's only global state, because a handler can reach no other.
 *
 * Every thread is created with the three blocked (signals_install blocks
 * them in the main thread before any exists), so only the main thread
 * takes them, and only inside the ppoll() calls that unblock them.
 */
#ifndef GRACEFUL_PROCESS_SIGNALS_H
#define GRACEFUL_PROCESS_SIGNALS_H

#include <signal.h>

/*
 * Block SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread
 * it will create), install their handlers, and ignore SIGPIPE.  *orig_mask
 * receives the mask we started with (a restarted server gets it back),
 * *wait_mask the mask the accept loop waits with: the original one with
 * the three signals unblocked.  *stop_mask is the mask of the shutdown's
 * waits: SIGHUP stays blocked there (a restart means nothing once we
 * stop), so a wait that a signal interrupts was interrupted by SIGINT or
 * SIGTERM.  Returns -1 with errno set and *failed naming the call.
 */
int signals_install(sigset_t *orig_mask, sigset_t *wait_mask, sigset_t *stop_mask,
                    const char **failed);

/* How many SIGINT/SIGTERM have come so far, and the name of the last. */
unsigned signals_shutdown_count(void);
const char *signals_last_name(void);

/* How many SIGHUP have come so far. */
unsigned signals_restart_count(void);

/*
 * After a ppoll() that returned ready descriptors: if one of our signals
 * is pending, let its handler run now (see signals.c).
 */
void signals_let_pending_in(const sigset_t *wait_mask);

/*
 * Tests only.  `make test` also builds server-race with
 * -DGRACEFUL_RACE_WINDOW_MS=N, in which the main thread holds still for
 * N ms at five places where a race is microseconds wide: in the accept
 * loop between the check of the flag and the wait (where a textbook loop
 * loses a signal, lesson step 2), between the last accept of "stop
 * accepting" and its close of the listener, in the drain and in the join
 * after a cut between counting the live threads and reaping, and after a
 * second signal before counting what is left to cut.  (A sixth, in a
 * connection's idle close, is handler.c's RACE_WINDOW_IDLE_CLOSE.)
 * A test can then put its signal, its connect, or the end of its last
 * connection exactly inside the window.  In every other build this is
 * nothing.
 */
#ifdef GRACEFUL_RACE_WINDOW_MS
void race_window(const char *where);
#define RACE_WINDOW(where) race_window(where)
/* This one would hold every shutdown still, so only tests that set
 * GRACEFUL_RACE_CLOSE get it. */
#define RACE_WINDOW_CLOSE() \
    (getenv("GRACEFUL_RACE_CLOSE") != NULL ? race_window("close") : (void)0)
#else
#define RACE_WINDOW(where) ((void)0)
#define RACE_WINDOW_CLOSE() ((void)0)
#endif

#endif
