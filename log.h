/*
 * log.h - the one log API: one line per event on stderr, for operators and
 * tests to match.
 *
 * Each line is formatted first and written with a single write(2), so lines
 * from different threads (or from a server and its successor sharing
 * stderr) never interleave.  Callers choose a stable prefix: "conn: " for
 * one connection's failures, "server: " for the process's.  The lines of
 * the sequence itself ("listening on", "shutdown requested by", "second
 * SIGINT; cutting", "exit 1: ...", "restart failed: ...") carry none: each
 * begins with its own fixed words, which tests and operators match.  A
 * line longer than LOG_LINE_MAX is cut short.  errno is left as it was, so
 * a caller may log and then return it.  Not for signal handlers (it
 * formats).
 *
 * Helpers elsewhere do not log: they return -1 with errno set and their
 * callers decide what to say (see the top of server.c).
 */
#ifndef GRACEFUL_LOG_H
#define GRACEFUL_LOG_H

#define LOG_LINE_MAX 512

/* Never fails: a line that cannot be written is dropped (see log.c). */
void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
