package jobs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/runner"
)

// TestShutdownLetsJobsFinish: a job that ends within the grace ends by
// itself, and Shutdown returns then.
func TestShutdownLetsJobsFinish(t *testing.T) {
	e := newEnv(t, defaultLimits())
	j := e.submit(command("short", "sleep 0.3; echo finished"), true)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	e.reg.Shutdown(ctx)
	if ctx.Err() != nil {
		t.Errorf("Shutdown waited for the whole grace")
	}
	if !isClosedChan(j.Done()) {
		t.Fatalf("Shutdown returned before the job ended")
	}
	if rec := e.storedRecord(j.ID()); rec.State != jobs.Succeeded {
		t.Errorf("job ended %s during the grace, want succeeded", rec.State)
	}
	if _, err := e.reg.Submit(context.Background(), request(command("late", "true"), true)); !errors.Is(err, jobs.ErrDraining) {
		t.Errorf("Submit after Shutdown = %v, want ErrDraining", err)
	}
}

// TestShutdownCancelsAfterGrace: what is still running or queued when the
// grace ends is canceled with reason shutdown; Shutdown returns once every
// record is stored.
func TestShutdownCancelsAfterGrace(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	running := e.submit(command("long", "echo started; sleep 300 | cat"), true)
	e.waitOutput(running, "started")
	pgid := running.Record().Pid
	queued := e.submit(command("queued", "echo must not run"), true)
	bound := e.submit(command("bound", "echo must not run"), false)

	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	graceEnd := time.Now().Add(grace)
	e.reg.Shutdown(ctx)

	for _, j := range []*jobs.Job{running, queued, bound} {
		if !isClosedChan(j.Done()) {
			t.Fatalf("Shutdown returned before job %s ended", j.ID())
		}
		rec := e.storedRecord(j.ID())
		if rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonShutdown || rec.EndedAt.IsZero() {
			t.Errorf("stored %s: %s %q, want canceled shutdown", rec.Command, rec.State, rec.CancelReason)
		}
	}
	if rec := running.Record(); rec.EndedAt.Before(graceEnd.Add(-50 * time.Millisecond)) {
		t.Errorf("running job ended at %v, before the grace ended (%v)", rec.EndedAt, graceEnd)
	}
	if pid := queued.Record().Pid; pid != 0 {
		t.Errorf("queued job started during shutdown")
	}
	waitGroupGone(t, pgid)
	if n := e.reg.Active(); n != 0 {
		t.Errorf("Active() = %d after Shutdown", n)
	}
}

// TestDrain: once draining, new jobs are refused and create nothing; jobs
// already there go on to their end.
func TestDrain(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	g := newGate(t)
	running := e.submit(gatedCommand("running", g, ""), true)
	e.waitOutput(running, "started")
	queued := e.submit(command("queued", "echo ran"), true)
	e.reg.Drain()
	files := e.outputFiles()
	for _, detached := range []bool{true, false} {
		if _, err := e.reg.Submit(context.Background(), request(command("new", "true"), detached)); !errors.Is(err, jobs.ErrDraining) {
			t.Errorf("Submit(detached %v) while draining = %v, want ErrDraining", detached, err)
		}
	}
	if got := e.outputFiles(); !slices.Equal(got, files) {
		t.Errorf("refused Submit left files %v", got)
	}
	g.open(t)
	if rec := waitDone(t, running); rec.State != jobs.Succeeded {
		t.Errorf("running job ended %s while draining, want succeeded", rec.State)
	}
	if rec := waitDone(t, queued); rec.State != jobs.Succeeded {
		t.Errorf("queued job ended %s while draining, want succeeded", rec.State)
	}
	recs, _, err := e.reg.List(context.Background(), jobs.Filter{})
	if err != nil || len(recs) != 2 {
		t.Errorf("List = %d records, %v; want 2", len(recs), err)
	}
}

// startGroup starts argv in a process group of its own, as the runner
// would have, and returns the group's id and its leader's start time.
// Cleanup kills what is left and reaps the leader.
func startGroup(t *testing.T, argv ...string) (*exec.Cmd, int, uint64) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { // exits when the leader has been reaped
		defer close(waited)
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waited
	})
	pgid := cmd.Process.Pid
	start, err := runner.ProcStartTicks(pgid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, pgid, start
}

