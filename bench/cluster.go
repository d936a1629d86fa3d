package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// The cluster (issue 14): gateways sharing one redis-server, which the
// benchmark starts with the append-only file on (fsync every second, as
// deploy/redis/execgw.conf ships it). Beside each cluster figure, the same
// on a standalone gateway in the same run where there is one.

// clusterCommands are the commands the cluster's gateways add.
const clusterCommands = `  ticks:
    description: a line with the time in ns every 100 ms, for follow latency
    argv: ["sh", "-c", "for i in $(seq {n}); do date +%s%N; sleep 0.1; done"]
    params:
      n: {type: int, min: 1, max: 1000, default: "30"}
  hundred:
    description: 100 bytes of output, for Redis memory per job
    argv: ["head", "-c", "100", "/dev/zero"]
`

// clusterOptions size the cluster section.
type clusterOptions struct {
	clients  int           // concurrent clients of the throughput test
	duration time.Duration // each throughput window
	jobs     int           // detached jobs for submit-to-start and memory
	cancels  int           // cancels across gateways
	follows  int           // followed jobs, each ~30 lines
}

func benchCluster(ctx context.Context, r *report, bin, dir string, o clusterOptions) error {
	rdb, stopRedis, err := startRedis(ctx, filepath.Join(dir, "redis"))
	if err != nil {
		return err
	}
	defer stopRedis()
	defer rdb.Close()

	gwOpts := func(node string) gatewayOptions {
		return gatewayOptions{maxConcurrent: 256, maxQueued: 10000, logLevel: "info",
			commands: clusterCommands + fmt.Sprintf("cluster:\n  redis: redis://%s/0\n  prefix: bench\n  node: %s\n  node_timeout: 5s\n", rdb.Options().Addr, node)}
	}
	standalone, err := startGateway(ctx, bin, filepath.Join(dir, "standalone"), "standalone", gatewayOptions{maxConcurrent: 256, maxQueued: 10000})
	if err != nil {
		return err
	}
	defer standalone.stop()
	a, err := startGateway(ctx, bin, filepath.Join(dir, "node-a"), "node a", gwOpts("a"))
	if err != nil {
		return err
	}
	defer a.stop()
	b, err := startGateway(ctx, bin, filepath.Join(dir, "node-b"), "node b", gwOpts("b"))
	if err != nil {
		return err
	}
	defer b.stop()
	nodes := map[string]*gateway{"a": a, "b": b}
	other := func(node string) *gateway {
		if node == "a" {
			return b
		}
		return a
	}

	// 1. Bound runs per second, the Redis store against bbolt, alternated.
	var boltRates, redisRates []float64
	for range 2 {
		for _, g := range []*gateway{standalone, a} {
			n, err := runsPerSecond(ctx, g, o.clients, o.duration)
			if err != nil {
				return fmt.Errorf("%s: %w", g.name, err)
			}
			if g == standalone {
				boltRates = append(boltRates, n)
			} else {
				redisRates = append(redisRates, n)
			}
		}
	}
	bolt, red := mean(boltRates), mean(redisRates)

	// 2. Detached submit to start, through the cluster's queue.
	var startLat durations
	ran := map[string]int{}
	sentHere := 0 // jobs run by the node they were submitted to
	for i := range o.jobs {
		g := []*gateway{a, b}[i%2]
		full, err := runHundred(ctx, g)
		if err != nil {
			return fmt.Errorf("submit to start: %w", err)
		}
		if full.StartedAt == nil || full.State != "succeeded" {
			return fmt.Errorf("job %s: %s, started %v", full.ID, full.State, full.StartedAt)
		}
		startLat = append(startLat, full.StartedAt.Sub(full.CreatedAt))
		ran[full.Node]++
		if nodes[full.Node] == g {
			sentHere++
		}
	}

	// 5. Redis memory per finished job: the jobs above, and as many more.
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	var lastID string
	for i := range o.jobs {
		rec, err := runHundred(ctx, []*gateway{a, b}[i%2])
		if err != nil {
			return fmt.Errorf("memory per job: %w", err)
		}
		lastID = rec.ID
	}
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	perJob := float64(after-before) / float64(o.jobs)
	ownKeys, err := keysOfJob(ctx, rdb, lastID)
	if err != nil {
		return err
	}

	// 3. Cancel sent to the node that does not run the job.
	// Beside each, alternated with it: the cancel sent to the job's own
	// node, which is what a standalone gateway does.
	var cancelLat, answerLat, localCancelLat durations
	cancelRan := map[string]int{}
	same := func(node string) *gateway { return nodes[node] }
	for range o.cancels {
		c, err := cancelOne(ctx, a, nodes, other)
		if err != nil {
			return fmt.Errorf("cancel across: %w", err)
		}
		cancelLat = append(cancelLat, c.gone)
		answerLat = append(answerLat, c.answered)
		cancelRan[c.node]++
		local, err := cancelOne(ctx, a, nodes, same)
		if err != nil {
			return fmt.Errorf("cancel on the job's node: %w", err)
		}
		localCancelLat = append(localCancelLat, local.gone)
	}

	// 4. Follow on the node that does not run the job.
	// Beside it, reading the same lines at the same time: a follower on
	// the job's own node.
	var followLat, localFollowLat durations
	followRan := map[string]int{}
	for range o.follows {
		f, err := followAcross(ctx, a, nodes, other)
		if err != nil {
			return fmt.Errorf("follow across: %w", err)
		}
		followLat = append(followLat, f.across...)
		localFollowLat = append(localFollowLat, f.local...)
		followRan[f.node]++
	}

	r.section("8. Cluster (issue 14)")
	r.printf("Gateways of one cluster on a `redis-server` started by the benchmark (append-only file on, `appendfsync everysec`, " +
		"as `deploy/redis/execgw.conf` ships it), all on this machine; beside them a standalone gateway (bbolt on disk) in the same run.\n\n")
	r.table([]string{"figure", "measured", "beside it"}, [][]string{
		{fmt.Sprintf("bound runs of `/bin/true` per second, %d clients, %v windows alternated", o.clients, o.duration),
			fmt.Sprintf("Redis store: %.0f runs/s (%.2f × bbolt)", red, red/bolt), fmt.Sprintf("bbolt: %.0f runs/s", bolt)},
		{fmt.Sprintf("detached job: created → started, through the cluster's queue, %d jobs", len(startLat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(startLat.pct(50)), ms(startLat.pct(99))), fmt.Sprintf("ran on a: %d, b: %d; on the node it was sent to: %d", ran["a"], ran["b"], sentHere)},
		{fmt.Sprintf("cancel sent to the other node → whole tree gone (`sh -c 'sleep 300 | cat'`), %d runs", len(cancelLat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(cancelLat.pct(50)), ms(cancelLat.pct(99))),
			fmt.Sprintf("cancel sent to the job's own node, alternated: p50 %s, p99 %s; the cancel across answered: p50 %s, p99 %s; job on a: %d, b: %d",
				ms(localCancelLat.pct(50)), ms(localCancelLat.pct(99)), ms(answerLat.pct(50)), ms(answerLat.pct(99)), cancelRan["a"], cancelRan["b"])},
		{fmt.Sprintf("follow on the other node: line written → line received, %d lines", len(followLat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(followLat.pct(50)), ms(followLat.pct(99))),
			fmt.Sprintf("follower on the job's own node, same lines: p50 %s, p99 %s; jobs: %d, on a: %d, b: %d",
				ms(localFollowLat.pct(50)), ms(localFollowLat.pct(99)), o.follows, followRan["a"], followRan["b"])},
		{fmt.Sprintf("Redis memory per finished job (100 bytes of stdout; `used_memory` over %d jobs)", o.jobs),
			kib(perJob), "one job's own keys (`MEMORY USAGE`, indexes not counted): " + ownKeys},
	})
	r.target(target{issue: "14", figure: "cancel across gateways p99", measured: ms(cancelLat.pct(99)), goal: "p99 < 50 ms", met: cancelLat.pct(99) < 50*time.Millisecond})
	r.target(target{issue: "14", figure: "follow across gateways p99", measured: ms(followLat.pct(99)), goal: "p99 < 50 ms", met: followLat.pct(99) < 50*time.Millisecond})
	return nil
}

// startRedis starts a redis-server on a free loopback port in dir.
func startRedis(ctx context.Context, dir string) (*redis.Client, func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--logfile", filepath.Join(dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("redis-server: %w", err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			rdb.Close()
			stop()
			return nil, nil, errors.New("redis-server does not answer after 10 s")
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			rdb.Close()
			stop()
			return nil, nil, err
		}
	}
	return rdb, stop, nil
}

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("INFO memory has no used_memory")
}

