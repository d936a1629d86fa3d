package main

// End-to-end tests of the cluster mode: several real gateways on one real
// redis-server, each with its own state directory, port and node name.
// They are written from the contract ("Cluster: several gateways on one
// Redis"), not from the implementation.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execgw/execgw/internal/gatewaytest"
	"github.com/execgw/execgw/internal/redistest"
)

// clusterNodeTimeout is the node_timeout of the tests' clusters: short,
// so that a death is noticed quickly, yet long enough for a slow machine's
// heartbeats.
const clusterNodeTimeout = 3 * time.Second

// testCluster is one Redis and the gateways sharing it.
type testCluster struct {
	t           *testing.T
	redis       *redistest.Server
	prefix      string
	commands    string // the configuration besides listen, state_dir and cluster
	nodeTimeout time.Duration
	nodes       map[string]*gateway
}

// newCluster starts a redis-server and one gateway per name, all with the
// configuration commands.
func newCluster(t *testing.T, commands string, names ...string) *testCluster {
	t.Helper()
	c := &testCluster{
		t:           t,
		redis:       redistest.Start(t),
		prefix:      "t-" + strings.TrimPrefix(t.Name(), "TestCluster"),
		commands:    commands,
		nodeTimeout: clusterNodeTimeout,
		nodes:       map[string]*gateway{},
	}
	for _, name := range names {
		c.start(name, clusterNodeOptions{})
	}
	return c
}

// clusterNodeOptions tune testCluster.start.
type clusterNodeOptions struct {
	redisURL string // default: the cluster's Redis
	dir      string // reuse a gateway's directory (and state dir)
	commands string // default: the cluster's configuration
}

// start starts the gateway named name and registers it under that name;
// at the end of the test it is stopped gracefully (so that the process
// trees of its jobs are killed), then killed if it must be.
func (c *testCluster) start(name string, o clusterNodeOptions) *gateway {
	c.t.Helper()
	url := o.redisURL
	if url == "" {
		url = c.redis.URL()
	}
	commands := o.commands
	if commands == "" {
		commands = c.commands
	}
	config := fmt.Sprintf("%s\ncluster:\n  redis: %s\n  prefix: %s\n  node: %s\n  node_timeout: %s\n",
		commands, url, c.prefix, name, c.nodeTimeout)
	g := startGateway(c.t, config, gatewayOptions{dir: o.dir})
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.t.Logf("log of gateway %s:\n%s", name, g.log.String())
		}
		_ = g.proc.Stop(30 * time.Second)
	})
	c.nodes[name] = g
	return g
}

// gateway is the gateway named name.
func (c *testCluster) gateway(name string) *gateway {
	c.t.Helper()
	g, ok := c.nodes[name]
	if !ok {
		c.t.Fatalf("no gateway named %q in the cluster (record's node?)", name)
	}
	return g
}

// other is a gateway of the cluster not named by any of names.
func (c *testCluster) other(names ...string) (string, *gateway) {
	c.t.Helper()
	for _, name := range slices.Sorted(maps.Keys(c.nodes)) {
		if !slices.Contains(names, name) {
			return name, c.nodes[name]
		}
	}
	c.t.Fatalf("no gateway besides %v", names)
	return "", nil
}

// waitRunning waits until the job runs with its tree of at least n
// processes started, and returns its record.
func (g *gateway) waitRunning(id string, n int) record {
	g.t.Helper()
	rec := g.waitState(id, "running", 20*time.Second)
	if rec.Pid <= 0 {
		g.t.Fatalf("running job %s without a pid", id)
	}
	// Whatever the test's outcome, nothing of the job outlives it.
	g.t.Cleanup(func() {
		if len(groupMembers(rec.Pid)) > 0 {
			_ = syscall.Kill(-rec.Pid, syscall.SIGKILL)
		}
	})
	waitFor(g.t, 10*time.Second, fmt.Sprintf("%d processes of job %s", n, id), func() bool {
		return len(groupMembers(rec.Pid)) >= n
	})
	return rec
}

// clist is GET /v1/jobs?query, with the nodes.
func (g *gateway) clist(query string) []record {
	g.t.Helper()
	resp, body := g.do("GET", "/v1/jobs?"+query, nil)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("GET /v1/jobs?%s = %d %s", query, resp.StatusCode, body)
	}
	return decode[struct {
		Jobs []record `json:"jobs"`
	}](g.t, body).Jobs
}

// readyStatus is the status of GET /readyz.
func (g *gateway) readyStatus() int {
	g.t.Helper()
	resp, _ := g.do("GET", "/readyz", nil)
	return resp.StatusCode
}

