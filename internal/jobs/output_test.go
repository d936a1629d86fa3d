package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/jobs"
)

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintln(&b, i)
	}
	return b.String()
}

// TestCopyFollow follows a slow printer from before its first line: every
// line arrives, and Copy returns once the job has ended.
func TestCopyFollow(t *testing.T) {
	e := newEnv(t, defaultLimits())
	j := e.submit(command("printer", "for i in $(seq 1 30); do echo line $i; sleep 0.02; done; echo done >&2"), true)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := e.reg.Copy(ctx, j.ID(), jobs.Stdout, &out, true); err != nil {
		t.Fatalf("Copy(follow) = %v", err)
	}
	if !isClosedChan(j.Done()) {
		t.Errorf("Copy(follow) returned before the job ended")
	}
	var want strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if out.String() != want.String() {
		t.Errorf("followed stdout %q, want %q", out.String(), want.String())
	}
	// Following an ended job returns what is stored, at once.
	if err := e.reg.Copy(ctx, j.ID(), jobs.Stderr, &errOut, true); err != nil || errOut.String() != "done\n" {
		t.Errorf("Copy(follow) of an ended job = %q, %v", errOut.String(), err)
	}
}

// TestCopyFollowEveryByte follows a fast producer of 590 KB: the bytes
// arrive exact, as many as the record counts.
func TestCopyFollowEveryByte(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 8, MaxQueued: 100, OutputLimit: 16 << 20})
	const n = 100000
	j := e.submit(command("seq", fmt.Sprintf("sleep 0.1; seq 1 %d", n)), true)
	var out bytes.Buffer
	if err := e.reg.Copy(context.Background(), j.ID(), jobs.Stdout, &out, true); err != nil {
		t.Fatal(err)
	}
	want := seqOutput(n)
	if out.Len() != len(want) || out.String() != want {
		t.Errorf("followed %d bytes, want %d exact", out.Len(), len(want))
	}
	if rec := waitDone(t, j); rec.StdoutBytes != int64(len(want)) || rec.StdoutTruncated {
		t.Errorf("record counts %d bytes (truncated %v), want %d", rec.StdoutBytes, rec.StdoutTruncated, len(want))
	}
}

// TestCopyFollowQueued follows a job from while it waits in the queue.
func TestCopyFollowQueued(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	g := newGate(t)
	first := e.submit(gatedCommand("first", g, ""), true)
	e.waitOutput(first, "started")
	queued := e.submit(command("later", "echo later"), true)
	done := make(chan error, 1)
	var out syncBuffer
	go func() { // exits when the queued job has ended
		done <- e.reg.Copy(context.Background(), queued.ID(), jobs.Stdout, &out, true)
	}()
	g.open(t)
	select {
	case err := <-done:
		if err != nil || out.String() != "later\n" {
			t.Errorf("Copy(follow) of a queued job = %q, %v", out.String(), err)
		}
	case <-time.After(waitLong):
		t.Fatal("Copy(follow) did not end with the job")
	}
}

// TestCopyFollowContext: a follower whose context ends stops following,
// and the job goes on.
func TestCopyFollowContext(t *testing.T) {
	e := newEnv(t, defaultLimits())
	j := e.submit(command("c", "echo started; sleep 300"), true)
	e.waitOutput(j, "started")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if err := e.reg.Copy(ctx, j.ID(), jobs.Stdout, &out, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Copy(follow) with its context ended = %v, want DeadlineExceeded", err)
	}
	if out.String() != "started\n" {
		t.Errorf("followed %q", out.String())
	}
	if st := j.Record().State; st != jobs.Running {
		t.Errorf("job is %s after its follower left, want running", st)
	}
	// Without follow, Copy returns what is there now.
	out.Reset()
	if err := e.reg.Copy(context.Background(), j.ID(), jobs.Stdout, &out, false); err != nil || out.String() != "started\n" {
		t.Errorf("Copy of a running job = %q, %v", out.String(), err)
	}
	if err := e.reg.Copy(context.Background(), "01ARZ3NDEKTSV4RRFFQ69G5FAV", jobs.Stdout, &out, true); !isNotFound(err) {
		t.Errorf("Copy of an unknown job = %v, want ErrNotFound", err)
	}
}

