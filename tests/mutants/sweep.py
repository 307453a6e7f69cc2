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
import signal
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
    # they rest on (and main, which also reads the command line, and serve,
    # which also runs a hot restart), judged by the tests of the shutdown
    # sequence, its races, the command line and hot restart (on
    # pytest-xdist workers, stopping at the first failure).
    "shutdown": Target(
        "shutdown", ["server.c", "process/signals.c"],
        ("main", "cutting_signal", "is_cutting_signal", "reap_finished", "live_count",
         "serve", "take_in_backlog", "stop_accepting", "begin_drain",
         "wait_for_connections", "cut_remaining", "join_remaining",
         "on_shutdown_signal", "signals_install", "signals_let_pending_in",
         "signals_shutdown_count"),
        ["make", "-s", "server", "server-race", "CFLAGS=-O1 -g0"],
        [PYTHON, "-m", "pytest", "-q", "-x", "-n", "4", "-p", "no:cacheprovider",
         "tests/test_shutdown.py", "tests/test_race.py", "tests/test_cli.py",
         "tests/test_restart.py"], 300),
}

# Mutants judged equivalent after reading: (file, line text stripped,
# operator, replacement) -> why the program is the same.  Line numbers move;
# the text of the line does not, unless the code changes, and then the
# mutant must be judged again.
EQUIVALENT = {
    # http/ (docs/mutation-sweep.md): judged by reading, each true for every input.
    ('http/chunked.c', 'd->max_body = max_body < 0 ? 0 : max_body;', 'constant', 'd->max_body = max_body < 1 ? 0 : max_body;'):
        'only max_body 0 is judged otherwise, and it gives 0 either way',
    ('http/chunked.c', 'd->max_body = max_body < 0 ? 0 : max_body;', 'flip', 'd->max_body = max_body <= 0 ? 0 : max_body;'):
        'only max_body 0 is judged otherwise, and it gives 0 either way',
    ('http/chunked.c', 'return -1;', 'constant', 'return -2;'):
        "hex_value's only caller tests digit >= 0",
    ('http/chunked.c', 'd->token_len = 1;       /* the quoted string was the token */', 'constant', 'd->token_len = 2;       /* the quoted string was the token */'):
        'chunk_token_end only tests token_len == 0, then zeroes it',
    ('http/chunked.c', '*used = 0;', 'constant', '*used = 1;'):
        'every return of http_chunked_decode sets *used = i first',
    ('http/chunked.c', '*used = 0;', 'drop', ';'):
        'every return of http_chunked_decode sets *used = i first',
    ('http/chunked.c', 'if (n > d->size)', 'flip', 'if (n >= d->size)'):
        'when n == size, n = size changes nothing',
    ('http/conditional.c', 'if (n <= u || strncasecmp(s, unit, u) != 0)', 'flip', 'if (n < u || strncasecmp(s, unit, u) != 0)'):
        'n == u leaves 0 bytes after "bytes=": memchr finds no \'-\', and it returns all the same',
    ('http/conditional.c', "cond->none_match[0] = '\\0';", 'constant', "cond->none_match[1] = '\\0';"):
        'none_match is read only when if_none_match, and then copy_value has written it',
    ('http/conditional.c', "cond->none_match[0] = '\\0';", 'drop', ';'):
        'none_match is read only when if_none_match, and then copy_value has written it',
    ('http/conditional.c', 'cond->if_modified_since = req->if_modified_since == NULL ? -1 :', 'constant', 'cond->if_modified_since = req->if_modified_since == NULL ? -2 :'):
        'if_modified_since is only compared >= 0',
    ('http/conditional.c', 'cond->first = 0;', 'constant', 'cond->first = 1;'):
        'first is read only when range is set, and then parse_range wrote it or suffix >= 0 takes the other branch',
    ('http/conditional.c', 'cond->first = 0;', 'drop', ';'):
        'first is read only when range is set, and then parse_range wrote it or suffix >= 0 takes the other branch',
    ('http/conditional.c', 'cond->last = -1;', 'constant', 'cond->last = -2;'):
        'last is only compared < 0 unless parse_range wrote it',
    ('http/conditional.c', 'cond->suffix = -1;', 'constant', 'cond->suffix = -2;'):
        'suffix is only compared >= 0 unless parse_range wrote it',
    ('http/conditional.c', "cond->range_tag[0] = '\\0';", 'constant', "cond->range_tag[1] = '\\0';"):
        'range_tag is only compared with an etag of 7+ bytes (http_format_etag always fits HTTP_ETAG_MAX): one stale byte equals it no more than "" does',
    ('http/conditional.c', 'cond->range_date = -1;', 'constant', 'cond->range_date = -2;'):
        'range_date is compared < 0 before anything else',
    ('http/conditional.c', 'if (cond->if_range && req->if_range_len > 0 && req->if_range[0] == \'"\')', 'constant', 'if (cond->if_range && req->if_range_len > 1 && req->if_range[0] == \'"\')'):
        'a 1-byte If-Range is neither the tag nor a date: 200 either way',
    ('http/conditional.c', 'http_text_uint(&t, (unsigned long long)st->st_ino, 1);', 'constant', 'http_text_uint(&t, (unsigned long long)st->st_ino, 0);'):
        'http_text_uint writes at least one digit (do ... while), so width 0 is width 1',
    ('http/conditional.c', 'http_text_uint(&t, (unsigned long long)st->st_size, 1);', 'constant', 'http_text_uint(&t, (unsigned long long)st->st_size, 0);'):
        'http_text_uint writes at least one digit (do ... while), so width 0 is width 1',
    ('http/conditional.c', '(unsigned long long)st->st_mtim.tv_nsec, 1);', 'constant', '(unsigned long long)st->st_mtim.tv_nsec, 0);'):
        'http_text_uint writes at least one digit (do ... while), so width 0 is width 1',
    ('http/conditional.c', 'http_text_uint(&t, (unsigned long long)first, 1);', 'constant', 'http_text_uint(&t, (unsigned long long)first, 0);'):
        'http_text_uint writes at least one digit (do ... while), so width 0 is width 1',
    ('http/conditional.c', 'http_text_uint(&t, (unsigned long long)(first + len - 1), 1);', 'constant', 'http_text_uint(&t, (unsigned long long)(first + len - 1), 0);'):
        'http_text_uint writes at least one digit (do ... while), so width 0 is width 1',
    ('http/conditional.c', '*len = cond->suffix < size ? cond->suffix : size;', 'flip', '*len = cond->suffix <= size ? cond->suffix : size;'):
        'suffix == size gives size either way',
    ('http/conditional.c', 'char modified[HTTP_DATE_LEN + 1];', 'constant', 'char modified[HTTP_DATE_LEN + 2];'):
        'one byte more than http_format_date ever writes',
    ('http/date.c', 'static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };', 'constant', 'static const char days[8][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };'):
        'only the first 3 bytes of a name are copied, and tm_wday < 7, tm_mon < 12: the sizes change nothing read',
    ('http/date.c', 'static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };', 'constant', 'static const char days[7][3] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };'):
        'only the first 3 bytes of a name are copied, and tm_wday < 7, tm_mon < 12: the sizes change nothing read',
    ('http/date.c', 'static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };', 'constant', 'static const char days[7][5] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };'):
        'only the first 3 bytes of a name are copied, and tm_wday < 7, tm_mon < 12: the sizes change nothing read',
    ('http/date.c', 'static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",', 'constant', 'static const char months[13][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",'):
        'only the first 3 bytes of a name are copied, and tm_wday < 7, tm_mon < 12: the sizes change nothing read',
    ('http/date.c', 'static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",', 'constant', 'static const char months[12][5] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",'):
        'only the first 3 bytes of a name are copied, and tm_wday < 7, tm_mon < 12: the sizes change nothing read',
    ('http/date.c', 'static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",', 'constant', 'static const char months[12][3] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",'):
        'only the first 3 bytes of a name are copied, and tm_wday < 7, tm_mon < 12: the sizes change nothing read',
    ('http/date.c', 'struct http_text x = { .p = out, .end = out + HTTP_DATE_LEN + 1 };', 'constant', 'struct http_text x = { .p = out, .end = out + HTTP_DATE_LEN + 2 };'):
        'the date is always 29 bytes and its NUL: the year is held to 4 digits above',
    ('http/date.c', 'tm.tm_year > 9999 - 1900)', 'constant', 'tm.tm_year > 10000 - 1900)'):
        'a year of 10000 or more is 5+ digits, overflows the 30 bytes, and gives "" anyway',
    ('http/date.c', 'tm.tm_year > 9999 - 1900)', 'constant', 'tm.tm_year > 9999 - 1899)'):
        'a year of 10000 or more is 5+ digits, overflows the 30 bytes, and gives "" anyway',
    ('http/date.c', 'http_text_uint(&x, (unsigned)(tm.tm_year + 1900), 4);', 'constant', 'http_text_uint(&x, (unsigned)(tm.tm_year + 1900), 3);'):
        'the year is 1000..9999: 4 digits with width 3 too',
    ('http/date.c', 'int v[5] = { 0 };       /* day, year, hour, minute, second */', 'constant', 'int v[6] = { 0 };       /* day, year, hour, minute, second */'):
        'a sixth int is never written nor read',
    ('http/date.c', 'for (size_t k = 0; month != NULL && k + 3 <= sizeof months - 1 && m == NULL; k += 3)', 'constant', 'for (size_t k = 0; month != NULL && k + 2 <= sizeof months - 1 && m == NULL; k += 3)'):
        'k takes the same values 0, 3, ..., 33 either way',
    ('http/date.c', 'for (size_t k = 0; month != NULL && k + 3 <= sizeof months - 1 && m == NULL; k += 3)', 'constant', 'for (size_t k = 0; month != NULL && k + 3 <= sizeof months - 0 && m == NULL; k += 3)'):
        'k takes the same values 0, 3, ..., 33 either way',
    ('http/date.c', 'memset(tm, 0, sizeof *tm);', 'constant', 'memset(tm, 1, sizeof *tm);'):
        'timegm reads only tm_year..tm_sec, all set below (glibc sets tm_isdst = 0 itself)',
    ('http/date.c', 'memset(tm, 0, sizeof *tm);', 'drop', ';'):
        'timegm reads only tm_year..tm_sec, all set below (glibc sets tm_isdst = 0 itself)',
    ('http/parse.c', 'for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)', 'constant', 'for (size_t i = 0; i < sizeof others / sizeof others[1]; i++)'):
        'every element of others has the same size',
    ('http/parse.c', "while (i < n && (s[i] == ' ' || s[i] == '\\t' || s[i] == ','))", 'flip', "while (i <= n && (s[i] == ' ' || s[i] == '\\t' || s[i] == ','))"):
        's[n] is the CR that ends the line, or a trailing SP/HT trimmed off the value: the skip may step to n + 1, the token after is empty, and the loop ends as at n',
    ('http/parse.c', "bool params = i < n && s[i] == ';';", 'flip', "bool params = i <= n && s[i] == ';';"):
        "s[n] is the CR that ends the line, or a trailing SP/HT trimmed off the value: never ';'",
    ('http/parse.c', "for (i = 1; i < n && s[i] != ']'; i++)", 'flip', "for (i = 1; i <= n && s[i] != ']'; i++)"):
        "s[n] is the CR that ends the line, or a trailing SP/HT trimmed off the value: neither tchar nor ':', so it returns false as at i == n",
    ('http/parse.c', 'req->conn_close = 1;', 'constant', 'req->conn_close = 2;'):
        'every reader tests this flag for truth only (http/, handler.c)',
    ('http/parse.c', 'req->conn_keep_alive = 1;', 'constant', 'req->conn_keep_alive = 2;'):
        'every reader tests this flag for truth only (http/, handler.c)',
    ('http/parse.c', 'req->has_host = 1;', 'constant', 'req->has_host = 2;'):
        'every reader tests this flag for truth only (http/, handler.c)',
    ('http/parse.c', 'req->chunked = 1;', 'constant', 'req->chunked = 2;'):
        'every reader tests this flag for truth only (http/, handler.c)',
    ('http/parse.c', 'req->expect_continue = 1;', 'constant', 'req->expect_continue = 2;'):
        'every reader tests this flag for truth only (http/, handler.c)',
    ('http/parse.c', "if (n > 0 && s[0] == '[') {", 'constant', "if (n > 1 && s[0] == '[') {"):
        'a Host of "[" alone is refused by either branch',
    ('http/parse.c', "while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\\t'))", 'constant', "while (value_len > 1 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\\t'))"):
        'value[0] is never SP or HT (leading OWS is skipped), so trimming stops at 1 anyway',
    ('http/route.c', 'return -1;', 'constant', 'return -2;'):
        'sleep_ms is only tested < 0 here, and handler.c reads it only for HTTP_ROUTE_SLEEP',
    ('http/route.c', 'return ms <= HTTP_SLEEP_MS_MAX ? ms : -1;', 'constant', 'return ms <= HTTP_SLEEP_MS_MAX ? ms : -2;'):
        'sleep_ms is only tested < 0 here, and handler.c reads it only for HTTP_ROUTE_SLEEP',
    ('http/route.c', 'rt->sleep_ms = q ? parse_sleep_query(q + 1, n - path_len - 1) : -1;', 'constant', 'rt->sleep_ms = q ? parse_sleep_query(q + 1, n - path_len - 1) : -2;'):
        'sleep_ms is only tested < 0 here, and handler.c reads it only for HTTP_ROUTE_SLEEP',
    ('http/route.c', 'if (n > 4 && strncasecmp(t, "http", 4) == 0) {', 'constant', 'if (n > 3 && strncasecmp(t, "http", 4) == 0) {'):
        'n == 4 cannot hold "http://" (scheme needs n > 7): 0 either way; t[4] is the SP after the target',
    ('http/route.c', 'if (n > 4 && strncasecmp(t, "http", 4) == 0) {', 'flip', 'if (n >= 4 && strncasecmp(t, "http", 4) == 0) {'):
        'n == 4 cannot hold "http://" (scheme needs n > 7): 0 either way; t[4] is the SP after the target',
    ('http/route.c', 'if (n > 4 && strncasecmp(t, "http", 4) == 0) {', 'constant', 'if (n > 5 && strncasecmp(t, "http", 4) == 0) {'):
        'n == 5 cannot hold "http://": scheme 0 either way',
    ('http/route.c', 'scheme = n > scheme + 3 && memcmp(t + scheme, "://", 3) == 0 ? scheme + 3 : 0;', 'constant', 'scheme = n > scheme + 2 && memcmp(t + scheme, "://", 3) == 0 ? scheme + 3 : 0;'):
        'n == scheme + 3 is "http://" alone: no \'/\' after it is 400, as t[0] != \'/\' is',
    ('http/route.c', 'scheme = n > scheme + 3 && memcmp(t + scheme, "://", 3) == 0 ? scheme + 3 : 0;', 'flip', 'scheme = n >= scheme + 3 && memcmp(t + scheme, "://", 3) == 0 ? scheme + 3 : 0;'):
        'n == scheme + 3 is "http://" alone: no \'/\' after it is 400, as t[0] != \'/\' is',
    ('http/route.c', 'if (scheme > 0) {', 'constant', 'if (scheme > 1) {'):
        'scheme is 0, 7 or 8',
    ('http/response.c', 'http_text_uint(&t, (unsigned long long)r->content_length, 1);', 'constant', 'http_text_uint(&t, (unsigned long long)r->content_length, 0);'):
        'http_text_uint writes at least one digit (do ... while), so width 0 is width 1',
}

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
        # In a session of its own, so that every server the tests started is
        # killed with them, even those a stopped or timed-out run left behind.
        proc = subprocess.Popen(t.tests, cwd=tree, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "SERVER_BIN": str(tree / "server"),
                                     "SERVER_RACE_BIN": str(tree / "server-race")})
        try:
            rc = proc.wait(t.timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
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
