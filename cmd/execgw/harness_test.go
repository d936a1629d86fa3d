package main

// The end-to-end tests drive the real binary, built once per test run
// (with -race when the tests run with it), over a real socket, with real
// signals and real processes, as an operator's client would.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/execgw/execgw/internal/gatewaytest"
)

var buildDir string

// builds holds the gateway binaries built so far, by their -race setting.
var builds = map[bool]*build{false: {}, true: {}}

type build struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	var err error
	buildDir, err = os.MkdirTemp("", "execgw-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(buildDir)
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// binary builds the gateway once and returns its path; with -race when
// the tests run with it.
func binary(t testing.TB) string { return builtBinary(t, raceEnabled) }

// plainBinary is binary without -race: the race runtime makes system
// calls of its own.
func plainBinary(t testing.TB) string { return builtBinary(t, false) }

func builtBinary(t testing.TB, race bool) string {
	t.Helper()
	b := builds[race]
	b.once.Do(func() {
		root, err := gatewaytest.ModuleRoot()
		if err == nil {
			b.path, err = gatewaytest.Build(context.Background(), root, buildDir, race)
		}
		b.err = err
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// gateway is one running execgw process, failing its test on any error.
type gateway struct {
	t        testing.TB
	proc     *gatewaytest.Gateway
	cmd      *exec.Cmd
	URL      string
	Dir      string // holds config.yaml and the state dir
	log      logBuffer
	exited   <-chan struct{}
	stopOnce sync.Once
}

// gatewayOptions tune startGateway.
type gatewayOptions struct {
	dir   string   // reuse a directory (and so a state dir); default: a new one
	bin   string   // the gateway binary; default: binary(t)
	env   []string // extra environment of the gateway process
	extra func(cmd *exec.Cmd)
	// listen is the config's listen address; default 127.0.0.1:0.
	listen string
	// url, when set, is the gateway's URL: startGateway then returns
	// without waiting for the "serving" line (which a gateway started
	// on the first connection, by systemd-socket-activate, logs later).
	url string
}

// startGateway writes config (YAML; "listen" and "state_dir" are added)
// and starts the binary on a free loopback port.
func startGateway(t testing.TB, config string, opts ...gatewayOptions) *gateway {
	t.Helper()
	var o gatewayOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	listen := o.listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	bin := o.bin
	if bin == "" {
		bin = binary(t)
	}
	proc, err := gatewaytest.Start(gatewaytest.Options{
		Bin:     bin,
		Dir:     dir,
		Config:  "listen: " + listen + "\nstate_dir: ./state\nlog: {level: debug, format: json}\n" + config,
		Env:     o.env,
		Prepare: o.extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, proc: proc, cmd: proc.Cmd, URL: o.url, Dir: dir, log: logBuffer{proc.Log}, exited: proc.Exited()}
	t.Cleanup(g.kill)
	if g.URL == "" {
		if g.URL, err = proc.ServingURL(context.Background(), 20*time.Second); err != nil {
			t.Fatalf("%v; log:\n%s", err, g.log.String())
		}
	}
	return g
}

// waitLog waits for a log line containing substr and returns it.
func (g *gateway) waitLog(substr string, timeout time.Duration) string {
	g.t.Helper()
	line, err := g.proc.WaitLog(context.Background(), substr, timeout)
	if err != nil {
		g.t.Fatalf("%v; log:\n%s", err, g.log.String())
	}
	return line
}

// stop sends SIGTERM and waits for a clean exit.
func (g *gateway) stop() {
	g.t.Helper()
	g.signal(syscall.SIGTERM)
	if err := g.wait(60 * time.Second); err != nil {
		g.t.Fatalf("gateway exit: %v; log:\n%s", err, g.log.String())
	}
}

func (g *gateway) signal(sig syscall.Signal) {
	g.t.Helper()
	if err := g.proc.Signal(sig); err != nil {
		g.t.Fatalf("signal gateway: %v", err)
	}
}

// wait waits for the gateway to exit and returns its exit error.
func (g *gateway) wait(timeout time.Duration) error { return g.proc.Wait(timeout) }

func (g *gateway) kill() { g.stopOnce.Do(g.proc.Kill) }

// doInBackground sends a request from a goroutine of its own, which
// exits when the response has come or ctx is canceled; the channel gets
// the request's error.
func (g *gateway) doInBackground(ctx context.Context, method, path string, body io.Reader) <-chan error {
	req, err := http.NewRequestWithContext(ctx, method, g.URL+path, body)
	if err != nil {
		g.t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	return errc
}

// do sends a request and returns the response with its body read.
func (g *gateway) do(method, path string, body io.Reader, header ...string) (*http.Response, []byte) {
	g.t.Helper()
	req, err := http.NewRequest(method, g.URL+path, body)
	if err != nil {
		g.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// record is the part of a job record the tests read.
type record struct {
	ID              string            `json:"id"`
	Command         string            `json:"command"`
	Params          map[string]string `json:"params"`
	State           string            `json:"state"`
	ExitCode        *int              `json:"exit_code"`
	Signal          *string           `json:"signal"`
	CancelReason    *string           `json:"cancel_reason"`
	Limit           *string           `json:"limit"`
	Pid             int               `json:"pid"`
	StartedAt       *time.Time        `json:"started_at"`
	EndedAt         *time.Time        `json:"ended_at"`
	DurationMs      *int64            `json:"duration_ms"`
	StdoutBytes     int64             `json:"stdout_bytes"`
	StderrBytes     int64             `json:"stderr_bytes"`
	StdoutTruncated bool              `json:"stdout_truncated"`
	StderrTruncated bool              `json:"stderr_truncated"`
	OutputError     *string           `json:"output_error"`
	Node            *string           `json:"node"` // the gateway that ran it, in a cluster
	Stdout          *string           `json:"stdout"`
	Stderr          *string           `json:"stderr"`
}

// node is the record's node, "" for none.
func (r record) node() string {
	if r.Node == nil {
		return ""
	}
	return *r.Node
}

// jobLine is the part of a job event log line the tests read.
type jobLine struct {
	JobID string `json:"job_id"`
	Pid   int    `json:"pid"`
	State string `json:"state"`
}

// startupLine decodes the gateway's start-up log line ("execgw starting")
// into a T.
func startupLine[T any](t testing.TB, g *gateway) T {
	t.Helper()
	line := g.log.find(`"message":"execgw starting"`)
	if line == "" {
		t.Fatalf("no start-up line in the log:\n%s", g.log.String())
	}
	return decode[T](t, []byte(line))
}

func decode[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// apiErr is the contract's error body.
type apiErr struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupMembers lists the pids of the live members of process group pgid.
func groupMembers(pgid int) []int {
	var pids []int
	for _, p := range gatewaytest.GroupMembers(pgid) {
		pids = append(pids, p.Pid)
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool { return gatewaytest.Alive(pid) }

// logBuffer is the gateway's log, as the tests read it.
type logBuffer struct{ *gatewaytest.Log }

func (l logBuffer) find(substr string) string        { return l.Find(substr) }
func (l logBuffer) lines(substrs ...string) []string { return l.Lines(substrs...) }
