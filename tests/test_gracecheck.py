"""gracecheck (gracecheck/gracecheck.py): it passes a good server, and every
one of its checks fails a server with the hole that check looks for.

The flawed servers are one small Python server, tests/gracecheck_fixtures/
flawed_server.py, that passes every check as it is and has one known hole
per --flaw.  So a check that fails here fails because of that one hole.
Each test runs only the checks it needs, to keep the suite short.
"""

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from collections import namedtuple

from conftest import REPO, SERVER_BIN, require_binary, wait_until

TOOL = str(REPO / "gracecheck" / "gracecheck.py")
FIXTURE = str(REPO / "tests" / "gracecheck_fixtures" / "flawed_server.py")
PY = sys.executable
SLOW = ["--slow", "/sleep?ms={ms}"]
ALL_CHECKS = ["idle-exit", "blocked-signals", "signal-race", "refuse-new", "in-flight", "conn-close",
              "idle-keepalive", "partial-request", "pipelined", "backlog", "deadline",
              "second-signal", "under-load", "no-pileup", "sigpipe", "exit-status",
              "handshake"]


# The fixture tests do not run ./server: under `make asan` or `make tsan`
# (SERVER_BIN set to another build) they would only repeat the plain run.
fixture_test = pytest.mark.skipif(
    os.path.realpath(SERVER_BIN) != os.path.realpath(REPO / "server"),
    reason="fixture-only test: the plain `make test` run covers it")


def gracecheck(tmp_path, options, command, timeout=300, bounds=None):
    """Run the tool to completion: (CompletedProcess, {check name: result}).
    bounds: {name: value} of gracecheck's module constants to change first."""
    out = tmp_path / "gracecheck.json"
    args = [PY, TOOL, "--json", str(out), *options, "--", *command]
    if bounds:
        setup = "; ".join(f"g.{k} = {v!r}" for k, v in bounds.items())
        args[1:2] = ["-c", f"import sys; sys.path.insert(0, {os.path.dirname(TOOL)!r}); "
                           f"import gracecheck as g; {setup}; sys.exit(g.main(sys.argv[1:]))"]
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as tool:
        try:
            stdout, stderr = tool.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM first: the tool kills its servers on the way out.
            tool.terminate()
            tool.communicate(timeout=30)
            raise
    proc = subprocess.CompletedProcess(args, tool.returncode, stdout, stderr)
    results = {}
    if out.exists():
        results = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    return proc, results


def fixture(*flaws, grace=1, pidfile=None):
    cmd = [PY, FIXTURE, "{port}", "--grace", str(grace), "--dir", "{dir}"]
    for flaw in flaws:
        cmd += ["--flaw", flaw]
    if pidfile:
        cmd += ["--pidfile", str(pidfile)]
    return cmd


