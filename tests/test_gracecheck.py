"""gracecheck (gracecheck/gracecheck.py): it passes a good server, and every
one of its checks fails a server with the hole that check looks for.

The flawed servers are one small Python server, tests/gracecheck_fixtures/
flawed_server.py, that passes every check as it is and has one known hole
per --flaw.  So a check that fails here fails because of that one hole.
Each test runs only the checks it needs, to keep the suite short.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, SERVER_BIN, require_binary, wait_until

TOOL = str(REPO / "gracecheck" / "gracecheck.py")
FIXTURE = str(REPO / "tests" / "gracecheck_fixtures" / "flawed_server.py")
PY = sys.executable
SLOW = ["--slow", "/sleep?ms={ms}"]
ALL_CHECKS = ["idle-exit", "signal-race", "refuse-new", "in-flight", "conn-close",
              "idle-keepalive", "partial-request", "pipelined", "backlog", "deadline",
              "second-signal", "under-load", "no-pileup", "sigpipe", "exit-status",
              "handshake"]


# The fixture tests do not run ./server: under `make asan` or `make tsan`
# (SERVER_BIN set to another build) they would only repeat the plain run.
fixture_test = pytest.mark.skipif(
    os.path.realpath(SERVER_BIN) != os.path.realpath(REPO / "server"),
    reason="fixture-only test: the plain `make test` run covers it")


def gracecheck(tmp_path, options, command, timeout=300):
    """Run the tool to completion: (CompletedProcess, {check name: result})."""
    out = tmp_path / "gracecheck.json"
    args = [PY, TOOL, "--json", str(out), *options, "--", *command]
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
    cmd = [PY, FIXTURE, "{port}", "--grace", str(grace)]
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

FLAW_FAILS = [
    ("textbook-accept", ["idle-exit"]),
    ("startup-window", ["signal-race"]),
    ("keep-listening", ["refuse-new"]),
    ("exit-at-once", ["in-flight", "second-signal", "exit-status"]),
    ("no-close-header", ["conn-close"]),
    ("reset-idle", ["idle-keepalive"]),
    ("close-unread", ["under-load"]),
    ("idle-holds", ["idle-keepalive"]),
    ("drop-partial", ["partial-request"]),
    ("drop-pipelined", ["pipelined"]),
    ("skip-backlog", ["backlog", "handshake"]),
    ("no-handshake-wait", ["handshake"]),
    ("no-deadline", ["deadline"]),
    ("ignore-second", ["second-signal"]),
    ("exit-zero", ["deadline", "exit-status"]),
    ("leak-fd", ["no-pileup"]),
    ("leak-stacks", ["no-pileup"]),
    ("sigpipe", ["sigpipe"]),
    ("sigpipe-once", ["sigpipe"]),
]


def test_every_check_has_a_flaw_that_fails_it():
    covered = {check for _, checks in FLAW_FAILS for check in checks}
    assert covered == set(ALL_CHECKS)


@pytest.mark.slow(3)
@fixture_test
@pytest.mark.parametrize("flaw,checks", FLAW_FAILS, ids=[f for f, _ in FLAW_FAILS])
def test_flaw_fails_its_checks(tmp_path, flaw, checks):
    """Also: whatever the flaw, hanging servers included, the tool leaves
    no process behind."""
    pidfile = tmp_path / "pids"
    proc, results = gracecheck(
        tmp_path, [*SLOW, "--grace", "1", "--repeat", "2", "--only", ",".join(checks)],
        fixture(flaw, pidfile=pidfile))
    assert sorted(results) == sorted(checks), proc.stdout + proc.stderr
    for check in checks:
        assert results[check]["result"] == "FAIL", proc.stdout
        assert results[check]["figure"], proc.stdout
    assert proc.returncode == 1
    pids = pids_in(pidfile)
    assert pids and not any(alive(p) for p in pids)


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
        assert set(c) == {"name", "result", "figure", "detail"}
        assert c["result"] == "PASS"
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
