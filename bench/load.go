package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/execgw/execgw/internal/gatewaytest"
)

// Load (issue 6): clients concurrent clients on keep-alive connections send
// bound runs of /bin/true for a bounded time; beside it, in the same run
// and with the same client, the minimal net/http + os/exec server, and a
// plain spawn loop (as many goroutines, each exec.Command("/bin/true").Run()
// in a loop, no HTTP at all).

// loadResult is one target's figures.
type loadResult struct {
	name        string
	round       int
	ok          int // runs that succeeded, the drain after the window included
	steady      int // of those, the ones answered after the ramp and before the window closed
	lat         durations
	window      time.Duration // the measured window: clients start runs until it closes
	ramp        time.Duration // the start of the window, left out of rate
	elapsed     time.Duration // the window and the drain: until the last run is answered
	status      map[int]int   // answers other than 200
	badState    int           // 200 but the run did not succeed
	dial, reset int
	eof         int // connection closed by the server
	timeout     int
	other       int
	examples    map[string]string
	warmFailed  int   // failures while the connections were opened
	dials       int64 // connections opened, warm-up included
	windowDials int64 // connections opened during the measured window
	peakRSS     int64 // kB, VmHWM of the server process
	// CPU time of the server process during the window (warm-up
	// included), its own and its children's.
	cpuSelf, cpuChildren time.Duration
}

func (l *loadResult) errors() int {
	n := l.badState + l.dial + l.reset + l.eof + l.timeout + l.other
	for _, c := range l.status {
		n += c
	}
	return n
}

// rate is the runs answered per second in the steady state: the runs
// answered after the ramp and before the window closed, over that time.
// Both ends are left out because their shape depends on how a server
// orders its work, not on its throughput. At the start all clients send at
// once: the minimal server starts every run together and its rate swings
// for a second or more, the gateway's FIFO queue settles at once. At the
// close, the minimal server holds runs already started and answers them all
// within a few hundred milliseconds, while the gateway's queue holds runs
// not yet begun and answers them at its steady rate.
func (l *loadResult) rate() float64 { return float64(l.steady) / (l.window - l.ramp).Seconds() }

// rampOf is the start of a window of length d that rate leaves out: a
// fifth of it, at most 2 s; the minimal server's swings after the start
// last a second or two.
func rampOf(d time.Duration) time.Duration { return min(d/5, 2*time.Second) }

// drainedRate is every run over the window and the drain.
func (l *loadResult) drainedRate() float64 { return float64(l.ok) / l.elapsed.Seconds() }

// count files err under its kind.
func (l *loadResult) count(err error) {
	var kind string
	var se *statusError
	var st *stateError
	var op *net.OpError
	switch {
	case errors.As(err, &se):
		l.status[se.code]++
		kind = fmt.Sprintf("HTTP %d", se.code)
	case errors.As(err, &st):
		l.badState++
		kind = "run failed"
	case errors.As(err, &op) && op.Op == "dial":
		l.dial++
		kind = "dial"
	case errors.Is(err, syscall.ECONNRESET):
		l.reset++
		kind = "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		l.eof++
		kind = "connection closed by the server"
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		l.timeout++
		kind = "timeout"
	default:
		l.other++
		kind = "other"
	}
	if _, ok := l.examples[kind]; !ok {
		l.examples[kind] = err.Error()
	}
}

