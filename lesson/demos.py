#!/usr/bin/env python3
"""lesson/demos.py: run every demo of the README's lesson, as typed and in
order, and check that each command prints what the README shows.

    demos.py [--readme README.md] [--list]

A demo is a ```console block just after a line `<!-- demo -->`.  In it, a
line that starts with "$ " is a command; the lines after it, up to the next
command, are what it must print (stdout and stderr together; blank lines
are ignored).  The commands of all the demos run in one bash, from the
repository's top directory, as a reader would type them into one terminal:
a demo that leaves a server behind breaks the next one here too.  The
stages must be built first (`make lesson-stages`; `make lesson` does).

A demo whose output differs is run once more, alone, in a fresh bash: the
demos start real servers and clients on a shared, noisy machine, and a few
wait for them with `sleep`.  If it differs again, the run fails and shows
both.  Exit 0 when every demo printed what the README says, 1 when one did
not, 2 for a usage error.
"""

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
MARK = "@@demo-command-{}@@"
TIMEOUT = 300       # seconds for all the demos; each is bounded on its own too


class Demo:
    def __init__(self, line, heading):
        self.line = line            # where it starts in the README
        self.heading = heading      # the section it belongs to
        self.commands = []          # [(command, [expected lines])]


def read_demos(path):
    demos, heading, demo, marked = [], "", None, False
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if demo is not None:
                if line.startswith("```"):
                    demos.append(demo)
                    demo = None
                elif line.startswith("$ "):
                    demo.commands.append((line[2:], []))
                elif not demo.commands:
                    raise ValueError(f"{path}:{n}: a demo must start with a command")
                elif line.strip():
                    demo.commands[-1][1].append(line.rstrip())
                continue
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            if marked and line.startswith("```console"):
                demo = Demo(n, heading)
            elif marked and line.strip():
                raise ValueError(f"{path}:{n}: <!-- demo --> must come just before a ```console block")
            marked = line.strip() == "<!-- demo -->"
    if demo is not None:
        raise ValueError(f"{path}:{demo.line}: a demo block is never closed")
    return demos


def run(demos, timeout):
    """Run the demos' commands in one bash; [[output lines of each command]]."""
    script = ["exec 2>&1"]
    index = []
    for d, demo in enumerate(demos):
        for c, (command, _) in enumerate(demo.commands):
            marker = MARK.format(f"{d}.{c}")
            script += [f"printf '\\n%s\\n' '{marker}'", command]
            index.append((d, c, marker))
    script.append(f"printf '\\n%s\\n' '{MARK.format('end')}'")
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=TOP, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, timeout=timeout)
    text = proc.stdout.decode(errors="replace")
    outputs = [[[] for _ in demo.commands] for demo in demos]
    current = None
    markers = {m: (d, c) for d, c, m in index}
    for line in text.splitlines():
        if line in markers:
            current = markers[line]
        elif line == MARK.format("end"):
            current = None
        elif current is not None and line.strip():
            outputs[current[0]][current[1]].append(line.rstrip())
    return outputs


def differences(demo, output):
    """What differs between a demo's expected and actual output, or []."""
    wrong = []
    for (command, want), got in zip(demo.commands, output):
        if want != got:
            wrong.append(f"    $ {command}\n      README: {want}\n      printed: {got}")
    return wrong


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default=os.path.join(TOP, "README.md"))
    p.add_argument("--list", action="store_true", help="list the demos and exit")
    args = p.parse_args()
    try:
        demos = read_demos(args.readme)
    except (OSError, ValueError) as e:
        print(f"demos: {e}", file=sys.stderr)
        return 2
    if not demos:
        print(f"demos: no <!-- demo --> block in {args.readme}", file=sys.stderr)
        return 1
    if args.list:
        for demo in demos:
            print(f"line {demo.line:4}  {demo.heading}: {len(demo.commands)} commands")
        return 0

    started = time.monotonic()
    try:
        outputs = run(demos, TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"demos: the demos did not finish within {TIMEOUT} s", file=sys.stderr)
        return 1
    failed = 0
    for demo, output in zip(demos, outputs):
        wrong = differences(demo, output)
        if not wrong:
            continue
        again = differences(demo, run([demo], 60)[0])
        where = f"{os.path.basename(args.readme)}:{demo.line} ({demo.heading})"
        if again:
            failed += 1
            print(f"demos: {where} printed something else, twice:\n" + "\n".join(wrong)
                  + "\n  and alone, in a fresh bash:\n" + "\n".join(again))
        else:
            print(f"demos: {where} differed, then passed alone in a fresh bash:\n"
                  + "\n".join(wrong))
    print(f"demos: {len(demos) - failed} of {len(demos)} demos printed what the README shows "
          f"({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
