#!/usr/bin/env python3
"""Take each fix out again and check that the tests claiming it fail.

For every tests/mutants/NN-name.patch: copy the tree to a temporary
directory, apply the patch (a patch that no longer applies fails the run,
naming the patch), build ./server and ./server-race there, and run only the
tests named on the patch's `# kills:` lines.  Every one of them must fail.
First, the same tests run once on the unmodified tree, where every one must
pass: a test that always fails would "kill" anything.

    tests/mutants/run.py                 all mutants, four at a time
    tests/mutants/run.py -j1 04 step2    only the patches whose name contains 04 or step2
    tests/mutants/run.py --keep          keep the temporary trees

Prints a table (mutant, the tests that killed it, seconds taken) and exits
1 if any mutant survived, did not apply or did not build.  See README.md here.
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
# -O1 builds faster than the default -O2 and keeps the same code paths.
BUILD = ["make", "-s", "server", "server-race", "CFLAGS=-O1 -g0"]
BASELINE_WORKERS = 8
TEST_TIMEOUT = 300      # seconds for one mutant's tests; they have their own
                        # timeouts, this only stops a runaway


class Mutant:
    def __init__(self, path):
        self.path = path
        self.name = path.stem
        self.what = ""
        self.kills = []
        for line in path.read_text().splitlines():
            if line.startswith(("diff ", "--- ")):
                break
            m = re.match(r"#\s*kills:\s*(.+)", line)
            if m:
                self.kills += m.group(1).split()
            m = re.match(r"#\s*what:\s*(.+)", line)
            if m:
                self.what += (" " if self.what else "") + m.group(1).strip()
        self.status = None      # killed, SURVIVED, DOES NOT APPLY, ...
        self.killed_by = []
        self.seconds = 0.0
        self.detail = ""


def tree_files():
    """The files of the tree as git sees them (tracked and new, not ignored);
    outside a git checkout, the sources and tests."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, capture_output=True,
                             check=True).stdout
        return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        keep = [p for p in REPO.glob("*") if p.suffix in (".c", ".h") or p.name == "Makefile"]
        keep += [p for d in ("process", "http") for p in (REPO / d).glob("*.[ch]")]
        keep += [p for p in (REPO / "tests").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        return [str(p.relative_to(REPO)) for p in keep]


def copy_tree(files, dest, src=REPO):
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f, target)


def clean_env():
    env = dict(os.environ)
    for var in ("SERVER_BIN", "SERVER_RACE_BIN", "GRACEFUL_TIME_SCALE"):
        env.pop(var, None)      # the tests must use the binaries built here
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_tests(tree, tests, workers=0):
    """Run pytest on the given test ids in tree, on that many xdist workers
    (0: in pytest's own process).  Returns (outcomes, output, seconds,
    timed_out) with outcomes: test id -> PASSED/FAILED/ERROR/..."""
    cmd = [PYTHON, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
           *(["-n", str(workers)] if workers else []), *tests]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tree, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)     # pytest and the servers it started
        output, _ = proc.communicate()
    seconds = time.monotonic() - t0
    outcomes = {}
    for line in output.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", line)
        if m:
            outcomes.setdefault(m.group(2), m.group(1))
    return outcomes, output, seconds, timed_out


def build(tree):
    p = subprocess.run(BUILD, cwd=tree, capture_output=True, text=True)
    return p.returncode == 0, p.stdout + p.stderr


def apply_patch(tree, patch):
    p = subprocess.run(["git", "apply", "--check", str(patch)], cwd=tree,
                       capture_output=True, text=True)
    if p.returncode == 0:
        p = subprocess.run(["git", "apply", str(patch)], cwd=tree,
                           capture_output=True, text=True)
    return p.returncode == 0, p.stderr


def outcome_of(test, outcomes):
    # pytest reports a parametrized id as given; a bare function name that
    # was parametrized is reported once per parameter.
    got = [o for t, o in outcomes.items() if t == test or t.startswith(test + "[")]
    return got


