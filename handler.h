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
    /* An idle keep-alive connection is closed (FIN first) after this many
     * ms without a byte of a next request. */
    int keepalive_timeout_ms;
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

#endif /* GRACEFUL_HANDLER_H */
