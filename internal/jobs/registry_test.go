package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execgw/execgw/internal/jobs"
)

func TestRunStoresRecordAndOutput(t *testing.T) {
	e := newEnv(t, defaultLimits())
	tests := []struct {
		name           string
		script         string
		state          jobs.State
		exit           int
		stdout, stderr string
	}{
		{"succeeded", "echo out; echo err >&2", jobs.Succeeded, 0, "out\n", "err\n"},
		{"failed", "echo out; exit 3", jobs.Failed, 3, "out\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := e.submit(command("c", tc.script), false)
			rec := waitDone(t, j)
			if rec.State != tc.state || rec.ExitCode == nil || *rec.ExitCode != tc.exit || rec.Signal != "" {
				t.Errorf("record %+v, want %s exit %d", rec, tc.state, tc.exit)
			}
			if rec.Pid <= 0 || rec.CreatedAt.IsZero() || rec.StartedAt.IsZero() || rec.EndedAt.IsZero() || rec.EndedAt.Before(rec.StartedAt) {
				t.Errorf("record lacks pid or times: %+v", rec)
			}
			if rec.StdoutBytes != int64(len(tc.stdout)) || rec.StderrBytes != int64(len(tc.stderr)) {
				t.Errorf("bytes %d/%d, want %d/%d", rec.StdoutBytes, rec.StderrBytes, len(tc.stdout), len(tc.stderr))
			}
			if got := e.stored(j.ID(), jobs.Stdout); got != tc.stdout {
				t.Errorf("stored stdout %q, want %q", got, tc.stdout)
			}
			if got := e.stored(j.ID(), jobs.Stderr); got != tc.stderr {
				t.Errorf("stored stderr %q, want %q", got, tc.stderr)
			}
			// Once ended, the store holds the same record.
			if st := e.storedRecord(j.ID()); st.State != rec.State || !st.EndedAt.Equal(rec.EndedAt) || st.StdoutBytes != rec.StdoutBytes {
				t.Errorf("stored record %+v, live %+v", st, rec)
			}
			if e.reg.Live(j.ID()) != nil {
				t.Errorf("ended job still live")
			}
		})
	}
	if n := e.reg.Active(); n != 0 {
		t.Errorf("Active() = %d after every job ended", n)
	}
}

func TestStartFailureIsFailed(t *testing.T) {
	e := newEnv(t, defaultLimits())
	cmd := command("missing", "")
	cmd.Argv = []string{"/nonexistent/program"}
	cmd.Path = cmd.Argv[0]
	rec := waitDone(t, e.submit(cmd, false))
	if rec.State != jobs.Failed || rec.ExitCode != nil || rec.EndedAt.IsZero() {
		t.Errorf("record %+v, want failed without exit code, ended", rec)
	}
	if n := e.reg.Active(); n != 0 {
		t.Errorf("Active() = %d: the failed start kept its slot", n)
	}
}

// TestFIFO: with one slot, queued jobs run one at a time in the order
// they were submitted.
func TestFIFO(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 10, OutputLimit: 1 << 20})
	g := newGate(t)
	order := filepath.Join(t.TempDir(), "order")
	first := e.submit(gatedCommand("first", g, order), true)
	e.waitOutput(first, "started")
	var queued []*jobs.Job
	for i := range 4 {
		j := e.submit(gatedCommand("q"+strconv.Itoa(i), g, order), i%2 == 0)
		queued = append(queued, j)
	}
	for _, j := range queued {
		if rec := j.Record(); rec.State != jobs.Queued || rec.Pid != 0 {
			t.Errorf("job behind a full slot: %s pid %d, want queued", rec.State, rec.Pid)
		}
		if st := e.storedRecord(j.ID()); st.State != jobs.Queued {
			t.Errorf("stored state %s, want queued", st.State)
		}
	}
	g.open(t)
	for _, j := range queued {
		if rec := waitDone(t, j); rec.State != jobs.Succeeded {
			t.Errorf("queued job ended %s", rec.State)
		}
	}
	b, err := os.ReadFile(order)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "first\nq0\nq1\nq2\nq3\n"; got != want {
		t.Errorf("jobs ran in order %q, want %q", got, want)
	}
	for i := 1; i < len(queued); i++ {
		prev, cur := queued[i-1].Record(), queued[i].Record()
		if cur.StartedAt.Before(prev.EndedAt) {
			t.Errorf("job %d started before job %d ended: two ran at once", i, i-1)
		}
	}
}

