/*
 * http/route.h - where a parsed request goes: this server's routes, from
 * the method and the target alone.  No sockets and no files: whether
 * /files/NAME exists is the handler's to find out.
 */
#ifndef GRACEFUL_HTTP_ROUTE_H
#define GRACEFUL_HTTP_ROUTE_H

#include "parse.h"

/* Longest NAME in /files/NAME. */
#define HTTP_FILE_NAME_MAX 128
/* Longest /sleep?ms=N. */
#define HTTP_SLEEP_MS_MAX 60000

enum http_route_kind {
    HTTP_ROUTE_ROOT,            /* GET, HEAD or POST / */
    HTTP_ROUTE_SLEEP,           /* GET or HEAD /sleep?ms=N */
    HTTP_ROUTE_FILE,            /* GET, HEAD or PUT /files/NAME */
    HTTP_ROUTE_OPTIONS,         /* OPTIONS on a route: 204 with Allow */
    HTTP_ROUTE_ERROR            /* answer status */
};

struct http_route {
    enum http_route_kind kind;
    int status;                 /* HTTP_ROUTE_ERROR: what to answer */
    const char *allow;          /* OPTIONS, and a 405: the Allow header line */
    long sleep_ms;              /* HTTP_ROUTE_SLEEP */
    char name[HTTP_FILE_NAME_MAX + 1]; /* HTTP_ROUTE_FILE: a valid file name */
};

/*
 * Route the parsed request req into *rt.  The result does not point into
 * the request's buffer (name is copied; allow is a constant), so it
 * outlives the head.
 */
void http_resolve_route(const struct http_request *req, struct http_route *rt);

#endif /* GRACEFUL_HTTP_ROUTE_H */
