package lifecycle

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// notifySocket is a test NOTIFY_SOCKET: it stands in for systemd.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
}

// listenNotify creates a notify socket and points NOTIFY_SOCKET at it.
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &notifySocket{t: t, conn: conn}
}

// next returns the next message, failing the test after timeout.
func (n *notifySocket) next(timeout time.Duration) string {
	n.t.Helper()
	buf := make([]byte, 4096)
	_ = n.conn.SetReadDeadline(time.Now().Add(timeout))
	k, err := n.conn.Read(buf)
	if err != nil {
		n.t.Fatalf("no sd_notify message: %v", err)
	}
	return string(buf[:k])
}

// harness runs Run on a real listener with a handler whose /slow route
// blocks until released, and records what Run asks of the gateway.
type harness struct {
	t       *testing.T
	addr    string
	signals chan os.Signal
	release chan struct{} // closing it lets /slow answer
	slowIn  chan struct{} // receives when /slow starts
	ready   atomic.Bool
	refused chan struct{} // closed by Refuse
	drainCh chan context.Context
	drained chan struct{} // closed when Drain returns
	done    chan error    // Run's result
	events  chan string   // Refuse, SetReady and Drain, in order
}

func startRun(t *testing.T, grace time.Duration, idle *Idle, drain func(ctx context.Context)) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:       t,
		addr:    ln.Addr().String(),
		signals: make(chan os.Signal, 2),
		release: make(chan struct{}),
		slowIn:  make(chan struct{}, 10),
		refused: make(chan struct{}),
		drainCh: make(chan context.Context, 1),
		drained: make(chan struct{}),
		done:    make(chan error, 1),
		events:  make(chan string, 100),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		h.slowIn <- struct{}{}
		select {
		case <-h.release:
			_, _ = io.WriteString(w, "finished")
		case <-r.Context().Done():
			_, _ = io.WriteString(w, "canceled")
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !h.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	if drain == nil {
		drain = func(ctx context.Context) { <-ctx.Done() }
	}
	opts := Options{
		Listeners:         []net.Listener{ln},
		Handler:           mux,
		Log:               zerolog.New(zerolog.NewTestWriter(t)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxConnections:    100,
		ShutdownGrace:     grace,
		Signals:           h.signals,
		Idle:              idle,
		SetReady: func(ok bool) {
			h.ready.Store(ok)
			if ok {
				h.events <- "ready"
			} else {
				h.events <- "unready"
			}
		},
		Refuse: func() {
			h.events <- "refuse"
			close(h.refused)
		},
		Active: func() int { return 1 },
		Drain: func(ctx context.Context) {
			h.events <- "drain"
			h.drainCh <- ctx
			defer close(h.drained)
			drain(ctx)
		},
	}
	go func() { h.done <- Run(opts) }() // exits when Run returns
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			t.Errorf("Run still running at the end of the test")
		}
	})
	return h
}

// wait waits for Run to return and returns its error.
func (h *harness) wait(timeout time.Duration) error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(timeout):
		h.t.Fatalf("Run did not return within %v", timeout)
		return nil
	}
}

