/*
 * process/resources.c - what start-up asks of the system (see
 * resources.h).
 */
#define _POSIX_C_SOURCE 200809L /* O_DIRECTORY, O_CLOEXEC: -std=c11 hides POSIX */

#include "resources.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

/*
 * Each connection holds a descriptor, and one more while it uploads.  The
 * soft limit is often 1024 while the hard one is far higher; raising the
 * soft limit to the hard one is what it is there for.  *limit receives the
 * limit in force (RLIM_INFINITY if unknown).  Returns -1 with errno set and
 * *failed naming the call if it could not be raised.
 */
int raise_fd_limit(rlim_t *limit, const char **failed)
{
    struct rlimit rl;

    *limit = RLIM_INFINITY;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        *failed = "getrlimit";
        return -1;
    }
    *limit = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            *failed = "setrlimit";
            return -1;      /* the old limit stays, in *limit */
        }
        *limit = rl.rlim_cur;
    }
    return 0;
}

/* Create the data directory if missing and open it: uploads then work on
 * names relative to this descriptor and cannot escape it.  -1 with errno
 * set and *failed saying which step failed. */
int open_data_dir(const char *path, const char **failed)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        *failed = "create";
        return -1;
    }
    *failed = "open";
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}
