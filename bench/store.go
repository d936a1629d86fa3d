package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/execgw/execgw/internal/gatewaytest"
)

// Store (issue 3): job creation latency (a detached POST answered 202),
// gateway memory per running detached job, and records written per second,
// each on a gateway whose state is on disk and, side by side, on one whose
// state is on tmpfs (the same work without the cost of fsync).

// memoryFigures is what one gateway's detached-jobs run measured.
type memoryFigures struct {
	name                   string
	jobs                   int
	create                 durations
	rss, anon, heap, stack float64 // bytes per job
	goroutines, threads    float64 // per job
	fds                    float64 // per job
	cancelAll              time.Duration
	canceledOK             int
	rssBefore              int64 // kB, VmRSS before the jobs
}

func benchStore(ctx context.Context, r *report, gws []*gateway, jobs, recordJobs, recordClients int) error {
	var mems []memoryFigures
	for _, g := range gws {
		if g == nil {
			continue
		}
		m, err := detachedMemory(ctx, g, jobs)
		if err != nil {
			return err
		}
		mems = append(mems, m)
	}
	type rate struct {
		name   string
		perSec float64
		submit durations
		took   time.Duration
	}
	var rates []rate
	for _, g := range gws {
		if g == nil {
			continue
		}
		perSec, submit, took, err := recordRate(ctx, g, recordJobs, recordClients)
		if err != nil {
			return err
		}
		rates = append(rates, rate{g.name, perSec, submit, took})
	}

	r.section("3. Job store: creation latency, records per second, memory per detached job (issue 3)")
	r.printf("**Creation latency.** %d detached jobs (`sleep 60`) created one after the other: `POST` with "+
		"`Prefer: respond-async` until the `202`. The answer comes once its process has started and its record, `running`, is committed "+
		"(bbolt, fdatasync).\n\n", jobs)
	rows := [][]string{}
	for _, m := range mems {
		rows = append(rows, []string{m.name, ms(m.create.mean()), ms(m.create.pct(50)), ms(m.create.pct(99)), ms(m.create.max())})
	}
	r.table([]string{"gateway", "mean", "p50", "p99", "max"}, rows)

	r.printf("**Records written per second.** %d detached `/bin/true` jobs submitted by %d concurrent clients; from the "+
		"first submission until the last job's final record is stored (`execgw_jobs_finished_total`). Each job, started at once, writes "+
		"%d records (running, ended); concurrent writes share bbolt transactions (group commit).\n\n", recordJobs, recordClients, recordsPerJob)
	rows = rows[:0]
	for _, rt := range rates {
		rows = append(rows, []string{rt.name, fmt.Sprintf("%.0f", rt.perSec), fmt.Sprintf("%.0f", rt.perSec/recordsPerJob), ms(rt.took),
			ms(rt.submit.pct(50)), ms(rt.submit.pct(99))})
	}
	r.table([]string{"gateway", "records/s", "jobs/s", "took", "202 p50 under load", "202 p99 under load"}, rows)
	if len(rates) >= 2 && rates[1].perSec > 0 {
		r.printf("Durable records (disk) run at %.2f× the rate of the same gateway on tmpfs.\n\n", rates[0].perSec/rates[1].perSec)
	}

	r.printf("**Memory per running detached job.** The gateway's `VmRSS` (`/proc/PID/status`) after a warm-up and "+
		"with %d detached `sleep 60` jobs running (`max_concurrent` 2048), minus before, divided by the number of jobs. "+
		"The jobs print nothing: no output is counted. `RssAnon` leaves out file-backed pages (bbolt's mmap).\n\n", jobs)
	rows = rows[:0]
	for _, m := range mems {
		rows = append(rows, []string{m.name, fmt.Sprint(m.jobs), kib(float64(m.rssBefore) * 1024), kib(m.rss), kib(m.anon), kib(m.heap), kib(m.stack),
			fmt.Sprintf("%.2f", m.goroutines), fmt.Sprintf("%.2f", m.threads), fmt.Sprintf("%.2f", m.fds),
			fmt.Sprintf("%d of %d in %s", m.canceledOK, m.jobs, ms(m.cancelAll))})
	}
	r.table([]string{"gateway", "jobs", "VmRSS before", "VmRSS / job", "RssAnon / job", "Go heap in use / job", "Go stacks / job", "goroutines / job",
		"OS threads / job", "fds / job", "canceled afterwards (API)"}, rows)
	// The target is read on the gateway as shipped (the first); the
	// others show the spread.
	shipped, lo, hi := mems[0].rss, mems[0].rss, mems[0].rss
	for _, m := range mems {
		lo, hi = min(lo, m.rss), max(hi, m.rss)
	}
	measured := kib(shipped)
	if len(mems) > 1 {
		measured += fmt.Sprintf(" (%s to %s over the %d gateways)", kib(lo), kib(hi), len(mems))
	}
	r.target(target{issue: "3", figure: "gateway memory per running detached job (VmRSS)", measured: measured,
		goal: "< 64 KiB per job", met: shipped < 64*1024})
	return nil
}

