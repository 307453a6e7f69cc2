#!/usr/bin/env python3
"""A stand-in for servers whose port accepts before they are ready.

    slow_start.py PORT [--delay S] [--log FILE] [--stop-signal NAME]

It listens at once, then spends --delay seconds "starting" with the stop
signal's default action (a signal then kills it, as it would a server still
loading its configuration or forking its workers).  Only then does it take
the stop signal (--stop-signal, default INT; the others keep their default
action), print "ready" on stdout, write "ready in log" to --log, and serve:
GET / answers 200, one request per connection.  The stop signal shuts it
down and it exits 0.  Readiness is visible only in its stdout, its log or
its first 200; the open port says nothing.
"""
import argparse
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ready\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--log")
    p.add_argument("--stop-signal", default="INT")
    args = p.parse_args()
    stop_sig = getattr(signal, "SIG" + args.stop_signal)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_DFL)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = False
    time.sleep(args.delay)
    signal.signal(stop_sig, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    if args.log:
        with open(args.log, "a") as f:
            f.write("starting\nready in log\n")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
