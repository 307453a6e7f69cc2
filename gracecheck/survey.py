#!/usr/bin/env python3
"""`make gracecheck-survey`: gracecheck against the servers people run.

    survey.py [--out DIR] [--bound SECONDS] [--verify] [NAME...]

Runs gracecheck once against each server in SERVERS below that is installed
(or the NAMEs given), each with the graceful-stop signal its documentation
names and the configuration in gracecheck/examples/NAME/, and skips the
others with the reason.  Each run is bounded (--bound, default 600 s: past
it gracecheck gets SIGTERM and kills its servers).  It writes DIR/NAME.json
(gracecheck's own JSON), DIR/survey.json (every row, with versions) and
DIR/survey.md (the table: servers as rows, the checks as columns, then
every FAIL's figure).  The results are not judged: peers fail checks.
With --verify the exit status says only whether every server that ran gave
every check a verdict (PASS, FAIL or n/a); that is what CI asserts.

Python 3 standard library only.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EX = os.path.join(HERE, "examples")
TOOL = os.path.join(HERE, "gracecheck.py")
PY = "/usr/bin/python3"
SLOW = ["--slow", "/sleep?ms={ms}"]
BACKEND = [os.path.join(EX, "with_backend.sh"), "{dir}"]


def ex(*parts):
    return os.path.join(EX, *parts)


def first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def dpkg_version(pkg):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return out.stdout.strip() or None


def have(*programs):
    """None if every program is found, else why not."""
    for prog in programs:
        if not (shutil.which(prog) or os.access(prog, os.X_OK)):
            return f"{prog} not found"
    return None


def have_module(module):
    ok = subprocess.run([PY, "-c", f"import {module}"], capture_output=True).returncode == 0
    return None if ok else f"{PY} cannot import {module}"


# Each server: name, label (what the row is), what it needs (a function that
# returns None or why not), its version, gracecheck's options, the command.
# `prepare` (optional) builds what the command runs, into a scratch dir.
def servers():
    rows = []

    def add(name, label, need, version, options, command, prepare=None, package=None):
        rows.append(dict(name=name, label=label, need=need, version=version,
                         options=options, command=command, prepare=prepare,
                         package=package))

    add("server", "`./server`, `--grace 2`",
        lambda: have(os.path.join(REPO, "server")) and "./server not built (make server)",
        lambda: "git " + first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        SLOW + ["--grace", "2"],
        [os.path.join(REPO, "server"), "--port", "{port}", "--data-dir", "{dir}", "--grace", "2"])
    minimal = os.path.join(REPO, "lesson", "build", "minimal")
    add("minimal", "lesson/minimal.c, GRACE 2",
        lambda: have(minimal) and "lesson/build/minimal not built (make lesson-stages)",
        lambda: "git " + first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        SLOW + ["--grace", "2"], [minimal, "{port}", "2"])
    for variant, label, extra, conf in (
            ("nginx", "nginx, QUIT, `worker_shutdown_timeout 2s`, 1 worker", ["--grace", "2"], []),
            ("nginx-default", "nginx, QUIT, defaults: `worker_processes auto`, no `worker_shutdown_timeout`",
             [], [ex("nginx", "default", "nginx.conf")])):
        add(variant, label, lambda: have("nginx"),
            lambda: first_line(["nginx", "-v"]).split("/")[-1],
            ["--signal", "QUIT"] + SLOW + extra,
            [ex("nginx", "run.sh"), "{port}", "{dir}"] + conf, package="nginx")
    for variant, sub, label, extra in (
            ("apache", "", "Apache event MPM, WINCH, `GracefulShutdownTimeout 2`", ["--grace", "2"]),
            ("apache-default", "default", "Apache event MPM, WINCH, default `GracefulShutdownTimeout 0`", [])):
        d = ex("apache", sub)
        add(variant, label, lambda: have("apache2ctl", "apache2"),
            lambda: first_line(["apache2", "-v"]).split("/")[-1],
            ["--signal", "WINCH", "--render", os.path.join(d, "apache2.conf"),
             "--render", os.path.join(d, "index.html"),
             "--log", "{dir}/error.log", "--ready-line", "resuming normal operations",
             "--ready-http", "/sleep?ms=0", "--pid-file", "{dir}/httpd.pid"] + SLOW + extra,
            BACKEND + ["apache2ctl", "-f", "{dir}/apache2.conf", "-DFOREGROUND"], package="apache2")
    for variant, sub, label, extra in (
            ("caddy", "", "Caddy, INT, `grace_period 2s`", ["--grace", "2"]),
            ("caddy-default", "default", "Caddy, INT, default (no `grace_period`)", [])):
        d = ex("caddy", sub)
        add(variant, label, lambda: have("caddy"),
            lambda: first_line(["caddy", "version"]),
            ["--signal", "INT", "--render", os.path.join(d, "Caddyfile"),
             "--ready-http", "/sleep?ms=0"] + SLOW + extra,
            BACKEND + ["caddy", "run", "--config", "{dir}/Caddyfile", "--adapter", "caddyfile"],
            package="caddy")
    add("h2o", "h2o, TERM (no drain deadline in 2.2)", lambda: have("h2o"),
        lambda: first_line(["h2o", "--version"]).split()[-1],
        ["--signal", "TERM", "--render", ex("h2o", "h2o.conf"), "--render", ex("h2o", "index.html"),
         "--ready-http", "/sleep?ms=0"] + SLOW,
        BACKEND + ["h2o", "-c", "{dir}/h2o.conf"], package="h2o")
    for variant, sub, label, extra in (
            ("lighttpd", "", "lighttpd, INT, `server.graceful-shutdown-timeout = 2`", ["--grace", "2"]),
            ("lighttpd-default", "default", "lighttpd, INT, default (no timeout)", [])):
        d = ex("lighttpd", sub)
        add(variant, label, lambda: have("lighttpd"),
            lambda: first_line(["lighttpd", "-v"]).split()[0].split("/")[-1],
            ["--signal", "INT", "--render", os.path.join(d, "lighttpd.conf"),
             "--render", os.path.join(d, "index.html"), "--ready-http", "/sleep?ms=0"] + SLOW + extra,
            BACKEND + ["lighttpd", "-D", "-f", "{dir}/lighttpd.conf"], package="lighttpd")
    for variant, sub, label, extra in (
            ("haproxy", "", "HAProxy, USR1, `hard-stop-after 2s`", ["--grace", "2"]),
            ("haproxy-default", "default", "HAProxy, USR1, default (no `hard-stop-after`)", [])):
        d = ex("haproxy", sub)
        add(variant, label, lambda: have("haproxy"),
            lambda: first_line(["haproxy", "-v"]).split()[2],
            ["--signal", "USR1", "--render", os.path.join(d, "haproxy.cfg"),
             "--ready-http", "/sleep?ms=0"] + SLOW + extra,
            BACKEND + ["haproxy", "-db", "-f", "{dir}/haproxy.cfg"], package="haproxy")
    for variant, label, extra, gopt in (
            ("gunicorn", "gunicorn, TERM, 2 sync workers, `--graceful-timeout 2`", ["--grace", "2"],
             ["--graceful-timeout", "2"]),
            ("gunicorn-default", "gunicorn, TERM, 2 sync workers, default `--graceful-timeout 30`", [], [])):
        add(variant, label, lambda: have("gunicorn"),
            lambda: first_line(["gunicorn", "--version"]).split()[-1].rstrip(")"),
            ["--signal", "TERM", "--ready-http", "/"] + SLOW + extra,
            ["gunicorn", "--chdir", ex("gunicorn"), "--workers", "2", "--bind", "127.0.0.1:{port}",
             "--pid", "{dir}/gunicorn.pid"] + gopt + ["app:app"], package="gunicorn")
    add("uvicorn", "uvicorn, TERM (0.17 has no drain deadline)", lambda: have_module("uvicorn"),
        lambda: first_line([PY, "-c", "import uvicorn; print(uvicorn.__version__)"]),
        ["--signal", "TERM", "--ready-line", "Uvicorn running on"] + SLOW,
        [PY, "-m", "uvicorn", "--app-dir", ex("uvicorn"), "--host", "127.0.0.1",
         "--port", "{port}", "app:app"], package="python3-uvicorn")
    for variant, label, extra, arg in (
            ("node", "Node.js http, TERM, `server.close()`", [], []),
            ("node-grace", "Node.js http, TERM, `server.close()`, then `closeAllConnections()` after 2 s",
             ["--grace", "2"], ["2"])):
        add(variant, label, lambda: have("node"),
            lambda: first_line(["node", "--version"]),
            ["--signal", "TERM", "--ready-line", "^listening on"] + SLOW + extra,
            ["node", ex("node", "server.js"), "{port}"] + arg, package="nodejs")

    def build_go(scratch):
        out = os.path.join(scratch, "go-server")
        env = dict(os.environ, GOCACHE=os.path.join(scratch, "gocache"), GO111MODULE="off")
        subprocess.run(["go", "build", "-o", out, "main.go"], cwd=ex("go"), env=env,
                       check=True, timeout=300)
        return {"{go-server}": out}
    add("go", "Go net/http, INT, `Shutdown` with a 2 s context", lambda: have("go"),
        lambda: first_line(["go", "version"]).split()[2],
        ["--signal", "INT", "--grace", "2"] + SLOW,
        ["{go-server}", "-addr", "127.0.0.1:{port}", "-grace", "2"], prepare=build_go,
        package="golang-go")
    add("python-threading", "Python ThreadingHTTPServer, INT, `shutdown()`", lambda: have(PY),
        lambda: first_line([PY, "--version"]).split()[-1],
        ["--signal", "INT"] + SLOW, [PY, ex("threading_server.py"), "{port}"])
    return rows


def checks():
    out = subprocess.run([PY, TOOL, "--list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def run_one(row, outdir, scratch, bound, say):
    subst = row["prepare"](scratch) if row["prepare"] else {}
    command = [subst.get(a, a) for a in row["command"]]
    json_path = os.path.join(outdir, row["name"] + ".json")
    if os.path.exists(json_path):
        os.remove(json_path)
    argv = [PY, TOOL, "--json", json_path] + row["options"] + ["--"] + command
    say(f"\n== {row['name']}: {row['label']}")
    started = time.monotonic()
    # gracecheck's report goes through say(), so that servers run at once
    # (--jobs) print theirs whole, one after the other.
    with tempfile.TemporaryFile(mode="w+") as out:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT) as tool:
            stopped = False
            try:
                rc = tool.wait(timeout=bound)
            except subprocess.TimeoutExpired:
                tool.terminate()        # gracecheck kills its servers on SIGTERM
                rc = tool.wait(timeout=60)
                stopped = True
        out.seek(0)
        say(out.read().rstrip("\n"))
    if stopped:
        say(f"== {row['name']}: stopped at the {bound:g} s bound")
    took = time.monotonic() - started
    results = []
    if os.path.exists(json_path):
        with open(json_path) as f:
            results = json.load(f)["checks"]
    return rc, took, results


def cell(result):
    return {"PASS": "PASS", "FAIL": "**FAIL**", "n/a": "n/a"}.get(result["result"], "?")


def write_table(outdir, rows, names, when):
    doc = {"date": when, "machine": f"{platform.system()} {platform.release()}, "
           f"{os.cpu_count()} cores", "checks": names, "servers": rows}
    with open(os.path.join(outdir, "survey.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    lines = [f"Survey of {when} ({doc['machine']}); `make gracecheck-survey`.", "",
             "| server | version | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for r in rows:
        if r.get("skipped"):
            continue
        by = {c["name"]: c for c in r["results"]}
        cells = [cell(by[n]) if n in by else "not run" for n in names]
        lines.append(f"| {r['label']} | {r['version']} | " + " | ".join(cells) + " |")
    skipped = [r for r in rows if r.get("skipped")]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{r['name']} ({r['skipped']})" for r in skipped) + "."]
    lines += ["", "Every FAIL, as gracecheck measured it:", ""]
    for r in rows:
        for c in r.get("results", []):
            if c["result"] == "FAIL":
                lines.append(f"- {r['name']} / {c['name']}: {c['figure']}"
                             + (f" ({c['detail']})" if c["detail"] else ""))
    lines += ["", "Figures of every check:", ""]
    for r in rows:
        if r.get("results"):
            lines.append(f"- **{r['name']}** ({r['seconds']:.0f} s): "
                         + "; ".join(f"{c['name']} {c['result']} {c['figure']}" for c in r["results"]))
    with open(os.path.join(outdir, "survey.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="servers to run (default: every one installed)")
    p.add_argument("--out", default=os.path.join(HERE, "survey"), help="where the results go")
    p.add_argument("--bound", type=float, default=600, help="seconds one server's run may take")
    p.add_argument("--verify", action="store_true",
                   help="exit 1 unless every server that ran gave every check a verdict")
    p.add_argument("--list", action="store_true", help="list the servers and exit")
    p.add_argument("--jobs", type=int, default=1,
                   help="servers run at once (default 1: the published table's figures "
                        "are timings, best taken with nothing beside them)")
    args = p.parse_args()
    table = servers()
    if args.list:
        for r in table:
            print(f"{r['name']:<18} {r['label']}")
        return 0
    unknown = [n for n in args.names if n not in {r["name"] for r in table}]
    if unknown:
        print(f"survey: no server named {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    names = checks()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    done, bad = [], []
    started = time.monotonic()
    lock = threading.Lock()

    def survey_one(r):
        """Run one server; its report is printed whole when it ends."""
        said = []
        row = {"name": r["name"], "label": r["label"], "signal": None}
        why = r["need"]()
        if why:
            row["skipped"] = why + (f" (apt-get install {r['package']})" if r["package"] else "")
            said.append(f"\n== {r['name']}: skipped, {row['skipped']}")
        else:
            row["version"] = r["version"]()
            if r["package"]:
                row["package"] = (f"{r['package']} "
                                  f"{dpkg_version(r['package']) or '(not from a Debian package)'}")
            row["options"], row["command"] = r["options"], r["command"]
            with tempfile.TemporaryDirectory(prefix="survey-") as scratch:
                try:
                    rc, took, results = run_one(r, args.out, scratch, args.bound, said.append)
                except (subprocess.SubprocessError, OSError) as e:
                    rc, took, results = 2, 0.0, []
                    said.append(f"== {r['name']}: could not prepare: {e}")
            row.update(status=rc, seconds=round(took, 1), results=results)
        with lock:
            print("\n".join(said), flush=True)
            if not row.get("skipped"):
                verdicts = {c["name"]: c["result"] for c in row["results"]}
                missing = [n for n in names if verdicts.get(n) not in ("PASS", "FAIL", "n/a")]
                if missing:
                    bad.append(f"{r['name']}: no verdict for {', '.join(missing)} "
                               f"(gracecheck status {row['status']})")
            done.append(row)
            done.sort(key=lambda row: order.index(row["name"]))
            write_table(args.out, done, names, when)

    chosen = [r for r in table if not args.names or r["name"] in args.names]
    order = [r["name"] for r in chosen]     # the table's order, whatever ends first
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(survey_one, r) for r in chosen]:
            future.result()
    write_table(args.out, done, names, when)
    print(f"\nsurvey: {sum(1 for r in done if not r.get('skipped'))} servers ran, "
          f"{sum(1 for r in done if r.get('skipped'))} skipped, "
          f"{time.monotonic() - started:.0f} s; table in {os.path.join(args.out, 'survey.md')}")
    for line in bad:
        print(f"survey: {line}", file=sys.stderr)
    return 1 if (args.verify and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
