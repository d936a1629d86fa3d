package main

// Lifecycle end to end: graceful shutdown on SIGTERM, socket activation
// the way systemd does it (and through Debian's systemd-socket-activate),
// sd_notify, idle exit, and the next instance on the same socket.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const lifecycleConfig = `
commands:
  sleep2:
    argv: ["sleep", "2"]
  sleep3:
    argv: ["sleep", "3"]
  echo:
    argv: ["echo", "hi"]
  tree:
    argv: ["sh", "-c", "sleep 300 | cat"]
    kill_grace: 1s
    max_concurrent: 1
  ticker:
    argv: ["sh", "-c", "while :; do echo tick; sleep 0.1; done"]
    kill_grace: 1s
  fds:
    argv: ["sh", "-c", "ls /proc/self/fd; env"]
`

// TestShutdownLetsBoundRunFinish: a bound `sleep 2` in flight when SIGTERM
// arrives completes with succeeded; meanwhile new connections are refused
// and a run on a connection accepted before the signal gets 503; the
// gateway exits 0 as soon as the work is done, not after the grace.
func TestShutdownLetsBoundRunFinish(t *testing.T) {
	g := startGateway(t, "shutdown_grace: 30s\n"+lifecycleConfig)
	addr := strings.TrimPrefix(g.URL, "http://")

	// A connection accepted before the signal; its request is sent after.
	early, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if _, err := io.WriteString(early, "POST /v1/commands/echo/run HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}

	type result struct {
		status int
		body   []byte
		err    error
	}
	bound := make(chan result, 1)
	go func() { // exits when the bound run answers
		resp, err := http.Post(g.URL+"/v1/commands/sleep2/run", "", nil)
		if err != nil {
			bound <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		bound <- result{resp.StatusCode, b, err}
	}()
	g.waitLog(`"message":"job started"`, 20*time.Second)
	time.Sleep(200 * time.Millisecond) // well inside the 2 s of sleep

	start := time.Now()
	g.signal(syscall.SIGTERM)
	g.waitLog(`"message":"draining: new runs refused`, 20*time.Second)

	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted while draining")
	}
	if _, err := io.WriteString(early, "Host: localhost\r\nContent-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(early), nil)
	if err != nil {
		t.Fatalf("run on a connection accepted before SIGTERM: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := decode[apiErr](t, b); resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code != "unavailable" || !resp.Close {
		t.Errorf("new run while draining: %d %s (close %v), want 503 unavailable and Connection: close", resp.StatusCode, b, resp.Close)
	}
	if resp.Header.Get("Execgw-Job-Id") != "" {
		t.Errorf("a refused run carries a job id")
	}

	r := <-bound
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("bound run: %d %s %v", r.status, r.body, r.err)
	}
	if rec := decode[record](t, r.body); rec.State != "succeeded" || rec.ExitCode == nil || *rec.ExitCode != 0 {
		t.Errorf("bound run ended %s exit %v, want succeeded 0", rec.State, rec.ExitCode)
	}
	if err := g.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v; log:\n%s", err, g.log.String())
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("exited %v after SIGTERM: it waited for the grace, not for the job", took)
	}
	if n := len(g.log.lines(`"message":"job started"`)); n != 1 {
		t.Errorf("%d jobs started, want only the one before SIGTERM", n)
	}
	checkLogOrder(t, g, "shutting down", "stopped accepting connections", "draining: new runs refused", `"state":"succeeded"`, "every job has ended", `"message":"stopped"`)
}

