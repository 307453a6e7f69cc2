#!/usr/bin/env python3
"""A mutation sweep that runs itself: small bugs made by rule, not by hand.

The patches beside this file take out the fixes someone thought to claim.
This takes the C code apart by a handful of operators, one change at a
time, and asks the fastest tests that can see each change whether they do:

    flip      a comparison: < <= > >= == != each become a neighbour
    negate    the condition of an if or while: (c) becomes (!(c))
    drop      a statement that is one call or assignment
    constant  an integer constant, one more or one less

Each mutant is built in a copy of the tree; one that does not build (the
compiler's -Werror catches it) is *stillborn* and counts neither way.  The
others run their target's tests: a failure or a time-out kills the mutant,
a pass lets it *survive*.  A survivor is a behaviour no test looks at, or an
*equivalent* mutant (the same program, written otherwise): the ones we have
judged equivalent are listed in EQUIVALENT below, each with the reason,
and count as killed by reading.

    tests/mutants/sweep.py                      every mutant of every target
    tests/mutants/sweep.py --sample 40 --seed 1 40 of them, picked with seed 1
    tests/mutants/sweep.py --target http --list the mutants, without running

Prints a table of survivors, and per target the rate killed; exits 1 when a
target's rate is below its floor (--min-rate, 90 %), 2 on a usage error.
docs/mutation-sweep.md has the figures of a full run.
"""

import argparse
import concurrent.futures
import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")


@dataclasses.dataclass
class Target:
    name: str
    files: list         # the C files mutated, relative to the repository
    functions: tuple    # only lines inside these functions (empty: all)
    build: list         # the command that builds what the tests need
    tests: list         # the command whose failure kills the mutant
    timeout: float      # seconds the tests may take before the mutant counts as killed


TARGETS = {
    # The socket-free protocol code and its in-process unit test: a
    # mutant is built and judged in a fraction of a second.
    "http": Target(
        "http", sorted(str(p.relative_to(REPO)) for p in (REPO / "http").glob("*.c")
                       if p.name != "test.c"),
        (), ["make", "-s", "http/test", "CFLAGS=-O0 -g0"], ["./http/test"], 10),
    # The shutdown path of the process: its phases and the signal plumbing
    # they rest on, judged by the tests of the shutdown sequence and its
    # races (on pytest-xdist workers, stopping at the first failure).
    "shutdown": Target(
        "shutdown", ["server.c", "process/signals.c"],
        ("main", "cutting_signal", "is_cutting_signal", "reap_finished", "live_count",
         "serve", "take_in_backlog", "stop_accepting", "begin_drain",
         "wait_for_connections", "cut_remaining", "join_remaining",
         "on_shutdown_signal", "signals_install", "signals_let_pending_in",
         "signals_shutdown_count"),
        ["make", "-s", "server", "server-race", "CFLAGS=-O1 -g0"],
        [PYTHON, "-m", "pytest", "-q", "-x", "-n", "4", "-p", "no:cacheprovider",
         "tests/test_shutdown.py", "tests/test_race.py"], 300),
}

# Mutants judged equivalent after reading: (file, line text stripped,
# operator, replacement) -> why the program is the same.  Line numbers move;
# the text of the line does not, unless the code changes, and then the
# mutant must be judged again.
EQUIVALENT = {}

COMPARISONS = {"<": ["<="], "<=": ["<"], ">": [">="], ">=": [">"], "==": ["!="], "!=": ["=="]}


@dataclasses.dataclass
class Mutant:
    target: str
    path: str
    line: int           # 1-based
    operator: str
    original: str       # the whole line before
    mutated: str        # the whole line after
    status: str = ""    # killed, SURVIVED, stillborn, equivalent
    seconds: float = 0.0

    @property
    def key(self):
        return (self.path, self.original.strip(), self.operator, self.mutated.strip())

    def describe(self):
        return f"{self.path}:{self.line} {self.operator}: {self.original.strip()}  ->  {self.mutated.strip()}"


