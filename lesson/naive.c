/*
 * naive.c - graceful shutdown as the articles teach it, in C.
 *
 * A signal handler sets a flag, the accept loop checks it, and every thread
 * is kept in a list and joined at the end.  It answers GET / and
 * GET /sleep?ms=N correctly (lesson/http.c), and its shutdown is wrong in
 * the seven ways the README's lesson names; lesson/steps/01 to 07 close
 * them one by one.  Do not copy it: copy lesson/minimal.c.
 *
 * Usage: naive [PORT]
 */
#define _GNU_SOURCE /* the steps use ppoll, pipe2 and accept4 (POSIX.1-2024) */

#include "http.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

struct conn {
    int fd;
    size_t len;                 /* bytes of buf received, not yet answered */
    char buf[HTTP_HEAD_MAX];
};

/* Read until buf holds a whole request head: its length, or 0 at the end. */
static size_t read_request(struct conn *c)
{
    size_t end;

    while ((end = http_head_length(c->buf, c->len)) == 0) {
        ssize_t n;
        if (c->len == sizeof c->buf)
            return c->len;      /* no whole head fits: http_parse says 431 */
        n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (n <= 0)
            return 0;
        c->len += (size_t)n;
    }
    return end;
}

/* GET /sleep: the slow work a graceful shutdown must wait for. */
static int pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

static int send_all(struct conn *c, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, 0);
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
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
        if (rq.sleep_ms > 0 && pause_ms(rq.sleep_ms) != 0)
            break;
        if (send_all(c, out, http_format(&rq, out, sizeof out)) != 0 || !rq.keep_alive)
            break;
    }
    close(c->fd);
    free(c);
    return NULL;
}

/* Start a thread for connection fd and add its handle to the list. */
static int start_thread(int fd, pthread_t **handles, size_t *n)
{
    struct conn *c = calloc(1, sizeof *c);
    pthread_t *more = realloc(*handles, (*n + 1) * sizeof **handles);

    if (more != NULL)
        *handles = more;
    if (c == NULL || more == NULL)
        goto fail;
    c->fd = fd;
    if (pthread_create(&more[*n], NULL, serve, c) != 0)
        goto fail;
    (*n)++;
    return 0;
fail:
    free(c);
    return -1;
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
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

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
    int listener = port < 0 ? -1 : listen_on((int)port);
    pthread_t *handles = NULL;
    size_t n = 0;

    if (port < 0) {
        fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
        return 2;
    }
    if (listener < 0) {
        perror("listen");
        return 1;
    }
    signal(SIGINT, on_signal);          /* glibc's signal() implies SA_RESTART */
    signal(SIGTERM, on_signal);
    fprintf(stderr, "listening on 127.0.0.1:%ld\n", port);
    while (!stop) {
        int fd = accept(listener, NULL, NULL);
        if (fd >= 0 && start_thread(fd, &handles, &n) != 0)
            close(fd);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(handles[i], NULL);
    free(handles);
    close(listener);
    return 0;
}
