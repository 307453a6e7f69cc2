#!/bin/sh
# Fail when a sanitizer wrote any report into the log folder given.
dir=$1
if ls "$dir"/* >/dev/null 2>&1; then
    echo "sanitizer reports found:" >&2
    for f in "$dir"/*; do echo "== $f" >&2; cat "$f" >&2; done
    exit 1
fi
echo "no sanitizer reports"