def code_lines(text):
    """Each line with its comments and string/char literals blanked (same
    length, so columns still match), and whether it is a preprocessor line."""
    out, in_comment = [], False
    for raw in text.split("\n"):
        line, i, buf = raw, 0, []
        while i < len(line):
            if in_comment:
                end = line.find("*/", i)
                if end < 0:
                    buf.append(" " * (len(line) - i))
                    i = len(line)
                else:
                    buf.append(" " * (end + 2 - i))
                    i = end + 2
                    in_comment = False
            elif line.startswith("/*", i):
                in_comment = True
            elif line.startswith("//", i):
                buf.append(" " * (len(line) - i))
                i = len(line)
            elif line[i] in "\"'":
                q, j = line[i], i + 1
                while j < len(line) and line[j] != q:
                    j += 2 if line[j] == "\\" else 1
                buf.append(q + " " * (min(j, len(line)) - i - 1) + (q if j < len(line) else ""))
                i = j + 1
            else:
                buf.append(line[i])
                i += 1
        code = "".join(buf)[:len(raw)].ljust(len(raw))
        out.append((code, raw.lstrip().startswith("#")))
    return out


def function_ranges(codes):
    """{function name: (first line, last line)} for top-level definitions
    (0-based), found as a line starting a name( at column 0 and its braces."""
    ranges, depth, current, start = {}, 0, None, 0
    for n, (code, pre) in enumerate(codes):
        if pre:
            continue
        if depth == 0:
            m = re.match(r"(?:static\s+|inline\s+)*[A-Za-z_][\w\s\*]*?\b(\w+)\s*\(", code)
            if m and not code.rstrip().endswith(";"):
                current, start = m.group(1), n
        depth += code.count("{") - code.count("}")
        if depth == 0 and current and "}" in code:
            ranges[current] = (start, n)
            current = None
    return ranges


def mutants_of(target, path):
    text = (REPO / path).read_text()
    lines = text.split("\n")
    codes = code_lines(text)
    ranges = function_ranges(codes)
    if target.functions:
        wanted = [ranges[f] for f in target.functions if f in ranges]
        inside = lambda n: any(a < n <= b for a, b in wanted)     # noqa: E731
    else:
        inside = lambda n: any(a < n <= b for a, b in ranges.values())  # noqa: E731
    out = []
    for n, (code, pre) in enumerate(codes):
        if pre or not inside(n):
            continue
        raw = lines[n]

        def add(op, start, end, new):
            out.append(Mutant(target.name, path, n + 1, op, raw, raw[:start] + new + raw[end:]))

        for m in re.finditer(r"(?<![<>=!&|+\-*/%^])(<=|>=|==|!=|<|>)(?![<>=])", code):
            if m.group(1) in ("<", ">") and re.search(r"->\s*$", code[:m.end()]):
                continue
            # "<" and ">" right after an include or inside a cast are not comparisons
            for new in COMPARISONS[m.group(1)]:
                add("flip", m.start(), m.end(), new)
        for m in re.finditer(r"\b(if|while)\s*\(", code):
            open_at = m.end() - 1
            depth, j = 0, open_at
            while j < len(code):
                depth += (code[j] == "(") - (code[j] == ")")
                if depth == 0:
                    break
                j += 1
            if j < len(code):
                add("negate", open_at + 1, j, "!(" + raw[open_at + 1:j] + ")")
        stripped = code.strip()
        if (re.fullmatch(r"[\w\.\->\[\]\*\(\)&]+\s*(\(.*\)|[+\-*/|&]?=\s*[^=].*|\+\+|--);", stripped)
                and not re.match(r"(return|break|continue|goto)\b", stripped)
                and not re.match(r"[A-Za-z_]\w*\s+[\*\w]", stripped)):      # a declaration
            indent = len(raw) - len(raw.lstrip())
            out.append(Mutant(target.name, path, n + 1, "drop", raw, raw[:indent] + ";"))
        for m in re.finditer(r"(?<![\w.])(\d+)(?![\w.])", code):
            value = int(m.group(1))
            for new in (value + 1, value - 1):
                if new >= 0:
                    add("constant", m.start(), m.end(), str(new))
    return out


