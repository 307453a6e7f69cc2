/*
 * window.c - the lesson's window build.  The races the lesson closes are
 * a few instructions wide, so a check would hit them once in a million
 * runs.  `make lesson-stages` builds every stage a second time, linked with
 * this file and -Wl,--wrap=accept,--wrap=ppoll,--wrap=shutdown,--wrap=close:
 * the stage's own calls to those functions come here first.  At the places
 * below, the call pauses LESSON_WINDOW_MS (300 ms), as if the scheduler had
 * stopped the thread exactly there, and then makes the real call.  The
 * stages carry no hook: their source is what a normal build runs.
 *
 *   accept on a blocking listener, in a stage that does not wait in ppoll:
 *       between the accept loop's check of the flag and its wait (step 2);
 *   ppoll with no timeout: the same place, once the loop waits in ppoll;
 *   close of a listening socket, after "race window open: close":
 *       between the last accept and the close (step A1);
 *   shutdown or close of an established connection, after "race window
 *   open: idle-close": between a thread's last look for input and its
 *       close (step A3).
 *
 * Linux only (TCP_INFO), like the matrix that uses it.
 */
#define _GNU_SOURCE /* ppoll */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef LESSON_WINDOW_MS
#define LESSON_WINDOW_MS 300
#endif

/* The real functions (the linker's --wrap names them __real_NAME), and
 * the wrappers that take their place. */
int __real_accept(int fd, struct sockaddr *addr, socklen_t *len);
int __real_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask);
int __real_shutdown(int fd, int how);
int __real_close(int fd);
int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *len);
int __wrap_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask);
int __wrap_shutdown(int fd, int how);
int __wrap_close(int fd);

static atomic_bool waits_in_ppoll;     /* the stage's accept loop uses ppoll */

/* Say "race window open: WHERE" (unless where is NULL), then hold still. */
static void hold_still(const char *where)
{
    struct timespec ts = { LESSON_WINDOW_MS / 1000, LESSON_WINDOW_MS % 1000 * 1000000L };
    int saved = errno;

    if (where != NULL) {
        char line[64];
        int n = snprintf(line, sizeof line, "race window open: %s\n", where);
        /* One write, so the line arrives whole; if it is lost, the row
         * that waits for it fails, as it should. */
        if (n > 0 && (size_t)n < sizeof line)
            (void)write(2, line, (size_t)n);
    }
    /* A thread the scheduler stopped is not woken by a signal: sleep the
     * whole time, through the handler if one runs. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    errno = saved;
}

static bool is_listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;

    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

static bool is_established(int fd)
{
    struct tcp_info info;
    socklen_t len = sizeof info;

    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
           info.tcpi_state == 1 /* TCP_ESTABLISHED */;
}

int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    int flags = fcntl(fd, F_GETFL);

    if (!atomic_load(&waits_in_ppoll) && flags >= 0 && !(flags & O_NONBLOCK))
        hold_still(NULL);
    return __real_accept(fd, addr, len);
}

int __wrap_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask)
{
    if (t == NULL) {
        atomic_store(&waits_in_ppoll, true);
        hold_still(NULL);
    }
    return __real_ppoll(fds, n, t, mask);
}

int __wrap_shutdown(int fd, int how)
{
    if (how != SHUT_RD && is_established(fd))
        hold_still("idle-close");
    return __real_shutdown(fd, how);
}

int __wrap_close(int fd)
{
    if (is_listening(fd))
        hold_still("close");
    else if (is_established(fd))
        hold_still("idle-close");
    return __real_close(fd);
}
