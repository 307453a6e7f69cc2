/*
 * process/options.h - the command line.
 */
#ifndef GRACEFUL_PROCESS_OPTIONS_H
#define GRACEFUL_PROCESS_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

/* Durations are given in seconds on the command line (--grace 2.5) and
 * kept in milliseconds, the unit of every clock in the server. */
struct options {
    const char *host;
    const char *port;           /* decimal, validated */
    long long grace_ms;         /* graceful drain before connections are cut */
    int header_timeout_ms;      /* see struct conn_env */
    int keepalive_timeout_ms;   /* see struct conn_env */
    long long restart_timeout_ms; /* a successor's time to say it is ready */
    size_t max_conns;           /* connection threads alive at once */
    const char *data_dir;
    long long max_body;         /* bytes */
};

/*
 * Fill *o from the command line.  --help and --version print and exit 0.
 * Returns -1, after a line saying what is wrong, for a bad command line:
 * the caller prints the usage and exits 2.
 */
int parse_options(int argc, char **argv, struct options *o);

void usage(FILE *out);

#endif
