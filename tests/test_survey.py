"""gracecheck/survey.py (`make gracecheck-survey`): what it does with a
server that is not installed, with a run that outlives its bound, and what
--verify then says.  Both use servers every machine has: the survey's
Python ThreadingHTTPServer row, and its HAProxy row with haproxy kept off
PATH."""

import json
import os
import subprocess
import time

from conftest import REPO

SURVEY = os.path.join(REPO, "gracecheck", "survey.py")
PYTHON = "/usr/bin/python3"


def survey(tmp_path, *args, env=None, timeout=120):
    return subprocess.run([PYTHON, SURVEY, "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_a_server_not_installed_is_skipped_and_said_why(tmp_path):
    """haproxy off PATH: the row is skipped, the output and survey.json say
    why and which package installs it, nothing is run, and the survey
    succeeds (a machine has what it has), with --verify too."""
    env = dict(os.environ, PATH=str(tmp_path))      # an empty directory
    proc = survey(tmp_path, "--verify", "haproxy", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== haproxy: skipped, haproxy not found (apt-get install haproxy)" in proc.stdout
    assert "0 servers ran, 1 skipped" in proc.stdout
    doc = json.loads((tmp_path / "out" / "survey.json").read_text())
    (row,) = doc["servers"]
    assert row["name"] == "haproxy"
    assert row["skipped"] == "haproxy not found (apt-get install haproxy)"
    assert "results" not in row
    assert not (tmp_path / "out" / "haproxy.json").exists()


def test_a_run_stopped_at_its_bound_fails_verify_naming_the_checks_without_a_verdict(tmp_path):
    """--bound 4: the run of the server is stopped 4 s in, with most of its
    checks still to come.  The table keeps the verdicts it has; --verify
    exits 1 and names the checks that have none; without --verify the same
    run exits 0."""
    started = time.monotonic()
    proc = survey(tmp_path, "--verify", "--bound", "4", "python-threading")
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "== python-threading: stopped at the 4 s bound" in proc.stdout
    assert "survey: python-threading: no verdict for " in proc.stderr
    missing = proc.stderr.split("no verdict for ", 1)[1].split(" (gracecheck status")[0].split(", ")
    assert "handshake" in missing            # the last check never ran
    assert took < 4 + 60, took               # terminate, then at most gracecheck's own clean-up
    doc = json.loads((tmp_path / "out" / "survey.json").read_text())
    (row,) = doc["servers"]
    assert len(row["results"]) + len(missing) == len(doc["checks"])
    assert all(c["result"] in ("PASS", "FAIL", "n/a") for c in row["results"])

    again = survey(tmp_path, "--bound", "4", "python-threading")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no verdict for" in again.stderr      # said all the same
