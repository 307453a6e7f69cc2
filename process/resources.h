/*
 * process/resources.h - what start-up asks of the system: descriptors
 * enough for --max-conns, and the data directory.  Both return -1 with
 * errno set and *failed naming the step; the caller says what it means.
 */
#ifndef GRACEFUL_PROCESS_RESOURCES_H
#define GRACEFUL_PROCESS_RESOURCES_H

#include <sys/resource.h>

/* Raise the soft limit on descriptors to the hard one.  *limit receives
 * the limit in force, RLIM_INFINITY if unknown. */
int raise_fd_limit(rlim_t *limit, const char **failed);

/* Create the data directory if missing ("create") and open it ("open"). */
int open_data_dir(const char *path, const char **failed);

#endif
