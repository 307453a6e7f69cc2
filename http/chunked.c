/*
 * http/chunked.c - the chunked-body decoder (see chunked.h).  No sockets:
 * the caller hands it each piece of the body as it arrives.
 */
#include "chunked.h"

#include <stdbool.h>
#include <string.h>

/*
 * chunked-body = *chunk last-chunk trailer-section CRLF      (RFC 9112 7.1)
 * chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *
 * One state per place in that grammar where the next byte is judged
 * differently.  Strict throughout: the size is hex digits only, with no
 * sign, "0x" or whitespace; every line ends in CRLF; an extension is
 * ";name" or ";name=value" with no whitespace (RFC 9112 7.1.1 allows BWS
 * around ';' and '=', which no client we know sends) and is ignored; a
 * trailer field is parsed like a header field and discarded (RFC 9112
 * 7.1.2: never merged into the head, so a Content-Length there frames
 * nothing).
 */
enum chunk_state {
    CHUNK_SIZE,             /* hex digits of a chunk size */
    CHUNK_EXT_NAME,         /* after ';': an extension name */
    CHUNK_EXT_VALUE,        /* after '=': a token, or a quoted string */
    CHUNK_EXT_QUOTED,       /* inside a quoted-string value */
    CHUNK_EXT_ESCAPE,       /* after a backslash inside it */
    CHUNK_EXT_QUOTE_END,    /* after its closing quote */
    CHUNK_SIZE_LF,          /* the size line's CR seen: LF next */
    CHUNK_DATA,             /* size bytes of data */
    CHUNK_DATA_CR,          /* the CRLF after the data */
    CHUNK_DATA_LF,
    CHUNK_TRAILER_START,    /* a trailer field, or the final CRLF */
    CHUNK_TRAILER_NAME,
    CHUNK_TRAILER_VALUE,
    CHUNK_TRAILER_LF,
    CHUNK_END_LF,           /* the final CRLF's LF */
    CHUNK_FINISHED          /* done, or failed: no more input wanted */
};

void http_chunked_init(struct http_chunked *d, long long max_body)
{
    memset(d, 0, sizeof *d);
    d->state = CHUNK_SIZE;
    d->max_body = max_body < 0 ? 0 : max_body;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* qdtext or the byte after a backslash (RFC 9110 5.6.4), minus '"' and '\'. */
static bool is_qdtext(unsigned char ch)
{
    return ch == '\t' || ch == ' ' || ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) ||
           (ch >= 0x5d && ch <= 0x7e) || ch >= 0x80;
}

/*
 * The end of a chunk-size line's size or extension token: ';' starts an
 * extension, CR ends the line.  Anything else, or an empty token, is 400.
 */
static enum http_parse_result chunk_token_end(struct http_chunked *d, unsigned char ch)
{
    if (d->token_len == 0)
        return HTTP_PARSE_ERROR;
    d->token_len = 0;
    if (ch == ';')
        d->state = CHUNK_EXT_NAME;
    else if (ch == '\r')
        d->state = CHUNK_SIZE_LF;
    else
        return HTTP_PARSE_ERROR;
    return HTTP_PARSE_PARTIAL;
}

/*
 * Judge one framing byte (anything but chunk data).  Returns PARTIAL to go
 * on, DONE after the last byte of the body, or ERROR with *status set.
 */
static enum http_parse_result chunk_step(struct http_chunked *d, unsigned char ch, int *status)
{
    int digit;