func (l *loadResult) errorText() string {
	if l.errors() == 0 {
		return "0"
	}
	var parts []string
	for code, n := range l.status {
		parts = append(parts, fmt.Sprintf("%d × HTTP %d", n, code))
	}
	for _, c := range []struct {
		n    int
		name string
	}{{l.badState, "run failed"}, {l.dial, "dial"}, {l.reset, "reset"}, {l.eof, "closed by server"}, {l.timeout, "timeout"}, {l.other, "other"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d × %s", c.n, c.name))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// loadRun drives run from clients goroutines for d. With an HTTP target,
// all share one keep-alive client; first every goroutine sends one request
// (opening the connections), then the window starts.
func loadRun(ctx context.Context, name string, clients int, d time.Duration, pid int, run func(context.Context, *http.Client) error) *loadResult {
	res := &loadResult{name: name, status: map[int]int{}, examples: map[string]string{}}
	httpTarget := pid != 0
	if httpTarget {
		self, children, err := procCPU(pid)
		if err == nil {
			defer func() {
				if s, c, err := procCPU(pid); err == nil {
					res.cpuSelf, res.cpuChildren = s-self, c-children
				}
			}()
		}
	}
	var dials atomic.Int64
	var client *http.Client
	if httpTarget {
		client = newClient(clients, &dials)
		defer client.CloseIdleConnections()
	}
	// Every request ends by this deadline, whatever the server does.
	reqCtx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()

	var mu sync.Mutex
	var warm sync.WaitGroup
	for range clients {
		warm.Add(1)
		go func() { // exits after one request
			defer warm.Done()
			if err := run(reqCtx, client); err != nil {
				mu.Lock()
				res.warmFailed++
				res.count(err)
				mu.Unlock()
			}
		}()
	}
	warm.Wait()
	warmDials := dials.Load()

	start := time.Now()
	deadline := start.Add(d)
	ramp := rampOf(d)
	rampEnd := start.Add(ramp)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() { // exits at the deadline (each request is bounded by reqCtx)
			defer wg.Done()
			var lat durations
			steady := 0
			local := &loadResult{status: map[int]int{}, examples: map[string]string{}}
			for time.Now().Before(deadline) && reqCtx.Err() == nil {
				t := time.Now()
				err := run(reqCtx, client)
				if err != nil {
					local.count(err)
					continue
				}
				end := time.Now()
				lat = append(lat, end.Sub(t))
				if end.After(rampEnd) && end.Before(deadline) {
					steady++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			res.ok += len(lat)
			res.steady += steady
			res.lat = append(res.lat, lat...)
			for code, n := range local.status {
				res.status[code] += n
			}
			res.badState += local.badState
			res.dial += local.dial
			res.reset += local.reset
			res.eof += local.eof
			res.timeout += local.timeout
			res.other += local.other
			for k, v := range local.examples {
				if _, ok := res.examples[k]; !ok {
					res.examples[k] = v
				}
			}
		}()
	}
	wg.Wait()
	res.window, res.ramp = d, ramp
	res.elapsed = time.Since(start)
	res.dials = dials.Load()
	res.windowDials = res.dials - warmDials
	return res
}

// idleCheck is the gateway's state before and after the load.
type idleCheck struct {
	before, soon, after memory
	settled             time.Duration // how long after the load "after" was read
	peakRSS             int64         // kB
	back                bool
}

// Names of the load targets, as the report shows them.
const (
	targetSpawn   = "plain spawn loop (no HTTP)"
	targetMinimal = "minimal net/http + os/exec server"
	targetGateway = "**gateway** as shipped"
	targetTmpfs   = "gateway, state_dir on tmpfs"
)

func benchLoad(ctx context.Context, r *report, bin, dir, shm string, mini *minimal, clients int, d, settle time.Duration, rounds int) error {
	g, err := startGateway(ctx, bin, filepath.Join(dir, "load"), "load", gatewayOptions{maxConcurrent: 64, maxQueued: 1000})
	if err != nil {
		return err
	}
	defer g.stop()
	var tg *gateway
	if shm != "" {
		opts := gatewayOptions{maxConcurrent: 64, maxQueued: 1000, stateDir: filepath.Join(shm, "load")}
		if tg, err = startGateway(ctx, bin, filepath.Join(dir, "load-tmpfs"), "load, state on tmpfs", opts); err != nil {
			return err
		}
		defer tg.stop()
	}
	for range 20 {
		if err := g.runTrue(ctx, g.client); err != nil {
			return err
		}
	}
	g.client.CloseIdleConnections()
	time.Sleep(time.Second)
	var idle idleCheck
	if idle.before, err = gatewayMemory(ctx, g); err != nil {
		return err
	}
	g.client.CloseIdleConnections()

	spawn := func(context.Context, *http.Client) error { return exec.Command("/bin/true").Run() }
	order := []string{targetSpawn, targetMinimal, targetGateway}
	if tg != nil {
		order = append(order, targetTmpfs)
	}
	var results []*loadResult
	for round := range rounds {
		for i := range order {
			target := order[i]
			if round%2 == 1 {
				target = order[len(order)-1-i]
			}
			fmt.Fprintf(os.Stderr, "bench: load round %d: %s, %d clients, %v\n", round+1, target, clients, d)
			var res *loadResult
			var pid int
			switch target {
			case targetSpawn:
				res = loadRun(ctx, target, clients, d, 0, spawn)
			case targetMinimal:
				pid = mini.pid()
				res = loadRun(ctx, target, clients, d, pid, mini.runTrue)
			case targetGateway:
				pid = g.pid()
				res = loadRun(ctx, target, clients, d, pid, g.runTrue)
			case targetTmpfs:
				pid = tg.pid()
				res = loadRun(ctx, target, clients, d, pid, tg.runTrue)
			}
			if pid != 0 {
				if st, err := gatewaytest.Status(pid); err == nil {
					res.peakRSS = st["VmHWM"]
				}
			}
			res.round = round + 1
			results = append(results, res)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}

	// Back to idle? Connections are closed (loadRun's client); wait for the
	// gateway to let go of what the load took. It gives its memory back
	// once it has had nothing in progress for a few seconds; until then
	// only /proc is watched, since a request to /metrics is activity too.
	for _, res := range results {
		if res.name == targetGateway {
			idle.peakRSS = max(idle.peakRSS, res.peakRSS)
		}
	}
	settleStart := time.Now()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	if idle.soon, err = gatewayMemory(ctx, g); err != nil {
		return err
	}
	// Back to idle means no goroutine, heap or memory left over from the
	// load: goroutines within 5 of idle, the Go heap in use within 4 MiB
	// (or twice idle), and anonymous memory within 16 MiB of idle. That
	// last bound is looser because the Go runtime keeps the metadata of its
	// peak heap (GC bitmaps, span structures) for good: a few MiB after
	// 1000 clients. A leak of a few hundred bytes per run fails the heap
	// bound after a load of this size.
	anonBack := func(st map[string]int64) bool {
		return st["RssAnon"] <= idle.before.status["RssAnon"]+16<<10
	}
	for time.Since(settleStart) < settle {
		if st, err := gatewaytest.Status(g.pid()); err != nil || anonBack(st) {
			break
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	if idle.after, err = gatewayMemory(ctx, g); err != nil {
		return err
	}
	idle.settled = time.Since(settleStart)
	idle.back = idle.after.goroutines <= idle.before.goroutines+5 &&
		idle.after.heap <= max(2*idle.before.heap, idle.before.heap+4<<20) &&
		anonBack(idle.after.status)
	running, _ := g.gauge(ctx, "execgw_jobs_running")

	r.section("6. Load: 1000 clients (issue 6)")
	r.printf("%d concurrent clients (goroutines sharing one `http.Transport`, `MaxIdleConnsPerHost` %d), each sending bound "+
		"JSON runs of `/bin/true` one after the other for %v on its keep-alive connection; every client first sends one "+
		"request that opens its connection (not counted). The gateway runs as shipped: state_dir on disk, info logs, "+
		"the default `max_concurrent` 64 (the other bound runs wait in its FIFO queue while connected) and `max_queued` "+
		"1000. Beside it, with the same client: "+
		"the same gateway with its state_dir on tmpfs (where fsync and file creation cost next to nothing), "+
		"the minimal net/http + os/exec server (no records, no logs, no limits), and a plain spawn loop in the benchmark "+
		"process (%d goroutines running `exec.Command(\"/bin/true\").Run()`). %d round(s), the order reversed in every "+
		"other round. Client and server share the machine's %d CPUs. Server CPU per run is the server process's user + system "+
		"time (and its children's, the `/bin/true` processes) over the warm-up and the window, divided by the runs.\n\n", clients, clients, d, clients, rounds, nproc())
	rows := [][]string{}
	for _, res := range results {
		conns := "—"
		if res.dials > 0 {
			conns = fmt.Sprintf("%d (%d in window)", res.dials, res.windowDials)
		}
		peak, cpu := "—", "—"
		if res.peakRSS > 0 {
			peak = kib(float64(res.peakRSS) * 1024)
		}
		if all := res.ok + clients; res.dials > 0 && all > 0 {
			cpu = fmt.Sprintf("%s + %s", ms(res.cpuSelf/time.Duration(all)), ms(res.cpuChildren/time.Duration(all)))
		}
		rows = append(rows, []string{fmt.Sprint(res.round), res.name, fmt.Sprintf("%.0f", res.rate()),
			fmt.Sprintf("%.0f (drain %s)", res.drainedRate(), ms(res.elapsed-res.window)), fmt.Sprint(res.ok),
			ms(res.lat.pct(50)), ms(res.lat.pct(99)), res.errorText(), fmt.Sprint(res.warmFailed), conns, cpu, peak})
	}
	r.table([]string{"round", "target", "runs/s", "runs/s, drain included", "runs", "p50", "p99", "errors", "failed while connecting",
		"connections opened", "server CPU per run: own + children", "server peak RSS"}, rows)
	for _, res := range results {
		for kind, msg := range res.examples {
			r.printf("- %s, round %d, %s: `%.200s`\n", res.name, res.round, kind, msg)
		}
	}
	r.printf("\n`runs/s` is the steady rate: the runs answered after the first %v of the window (the ramp) and "+
		"before it closed, over that time. `drain included` counts every run, the ones answered after the window closed "+
		"too, over the time until the last answer. Both ends depend on how a server orders its work rather than on its "+
		"throughput. At the start every client sends at once: the minimal server starts every run together and its rate "+
		"swings for a second or more, the gateway's FIFO queue settles within a quarter of a second. At the close the "+
		"minimal server holds runs already started and answers them all within a few hundred milliseconds, the gateway's "+
		"queue holds runs not yet begun and answers them at its steady rate. The target is read on the steady rate.\n",
		rampOf(d))
	r.printf("\nConnections opened during the window are not errors: the clients share one pool, and a client that finds no idle " +
		"connection (another took the one it just released) dials a new one; no request failed for it.\n")

	rates, drained := map[string]float64{}, map[string]float64{}
	gwErrors := 0
	for _, res := range results {
		rates[res.name] += res.rate() / float64(rounds)
		drained[res.name] += res.drainedRate() / float64(rounds)
		if res.name == targetGateway {
			gwErrors += res.errors() + res.warmFailed
		}
	}
	gwRate, minRate := rates[targetGateway], rates[targetMinimal]
	r.printf("\nMeans over rounds: gateway %.0f runs/s, minimal server %.0f runs/s (ratio %.2f), plain spawn loop %.0f runs/s",
		gwRate, minRate, gwRate/minRate, rates[targetSpawn])
	if tg != nil {
		r.printf(", gateway with its state on tmpfs %.0f runs/s (ratio to the minimal server %.2f)", rates[targetTmpfs], rates[targetTmpfs]/minRate)
	}
	r.printf(". Drain included: gateway %.0f runs/s, minimal server %.0f runs/s (ratio %.2f).\n\n",
		drained[targetGateway], drained[targetMinimal], drained[targetGateway]/drained[targetMinimal])
	if ratios := roundRatios(results); len(ratios) > 1 {
		// One round's ratio moves by ±10% on a shared 2-CPU machine: the
		// spread says how far the mean can be trusted.
		var parts []string
		for _, x := range ratios {
			parts = append(parts, fmt.Sprintf("%.2f", x))
		}
		r.printf("Gateway / minimal server, round by round: %s (range %.2f–%.2f).\n\n",
			strings.Join(parts, ", "), slices.Min(ratios), slices.Max(ratios))
	}

	r.printf("**Back to idle.** The shipped gateway before the first load (after 20 runs and 1 s idle), then 1 s and %s "+
		"after the last (its clients' connections closed; jobs running at the end: %.0f):\n\n", ms(idle.settled), running)
	row := func(name string, m memory) []string {
		return []string{name, fmt.Sprintf("%.0f", m.goroutines), kib(float64(m.status["VmRSS"]) * 1024),
			kib(float64(m.status["RssAnon"]) * 1024), kib(float64(m.status["RssFile"]) * 1024), kib(m.heap), kib(m.stack),
			fmt.Sprint(m.status["Threads"]), fmt.Sprint(m.fds)}
	}
	r.printf("The gateway gives memory back after 3 s with nothing in progress (two garbage collections, then " +
		"`debug.FreeOSMemory`). `RssAnon` is its own memory: heap, stacks, and the runtime's metadata of its peak heap, " +
		"which Go keeps. `RssFile` is file-backed: the binary and bbolt's mmap of the database, which grows with the " +
		"records stored (each run adds one) and is page cache the kernel reclaims when it needs to.\n\n")
	r.table([]string{"", "goroutines", "VmRSS", "RssAnon", "RssFile", "Go heap in use", "Go stacks in use", "OS threads", "open fds"}, [][]string{
		row("idle, before", idle.before),
		{"peak (VmHWM)", "", kib(float64(idle.peakRSS) * 1024), "", "", "", "", "", ""},
		row("1 s after", idle.soon),
		row(ms(idle.settled)+" after", idle.after),
	})
	r.target(target{issue: "6", figure: "load runs/s, gateway / minimal server", measured: fmt.Sprintf("%.2f (%.0f vs %.0f runs/s)", gwRate/minRate, gwRate, minRate),
		goal: "≥ 1", met: gwRate >= minRate})
	r.target(target{issue: "6", figure: "load errors (gateway), resets and dial errors included", measured: fmt.Sprint(gwErrors),
		goal: "0", met: gwErrors == 0, correctness: true})
	r.target(target{issue: "6", figure: "goroutines and RSS back near idle after the load", measured: fmt.Sprintf("goroutines %.0f → %.0f, Go heap in use %s → %s, RssAnon %s → %s (VmRSS %s → %s) %s after",
		idle.before.goroutines, idle.after.goroutines, kib(idle.before.heap), kib(idle.after.heap),
		kib(float64(idle.before.status["RssAnon"])*1024), kib(float64(idle.after.status["RssAnon"])*1024),
		kib(float64(idle.before.status["VmRSS"])*1024), kib(float64(idle.after.status["VmRSS"])*1024), ms(idle.settled)),
		goal: "goroutines ≤ idle + 5, heap in use ≤ max(2 × idle, idle + 4 MiB), RssAnon ≤ idle + 16 MiB", met: idle.back, correctness: true})
	return nil
}

// roundRatios is the gateway's steady rate over the minimal server's, one
// ratio per round, in round order.
func roundRatios(results []*loadResult) []float64 {
	gw, mini := map[int]float64{}, map[int]float64{}
	for _, res := range results {
		switch res.name {
		case targetGateway:
			gw[res.round] = res.rate()
		case targetMinimal:
			mini[res.round] = res.rate()
		}
	}
	var ratios []float64
	for round := 1; round <= len(gw); round++ {
		if m := mini[round]; m > 0 {
			ratios = append(ratios, gw[round]/m)
		}
	}
	return ratios
}
