#!/bin/sh
# `make gracecheck-peers`: gracecheck against the servers we compare with,
# each with its own graceful-stop signal and slow path.  A peer whose
# program is not installed is skipped with a note.  Peers are expected to
# fail some checks (gracecheck/README.md says which and why), so their
# failures do not fail this target; a run that cannot start does.
#
#   sh gracecheck/peers.sh PYTHON [OUTDIR]   (OUTDIR gets one JSON per peer)
set -u
py=${1:-/usr/bin/python3}
out=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
tool="$py $here/gracecheck.py"
status=0

run() {   # run NAME GRACECHECK-ARGS... -- COMMAND...
    name=$1; shift
    echo
    echo "== $name"
    json=""
    [ -n "$out" ] && json="--json $out/$name.json"
    # shellcheck disable=SC2086
    $tool $json "$@"
    rc=$?
    [ $rc -le 1 ] || status=1
}

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    run nginx --signal QUIT --slow '/sleep?ms={ms}' --grace 2 -- "$here/examples/nginx/run.sh" '{port}' '{dir}'
else
    echo; echo "== nginx: skipped (not installed: apt-get install nginx)"
fi

run python-threading --slow '/sleep?ms={ms}' -- "$py" "$here/examples/threading_server.py" '{port}'

gosrc="$here/examples/go"   # a link to bench/go, the speed comparison's Go server
if command -v go >/dev/null 2>&1 && [ -f "$gosrc/main.go" ]; then
    bin=$(mktemp -d)
    if (cd "$gosrc" && GOCACHE="${GOCACHE:-$bin/cache}" GO111MODULE=off go build -o "$bin/server" main.go); then
        run go-net-http --slow '/sleep?ms={ms}' --grace 2 -- "$bin/server" -addr '127.0.0.1:{port}' -grace 2
    else
        echo "== go: build failed"; status=1
    fi
    rm -rf "$bin"
else
    echo; echo "== go net/http: skipped (needs golang-go and $gosrc/main.go)"
fi
exit $status
