/*
 * process/stacks.c - connection threads' records and stacks (see stacks.h).
 *
 * Thread stacks are ours, not glibc's.  glibc would hand out stacks from
 * its cache and, at every thread exit, madvise(MADV_DONTNEED) the unused
 * part of the stack.  When threads exit on both cores at once, the kernel
 * turns those calls into TLB flushes of every core (inter-processor
 * interrupts); glibc also unmaps the stacks that overflow its 40 MiB
 * cache, with the same effect.  A stack given with pthread_attr_setstack
 * glibc neither advises nor unmaps, so we keep each joined thread's
 * record, stack included, for the next connection: once warm, starting a
 * connection thread maps nothing and ending one unmaps nothing.  What
 * glibc did that we must do ourselves: the guard page, the lowest page of
 * each stack, PROT_NONE so that an overflow faults instead of writing over
 * whatever lies below.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_STACK: -std=c11 hides them */

#include "stacks.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * At most this many spare records (a spare stack keeps the pages its
 * threads touched, 12 KiB for most, so about 3 MiB): beyond that, a burst
 * of connections would hold its peak of stacks for good.
 */
#define SPARE_THREADS_MAX 256

void spare_threads_init(struct spare_threads *s)
{
    s->list = NULL;
    s->n = 0;
    s->page_size = (size_t)sysconf(_SC_PAGESIZE);
}

/* A guard page and CONN_STACK_SIZE bytes above it; NULL if out of memory. */
static char *stack_map(size_t page_size)
{
    char *m = mmap(NULL, page_size + CONN_STACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (mprotect(m, page_size, PROT_NONE) != 0) {
        (void)munmap(m, page_size + CONN_STACK_SIZE);
        return NULL;
    }
    return m;
}

struct conn_thread *spare_threads_get(struct spare_threads *s)
{
    struct conn_thread *t = s->list;

    if (t != NULL) {
        s->list = t->next;
        s->n--;
        return t;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->stack = stack_map(s->page_size);
    if (t->stack == NULL) {
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    return t;
}

void *spare_threads_stack(const struct spare_threads *s, const struct conn_thread *t)
{
    return t->stack + s->page_size;
}

/*
 * Up to SPARE_THREADS_MAX.  While draining every one is kept: nothing is
 * started any more, and the exit that follows frees the address space in
 * one go, instead of a munmap (and its TLB shootdown) per stack.
 */
void spare_threads_put(struct spare_threads *s, struct conn_thread *t, bool keep_all)
{
    if (s->n >= SPARE_THREADS_MAX && !keep_all) {
        (void)munmap(t->stack, s->page_size + CONN_STACK_SIZE);
        free(t);
        return;
    }
    t->next = s->list;
    s->list = t;
    s->n++;
}

void spare_threads_free(struct spare_threads *s)
{
    while (s->list != NULL) {
        struct conn_thread *t = s->list;
        s->list = t->next;
        free(t);
    }
    s->n = 0;
}
