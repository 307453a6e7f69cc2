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
python3 "$here/backend.py" "$dir/backend.sock" &
i=0
while [ ! -S "$dir/backend.sock" ]; do
    i=$((i + 1))
    [ $i -le 500 ] || { echo "run.sh: backend did not start" >&2; exit 1; }
    sleep 0.01
done
# Run as root, nginx's worker is "nobody": it must reach the socket in DIR.
chmod 755 "$dir" && chmod 666 "$dir/backend.sock"
exec "$nginx" -p "$dir/" -e stderr -c "$dir/nginx.conf" -g 'daemon off;'
