package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/execgw/execgw/internal/gatewaytest"
)

// gatewayConfig is the configuration of every gateway the benchmark runs.
// Its commands are the ones the issues name: /bin/true, a tree that exits
// on SIGTERM, sleep for detached jobs, dd for streams.
const gatewayConfig = `# written by the execgw benchmark (bench/)
listen: %s
state_dir: %q
log: {level: %s, format: json}
shutdown_grace: 10s
max_concurrent: %d
max_queued: %d
output_limit: 16MiB
retention: 168h
commands:
  "true":
    description: /bin/true, for per-run overhead and load
    argv: ["true"]
  tree:
    description: a process tree that exits on SIGTERM
    argv: ["sh", "-c", "sleep 300 | cat"]
    kill_grace: 5s
  sleep:
    description: detached jobs that hold a slot
    argv: ["sleep", "{seconds}"]
    params:
      seconds: {type: int, min: 0, max: 3600, default: "60"}
  zeros:
    description: stream throughput
    argv: ["dd", "if=/dev/zero", "bs=1M", "count={count}", "status=none"]
    params:
      count: {type: int, min: 1, max: 100000, required: true}
    timeout: 10m
`

// gatewayOptions tune one gateway.
type gatewayOptions struct {
	stateDir      string // default: <dir>/state
	logLevel      string // default: info
	maxConcurrent int
	maxQueued     int
	// listen is the listen address; default: a free port when the log
	// level hides the "serving" line, else 127.0.0.1:0 (the gateway picks
	// a port and logs it).
	listen string
	// listener, when set, is passed as fd 3 the way systemd does
	// (LISTEN_FDS=1, LISTEN_PID of the gateway) and the gateway's own
	// listen address is ignored.
	listener *os.File
	// commands are more commands, appended to those of gatewayConfig.
	commands string
}

// gateway is one execgw process started by the benchmark.
type gateway struct {
	name    string
	dir     string
	opts    gatewaytest.Options
	proc    *gatewaytest.Gateway
	url     string
	logPath string
	logs    *logTail
	client  *http.Client // keep-alive, for sequential requests
	exited  <-chan struct{}
}

// newGateway writes the configuration into dir and prepares the process;
// start starts it.
func newGateway(bin, dir, name string, opts gatewayOptions) (*gateway, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if opts.stateDir == "" {
		opts.stateDir = filepath.Join(dir, "state")
	}
	if opts.logLevel == "" {
		opts.logLevel = "info"
	}
	if opts.listen == "" {
		opts.listen = "127.0.0.1:0"
		if opts.logLevel != "info" && opts.logLevel != "debug" && opts.listener == nil {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			opts.listen = "127.0.0.1:" + strconv.Itoa(port)
		}
	}
	g := &gateway{
		name:    name,
		dir:     dir,
		logPath: filepath.Join(dir, "gateway.log"),
		client:  newClient(4, nil),
		opts: gatewaytest.Options{
			Bin:      bin,
			Dir:      dir,
			Config:   fmt.Sprintf(gatewayConfig, opts.listen, opts.stateDir, opts.logLevel, opts.maxConcurrent, opts.maxQueued) + opts.commands,
			Listener: opts.listener,
			// If the benchmark dies, its gateways shut down (and cancel
			// their jobs).
			Prepare: func(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} },
		},
	}
	if !strings.HasSuffix(opts.listen, ":0") {
		g.url = "http://" + opts.listen
	}
	return g, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start starts the process, its standard error going to a log file.
func (g *gateway) start() error {
	f, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close() // the child has its own copy
	g.opts.Log = f
	if g.proc, err = gatewaytest.Start(g.opts); err != nil {
		return fmt.Errorf("gateway %s: %w", g.name, err)
	}
	g.exited = g.proc.Exited()
	if g.logs, err = openLogTail(g.logPath); err != nil {
		return err
	}
	return nil
}

// waitServing waits for the "serving" log line and takes the URL from it,
// or, when the URL is known, until /healthz answers.
func (g *gateway) waitServing(ctx context.Context) error {
	if g.url != "" {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := firstResponse(ctx, g.url)
			if err == nil {
				return nil
			}
			select {
			case <-g.exited:
				return fmt.Errorf("gateway %s exited (%v); log %s:\n%s", g.name, g.proc.ExitErr(), g.logPath, tailOf(g.logPath))
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("gateway %s: not serving after 30 s: %w", g.name, err)
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
	}
	line, err := g.logs.waitFor(ctx, 30*time.Second, `"message":"serving"`, func(*logLine) bool { return true })
	if err != nil {
		select {
		case <-g.exited:
			return fmt.Errorf("gateway %s exited (%v); log %s:\n%s", g.name, g.proc.ExitErr(), g.logPath, tailOf(g.logPath))
		default:
		}
		return fmt.Errorf("gateway %s: %w", g.name, err)
	}
	g.url = "http://" + line.Listen
	return nil
}

// startGateway writes the config, starts the gateway and waits until it
// serves.
func startGateway(ctx context.Context, bin, dir, name string, opts gatewayOptions) (*gateway, error) {
	g, err := newGateway(bin, dir, name, opts)
	if err != nil {
		return nil, err
	}
	if err := g.start(); err != nil {
		return nil, err
	}
	if err := g.waitServing(ctx); err != nil {
		g.kill()
		return nil, err
	}
	return g, nil
}

func (g *gateway) pid() int { return g.proc.Pid() }

// stop sends SIGTERM and waits for the exit, SIGKILL after 30 s.
func (g *gateway) stop() error {
	g.client.CloseIdleConnections()
	if g.logs != nil {
		_ = g.logs.f.Close()
	}
	if err := g.proc.Stop(30 * time.Second); err != nil {
		return fmt.Errorf("gateway %s: %w", g.name, err)
	}
	return nil
}

func (g *gateway) kill() { g.proc.Kill() }

// exchange sends one request without a body and returns the response's
// body: an error for a failed exchange or a status other than 200.
func exchange(ctx context.Context, client *http.Client, method, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode, body: string(body)}
	}
	return body, nil
}