// TestPerCommandLimit: a command at its own max_concurrent queues its
// jobs without holding up other commands, even when the queue is full.
func TestPerCommandLimit(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 4, MaxQueued: 1, OutputLimit: 1 << 20})
	g := newGate(t)
	limited := gatedCommand("limited", g, "")
	limited.MaxConcurrent = 1
	free := gatedCommand("free", g, "")

	a := e.submit(limited, true)
	e.waitOutput(a, "started")
	b := e.submit(limited, true)
	if st := b.Record().State; st != jobs.Queued {
		t.Fatalf("second job of a command at its limit is %s, want queued", st)
	}
	// The queue (max_queued 1) is full, but "free" has room: it runs.
	c, err := e.reg.Submit(context.Background(), request(free, true))
	if err != nil {
		t.Fatalf("Submit of a command with room while the queue is full = %v, want it to run", err)
	}
	e.waitOutput(c, "started")
	if st := c.Record().State; st != jobs.Running {
		t.Errorf("job of a command with room is %s, want running", st)
	}
	// Another job of the limited command finds the queue full.
	if _, err := e.reg.Submit(context.Background(), request(limited, true)); !errors.Is(err, jobs.ErrQueueFull) {
		t.Errorf("Submit beyond max_queued = %v, want ErrQueueFull", err)
	}
	g.open(t)
	for _, j := range []*jobs.Job{a, b, c} {
		if rec := waitDone(t, j); rec.State != jobs.Succeeded {
			t.Errorf("job ended %s, want succeeded", rec.State)
		}
	}
	if a, b := a.Record(), b.Record(); b.StartedAt.Before(a.EndedAt) {
		t.Errorf("two jobs of a command limited to one ran at once")
	}
}

// TestQueueFull: detached jobs queue up to max_queued, then ErrQueueFull,
// which creates nothing; bound runs wait regardless and leave the queue
// when canceled.
func TestQueueFull(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 1, OutputLimit: 1 << 20})
	g := newGate(t)
	cmd := gatedCommand("c", g, "")
	running := e.submit(cmd, true)
	e.waitOutput(running, "started")
	queued := e.submit(cmd, true)

	files := e.outputFiles()
	if _, err := e.reg.Submit(context.Background(), request(cmd, true)); !errors.Is(err, jobs.ErrQueueFull) {
		t.Fatalf("detached Submit with a full queue = %v, want ErrQueueFull", err)
	}
	recs, _, err := e.reg.List(context.Background(), jobs.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Errorf("%d records after a refused Submit, want 2", len(recs))
	}
	if got := e.outputFiles(); !slices.Equal(got, files) {
		t.Errorf("a refused Submit left output files: %v, before %v", got, files)
	}

	// Bound runs are not limited by max_queued: they wait while their
	// client does.
	bound := e.submit(cmd, false)
	if st := bound.Record().State; st != jobs.Queued {
		t.Fatalf("bound job behind a full slot is %s, want queued", st)
	}
	// The client goes: the handler cancels the job, which leaves the
	// queue without ever starting.
	bound.Cancel(jobs.ReasonClientDisconnected)
	rec := waitDone(t, bound)
	if rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonClientDisconnected || rec.Pid != 0 || !rec.StartedAt.IsZero() || rec.EndedAt.IsZero() {
		t.Errorf("canceled waiter: %+v, want canceled client_disconnected, never started, ended", rec)
	}
	if st := queued.Record().State; st != jobs.Queued {
		t.Errorf("detached job behind it is %s, want still queued", st)
	}
	if n := e.reg.Active(); n != 2 {
		t.Errorf("Active() = %d, want 2 (one running, one queued)", n)
	}

	g.open(t)
	if rec := waitDone(t, queued); rec.State != jobs.Succeeded {
		t.Errorf("queued job ended %s, want succeeded", rec.State)
	}
	// The queue has room again.
	waitDone(t, e.submit(cmd, true))
}

// TestBoundWaiterLeavesQueue: a waiter canceled from the middle of the
// queue gives its place to the next one.
func TestBoundWaiterLeavesQueue(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 0, OutputLimit: 1 << 20})
	g := newGate(t)
	order := filepath.Join(t.TempDir(), "order")
	first := e.submit(gatedCommand("first", g, order), false)
	e.waitOutput(first, "started")
	gone := e.submit(gatedCommand("gone", g, order), false)
	next := e.submit(gatedCommand("next", g, order), false)
	// As a handler does when its client leaves.
	gone.Cancel(jobs.ReasonClientDisconnected)
	waitDone(t, gone)
	if st := next.Record().State; st != jobs.Queued {
		t.Errorf("next waiter is %s, want still queued behind the running job", st)
	}
	g.open(t)
	waitDone(t, first)
	waitDone(t, next)
	b, _ := os.ReadFile(order)
	if got, want := string(b), "first\nnext\n"; got != want {
		t.Errorf("ran %q, want %q", got, want)
	}
	if rec := gone.Record(); rec.State != jobs.Canceled || rec.Pid != 0 {
		t.Errorf("canceled waiter %+v", rec)
	}
}