// keysOfJob sums MEMORY USAGE of the keys that name the job, by type:
// what one finished job holds beside its index entries.
func keysOfJob(ctx context.Context, rdb *redis.Client, id string) (string, error) {
	keys, err := rdb.Keys(ctx, "*"+id+"*").Result()
	if err != nil {
		return "", err
	}
	if len(keys) == 0 {
		return "", fmt.Errorf("job %s: no key in Redis names it", id)
	}
	bytesOf, count := map[string]int64{}, map[string]int{}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			return "", err
		}
		n, err := rdb.MemoryUsage(ctx, k).Result()
		if err != nil {
			return "", fmt.Errorf("MEMORY USAGE %s: %w", k, err)
		}
		bytesOf[typ] += n
		count[typ]++
	}
	types := make([]string, 0, len(bytesOf))
	for typ := range bytesOf {
		types = append(types, typ)
	}
	sort.Strings(types)
	parts := make([]string, 0, len(types))
	for _, typ := range types {
		parts = append(parts, fmt.Sprintf("%d %s %d B", count[typ], typ, bytesOf[typ]))
	}
	return strings.Join(parts, ", "), nil
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// runsPerSecond runs /bin/true bound from clients goroutines for d.
func runsPerSecond(ctx context.Context, g *gateway, clients int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ok atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() { // exits when ctx is done
			defer wg.Done()
			client := newClient(1, nil)
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				if err := g.runTrue(ctx, client); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
				ok.Add(1)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(ok.Load()) / time.Since(start).Seconds(), nil
}

// clusterRecord is what the cluster figures read of a record.
type clusterRecord struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Node      string     `json:"node"`
	Pid       int        `json:"pid"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at"`
}