// TestShutdownCancelsWhatOutlivesTheGrace: past shutdown_grace a detached
// job is canceled with cancel_reason shutdown and its process tree is
// gone, a queued job is canceled too, a bound raw stream ends with its
// trailers, every record is stored (read back by the next instance), and
// the exit status is 0.
func TestShutdownCancelsWhatOutlivesTheGrace(t *testing.T) {
	cfg := "shutdown_grace: 1s\n" + lifecycleConfig
	g := startGateway(t, cfg)
	detach := func() string {
		t.Helper()
		resp, body := g.do("POST", "/v1/commands/tree/run", nil, "Prefer", "respond-async")
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("detached run: %d %s", resp.StatusCode, body)
		}
		return decode[record](t, body).ID
	}
	running := detach()
	queued := detach() // tree allows one at a time
	var startLine []string
	waitFor(t, 20*time.Second, "the first job to start", func() bool {
		startLine = g.log.lines(`"job_id":"`+running+`"`, `"message":"job started"`)
		return len(startLine) > 0
	})
	started := decode[jobLine](t, []byte(startLine[0]))
	waitFor(t, 10*time.Second, "sleep and cat to start", func() bool { return len(groupMembers(started.Pid)) >= 3 })

	// A bound stream that would go on forever.
	type result struct {
		id, state string
		err       error
	}
	stream := make(chan result, 1)
	req, _ := http.NewRequest("POST", g.URL+"/v1/commands/ticker/run", nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // exits when the stream ends
		defer resp.Body.Close()
		_, err := io.Copy(io.Discard, resp.Body)
		stream <- result{resp.Header.Get("Execgw-Job-Id"), resp.Trailer.Get("Execgw-State"), err}
	}()

	start := time.Now()
	g.signal(syscall.SIGTERM)
	if err := g.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v; log:\n%s", err, g.log.String())
	}
	took := time.Since(start)
	if took < time.Second {
		t.Errorf("exited %v after SIGTERM, before shutdown_grace", took)
	}
	if members := groupMembers(started.Pid); len(members) != 0 {
		t.Errorf("processes of the canceled job survive the gateway: %v", members)
	}
	var s result
	select {
	case s = <-stream:
	case <-time.After(10 * time.Second):
		t.Fatalf("the bound stream is still open after the gateway exited")
	}
	if s.err != nil || s.state != "canceled" {
		t.Errorf("bound stream ended with %v, trailer Execgw-State %q; want a clean end and canceled", s.err, s.state)
	}
	if len(g.log.lines("shutdown grace elapsed; canceling jobs")) == 0 {
		t.Errorf("the log does not say the grace elapsed:\n%s", g.log.String())
	}

	// The next instance reads every record the way they were stored.
	g2 := startGateway(t, cfg, gatewayOptions{dir: g.Dir})
	for _, id := range []string{running, queued, s.id} {
		resp, body := g2.do("GET", "/v1/jobs/"+id, nil)
		rec := decode[record](t, body)
		if resp.StatusCode != 200 || rec.State != "canceled" || rec.CancelReason == nil || *rec.CancelReason != "shutdown" || rec.EndedAt == nil {
			t.Errorf("job %s after restart: %d %s", id, resp.StatusCode, body)
		}
	}
	if len(g2.log.lines("interrupted")) != 0 {
		t.Errorf("the next instance found jobs left unfinished:\n%s", g2.log.String())
	}
	g2.stop()
}

// TestSecondSignalCutsGrace: a second SIGTERM cancels the jobs at once
// instead of after a minute of grace.
func TestSecondSignalCutsGrace(t *testing.T) {
	g := startGateway(t, "shutdown_grace: 60s\n"+lifecycleConfig)
	resp, body := g.do("POST", "/v1/commands/tree/run", nil, "Prefer", "respond-async")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("detached run: %d %s", resp.StatusCode, body)
	}
	id := decode[record](t, body).ID
	g.waitLog(`"message":"job started"`, 20*time.Second)

	g.signal(syscall.SIGTERM)
	g.waitLog(`"message":"draining: new runs refused`, 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	if exited(g) {
		t.Fatalf("exited before the second signal, with the job running; log:\n%s", g.log.String())
	}
	start := time.Now()
	g.signal(syscall.SIGTERM)
	if err := g.wait(20 * time.Second); err != nil {
		t.Fatalf("exit: %v; log:\n%s", err, g.log.String())
	}
	t.Logf("exited %v after the second signal", time.Since(start))
	if len(g.log.lines("second signal")) == 0 {
		t.Errorf("the log does not mention the second signal")
	}
	if len(g.log.lines(`"job_id":"`+id, `"message":"job ended"`, `"cancel_reason":"shutdown"`)) != 1 {
		t.Errorf("no job ended line with cancel_reason shutdown:\n%s", g.log.String())
	}
}

