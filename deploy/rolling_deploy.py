#!/usr/bin/env python3
"""Rolling deploy behind nginx, under load, with zero errors.

Starts Debian's nginx as a reverse proxy in front of two instances of the
server, sends a steady load through nginx (keep-alive clients and a stream
of new connections, GET / and GET /sleep?ms=20), and replaces the instances
one at a time: SIGTERM, wait for the graceful exit, start a fresh one on the
same port.  Prints what the load saw; exits 0 only if every request got a
whole 200 and every old instance exited 0.

    python3 deploy/rolling_deploy.py              # uses ./server
    python3 deploy/rolling_deploy.py --rounds 3 --server ./server

Only 127.0.0.1 is used, and every loop is bounded in time.
"""
import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream graceful {{
        # max_fails=0: a refused connect during a restart sends this request
        # to the other instance but never takes this one out of rotation.
        server 127.0.0.1:{port_a} max_fails=0;
        server 127.0.0.1:{port_b} max_fails=0;
        keepalive 16;               # reuse connections to the upstreams
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://graceful;
            proxy_http_version 1.1;         # keep-alive to the upstreams needs 1.1
            proxy_set_header Connection ""; # ...and no "Connection: close" from nginx
            # Retry on the other instance when a connect is refused or a
            # reused connection is closed before any response byte arrives.
            # nginx retries only idempotent requests (GET/HEAD) this way.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def log(msg):
    print(msg, flush=True)


class Instance:
    """One ./server, its stderr read into a list in the background."""

    def __init__(self, binary, port, data_dir):
        self.proc = subprocess.Popen(
            [binary, "--port", str(port), "--data-dir", data_dir, "--grace", "10"],
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.ready = threading.Event()
        self.port = None
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(10) or self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start: " + "".join(self.lines))

    def _pump(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("listening on "):
                self.port = int(line.split()[2].rsplit(":", 1)[1])
                self.ready.set()
        self.ready.set()

    def stop(self, timeout=15):
        """SIGTERM and wait: the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class Load:
    """Clients hammering nginx until stop(); counts every outcome."""

    def __init__(self, port, keepalive_clients=8):
        self.port = port
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = []
        self.threads = [threading.Thread(target=self._keepalive, daemon=True)
                        for _ in range(keepalive_clients)]
        self.threads.append(threading.Thread(target=self._fresh, daemon=True))
        for t in self.threads:
            t.start()

    def _record(self, status, body, target):
        with self.lock:
            if status == 200 and body:
                self.ok += 1
            else:
                self.errors.append(f"{target}: status {status}, {len(body)} body bytes")

    def _keepalive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i = 0
        while not self.stop_event.is_set():
            target = "/sleep?ms=20" if i % 2 else "/"
            i += 1
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
                self._record(resp.status, resp.read(), target)
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.errors.append(f"{target}: {e!r}")
                conn.close()
        conn.close()

    def _fresh(self):
        while not self.stop_event.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                resp = conn.getresponse()
                self._record(resp.status, resp.read(), "/ (new connection)")
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.errors.append(f"/ (new connection): {e!r}")
            finally:
                conn.close()

    def count(self):
        with self.lock:
            return self.ok, len(self.errors)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(15)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=os.path.join(HERE, "..", "server"))
    ap.add_argument("--rounds", type=int, default=1,
                    help="how many times to replace both instances")
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds of load between steps")
    args = ap.parse_args()

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        sys.exit("nginx is missing: apt-get install nginx")
    binary = os.path.abspath(args.server)
    tmp = tempfile.mkdtemp(prefix="rolling-")
    instances = []
    nginx_proc = None
    load = None
    bad_exits = []
    try:
        for name in ("a", "b"):
            instances.append(Instance(binary, 0, os.path.join(tmp, name)))
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port, port_a=instances[0].port,
                                      port_b=instances[1].port))
        # -e: without it nginx opens /var/log/nginx/error.log before it
        # reads the configuration.
        nginx_proc = subprocess.Popen([nginx, "-p", tmp, "-e", os.path.join(tmp, "error.log"),
                                       "-c", conf, "-g", "daemon off;"],
                                      stdin=subprocess.DEVNULL)
        if not wait_for_port(port):
            sys.exit("nginx did not start; see " + os.path.join(tmp, "error.log"))
        log(f"nginx on 127.0.0.1:{port} -> servers on {instances[0].port} and "
            f"{instances[1].port}")

        load = Load(port)
        time.sleep(args.settle)     # steady load before the first step
        for rnd in range(args.rounds):
            for i, old in enumerate(instances):
                ok_before, err_before = load.count()
                rc = old.stop()
                fresh = Instance(binary, old.port, os.path.join(tmp, "ab"[i]))
                instances[i] = fresh
                if rc != 0:
                    bad_exits.append((old.port, rc, "".join(old.lines)))
                time.sleep(args.settle)
                ok, err = load.count()
                log(f"round {rnd + 1}: replaced the server on port {old.port} "
                    f"(old exited {rc}); {ok - ok_before} ok, {err - err_before} errors "
                    f"meanwhile")
        load.stop()
        ok, err = load.count()
        log(f"requests: {ok} ok, {err} errors")
        for e in load.errors[:20]:
            log(f"  error: {e}")
        for port_, rc, text in bad_exits:
            log(f"  server on {port_} exited {rc}:\n{text}")
        return 0 if err == 0 and not bad_exits and ok > 0 else 1
    finally:
        if load is not None:
            load.stop()
        if nginx_proc is not None:
            nginx_proc.send_signal(signal.SIGQUIT)
            try:
                nginx_proc.wait(10)
            except subprocess.TimeoutExpired:
                nginx_proc.kill()
        for inst in instances:
            if inst.proc.poll() is None:
                inst.proc.kill()
                inst.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
