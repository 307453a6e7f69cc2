/*
 * process/restart.c - hot restart, socket activation and sd_notify (see
 * restart.h).
 *
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
 * drain exactly as on SIGTERM; on EOF it says why and goes on serving.
 */
#define _GNU_SOURCE /* pipe2, F_DUPFD_CLOEXEC (Linux and the BSDs; POSIX.1-2024) */

#include "restart.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define READY_FD_ENV "GRACEFUL_READY_FD"

/* The value of the environment variable name if it is a whole decimal
 * number from min to INT_MAX; -1 otherwise (or when it is not set). */
static int env_int(const char *name, int min)
{
    const char *s = getenv(name);
    char *end;

    if (s == NULL)
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && v >= min && v <= INT_MAX ? (int)v : -1;
}

/* ------------------------------------------------------------------ */
/* Socket activation                                                  */
/* ------------------------------------------------------------------ */

int activation_listener(void)
{
    const char *fds = getenv("LISTEN_FDS");
    int accepting = 0;
    socklen_t len = sizeof accepting;

    /* LISTEN_PID guards against variables meant for another process that
     * leaked into our environment. */
    if (fds == NULL || env_int("LISTEN_PID", 1) != (int)getpid()) {
        errno = ENOENT;
        return -1;
    }
    if (strcmp(fds, "1") != 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = LISTEN_FDS_START;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting) {
        errno = ENOTSOCK;
        return -1;
    }
    /* Inherited descriptors come without our flags.  O_NONBLOCK is shared
     * with whoever else holds the socket, which wants it too. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
        return -1;
    /* As sd_listen_fds(3) does: our children must not take these as theirs. */
    (void)unsetenv("LISTEN_PID");
    (void)unsetenv("LISTEN_FDS");
    (void)unsetenv("LISTEN_FDNAMES");
    return fd;
}

/* ------------------------------------------------------------------ */
/* Hot restart on SIGHUP                                              */
/* ------------------------------------------------------------------ */

/*
 * argv[0] as we were started (we never chdir, so a relative path stays
 * right), or its match on PATH when started by bare name.  Not
 * /proc/self/exe: that names the file we are running, which a deploy has
 * just replaced with the version we want.
 */
void restart_find_self(struct self_exec *self, const char *argv0)
{
    char *out = self->path;
    size_t cap = sizeof self->path;

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


int restart_begin(struct restart *r, const struct self_exec *self, int listen_fd,
                  const char **failed)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) != 0) {
        *failed = "pipe";
        return -1;
    }
    /* Keep the write end above descriptor 3, where dup2() puts the
     * listener in the child. */
    int ready_w = fcntl(p[1], F_DUPFD_CLOEXEC, LISTEN_FDS_START + 1);
    int saved = errno;
    (void)close(p[1]);
    if (ready_w < 0) {
        (void)close(p[0]);
        errno = saved;
        *failed = "fcntl";
        return -1;
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
        (void)close(p[0]);
        errno = fork_errno;
        *failed = "fork";
        return -1;
    }
    r->pid = pid;
    r->ready_r = p[0];
    return 0;
}

int restart_abandon(struct restart *r)
{
    int status = 0;

    /* Harmless if it has exited already (a zombie ignores signals), and it
     * makes the waitpid below certain to return. */
    (void)kill(r->pid, SIGKILL);
    while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR)
        ;
    (void)close(r->ready_r);
    r->pid = 0;
    r->ready_r = -1;
    return status;
}

int restart_ready(struct restart *r)
{
    char byte;

    if (read(r->ready_r, &byte, 1) != 1)
        return 0;
    (void)close(r->ready_r);
    r->ready_r = -1;
    return 1;
}

/* Run in a server started with an inherited listener: only once told
 * does the server we replace stop accepting. */
int restart_tell_old_server_ready(void)
{
    int fd = env_int(READY_FD_ENV, LISTEN_FDS_START + 1);

    if (fd < 0)
        return 0;
    (void)unsetenv(READY_FD_ENV);
    int rc = write(fd, "R", 1) == 1 ? 0 : -1;
    int saved = errno;
    (void)close(fd);
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------ */
/* systemd notification                                               */
/* ------------------------------------------------------------------ */

/*
 * One datagram to the AF_UNIX socket named in NOTIFY_SOCKET.  MAINPID=
 * matters after a hot restart: the new server is the old one's child, and
 * without it systemd would take the old one's exit for the service
 * stopping.
 */
int notify_systemd_ready(const char **failed)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char msg[64];

    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return 0;
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path)
        return 0;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';     /* the abstract namespace */
    int n = snprintf(msg, sizeof msg, "READY=1\nMAINPID=%ld", (long)getpid());
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *failed = "socket(AF_UNIX)";
        return -1;
    }
    int rc = 0;
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0) {
        *failed = "sendto";
        rc = -1;
    }
    int saved = errno;
    (void)close(fd);
    errno = saved;
    return rc;
}
