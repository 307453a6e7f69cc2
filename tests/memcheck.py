#!/usr/bin/env python3
"""A short, real session under valgrind memcheck: fails on any error or leak.

Requests, an upload and its download, a bad request, an idle keep-alive
connection and a /sleep in flight when SIGINT arrives, then the graceful
exit.  valgrind's --error-exitcode turns any invalid access or definite leak
into a non-zero exit status, which this script checks.

Usage: memcheck.py [SERVER_BIN]
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "./server"
VALGRIND_ERROR = 99


def request(port, raw):
    """Send raw bytes on a new connection; return everything until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(raw)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def main():
    if shutil.which("valgrind") is None:
        sys.exit("memcheck needs valgrind: apt-get install valgrind")
    tmp = tempfile.mkdtemp()
    cmd = ["valgrind", "--quiet", "--leak-check=full",
           "--errors-for-leak-kinds=definite", f"--error-exitcode={VALGRIND_ERROR}",
           BIN, "--port", "0", "--data-dir", os.path.join(tmp, "data")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        # valgrind itself may print first; wait for the readiness line.
        port = None
        log = []
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            if line.startswith("listening on "):
                port = int(line.rsplit(":", 1)[1])
        if port is None:
            sys.exit("server did not start under valgrind:\n" + "".join(log))

        host = b"Host: x\r\n"
        body = os.urandom(200_000)
        assert b" 200 " in request(port, b"GET / HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
        put = (b"PUT /files/blob HTTP/1.1\r\n" + host + b"Connection: close\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        assert b" 201 " in request(port, put)
        got = request(port, b"GET /files/blob HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
        assert got.endswith(body), "download differs from upload"
        assert b" 400 " in request(port, b"GET /files/..x HTTP/1.1\r\n" + host + b"\r\n")
        assert b" 400 " in request(port, b"\x00garbage\r\n\r\n")

        # An idle keep-alive connection and a /sleep in flight at SIGINT.
        idle = socket.create_connection(("127.0.0.1", port), timeout=60)
        idle.sendall(b"GET / HTTP/1.1\r\n" + host + b"\r\n")
        assert b" 200 " in idle.recv(65536)
        busy = socket.create_connection(("127.0.0.1", port), timeout=60)
        busy.sendall(b"GET / HTTP/1.1\r\n" + host + b"\r\n")
        assert b" 200 " in busy.recv(65536)
        # The connection is served already, so the sleep's bytes count as
        # an in-flight request even if they are still in the socket.
        busy.sendall(b"GET /sleep?ms=500 HTTP/1.1\r\n" + host + b"\r\n")
        proc.send_signal(signal.SIGINT)
        reply = busy.recv(65536)
        assert b" 200 " in reply and b"Connection: close" in reply, reply
        assert idle.recv(10) == b"", "idle connection not closed"
        idle.close()
        busy.close()

        _, rest = proc.communicate(timeout=60)
        log.append(rest)
        text = "".join(log)
        if proc.returncode != 0:
            sys.exit(f"memcheck failed (exit {proc.returncode}):\n{text}")
        print(text, end="")
        print("memcheck: no errors, no definite leaks")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
