#!/usr/bin/env python3
"""Python's ThreadingHTTPServer with the usual graceful stop: `PORT` argument.

SIGINT or SIGTERM calls shutdown() (from another thread: shutdown() waits for
serve_forever() to return, so calling it on serve_forever()'s own thread
would deadlock), then server_close(), which joins the handler threads
because daemon_threads is off.  GET / answers; GET /sleep?ms=N waits first.
"""
import signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive, as real clients expect

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/sleep":
            time.sleep(int(parse_qs(url.query).get("ms", ["0"])[0]) / 1000)
        elif url.path != "/":
            return self.send_error(404)
        body = b"hello from ThreadingHTTPServer\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = False               # server_close() waits for requests
stop = lambda *_: threading.Thread(target=server.shutdown).start()
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
server.server_close()