// runHundred runs the hundred command detached on g, waits for its end
// and returns its record.
func runHundred(ctx context.Context, g *gateway) (clusterRecord, error) {
	var rec clusterRecord
	id, _, err := submitDetached(ctx, g, g.client, "hundred", "")
	if err != nil {
		return rec, err
	}
	if _, err := waitEnded(ctx, g, id); err != nil {
		return rec, err
	}
	err = g.getJSON(ctx, "/v1/jobs/"+id, &rec)
	return rec, err
}

// waitRunning polls a job until it runs and returns its record.
func waitRunning(ctx context.Context, g *gateway, id string) (clusterRecord, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rec clusterRecord
		if err := g.getJSON(ctx, "/v1/jobs/"+id, &rec); err != nil {
			return rec, err
		}
		if rec.State == "running" && rec.Pid > 0 {
			return rec, nil
		}
		if rec.State != "queued" || time.Now().After(deadline) {
			return rec, fmt.Errorf("job %s is %s, not running", id, rec.State)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return rec, err
		}
	}
}

// startOnNode submits command detached to submit and returns its record
// once it runs on one of nodes.
func startOnNode(ctx context.Context, submit *gateway, nodes map[string]*gateway, command, query string) (clusterRecord, error) {
	id, _, err := submitDetached(ctx, submit, submit.client, command, query)
	if err != nil {
		return clusterRecord{}, err
	}
	rec, err := waitRunning(ctx, submit, id)
	if err != nil {
		return clusterRecord{}, err
	}
	if nodes[rec.Node] == nil {
		return clusterRecord{}, fmt.Errorf("job %s ran on %q", rec.ID, rec.Node)
	}
	return rec, nil
}

