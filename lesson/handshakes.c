/*
 * handshakes.c - count a listener's handshakes under way: see handshakes.h.
 */
#define _DEFAULT_SOURCE /* TCP_SYN_RECV: netinet/tcp.h has it only then */

#include "handshakes.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>        /* TCP_SYN_RECV */
#include <sys/socket.h>
#include <unistd.h>

int handshakes_under_way(int fd)
{
    struct sockaddr_in addr = { .sin_family = AF_UNSPEC };
    socklen_t len = sizeof addr;
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 req;
    } ask = {
        .nh = { .nlmsg_len = sizeof ask, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
        .req = { .sdiag_family = AF_INET, .sdiag_protocol = IPPROTO_TCP,
                 .idiag_states = 1u << TCP_SYN_RECV },
    };
    union { struct nlmsghdr nh; char bytes[8192]; } reply;   /* aligned */
    int nl, count = 0;
    ssize_t n;

    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0 ||
        (nl = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG)) < 0)
        return -1;
    ask.req.id.idiag_sport = addr.sin_port;
    n = send(nl, &ask, sizeof ask, 0) == (ssize_t)sizeof ask ? 0 : -1;
    /* The answer: one message per such socket, then NLMSG_DONE. */
    for (size_t off = 0; n >= 0;) {
        const struct nlmsghdr *h = (const struct nlmsghdr *)(reply.bytes + off);

        if (off + NLMSG_HDRLEN > (size_t)n) {          /* read the next batch */
            n = recv(nl, reply.bytes, sizeof reply, 0);
            off = 0;
            if (n == 0)
                break;
        } else if (h->nlmsg_type == NLMSG_DONE) {
            close(nl);
            return count;
        } else if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_len < NLMSG_HDRLEN) {
            break;
        } else {
            count++;
            off += NLMSG_ALIGN(h->nlmsg_len);
        }
    }
    close(nl);
    return -1;
}