// detachedMemory starts jobs detached sleep jobs on g, one after the
// other, measuring each creation and the gateway's memory around them,
// then cancels them all.
func detachedMemory(ctx context.Context, g *gateway, jobs int) (memoryFigures, error) {
	m := memoryFigures{name: g.name, jobs: jobs}
	// Warm-up: the same path, with jobs that end at once.
	for range 20 {
		if _, _, err := submitDetached(ctx, g, g.client, "sleep", "seconds=0"); err != nil {
			return m, err
		}
	}
	if _, err := g.waitGauge(ctx, 30*time.Second, "execgw_jobs_running", func(v float64) bool { return v == 0 }); err != nil {
		return m, err
	}
	time.Sleep(500 * time.Millisecond)
	before, err := gatewayMemory(ctx, g)
	if err != nil {
		return m, err
	}
	ids := make([]string, 0, jobs)
	for range jobs {
		id, d, err := submitDetached(ctx, g, g.client, "sleep", "seconds=60")
		if err != nil {
			cancelJobs(ctx, g, ids)
			return m, err
		}
		ids = append(ids, id)
		m.create = append(m.create, d)
	}
	if _, err := g.waitGauge(ctx, 30*time.Second, "execgw_jobs_running", func(v float64) bool { return v >= float64(jobs) }); err != nil {
		cancelJobs(ctx, g, ids)
		return m, err
	}
	time.Sleep(time.Second)
	after, err := gatewayMemory(ctx, g)
	if err != nil {
		cancelJobs(ctx, g, ids)
		return m, err
	}
	n := float64(jobs)
	m.rss = float64(after.status["VmRSS"]-before.status["VmRSS"]) * 1024 / n
	m.anon = float64(after.status["RssAnon"]-before.status["RssAnon"]) * 1024 / n
	m.heap = (after.heap - before.heap) / n
	m.stack = (after.stack - before.stack) / n
	m.goroutines = (after.goroutines - before.goroutines) / n
	m.threads = float64(after.status["Threads"]-before.status["Threads"]) / n
	m.fds = float64(after.fds-before.fds) / n
	m.rssBefore = before.status["VmRSS"]

	start := time.Now()
	m.canceledOK = cancelJobs(ctx, g, ids)
	m.cancelAll = time.Since(start)
	if _, err := g.waitGauge(ctx, 30*time.Second, "execgw_jobs_running", func(v float64) bool { return v == 0 }); err != nil {
		return m, err
	}
	return m, nil
}

// memory is one reading of the gateway's memory.
type memory struct {
	status     map[string]int64 // /proc/PID/status, kB or counts
	heap       float64          // go_memstats_heap_inuse_bytes
	stack      float64          // go_memstats_stack_inuse_bytes
	goroutines float64
	fds        int
}

func gatewayMemory(ctx context.Context, g *gateway) (memory, error) {
	text, err := g.metrics(ctx)
	if err != nil {
		return memory{}, err
	}
	st, err := gatewaytest.Status(g.pid())
	if err != nil {
		return memory{}, err
	}
	heap, _ := metric(text, "go_memstats_heap_inuse_bytes")
	stack, _ := metric(text, "go_memstats_stack_inuse_bytes")
	gr, _ := metric(text, "go_goroutines")
	return memory{status: st, heap: heap, stack: stack, goroutines: gr, fds: openFDs(g.pid())}, nil
}

// submitDetached POSTs a detached run and returns the job id and the time
// until the 202.
func submitDetached(ctx context.Context, g *gateway, client *http.Client, command, query string) (string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/v1/commands/"+command+"/run?"+query, nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Prefer", "respond-async")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", 0, &statusError{code: resp.StatusCode, body: string(body)}
	}
	var rec jobRecord
	if err := json.Unmarshal(body, &rec); err != nil || rec.ID == "" {
		return "", 0, fmt.Errorf("202 without a job id: %.200s", body)
	}
	return rec.ID, d, nil
}

// cancelJobs cancels jobs through the API, 8 at a time, and returns how
// many ended canceled.
func cancelJobs(ctx context.Context, g *gateway, ids []string) int {
	var mu sync.Mutex
	ok := 0
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { // exits when work is closed
			defer wg.Done()
			for id := range work {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/v1/jobs/"+id+"/cancel", nil)
				if err != nil {
					continue
				}
				resp, err := g.client.Do(req)
				if err != nil {
					continue
				}
				var rec jobRecord
				err = json.NewDecoder(resp.Body).Decode(&rec)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == http.StatusOK && rec.State == "canceled" {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	return ok
}

// recordRate submits jobs detached /bin/true jobs from clients concurrent
// clients and times until every one has its final record stored.
// recordsPerJob is what a job that starts at once stores: its running
// record, then its final one (a queued job is stored once more first).
const recordsPerJob = 2

func recordRate(ctx context.Context, g *gateway, jobs, clients int) (perSec float64, submit durations, took time.Duration, err error) {
	label := `command="true"`
	base, err := g.gauge(ctx, "execgw_jobs_finished_total", label)
	if err != nil {
		return 0, nil, 0, err
	}
	client := newClient(clients, nil)
	defer client.CloseIdleConnections()
	var (
		mu       sync.Mutex
		firstErr error
		next     = make(chan struct{})
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() { // exits when next is closed
			defer wg.Done()
			for range next {
				_, d, err := submitDetached(ctx, g, client, "true", "")
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				submit = append(submit, d)
				mu.Unlock()
			}
		}()
	}
	for range jobs {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return 0, nil, 0, firstErr
	}
	want := base + float64(jobs)
	if _, err := g.waitGauge(ctx, 60*time.Second, "execgw_jobs_finished_total", func(v float64) bool { return v >= want }, label); err != nil {
		return 0, nil, 0, err
	}
	took = time.Since(start)
	return float64(recordsPerJob*jobs) / took.Seconds(), submit, took, nil
}

// jobstoreBench runs the store's own Go benchmarks (internal/jobstore) and
// returns their result lines.
func jobstoreBench(ctx context.Context, modRoot string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^(BenchmarkPut|BenchmarkPutParallel)$",
		"-benchtime", "2000x", "-count", "1", "./internal/jobstore/")
	cmd.Dir = modRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench ./internal/jobstore/: %w\n%s", err, out)
	}
	var lines []string
	re := regexp.MustCompile(`^Benchmark\S+`)
	for line := range strings.Lines(string(out)) {
		if re.MatchString(line) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines, nil
}