// TestRecover: records a previous instance left queued or running become
// interrupted, with ended_at, and what is left of their process groups is
// killed, unless the group id now names another group.
func TestRecover(t *testing.T) {
	ctx := context.Background()
	e := openStores(t, t.TempDir())
	boot, err := runner.BootID()
	if err != nil {
		t.Fatal(err)
	}
	sid, err := unix.Getsid(0) // the session of the jobs this process starts
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-time.Minute).UTC()
	id := func(i int) string {
		return ulid.MustNew(ulid.Timestamp(created)+uint64(i), ulid.DefaultEntropy()).String()
	}

	// A job that ran "sleep | cat" when the gateway died: the leader died
	// of Pdeathsig, its pipeline was left.
	_, pgid, start := startGroup(t, "/bin/sh", "-c", "sleep 300 | cat & wait")
	waitFor(t, "the pipeline to start", func() bool { return len(groupMembers(pgid)) >= 3 })
	running := jobs.Record{
		ID: id(1), Command: "pipe", State: jobs.Running, CreatedAt: created, StartedAt: created,
		Pid: pgid, Pgid: pgid, ProcStart: start, Sid: sid, BootID: boot,
	}
	w, err := e.output.Create(running.ID, jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "partial\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()

	// A group whose recorded leader start does not match: the id was
	// reused by another group, which must be left alone.
	_, other, otherStart := startGroup(t, "/bin/sh", "-c", "sleep 300 & wait")
	waitFor(t, "the other group to start", func() bool { return len(groupMembers(other)) >= 2 })
	reused := jobs.Record{
		ID: id(2), Command: "pipe", State: jobs.Running, CreatedAt: created, StartedAt: created,
		Pid: other, Pgid: other, ProcStart: otherStart + 1, Sid: sid, BootID: boot,
	}
	queued := jobs.Record{ID: id(3), Command: "q", State: jobs.Queued, CreatedAt: created}
	exit := 0
	ended := jobs.Record{
		ID: id(4), Command: "done", State: jobs.Succeeded, ExitCode: &exit,
		CreatedAt: created, StartedAt: created, EndedAt: created.Add(time.Second),
	}
	for _, rec := range []jobs.Record{running, reused, queued, ended} {
		if err := e.store.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	e.start(defaultLimits())
	before := time.Now()
	if err := e.reg.Recover(ctx); err != nil {
		t.Fatalf("Recover = %v", err)
	}
	waitGroupGone(t, pgid)
	if n := len(groupMembers(other)); n < 2 {
		t.Errorf("the group with a reused id lost processes: %d left", n)
	}

	for _, want := range []jobs.Record{running, reused, queued} {
		rec, err := e.reg.Get(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != jobs.Interrupted || rec.EndedAt.IsZero() || rec.EndedAt.Before(before.Add(-time.Second)) {
			t.Errorf("record %s after Recover: %s ended %v, want interrupted with ended_at", want.ID, rec.State, rec.EndedAt)
		}
		if rec.ExitCode != nil || rec.CancelReason != "" {
			t.Errorf("interrupted record has exit %v cancel %q", rec.ExitCode, rec.CancelReason)
		}
	}
	if rec, _ := e.reg.Get(ctx, queued.ID); !rec.StartedAt.IsZero() || rec.Pid != 0 {
		t.Errorf("job interrupted in the queue has started_at %v, pid %d; want neither", rec.StartedAt, rec.Pid)
	}
	if rec, _ := e.reg.Get(ctx, running.ID); !rec.StartedAt.Equal(created) {
		t.Errorf("started_at of the interrupted job changed to %v", rec.StartedAt)
	}
	if rec, _ := e.reg.Get(ctx, running.ID); rec.StdoutBytes != int64(len("partial\n")) || rec.StdoutTruncated {
		t.Errorf("interrupted record counts %d stdout bytes (truncated %v), want the stored 8", rec.StdoutBytes, rec.StdoutTruncated)
	}
	if got := e.stored(running.ID, jobs.Stdout); got != "partial\n" {
		t.Errorf("output of the interrupted job %q, want kept", got)
	}
	if rec, _ := e.reg.Get(ctx, ended.ID); rec.State != jobs.Succeeded || !rec.EndedAt.Equal(ended.EndedAt) {
		t.Errorf("an ended record was changed: %+v", rec)
	}
	unfinished, err := e.store.Unfinished(ctx)
	if err != nil || len(unfinished) != 0 {
		t.Errorf("Unfinished after Recover = %d records, %v; want none", len(unfinished), err)
	}
	if recs, _, _ := e.reg.List(ctx, jobs.Filter{State: jobs.Interrupted}); len(recs) != 3 {
		t.Errorf("List(interrupted) = %d records, want 3", len(recs))
	}
}

// TestRetention: ended jobs older than the retention go with their output;
// newer ones and live ones stay.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	e := openStores(t, t.TempDir())
	now := time.Now().UTC()
	old := jobs.Record{
		ID: ulid.MustNew(ulid.Timestamp(now.Add(-3*time.Hour)), ulid.DefaultEntropy()).String(), Command: "c",
		State: jobs.Succeeded, CreatedAt: now.Add(-3 * time.Hour), StartedAt: now.Add(-3 * time.Hour), EndedAt: now.Add(-2 * time.Hour),
	}
	recent := jobs.Record{
		ID: ulid.MustNew(ulid.Timestamp(now.Add(-time.Minute)), ulid.DefaultEntropy()).String(), Command: "c",
		State: jobs.Failed, CreatedAt: now.Add(-time.Minute), StartedAt: now.Add(-time.Minute), EndedAt: now.Add(-time.Minute),
	}
	for _, rec := range []jobs.Record{old, recent} {
		if err := e.store.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
		for _, s := range []jobs.Stream{jobs.Stdout, jobs.Stderr} {
			w, err := e.output.Create(rec.ID, s)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(w, "x")
			w.Close()
		}
	}
	limits := defaultLimits()
	limits.Retention = time.Hour
	e.start(limits)
	running := e.submit(command("c", "echo started; sleep 300"), true)

	waitFor(t, "the old job to be removed", func() bool {
		_, err := e.reg.Get(ctx, old.ID)
		return isNotFound(err)
	})
	files := e.outputFiles()
	for _, f := range files {
		if strings.HasPrefix(f, old.ID) {
			t.Errorf("output of the removed job left: %s", f)
		}
	}
	if _, err := e.reg.Get(ctx, recent.ID); err != nil {
		t.Errorf("a job within the retention was removed: %v", err)
	}
	kept := 0
	for _, f := range files {
		if strings.HasPrefix(f, recent.ID) {
			kept++
		}
	}
	if kept != 2 {
		t.Errorf("output files %v, want both of the recent job's kept", files)
	}
	if rec := running.Record(); rec.State != jobs.Running {
		t.Errorf("running job %s", rec.State)
	}
}

// TestRetentionRemovesJobsEndedHere: with a short retention, a job that
// ended in this process goes too, in the background.
func TestRetentionRemovesJobsEndedHere(t *testing.T) {
	limits := defaultLimits()
	limits.Retention = 50 * time.Millisecond
	e := newEnv(t, limits)
	j := e.submit(command("c", "echo hi"), true)
	waitDone(t, j)
	waitFor(t, "the ended job to be removed", func() bool {
		_, err := e.reg.Get(context.Background(), j.ID())
		return isNotFound(err)
	})
	if files := e.outputFiles(); len(files) != 0 {
		t.Errorf("output files left: %v", files)
	}
}

// TestPidOfRunningJobIsStored: the running record, with its process
// group, is durable as soon as the process runs, for the recovery sweep
// after a crash.
func TestPidOfRunningJobIsStored(t *testing.T) {
	e := newEnv(t, defaultLimits())
	j := e.submit(command("c", "echo started; sleep 300"), true)
	rec := e.storedRecord(j.ID())
	if rec.State != jobs.Running || rec.Pgid <= 0 || rec.Pgid != rec.Pid || rec.ProcStart == 0 || rec.BootID == "" {
		t.Fatalf("stored record when Submit returned: %+v, want running with its process group", rec)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(rec.Pid) + "/stat")
	if err != nil || !strings.Contains(string(stat), "(sh)") {
		t.Errorf("pid %d is not the job's shell: %q %v", rec.Pid, stat, err)
	}
}

// TestShutdownStartsNothing: once the grace is over, a slot given back by
// a canceled job does not start a queued one: queued jobs are canceled
// without ever running.
func TestShutdownStartsNothing(t *testing.T) {
	for range 5 {
		e := newEnv(t, jobs.Limits{MaxConcurrent: 2, MaxQueued: 50, OutputLimit: 1 << 20})
		var running, queued []*jobs.Job
		for range 2 {
			j := e.submit(command("running", "echo started; exec sleep 300"), true)
			e.waitOutput(j, "started")
			running = append(running, j)
		}
		for range 20 {
			queued = append(queued, e.submit(command("queued", "echo ran"), true))
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		e.reg.Shutdown(ctx)
		for _, j := range queued {
			if rec := j.Record(); rec.Pid != 0 || rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonShutdown {
				t.Fatalf("queued job at shutdown: %s %q pid %d, want canceled shutdown, never started", rec.State, rec.CancelReason, rec.Pid)
			}
		}
		for _, j := range running {
			if rec := j.Record(); rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonShutdown {
				t.Errorf("running job at shutdown: %s %q", rec.State, rec.CancelReason)
			}
		}
	}
}

// TestRetentionLater: a job that passes the retention while the gateway
// runs is removed at the next round, not only at start. In a synctest
// bubble: no process runs, so the retention loop's ticker and clock are
// fake and the hour passes at once.
func TestRetentionLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := openStores(t, t.TempDir())
		now := time.Now().UTC()
		rec := jobs.Record{
			ID: ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String(), Command: "c",
			State: jobs.Succeeded, CreatedAt: now, StartedAt: now, EndedAt: now,
		}
		if err := e.store.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
		limits := defaultLimits()
		limits.Retention = time.Hour
		e.start(limits)
		exists := func() bool {
			_, err := e.reg.Get(ctx, rec.ID)
			if err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
			return err == nil
		}

		// The loop checks every tenth of the retention: by the hour and
		// one round after the job ended it is gone, and not before the hour.
		time.Sleep(time.Hour - time.Second)
		synctest.Wait()
		if !exists() {
			t.Fatal("removed before the retention passed")
		}
		time.Sleep(limits.Retention/10 + time.Second)
		synctest.Wait()
		if exists() {
			t.Fatal("still there a round after the retention passed")
		}
	})
}
