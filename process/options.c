/*
 * process/options.c - the command line (see options.h).
 */
#include "options.h"

#include "../log.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>

#define SERVER_VERSION "0.1.0"

void usage(FILE *out)
{
    fprintf(out,
            "usage: server [--host ADDR] [--port N] [--grace SECONDS]\n"
            "              [--max-conns N] [--data-dir DIR] [--max-body BYTES]\n"
            "              [--header-timeout SECONDS] [--keepalive-timeout SECONDS]\n"
            "              [--restart-timeout SECONDS]\n"
            "\n"
            "  --host ADDR       numeric address to listen on (default 127.0.0.1)\n"
            "  --port N          TCP port, 0 for any free one (default 7878)\n"
            "  --grace SECONDS   on SIGINT/SIGTERM, how long in-flight requests may\n"
            "                    run before they are cut (default 30)\n"
            "  --max-conns N     connections served at once; more get 503 (default 1024)\n"
            "  --data-dir DIR    where PUT /files/NAME stores files (default ./data)\n"
            "  --max-body BYTES  largest accepted upload (default 104857600)\n"
            "  --header-timeout SECONDS\n"
            "                    a request head must arrive, and a body may stall,\n"
            "                    within this; else 408 (default 10)\n"
            "  --keepalive-timeout SECONDS\n"
            "                    an idle keep-alive connection is closed after\n"
            "                    this (default 30)\n"
            "  --restart-timeout SECONDS\n"
            "                    on SIGHUP, how long the new server may take to say\n"
            "                    it is ready; then it is stopped and this one serves\n"
            "                    on (default 30)\n"
            "  --help, --version\n");
}

/* Parse a whole decimal integer in [min, max]; -1 if s is anything else. */
static int parse_integer(const char *s, long long min, long long max, long long *out)
{
    char *end;

    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parse decimal seconds in [min_s, 86400] into milliseconds, rounded to
 * the nearest; -1 if s is anything else. */
static int parse_seconds_as_ms(const char *s, double min_s, long long *out_ms)
{
    char *end;

    errno = 0;
    double v = strtod(s, &end);
    /* The negated test also rejects NaN. */
    if (errno != 0 || end == s || *end != '\0' || !(v >= min_s && v <= 86400))
        return -1;
    *out_ms = (long long)(v * 1000 + 0.5);
    return 0;
}

/* Fills *o; returns -1 (after saying why) when the command line is bad. */
int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { "grace", required_argument, NULL, 'g' },
        { "max-conns", required_argument, NULL, 'm' },
        { "data-dir", required_argument, NULL, 'd' },
        { "max-body", required_argument, NULL, 'b' },
        { "header-timeout", required_argument, NULL, 't' },
        { "restart-timeout", required_argument, NULL, 'r' },
        { "keepalive-timeout", required_argument, NULL, 'k' },
        { "help", no_argument, NULL, 'H' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    long long v;
    int ch;

    *o = (struct options){
        .host = "127.0.0.1",
        .port = "7878",
        .grace_ms = 30000,
        /* 1024 threads is a comfortable load for one machine; beyond a few
         * thousand, thread-per-connection is the wrong design anyway. */
        .max_conns = 1024,
        .data_dir = "./data",
        .max_body = 100LL * 1024 * 1024,
        .header_timeout_ms = 10000,
        .restart_timeout_ms = 30000,
        .keepalive_timeout_ms = 30000,
    };
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            o->host = optarg;
            break;
        case 'p':
            if (parse_integer(optarg, 0, 65535, &v) != 0) {
                log_line("server: --port: not a port number: %s", optarg);
                return -1;
            }
            o->port = optarg;
            break;
        case 'g':
            if (parse_seconds_as_ms(optarg, 0, &o->grace_ms) != 0) {
                log_line("server: --grace: want seconds from 0 to 86400: %s", optarg);
                return -1;
            }
            break;
        case 't':
            if (parse_seconds_as_ms(optarg, 0.001, &v) != 0) {
                log_line("server: --header-timeout: want seconds from 0.001 to 86400: %s",
                         optarg);
                return -1;
            }
            o->header_timeout_ms = (int)v;     /* at most 86400000 */
            break;
        case 'k':
            if (parse_seconds_as_ms(optarg, 0.001, &v) != 0) {
                log_line("server: --keepalive-timeout: want seconds from 0.001 to 86400: %s",
                         optarg);
                return -1;
            }
            o->keepalive_timeout_ms = (int)v;  /* at most 86400000 */
            break;
        case 'r':
            if (parse_seconds_as_ms(optarg, 0.001, &o->restart_timeout_ms) != 0) {
                log_line("server: --restart-timeout: want seconds from 0.001 to 86400: %s",
                         optarg);
                return -1;
            }
            break;
        case 'm':
            if (parse_integer(optarg, 1, 1000000, &v) != 0) {
                log_line("server: --max-conns: want 1 to 1000000: %s", optarg);
                return -1;
            }
            o->max_conns = (size_t)v;
            break;
        case 'd':
            o->data_dir = optarg;
            break;
        case 'b':
            if (parse_integer(optarg, 0, LLONG_MAX, &v) != 0) {
                log_line("server: --max-body: want a byte count: %s", optarg);
                return -1;
            }
            o->max_body = v;
            break;
        case 'H':
            usage(stdout);
            exit(0);
        case 'V':
            printf("server %s\n", SERVER_VERSION);
            exit(0);
        default:
            return -1;  /* getopt_long has printed why */
        }
    }
    if (optind != argc) {
        log_line("server: unexpected argument: %s", argv[optind]);
        return -1;
    }
    return 0;
}