// TestSocketActivation starts the gateway the way systemd does: the test
// holds a listening socket and passes it as fd 3 with LISTEN_FDS and
// LISTEN_PID (set by a shell that execs the gateway, so the pid is its
// own), and a NOTIFY_SOCKET to listen on. The gateway serves on it and
// not on `listen`, leaks neither the descriptor nor the variables into a
// command (nor a descriptor inherited unannounced), says READY=1 and
// STOPPING=1, and the next instance on the same
// socket serves a connection made while no instance ran, and the previous
// instance's job.
func TestSocketActivation(t *testing.T) {
	ln, lnFile := heldListener(t)
	notify := listenNotify(t)
	notListening := freeAddr(t)
	// A descriptor inherited without being announced must not reach a
	// command either.
	stray, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	opts := gatewayOptions{
		listen: notListening,
		env:    []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=1000000"},
		extra:  activate(lnFile, stray),
	}
	g := startGateway(t, lifecycleConfig, opts)
	if want := "http://" + ln.Addr().String(); g.URL != want {
		t.Errorf("serving %s, want the passed socket %s", g.URL, want)
	}
	if msg := notify.next(t, 20*time.Second); msg != "READY=1" {
		t.Errorf("first notification %q, want READY=1", msg)
	}
	if !strings.Contains(g.log.find(`"message":"execgw starting"`), `"socket_activated":true`) {
		t.Errorf("the start line does not say socket_activated: %s", g.log.find("execgw starting"))
	}
	if c, err := net.Dial("tcp", notListening); err == nil {
		c.Close()
		t.Errorf("the gateway also listens on %s, its config's listen", notListening)
	}
	id := checkChildSeesNothing(t, g)

	g.signal(syscall.SIGTERM)
	if msg := notify.next(t, 20*time.Second); msg != "STOPPING=1" {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", msg)
	}
	if err := g.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v; log:\n%s", err, g.log.String())
	}

	// No instance runs: a client's connection waits in the socket's
	// backlog, and the next instance serves it.
	type result struct {
		status int
		body   []byte
		err    error
	}
	waiting := make(chan result, 1)
	go func() { // exits when the next instance answers, or at the client timeout
		client := &http.Client{Timeout: 60 * time.Second}
		resp, err := client.Get(g.URL + "/v1/jobs/" + id)
		if err != nil {
			waiting <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		waiting <- result{resp.StatusCode, b, err}
	}()
	time.Sleep(200 * time.Millisecond)
	opts.dir = g.Dir
	g2 := startGateway(t, lifecycleConfig, opts)
	r := <-waiting
	if r.err != nil || r.status != 200 || decode[record](t, r.body).State != "succeeded" {
		t.Errorf("the previous instance's job from the next one: %d %s %v", r.status, r.body, r.err)
	}
	if msg := notify.next(t, 20*time.Second); msg != "READY=1" {
		t.Errorf("next instance's first notification %q, want READY=1", msg)
	}
	g2.stop()
}

