#!/usr/bin/env python3
"""The slow application behind nginx: GET /sleep?ms=N on a Unix socket.

Usage: backend.py SOCKET_PATH.  It runs in nginx's process group, so the
checker kills it with nginx; it ignores the stop signals, which go to nginx.
"""
import signal, socketserver, sys, time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
        body = b"slept\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"          # client_address is "" on a Unix socket

    def log_message(self, *args):
        pass


class Backend(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 128   # nginx opens one connection per proxied request


for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
    signal.signal(sig, signal.SIG_IGN)
Backend(sys.argv[1], Handler).serve_forever()
