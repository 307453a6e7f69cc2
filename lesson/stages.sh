#!/bin/sh
# lesson/stages.sh BUILD_DIR: build every stage of the lesson into BUILD_DIR.
#
# Two chains of patches, each applied in turn: lesson/steps/0*.patch (the
# core) to naive.c must give exactly minimal.c, and lesson/steps/A*.patch
# (the advanced steps) to minimal.c must give exactly hardened.c.  Every
# stage is written to BUILD_DIR/NAME.c and built twice: NAME, and
# NAME-window, linked with lesson/window.c, which holds the lesson's race
# windows open (LESSON_WINDOW_MS ms).  The last stage of each chain is
# built from minimal.c or hardened.c itself, as BUILD_DIR/minimal and
# BUILD_DIR/hardened.  CC and CFLAGS come from the environment.
set -eu
build=$1
lesson=$(dirname "$0")
: "${CC:=cc}" "${CFLAGS:=-O2 -pthread}" "${LESSON_WINDOW_MS:=300}"
WRAP=-Wl,--wrap=accept,--wrap=ppoll,--wrap=shutdown,--wrap=close

compile() {   # compile STAGE.c into STAGE and STAGE-window
    $CC $CFLAGS -I"$lesson" -o "$1" "$1.c" "$lesson/http.c" "$lesson/handshakes.c"
    $CC $CFLAGS -DLESSON_WINDOW_MS="$LESSON_WINDOW_MS" -I"$lesson" $WRAP \
        -o "$1-window" "$1.c" "$lesson/http.c" "$lesson/handshakes.c" "$lesson/window.c"
}

# chain FIRST.c LAST.c LAST-NAME PATCH...: apply each patch in turn to
# FIRST.c, building every stage, and check that the result is LAST.c.
chain() {
    first=$1 last=$2 name=$3
    shift 3
    prev=$first
    for p in "$@"; do
        stage="$build/$(basename "$p" .patch)"
        # --fuzz=0: a patch must apply exactly where it says, or the chain is broken.
        if ! patch --quiet --fuzz=0 --reject-file=- -o "$stage.c" "$prev" < "$p"; then
            echo "lesson: $p does not apply to the stage before it" >&2
            exit 1
        fi
        prev="$stage.c"
        [ "$p" = "$(eval echo "\${$#}")" ] || compile "$stage"
    done
    if ! cmp -s "$prev" "$last"; then
        echo "lesson: the patches applied in turn to $first do not give $last:" >&2
        diff -u "$last" "$prev" >&2 || true
        exit 1
    fi
    rm "$prev"
    cp "$last" "$build/$name.c"
    compile "$build/$name"
}

rm -rf "$build"
mkdir -p "$build"
cp "$lesson/naive.c" "$build/00-naive.c"
compile "$build/00-naive"
chain "$lesson/naive.c" "$lesson/minimal.c" minimal "$lesson"/steps/0*.patch
chain "$lesson/minimal.c" "$lesson/hardened.c" hardened "$lesson"/steps/A*.patch
echo "lesson: the core patches give minimal.c, the advanced ones hardened.c;" \
     "every stage built in $build"
