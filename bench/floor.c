/*
 * floor.c - what thread-per-connection costs before any HTTP is done.
 *
 * The benchmark runs this next to ./server and nginx, so that figures 2 and
 * 4 can be split into the part the pattern cannot avoid and the rest:
 *
 *   churn N      start, end and join N empty threads one after another, as
 *                the server does for each connection of figure 2, on the
 *                same kind of stack (our own 256 KiB mapping, reused).
 *                Prints the CPU time per thread in microseconds.
 *   idle N       start N threads that wait in poll() on one pipe, as idle
 *                keep-alive connections wait on the drain pipe; then close
 *                the pipe's write end and join them all, as the server's
 *                drain does for figure 4.  Prints the milliseconds from the
 *                close to the last join, the CPU time spent in them, and
 *                the resident memory each sleeping thread added (KiB, from
 *                VmRSS), the floor of figure 6.
 *   count N      on a fresh listener, ask the kernel N times how many
 *                handshakes are under way on its port, as the server does
 *                once at every shutdown, when it stops accepting (lesson/handshakes.c, sock_diag).  The
 *                kernel walks its whole TCP hash table to answer, so this
 *                depends on the machine, not on us.  Prints the median
 *                milliseconds of one count, the floor of figure 3.
 *
 * No sockets: the TCP work (a FIN per connection) is paid by nginx too and
 * is measured there.  Output is one line of the numbers above, for bench.py.
 */
#define _GNU_SOURCE

#include "../lesson/handshakes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STACK_SIZE ((size_t)256 * 1024)    /* server.c's CONN_STACK_SIZE */

static double now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of the whole process so far, every thread included. */
static double cpu_ms(void)
{
    struct rusage ru;
    (void)getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(err));
    exit(1);
}

static void *stack_new(void)
{
    void *s = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (s == MAP_FAILED)
        die("mmap", errno);
    return s;
}

static void start(pthread_t *t, void *stack, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0)
        rc = pthread_attr_setstack(&attr, stack, STACK_SIZE);
    if (rc == 0)
        rc = pthread_create(t, &attr, fn, arg);
    if (rc != 0)
        die("pthread_create", rc);
    (void)pthread_attr_destroy(&attr);
}

static void *nothing(void *arg)
{
    return arg;
}

static void churn(long n)
{
    void *stack = stack_new();
    double cpu0 = cpu_ms();
    for (long i = 0; i < n; i++) {
        pthread_t t;
        start(&t, stack, nothing, NULL);
        int rc = pthread_join(t, NULL);
        if (rc != 0)
            die("pthread_join", rc);
    }
    printf("%.2f\n", (cpu_ms() - cpu0) * 1e3 / (double)n);
}

struct idler {
    pthread_t thread;
    int fd;                 /* the pipe's read end */
    atomic_int tid;         /* set by the thread; 0 until then */
};

static void *wait_on_pipe(void *arg)
{
    struct idler *w = arg;
    struct pollfd p = { .fd = w->fd, .events = POLLIN };
    atomic_store(&w->tid, (int)gettid());
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* VmRSS of this process in KiB; -1 if /proc cannot tell. */
static long rss_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    (void)fclose(f);
    return kib;
}

/* True once the thread is asleep (state S in /proc): inside poll(), since
 * it has nothing else to sleep in. */
static bool asleep(const struct idler *w)
{
    char path[64], buf[256];
    int tid = atomic_load(&w->tid);
    if (tid == 0)
        return false;
    (void)snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    (void)fclose(f);
    buf[len] = '\0';
    const char *paren = strrchr(buf, ')');    /* the name may hold spaces */
    return paren != NULL && paren[1] == ' ' && paren[2] == 'S';
}

static void idle(long n)
{
    int pipefd[2];
    struct idler *w = calloc((size_t)n, sizeof *w);
    if (w == NULL || pipe(pipefd) != 0)
        die("setup", errno);
    long rss0 = rss_kib();
    for (long i = 0; i < n; i++) {
        w[i].fd = pipefd[0];
        start(&w[i].thread, stack_new(), wait_on_pipe, &w[i]);
    }
    /* The clock starts only when every thread sleeps in poll(); bounded,
     * like every loop of the benchmark (10 s). */
    double give_up = now_ms() + 10e3;
    for (long i = 0; i < n; i++)
        while (!asleep(&w[i]))
            if (now_ms() > give_up)
                die("threads never went to sleep", ETIMEDOUT);

    long rss1 = rss_kib();
    double cpu0 = cpu_ms(), t0 = now_ms();
    (void)close(pipefd[1]);
    for (long i = 0; i < n; i++) {
        int rc = pthread_join(w[i].thread, NULL);
        if (rc != 0)
            die("pthread_join", rc);
    }
    double ms = now_ms() - t0, cpu = cpu_ms() - cpu0;
    printf("%.2f %.2f %.2f\n", ms, cpu,
           rss0 < 0 || rss1 < 0 ? -1.0 : (double)(rss1 - rss0) / (double)n);
    free(w);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void count(long n)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    double *ms = calloc((size_t)n, sizeof *ms);

    if (ms == NULL)
        die("calloc", ENOMEM);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0)
        die("listener", errno);
    for (long i = 0; i < n; i++) {
        double t0 = now_ms();
        if (handshakes_under_way(fd) < 0)
            die("sock_diag", errno);
        ms[i] = now_ms() - t0;
    }
    qsort(ms, (size_t)n, sizeof *ms, by_value);
    printf("%.3f\n", ms[n / 2]);
    free(ms);
    (void)close(fd);    /* a listener: nothing to flush */
}

int main(int argc, char **argv)
{
    long n = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    if (n < 1 || n > 100000 || (strcmp(argv[1], "churn") != 0 &&
                                strcmp(argv[1], "idle") != 0 && strcmp(argv[1], "count") != 0)) {
        fprintf(stderr, "usage: floor churn|idle|count N   (1 <= N <= 100000)\n");
        return 2;
    }
    if (strcmp(argv[1], "churn") == 0)
        churn(n);
    else if (strcmp(argv[1], "idle") == 0)
        idle(n);
    else
        count(n);
    return 0;
}
