/*
 * process/stacks.h - connection threads' records, each with a stack of
 * its own, kept for the next connection once the thread is joined (see
 * stacks.c for why: speed).
 */
#ifndef GRACEFUL_PROCESS_STACKS_H
#define GRACEFUL_PROCESS_STACKS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Each connection thread's stack.  The default (8 MiB of address space)
 * would cap us at a few thousand threads on a 32-bit system and wastes
 * address space everywhere.  A small stack is plenty: a connection keeps
 * its 17 KiB block here (see struct conn in handler.c) and an idle one
 * touches three pages, one of them glibc's thread descriptor and TLS;
 * file transfers keep their buffers on the heap.  Only the pages a thread
 * touches become resident.  Sanitizers need more, hence the override.
 */
#ifndef CONN_STACK_SIZE
#define CONN_STACK_SIZE ((size_t)256 * 1024)
#endif

struct server;

/* One connection thread: what it serves, and the stack it runs on. */
struct conn_thread {
    pthread_t thread;
    int fd;                         /* the connection; conn_serve closes it */
    struct server *srv;
    struct conn_thread *next;       /* finished list, or spare list */
    char *stack;                    /* a guard page, then CONN_STACK_SIZE */
};

/* Joined threads' records, kept with their stacks.  The main thread's
 * alone: no lock. */
struct spare_threads {
    struct conn_thread *list;
    size_t n;
    size_t page_size;
};

void spare_threads_init(struct spare_threads *s);

/* A record with a stack for a new thread, spare or new; NULL with errno
 * set if out of memory.  Its stack for pthread_attr_setstack is
 * spare_threads_stack(s, t), CONN_STACK_SIZE bytes. */
struct conn_thread *spare_threads_get(struct spare_threads *s);
void *spare_threads_stack(const struct spare_threads *s, const struct conn_thread *t);

/* Keep a joined thread's record for the next connection; keep_all while
 * draining (see stacks.c). */
void spare_threads_put(struct spare_threads *s, struct conn_thread *t, bool keep_all);

/* Free the records; their stacks are left to the exit that follows. */
void spare_threads_free(struct spare_threads *s);

#endif