def pids_in(pidfile):
    return [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# --------------------------------------------------------------------------
# good servers pass

@pytest.mark.slow(16)
def test_server_passes_every_check(tmp_path):
    require_binary()
    proc, results = gracecheck(
        tmp_path, [*SLOW, "--grace", "2", "--repeat", "3"],
        [SERVER_BIN, "--port", "{port}", "--data-dir", "{dir}", "--grace", "2"])
    assert list(results) == ALL_CHECKS, proc.stdout + proc.stderr
    failing = {n: r for n, r in results.items() if r["result"] != "PASS"}
    assert not failing, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow(18)
@fixture_test
def test_fixture_without_flaws_passes_every_check(tmp_path):
    proc, results = gracecheck(tmp_path, [*SLOW, "--grace", "1", "--repeat", "1"], fixture())
    failing = {n: r for n, r in results.items() if r["result"] != "PASS"}
    assert list(results) == ALL_CHECKS and not failing, proc.stdout + proc.stderr
    assert proc.returncode == 0


# --------------------------------------------------------------------------
# every check fails where it must

# Every condition that makes a check FAIL, with a flaw that makes it FAIL
# through that condition: (where, reason) -> (flaws, grace, checks run).
# `where` is the check, or "run" for the two failures gracecheck's run()
# gives any check (the server did not start; a client error), and `reason`
# the code its failed() call names, which the FAIL carries in the JSON.
# test_every_fail_condition_has_a_flaw reads gracecheck.py's failed() calls
# and asserts that this table lists exactly them.  grace is the fixture's
# --grace and gracecheck's; one flaw that fails through different
# conditions at different graces appears once for each.
Condition = namedtuple("Condition", "where reason flaws grace only bounds options")


def cond(where, reason, flaws, grace=1, only=None, bounds=None, options=()):
    return Condition(where, reason, tuple(flaws.split()), grace, only or [where], bounds,
                     list(options))


READY_LINE = ["--ready-line", "listening on"]   # early-ready says it 1 s early


FAIL_CONDITIONS = [
    cond("idle-exit", "hang", "ignore-signal"),
    cond("idle-exit", "hang", "textbook-accept"),
    cond("idle-exit", "late", "slow-exit"),
    cond("idle-exit", "status", "exit-nonzero"),
    cond("blocked-signals", "hang", "keep-blocked"),
    cond("blocked-signals", "late", "slow-exit"),
    cond("blocked-signals", "status", "exit-nonzero"),
    cond("signal-race", "hang", "startup-window"),
    cond("refuse-new", "no-refusal", "shutdown-delay"),
    # Alive (the slow request runs) past the connect's 2 s: no refusal.
    cond("refuse-new", "connect-hung", "keep-listening", grace=3),
    cond("refuse-new", "late", "keep-accepting", grace=2),
    # Exit (the drain cut at 0.5 s) before the SYN's retry at 1 s.
    cond("refuse-new", "syn-dropped", "filter-until-exit", grace=0.5),
    cond("in-flight", "not-whole", "exit-at-once"),
    # Whole 200s, with an empty body: Caddy's answers at the signal.
    cond("in-flight", "not-as-before", "empty-answers-at-drain"),
    cond("in-flight", "no-exit", "hang-at-exit"),
    cond("in-flight", "late", "slow-exit"),
    cond("conn-close", "unanswered", "exit-at-once"),
    cond("conn-close", "no-close-header", "no-close-header"),
    cond("conn-close", "not-fin", "reset-last"),
    # Before the signal: the open connections could not be had (the survey's
    # gunicorn sync workers: a timeout, one connection served at a time).
    cond("idle-keepalive", "before-signal", "early-ready", options=READY_LINE),
    cond("idle-keepalive", "before-signal", "conn-limit"),
    cond("idle-keepalive", "late", "idle-holds"),             # cut at the 1 s deadline
    cond("idle-keepalive", "late", "idle-holds", grace=10),   # no exit in 5 s
    cond("idle-keepalive", "not-eof", "reset-idle"),
    cond("partial-request", "unanswered", "drop-partial"),
    cond("pipelined", "dropped", "drop-pipelined"),
    cond("pipelined", "not-as-before", "empty-answers-at-drain"),
    cond("backlog", "not-stopped", "unstoppable"),
    cond("backlog", "none-connected", "early-ready", options=READY_LINE),
    cond("backlog", "reset", "skip-backlog"),
    cond("deadline", "hang", "hang-at-exit"),
    cond("deadline", "late", "no-deadline"),
    cond("deadline", "late", "uncuttable-sleep"),
    cond("deadline", "status-zero", "exit-zero"),
    cond("deadline", "not-cut", "answer-at-deadline"),
    cond("deadline", "unread-held", "blocking-send"),
    cond("second-signal", "exit-before-second", "exit-at-once"),
    cond("second-signal", "no-exit", "ignore-second", grace=10),
    cond("second-signal", "late", "ignore-second", grace=2),
    cond("second-signal", "status-zero", "exit-zero"),
    # The deadline (0.5 s) comes 0.2 s after the second signal.
    cond("second-signal", "at-deadline", "ignore-second", grace=0.5),
    cond("under-load", "no-exit", "hang-at-exit"),
    cond("under-load", "lost", "close-unread"),
    # Each answer takes 100 ms, so some are being written when the drain
    # begins: alone, the flaw can meet all 32 clients between requests,
    # closed idle, and nothing answered after the signal (CI saw it once).
    cond("under-load", "not-as-before", "empty-answers-at-drain slow-answer"),
    cond("no-pileup", "stopped-answering", "fd-exhaustion"),
    cond("no-pileup", "too-slow", "slow-answer", bounds={"PILEUP_BOUND": 5.0}),
    cond("no-pileup", "not-back", "leak-fd"),
    cond("no-pileup", "not-back", "leak-stacks"),
    cond("sigpipe", "died-on-reset", "sigpipe"),
    cond("sigpipe", "died-on-close", "sigpipe-once"),
    cond("sigpipe", "not-answering", "epipe-deadlock"),
    cond("exit-status", "clean-unanswered", "exit-at-once"),
    cond("exit-status", "clean-nonzero", "exit-nonzero"),
    cond("exit-status", "cut-no-exit", "uncuttable-sleep"),
    cond("exit-status", "cut-zero", "exit-zero"),
    cond("handshake", "refused", "skip-backlog"),
    cond("handshake", "refused", "no-handshake-wait"),
    cond("handshake", "not-fin", "reset-last"),
    # Taken in at the drain, then reset: its request meets the RST.
    cond("handshake", "unanswered", "reset-backlog"),
    cond("handshake", "no-exit", "hang-at-exit"),
    # The first check starts, the second cannot.
    cond("run", "not-started", "start-once", only=["conn-close", "pipelined"]),
    # The check's first connect is refused, where it expects none.
    cond("run", "client-error", "early-ready", only=["partial-request"], options=READY_LINE),
]


def fail_conditions_in_source():
    """{(where, reason)} of every failed() call in gracecheck.py, where is
    the check its function implements (or the function's own name)."""
    spec = importlib.util.spec_from_file_location("gracecheck_module", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {f.__name__: n for n, f in module.CHECKS}
    found, calls = set(), 0
    for fn in ast.walk(ast.parse(open(TOOL).read())):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "failed":
                calls += 1
                code = node.args[0] if node.args else None
                assert isinstance(code, ast.Constant) and isinstance(code.value, str), \
                    f"a failed() call in {fn.name} (line {node.lineno}) names no literal reason"
                assert (names.get(fn.name, fn.name), code.value) not in found, \
                    f"{fn.name}: reason {code.value} names two failed() calls"
                found.add((names.get(fn.name, fn.name), code.value))
    # ... and no FAIL is made without failed(): its own is the one Outcome("FAIL").
    fails = [n for n in ast.walk(ast.parse(open(TOOL).read()))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Outcome"
             and n.args and getattr(n.args[0], "value", None) == "FAIL"]
    assert calls and len(fails) == 1
    return found


def test_every_fail_condition_has_a_flaw():
    """The per-condition coverage: every failed() in gracecheck.py, by its
    reason, is in FAIL_CONDITIONS, and nothing else is."""
    listed = {(c.where, c.reason) for c in FAIL_CONDITIONS}
    assert listed == fail_conditions_in_source()


def test_every_check_and_every_flaw_is_used():
    assert {c.where for c in FAIL_CONDITIONS} == set(ALL_CHECKS) | {"run"}
    spec = importlib.util.spec_from_file_location("flawed_server", FIXTURE)
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    assert {f for c in FAIL_CONDITIONS for f in c.flaws} == set(fx.FLAWS)


@pytest.mark.slow(3)
@fixture_test
@pytest.mark.parametrize("c", FAIL_CONDITIONS,
                         ids=[f"{c.where}:{c.reason}:{'+'.join(c.flaws)}"
                              + (f":grace{c.grace:g}" if c.grace != 1 else "")
                              for c in FAIL_CONDITIONS])
def test_flaw_fails_its_check_through_its_condition(tmp_path, c):
    """Also: whatever the flaw, hanging servers included, the tool leaves
    no process behind."""
    pidfile = tmp_path / "pids"
    proc, results = gracecheck(
        tmp_path, [*SLOW, "--grace", str(c.grace), "--repeat", "2", "--only", ",".join(c.only),
                   *c.options],
        fixture(*c.flaws, grace=c.grace, pidfile=pidfile), bounds=c.bounds)
    shows = results.get(c.only[-1], {})
    assert shows.get("result") == "FAIL", proc.stdout + proc.stderr
    assert shows["reason"] == c.reason, proc.stdout
    assert shows["figure"], proc.stdout
    assert proc.returncode == 1
    pids = pids_in(pidfile)
    assert pids and wait_until(lambda: not any(alive(p) for p in pids), 5.0)


@fixture_test
def test_checks_needing_slow_work_say_na_without_slow(tmp_path):
    needs = ["refuse-new", "in-flight", "conn-close", "pipelined", "deadline",
             "second-signal", "exit-status"]
    proc, results = gracecheck(tmp_path, ["--only", ",".join(needs)], fixture())
    assert {n: r["result"] for n, r in results.items()} == {n: "n/a" for n in needs}
    assert "needs --slow" in results["in-flight"]["figure"]
    assert proc.returncode == 0


# --------------------------------------------------------------------------
# the tool never leaves a process behind

@pytest.mark.slow(5)
@fixture_test
def test_a_hanging_server_is_killed_within_the_bound(tmp_path):
    """A server that ignores the signal fails idle-exit as a hang: it is
    killed after the stated bound, not waited for."""
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    _, results = gracecheck(tmp_path, ["--only", "idle-exit"],
                            fixture("ignore-signal", pidfile=pidfile))
    assert "no exit within 5 s" in results["idle-exit"]["figure"]
    assert time.monotonic() - started < 30
    assert not any(alive(p) for p in pids_in(pidfile))


@fixture_test
def test_children_of_the_server_are_killed(tmp_path):
    """A process the server forked (an nginx worker, say) stays in its group
    and dies with it, even when the server itself exits cleanly."""
    pidfile = tmp_path / "pids"
    command = ["sh", "-c", f"sleep 300 & echo $! >> {pidfile}; exec \"$@\"", "sh",
               *fixture(pidfile=pidfile)]
    proc, results = gracecheck(tmp_path, ["--only", "idle-exit", "--repeat", "1"], command)
    assert results["idle-exit"]["result"] == "PASS", proc.stdout + proc.stderr
    pids = pids_in(pidfile)
    assert len(pids) == 2
    assert wait_until(lambda: not any(alive(p) for p in pids), 5.0)


@fixture_test
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_tool_kills_the_server(tmp_path, sig):
    """Ctrl+C (or SIGTERM) of the tool while a hanging server runs."""
    pidfile = tmp_path / "pids"
    # A tool started from a terminal has SIGINT's default action; a suite run
    # as a background job (`make test &`, nohup) would hand it SIGINT ignored,
    # and Python then leaves it ignored.
    tool = subprocess.Popen([PY, TOOL, *SLOW, "--only", "second-signal", "--",
                             *fixture("ignore-second", pidfile=pidfile)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_until(lambda: pids_in(pidfile), 15.0)
        server_pid = pids_in(pidfile)[0]
        assert alive(server_pid)
        tool.send_signal(sig)
        _, err = tool.communicate(timeout=15)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert tool.returncode == 130, err
    assert "interrupted" in err
    assert wait_until(lambda: not alive(server_pid), 5.0)


# --------------------------------------------------------------------------
# the command line

def test_list_names_the_checks_in_order():
    proc = subprocess.run([PY, TOOL, "--list"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ALL_CHECKS


@pytest.mark.parametrize("args,message", [
    ([], "no server command"),
    (["--signal", "HUP", "--", "x", "{port}"], "--signal"),
    (["--slow", "/sleep", "--", "x", "{port}"], "{ms}"),
    (["--only", "nosuch", "--", "x", "{port}"], "no check named nosuch"),
    (["--repeat", "0", "--", "x", "{port}"], "--repeat"),
    (["--", "x"], "{port}"),
    (["--bogus", "--", "x", "{port}"], "unrecognized"),
])
def test_usage_errors_exit_2_with_one_line(args, message):
    proc = subprocess.run([PY, TOOL, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_ready_line_waits_for_the_servers_own_word(tmp_path):
    """With --ready-line, readiness is the server's log line, not the port:
    ./server prints it once it listens."""
    require_binary()
    proc, results = gracecheck(
        tmp_path, ["--ready-line", "listening on", "--only", "idle-exit", "--repeat", "1"],
        [SERVER_BIN, "--port", "{port}", "--data-dir", "{dir}"])
    assert results["idle-exit"]["result"] == "PASS", proc.stdout + proc.stderr


def test_a_command_that_never_gets_ready_exits_2(tmp_path):
    proc, _ = gracecheck(tmp_path, [], ["sh", "-c", "echo no such server >&2; exit 3", "{port}"])
    assert proc.returncode == 2
    assert "did not start" in proc.stderr and "status 3" in proc.stderr


@fixture_test
def test_json_has_the_documented_shape(tmp_path):
    proc, _ = gracecheck(tmp_path, ["--only", "idle-exit,sigpipe", "--repeat", "1"], fixture())
    doc = json.loads((tmp_path / "gracecheck.json").read_text())
    assert doc["command"] == fixture()
    assert [c["name"] for c in doc["checks"]] == ["idle-exit", "sigpipe"]
    for c in doc["checks"]:
        assert set(c) == {"name", "result", "reason", "figure", "detail"}
        assert c["result"] == "PASS" and c["reason"] == ""
    assert proc.returncode == 0


# --------------------------------------------------------------------------
# The survey's options (issue 20): how real servers start, signal and report.
# Each test runs the tool both ways where it can, so that it can fail: a
# stand-in whose port accepts long before it is ready fails idle-exit unless
# the tool waits for the readiness the option names.

SLOW_START = str(REPO / "tests" / "gracecheck_fixtures" / "slow_start.py")
ONE_IDLE_EXIT = ["--only", "idle-exit", "--repeat", "1"]


def slow_start(*args):
    return [PY, SLOW_START, "{port}", *args]


@pytest.mark.parametrize("options,stand_in,result", [
    ([], [], "FAIL"),                              # the open port is not readiness
    (["--ready-http", "/"], [], "PASS"),
    (["--ready-line", "^ready$"], [], "PASS"),     # on stdout, not stderr
    (["--log", "{dir}/server.log", "--ready-line", "ready in log"],
     ["--log", "{dir}/server.log"], "PASS"),
])
def test_readiness_options_wait_for_a_server_whose_port_opens_early(tmp_path, options, stand_in, result):
    proc, results = gracecheck(tmp_path, ONE_IDLE_EXIT + options, slow_start(*stand_in))
    assert results["idle-exit"]["result"] == result, proc.stdout + proc.stderr
    if result == "FAIL":
        assert "killed by SIGINT" in results["idle-exit"]["figure"]


@pytest.mark.parametrize("name", ["USR1", "WINCH"])
def test_signal_accepts_the_graceful_stops_of_haproxy_and_apache(tmp_path, name):
    options = ONE_IDLE_EXIT + ["--ready-line", "^ready$"]
    proc, results = gracecheck(tmp_path, options + ["--signal", name],
                               slow_start("--stop-signal", name))
    assert results["idle-exit"]["result"] == "PASS", proc.stdout + proc.stderr
    assert json.loads((tmp_path / "gracecheck.json").read_text())["signal"] == "SIG" + name
    # the same server, sent the default INT, dies of it
    proc, results = gracecheck(tmp_path, options, slow_start("--stop-signal", name))
    assert results["idle-exit"]["result"] == "FAIL", proc.stdout + proc.stderr


# A launcher that runs the server as its child and waits, as Debian's
# apache2ctl does: the leader is a shell that a stop signal would kill.
LAUNCHER = ['sh', '-c', '"$0" "$1" "$2" --grace 1 --pidfile "$3/server.pid" & wait',
            PY, FIXTURE, "{port}", "{dir}"]


@fixture_test
def test_pid_file_sends_the_signal_to_the_server_not_its_launcher(tmp_path):
    proc, results = gracecheck(tmp_path, ONE_IDLE_EXIT + ["--pid-file", "{dir}/server.pid"], LAUNCHER)
    assert results["idle-exit"]["result"] == "PASS", proc.stdout + proc.stderr
    proc, results = gracecheck(tmp_path, ONE_IDLE_EXIT, LAUNCHER)
    assert results["idle-exit"]["result"] == "FAIL", proc.stdout + proc.stderr
    assert "killed by SIGINT" in results["idle-exit"]["figure"]


@fixture_test
def test_a_signal_ignored_when_the_tool_starts_is_not_ignored_by_its_servers(tmp_path):
    """gracecheck run with SIGINT ignored, as a shell's `gracecheck ... &`
    does.  Ignored stays ignored across exec, and sh keeps it so: the
    launcher would sit out the signal and the tool report a hang that is
    its own.  The tool gives its servers the default back: the launcher
    dies of SIGINT."""
    tool = [PY, TOOL, "--json", str(tmp_path / "gracecheck.json"), *ONE_IDLE_EXIT, "--",
            *LAUNCHER]
    proc = subprocess.run(["sh", "-c", 'trap "" INT; exec "$@"', "sh", *tool],
                          capture_output=True, text=True, timeout=120)
    results = {c["name"]: c for c in
               json.loads((tmp_path / "gracecheck.json").read_text())["checks"]}
    assert "killed by SIGINT" in results["idle-exit"]["figure"], proc.stdout + proc.stderr


def test_pid_file_naming_a_process_outside_the_group_is_never_signalled(tmp_path):
    """A stale PID file could name anyone: PID 1 here.  The tool refuses to
    call the server ready (exit 2) rather than signal it."""
    command = ["sh", "-c", 'echo 1 > "$1/server.pid"; exec "$0" "$2" "$3"',
               PY, "{dir}", SLOW_START, "{port}"]
    proc, _ = gracecheck(tmp_path, ONE_IDLE_EXIT + ["--pid-file", "{dir}/server.pid"], command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "PID 1 in" in proc.stderr and "not a process the command started" in proc.stderr


@fixture_test
def test_render_writes_the_configuration_into_dir_with_port_and_dir_filled_in(tmp_path):
    template = tmp_path / "port.conf"
    template.write_text("{port}\n{dir}\nevents { worker_connections 8; }\n")
    # the server starts only if line 2 is its {dir} and other braces are kept
    command = ["sh", "-c",
               'test "$(sed -n 2p "$1/port.conf")" = "$1" || exit 9; '
               'test "$(sed -n 3p "$1/port.conf")" = "events { worker_connections 8; }" || exit 9; '
               'exec "$0" "$2" "$(head -1 "$1/port.conf")"',
               PY, "{dir}", FIXTURE]
    proc, results = gracecheck(tmp_path, ONE_IDLE_EXIT + ["--render", str(template)], command)
    assert results["idle-exit"]["result"] == "PASS", proc.stdout + proc.stderr
    # without the template nothing names {port}: a usage error
    proc, _ = gracecheck(tmp_path, ONE_IDLE_EXIT, command)
    assert proc.returncode == 2 and "{port}" in proc.stderr
    proc, _ = gracecheck(tmp_path, ONE_IDLE_EXIT + ["--render", str(tmp_path / "nosuch")], command)
    assert proc.returncode == 2 and "--render: no file" in proc.stderr


def test_a_connect_reset_before_it_returns_counts_as_refused_not_hung():
    """refuse-new's verdict on a failed connect (connect_error_kind).  A
    closing listener can reset a handshake its kernel had already answered:
    connect() then fails with ECONNRESET after a fraction of a millisecond
    (seen against Go's Shutdown, 1 run in 20).  Nothing was sent, so it is a
    refusal; gracecheck once called it "hung for 2 s".  A real refusal and a
    real hang (a listener whose SYNs are dropped) are classified from real
    connects; the reset, which no test can time, from its exception."""
    sys.path.insert(0, os.path.join(REPO, "gracecheck"))
    from gracecheck import attach_drop_syn, connect_error_kind
    import socket

    with socket.socket() as closed:        # a port with no listener: refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(OSError) as refused:
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()
    assert connect_error_kind(refused.value) == "refused"

    with socket.socket() as listener:      # SYNs dropped: the connect hangs
        listener.bind(("127.0.0.1", 0))
        attach_drop_syn(listener)
        listener.listen(8)
        with pytest.raises(OSError) as hung:
            socket.create_connection(listener.getsockname(), timeout=0.3).close()
    assert connect_error_kind(hung.value) == "hung"

    assert connect_error_kind(ConnectionResetError(104, "Connection reset by peer")) == "refused"
    assert connect_error_kind(OSError(99, "Cannot assign requested address")) == "other"
