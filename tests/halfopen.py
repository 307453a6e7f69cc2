"""Hold a TCP handshake half-open, and count the half-open ones: for the
tests of step 4 and the lesson's *handshake row (lesson/matrix.py).
Python 3 standard library only; Linux.
"""

import ctypes
import errno
import select
import socket
import struct
import time

# A client-side socket filter (socket(7), SO_ATTACH_FILTER) that drops every
# segment with SYN set: on a connecting socket, the server's SYN-ACK.  The
# client's handshake then stays half-open on the server (SYN_RECV) for as
# long as the test wants.  The same four instructions as step 4's filter.
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


DROP_SYN = (SockFilter * 4)(
    SockFilter(0x30, 0, 0, 13),             # ld  [13]: the TCP flags byte
    SockFilter(0x45, 0, 1, 0x02),           # jset #SYN
    SockFilter(0x06, 0, 0, 0),              # ret #0: drop
    SockFilter(0x06, 0, 0, 0xffffffff))     # ret #-1: keep
DROP_SYN_PROG = bytes(SockFprog(len(DROP_SYN), ctypes.cast(DROP_SYN, ctypes.POINTER(SockFilter))))


def syn_recv_count(port):
    """Handshakes under way on 127.0.0.1's port, as sock_diag(7) reports them
    (what `ss -tn state syn-recv` asks): the kernel's count, not a guess."""
    netlink_sock_diag, sock_diag_by_family, tcp_syn_recv = 4, 20, 3
    nlmsg_error, nlmsg_done = 2, 3
    # struct inet_diag_req_v2: family, protocol, ext, pad, states, then the
    # socket id (source port, destination port, addresses, interface, cookie).
    req = (struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << tcp_syn_recv)
           + struct.pack("!HH", port, 0) + bytes(16 + 16 + 4 + 8))
    msg = struct.pack("=IHHII", 16 + len(req), sock_diag_by_family, 0x1 | 0x300, 1, 0) + req
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink_sock_diag) as nl:
        nl.send(msg)
        count = 0
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    raise OSError(errno.EPROTO, "sock_diag: a malformed reply")
                if kind == nlmsg_done:
                    return count
                if kind == nlmsg_error:
                    raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "sock_diag")
                count += 1
                off += (length + 3) & ~3


def connect_half_open(host, port, timeout):
    """A socket whose SYN has reached the server and whose SYN-ACK its filter
    drops: returned once the server's kernel counts the handshake under way.
    Call let_in() to let the next SYN-ACK through (the server sends it again
    a second after the first, if it still listens)."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, DROP_SYN_PROG)
        s.setblocking(False)
        s.connect_ex((host, port))
        deadline = time.monotonic() + timeout
        while syn_recv_count(port) != 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the handshake never showed up half-open")
            time.sleep(0.001)   # asking the kernel again: it has no event for this
        return s
    except BaseException:
        s.close()
        raise


def let_in(s, timeout):
    """Take the filter off and wait for the handshake to end: None when the
    socket is connected (then blocking, with timeout), else the error's name,
    e.g. "ECONNREFUSED"."""
    s.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    _, writable, _ = select.select([], [s], [], timeout)
    if not writable:
        return "timed out"
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return errno.errorcode.get(err, str(err))
    s.setblocking(True)
    s.settimeout(timeout)
    return None
