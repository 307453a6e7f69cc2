/*
 * process/listener.h - the listening socket: open it, name it, and the
 * Linux extras that let "stop accepting" reset nobody (the SYN filter and
 * the count of handshakes under way).
 *
 * Every function returns -1 with errno set on failure and logs nothing:
 * the caller (server.c) decides what a failure means and what to say.
 */
#ifndef GRACEFUL_PROCESS_LISTENER_H
#define GRACEFUL_PROCESS_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * A non-blocking, close-on-exec TCP socket listening on addr.  Returns it,
 * or -1 with errno set and *failed naming the call that failed ("socket",
 * "bind" or "listen").
 */
int listener_open(const struct sockaddr *addr, socklen_t addr_len, const char **failed);

/* Write "HOST:PORT" ("[HOST]:PORT" for IPv6) of a bound socket to name;
 * -1 if it cannot be read back. */
int listener_describe(int fd, char *name, size_t cap);

/*
 * Stop the kernel starting new handshakes on listen_fd (a socket filter
 * that drops SYNs), so that the backlog can be emptied for good before the
 * listener is closed.  -1 with errno set (ENOPROTOOPT where there is no
 * such filter: not Linux).
 */
int listener_stop_new_handshakes(int listen_fd);

/*
 * How many handshakes on listen_fd's port are under way (SYN received and
 * answered, the client's last ACK not yet): 0 for a socket that has none
 * (not TCP), -1 with errno set if the kernel cannot say (ENOSYS: not Linux).
 */
int listener_handshakes_under_way(int listen_fd);

/*
 * Close the listener.  One we inherited (from systemd, or from the server
 * we took over from) gets its SYN filter taken off first: whoever gave it
 * to us goes on listening on it.  Returns -1 with errno set if the filter
 * could not be taken off; the listener is closed either way.
 */
int listener_close(int listen_fd, bool inherited);

#endif