// timedCancel is one timed cancel.
type timedCancel struct {
	gone     time.Duration // cancel sent → the whole tree gone
	answered time.Duration // cancel sent → its answer read
	node     string        // the node that ran the job
}

// cancelOne starts the tree detached, and times a cancel sent to the
// gateway to(the job's node) picks until the tree is gone.
func cancelOne(ctx context.Context, submit *gateway, nodes map[string]*gateway, to func(string) *gateway) (timedCancel, error) {
	rec, err := startOnNode(ctx, submit, nodes, "tree", "")
	if err != nil {
		return timedCancel{}, err
	}
	members, err := waitTree(rec.Pid, 5*time.Second)
	if err != nil {
		return timedCancel{}, err
	}
	fds := openPidfds(members)
	defer closeAll(fds)
	start := time.Now()
	body, err := exchange(ctx, to(rec.Node).client, http.MethodPost, to(rec.Node).url+"/v1/jobs/"+rec.ID+"/cancel")
	answered := time.Since(start)
	if err != nil {
		return timedCancel{}, err
	}
	gone, err := waitGroupGone(rec.Pid, fds, 10*time.Second)
	if err != nil {
		return timedCancel{}, err
	}
	if !strings.Contains(string(body), `"state":"canceled"`) {
		return timedCancel{}, fmt.Errorf("cancel of %s answered %.300s", rec.ID, body)
	}
	return timedCancel{gone: gone.Sub(start), answered: answered, node: rec.Node}, nil
}

// followed is one job followed from two nodes at once.
type followed struct {
	across []time.Duration // per line, on the node that does not run the job
	local  []time.Duration // per line, on the job's own node
	node   string          // the node that ran the job
}

// followAcross starts the ticks job and follows its stdout on both nodes
// at once: each line's latency is its arrival time minus the time it holds
// (one machine, one clock).
func followAcross(ctx context.Context, submit *gateway, nodes map[string]*gateway, other func(string) *gateway) (followed, error) {
	rec, err := startOnNode(ctx, submit, nodes, "ticks", "n=30")
	if err != nil {
		return followed{}, err
	}
	var across, local []time.Duration
	var acrossErr, localErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // ends with the job's output
		defer wg.Done()
		across, acrossErr = followLines(ctx, other(rec.Node), rec.ID)
	}()
	go func() { // ends with the job's output
		defer wg.Done()
		local, localErr = followLines(ctx, nodes[rec.Node], rec.ID)
	}()
	wg.Wait()
	if err := errors.Join(acrossErr, localErr); err != nil {
		return followed{}, err
	}
	return followed{across: across, local: local, node: rec.Node}, nil
}

// followLines follows a job's stdout on g to its end, and returns each
// line's latency, leaving out lines written before the follow began.
func followLines(ctx context.Context, g *gateway, id string) ([]time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url+"/v1/jobs/"+id+"/stdout?follow=true", nil)
	if err != nil {
		return nil, err
	}
	client := newClient(1, nil)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode}
	}
	following := time.Now()
	var lat []time.Duration
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		got := time.Now()
		ns, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("job %s on %s: line %q", id, g.name, sc.Text())
		}
		if written := time.Unix(0, ns); written.After(following) { // not a replayed line
			lat = append(lat, got.Sub(written))
		}
	}
	return lat, sc.Err()
}