// runTrue is one bound JSON run of /bin/true.
func (g *gateway) runTrue(ctx context.Context, client *http.Client) error {
	body, err := exchange(ctx, client, http.MethodPost, g.url+"/v1/commands/true/run")
	if err != nil {
		return err
	}
	if !bytes.Contains(body, []byte(`"state":"succeeded"`)) {
		return &stateError{body: string(body)}
	}
	return nil
}

// getJSON GETs path and decodes the answer into v.
func (g *gateway) getJSON(ctx context.Context, path string, v any) error {
	body, err := exchange(ctx, g.client, http.MethodGet, g.url+path)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// metrics returns the gateway's Prometheus text.
func (g *gateway) metrics(ctx context.Context) (string, error) {
	body, err := exchange(ctx, g.client, http.MethodGet, g.url+"/metrics")
	return string(body), err
}

// metric sums the samples of the series name whose labels contain every
// one of labels (`command="true"`); ok is false when there is none.
func metric(text, name string, labels ...string) (sum float64, ok bool) {
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		rest, found := strings.CutPrefix(line, name)
		if !found || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		fields := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sum += v
			ok = true
		}
	}
	return sum, ok
}

// gauge reads one metric of the gateway, 0 if absent.
func (g *gateway) gauge(ctx context.Context, name string, labels ...string) (float64, error) {
	text, err := g.metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, _ := metric(text, name, labels...)
	return v, nil
}

// waitGauge polls a metric until cond holds, for at most timeout.
func (g *gateway) waitGauge(ctx context.Context, timeout time.Duration, name string, cond func(float64) bool, labels ...string) (float64, error) {
	deadline := time.Now().Add(timeout)
	for {
		v, err := g.gauge(ctx, name, labels...)
		if err != nil {
			return v, err
		}
		if cond(v) {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("gateway %s: %s still %v after %v", g.name, name, v, timeout)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return v, err
		}
	}
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d: %.200s", e.code, strings.TrimSpace(e.body))
}

type stateError struct{ body string }

func (e *stateError) Error() string { return fmt.Sprintf("run did not succeed: %.300s", e.body) }

// newClient is a keep-alive HTTP client for 127.0.0.1 with room for conns
// idle connections; dials, if not nil, counts the connections it opens.
func newClient(conns int, dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        0, // no limit but the per-host one
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// logLine holds the fields the benchmark reads from the gateway's log.
type logLine struct {
	Message      string `json:"message"`
	Listen       string `json:"listen"`
	JobID        string `json:"job_id"`
	Command      string `json:"command"`
	Pid          int    `json:"pid"`
	State        string `json:"state"`
	CancelReason string `json:"cancel_reason"`
}

// logTail reads a growing log file line by line.
type logTail struct {
	f       *os.File
	partial []byte
	chunk   []byte
}

func openLogTail(path string) (*logTail, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &logTail{f: f, chunk: make([]byte, 64<<10)}, nil
}

// skipToEnd forgets everything logged so far.
func (t *logTail) skipToEnd() error {
	t.partial = t.partial[:0]
	_, err := t.f.Seek(0, io.SeekEnd)
	return err
}

// waitFor returns the next line containing substr for which match is
// true, polling the file for at most timeout.
func (t *logTail) waitFor(ctx context.Context, timeout time.Duration, substr string, match func(*logLine) bool) (*logLine, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Complete lines already read.
		for {
			i := bytes.IndexByte(t.partial, '\n')
			if i < 0 {
				break
			}
			line := t.partial[:i]
			t.partial = t.partial[i+1:]
			if !bytes.Contains(line, []byte(substr)) {
				continue
			}
			var l logLine
			if err := json.Unmarshal(line, &l); err == nil && match(&l) {
				// Keep the rest: copy, as partial's array is reused.
				t.partial = append([]byte(nil), t.partial...)
				return &l, nil
			}
		}
		n, err := t.f.Read(t.chunk)
		if n > 0 {
			t.partial = append(t.partial, t.chunk[:n]...)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no log line with %s within %v", substr, timeout)
		}
		if err := sleepCtx(ctx, 500*time.Microsecond); err != nil {
			return nil, err
		}
	}
}

// tailOf returns the last lines of a file, for error messages.
func tailOf(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// procCPU returns the CPU time pid has used (user + system), and that of
// its children it has waited for.
func procCPU(pid int) (self, children time.Duration, err error) {
	p, err := gatewaytest.ReadProc(pid)
	return p.CPU, p.ChildrenCPU, err
}

// openFDs counts the open descriptors of pid.
func openFDs(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}