// TestIdleExitUnderSocketActivation: with idle_exit the gateway exits by
// itself, status 0, but not while a detached job runs (nor for an idle
// keep-alive connection); the next instance on the same socket serves the
// finished job, and exits by itself in turn.
func TestIdleExitUnderSocketActivation(t *testing.T) {
	_, lnFile := heldListener(t)
	notify := listenNotify(t)
	cfg := "idle_exit: 1s\nshutdown_grace: 5s\n" + lifecycleConfig
	opts := gatewayOptions{env: []string{"NOTIFY_SOCKET=" + notify.path}, extra: activate(lnFile)}
	g := startGateway(t, cfg, opts)
	notify.next(t, 20*time.Second) // READY=1

	resp, body := g.do("POST", "/v1/commands/sleep3/run", nil, "Prefer", "respond-async")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("detached run: %d %s", resp.StatusCode, body)
	}
	submitted := time.Now()
	id := decode[record](t, body).ID
	// An idle keep-alive connection, its one request answered.
	idleConn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer idleConn.Close()
	if _, err := io.WriteString(idleConn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(idleConn), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz on the keep-alive connection: %v", err)
	}

	// Twice idle_exit later the job still runs, and so does the gateway.
	time.Sleep(2 * time.Second)
	if exited(g) {
		t.Fatalf("exited while a detached job was running; log:\n%s", g.log.String())
	}
	if err := g.wait(30 * time.Second); err != nil {
		t.Fatalf("did not exit cleanly after idle_exit: %v; log:\n%s", err, g.log.String())
	}
	// The job ends 3 s after it started, the gateway idle_exit after that.
	if took := time.Since(submitted); took < 4*time.Second {
		t.Errorf("exited %v after the job started, before its end plus idle_exit", took)
	}
	if msg := notify.next(t, time.Second); msg != "STOPPING=1" {
		t.Errorf("notification at idle exit %q, want STOPPING=1", msg)
	}
	checkLogOrder(t, g, `"state":"succeeded"`, "idle: no request or job for idle_exit", `"message":"stopped"`)

	opts.dir = g.Dir
	start := time.Now()
	g2 := startGateway(t, cfg, opts)
	resp, body = g2.do("GET", "/v1/jobs/"+id, nil)
	if rec := decode[record](t, body); resp.StatusCode != 200 || rec.State != "succeeded" {
		t.Errorf("the previous instance's job from the next one: %d %s", resp.StatusCode, body)
	}
	if err := g2.wait(30 * time.Second); err != nil {
		t.Fatalf("next instance did not exit cleanly after idle_exit: %v; log:\n%s", err, g2.log.String())
	}
	t.Logf("next instance: started, served one request, and exited idle within %v", time.Since(start))
}