func TestCancelRunning(t *testing.T) {
	e := newEnv(t, defaultLimits())
	j := e.submit(command("pipe", "echo started; sleep 300 | cat"), true)
	e.waitOutput(j, "started")
	pgid := j.Record().Pid
	waitFor(t, "sleep and cat to start", func() bool { return len(groupMembers(pgid)) >= 3 })

	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	rec, err := e.reg.Cancel(ctx, j.ID(), jobs.ReasonUser)
	if err != nil {
		t.Fatalf("Cancel = %v", err)
	}
	if rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonUser || rec.Signal != "SIGTERM" || rec.ExitCode != nil || rec.EndedAt.IsZero() {
		t.Errorf("record %+v, want canceled user by SIGTERM", rec)
	}
	if !isClosedChan(j.Done()) {
		t.Errorf("Cancel returned before the job ended")
	}
	// Killed processes may linger as zombies until reaped; live ones must
	// go at once.
	waitGroupGone(t, pgid)
	if got := e.stored(j.ID(), jobs.Stdout); got != "started\n" {
		t.Errorf("output before the cancel: %q, want kept", got)
	}
	if st := e.storedRecord(j.ID()); st.State != jobs.Canceled || st.CancelReason != jobs.ReasonUser {
		t.Errorf("stored %+v", st)
	}

	// Canceling an ended job returns its record unchanged.
	again, err := e.reg.Cancel(ctx, j.ID(), jobs.ReasonShutdown)
	if err != nil || again.State != jobs.Canceled || again.CancelReason != jobs.ReasonUser || !again.EndedAt.Equal(rec.EndedAt) {
		t.Errorf("Cancel of an ended job = %+v, %v; want the record unchanged", again, err)
	}
	if _, err := e.reg.Cancel(ctx, "01ARZ3NDEKTSV4RRFFQ69G5FAV", jobs.ReasonUser); !isNotFound(err) {
		t.Errorf("Cancel of an unknown job = %v, want ErrNotFound", err)
	}
}

func TestCancelQueued(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	g := newGate(t)
	first := e.submit(gatedCommand("first", g, ""), true)
	e.waitOutput(first, "started")
	queued := e.submit(command("never", "echo must not run"), true)
	rec, err := e.reg.Cancel(context.Background(), queued.ID(), jobs.ReasonUser)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonUser || rec.Pid != 0 || rec.EndedAt.IsZero() || rec.ExitCode != nil {
		t.Errorf("canceled queued job: %+v", rec)
	}
	if st := e.storedRecord(queued.ID()); st.State != jobs.Canceled {
		t.Errorf("stored state %s", st.State)
	}
	g.open(t)
	waitDone(t, first)
	if got := e.stored(queued.ID(), jobs.Stdout); got != "" {
		t.Errorf("canceled queued job ran: %q", got)
	}
}

// TestCancelAfterExit: a cancel arriving after the process has exited by
// itself (its output still being drained) does not rewrite how it ended.
func TestCancelAfterExit(t *testing.T) {
	e := newEnv(t, defaultLimits())
	// The escapee leaves the process group and holds stdout: the job only
	// ends once the runner gives up on the pipe, about 2 s after the exit.
	j := e.submit(command("escape", "setsid sleep 4 & echo $!; exit 0"), true)
	e.waitOutput(j, "\n")
	escapee, err := strconv.Atoi(strings.TrimSpace(e.stored(j.ID(), jobs.Stdout)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killSleep(escapee) })
	pid := j.Record().Pid
	// Reaped, not merely a zombie: the runner marks the exit before it
	// reaps, so from here on a cancel cannot reach the process.
	waitFor(t, "the main process to be reaped", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return os.IsNotExist(err)
	})
	if isClosedChan(j.Done()) {
		t.Skip("the job ended before the cancel could be sent")
	}
	rec, err := e.reg.Cancel(context.Background(), j.ID(), jobs.ReasonUser)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != jobs.Succeeded || rec.CancelReason != "" || rec.ExitCode == nil || *rec.ExitCode != 0 {
		t.Errorf("job that exited 0 before the cancel: %s %q exit %v, want succeeded", rec.State, rec.CancelReason, rec.ExitCode)
	}
}

