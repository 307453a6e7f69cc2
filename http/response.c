/*
 * http/response.c - a response head, as text (see response.h).
 */
#include "response.h"

#include "text.h"

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default:  return "Unknown";
    }
}

size_t http_format_head(const struct http_response *r, const char *date, char *out, size_t cap)
{
    struct http_text t = { .p = out, .end = out + cap };

    http_text_str(&t, "HTTP/1.1 ");
    http_text_uint(&t, (unsigned)r->status, 3);
    http_text_str(&t, " ");
    http_text_str(&t, http_status_reason(r->status));
    if (date[0] != '\0') {
        http_text_str(&t, "\r\nDate: ");
        http_text_str(&t, date);
    }
    /* 204 and 304 have no content, and no Content-Length (RFC 9110 8.6). */
    if (r->status != 204 && r->status != 304) {
        http_text_str(&t, "\r\nContent-Type: ");
        http_text_str(&t, r->content_type);
        http_text_str(&t, "\r\nContent-Length: ");
        http_text_uint(&t, (unsigned long long)r->content_length, 1);
    }
    http_text_str(&t, "\r\n");
    if (!r->keep_alive)
        http_text_str(&t, "Connection: close\r\n");
    else if (r->http10_keep_alive)
        http_text_str(&t, "Connection: keep-alive\r\n");
    if (r->extra_headers)
        http_text_str(&t, r->extra_headers);
    http_text_str(&t, "\r\n");
    return t.full ? 0 : (size_t)(t.p - out);
}

const char *http_status_body(int status, char *out, size_t cap)
{
    struct http_text t = { .p = out, .end = out + cap };

    http_text_uint(&t, (unsigned)status, 3);
    http_text_str(&t, " ");
    http_text_str(&t, http_status_reason(status));
    http_text_str(&t, "\n");
    return http_text_end(&t) ? out : NULL;
}