// TestSystemdSocketActivate goes through Debian's own
// systemd-socket-activate: it binds the port and execs the gateway on the
// first connection, which the gateway serves.
func TestSystemdSocketActivate(t *testing.T) {
	const ssa = "/usr/bin/systemd-socket-activate"
	if _, err := os.Stat(ssa); err != nil {
		t.Skipf("%s is not installed (Debian package systemd): %v", ssa, err)
	}
	addr := freeAddr(t)
	g := startGateway(t, lifecycleConfig, gatewayOptions{
		url: "http://" + addr,
		extra: func(cmd *exec.Cmd) {
			cmd.Args = append([]string{ssa, "-l", addr}, cmd.Args...)
			cmd.Path = ssa
		},
	})
	waitFor(t, 20*time.Second, "systemd-socket-activate to listen on "+addr, func() bool { return listening(t, addr) })
	if line := g.log.find("execgw starting"); line != "" {
		t.Fatalf("the gateway started before the first connection: %s", line)
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Get(g.URL + "/healthz")
	if err != nil {
		t.Fatalf("first connection: %v; log:\n%s", err, g.log.String())
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("first connection: %d", resp.StatusCode)
	}
	// os/exec copies the log from a pipe: the lines may trail the response.
	waitFor(t, 10*time.Second, "the serving line", func() bool { return g.log.find(`"message":"serving"`) != "" })
	if !strings.Contains(g.log.find(`"message":"execgw starting"`), `"socket_activated":true`) {
		t.Errorf("the start line does not say socket_activated:\n%s", g.log.String())
	}
	if want := `"listen":"` + addr + `"`; !strings.Contains(g.log.find(`"message":"serving"`), want) {
		t.Errorf("serving line %s, want %s", g.log.find(`"message":"serving"`), want)
	}
	checkChildSeesNothing(t, g)
	g.stop()
}

// checkChildSeesNothing runs `ls /proc/self/fd; env` as a command: it
// must see its own descriptors only (0-2, and 3, the one ls opens for the
// directory) and none of the variables systemd gives the gateway. It
// returns the job's id.
func checkChildSeesNothing(t *testing.T, g *gateway) string {
	t.Helper()
	resp, body := g.do("POST", "/v1/commands/fds/run", nil)
	rec := decode[record](t, body)
	if resp.StatusCode != 200 || rec.State != "succeeded" || rec.Stdout == nil {
		t.Fatalf("fds: %d %s", resp.StatusCode, body)
	}
	var fds []int
	var env []string
	for line := range strings.SplitSeq(strings.TrimSpace(*rec.Stdout), "\n") {
		if fd, err := strconv.Atoi(line); err == nil {
			fds = append(fds, fd)
		} else {
			env = append(env, line)
		}
	}
	slices.Sort(fds)
	if !slices.Equal(fds, []int{0, 1, 2, 3}) {
		t.Errorf("descriptors of a command %v, want [0 1 2 3] (3: ls's own directory)", fds)
	}
	for _, v := range env {
		for _, bad := range []string{"LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_"} {
			if strings.HasPrefix(v, bad) {
				t.Errorf("a command sees %s", v)
			}
		}
	}
	return rec.ID
}

// exited reports whether the gateway process has exited, without waiting.
func exited(g *gateway) bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// heldListener is the socket systemd would hold: open across instances.
func heldListener(t *testing.T) (net.Listener, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln, f
}

// activate makes startGateway pass lnFile as fd 3 as systemd does:
// LISTEN_PID must be the gateway's pid, known only in the child, so a
// shell sets it and execs the gateway in its place. Files in unannounced
// follow as fds 4, 5...: inherited, but not named by LISTEN_FDS.
func activate(lnFile *os.File, unannounced ...*os.File) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) {
		cmd.Args = append([]string{"sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`}, cmd.Args...)
		cmd.Path = "/bin/sh"
		cmd.ExtraFiles = append([]*os.File{lnFile}, unannounced...)
	}
}

// freeAddr returns a loopback address nothing listens on (now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// listening reports whether a socket listens on addr (127.0.0.1:port),
// without connecting to it.
func listening(t *testing.T, addr string) bool {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0100007F:%04X", p)
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" { // 0A: LISTEN
			return true
		}
	}
	return false
}

// notifySocket stands in for systemd's NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next notification, failing the test after timeout.
func (n *notifySocket) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = n.conn.SetReadDeadline(time.Now().Add(timeout))
	k, err := n.conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify message: %v", err)
	}
	return string(buf[:k])
}

// checkLogOrder checks that the first log lines holding each of substrs
// come in that order.
func checkLogOrder(t *testing.T, g *gateway, substrs ...string) {
	t.Helper()
	log := g.log.String()
	last, lastS := -1, ""
	for _, s := range substrs {
		i := strings.Index(log, s)
		if i < 0 {
			t.Errorf("no log line with %s:\n%s", s, log)
			return
		}
		if i < last {
			t.Errorf("log: %s comes before %s:\n%s", s, lastS, log)
			return
		}
		last, lastS = i, s
	}
}

// TestServeSchedulerProcs checks the gateway's GOMAXPROCS: twice the
// runtime's default, or the operator's GOMAXPROCS as it is.
func TestServeSchedulerProcs(t *testing.T) {
	procs := func(g *gateway) int {
		t.Helper()
		return startupLine[struct {
			Procs int `json:"gomaxprocs"`
		}](t, g).Procs
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// The test and the gateway run on the same CPUs under the same limits.
		if got, want := procs(startGateway(t, lifecycleConfig)), 2*runtime.GOMAXPROCS(0); got != want {
			t.Errorf("gomaxprocs %d, want %d", got, want)
		}
	}
	if got := procs(startGateway(t, lifecycleConfig, gatewayOptions{env: []string{"GOMAXPROCS=3"}})); got != 3 {
		t.Errorf("with GOMAXPROCS=3: gomaxprocs %d, want 3", got)
	}
}
