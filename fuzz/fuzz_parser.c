/*
 * fuzz_parser.c - libFuzzer target for http_parse_request().
 *
 * Beyond "no crash, no sanitizer report", it checks the parser's promises:
 * a DONE head lies inside the input and its target points into it; an
 * ERROR carries a 4xx/5xx status; PARTIAL is only returned for input shorter
 * than the head limit.  Feeding the same bytes in two pieces, the second
 * parse resuming the first, must give the same verdict as feeding them whole
 * (the server parses as bytes arrive).
 */
#include "../http/parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so ASan catches any over-read. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);

    struct http_request req;
    int status = 0;
    enum http_parse_result r = http_parse_request(buf, size, &req, &status);

    switch (r) {
    case HTTP_PARSE_DONE:
        if (req.head_len > size || req.head_len > HTTP_HEAD_MAX)
            abort();
        if (req.target < buf || req.target + req.target_len > buf + req.head_len)
            abort();
        if (req.minor_version != 0 && req.minor_version != 1)
            abort();
        /* Every field value kept lies inside the head. */
        {
            const char *const fields[] = { req.if_none_match, req.if_modified_since, req.range,
                                     req.if_range };
            const size_t lens[] = { req.if_none_match_len, req.if_modified_since_len,
                              req.range_len, req.if_range_len };
            for (size_t k = 0; k < 4; k++)
                if (fields[k] != NULL &&
                    (fields[k] < buf || fields[k] + lens[k] > buf + req.head_len))
                    abort();
        }
        /* A chunked body has no Content-Length, and only HTTP/1.1 has one. */
        if (req.chunked && (req.content_length != -1 || req.minor_version != 1))
            abort();
        break;
    case HTTP_PARSE_ERROR:
        if (status < 400 || status > 599)
            abort();
        break;
    case HTTP_PARSE_PARTIAL:
        if (size >= HTTP_HEAD_MAX)
            abort();
        break;
    }

    /* A complete head stays complete, with the same length, whatever
     * follows it (pipelined requests, a body). */
    if (r == HTTP_PARSE_DONE && size > 0) {
        struct http_request prefix;
        int st2 = 0;
        if (http_parse_request(buf, req.head_len, &prefix, &st2) != HTTP_PARSE_DONE ||
            prefix.head_len != req.head_len)
            abort();
    }
    /* Any prefix of a valid or partial input is never an error that the
     * whole input is not: errors are decided on bytes already seen. */
    if (r != HTTP_PARSE_ERROR && size > 1) {
        struct http_request part;
        int st3 = 0;
        if (http_parse_request(buf, size / 2, &part, &st3) == HTTP_PARSE_ERROR)
            abort();
    }
    /* A parse resumed after a PARTIAL gives what parsing the whole gives.
     * (A prefix that is already an error may name another status than
     * the whole: "HTTP/0.1\r" is 505, "HTTP/0.1\rX" 400.) */
    if (size > 1) {
        struct http_request res;
        int st4 = 0;
        size_t cut = size / 3;
        if (http_parse_request(buf, cut, &res, &st4) == HTTP_PARSE_PARTIAL) {
            enum http_parse_result r4 = http_parse_request_resume(buf, size, cut, &res, &st4);
            if (r4 != r || (r == HTTP_PARSE_ERROR && st4 != status) ||
                (r == HTTP_PARSE_DONE && res.head_len != req.head_len))
                abort();
        }
    }
    free(buf);
    return 0;
}
