# Build: `make`.  Test: `make test` (installs what the tests lack first).
# CC, CFLAGS, LDFLAGS and PYTHON can be overridden: `make CC=clang`.

CC      ?= cc
CFLAGS  ?= -O2 -g
LDFLAGS ?=
# Debian's interpreter, where apt installs python3-pytest (the python3 first
# on PATH may be another one without pytest).
PYTHON  ?= /usr/bin/python3

WARNINGS = -std=c11 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wconversion \
           -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
ALL_CFLAGS = $(WARNINGS) $(CFLAGS) -pthread

# The socket-free protocol code (http/): the request parser, the chunk
# decoder, dates, conditional and range requests, response heads, routes,
# the text builder.  The fuzzers and the unit test link these alone, and
# `make unit` checks what they call (http-pure, below).
HTTP_SRCS = http/chunked.c http/conditional.c http/date.c http/parse.c \
            http/response.c http/route.c http/text.c
HTTP_HDRS = $(HTTP_SRCS:.c=.h)
SRCS = server.c handler.c uploads.c log.c process/listener.c process/options.c \
       process/restart.c process/resources.c process/signals.c process/stacks.c $(HTTP_SRCS)
HDRS = handler.h uploads.h log.h process/listener.h process/options.h process/restart.h \
       process/resources.h process/signals.h process/stacks.h $(HTTP_HDRS)

# The test-only build that widens the microsecond race windows of the
# shutdown path (see RACE_WINDOW in process/signals.h); tests/test_race.py
# runs it as $$SERVER_RACE_BIN.
RACE_CFLAGS = -DGRACEFUL_RACE_WINDOW_MS=1000
# Sanitizer runs are slower: every timing bound in the tests is multiplied
# by this (tests/conftest.py, bound()).
SAN_TIME_SCALE = 3

# Sanitizer builds want bigger thread stacks: their redzones multiply
# stack use.
SAN_CFLAGS = -O1 -g -fno-omit-frame-pointer -DCONN_STACK_SIZE='((size_t)1024*1024)'
SANITIZER_LOGS = .sanitizer-logs
FUZZ_SECONDS ?= 60

.PHONY: all test unit http-pure test-deps asan tsan memcheck lint fuzz fuzz-chunked bench bench-quick mutants \
        mutants-sweep clean gracecheck gracecheck-peers gracecheck-survey lesson lesson-stages

all: server

server: $(SRCS) $(HDRS)
	$(CC) $(ALL_CFLAGS) -o $@ $(SRCS) $(LDFLAGS) -pthread

# The suite runs against $$SERVER_BIN (default ./server), so the sanitizer
# targets below run the very same tests against their own builds.  The unit
# test of http/ comes first: it takes a fraction of a second and names the
# broken rule, where pytest would only see a wrong status.
# Most of the suite's time is waiting (for deadlines, timeouts, signals),
# not CPU, and every test has its own server, port and directory, so
# $(call run_suite,N) runs the tests N at once on pytest-xdist workers
# (python3-pytest-xdist), a worker starting the longest ones first.  The
# tests marked serial must run alone (they measure CPU use, or load the
# machine heavily, or use fixed ports: tests/conftest.py): they run next,
# in a second pytest run with nothing beside them (xdist's --dist loadgroup
# would only keep them off each other's workers, not keep the rest of the
# suite off the machine while they run).  Both runs always run; either one
# failing fails the target.  One worker per core would leave the cores idle
# while tests wait: on two cores, 4 workers took 92 s, 8 took 55 s alone
# and 60 to 63 s beside a sanitizer run, 12 took 52 s alone; more add
# start-up time and load that the tests' timing bounds then feel.
TEST_JOBS ?= 12
run_suite = status=0; \
	$(PYTHON) -m pytest -q -n $(1) -m 'not serial' tests || status=1; \
	$(PYTHON) -m pytest -q -m serial tests || status=1; \
	exit $$status

test: unit server server-race test-deps
	$(call run_suite,$(TEST_JOBS))

# http/test.c: the table-driven, in-process test of http/ (no server, no
# sockets); prints "N passed, 0 failed" and exits 1 on any failure.
http/test: http/test.c $(HTTP_SRCS) $(HTTP_HDRS)
	$(CC) $(ALL_CFLAGS) -o $@ http/test.c $(HTTP_SRCS) $(LDFLAGS)

unit: http/test http-pure
	./http/test

# What http/ may call besides itself: memory, strings and the calendar.
# Linking alone cannot keep sockets out (every program links the C library,
# which has them all), so each object's undefined symbols are listed
# (nm -u) and anything else fails: a send(), a poll(), a lock, a log line.
# Names starting with __ are the compiler's own (__stack_chk_fail).
HTTP_MAY_CALL = memchr memcmp memcpy memmove memset strchr strcmp strlen \
                strncasecmp strncmp gmtime_r time timegm