def run_mutant(m, files, workdir, keep):
    tree = Path(tempfile.mkdtemp(prefix=m.name + ".", dir=workdir))
    t0 = time.monotonic()
    try:
        copy_tree(files, tree, workdir / "snapshot")
        ok, err = apply_patch(tree, m.path)
        if not ok:
            m.status = "DOES NOT APPLY"
            m.detail = (f"tests/mutants/{m.path.name} no longer applies to the code:\n{err}"
                        f"Regenerate it: tests/mutants/README.md, 'When a patch no longer applies'.")
            return m
        ok, out = build(tree)
        if not ok:
            m.status = "DOES NOT BUILD"
            m.detail = f"tests/mutants/{m.path.name} applies but does not build:\n{out}"
            return m
        outcomes, output, seconds, timed_out = run_tests(tree, m.kills)
        m.seconds = time.monotonic() - t0
        survivors, missing = [], []
        for test in m.kills:
            got = outcome_of(test, outcomes)
            if not got and timed_out:
                m.killed_by.append(test + " (timed out)")
            elif not got:
                missing.append(test)
            elif all(o in ("FAILED", "ERROR") for o in got):
                m.killed_by.append(test)
            else:
                survivors.append(f"{test} ({', '.join(sorted(set(got)))})")
        if missing:
            m.status = "NOT RUN"
            m.detail = f"pytest did not run {missing}:\n{output[-3000:]}"
        elif survivors:
            m.status = "SURVIVED"
            m.detail = f"these tests pass with the fix taken out: {survivors}\n{output[-3000:]}"
        else:
            m.status = "killed"
        return m
    finally:
        m.seconds = time.monotonic() - t0
        if not keep:
            shutil.rmtree(tree, ignore_errors=True)


def baseline(mutants, files, workdir):
    """Every test named by a mutant must pass on the unmodified tree."""
    tests = sorted({t for m in mutants for t in m.kills})
    tree = workdir / "baseline"
    copy_tree(files, tree, workdir / "snapshot")
    ok, out = build(tree)
    if not ok:
        return False, f"the unmodified tree does not build:\n{out}"
    # Mostly waiting, like the suite: as many at once as `make test` runs.
    outcomes, output, seconds, _ = run_tests(tree, tests, workers=BASELINE_WORKERS)
    bad = []
    for test in tests:
        got = outcome_of(test, outcomes)
        if not got or any(o != "PASSED" for o in got):
            bad.append(f"{test}: {', '.join(got) or 'not run'}")
    if bad:
        return False, ("these tests do not pass on the unmodified tree, so failing "
                       "on a mutant would prove nothing:\n  " + "\n  ".join(bad)
                       + f"\n{output[-5000:]}")
    return True, f"{len(tests)} tests pass on the unmodified tree ({seconds:.1f} s)"


def print_table(mutants):
    rows = [("mutant", "killed by", "seconds")]
    for m in mutants:
        who = m.killed_by if m.status == "killed" else [m.status]
        rows.append((m.name, who[0], f"{m.seconds:.1f}"))
        for extra in who[1:]:
            rows.append(("", extra, ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"| {'mutant'.ljust(w0)} | {'killed by'.ljust(w1)} | seconds |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------:|")
    for r in rows[1:]:
        print(f"| {r[0].ljust(w0)} | {r[1].ljust(w1)} | {r[2].rjust(7)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="run only patches whose name contains one of these")
    ap.add_argument("-j", "--jobs", type=int, default=4,
                    help="mutants at once (default 4: their tests mostly wait)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary trees")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the tests on the unmodified tree first")
    args = ap.parse_args()

    mutants = [Mutant(p) for p in sorted(HERE.glob("[0-9][0-9]-*.patch"))]
    if args.only:
        mutants = [m for m in mutants if any(s in m.name for s in args.only)]
    if not mutants:
        print("no mutants selected", file=sys.stderr)
        return 1
    for m in mutants:
        if not m.kills:
            print(f"tests/mutants/{m.path.name}: no '# kills:' line", file=sys.stderr)
            return 1

    files = tree_files()
    workdir = Path(tempfile.mkdtemp(prefix="graceful-mutants."))
    if args.keep:
        print(f"trees kept in {workdir}")
    t0 = time.monotonic()
    try:
        # One snapshot of the tree as it is now: every mutant starts from it.
        copy_tree(files, workdir / "snapshot")
        if not args.no_baseline:
            ok, msg = baseline(mutants, files, workdir)
            print(("baseline: " if ok else "BASELINE FAILED: ") + msg, flush=True)
            if not ok:
                return 1
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_mutant, m, files, workdir, args.keep) for m in mutants]
            for f in concurrent.futures.as_completed(futures):
                m = f.result()
                print(f"{m.name}: {m.status} ({m.seconds:.1f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(mutants)
    failed = [m for m in mutants if m.status != "killed"]
    for m in failed:
        print(f"\n== {m.name}: {m.status}\n{m.detail}", file=sys.stderr)
    print(f"\n{len(mutants) - len(failed)} of {len(mutants)} mutants killed "
          f"in {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