def all_mutants(names):
    out = []
    for name in names:
        t = TARGETS[name]
        for path in t.files:
            out += mutants_of(t, path)
    return out


def copy_tree(dest):
    """The tracked files of the repository (and untracked, unignored ones)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           stdout=subprocess.PIPE, check=True, text=True).stdout.split("\n")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def judge(mutant, tree):
    """Build and test one mutant in tree (a copy of the repository)."""
    t = TARGETS[mutant.target]
    path = tree / mutant.path
    original = path.read_text()
    lines = original.split("\n")
    assert lines[mutant.line - 1] == mutant.original, mutant.describe()
    lines[mutant.line - 1] = mutant.mutated
    path.write_text("\n".join(lines))
    started = time.monotonic()
    try:
        if subprocess.run(t.build, cwd=tree, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            return "stillborn", time.monotonic() - started
        try:
            rc = subprocess.run(t.tests, cwd=tree, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=t.timeout,
                                env={**os.environ, "SERVER_BIN": str(tree / "server"),
                                     "SERVER_RACE_BIN": str(tree / "server-race")}).returncode
        except subprocess.TimeoutExpired:
            return "killed", time.monotonic() - started
        return ("killed" if rc != 0 else "SURVIVED"), time.monotonic() - started
    finally:
        path.write_text(original)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", action="append", choices=sorted(TARGETS),
                   help="only this target (may be given twice); default: all")
    p.add_argument("--sample", type=int, metavar="N", help="only N mutants, picked at random")
    p.add_argument("--seed", type=int, default=1, help="the seed --sample picks with (default 1)")
    p.add_argument("--jobs", "-j", type=int, default=2, help="mutants judged at once (default 2)")
    p.add_argument("--min-rate", type=float, default=90.0,
                   help="exit 1 if a target kills fewer than this %% (default 90)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = p.parse_args()

    names = args.target or sorted(TARGETS)
    for name in names:
        missing = [f for f in TARGETS[name].files if not (REPO / f).exists()]
        if missing or not TARGETS[name].files:
            print(f"sweep: target {name}: missing {', '.join(missing) or 'its files'}",
                  file=sys.stderr)
            return 2
    mutants = all_mutants(names)
    if args.sample is not None:
        if args.sample < 1:
            p.error("--sample takes a whole number from 1")
        mutants = sorted(random.Random(args.seed).sample(mutants, min(args.sample, len(mutants))),
                         key=lambda m: (m.path, m.line))
    if args.list:
        for m in mutants:
            print(m.describe())
        print(f"sweep: {len(mutants)} mutants")
        return 0

    for m in mutants:
        if m.key in EQUIVALENT:
            m.status = "equivalent"
    todo = [m for m in mutants if not m.status]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        trees = []
        for i in range(max(1, args.jobs)):
            tree = Path(tmp) / f"tree{i}"
            tree.mkdir()
            copy_tree(tree)
            trees.append(tree)
        free = list(trees)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(trees)) as pool:
            pending = {}
            queue = list(todo)
            while queue or pending:
                while queue and free:
                    m = queue.pop(0)
                    tree = free.pop()
                    pending[pool.submit(judge, m, tree)] = (m, tree)
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for f in done:
                    m, tree = pending.pop(f)
                    m.status, m.seconds = f.result()
                    free.append(tree)
                    if m.status == "SURVIVED":
                        print(f"SURVIVED {m.describe()}", flush=True)

    failed = False
    for name in names:
        ms = [m for m in mutants if m.target == name]
        judged = [m for m in ms if m.status != "stillborn"]
        killed = [m for m in judged if m.status in ("killed", "equivalent")]
        rate = 100.0 * len(killed) / len(judged) if judged else 100.0
        print(f"sweep: {name}: {len(killed)} of {len(judged)} killed ({rate:.1f} %); "
              f"{sum(m.status == 'equivalent' for m in ms)} of them equivalent by reading, "
              f"{len(ms) - len(judged)} stillborn")
        failed |= rate < args.min_rate
    print(f"sweep: {len(mutants)} mutants in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