// wantUnavailable checks an answer is the contract's 503 for a gateway
// without Redis: code unavailable and a Retry-After in seconds.
func wantUnavailable(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	wantError(t, what, resp, body, http.StatusServiceUnavailable, "unavailable")
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("%s: Retry-After %q, want seconds", what, resp.Header.Get("Retry-After"))
	}
}

// noOther5xx fails t for any 5xx answer but 503 in the gateway's log.
func noOther5xx(t *testing.T, name string, g *gateway) {
	t.Helper()
	for _, line := range g.log.lines(`"status":5`) {
		if !strings.Contains(line, `"status":503`) {
			t.Errorf("gateway %s answered a 5xx other than 503: %s", name, line)
		}
	}
}

// clusterNodes is the gateway's execgw_cluster_nodes metric, or -1.
func (g *gateway) clusterNodes() int { return int(g.gauge("execgw_cluster_nodes")) }

// gauge is the value of the metric without labels name, -1 when absent.
func (g *gateway) gauge(name string) float64 {
	g.t.Helper()
	_, body := g.do("GET", "/metrics", nil)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			if n, err := strconv.ParseFloat(v, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

// ranBy names the gateway whose log has the job's process starting.
func (c *testCluster) ranBy(id string) []string {
	var names []string
	for name, g := range c.nodes {
		if len(g.log.lines(`"job_id":"`+id+`"`, `"state":"running"`)) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// clusterPrinterOutput is what the printer command writes, in three
// pieces a little apart: a NUL, a byte that is no UTF-8, no final newline.
const clusterPrinterOutput = "one\ntwo\x00\xff\nthree"

// TestClusterJobReadFromAnyGateway: a detached job submitted to one
// gateway is read, listed and followed byte for byte from the others, live
// while it runs; its record names the gateway that ran it.
func TestClusterJobReadFromAnyGateway(t *testing.T) {
	c := newCluster(t, `
shutdown_grace: 500ms
commands:
  printer:
    argv: ["sh", "-c", 'printf "one\n"; sleep 0.6; printf "two\000\377\n"; sleep 0.6; printf three']
`, "a", "b", "c")
	a, b, cg := c.nodes["a"], c.nodes["b"], c.nodes["c"]

	rec := a.detach("/v1/commands/printer/run")
	// Followed from b while it runs, wherever it runs.
	resp, err := http.Get(b.URL + "/v1/jobs/" + rec.ID + "/stdout?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow from b = %d %s", resp.StatusCode, body)
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "one\n" {
		t.Fatalf("first line followed from b %q, %v", first, err)
	}
	// Read from c while it runs: the record, with its node and pid.
	running := cg.job(rec.ID)
	if running.State != "running" {
		t.Logf("job already %s after its first line (slow machine?)", running.State)
	} else {
		if running.Pid <= 0 {
			t.Errorf("running record read from c has pid %d", running.Pid)
		} else if p, err := gatewaytest.ReadProc(running.Pid); err == nil {
			// The job's process is a child of the gateway that runs it.
			if runner := c.gateway(running.node()); p.Ppid != runner.proc.Pid() {
				t.Errorf("job's pid %d has parent %d; its record names %s, pid %d", running.Pid, p.Ppid, running.node(), runner.proc.Pid())
			}
		}
		if out := cg.output(rec.ID, "stdout"); !strings.HasPrefix(clusterPrinterOutput, out) || out == "" {
			t.Errorf("stdout read from c while running %q, want a prefix of %q", out, clusterPrinterOutput)
		}
		// The bytes produced so far, counted on every gateway: the
		// first line, followed above, is in Redis.
		for name, g := range c.nodes {
			got := g.job(rec.ID)
			listed := g.clist("state=running")
			if got.State != "running" || len(listed) != 1 {
				continue // ended meanwhile
			}
			if got.StdoutBytes < int64(len(first)) || listed[0].StdoutBytes < int64(len(first)) {
				t.Errorf("stdout_bytes of the running job read from %s: %d, listed %d; want at least the %d bytes followed",
					name, got.StdoutBytes, listed[0].StdoutBytes, len(first))
			}
		}
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("follow from b: %v", err)
	}
	if got := first + string(rest); got != clusterPrinterOutput {
		t.Errorf("followed from b %q, want %q", got, clusterPrinterOutput)
	}

	done := cg.waitState(rec.ID, "succeeded", 20*time.Second)
	if done.StdoutBytes != int64(len(clusterPrinterOutput)) || done.ExitCode == nil || *done.ExitCode != 0 {
		t.Errorf("ended record read from c: stdout_bytes %d exit %v", done.StdoutBytes, done.ExitCode)
	}
	node := done.node()
	if !slices.Contains([]string{"a", "b", "c"}, node) {
		t.Fatalf("record's node %q, want one of the gateways", node)
	}
	if ran := c.ranBy(rec.ID); !slices.Equal(ran, []string{node}) {
		t.Errorf("record names node %s; the gateways logging its start: %v", node, ran)
	}
	if line := c.gateway(node).log.find(`"job_id":"` + rec.ID + `"`); !strings.Contains(line, `"node":"`+node+`"`) {
		t.Errorf("job event of gateway %s without its node: %s", node, line)
	}
	for name, g := range c.nodes {
		if got := g.job(rec.ID); got.State != "succeeded" || got.node() != node || got.Pid != done.Pid {
			t.Errorf("record read from %s: %s node %q pid %d", name, got.State, got.node(), got.Pid)
		}
		if out := g.output(rec.ID, "stdout"); out != clusterPrinterOutput {
			t.Errorf("stdout read from %s %q, want %q", name, out, clusterPrinterOutput)
		}
		if out := g.output(rec.ID, "stdout?follow=true"); out != clusterPrinterOutput {
			t.Errorf("stdout followed from %s after the end %q", name, out)
		}
		listed := g.clist("")
		if len(listed) != 1 || listed[0].ID != rec.ID || listed[0].node() != node || listed[0].State != "succeeded" {
			t.Errorf("GET /v1/jobs from %s: %+v, want the one job, run by %s", name, listed, node)
		}
	}
	for name, g := range c.nodes {
		waitFor(t, 10*time.Second, "execgw_cluster_nodes of "+name+" to count the three gateways", func() bool {
			return g.clusterNodes() == 3
		})
	}
	// The events, from a gateway: the output then exit with the record.
	resp2, body := b.do("GET", "/v1/jobs/"+rec.ID+"/events", nil)
	if resp2.StatusCode != http.StatusOK || !strings.Contains(string(body), "event: exit") || !strings.Contains(string(body), "data: one") {
		t.Errorf("events from b = %d %q", resp2.StatusCode, body)
	}
}

// TestClusterEachJobRunsOnce: sixty detached jobs submitted in turn to
// three gateways each run exactly once, all succeed, and more than one
// gateway runs them.
func TestClusterEachJobRunsOnce(t *testing.T) {
	dir := t.TempDir()
	marks := filepath.Join(dir, "marks")
	// Two processes at once per gateway: no gateway can take them all.
	c := newCluster(t, fmt.Sprintf(`
shutdown_grace: 500ms
max_concurrent: 2
commands:
  mark:
    argv: ["sh", "-c", 'echo "$1" >> "$0"; sleep 0.1', '%s', "{n}"]
    params:
      n: {type: int, min: 1, max: 1000, required: true}
`, marks), "a", "b", "c")
	names := []string{"a", "b", "c"}
	const n = 60
	ids := make([]string, n)
	for i := range n {
		g := c.nodes[names[i%3]]
		ids[i] = g.detach("/v1/commands/mark/run?n=" + strconv.Itoa(i+1)).ID
	}
	nodes := map[string]int{}
	a := c.nodes["a"]
	for i, id := range ids {
		rec := c.nodes[names[(i+1)%3]].waitState(id, "succeeded", 60*time.Second)
		nodes[rec.node()]++
	}
	t.Logf("jobs run per node: %v", nodes)
	for node := range nodes {
		if !slices.Contains(names, node) {
			t.Errorf("a record names node %q", node)
		}
	}
	if len(nodes) < 2 {
		t.Errorf("every job ran on one gateway: %v", nodes)
	}
	data, err := os.ReadFile(marks)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]int{}
	for line := range strings.Lines(string(data)) {
		runs[strings.TrimSuffix(line, "\n")]++
	}
	for i := range n {
		if k := strconv.Itoa(i + 1); runs[k] != 1 {
			t.Errorf("job n=%s ran %d times", k, runs[k])
		}
	}
	if len(runs) != n {
		t.Errorf("%d distinct runs recorded, want %d: %v", len(runs), n, runs)
	}
	if listed := a.clist("limit=1000&state=succeeded"); len(listed) != n {
		t.Errorf("%d succeeded jobs listed, want %d", len(listed), n)
	}
}

// TestClusterCommandConcurrencyIsClusterWide: a command's max_concurrent 1
// holds across gateways: no two of its runs overlap, wherever they run.
func TestClusterCommandConcurrencyIsClusterWide(t *testing.T) {
	dir := t.TempDir()
	// mkdir is atomic: a run that finds the lock taken overlaps another.
	c := newCluster(t, fmt.Sprintf(`
shutdown_grace: 500ms
commands:
  single:
    argv: ["sh", "-c", 'mkdir "$0/lock" || echo "overlap $1" >> "$0/bad"; sleep 0.2; echo "$1" >> "$0/ran"; rmdir "$0/lock"', '%s', "{n}"]
    max_concurrent: 1
    params:
      n: {type: int, min: 1, max: 1000, required: true}
`, dir), "a", "b", "c")
	names := []string{"a", "b", "c"}
	const n = 9
	var ids []string
	for i := range n {
		ids = append(ids, c.nodes[names[i%3]].detach("/v1/commands/single/run?n="+strconv.Itoa(i+1)).ID)
	}
	nodes := map[string]int{}
	for _, id := range ids {
		nodes[c.nodes["b"].waitState(id, "succeeded", 60*time.Second).node()]++
	}
	t.Logf("runs per node: %v", nodes)
	if bad, err := os.ReadFile(filepath.Join(dir, "bad")); err == nil {
		t.Errorf("runs overlapped:\n%s", bad)
	}
	ran, err := os.ReadFile(filepath.Join(dir, "ran"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(ran), "\n"); lines != n {
		t.Errorf("%d runs recorded, want %d:\n%s", lines, n, ran)
	}
}

// clusterSleeperConfig is a command whose tree (sh, sleep, cat) runs until
// it is killed.
const clusterSleeperConfig = `
shutdown_grace: 500ms
commands:
  sleeper:
    argv: ["sh", "-c", "echo started; sleep 300 | cat"]
    kill_grace: 2s
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {max_len: 100, required: true}
`

// TestClusterCancelFromAnotherGateway: a cancel sent to a gateway other
// than the one running the job kills the job's whole tree and answers with
// the canceled record.
func TestClusterCancelFromAnotherGateway(t *testing.T) {
	c := newCluster(t, clusterSleeperConfig, "a", "b", "c")
	rec := c.nodes["a"].detach("/v1/commands/sleeper/run")
	running := c.nodes["a"].waitRunning(rec.ID, 3)
	runner := running.node()
	c.gateway(runner)
	name, other := c.other(runner)

	resp, body := other.do("POST", "/v1/jobs/"+rec.ID+"/cancel", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel on %s of a job on %s = %d %s", name, runner, resp.StatusCode, body)
	}
	got := decode[record](t, body)
	if got.State != "canceled" || got.CancelReason == nil || *got.CancelReason != "user" || got.EndedAt == nil || got.node() != runner {
		t.Errorf("cancel on %s answered %s %v ended %v node %q, want canceled user, ended, node %s",
			name, got.State, got.CancelReason, got.EndedAt, got.node(), runner)
	}
	// The answer comes once the tree is dead; the killed processes may
	// still await their reaping as zombies, which groupMembers skips.
	waitFor(t, 2*time.Second, "the job's tree to be gone", func() bool { return len(groupMembers(running.Pid)) == 0 })
	third, g3 := c.other(runner, name)
	if again := g3.job(rec.ID); again.State != "canceled" {
		t.Errorf("record read from %s after the cancel: %s", third, again.State)
	}
	if out := g3.output(rec.ID, "stdout"); out != "started\n" {
		t.Errorf("stdout read from %s after the cancel %q, want the output before it", third, out)
	}
}

// TestClusterNodeKilled: when the gateway running a job is killed with
// SIGKILL, another records the job interrupted within node_timeout (and a
// little); the killed gateway, restarted under its name and state dir,
// leaves none of the job's processes alive.
func TestClusterNodeKilled(t *testing.T) {
	c := newCluster(t, clusterSleeperConfig, "a", "b", "c")
	rec := c.nodes["b"].detach("/v1/commands/sleeper/run")
	running := c.nodes["b"].waitRunning(rec.ID, 3)
	runner := running.node()
	victim := c.gateway(runner)
	name, watcher := c.other(runner)

	victim.signal(syscall.SIGKILL)
	if err := victim.wait(10 * time.Second); err == nil {
		t.Fatalf("gateway %s exited cleanly after SIGKILL", runner)
	}
	killed := time.Now()
	waitFor(t, 2*time.Second, "the job's direct child to die with its gateway", func() bool { return !alive(running.Pid) })

	got := watcher.waitState(rec.ID, "interrupted", c.nodeTimeout+10*time.Second)
	took := time.Since(killed)
	t.Logf("recorded interrupted by the cluster %v after the kill (node_timeout %v)", took, c.nodeTimeout)
	if limit := c.nodeTimeout + 5*time.Second; took > limit {
		t.Errorf("recorded interrupted %v after the kill, want within %v", took, limit)
	}
	if got.EndedAt == nil || got.CancelReason != nil || got.ExitCode != nil || got.node() != runner {
		t.Errorf("interrupted record read from %s: ended %v cancel %v exit %v node %q", name, got.EndedAt, got.CancelReason, got.ExitCode, got.node())
	}
	if out := watcher.output(rec.ID, "stdout"); out != "started\n" {
		t.Errorf("stdout of the interrupted job %q, want kept", out)
	}
	waitFor(t, 10*time.Second, "execgw_cluster_nodes of "+name+" to count two gateways", func() bool {
		return watcher.clusterNodes() == 2
	})

	// Restarted under the same name and state dir, it sweeps what is left
	// of the job's tree (sleep and cat, which no parent-death signal
	// reaches).
	restarted := c.start(runner, clusterNodeOptions{dir: victim.Dir})
	waitFor(t, 10*time.Second, "the job's leftover processes to be killed", func() bool { return len(groupMembers(running.Pid)) == 0 })
	if again := restarted.job(rec.ID); again.State != "interrupted" || !sameTime(again.EndedAt, got.EndedAt) {
		t.Errorf("record after the restart of %s: %s ended %v, want interrupted as recorded", runner, again.State, again.EndedAt)
	}
	// The restarted gateway serves the cluster again.
	after := restarted.detach("/v1/commands/echo/run?text=after")
	watcher.waitState(after.ID, "succeeded", 20*time.Second)
}

// TestClusterGracefulStopLeavesQueue: a gateway stopped with SIGTERM
// leaves the detached jobs waiting in the queue, even those submitted to
// it, queued; the other gateways run them.
func TestClusterGracefulStopLeavesQueue(t *testing.T) {
	c := newCluster(t, `
shutdown_grace: 500ms
commands:
  single:
    argv: ["sh", "-c", 'echo "$0"; sleep "$1"', "{tag}", "{secs}"]
    max_concurrent: 1
    kill_grace: 2s
    params:
      tag: {pattern: '^[a-z0-9]+$', required: true}
      secs: {type: int, min: 0, max: 300, required: true}
`, "a", "b", "c")
	busy := c.nodes["a"].detach("/v1/commands/single/run?tag=busy&secs=300")
	runner := c.nodes["a"].waitRunning(busy.ID, 1).node()
	c.gateway(runner)
	stopped, s := c.other(runner)
	var waiting []string
	for _, tag := range []string{"first", "second"} {
		rec := s.detach("/v1/commands/single/run?secs=0&tag=" + tag)
		if rec.State != "queued" {
			t.Errorf("job %s submitted while the command is busy: %s, want queued", tag, rec.State)
		}
		waiting = append(waiting, rec.ID)
	}

	s.stop()
	live := c.gateway(runner)
	for _, id := range waiting {
		if got := live.job(id); got.State != "queued" || got.CancelReason != nil {
			t.Errorf("job %s after %s stopped: %s %v, want still queued", id, stopped, got.State, got.CancelReason)
		}
	}
	if got := live.job(busy.ID); got.State != "running" {
		t.Errorf("the busy job on %s after %s stopped: %s", runner, stopped, got.State)
	}

	resp, body := live.do("POST", "/v1/jobs/"+busy.ID+"/cancel", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel = %d %s", resp.StatusCode, body)
	}
	var done []record
	for _, id := range waiting {
		rec := live.waitState(id, "succeeded", 20*time.Second)
		if rec.node() == stopped || !slices.Contains([]string{"a", "b", "c"}, rec.node()) {
			t.Errorf("job %s ran on %q, want a gateway still running", id, rec.node())
		}
		done = append(done, rec)
	}
	// The queue is FIFO and the command runs once at a time.
	if done[0].StartedAt != nil && done[1].StartedAt != nil && done[1].StartedAt.Before(*done[0].StartedAt) {
		t.Errorf("the second queued job started (%v) before the first (%v)", done[1].StartedAt, done[0].StartedAt)
	}
	if out := live.output(waiting[1], "stdout"); out != "second\n" {
		t.Errorf("stdout of the second job %q", out)
	}
}

// TestClusterRedisDown: while Redis is away, what needs it answers 503
// unavailable with Retry-After, never another 5xx, and /readyz is 503; a
// job that ends meanwhile has its final record and output once Redis is
// back.
func TestClusterRedisDown(t *testing.T) {
	cl := newClusterWithTimeout(t, `
shutdown_grace: 500ms
commands:
  slow:
    argv: ["sh", "-c", "echo begin; sleep 2; echo end"]
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {max_len: 100, required: true}
`, 10*time.Second, "a", "b", "c")
	a := cl.nodes["a"]
	rec := a.detach("/v1/commands/slow/run")
	running := a.waitState(rec.ID, "running", 20*time.Second)
	a.waitOutput(rec.ID, "begin")

	cl.redis.Stop()
	stoppedAt := time.Now()
	if !alive(running.Pid) {
		t.Fatalf("the job ended before Redis was stopped (slow machine?): the test cannot tell what it means to")
	}
	for name, g := range cl.nodes {
		for _, req := range []struct{ method, path, prefer string }{
			{"GET", "/v1/jobs", ""},
			{"GET", "/v1/jobs/" + rec.ID, ""},
			{"GET", "/v1/jobs/" + rec.ID + "/stdout", ""},
			{"POST", "/v1/commands/echo/run?text=x", "respond-async"},
			{"POST", "/v1/commands/echo/run?text=x", ""},
		} {
			var resp *http.Response
			var body []byte
			if req.prefer != "" {
				resp, body = g.do(req.method, req.path, nil, "Prefer", req.prefer)
			} else {
				resp, body = g.do(req.method, req.path, nil)
			}
			wantUnavailable(t, fmt.Sprintf("%s %s %s on %s without Redis", req.method, req.path, req.prefer, name), resp, body)
		}
		waitFor(t, 10*time.Second, "/readyz of "+name+" to be 503 without Redis", func() bool {
			return g.readyStatus() == http.StatusServiceUnavailable
		})
		if resp, body := g.do("GET", "/healthz", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz of %s without Redis = %d %s, want 200 (it is alive)", name, resp.StatusCode, body)
		}
	}
	// The job ends while Redis is away.
	waitFor(t, 10*time.Second, "the job to end", func() bool { return !alive(running.Pid) })
	away := time.Since(stoppedAt)
	t.Logf("Redis away %v before its restart", away)
	if away >= cl.nodeTimeout {
		t.Fatalf("Redis was away %v, beyond node_timeout %v: the test cannot tell what it means to (slow machine?)", away, cl.nodeTimeout)
	}
	cl.redis.Start()

	var got record
	b := cl.nodes["b"]
	waitFor(t, 20*time.Second, "the job's final record after Redis is back", func() bool {
		resp, body := b.do("GET", "/v1/jobs/"+rec.ID, nil)
		if resp.StatusCode == http.StatusServiceUnavailable {
			return false
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET job after Redis is back = %d %s", resp.StatusCode, body)
		}
		got = decode[record](t, body)
		return got.State != "running"
	})
	if got.State != "succeeded" || got.ExitCode == nil || *got.ExitCode != 0 || got.EndedAt == nil {
		t.Errorf("record after Redis is back: %s exit %v ended %v, want succeeded", got.State, got.ExitCode, got.EndedAt)
	}
	waitFor(t, 20*time.Second, "the job's whole output after Redis is back", func() bool {
		resp, body := b.do("GET", "/v1/jobs/"+rec.ID+"/stdout", nil)
		return resp.StatusCode == http.StatusOK && string(body) == "begin\nend\n"
	})
	for name, g := range cl.nodes {
		waitFor(t, 20*time.Second, "/readyz of "+name+" to be 200 with Redis back", func() bool {
			return g.readyStatus() == http.StatusOK
		})
	}
	// The requests refused meanwhile created no job.
	if listed := b.clist(""); len(listed) != 1 || listed[0].ID != rec.ID {
		t.Errorf("jobs after Redis is back: %v, want only %s", listed, rec.ID)
	}
	for name, g := range cl.nodes {
		noOther5xx(t, name, g)
	}
}

// newClusterWithTimeout is newCluster with another node_timeout.
func newClusterWithTimeout(t *testing.T, commands string, nodeTimeout time.Duration, names ...string) *testCluster {
	t.Helper()
	c := newCluster(t, commands)
	c.nodeTimeout = nodeTimeout
	for _, name := range names {
		c.start(name, clusterNodeOptions{})
	}
	return c
}

// TestClusterGatewayCutOff: a gateway cut off from Redis longer than
// node_timeout kills its running job, which another gateway records
// interrupted; once the gateway reaches Redis again, that record stays.
func TestClusterGatewayCutOff(t *testing.T) {
	c := newCluster(t, clusterSleeperConfig)
	proxy := startRedisProxy(t, c.redis.Addr)
	// c alone at first, so that the job runs there.
	cg := c.start("c", clusterNodeOptions{redisURL: "redis://" + proxy.Addr() + "/0"})
	rec := cg.detach("/v1/commands/sleeper/run")
	running := cg.waitRunning(rec.ID, 3)
	if running.node() != "c" {
		t.Fatalf("the job runs on %q, want c", running.node())
	}
	a := c.start("a", clusterNodeOptions{})
	c.start("b", clusterNodeOptions{})
	// Until they have heard from Redis for a node_timeout, a and b take
	// nobody for dead: let them settle, so that they are quick to record
	// the job interrupted, as they would be in production.
	time.Sleep(c.nodeTimeout)

	proxy.cut()
	cutAt := time.Now()
	resp, body := cg.do("GET", "/v1/jobs/"+rec.ID, nil)
	wantUnavailable(t, "GET job on the cut-off gateway", resp, body)
	waitFor(t, 10*time.Second, "/readyz of the cut-off gateway to be 503", func() bool {
		return cg.readyStatus() == http.StatusServiceUnavailable
	})
	if st := a.readyStatus(); st != http.StatusOK {
		t.Errorf("/readyz of a gateway with Redis = %d", st)
	}

	// No job runs that the cluster believes dead: once its record says
	// interrupted, nothing of its tree is left (the sleeper obeys SIGTERM).
	var got record
	waitFor(t, c.nodeTimeout+10*time.Second, "the job to be recorded interrupted", func() bool {
		got = a.job(rec.ID)
		return got.State == "interrupted"
	})
	t.Logf("recorded interrupted %v after the cut (node_timeout %v)", time.Since(cutAt), c.nodeTimeout)
	if left := groupMembers(running.Pid); len(left) > 0 {
		t.Errorf("recorded interrupted while processes %v of its tree still run", left)
	}
	waitFor(t, 10*time.Second, "the cut-off gateway to kill its job", func() bool {
		return len(groupMembers(running.Pid)) == 0
	})
	if got.node() != "c" || got.EndedAt == nil {
		t.Errorf("interrupted record: node %q ended %v", got.node(), got.EndedAt)
	}

	proxy.resume()
	waitFor(t, 20*time.Second, "/readyz of the gateway to be 200 once it reaches Redis again", func() bool {
		return cg.readyStatus() == http.StatusOK
	})
	// Whatever the gateway had kept to write, it must not overwrite the
	// cluster's record: watch it for a while.
	deadline := time.Now().Add(c.nodeTimeout)
	for time.Now().Before(deadline) {
		if again := a.job(rec.ID); again.State != "interrupted" || !sameTime(again.EndedAt, got.EndedAt) {
			t.Fatalf("record after the gateway reached Redis again: %s ended %v, want interrupted ended %v", again.State, again.EndedAt, got.EndedAt)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if again := cg.job(rec.ID); again.State != "interrupted" {
		t.Errorf("record read from the gateway that was cut off: %s", again.State)
	}
	noOther5xx(t, "c", cg)
}

func sameTime(a, b *time.Time) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}

// redisProxy forwards TCP connections to Redis until cut: then it closes
// every connection and refuses new ones until resumed.
type redisProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the copiers

	mu     sync.Mutex
	isCut  bool
	closed bool
	conns  map[net.Conn]struct{}
}

func startRedisProxy(t *testing.T, target string) *redisProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept() // until close
	t.Cleanup(p.close)
	return p
}

func (p *redisProxy) Addr() string { return p.ln.Addr().String() }

func (p *redisProxy) accept() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.refusing() {
			if up, err := net.DialTimeout("tcp", p.target, 2*time.Second); err == nil {
				p.forward(conn, up)
				continue
			}
		}
		conn.Close()
	}
}

func (p *redisProxy) refusing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.isCut || p.closed
}

