/*
 * handshakes.h - not HTTP and not the shutdown itself: the one question
 * the advanced step A2 asks the kernel when it stops accepting.  Every
 * stage links handshakes.c; the stages from A2 on use it.
 */
#ifndef LESSON_HANDSHAKES_H
#define LESSON_HANDSHAKES_H

/*
 * How many TCP handshakes on the port of the IPv4 listener fd are under
 * way (SYN_RECV: we answered the SYN, the client's last ACK is not in
 * yet), as the kernel's socket diagnostics count them (sock_diag(7); ss(8)
 * asks the same way).  -1 if they cannot be counted.  Linux only.
 */
int handshakes_under_way(int fd);

#endif
