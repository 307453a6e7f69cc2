#!/bin/sh
# with_backend.sh DIR COMMAND ARGS...: start the slow backend on DIR/backend.sock
# (nginx/backend.py: GET /sleep?ms=N, ignores the stop signals), wait for it,
# then become COMMAND (exec), so the process gracecheck signals is the server.
# Used by the servers that only serve files or proxy: their /sleep is proxied
# here, and what gracecheck measures is still their own listener and drain.
set -eu
dir=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
/usr/bin/python3 "$here/nginx/backend.py" "$dir/backend.sock" &
i=0
while [ ! -S "$dir/backend.sock" ]; do
    i=$((i + 1))
    [ $i -le 500 ] || { echo "with_backend.sh: backend did not start" >&2; exit 1; }
    sleep 0.01
done
# Servers started as root drop to www-data or nobody: they must reach DIR.
chmod 755 "$dir" && chmod 666 "$dir/backend.sock"
exec "$@"