    *status = 400;
    if (d->state <= CHUNK_EXT_QUOTE_END && ++d->line_len > HTTP_CHUNK_LINE_MAX)
        return HTTP_PARSE_ERROR;
    if (d->state >= CHUNK_TRAILER_START && d->state <= CHUNK_TRAILER_LF &&
        ++d->trailer_len > HTTP_HEAD_MAX) {
        *status = 431;
        return HTTP_PARSE_ERROR;
    }
    switch (d->state) {
    case CHUNK_SIZE:
        digit = hex_value(ch);
        if (digit >= 0) {
            if (++d->token_len > HTTP_CHUNK_SIZE_DIGITS)
                return HTTP_PARSE_ERROR;
            d->size = d->size * 16 + (unsigned)digit;
            return HTTP_PARSE_PARTIAL;
        }
        /* The size is complete: refuse it now if its data would take the
         * body past the limit, before a byte of that data arrives. */
        if (d->token_len > 0 && d->size > (unsigned long long)(d->max_body - d->total)) {
            *status = 413;
            return HTTP_PARSE_ERROR;
        }
        return chunk_token_end(d, ch);
    case CHUNK_EXT_NAME:
        if (http_is_tchar(ch)) {
            d->token_len++;
            return HTTP_PARSE_PARTIAL;
        }
        if (ch == '=' && d->token_len > 0) {
            d->token_len = 0;
            d->state = CHUNK_EXT_VALUE;
            return HTTP_PARSE_PARTIAL;
        }
        return chunk_token_end(d, ch);
    case CHUNK_EXT_VALUE:
        if (ch == '"' && d->token_len == 0) {
            d->state = CHUNK_EXT_QUOTED;
            return HTTP_PARSE_PARTIAL;
        }
        if (http_is_tchar(ch)) {
            d->token_len++;
            return HTTP_PARSE_PARTIAL;
        }
        return chunk_token_end(d, ch);
    case CHUNK_EXT_QUOTED:
        if (ch == '"')
            d->state = CHUNK_EXT_QUOTE_END;
        else if (ch == '\\')
            d->state = CHUNK_EXT_ESCAPE;
        else if (!is_qdtext(ch))
            return HTTP_PARSE_ERROR;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_EXT_ESCAPE:
        if (!is_qdtext(ch) && ch != '"' && ch != '\\')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_EXT_QUOTED;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_EXT_QUOTE_END:
        d->token_len = 1;       /* the quoted string was the token */
        return chunk_token_end(d, ch);
    case CHUNK_SIZE_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->line_len = 0;
        d->state = d->size == 0 ? CHUNK_TRAILER_START : CHUNK_DATA;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_DATA_CR:
        if (ch != '\r')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_DATA_LF;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_DATA_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_SIZE;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_START:
        if (ch == '\r') {
            d->state = CHUNK_END_LF;
            return HTTP_PARSE_PARTIAL;
        }
        /* A name, as in the head: no obs-fold, no empty name. */
        if (!http_is_tchar(ch))
            return HTTP_PARSE_ERROR;
        if (++d->trailers > HTTP_HEADERS_MAX) {
            *status = 431;
            return HTTP_PARSE_ERROR;
        }
        d->state = CHUNK_TRAILER_NAME;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_NAME:
        if (ch == ':')
            d->state = CHUNK_TRAILER_VALUE;
        else if (!http_is_tchar(ch))
            return HTTP_PARSE_ERROR;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_VALUE:
        if (ch == '\r')
            d->state = CHUNK_TRAILER_LF;
        else if (!http_is_field_char(ch))
            return HTTP_PARSE_ERROR;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_TRAILER_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_TRAILER_START;
        return HTTP_PARSE_PARTIAL;
    case CHUNK_END_LF:
        if (ch != '\n')
            return HTTP_PARSE_ERROR;
        d->state = CHUNK_FINISHED;
        return HTTP_PARSE_DONE;
    default:
        return HTTP_PARSE_ERROR;    /* CHUNK_FINISHED: nothing more */
    }
}

enum http_parse_result http_chunked_decode(struct http_chunked *d,
                                           const char *in, size_t len,
                                           char *out, size_t *out_len,
                                           size_t *used, int *status)
{
    size_t i = 0, o = 0;

    *out_len = 0;
    *used = 0;
    while (i < len) {
        if (d->state == CHUNK_DATA) {
            size_t n = len - i;
            if (n > d->size)
                n = (size_t)d->size;
            /* memmove: out may be in, a little behind the input. */
            memmove(out + o, in + i, n);
            i += n;
            o += n;
            d->size -= n;
            d->total += (long long)n;
            *out_len = o;
            if (d->size == 0)
                d->state = CHUNK_DATA_CR;
            continue;
        }
        enum http_parse_result r = chunk_step(d, (unsigned char)in[i++], status);
        if (r == HTTP_PARSE_ERROR) {
            d->state = CHUNK_FINISHED;
            *used = i;
            return r;
        }
        if (r == HTTP_PARSE_DONE) {
            *used = i;
            return r;
        }
    }
    *used = i;
    return HTTP_PARSE_PARTIAL;
}