// forward copies both ways until either side closes or the proxy cuts.
func (p *redisProxy) forward(down, up net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isCut || p.closed {
		down.Close()
		up.Close()
		return
	}
	p.conns[down], p.conns[up] = struct{}{}, struct{}{}
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		_, _ = io.Copy(dst, src)
		p.drop(down, up)
	}
	p.wg.Add(2)
	go pipe(up, down) // until either side closes
	go pipe(down, up)
}

func (p *redisProxy) drop(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(conns...)
}

func (p *redisProxy) dropLocked(conns ...net.Conn) {
	for _, c := range conns {
		c.Close()
		delete(p.conns, c)
	}
}

// cut closes every connection and refuses new ones.
func (p *redisProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	p.dropLocked(slices.Collect(maps.Keys(p.conns))...)
}

// resume forwards new connections again.
func (p *redisProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = false
}

func (p *redisProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// clusterSingleSleeperConfig is a command whose tree runs until it is
// killed, one at a time in the whole cluster.
const clusterSingleSleeperConfig = `
shutdown_grace: 500ms
commands:
  single:
    argv: ["sh", "-c", "echo started; sleep 300 | cat"]
    max_concurrent: 1
    kill_grace: 2s
`

// cancelAll cancels the jobs ids through g, each answering 200.
func (g *gateway) cancelAll(ids ...string) {
	g.t.Helper()
	for _, id := range ids {
		if resp, body := g.do("POST", "/v1/jobs/"+id+"/cancel", nil); resp.StatusCode != http.StatusOK {
			g.t.Fatalf("cancel %s = %d %s", id, resp.StatusCode, body)
		}
	}
}

// TestClusterIdleExitCountsQueuedWork: a gateway with idle_exit stays up
// while the cluster's queue holds a job it could take (its command, waiting
// for the cluster-wide slot), and exits once the queue is empty; a gateway
// without that command exits idle whatever the queue holds.
func TestClusterIdleExitCountsQueuedWork(t *testing.T) {
	const idleExit = "idle_exit: 1s\n"
	c := newCluster(t, clusterSingleSleeperConfig, "busy")
	cannot := c.start("cannot", clusterNodeOptions{commands: idleExit + `
commands:
  other:
    argv: ["true"]
`})
	busy := c.nodes["busy"]
	first := busy.detach("/v1/commands/single/run")
	busy.waitRunning(first.ID, 3)
	second := busy.detach("/v1/commands/single/run")
	could := c.start("could", clusterNodeOptions{commands: idleExit + clusterSingleSleeperConfig})

	// Three idle_exits later the job still waits for the slot.
	time.Sleep(3 * time.Second)
	if got := could.job(second.ID); got.State != "queued" {
		t.Fatalf("second job %s, want queued behind the first", got.State)
	}
	select {
	case <-could.proc.Exited():
		t.Fatal("gateway could exited idle while the queue held a job it could take")
	default:
	}
	if err := cannot.wait(10 * time.Second); err != nil {
		t.Errorf("gateway cannot, without the queued job's command: %v, want an idle exit", err)
	}

	busy.cancelAll(first.ID, second.ID)
	if err := could.wait(15 * time.Second); err != nil {
		t.Errorf("gateway could once the queue is empty: %v, want an idle exit", err)
	}
}

// TestClusterDeleteFromAnyGateway: DELETE on a gateway that does not run
// the job answers 409 while it runs; once it has ended, DELETE there
// removes its record and output for the whole cluster.
func TestClusterDeleteFromAnyGateway(t *testing.T) {
	c := newCluster(t, clusterSleeperConfig, "a", "b", "c")
	rec := c.nodes["a"].detach("/v1/commands/sleeper/run")
	running := c.nodes["a"].waitRunning(rec.ID, 3)
	runner := running.node()
	name, other := c.other(runner)

	if resp, body := other.do("DELETE", "/v1/jobs/"+rec.ID, nil); resp.StatusCode != http.StatusConflict {
		t.Fatalf("DELETE on %s of the job running on %s = %d %s, want 409", name, runner, resp.StatusCode, body)
	}
	if resp, body := other.do("POST", "/v1/jobs/"+rec.ID+"/cancel", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel = %d %s", resp.StatusCode, body)
	}
	if resp, body := other.do("DELETE", "/v1/jobs/"+rec.ID, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on %s of the ended job = %d %s, want 204", name, resp.StatusCode, body)
	}
	for n, g := range c.nodes {
		for _, path := range []string{"", "/stdout"} {
			if resp, body := g.do("GET", "/v1/jobs/"+rec.ID+path, nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s of the deleted job on %s = %d %s, want 404", path, n, resp.StatusCode, body)
			}
		}
		if listed := g.clist(""); len(listed) != 0 {
			t.Errorf("GET /v1/jobs on %s lists %d jobs after the delete", n, len(listed))
		}
	}
	if n, err := redisClient(t, c.redis).Exists(t.Context(), "{"+c.prefix+"}:out:"+rec.ID+":stdout").Result(); err != nil || n != 0 {
		t.Errorf("the deleted job's stdout stream in Redis: EXISTS = %d, %v", n, err)
	}
}

// TestClusterQueuedMetric: execgw_jobs_queued counts the jobs waiting in
// the cluster's queue on every gateway, whichever received them, and
// execgw_jobs_running the jobs of each gateway.
func TestClusterQueuedMetric(t *testing.T) {
	c := newCluster(t, clusterSingleSleeperConfig, "a", "b")
	a, b := c.nodes["a"], c.nodes["b"]
	first := a.detach("/v1/commands/single/run")
	a.waitRunning(first.ID, 3)
	ids := []string{first.ID, a.detach("/v1/commands/single/run").ID, b.detach("/v1/commands/single/run").ID}
	running := 0.0
	for name, g := range c.nodes {
		if q := g.gauge("execgw_jobs_queued"); q != 2 {
			t.Errorf("execgw_jobs_queued of %s = %v, want the 2 jobs in the cluster's queue", name, q)
		}
		running += g.gauge("execgw_jobs_running")
	}
	if running != 1 {
		t.Errorf("execgw_jobs_running over the gateways = %v, want 1", running)
	}
	b.cancelAll(ids...)
	for name, g := range c.nodes {
		if q := g.gauge("execgw_jobs_queued"); q != 0 {
			t.Errorf("execgw_jobs_queued of %s after the cancels = %v, want 0", name, q)
		}
	}
}