func TestTimeout(t *testing.T) {
	e := newEnv(t, defaultLimits())
	t.Run("term", func(t *testing.T) {
		cmd := command("slow", "sleep 300")
		cmd.Timeout = 200 * time.Millisecond
		rec := waitDone(t, e.submit(cmd, true))
		if rec.State != jobs.TimedOut || rec.CancelReason != "" || rec.Signal != "SIGTERM" || rec.ExitCode != nil {
			t.Errorf("record %+v, want timed_out by SIGTERM", rec)
		}
		if d := rec.EndedAt.Sub(rec.StartedAt); d < cmd.Timeout {
			t.Errorf("ended %v after start, before the timeout", d)
		}
	})
	t.Run("kill", func(t *testing.T) {
		cmd := command("stubborn", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
		cmd.Timeout = 200 * time.Millisecond
		cmd.KillGrace = 200 * time.Millisecond
		j := e.submit(cmd, true)
		rec := waitDone(t, j)
		if rec.State != jobs.TimedOut || rec.Signal != "SIGKILL" {
			t.Errorf("record %+v, want timed_out by SIGKILL", rec)
		}
		waitGroupGone(t, rec.Pid)
	})
	t.Run("queued time does not count", func(t *testing.T) {
		e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
		first := e.submit(command("first", "sleep 0.5"), true)
		cmd := command("quick", "echo hi")
		cmd.Timeout = 300 * time.Millisecond
		quick := e.submit(cmd, true)
		waitDone(t, first)
		if rec := waitDone(t, quick); rec.State != jobs.Succeeded {
			t.Errorf("job whose wait in the queue exceeded its timeout: %s, want succeeded", rec.State)
		}
	})
}

func TestDelete(t *testing.T) {
	e := newEnv(t, defaultLimits())
	ctx := context.Background()
	j := e.submit(command("c", "echo started; sleep 300"), true)
	e.waitOutput(j, "started")
	if err := e.reg.Delete(ctx, j.ID()); !errors.Is(err, jobs.ErrRunning) {
		t.Errorf("Delete of a running job = %v, want ErrRunning", err)
	}
	if _, err := e.reg.Cancel(ctx, j.ID(), jobs.ReasonUser); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Delete(ctx, j.ID()); err != nil {
		t.Fatalf("Delete of an ended job = %v", err)
	}
	if _, err := e.reg.Get(ctx, j.ID()); !isNotFound(err) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := e.reg.Copy(ctx, j.ID(), jobs.Stdout, &syncBuffer{}, false); !isNotFound(err) {
		t.Errorf("Copy after Delete = %v, want ErrNotFound", err)
	}
	if files := e.outputFiles(); len(files) != 0 {
		t.Errorf("output files left after Delete: %v", files)
	}
	if err := e.reg.Delete(ctx, j.ID()); !isNotFound(err) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	// A record a crashed instance left running is not deleted either.
	rec := jobs.Record{ID: "01ARZ3NDEKTSV4RRFFQ69G5FAV", Command: "c", State: jobs.Running, CreatedAt: time.Now()}
	if err := e.store.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Delete(ctx, rec.ID); !errors.Is(err, jobs.ErrRunning) {
		t.Errorf("Delete of a stored running record = %v, want ErrRunning", err)
	}
}

// TestListShowsLiveCounts: List filters and pages through the store,
// newest first, and shows a running job's current byte counts.
func TestList(t *testing.T) {
	e := newEnv(t, defaultLimits())
	ctx := context.Background()
	var ended []string
	for range 5 {
		j := e.submit(command("a", "echo hi"), true)
		waitDone(t, j)
		ended = append(ended, j.ID())
	}
	runner := e.submit(command("b", "echo started; sleep 300"), true)
	e.waitOutput(runner, "started")

	recs, next, err := e.reg.List(ctx, jobs.Filter{State: jobs.Running})
	if err != nil || len(recs) != 1 || next != "" || recs[0].ID != runner.ID() {
		t.Fatalf("List(running) = %v, %q, %v", recs, next, err)
	}
	if recs[0].StdoutBytes != int64(len("started\n")) {
		t.Errorf("running job listed with %d stdout bytes, want the current count", recs[0].StdoutBytes)
	}

	var got []string
	f := jobs.Filter{Command: "a", Limit: 2}
	for page := 0; ; page++ {
		recs, next, err := e.reg.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if page > 5 || len(recs) == 0 {
			t.Fatalf("page %d: %d records, next %q", page, len(recs), next)
		}
		for _, r := range recs {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		f.After = next
	}
	slices.Reverse(ended)
	if !slices.Equal(got, ended) {
		t.Errorf("paged listing %v, want newest first %v", got, ended)
	}
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// killSleep kills pid if it still is a sleep (and so not a reused pid).
func killSleep(pid int) {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "sleep" {
		return
	}
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

// TestAdmissionStress submits many short jobs of two commands at once,
// canceling some while they wait: at no moment do more processes run than
// the limits allow, every job ends, and every slot is given back.
func TestAdmissionStress(t *testing.T) {
	const (
		total     = 40
		maxGlobal = 3
		maxA      = 1
	)
	e := newEnv(t, jobs.Limits{MaxConcurrent: maxGlobal, MaxQueued: total, OutputLimit: 1 << 20})
	a := command("a", "sleep 0.02")
	a.MaxConcurrent = maxA
	b := command("b", "sleep 0.01")
	var all []*jobs.Job
	ch := make(chan *jobs.Job, total)
	errs := make(chan error, total)
	for i := range total {
		cmd := a
		if i%3 == 0 {
			cmd = b
		}
		go func() { // exits once Submit returns
			j, err := e.reg.Submit(context.Background(), request(cmd, i%2 == 0))
			if err != nil {
				errs <- err
				return
			}
			if i%5 == 0 {
				j.Cancel(jobs.ReasonUser)
			}
			ch <- j
		}()
	}
	for range total {
		select {
		case j := <-ch:
			all = append(all, j)
		case err := <-errs:
			t.Fatalf("Submit = %v", err)
		case <-time.After(waitLong):
			t.Fatal("Submit blocked")
		}
	}
	type event struct {
		at    time.Time
		delta int
		cmd   string
	}
	var events []event
	for _, j := range all {
		rec := waitDone(t, j)
		switch {
		case rec.State == jobs.Canceled && rec.CancelReason == jobs.ReasonUser:
		case rec.State == jobs.Succeeded:
		default:
			t.Errorf("job ended %s %q", rec.State, rec.CancelReason)
		}
		if !rec.StartedAt.IsZero() && rec.Pid != 0 {
			events = append(events, event{rec.StartedAt, 1, rec.Command}, event{rec.EndedAt, -1, rec.Command})
		}
	}
	// Ends before starts at the same instant: a slot is given back
	// before the next job takes it.
	slices.SortFunc(events, func(x, y event) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return x.delta - y.delta
	})
	running := map[string]int{}
	global := 0
	for _, ev := range events {
		global += ev.delta
		running[ev.cmd] += ev.delta
		if global > maxGlobal || running["a"] > maxA {
			t.Fatalf("at %v: %d running (%d of a), limits %d and %d", ev.at, global, running["a"], maxGlobal, maxA)
		}
	}
	if n := e.reg.Active(); n != 0 {
		t.Errorf("Active() = %d after every job ended", n)
	}
	// Every slot came back: a full round runs again.
	waitDone(t, e.submit(a, true))
}

// TestLogStates: every job event in the log carries the job's state at that
// moment: queued while it waits, running from its start (the escalations
// included), the final state at its end.
func TestLogStates(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	g := newGate(t)
	first := e.submit(gatedCommand("first", g, ""), true)
	second := e.submit(command("second", "trap '' TERM; echo started; sleep 300"), true)
	if st := second.Record().State; st != jobs.Queued {
		t.Fatalf("second job %s, want queued behind the first", st)
	}
	g.open(t)
	waitDone(t, first)
	e.waitOutput(second, "started")
	second.Cancel(jobs.ReasonUser)
	waitDone(t, second)

	want := []struct{ msg, state string }{
		{"job queued", "queued"},
		{"job started", "running"},
		{"sent SIGTERM to process group", "running"},
		{"kill_grace elapsed; sent SIGKILL to process group", "running"},
		{"job ended", "canceled"},
	}
	for _, w := range want {
		lines := e.logLines(w.msg)
		n := 0
		for _, l := range lines {
			if l["job_id"] != second.ID() {
				continue
			}
			n++
			if l["state"] != w.state {
				t.Errorf("%q: state %v, want %s", w.msg, l["state"], w.state)
			}
		}
		if n != 1 {
			t.Errorf("%q logged %d times for the job, want once", w.msg, n)
		}
	}
	for _, l := range e.logLines("job started") {
		if l["job_id"] == first.ID() && l["state"] != "running" {
			t.Errorf("job started at once: state %v, want running", l["state"])
		}
	}
}
