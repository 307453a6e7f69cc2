# lesson/demo.sh - the helpers the README's demos use.  Source it from the
# repository's top directory, in bash or any POSIX shell:
#
#     . lesson/demo.sh
#
#   start STAGE PORT [GRACE]  run lesson/build/STAGE on PORT in the
#                             background until it says "listening on";
#                             $pid is its process id, its stderr goes to
#                             /tmp/lesson-demo-PORT.log
#   interrupt                 Ctrl+C: send it SIGINT
#   stops_within SECONDS      wait that long for it to exit and say how it
#                             ended; if it is still running, kill it
#   saw TEXT                  wait (5 s at most) until its stderr says TEXT
#   stacks                    whether ended threads still hold their stacks
#   hold PORT                 an idle keep-alive client, as a browser keeps
#                             one: one request, then silence for 10 s
#   vanish PORT               a client that sends a slow request and 50 more
#                             behind it, then closes without reading
#
# Nothing here starts a job of your shell: the servers and clients it
# starts run on their own, and stops_within ends the server either way.

start() {
    _demo_log=/tmp/lesson-demo-$2.log
    rm -f "$_demo_log" "$_demo_log.status"
    # A shell that waits for the server and writes its exit status where
    # stops_within looks for it; it prints the server's pid and lets go.
    pid=$(sh -c 'lesson/build/"$1" "$2" ${3:+"$3"} </dev/null >/dev/null 2>"$4" &
                 echo $!; exec >/dev/null
                 wait $!; echo $? >"$4.tmp"; mv "$4.tmp" "$4.status"' \
          sh "$1" "$2" "${3:-}" "$_demo_log" 2>/dev/null &)
    _demo_base=$(_demo_guard_pages)
    _i=0
    until grep -q "listening on" "$_demo_log" 2>/dev/null; do
        if [ -e "$_demo_log.status" ] || [ $_i -ge 500 ]; then
            echo "$1 did not start: $(tail -n 1 "$_demo_log")"
            return 1
        fi
        _i=$((_i + 1))
        sleep 0.01
    done
    _demo_base=$(_demo_guard_pages)
}

interrupt() {
    kill -INT "$pid" 2>/dev/null
}

stops_within() {
    _i=0
    while [ ! -e "$_demo_log.status" ] && [ $_i -lt $(($1 * 100)) ]; do
        _i=$((_i + 1))
        sleep 0.01
    done
    if [ -e "$_demo_log.status" ]; then
        _ended=""
    else
        _ended="still running after $1 s (killed it)"
        kill -KILL "$pid" 2>/dev/null
        until [ -e "$_demo_log.status" ]; do sleep 0.01; done
    fi
    _st=$(cat "$_demo_log.status")
    if [ -n "$_ended" ]; then
        echo "$_ended"
    elif [ "$_st" -eq 141 ]; then
        echo "killed by SIGPIPE"
    elif [ "$_st" -gt 128 ]; then
        echo "killed by signal $((_st - 128))"
    else
        echo "exit status $_st"
    fi
}

saw() {
    _i=0
    until grep -qF "$1" "$_demo_log" 2>/dev/null; do
        [ $_i -lt 500 ] || { echo "never saw: $1"; return 1; }
        _i=$((_i + 1))
        sleep 0.01
    done
}

# Thread stacks have a one-page guard below them (---p): count those pages.
_demo_guard_pages() {
    _n=0
    while read -r _range _perms _rest; do
        [ "$_perms" = "---p" ] || continue
        [ $((0x${_range#*-} - 0x${_range%-*})) -eq 4096 ] && _n=$((_n + 1))
    done < "/proc/$pid/maps"
    echo $_n
}

stacks() {
    _live=$(awk '/^Threads:/ { print $2 - 1 }' "/proc/$pid/status")
    _held=$(($(_demo_guard_pages) - _demo_base - _live))
    # glibc keeps a few stacks of joined threads for reuse (40 MiB in all).
    if [ $_held -gt 16 ]; then
        echo "$_held ended threads still hold their stacks"
    else
        echo "no pile-up: ended threads gave their stacks back"
    fi
}

hold() {
    # It says "answered" once its request is; that line ends the wait here.
    ( python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(10)
try:
    s.recv(4096)
    print("answered", flush=True)
    while s.recv(4096):
        pass
except OSError:
    pass' "$1" </dev/null 2>/dev/null & ) | head -n 1 >/dev/null
}

vanish() {
    python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /sleep?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
s.close()' "$1"
}
