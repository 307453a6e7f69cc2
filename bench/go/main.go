// Command go-graceful is the Go reference for bench/bench.py: the same
// pattern as ../../server.c in Go's net/http, one goroutine per connection,
// drained by Server.Shutdown.
//
//	GET /              a short text
//	GET /sleep?ms=N    answer after N ms, N in 0..60000 (400 otherwise)
//
// Flags: -addr HOST:PORT (default 127.0.0.1:7878; port 0 picks a free one)
// and -grace SECONDS (default 30). Once the listener accepts it prints
// "listening on HOST:PORT" to stderr.
//
// Shutdown: SIGINT or SIGTERM starts Server.Shutdown, which closes the
// listener and the idle connections and waits for the busy ones. A clean
// drain exits 0. The grace deadline or a second signal calls Server.Close,
// which cuts every connection, and exits 1.
//
// Build with the standard library only (no modules are fetched):
//
//	GO111MODULE=off go build -o go-graceful main.go
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const sleepMaxMs = 60000

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("go-graceful", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported on one line below
	addr := fs.String("addr", "127.0.0.1:7878", "listen address HOST:PORT")
	grace := fs.Float64("grace", 30, "seconds to drain before cutting connections")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "go-graceful: %v (usage: go-graceful [-addr HOST:PORT] [-grace SECONDS])\n", err)
		return 2
	}
	if fs.NArg() != 0 || *grace < 0 || *grace > 86400 {
		fmt.Fprintln(os.Stderr, "go-graceful: usage: go-graceful [-addr HOST:PORT] [-grace SECONDS], 0 <= SECONDS <= 86400")
		return 2
	}

	// Signals are caught before the listener exists, so none is lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-graceful: %v\n", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "listening on %s\n", ln.Addr())

	srv := &http.Server{Handler: routes()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served: // Serve failed before any signal
		fmt.Fprintf(os.Stderr, "go-graceful: %v\n", err)
		return 1
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "%v: draining\n", sig)
	}
	return drain(srv, sigs, time.Duration(*grace*float64(time.Second)))
}

// drain runs Server.Shutdown until it finishes (0), or until the grace
// deadline passes or a second signal comes: then Server.Close (1).
func drain(srv *http.Server, sigs <-chan os.Signal, grace time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()

	select {
	case err := <-done:
		if err == nil {
			fmt.Fprintln(os.Stderr, "drained")
			return 0
		}
		fmt.Fprintf(os.Stderr, "grace deadline passed: %v\n", err)
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "%v again\n", sig)
	}
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "go-graceful: close: %v\n", err)
	}
	fmt.Fprintln(os.Stderr, "forced: connections cut")
	return 1
}

func routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		if r.URL.Path != "/" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		text(w, http.StatusOK, "go-graceful: one goroutine per connection. Try /sleep?ms=2000 and press Ctrl+C.\n")
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		ms, ok := parseSleepQuery(r.URL.RawQuery)
		if !ok {
			http.Error(w, "sleep wants ms=N, N in 0..60000", http.StatusBadRequest)
			return
		}
		// Shutdown lets this finish; Close (or the client leaving)
		// cancels the request's context and cuts it short.
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			text(w, http.StatusOK, "slept "+strconv.Itoa(ms)+" ms\n")
		case <-r.Context().Done():
		}
	})
	return mux
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func text(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body) // a client gone away is not an error here
}

// parseSleepQuery accepts exactly "ms=N", N decimal digits in 0..60000.
func parseSleepQuery(q string) (int, bool) {
	const prefix = "ms="
	if len(q) <= len(prefix) || len(q) > len(prefix)+5 || q[:len(prefix)] != prefix {
		return 0, false
	}
	ms := 0
	for _, c := range q[len(prefix):] {
		if c < '0' || c > '9' {
			return 0, false
		}
		ms = ms*10 + int(c-'0')
	}
	if ms > sleepMaxMs {
		return 0, false
	}
	return ms, true
}
