/*
 * process/restart.h - the process's plumbing with the world around it:
 * hot restart on SIGHUP, socket activation (a listener handed to us), and
 * systemd's readiness notification.
 *
 * A hot restart starts our binary again and hands it the listening socket
 * as descriptor 3 (LISTEN_FDS=1, the socket-activation convention, so the
 * same start-up code serves systemd); the new process says it is ready
 * through a pipe, and only then does the old one stop accepting and drain.
 * See docs/hot-restart.md.
 *
 * Every function returns -1 with errno set on failure and logs nothing:
 * the caller (server.c) decides what to say.
 */
#ifndef GRACEFUL_PROCESS_RESTART_H
#define GRACEFUL_PROCESS_RESTART_H

#include <limits.h>
#include <signal.h>
#include <sys/types.h>

/* Where a listening socket handed to us is (sd_listen_fds(3)). */
#define LISTEN_FDS_START 3

/*
 * The listening socket someone else bound for us (systemd, or the server
 * we replace), when LISTEN_PID is our pid and LISTEN_FDS is 1.  Returns it,
 * or -1 with errno set: ENOENT when nothing was passed (not an error),
 * EINVAL when LISTEN_FDS is not 1, ENOTSOCK when descriptor 3 is not a
 * listening socket, or fcntl's error.
 */
int activation_listener(void);

/* What exec needs, prepared at start-up. */
struct self_exec {
    char path[PATH_MAX];    /* empty when it could not be found */
    char **argv;            /* main's argv: the same arguments again */
    sigset_t orig_mask;     /* the signal mask we were started with */
};

/* A successor being started; pid 0 when none is. */
struct restart {
    pid_t pid;              /* the new process; 0 when none is starting */
    int ready_r;            /* read end of its readiness pipe, or -1 */
    long long deadline_ms;  /* when we stop waiting for it (caller's clock) */
};

/* Fill self->path with the binary to start again: argv0, or its match on
 * PATH when we were started by bare name; left empty if not found. */
void restart_find_self(struct self_exec *self, const char *argv0);

/*
 * Start self->path with self->argv, handing it listen_fd.  On success r
 * describes the new process (r->deadline_ms is the caller's to set).
 * Returns -1 with errno set and *failed naming the step ("pipe", "fcntl",
 * "fork") if it could not be started; the caller goes on serving.
 */
int restart_begin(struct restart *r, const struct self_exec *self, int listen_fd,
                  const char **failed);

/* The readiness pipe is readable: 1 if the new process said it is ready
 * (the pipe is then closed), 0 if it exited first (EOF). */
int restart_ready(struct restart *r);

/* Give up on the new process: kill it if it still runs, reap it, and
 * return its wait status.  r then describes no process. */
int restart_abandon(struct restart *r);

/* In a server started by a hot restart: tell the old server we can accept
 * (GRACEFUL_READY_FD).  0 when told or when there is nobody to tell. */
int restart_tell_old_server_ready(void);

/* systemd's readiness protocol (sd_notify(3)) without libsystemd.  0 when
 * told or when NOTIFY_SOCKET is not set; else -1 with errno set and
 * *failed naming the call ("socket" or "sendto"). */
int notify_systemd_ready(const char **failed);

#endif