// TestOutputLimit: beyond output_limit, storage stops and the record says
// truncated, while the counts and a live consumer get every byte.
func TestOutputLimit(t *testing.T) {
	const limit = 100
	e := newEnv(t, jobs.Limits{MaxConcurrent: 8, MaxQueued: 100, OutputLimit: limit})
	full := seqOutput(1000)

	var live syncBuffer
	req := request(command("big", "seq 1 1000; printf 'small' >&2"), false)
	req.Stdout = &live
	j, err := e.reg.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	rec := waitDone(t, j)
	if rec.StdoutBytes != int64(len(full)) || !rec.StdoutTruncated {
		t.Errorf("stdout %d bytes truncated %v, want %d true", rec.StdoutBytes, rec.StdoutTruncated, len(full))
	}
	if rec.StderrBytes != 5 || rec.StderrTruncated {
		t.Errorf("stderr %d bytes truncated %v, want 5 false", rec.StderrBytes, rec.StderrTruncated)
	}
	if got := e.stored(j.ID(), jobs.Stdout); got != full[:limit] {
		t.Errorf("stored stdout %q, want the first %d bytes", got, limit)
	}
	if live.String() != full {
		t.Errorf("live consumer got %d bytes, want all %d", len(live.String()), len(full))
	}
	if st := e.storedRecord(j.ID()); st.StdoutBytes != rec.StdoutBytes || !st.StdoutTruncated {
		t.Errorf("stored record: %d bytes truncated %v", st.StdoutBytes, st.StdoutTruncated)
	}

	// Exactly the limit is not truncated.
	rec = waitDone(t, e.submit(command("exact", fmt.Sprintf("head -c %d /dev/zero", limit)), true))
	if rec.StdoutBytes != limit || rec.StdoutTruncated {
		t.Errorf("exactly the limit: %d bytes truncated %v, want %d false", rec.StdoutBytes, rec.StdoutTruncated, limit)
	}
}

// TestStdinClosedAtEnd: a Request's Stdin that is an io.Closer (a spooled
// request body) is closed once the job has ended, or when it never runs.
func TestStdinClosedAtEnd(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	in := &closeRecorder{Reader: strings.NewReader("input\n")}
	req := request(command("cat", "cat"), true)
	req.Stdin = in
	j, err := e.reg.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, j)
	if got := e.stored(j.ID(), jobs.Stdout); got != "input\n" {
		t.Errorf("stdout %q", got)
	}
	if !in.isClosed() {
		t.Errorf("stdin not closed after the job ended")
	}

	g := newGate(t)
	first := e.submit(gatedCommand("first", g, ""), true)
	e.waitOutput(first, "started")
	in = &closeRecorder{Reader: strings.NewReader("input\n")}
	req.Stdin = in
	queued, err := e.reg.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Cancel(context.Background(), queued.ID(), jobs.ReasonUser); err != nil {
		t.Fatal(err)
	}
	if !in.isClosed() {
		t.Errorf("stdin of a job canceled in the queue not closed")
	}
	g.open(t)
	waitDone(t, first)
}

// TestOutputStoreFull: when storing output fails (the disk is full), the
// record says the output was cut and why, the failure is logged once per
// stream, the process runs on with every byte counted, and the registry
// keeps working.
func TestOutputStoreFull(t *testing.T) {
	dir := t.TempDir()
	outDir := filepath.Join(dir, "output")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Only the output is on the small file system: the record store stays
	// writable, so the test can read what the registry made of the failure.
	if err := unix.Mount("tmpfs", outDir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(outDir, 0); err != nil {
			t.Errorf("unmount %s: %v", outDir, err)
		}
	})
	e := openStores(t, dir)
	e.start(jobs.Limits{MaxConcurrent: 8, MaxQueued: 100, OutputLimit: 16 << 20})

	const size = 1 << 20 // four times what the file system holds
	script := fmt.Sprintf("head -c %d /dev/zero; head -c %d /dev/zero >&2; echo still-running", size, size)
	rec := waitDone(t, e.submit(command("flood", script), true))
	if rec.State != jobs.Succeeded {
		t.Errorf("state %s, want succeeded: a full disk is no reason to end the process", rec.State)
	}
	if rec.StdoutBytes != size+int64(len("still-running\n")) || rec.StderrBytes != size {
		t.Errorf("stdout_bytes %d stderr_bytes %d, want every byte produced counted", rec.StdoutBytes, rec.StderrBytes)
	}
	if !rec.StdoutTruncated || !rec.StderrTruncated {
		t.Errorf("stdout_truncated %v stderr_truncated %v, want both true", rec.StdoutTruncated, rec.StderrTruncated)
	}
	if rec.OutputError != "stdout: no space left on device" {
		t.Errorf("output_error %q, want %q", rec.OutputError, "stdout: no space left on device")
	}
	if st := e.storedRecord(rec.ID); st.OutputError != rec.OutputError || !st.StdoutTruncated {
		t.Errorf("stored record: output_error %q stdout_truncated %v", st.OutputError, st.StdoutTruncated)
	}
	lines := e.logLines("job output not stored")
	streams := map[any]int{}
	for _, l := range lines {
		streams[l["stream"]]++
		if l["job_id"] != rec.ID {
			t.Errorf("log line of job %v, want %s", l["job_id"], rec.ID)
		}
	}
	if len(lines) != 2 || streams["stdout"] != 1 || streams["stderr"] != 1 {
		t.Errorf("logged %d times (%v), want once per stream", len(lines), streams)
	}

	// The registry keeps answering: a job runs and is stored.
	rec = waitDone(t, e.submit(command("after", "echo hi"), true))
	if rec.State != jobs.Succeeded || rec.StdoutBytes != 3 {
		t.Errorf("next job: state %s stdout_bytes %d, want succeeded 3", rec.State, rec.StdoutBytes)
	}
	if _, err := e.reg.Get(context.Background(), rec.ID); err != nil {
		t.Errorf("Get after a full disk: %v", err)
	}
}
