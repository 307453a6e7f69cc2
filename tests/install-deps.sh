#!/bin/sh
# Install what the test suite needs and the machine lacks: pytest and
# pytest-xdist, which runs tests at once (Debian's python3-pytest and
# python3-pytest-xdist), for the given python, curl and strace.  Uses apt-get as root, or
# sudo without a password; otherwise prints the exact command and fails.
set -eu
python=${1:-/usr/bin/python3}

missing=""
"$python" -c 'import pytest' 2>/dev/null || missing="$missing python3-pytest"
"$python" -c 'import xdist' 2>/dev/null || missing="$missing python3-pytest-xdist"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
# strace watches the upload's fsync/rename order (test_uploads.py).
command -v strace >/dev/null 2>&1 || missing="$missing strace"
[ -z "$missing" ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y$missing"
if [ "$(id -u)" = 0 ]; then
    echo "installing test dependencies:$missing" >&2
    sh -c "$cmd"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "installing test dependencies with sudo:$missing" >&2
    sudo sh -c "$cmd"
else
    echo "the tests need:$missing. Install them with:" >&2
    echo "  sudo sh -c '$cmd'" >&2
    exit 1
fi
"$python" -c 'import pytest, xdist' || {
    echo "pytest or pytest-xdist is still missing for $python; is $python Debian's python3?" >&2
    exit 1
}
