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
	for i := range o.jobs {
		full, err := runHundred(ctx, []*gateway{a, b}[i%2])
		if err != nil {
			return err
		}
		if full.StartedAt == nil || full.State != "succeeded" {
			return fmt.Errorf("job %s: %s, started %v", full.ID, full.State, full.StartedAt)
		}
		startLat = append(startLat, full.StartedAt.Sub(full.CreatedAt))
		ran[full.Node]++
	}

	// 5. Redis memory per finished job: the jobs above, and as many more.
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	for i := range o.jobs {
		if _, err := runHundred(ctx, []*gateway{a, b}[i%2]); err != nil {
			return err
		}
	}
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	perJob := float64(after-before) / float64(o.jobs)

	// 3. Cancel sent to the node that does not run the job.
	var cancelLat durations
	for range o.cancels {
		d, err := cancelAcross(ctx, a, nodes, other)
		if err != nil {
			return err
		}
		cancelLat = append(cancelLat, d)
	}

	// 4. Follow on the node that does not run the job.
	var followLat durations
	for range o.follows {
		lat, err := followAcross(ctx, a, nodes, other)
		if err != nil {
			return err
		}
		followLat = append(followLat, lat...)
	}

	r.section("8. Cluster (issue 14)")
	r.printf("Gateways of one cluster on a `redis-server` started by the benchmark (append-only file on, `appendfsync everysec`, " +
		"as `deploy/redis/execgw.conf` ships it), all on this machine; beside them a standalone gateway (bbolt on disk) in the same run.\n\n")
	r.table([]string{"figure", "measured", "beside it"}, [][]string{
		{fmt.Sprintf("bound runs of `/bin/true` per second, %d clients, %v windows alternated", o.clients, o.duration),
			fmt.Sprintf("Redis store: %.0f runs/s (%.2f × bbolt)", red, red/bolt), fmt.Sprintf("bbolt: %.0f runs/s", bolt)},
		{fmt.Sprintf("detached job: created → started, through the cluster's queue, %d jobs", len(startLat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(startLat.pct(50)), ms(startLat.pct(99))), fmt.Sprintf("ran on a: %d, b: %d", ran["a"], ran["b"])},
		{fmt.Sprintf("cancel sent to the other node → whole tree gone (`sh -c 'sleep 300 | cat'`), %d runs", len(cancelLat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(cancelLat.pct(50)), ms(cancelLat.pct(99))), ""},
		{fmt.Sprintf("follow on the other node: line written → line received, %d lines", len(followLat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(followLat.pct(50)), ms(followLat.pct(99))), ""},
		{fmt.Sprintf("Redis memory per finished job (100 bytes of stdout; `used_memory` over %d jobs)", o.jobs),
			kib(perJob), ""},
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
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
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

// cancelAcross starts the tree detached, and times a cancel sent to the
// node that does not run it until the tree is gone.
func cancelAcross(ctx context.Context, submit *gateway, nodes map[string]*gateway, other func(string) *gateway) (time.Duration, error) {
	id, _, err := submitDetached(ctx, submit, submit.client, "tree", "")
	if err != nil {
		return 0, err
	}
	rec, err := waitRunning(ctx, submit, id)
	if err != nil {
		return 0, err
	}
	if nodes[rec.Node] == nil {
		return 0, fmt.Errorf("job %s ran on %q", rec.ID, rec.Node)
	}
	members, err := waitTree(rec.Pid, 5*time.Second)
	if err != nil {
		return 0, err
	}
	fds := openPidfds(members)
	defer closeAll(fds)
	start := time.Now()
	body, err := exchange(ctx, other(rec.Node).client, http.MethodPost, other(rec.Node).url+"/v1/jobs/"+rec.ID+"/cancel")
	if err != nil {
		return 0, err
	}
	gone, err := waitGroupGone(rec.Pid, fds, 10*time.Second)
	if err != nil {
		return 0, err
	}
	if !strings.Contains(string(body), `"state":"canceled"`) {
		return 0, fmt.Errorf("cancel of %s answered %.300s", rec.ID, body)
	}
	return gone.Sub(start), nil
}

// followAcross starts the ticks job and follows its stdout on the node
// that does not run it: each line's latency is its arrival time minus the
// time it holds (one machine, one clock).
func followAcross(ctx context.Context, submit *gateway, nodes map[string]*gateway, other func(string) *gateway) ([]time.Duration, error) {
	id, _, err := submitDetached(ctx, submit, submit.client, "ticks", "n=30")
	if err != nil {
		return nil, err
	}
	rec, err := waitRunning(ctx, submit, id)
	if err != nil {
		return nil, err
	}
	if nodes[rec.Node] == nil {
		return nil, fmt.Errorf("job %s ran on %q", rec.ID, rec.Node)
	}
	follower := other(rec.Node)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, follower.url+"/v1/jobs/"+rec.ID+"/stdout?follow=true", nil)
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
			return nil, fmt.Errorf("job %s: line %q", rec.ID, sc.Text())
		}
		if written := time.Unix(0, ns); written.After(following) { // not a replayed line
			lat = append(lat, got.Sub(written))
		}
	}
	return lat, sc.Err()
}
