/*
 * log.c - log_line (see log.h).  Thread-safe without a lock: one write(2)
 * per line.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void log_line(const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    va_list ap;
    int saved = errno;      /* callers may log, then still read errno */

    va_start(ap, fmt);
    /* va_start is right above: a false report of clang 14's analyzer. */
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);  // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(ap);
    if (n < 0) {
        errno = saved;
        return;             /* an encoding error: nothing sensible to print */
    }
    size_t len = (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2;
    line[len++] = '\n';
    /* One write, so the line arrives whole.  A log that cannot be written
     * (stderr closed, a full pipe nobody reads) must not stop the server:
     * the line is dropped. */
    while (write(STDERR_FILENO, line, len) < 0 && errno == EINTR)
        ;
    errno = saved;
}
