/*
 * process/listener.c - the listening socket (see listener.h).
 *
 * Opening and naming it is POSIX.  The rest is what "stop accepting"
 * needs so that closing the listener resets no client: close(2) of a
 * listening socket resets every connection in its backlog, and the kernel
 * goes on completing handshakes until that very close.  Linux lets us stop
 * it (a SYN filter) and count what is under way (sock_diag); elsewhere
 * these fail with errno set and the window stays, as in most servers.
 */
#define _GNU_SOURCE /* SOCK_NONBLOCK, SOCK_CLOEXEC (Linux and the BSDs; POSIX.1-2024) */

#include "listener.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/filter.h>       /* SO_ATTACH_FILTER: see listener_stop_new_handshakes */
#include <linux/inet_diag.h>    /* sock_diag(7): see listener_handshakes_under_way */
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>        /* TCP_SYN_RECV */
#endif

int listener_open(const struct sockaddr *addr, socklen_t addr_len, const char **failed)
{
    int one = 1;

    /* Non-blocking: ppoll() may report a connection that the client resets
     * before we accept it, and accept() must then fail, not block. */
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *failed = "socket";
        return -1;
    }
    /* Without SO_REUSEADDR a restart right after Ctrl+C fails with
     * EADDRINUSE while the old connections sit in TIME_WAIT.  It cannot
     * fail on a TCP socket just made; if it did, only such restarts would
     * suffer, so the error is not worth failing for. */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, addr, addr_len) != 0) {
        *failed = "bind";
        goto out_close;
    }
    if (listen(fd, SOMAXCONN) != 0) {
        *failed = "listen";
        goto out_close;
    }
    return fd;

out_close:;
    int saved = errno;
    (void)close(fd);
    errno = saved;
    return -1;
}

int listener_describe(int fd, char *name, size_t cap)
{
    struct sockaddr_storage addr = { .ss_family = AF_UNSPEC };
    socklen_t len = sizeof addr;
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0 ||
        getnameinfo((struct sockaddr *)&addr, len, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    (void)snprintf(name, cap, addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
    return 0;
}

/*
 * Stopping accepting ends in closing the listener, and close(2) of a
 * listening socket resets every connection left in its backlog: clients
 * whose connect() has returned, some with their request already sent.
 * Taking in the backlog first is not enough, because the kernel goes on
 * completing handshakes for us until the very close(): one that completes
 * after our last accept() is reset.  So we first tell the kernel to stop.
 * There is no call for that (no "un-listen"); a socket filter does it
 * (socket(7), SO_ATTACH_FILTER): on a TCP socket the filter sees each
 * segment from its TCP header on, and this one drops every segment with
 * SYN set.  No new handshake starts.  The last segments of handshakes
 * already under way carry no SYN and pass, as does everything on
 * connections already queued (accepted sockets inherit the filter, and
 * never receive a SYN).  A client whose SYN was dropped sends it again
 * after the initial retransmission timeout, one second (RFC 6298 2.1),
 * finds the listener closed and is refused: safe to retry, unlike a reset
 * after its request was sent.  Handshakes already under way when the
 * filter went on are waited for: see take_in_backlog in server.c.  Linux
 * only; elsewhere this fails with ENOPROTOOPT and the window stays.
 */
int listener_stop_new_handshakes(int listen_fd)
{
#ifdef SO_ATTACH_FILTER
    struct sock_filter drop_syn[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),         /* TCP flags byte */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x02, 0, 1), /* SYN set? */
        BPF_STMT(BPF_RET | BPF_K, 0),                   /* yes: drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),          /* no: keep it all */
    };
    struct sock_fprog prog = { .len = sizeof drop_syn / sizeof drop_syn[0],
                               .filter = drop_syn };
    return setsockopt(listen_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
#else
    (void)listen_fd;
    errno = ENOPROTOOPT;
    return -1;
#endif
}

#ifdef __linux__
/*
 * How many sockets of this family on this local port are in SYN_RECV, as
 * the kernel's socket diagnostics report them (sock_diag(7); ss(8) asks
 * the same way): a handshake whose SYN we received and answered, whose
 * client's last ACK we have not (yet).  -1 with errno set on failure.
 */
static int count_syn_recv(int nl, int family, in_port_t port)
{
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 req;
    } ask = {
        .nh = { .nlmsg_len = sizeof ask, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
        .req = { .sdiag_family = (unsigned char)family, .sdiag_protocol = IPPROTO_TCP,
                 .idiag_states = 1u << TCP_SYN_RECV, .id.idiag_sport = port },
    };
    union { struct nlmsghdr nh; char bytes[8192]; } reply;   /* aligned */
    int count = 0;

    /* No EINTR: the main thread blocks our signals outside its ppoll(). */
    if (send(nl, &ask, sizeof ask, 0) != (ssize_t)sizeof ask)
        return -1;
    for (;;) {
        ssize_t n = recv(nl, &reply, sizeof reply, 0);
        if (n <= 0) {
            if (n == 0)
                errno = EPROTO;     /* the dump ended without NLMSG_DONE */
            return -1;
        }
        /* NLMSG_OK and NLMSG_NEXT, spelled out without their int casts. */
        for (size_t off = 0; off + NLMSG_HDRLEN <= (size_t)n;) {
            const struct nlmsghdr *h = (const struct nlmsghdr *)(reply.bytes + off);
            if (h->nlmsg_len < NLMSG_HDRLEN || h->nlmsg_len > (size_t)n - off) {
                errno = EPROTO;
                return -1;
            }
            if (h->nlmsg_type == NLMSG_DONE)
                return count;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                errno = e->error < 0 ? -e->error : EPROTO;
                return -1;
            }
            count++;
            off += NLMSG_ALIGN(h->nlmsg_len);
        }
    }
}
#endif

