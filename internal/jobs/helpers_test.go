package jobs_test

// The registry's tests run real processes (/bin/sh) against the real
// embedded stores (bbolt and plain files in t.TempDir()). They live outside
// package jobs because jobstore imports jobs.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLong bounds every wait for something that should happen promptly:
// generous, since the machine is small and shared.
const waitLong = 20 * time.Second

// env is a registry with its stores, all under one temporary directory.
type env struct {
	t      *testing.T
	dir    string
	store  *jobstore.Bolt
	output *jobstore.Files
	reg    *jobs.Registry
	logs   *syncBuffer // the registry's log lines, JSON
	// metrics is the registry's Prometheus registry, for scraping.
	metrics *prometheus.Registry
}

func defaultLimits() jobs.Limits {
	return jobs.Limits{MaxConcurrent: 8, MaxQueued: 100, OutputLimit: 1 << 20}
}

// newEnv opens the stores and starts a registry with limits. Cleanup shuts
// the registry down (canceling whatever still runs) and closes the stores.
func newEnv(t *testing.T, limits jobs.Limits) *env {
	t.Helper()
	e := openStores(t, t.TempDir())
	e.start(limits)
	return e
}

// openStores opens the stores under dir without starting a registry.
func openStores(t *testing.T, dir string) *env {
	t.Helper()
	store, err := jobstore.OpenBolt(filepath.Join(dir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	output, err := jobstore.NewFiles(filepath.Join(dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, store: store, output: output}
}

// start starts the registry; Cleanup (which runs before the stores'
// Cleanup) shuts it down.
func (e *env) start(limits jobs.Limits) {
	e.t.Helper()
	e.logs = &syncBuffer{}
	e.metrics = prometheus.NewRegistry()
	e.reg = jobs.New(jobs.Options{
		Store:   e.store,
		Output:  e.output,
		Metrics: e.metrics,
		Log:     zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(e.t), e.logs)),
		Limits:  limits,
	})
	e.t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no grace: cancel what is left at once
		e.reg.Shutdown(ctx)
		e.reg.Close()
	})
}

// command is a command running script with /bin/sh, kill_grace 1s.
func command(name, script string) *config.Command {
	return &config.Command{
		Name:      name,
		Argv:      []string{"/bin/sh", "-c", script},
		Path:      "/bin/sh",
		KillGrace: time.Second,
	}
}

// request is a Request to run cmd with no parameters.
func request(cmd *config.Command, detached bool) jobs.Request {
	inv, err := cmd.Bind(nil)
	if err != nil {
		panic(err)
	}
	return jobs.Request{Command: cmd, Invocation: inv, Detached: detached}
}

func (e *env) submit(cmd *config.Command, detached bool) *jobs.Job {
	e.t.Helper()
	j, err := e.reg.Submit(context.Background(), request(cmd, detached))
	if err != nil {
		e.t.Fatalf("Submit(%s) = %v", cmd.Name, err)
	}
	return j
}

// gate is a file whose existence lets the jobs of gatedCommand end.
type gate string

func newGate(t *testing.T) gate { return gate(filepath.Join(t.TempDir(), "gate")) }

func (g gate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// gatedCommand prints "started", then waits until the gate opens, then
// appends its name to log (if not "") and exits 0.
func gatedCommand(name string, g gate, log string) *config.Command {
	script := fmt.Sprintf("echo started; while [ ! -e %q ]; do sleep 0.01; done", string(g))
	if log != "" {
		script += fmt.Sprintf("; echo %s >> %q", name, log)
	}
	return command(name, script)
}

func waitDone(t *testing.T, j *jobs.Job) jobs.Record {
	t.Helper()
	select {
	case <-j.Done():
	case <-time.After(waitLong):
		t.Fatalf("job %s did not end within %v: %+v", j.ID(), waitLong, j.Record())
	}
	return j.Record()
}

// waitFor polls cond until it holds or waitLong passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLong, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOutput waits until the job's stored stdout contains substr.
func (e *env) waitOutput(j *jobs.Job, substr string) {
	e.t.Helper()
	waitFor(e.t, fmt.Sprintf("stdout of %s to contain %q", j.ID(), substr), func() bool {
		return strings.Contains(e.stored(j.ID(), jobs.Stdout), substr)
	})
}

// stored is the job's stored output, read through the registry.
func (e *env) stored(id string, s jobs.Stream) string {
	e.t.Helper()
	var buf bytes.Buffer
	if err := e.reg.Copy(context.Background(), id, s, &buf, false); err != nil {
		e.t.Fatalf("Copy(%s, %s) = %v", id, s, err)
	}
	return buf.String()
}

// storedRecord is the record the store holds.
func (e *env) storedRecord(id string) jobs.Record {
	e.t.Helper()
	rec, err := e.store.Get(context.Background(), id)
	if err != nil {
		e.t.Fatalf("store.Get(%s) = %v", id, err)
	}
	return rec
}

// outputFiles lists the files of the output store.
func (e *env) outputFiles() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.dir, "output"))
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, ent := range ents {
		names = append(names, ent.Name())
	}
	return names
}

// groupMembers lists the live (not zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		// f[0] state, f[1] ppid, f[2] pgrp
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("process group %d to be gone", pgid), func() bool { return len(groupMembers(pgid)) == 0 })
}

// closeRecorder is a stdin that records being closed.
type closeRecorder struct {
	io.Reader
	mu     sync.Mutex
	closed bool
}

func (c *closeRecorder) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *closeRecorder) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logLines returns the registry's log lines whose message is msg, decoded.
func (e *env) logLines(msg string) []map[string]any {
	e.t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			e.t.Fatalf("log line %q: %v", l, err)
		}
		if m["message"] == msg {
			lines = append(lines, m)
		}
	}
	return lines
}

func isNotFound(err error) bool { return errors.Is(err, jobs.ErrNotFound) }