// eventList returns the events recorded so far.
func (h *harness) eventList() []string {
	var out []string
	for {
		select {
		case e := <-h.events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// get sends a GET on a new connection.
func get(t *testing.T, url string) (int, string, error) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestRunShutdownOrder follows a shutdown step by step: a request in
// flight when the signal comes is answered, the listener is closed before
// STOPPING=1, /readyz then says 503 on a connection accepted before, new
// runs are refused before the drain begins, the drain gets the grace, and
// Run returns nil.
func TestRunShutdownOrder(t *testing.T) {
	notify := listenNotify(t)
	h := startRun(t, 300*time.Millisecond, nil, nil)
	if msg := notify.next(10 * time.Second); msg != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	if code, _, err := get(t, "http://"+h.addr+"/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz before shutdown: %d %v", code, err)
	}

	type result struct {
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() { // exits when /slow answers
		_, body, err := get(t, "http://"+h.addr+"/slow")
		slow <- result{body, err}
	}()
	<-h.slowIn
	// A connection accepted before the signal, its request begun before
	// and finished after.
	early, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if _, err := io.WriteString(early, "GET /readyz HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the server accept it

	start := time.Now()
	h.signals <- syscall.SIGTERM
	if msg := notify.next(10 * time.Second); msg != "STOPPING=1" {
		t.Fatalf("notification after SIGTERM %q, want STOPPING=1", msg)
	}
	if c, err := net.Dial("tcp", h.addr); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after STOPPING=1")
	}
	<-h.refused
	if _, err := io.WriteString(early, "Host: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(early), nil)
	if err != nil {
		t.Fatalf("/readyz on an early connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Errorf("/readyz while draining: %d, Connection close %v; want 503 and close", resp.StatusCode, resp.Close)
	}

	ctx := <-h.drainCh
	if dl, ok := ctx.Deadline(); !ok || dl.Sub(start) > 300*time.Millisecond+time.Second {
		t.Errorf("drain deadline %v (ok %v), want shutdown_grace after the signal", dl.Sub(start), ok)
	}
	close(h.release)
	if r := <-slow; r.err != nil || r.body != "finished" {
		t.Errorf("request in flight: %q %v, want it answered", r.body, r.err)
	}
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("Run returned after %v, before the grace", took)
	}
	want := "ready unready refuse drain"
	if got := strings.Join(h.eventList(), " "); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestRunDrainEndsEarly: when every job ends before the grace, Run does
// not wait for the rest of it.
func TestRunDrainEndsEarly(t *testing.T) {
	h := startRun(t, time.Hour, nil, func(ctx context.Context) {})
	<-h.events // ready
	h.signals <- syscall.SIGINT
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestRunSecondSignalCutsGrace: the drain's context ends at the second
// signal, not after the hour of grace.
func TestRunSecondSignalCutsGrace(t *testing.T) {
	h := startRun(t, time.Hour, nil, nil)
	<-h.events // ready
	h.signals <- syscall.SIGTERM
	ctx := <-h.drainCh
	select {
	case <-ctx.Done():
		t.Fatalf("drain context done before the second signal")
	case <-time.After(100 * time.Millisecond):
	}
	h.signals <- syscall.SIGTERM
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the second signal did not end the grace")
	}
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestRunClosesStuckHandlers: a handler that outlives the jobs is
// canceled (its context done) and its connection closed after
// handlerExitGrace; Run still returns nil.
func TestRunClosesStuckHandlers(t *testing.T) {
	defer func(d time.Duration) { handlerExitGrace = d }(handlerExitGrace)
	handlerExitGrace = 200 * time.Millisecond
	h := startRun(t, 100*time.Millisecond, nil, nil)
	<-h.events // ready
	errc := make(chan error, 1)
	go func() { // exits when the connection is closed or /slow answers
		_, _, err := get(t, "http://"+h.addr+"/slow")
		errc <- err
	}()
	<-h.slowIn
	h.signals <- syscall.SIGTERM
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	<-errc // answered "canceled" or cut: either way, not hanging
}

// TestRunThirdSignalClosesAtOnce: a signal while handlers finish closes
// the connections without waiting out handlerExitGrace.
func TestRunThirdSignalClosesAtOnce(t *testing.T) {
	defer func(d time.Duration) { handlerExitGrace = d }(handlerExitGrace)
	handlerExitGrace = time.Hour
	h := startRun(t, time.Hour, nil, func(ctx context.Context) {})
	<-h.events // ready
	errc := make(chan error, 1)
	go func() { // exits when the connection is closed or /slow answers
		_, _, err := get(t, "http://"+h.addr+"/slow")
		errc <- err
	}()
	<-h.slowIn
	h.signals <- syscall.SIGTERM
	<-h.drained
	h.signals <- syscall.SIGTERM
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	<-errc
}

// TestRunIdleExit: with nothing to do, the Idle ends Run gracefully, and
// says STOPPING=1.
func TestRunIdleExit(t *testing.T) {
	notify := listenNotify(t)
	start := time.Now()
	h := startRun(t, time.Second, NewIdle(200*time.Millisecond), func(ctx context.Context) {})
	if msg := notify.next(10 * time.Second); msg != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("exited after %v, before idle_exit", took)
	}
	if msg := notify.next(time.Second); msg != "STOPPING=1" {
		t.Errorf("notification %q, want STOPPING=1", msg)
	}
}

// TestRunIdleWaitsForWork: a request in progress holds idle exit off.
func TestRunIdleWaitsForWork(t *testing.T) {
	idle := NewIdle(100 * time.Millisecond)
	h := startRun(t, time.Second, idle, func(ctx context.Context) {})
	<-h.events // ready
	idle.Begin()
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-h.done:
		h.done <- err
		t.Fatalf("Run returned (%v) while work was in progress", err)
	default:
	}
	idle.End()
	if err := h.wait(10 * time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestListenOwnAddress: without LISTEN_FDS, Listen listens on addr.
func TestListenOwnAddress(t *testing.T) {
	lns, activated, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].Close()
	if activated || len(lns) != 1 || !strings.HasPrefix(lns[0].Addr().String(), "127.0.0.1:") {
		t.Errorf("Listen = %v activated %v, want one own listener", lns, activated)
	}
}

// TestListenOtherProcessSockets: LISTEN_FDS meant for another process is
// an error that says so, not a silent fallback to listen.
func TestListenOtherProcessSockets(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	_, _, err := Listen("127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "LISTEN_PID=1") {
		t.Errorf("Listen = %v, want an error naming LISTEN_PID", err)
	}
}

// TestListenActivated starts the test binary the way systemd starts a
// service: a listening socket as fd 3, LISTEN_FDS=1 and LISTEN_PID its
// pid (set by a shell that then execs it), and one more inherited file
// (fd 4) that systemd did not announce. The child checks what Listen made
// of it (see TestHelperListen).
func TestListenActivated(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, exe, "-test.run=^TestHelperListen$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EXECGW_HELPER_LISTEN="+ln.Addr().String())
	cmd.ExtraFiles = []*os.File{lnFile, w}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "helper ok") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

// TestHelperListen is the child of TestListenActivated.
func TestHelperListen(t *testing.T) {
	want := os.Getenv("EXECGW_HELPER_LISTEN")
	if want == "" {
		t.Skip("helper process of TestListenActivated")
	}
	lns, activated, err := Listen("127.0.0.1:1") // ignored
	if err != nil {
		t.Fatal(err)
	}
	if !activated || len(lns) != 1 || lns[0].Addr().String() != want {
		t.Fatalf("Listen = %v activated %v, want the passed socket on %s", lns, activated, want)
	}
	defer lns[0].Close()
	for _, v := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s still set", v)
		}
	}
	// Every descriptor above stderr is close-on-exec now: the listener's
	// (a dup of fd 3, which is closed) and the unannounced fd 4 too.
	entries, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, gone by now
		}
		fd := e.Name()
		if fd == "0" || fd == "1" || fd == "2" {
			continue
		}
		if !cloexec(string(info)) {
			t.Errorf("fd %s is inherited by children (no O_CLOEXEC): %s", fd, info)
		}
	}
	if t.Failed() {
		return
	}
	// A listener that works.
	go func() { // exits after one connection
		c, err := lns[0].Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", want)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Read(make([]byte, 1)) // EOF once the helper closed it
	c.Close()
	os.Stdout.WriteString("helper ok\n")
}

// cloexec reads the flags line of /proc/self/fdinfo/N (octal).
func cloexec(info string) bool {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			var flags int64
			for _, c := range strings.TrimSpace(v) {
				flags = flags*8 + int64(c-'0')
			}
			return flags&syscall.O_CLOEXEC != 0
		}
	}
	return false
}
