#!/bin/sh
# lesson/stages.sh BUILD_DIR: apply lesson/steps/*.patch in turn to
# lesson/naive.c, write every stage to BUILD_DIR/NN-name.c, check that the
# last one is exactly lesson/minimal.c, and build each stage twice: NN-name
# and NN-name-window (with the lesson's race window, LESSON_WINDOW_MS ms).
# The last stage is built from minimal.c itself, as BUILD_DIR/minimal.
# CC and CFLAGS come from the environment (the Makefile passes its own).
set -eu
build=$1
lesson=$(dirname "$0")
: "${CC:=cc}" "${CFLAGS:=-O2 -pthread}" "${LESSON_WINDOW_MS:=300}"

compile() {   # compile STAGE.c into STAGE and STAGE-window
    $CC $CFLAGS -I"$lesson" -o "$1" "$1.c" "$lesson/http.c" "$lesson/handshakes.c"
    $CC $CFLAGS -DLESSON_RACE_WINDOW_MS="$LESSON_WINDOW_MS" -I"$lesson" \
        -o "$1-window" "$1.c" "$lesson/http.c" "$lesson/handshakes.c"
}

rm -rf "$build"
mkdir -p "$build"
cp "$lesson/naive.c" "$build/00-naive.c"
compile "$build/00-naive"
prev="$build/00-naive.c"
set -- "$lesson"/steps/*.patch
last=$(eval echo "\${$#}")
for p in "$@"; do
    stage="$build/$(basename "$p" .patch)"
    # --fuzz=0: a patch must apply exactly where it says, or the chain is broken.
    if ! patch --quiet --fuzz=0 --reject-file=- -o "$stage.c" "$prev" < "$p"; then
        echo "lesson: $p does not apply to the stage before it" >&2
        exit 1
    fi
    [ "$p" = "$last" ] || compile "$stage"
    prev="$stage.c"
done
if ! cmp -s "$prev" "$lesson/minimal.c"; then
    echo "lesson: applying every patch to naive.c does not give minimal.c:" >&2
    diff -u "$lesson/minimal.c" "$prev" >&2 || true
    exit 1
fi
rm "$prev"
cp "$lesson/minimal.c" "$build/minimal.c"
compile "$build/minimal"
echo "lesson: $# patches applied in turn to naive.c give minimal.c; $(($# + 1)) stages built in $build"