http-pure: $(HTTP_SRCS) $(HTTP_HDRS)
	@objs=$$(mktemp -d) && trap 'rm -rf "$$objs"' EXIT && \
	for f in $(HTTP_SRCS); do \
	    $(CC) $(ALL_CFLAGS) -c -o "$$objs/$$(basename $$f .c).o" $$f || exit 1; \
	done && \
	bad=$$(nm -u "$$objs"/*.o | awk 'NF == 2 { print $$2 }' | sort -u | \
	       grep -v -e '^http_' -e '^__' $(foreach f,$(HTTP_MAY_CALL),-e '^$(f)$$') || true) && \
	if [ -n "$$bad" ]; then \
	    echo "http/ must not call: $$(echo $$bad) (only itself and: $(HTTP_MAY_CALL))" >&2; \
	    exit 1; \
	fi && echo "http/ calls only itself and: $(HTTP_MAY_CALL)"

server-race: $(SRCS) $(HDRS)
	$(CC) $(ALL_CFLAGS) $(RACE_CFLAGS) -o $@ $(SRCS) $(LDFLAGS) -pthread

# Each fix taken out again (tests/mutants/*.patch), one at a time, on a
# copy of the tree: the tests named in each patch must fail.
mutants: test-deps
	$(PYTHON) tests/mutants/run.py

# The same idea, by rule instead of by hand: tests/mutants/sweep.py makes
# every small change of a handful of operators to http/*.c and to the
# shutdown path of server.c, runs the fastest tests that can see each, and
# lists the survivors (docs/mutation-sweep.md).  SWEEP_ARGS narrows it, e.g.
# SWEEP_ARGS='--target http --sample 60 --seed 1', as CI does.
mutants-sweep: test-deps
	$(PYTHON) tests/mutants/sweep.py $(SWEEP_ARGS)

test-deps:
	@sh tests/install-deps.sh $(PYTHON)

server-asan: $(SRCS) $(HDRS)
	$(CC) $(WARNINGS) $(SAN_CFLAGS) -fsanitize=address,undefined \
	    -fno-sanitize-recover=all -pthread -o $@ $(SRCS)

server-tsan: $(SRCS) $(HDRS)
	$(CC) $(WARNINGS) $(SAN_CFLAGS) -fsanitize=thread -pthread -o $@ $(SRCS)

server-asan-race: $(SRCS) $(HDRS)
	$(CC) $(WARNINGS) $(SAN_CFLAGS) $(RACE_CFLAGS) -fsanitize=address,undefined \
	    -fno-sanitize-recover=all -pthread -o $@ $(SRCS)

server-tsan-race: $(SRCS) $(HDRS)
	$(CC) $(WARNINGS) $(SAN_CFLAGS) $(RACE_CFLAGS) -fsanitize=thread -pthread -o $@ $(SRCS)

# Reports go to files, not just stderr: a report from a server that a test
# then SIGKILLs must still fail the run.  The suite runs as in `make test`
# (the serial tests alone after the rest), SAN_TEST_JOBS at once: an
# instrumented server burns several times the CPU, so fewer workers keep
# the two cores from being the bottleneck that GRACEFUL_TIME_SCALE's
# bounds would then feel.
SAN_TEST_JOBS ?= 3
asan: server-asan server-asan-race test-deps
	rm -rf $(SANITIZER_LOGS) && mkdir -p $(SANITIZER_LOGS)
	SERVER_BIN=$(CURDIR)/server-asan SERVER_RACE_BIN=$(CURDIR)/server-asan-race \
	GRACEFUL_TIME_SCALE=$(SAN_TIME_SCALE) \
	ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:log_path=$(CURDIR)/$(SANITIZER_LOGS)/asan \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(CURDIR)/$(SANITIZER_LOGS)/ubsan; \
	export SERVER_BIN SERVER_RACE_BIN GRACEFUL_TIME_SCALE ASAN_OPTIONS UBSAN_OPTIONS; \
	$(call run_suite,$(SAN_TEST_JOBS))
	@sh tests/check-sanitizer-logs.sh $(SANITIZER_LOGS)

tsan: server-tsan server-tsan-race test-deps
	rm -rf $(SANITIZER_LOGS) && mkdir -p $(SANITIZER_LOGS)
	SERVER_BIN=$(CURDIR)/server-tsan SERVER_RACE_BIN=$(CURDIR)/server-tsan-race \
	GRACEFUL_TIME_SCALE=$(SAN_TIME_SCALE) \
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:log_path=$(CURDIR)/$(SANITIZER_LOGS)/tsan; \
	export SERVER_BIN SERVER_RACE_BIN GRACEFUL_TIME_SCALE TSAN_OPTIONS; \
	$(call run_suite,$(SAN_TEST_JOBS))
	@sh tests/check-sanitizer-logs.sh $(SANITIZER_LOGS)

# A short real session (requests, uploads, Ctrl+C) under valgrind memcheck.
memcheck: server test-deps
	$(PYTHON) tests/memcheck.py ./server

lint:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,style,performance,portability \
	    --inline-suppr -D_GNU_SOURCE $(SRCS) http/test.c fuzz/fuzz_parser.c fuzz/fuzz_chunked.c \
	    bench/floor.c
	clang-tidy --quiet $(SRCS) http/test.c bench/floor.c -- -std=c11
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,style,performance,portability \
	    --inline-suppr -D_GNU_SOURCE -Ilesson $(LESSON_SRCS)
	clang-tidy --quiet $(LESSON_SRCS) -- -std=c11 -Ilesson

# libFuzzer on the request parser: `make fuzz FUZZ_SECONDS=1800`.  New
# inputs go to fuzz/.corpus; the committed seeds stay as they are.
# -max_len above HTTP_HEAD_MAX (16 KiB) so the 414/431 paths are reached.
# It links http/parse.c and nothing else: the parser needs no sockets.
fuzz/fuzz_parser: fuzz/fuzz_parser.c http/parse.c http/parse.h
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all -o $@ fuzz/fuzz_parser.c http/parse.c

fuzz: fuzz/fuzz_parser
	mkdir -p fuzz/.corpus
	./fuzz/fuzz_parser -max_total_time=$(FUZZ_SECONDS) -max_len=20000 -print_final_stats=1 \
	    fuzz/.corpus fuzz/corpus

# libFuzzer on the chunk decoder: `make fuzz-chunked FUZZ_SECONDS=1800`.
# -max_len above HTTP_HEAD_MAX so the 431 trailer limit is reached.
# It links http/chunked.c and the character classes of http/parse.c only.
fuzz/fuzz_chunked: fuzz/fuzz_chunked.c http/chunked.c http/chunked.h http/parse.c http/parse.h
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all -o $@ fuzz/fuzz_chunked.c http/chunked.c http/parse.c

fuzz-chunked: fuzz/fuzz_chunked
	mkdir -p fuzz/.corpus-chunked
	./fuzz/fuzz_chunked -max_total_time=$(FUZZ_SECONDS) -max_len=20000 -print_final_stats=1 \
	    fuzz/.corpus-chunked fuzz/corpus_chunked

# gracecheck (gracecheck/README.md): every shutdown check against ./server,
# which must pass them all; then the same checks against nginx, Python's
# ThreadingHTTPServer and Go's net/http where installed.
gracecheck: server
	$(PYTHON) gracecheck/gracecheck.py --slow '/sleep?ms={ms}' --grace 2 \
	    -- ./server --port '{port}' --data-dir '{dir}' --grace 2

gracecheck-peers:
	sh gracecheck/peers.sh $(PYTHON)

# The published shutdown table (gracecheck/README.md): every server in
# gracecheck/survey.py that is installed, each run bounded, results in
# SURVEY_OUT (survey.md, survey.json, one JSON per server).  SURVEY=names
# runs only those; CI adds SURVEY_FLAGS=--verify (every check gave a verdict).
SURVEY_OUT ?= gracecheck/survey
SURVEY_JOBS ?= 1
gracecheck-survey: server lesson-stages
	$(PYTHON) gracecheck/survey.py --out $(SURVEY_OUT) --jobs $(SURVEY_JOBS) $(SURVEY_FLAGS) $(SURVEY)

# The lesson: lesson/steps/0*.patch applied in turn to lesson/naive.c give
# minimal.c, and lesson/steps/A*.patch applied to minimal.c give
# hardened.c; every stage is built (and built again with the race windows
# held open, lesson/window.c), gracecheck and the lesson's own rows run on
# every stage and on ./server, the matrix is compared with
# lesson/expected.txt, and every demo in the README's lesson is run and
# its output checked.  LESSON_JOBS cells run at once (they mostly wait).
LESSON_BUILD = lesson/build
LESSON_JOBS ?= 10
LESSON_SRCS = lesson/naive.c lesson/minimal.c lesson/hardened.c lesson/http.c \
              lesson/handshakes.c lesson/window.c

lesson-stages: $(LESSON_SRCS) lesson/stages.sh
	CC="$(CC)" CFLAGS="$(ALL_CFLAGS)" sh lesson/stages.sh $(LESSON_BUILD)

lesson: server server-race lesson-stages
	$(PYTHON) lesson/matrix.py --build $(LESSON_BUILD) --server ./server \
	    --server-race ./server-race \
	    --jobs $(LESSON_JOBS) --write $(LESSON_BUILD)/matrix.txt $(if $(LESSON_FULL),--full)
	$(PYTHON) lesson/demos.py

bench: server
	$(PYTHON) bench/bench.py

bench-quick: server
	$(PYTHON) bench/bench.py --quick

clean:
	rm -f server server-race server-asan server-tsan server-asan-race server-tsan-race \
	    fuzz/fuzz_parser fuzz/fuzz_chunked http/test
	rm -rf tests/__pycache__ .pytest_cache $(SANITIZER_LOGS) fuzz/.corpus fuzz/.corpus-chunked \
	    $(LESSON_BUILD) lesson/__pycache__
