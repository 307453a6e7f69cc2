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

SRCS = server.c handler.c

.PHONY: all test test-deps clean

all: server

server: $(SRCS) handler.h
	$(CC) $(ALL_CFLAGS) -o $@ $(SRCS) $(LDFLAGS) -pthread

# The suite runs against $(SERVER_BIN) (default ./server), so the sanitizer
# targets can run the same tests against their own builds.
test: server test-deps
	$(PYTHON) -m pytest -q tests

test-deps:
	@sh tests/install-deps.sh $(PYTHON)

clean:
	rm -f server
	rm -rf tests/__pycache__ .pytest_cache
