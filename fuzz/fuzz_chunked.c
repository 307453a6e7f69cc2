/*
 * fuzz_chunked.c - libFuzzer target for http_chunked_decode().
 *
 * The first input byte picks how the rest is cut into pieces (the server
 * decodes whatever each recv() brought) and the body limit; the rest is a
 * chunked body.  Beyond "no crash, no sanitizer report", it checks the
 * decoder's promises:
 *   - decoding in pieces gives the same verdict, status, decoded bytes and
 *     end position as decoding all at once: the decoder is incremental;
 *   - decoding in place (out == in, as the server does) gives the same
 *     bytes as decoding into another buffer;
 *   - PARTIAL uses every byte, DONE and ERROR never more than given, the
 *     output is never longer than the input, the total never passes the
 *     limit, and an ERROR carries 400, 413 or 431.
 */
#include "../http/chunked.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
    enum http_parse_result r;
    int status;
    size_t end;             /* input bytes used in all */
    size_t out_len;         /* decoded bytes in all */
};

/* Decode body[0..len) in pieces of `piece` bytes (len when 0), in place
 * when in_place, collecting the decoded bytes in out. */
static struct outcome decode(const char *body, size_t len, size_t piece, int in_place,
                             long long max_body, char *out)
{
    struct http_chunked d;
    struct outcome o = { HTTP_PARSE_PARTIAL, 0, 0, 0 };
    char *work = malloc(len ? len : 1);

    if (work == NULL)
        abort();
    http_chunked_init(&d, max_body);
    while (o.end < len) {
        size_t n = piece == 0 || len - o.end < piece ? len - o.end : piece;
        size_t got, used;
        /* A private copy of exactly n bytes, so ASan catches an over-read. */
        char *in = malloc(n);
        if (in == NULL)
            abort();
        memcpy(in, body + o.end, n);
        o.r = http_chunked_decode(&d, in, n, in_place ? in : work, &got, &used, &o.status);
        if (used > n || got > used || (o.r == HTTP_PARSE_PARTIAL && used != n))
            abort();
        memcpy(out + o.out_len, in_place ? in : work, got);
        free(in);
        o.out_len += got;
        o.end += used;
        if (d.total != (long long)o.out_len || d.total > max_body)
            abort();
        if (o.r != HTTP_PARSE_PARTIAL)
            break;
    }
    if (o.r == HTTP_PARSE_ERROR && o.status != 400 && o.status != 413 && o.status != 431)
        abort();
    free(work);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = data[0] & 0x3f;          /* 0: all at once; else 1..63 */
    long long max_body = data[0] & 0x40 ? 64 : 1LL << 40;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char *whole = malloc(len ? len : 1), *cut = malloc(len ? len : 1);

    if (whole == NULL || cut == NULL)
        abort();
    struct outcome a = decode(body, len, 0, 0, max_body, whole);
    struct outcome b = decode(body, len, piece, 1, max_body, cut);
    if (a.r != b.r || a.status != b.status || a.out_len != b.out_len ||
        memcmp(whole, cut, a.out_len) != 0)
        abort();
    /* Where the body ended or failed is decided by the bytes, not the cut. */
    if (a.r != HTTP_PARSE_PARTIAL && a.end != b.end)
        abort();
    free(whole);
    free(cut);
    return 0;
}