/*
 * How many handshakes on listen_fd's port are under way: 0 for a socket
 * that has none (not TCP), -1 with errno set if the kernel cannot say.
 */
int listener_handshakes_under_way(int listen_fd)
{
    struct sockaddr_storage addr = { .ss_family = AF_UNSPEC };
    socklen_t len = sizeof addr;

    if (getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6)
        return 0;
#ifdef __linux__
    /* sin_port and sin6_port are at the same offset. */
    in_port_t port = ((const struct sockaddr_in *)&addr)->sin_port;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return -1;
    /* An IPv6 listener takes IPv4 clients too, whose handshakes are IPv4's. */
    int n = count_syn_recv(nl, AF_INET, port);
    if (n >= 0 && addr.ss_family == AF_INET6) {
        int n6 = count_syn_recv(nl, AF_INET6, port);
        n = n6 < 0 ? -1 : n + n6;
    }
    int saved = errno;
    (void)close(nl);        /* a netlink socket has nothing to flush */
    errno = saved;
    return n;
#else
    errno = ENOSYS;
    return -1;
#endif
}

/*
 * The end of "stop accepting".  A socket we inherited (from systemd, or
 * from the server we took over from) may still be held by whoever gave it
 * to us, and it goes on listening after our close(): leave it as we found
 * it.  Its backlog then survives our close and needs no filter.  (If we
 * are its last holder, a successor whose predecessor has exited, the
 * window comes back for the few microseconds between the detach and the
 * close.)  Returns -1 with errno set if the filter could not be taken off;
 * the listener is closed either way.
 */
int listener_close(int listen_fd, bool inherited)
{
    int rc = 0;
#ifdef SO_DETACH_FILTER
    /* The value is ignored, but Linux refuses an option shorter than an
     * int.  ENOENT means no filter was attached: nothing to undo. */
    int unused = 0;
    if (inherited &&
        setsockopt(listen_fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) != 0 &&
        errno != ENOENT)
        rc = -1;
#else
    (void)inherited;
#endif
    int saved = errno;
    /* A listening socket has no unsent data, so close() cannot fail in a
     * way we could act on. */
    (void)close(listen_fd);
    errno = saved;
    return rc;
}
