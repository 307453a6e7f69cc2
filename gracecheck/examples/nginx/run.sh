#!/bin/sh
# Run Debian's nginx for gracecheck: run.sh PORT DIR [CONF] (DIR private and
# empty; CONF defaults to nginx.conf here, default/nginx.conf is the row with
# nginx's documented defaults).
# The slow backend starts first, in the same process group; then the shell
# becomes nginx (exec), so the process gracecheck signals is nginx's master.
set -eu
port=$1 dir=$2
here=$(cd "$(dirname "$0")" && pwd)
conf=${3:-$here/nginx.conf}
nginx=$(command -v nginx || echo /usr/sbin/nginx)
sed -e "s|@PREFIX@|$dir/|g" -e "s|@PORT@|$port|g" "$conf" > "$dir/nginx.conf"
# with_backend.sh starts the backend, waits for its socket, lets nginx's
# worker ("nobody" when run as root) reach it, and becomes nginx.
exec sh "$here/../with_backend.sh" "$dir" \
    "$nginx" -p "$dir/" -e stderr -c "$dir/nginx.conf" -g 'daemon off;'
