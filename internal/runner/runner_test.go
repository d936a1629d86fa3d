package runner

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a helper process instead of
// running tests (the pattern of os/exec's exec_test.go).
const helperEnv = "EXECGW_RUNNER_TEST_HELPER"

func TestMain(m *testing.M) {
	// The test binary is its own shim, as execgw's main is: /proc/self/exe
	// in a child of the test process is the test binary.
	if len(os.Args) > 1 && os.Args[1] == ShimArg {
		err := RunShim(os.Args[2:])
		fmt.Fprintln(os.Stderr, "execgw:", err)
		os.Exit(127)
	}
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	goleak.VerifyTestMain(m)
}

func runHelper(name string) int {
	switch name {
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "deathsig":
		// Starts a sleep through the runner, tells its pid, and waits to be
		// SIGKILLed: Pdeathsig must take the sleep along.
		p, err := Start(Spec{Argv: []string{"/bin/sleep", "300"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println(p.Pid())
		time.Sleep(time.Hour)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		return 2
	}
}

// helperSpec runs the test binary as helper name.
func helperSpec(t *testing.T, name string) Spec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Argv: []string{exe}, Env: []string{helperEnv + "=" + name}}
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

// newLog returns a logger into a buffer, printed if the test fails. (The
// runner may log from its goroutines; zerolog.NewTestWriter would panic on
// a line after the test ended.)
func newLog(t *testing.T) (zerolog.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runner log:\n%s", buf.String())
		}
	})
	return zerolog.New(buf), buf
}

// eventually polls cond until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func start(t *testing.T, spec Spec) *Process {
	t.Helper()
	p, err := Start(spec)
	if err != nil {
		t.Fatalf("Start(%q) = %v", spec.Argv, err)
	}
	t.Cleanup(func() {
		// A failed test must not leave a tree or goroutines behind.
		p.Cancel(errors.New("test cleanup"))
		<-p.Done()
	})
	return p
}

// waitDone waits for p to be done within timeout.
func waitDone(t *testing.T, p *Process, timeout time.Duration) Result {
	t.Helper()
	select {
	case <-p.Done():
		return p.Result()
	case <-time.After(timeout):
		t.Fatalf("process %d not done after %v", p.Pid(), timeout)
		return Result{}
	}
}

// liveMembers lists the processes of group pgid that are not zombies (an
// orphaned zombie is dead; the container's init may be slow to reap it).
func liveMembers(t *testing.T, pgid int) []procStat {
	t.Helper()
	all, err := groupMembers(pgid)
	if err != nil {
		t.Fatal(err)
	}
	var live []procStat
	for _, st := range all {
		if st.state != 'Z' {
			live = append(live, st)
		}
	}
	return live
}

// assertGroupGone checks that no process of group pgid is alive, allowing
// a moment for SIGKILLed members to finish exiting: a pipe's writer closes
// its descriptors before it becomes a zombie.
func assertGroupGone(t *testing.T, pgid int) {
	t.Helper()
	if !eventually(time.Second, func() bool { return len(liveMembers(t, pgid)) == 0 }) {
		t.Errorf("processes of group %d still alive: %+v", pgid, liveMembers(t, pgid))
	}
}

// dead reports whether process pid, started at start, is gone or a zombie.
func dead(pid int, start uint64) bool {
	st, err := readProcStat(pid)
	return err != nil || st.state == 'Z' || st.start != start
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestExit(t *testing.T) {
	tests := []struct {
		name         string
		script       string
		code         int
		sig          syscall.Signal
		stdout, errs string
	}{
		{"success", "echo out; echo err >&2", 0, 0, "out\n", "err\n"},
		{"exit code", "echo partial; exit 3", 3, 0, "partial\n", ""},
		{"own signal", "echo before; kill -9 $$", -1, syscall.SIGKILL, "before\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			log, _ := newLog(t)
			before := time.Now()
			p := start(t, Spec{Argv: sh(tc.script), Stdout: &stdout, Stderr: &stderr, Log: log})
			res := p.Wait()
			if res.ExitCode != tc.code || res.Signal != tc.sig {
				t.Errorf("exit = %d, signal %v; want %d, %v", res.ExitCode, res.Signal, tc.code, tc.sig)
			}
			if res.Cause != nil || res.Killed || res.Err != nil {
				t.Errorf("Cause, Killed, Err = %v, %v, %v; want nil, false, nil", res.Cause, res.Killed, res.Err)
			}
			if got := stdout.String(); got != tc.stdout {
				t.Errorf("stdout = %q, want %q", got, tc.stdout)
			}
			if got := stderr.String(); got != tc.errs {
				t.Errorf("stderr = %q, want %q", got, tc.errs)
			}
			if res.StartedAt.Before(before) || res.EndedAt.Before(res.StartedAt) {
				t.Errorf("StartedAt %v, EndedAt %v: not in order after %v", res.StartedAt, res.EndedAt, before)
			}
			if p.Result() != res {
				t.Errorf("Result() = %+v, Wait() = %+v", p.Result(), res)
			}
		})
	}
}

func TestResultBeforeDone(t *testing.T) {
	p := start(t, Spec{Argv: []string{"/bin/sleep", "300"}})
	if got := p.Result(); got != (Result{}) {
		t.Errorf("Result() before Done = %+v, want zero", got)
	}
	p.Cancel(nil)
	if res := waitDone(t, p, 5*time.Second); !errors.Is(res.Cause, ErrCanceled) {
		t.Errorf("Cause after Cancel(nil) = %v, want ErrCanceled", res.Cause)
	}
}

func TestCancelPipeline(t *testing.T) {
	log, logs := newLog(t)
	gone := errors.New("client gone")
	p := start(t, Spec{Argv: sh("sleep 300 | cat"), Stdout: io.Discard, KillGrace: 5 * time.Second, Log: log})
	pgid := p.Pid()
	// sh, sleep and cat: cancel the whole pipeline, not a half-started one.
	if !eventually(5*time.Second, func() bool { return len(liveMembers(t, pgid)) >= 3 }) {
		t.Fatalf("group %d never had 3 members: %+v", pgid, liveMembers(t, pgid))
	}
	p.Cancel(gone)
	res := waitDone(t, p, 2*time.Second)
	if !errors.Is(res.Cause, gone) {
		t.Errorf("Cause = %v, want %v", res.Cause, gone)
	}
	if res.Signal != syscall.SIGTERM || res.ExitCode != -1 || res.Killed {
		t.Errorf("Signal, ExitCode, Killed = %v, %d, %v; want SIGTERM, -1, false", res.Signal, res.ExitCode, res.Killed)
	}
	assertGroupGone(t, pgid)
	if l := logs.String(); !strings.Contains(l, "sent SIGTERM to process group") ||
		!strings.Contains(l, `"pgid":`+strconv.Itoa(pgid)) || !strings.Contains(l, `"cause":"client gone"`) {
		t.Errorf("log lacks the SIGTERM line with pgid and cause:\n%s", l)
	}
}

func TestCancelEscalates(t *testing.T) {
	const grace = 300 * time.Millisecond
	tests := []struct {
		name string
		spec func(t *testing.T) Spec
	}{
		{"shell trapping TERM", func(*testing.T) Spec {
			return Spec{Argv: sh(`trap "" TERM; echo ready; while :; do sleep 0.1; done`)}
		}},
		{"helper ignoring TERM", func(t *testing.T) Spec { return helperSpec(t, "ignore-term") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := newLog(t)
			var out syncBuffer
			spec := tc.spec(t)
			spec.Stdout, spec.KillGrace, spec.Log = &out, grace, log
			p := start(t, spec)
			if !eventually(5*time.Second, func() bool { return strings.Contains(out.String(), "ready") }) {
				t.Fatalf("never ready; output %q", out.String())
			}
			why := errors.New("timeout")
			canceled := time.Now()
			p.Cancel(why)
			p.Cancel(errors.New("second cause")) // ignored: the first wins
			res := waitDone(t, p, 5*time.Second)
			if !res.Killed || res.Signal != syscall.SIGKILL || res.ExitCode != -1 {
				t.Errorf("Killed, Signal, ExitCode = %v, %v, %d; want true, SIGKILL, -1", res.Killed, res.Signal, res.ExitCode)
			}
			if res.Cause != why {
				t.Errorf("Cause = %v, want the first cause %v", res.Cause, why)
			}
			if d := res.EndedAt.Sub(canceled); d < grace {
				t.Errorf("ended %v after Cancel, before kill_grace %v", d, grace)
			}
			l := logs.String()
			for _, want := range []string{
				"sent SIGTERM to process group",
				"kill_grace elapsed; sent SIGKILL to process group",
				`"kill_grace_ms":300`,
				`"level":"warn"`,
			} {
				if !strings.Contains(l, want) {
					t.Errorf("log lacks %q:\n%s", want, l)
				}
			}
			assertGroupGone(t, p.Pid())
		})
	}
}

func TestCancelZeroGrace(t *testing.T) {
	log, logs := newLog(t)
	var out syncBuffer
	spec := helperSpec(t, "ignore-term")
	spec.Stdout, spec.Log = &out, log
	p := start(t, spec)
	if !eventually(5*time.Second, func() bool { return strings.Contains(out.String(), "ready") }) {
		t.Fatalf("never ready; output %q", out.String())
	}
	p.Cancel(errors.New("now"))
	res := waitDone(t, p, 5*time.Second)
	if !res.Killed || res.Signal != syscall.SIGKILL {
		t.Errorf("Killed, Signal = %v, %v; want true, SIGKILL", res.Killed, res.Signal)
	}
	if !strings.Contains(logs.String(), `"kill_grace_ms":0`) {
		t.Errorf("log lacks the escalation line:\n%s", logs.String())
	}
}

// A leader that obeys SIGTERM is no escalation, even if the timer fires
// while it is being reaped.
func TestCancelNoEscalationWhenLeaderExits(t *testing.T) {
	log, logs := newLog(t)
	p := start(t, Spec{Argv: []string{"/bin/sleep", "300"}, KillGrace: 200 * time.Millisecond, Log: log})
	p.Cancel(errors.New("user"))
	res := waitDone(t, p, 5*time.Second)
	time.Sleep(300 * time.Millisecond) // past the grace: the timer must be gone
	if res.Killed || res.Signal != syscall.SIGTERM {
		t.Errorf("Killed, Signal = %v, %v; want false, SIGTERM", res.Killed, res.Signal)
	}
	if strings.Contains(logs.String(), "SIGKILL") {
		t.Errorf("escalation logged for a process that obeyed SIGTERM:\n%s", logs.String())
	}
}

func TestCancelAfterExit(t *testing.T) {
	log, logs := newLog(t)
	p := start(t, Spec{Argv: []string{"/bin/true"}, Log: log})
	res := p.Wait()
	p.Cancel(errors.New("late"))
	if got := p.Result(); got != res || got.Cause != nil {
		t.Errorf("Result after late Cancel = %+v, want %+v with nil Cause", got, res)
	}
	if l := logs.String(); l != "" {
		t.Errorf("late Cancel logged:\n%s", l)
	}
}

// Cancel racing the process's own exit, from several goroutines.
func TestCancelRace(t *testing.T) {
	for i := range 20 {
		p := start(t, Spec{Argv: sh("exit 0"), KillGrace: time.Duration(i%3) * 5 * time.Millisecond})
		var wg sync.WaitGroup
		for j := range 4 {
			wg.Go(func() {
				time.Sleep(time.Duration(i%5+j) * time.Millisecond)
				p.Cancel(fmt.Errorf("cancel %d", j))
			})
		}
		res := waitDone(t, p, 5*time.Second)
		wg.Wait()
		if res.Cause == nil && (res.ExitCode != 0 || res.Signal != 0) {
			t.Errorf("run %d: not canceled but %+v", i, res)
		}
	}
}

func TestGrandchildHoldsPipe(t *testing.T) {
	var stdout, stderr syncBuffer
	p := start(t, Spec{Argv: sh("sleep 300 & echo $! >&2; echo hi"), Stdout: &stdout, Stderr: &stderr})
	res := waitDone(t, p, 2*time.Second)
	if res.ExitCode != 0 || res.Cause != nil {
		t.Errorf("result %+v, want exit 0 and no cause", res)
	}
	if got := stdout.String(); got != "hi\n" {
		t.Errorf("stdout = %q, want %q", got, "hi\n")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(stderr.String()))
	if err != nil {
		t.Fatalf("pid of the sleep: %v", err)
	}
	assertGroupGone(t, p.Pid())
	if st, err := readProcStat(pid); err == nil && st.state != 'Z' && st.pgrp == p.Pid() {
		t.Errorf("the sleep (pid %d) survived the sweep: %+v", pid, st)
	}
}

// A process that left the group holds the pipe: Done is bounded anyway.
func TestEscapeeHoldsPipe(t *testing.T) {
	tests := []struct{ name, cmd string }{
		{"idle", "sleep 300"},
		{"writing", "yes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := newLog(t)
			var stderr syncBuffer
			var n countWriter
			// The fifo makes sh wait until the escapee has left the group:
			// otherwise the sweep could kill it first.
			script := `mkfifo f; setsid sh -c 'echo >f; exec ` + tc.cmd + `' & echo $! >&2; read _ <f; echo hi`
			p := start(t, Spec{Argv: sh(script), Dir: t.TempDir(), Stdout: &n, Stderr: &stderr, Log: log})
			// The escapee gets its pid from stderr; it is its own session's
			// leader, so kill it by pid.
			var escapee int
			if !eventually(5*time.Second, func() bool {
				escapee, _ = strconv.Atoi(strings.TrimSpace(stderr.String()))
				return escapee > 0
			}) {
				t.Fatalf("no pid on stderr: %q", stderr.String())
			}
			escStart, err := ProcStartTicks(escapee)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if !dead(escapee, escStart) {
					unix.Kill(escapee, unix.SIGKILL)
				}
			})
			res := waitDone(t, p, 20*time.Second)
			if res.ExitCode != 0 {
				t.Errorf("result %+v, want exit 0", res)
			}
			if n.Load() < 3 {
				t.Errorf("stdout got %d bytes, want at least %q", n.Load(), "hi\n")
			}
			if !strings.Contains(logs.String(), "pipe still held open") {
				t.Errorf("log lacks the stuck pipe line:\n%s", logs.String())
			}
		})
	}
}

type countWriter struct {
	mu sync.Mutex
	n  int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(len(p))
	return len(p), nil
}

func (c *countWriter) Load() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"exact env", Spec{Argv: []string{"/usr/bin/env"}, Env: []string{"PATH=/usr/bin:/bin", "A=b"}}, "PATH=/usr/bin:/bin\nA=b\n"},
		{"nil env is empty", Spec{Argv: []string{"/usr/bin/env"}}, ""},
		{"empty env", Spec{Argv: []string{"/usr/bin/env"}, Env: []string{}}, ""},
		{"bare name in Env's PATH", Spec{Argv: []string{"env"}, Env: []string{"PATH=.:relative:/usr/bin"}}, "PATH=.:relative:/usr/bin\n"},
		{"dir", Spec{Argv: []string{"/bin/pwd"}, Dir: dir}, dir + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			tc.spec.Stdout = &out
			res := start(t, tc.spec).Wait()
			if res.ExitCode != 0 {
				t.Errorf("exit %d", res.ExitCode)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("output = %q, want %q", got, tc.want)
			}
		})
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestStartError(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec Spec
		want error
	}{
		{"not found", Spec{Argv: []string{filepath.Join(dir, "nope")}}, fs.ErrNotExist},
		{"not executable", Spec{Argv: []string{notExec}}, fs.ErrPermission},
		{"bad dir", Spec{Argv: []string{"/bin/true"}, Dir: filepath.Join(dir, "nodir")}, fs.ErrNotExist},
		{"bare name without PATH", Spec{Argv: []string{"true"}}, exec.ErrNotFound},
		{"bare name not in PATH", Spec{Argv: []string{"execgw-no-such-command"}, Env: []string{"PATH=/usr/bin"}}, exec.ErrNotFound},
		{"empty argv", Spec{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fds := openFDs(t)
			tc.spec.Stdin = strings.NewReader("input")
			tc.spec.Stdout, tc.spec.Stderr = io.Discard, io.Discard
			p, err := Start(tc.spec)
			if err == nil {
				p.Wait()
				t.Fatalf("Start(%q) succeeded", tc.spec.Argv)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Start(%q) = %v, want %v", tc.spec.Argv, err, tc.want)
			}
			if len(tc.spec.Argv) > 0 && !strings.Contains(err.Error(), strconv.Quote(tc.spec.Argv[0])) {
				t.Errorf("error %q does not name %q", err, tc.spec.Argv[0])
			}
			if got := openFDs(t); got != fds {
				t.Errorf("open descriptors: %d before, %d after a failed Start", fds, got)
			}
			if err := goleak.Find(); err != nil {
				t.Errorf("goroutines left by a failed Start: %v", err)
			}
		})
	}
}

func TestStdin(t *testing.T) {
	const size = 8 << 20
	var out syncBuffer
	p := start(t, Spec{Argv: []string{"/usr/bin/wc", "-c"}, Stdin: bytes.NewReader(make([]byte, size)), Stdout: &out})
	res := p.Wait()
	if res.ExitCode != 0 || res.Cause != nil {
		t.Errorf("result %+v", res)
	}
	if got := strings.TrimSpace(out.String()); got != strconv.Itoa(size) {
		t.Errorf("wc -c = %q, want %d", got, size)
	}
}

// The child closing its stdin early is not an error.
func TestStdinChildClosesEarly(t *testing.T) {
	var out syncBuffer
	p := start(t, Spec{Argv: []string{"/usr/bin/head", "-c", "10"}, Stdin: bytes.NewReader(make([]byte, 8<<20)), Stdout: &out})
	res := p.Wait()
	if res.ExitCode != 0 || res.Cause != nil {
		t.Errorf("result %+v, want exit 0 and no cause", res)
	}
	if got := len(out.String()); got != 10 {
		t.Errorf("head -c 10 wrote %d bytes", got)
	}
}

// failingReader returns n zero bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

func TestStdinReadError(t *testing.T) {
	boom := errors.New("connection reset")
	log, _ := newLog(t)
	var out countWriter
	p := start(t, Spec{Argv: []string{"/usr/bin/cat"}, Stdin: &failingReader{n: 1 << 20, err: boom}, Stdout: &out, KillGrace: 5 * time.Second, Log: log})
	res := waitDone(t, p, 5*time.Second)
	var se *StdinError
	if !errors.As(res.Cause, &se) || !errors.Is(res.Cause, boom) {
		t.Fatalf("Cause = %v, want a *StdinError wrapping %v", res.Cause, boom)
	}
	if res.Signal != syscall.SIGTERM {
		t.Errorf("Signal = %v, want SIGTERM", res.Signal)
	}
}

// Done does not wait for a Read of Stdin that only the caller can end.
func TestStdinBlockedReadDoesNotBlockDone(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close() // ends the runner's stdin goroutine
	p := start(t, Spec{Argv: []string{"/bin/true"}, Stdin: pr})
	if res := waitDone(t, p, 5*time.Second); res.ExitCode != 0 || res.Cause != nil {
		t.Errorf("result %+v", res)
	}
}

// slowWriter sleeps before accepting each write, up to first for the first.
type slowWriter struct {
	first, each time.Duration
	calls       int
	h           io.Writer // hash, fed in order; the copy goroutine is the only caller
	n           int64
}

func (w *slowWriter) Write(p []byte) (int, error) {
	if w.calls == 0 {
		time.Sleep(w.first)
	} else {
		time.Sleep(w.each)
	}
	w.calls++
	w.n += int64(len(p))
	return w.h.Write(p)
}

func TestOutputExactThroughSlowWriter(t *testing.T) {
	tests := []struct {
		name        string
		size        int
		first, each time.Duration
	}{
		// Far more than the pipe holds: the process waits for the writer.
		{"1.5 MiB", 3<<19 + 12345, 0, 2 * time.Millisecond},
		// Less than pipe plus buffer: the process has exited long before
		// the writer takes the rest, later than the idle bound.
		{"drained after exit", 60 << 10, postExitIdle + time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.size)
			rand.Read(data)
			file := filepath.Join(t.TempDir(), "data")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			w := &slowWriter{first: tc.first, each: tc.each, h: h}
			res := start(t, Spec{Argv: []string{"/usr/bin/cat", file}, Stdout: w}).Wait()
			if res.ExitCode != 0 {
				t.Errorf("exit %d", res.ExitCode)
			}
			if got, want := h.Sum(nil), sha256.Sum256(data); w.n != int64(len(data)) || !bytes.Equal(got, want[:]) {
				t.Errorf("got %d bytes, sha256 %x; want %d bytes, %x", w.n, got, len(data), want)
			}
		})
	}
}

type failingWriter struct{ calls int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.calls++
	return 0, errors.New("client gone")
}

// A dead consumer does not block the process: the rest is discarded.
func TestWriterErrorKeepsDraining(t *testing.T) {
	w := &failingWriter{}
	p := start(t, Spec{Argv: []string{"/usr/bin/head", "-c", "4194304", "/dev/zero"}, Stdout: w})
	res := waitDone(t, p, 10*time.Second)
	if res.ExitCode != 0 {
		t.Errorf("result %+v, want exit 0", res)
	}
	if w.calls != 1 {
		t.Errorf("failing writer called %d times, want once", w.calls)
	}
}

// zombieChildren lists this process's children in state Z.
func zombieChildren(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var z []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(data, ')')
		f := strings.Fields(string(data[i+1:]))
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(os.Getpid()) {
			z = append(z, pid)
		}
	}
	return z
}

func TestNoZombies(t *testing.T) {
	for range 50 {
		res := start(t, Spec{Argv: sh("sleep 0.1 &"), Stdout: io.Discard}).Wait()
		if res.ExitCode != 0 || res.Err != nil {
			t.Fatalf("result %+v", res)
		}
	}
	if z := zombieChildren(t); len(z) != 0 {
		t.Errorf("zombie children of the test process: %v", z)
	}
	// Orphans must go to init, not to us: we never become a subreaper.
	var sub int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&sub)), 0, 0, 0); err != nil || sub != 0 {
		t.Errorf("PR_GET_CHILD_SUBREAPER = %d, %v; want 0", sub, err)
	}
}

// A running process must not pin an OS thread: the watcher waits in the
// netpoller (a pidfd), or a gateway with 1000 jobs would run 1000 threads.
func TestRunningProcessesHoldNoThread(t *testing.T) {
	threads := func() int {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	before := threads()
	const n = 64
	var procs []*Process
	for range n {
		procs = append(procs, start(t, Spec{Argv: []string{"/bin/sleep", "60"}}))
	}
	// Let every watcher reach its wait.
	time.Sleep(200 * time.Millisecond)
	if during := threads(); during-before >= n/2 {
		t.Errorf("%d running processes took %d OS threads (%d before, %d now)", n, during-before, before, during)
	}
	for _, p := range procs {
		p.Cancel(nil)
	}
	for _, p := range procs {
		if res := waitDone(t, p, 10*time.Second); res.Signal != syscall.SIGTERM {
			t.Errorf("pid %d: result %+v, want killed by SIGTERM", p.Pid(), res)
		}
	}
}

// Pdeathsig belongs to the thread that forked (golang/go#27505): nothing in
// the package may lock an OS thread.
func TestNoLockOSThread(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(src, []byte("LockOSThread(")) {
			t.Errorf("%s calls LockOSThread", f)
		}
	}
}

// SIGKILL of the gateway takes its direct children along (Pdeathsig).
func TestPdeathsig(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe)
	helper.Env = []string{helperEnv + "=deathsig"}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Wait()
	defer helper.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read the sleep's pid from the helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	sleepStart, err := ProcStartTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !dead(pid, sleepStart) {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !eventually(time.Second, func() bool { return dead(pid, sleepStart) }) {
		t.Errorf("the helper's child %d outlived it by 1 s", pid)
	}
}

func TestParseProcStat(t *testing.T) {
	rest := func(state string, pgrp int, start uint64) string {
		// fields 3..52 of a real line, with state, pgrp, session (pgrp+1)
		// and starttime set
		f := strings.Fields("S 1 0 0 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 0 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0")
		f[0], f[2], f[3], f[19] = state, strconv.Itoa(pgrp), strconv.Itoa(pgrp+1), strconv.FormatUint(start, 10)
		return strings.Join(f, " ") + "\n"
	}
	tests := []struct {
		line    string
		want    procStat
		wantErr bool
	}{
		{"42 (sleep) " + rest("S", 42, 123456), procStat{state: 'S', pgrp: 42, sid: 43, start: 123456}, false},
		{"42 (a b) c) d) " + rest("Z", 7, 99), procStat{state: 'Z', pgrp: 7, sid: 8, start: 99}, false},
		{"42 ()) ) " + rest("R", 8, 1<<40), procStat{state: 'R', pgrp: 8, sid: 9, start: 1 << 40}, false},
		{"42 (x) S 1 2", procStat{}, true},
		{"42 x S", procStat{}, true},
		{"", procStat{}, true},
		{"42 (x) " + strings.Replace(rest("S", 1, 5), " 5 ", " x ", 1), procStat{}, true},
	}
	for _, tc := range tests {
		got, err := parseProcStat([]byte(tc.line))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseProcStat(%q) = %+v, %v; want %+v, error %v", tc.line, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestProcStartTicksAndBootID(t *testing.T) {
	self, err := ProcStartTicks(os.Getpid())
	if err != nil || self == 0 {
		t.Errorf("ProcStartTicks(self) = %d, %v", self, err)
	}
	p := start(t, Spec{Argv: []string{"/bin/sleep", "300"}})
	child, err := ProcStartTicks(p.Pid())
	if err != nil || child < self {
		t.Errorf("ProcStartTicks(child) = %d, %v; want >= %d", child, err, self)
	}
	if _, err := ProcStartTicks(1 << 30); err == nil {
		t.Errorf("ProcStartTicks(no such pid) succeeded")
	}
	id, err := BootID()
	if err != nil || len(id) != 36 || strings.TrimSpace(id) != id {
		t.Errorf("BootID() = %q, %v", id, err)
	}
}

// The start time a Process reports without reading /proc must be the one
// /proc reports: crash recovery compares them to tell a group from one that
// took over its id.
func TestStartTicksMatchProc(t *testing.T) {
	for range 200 {
		p := start(t, Spec{Argv: []string{"/bin/sleep", "300"}})
		want, err := ProcStartTicks(p.Pid())
		if err != nil {
			t.Fatal(err)
		}
		if got := p.StartTicks(); got != want {
			t.Fatalf("StartTicks() = %d, /proc/%d/stat says %d", got, p.Pid(), want)
		}
		p.Cancel(nil)
		waitDone(t, p, 10*time.Second)
	}
}

// startGroup starts argv in its own process group outside the runner, as a
// crashed gateway would have left it, and returns the group id and its
// leader's start ticks. Cleanup kills whatever is left.
func startGroup(t *testing.T, argv ...string) (*exec.Cmd, int, uint64) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	ticks, err := ProcStartTicks(pgid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range liveMembers(t, pgid) {
			if m.start >= ticks {
				unix.Kill(m.pid, unix.SIGKILL)
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, pgid, ticks
}

// sweepable is the group of a job started by this process: its session is
// ours, and nothing of it can have started after now.
func sweepable(t *testing.T, pgid int, leaderStart uint64, boot string) Group {
	t.Helper()
	sid, err := unix.Getsid(0)
	if err != nil {
		t.Fatal(err)
	}
	return Group{Pgid: pgid, LeaderStart: leaderStart, Sid: sid, BootID: boot}
}

// notAfter is an upper bound on the start of anything started so far.
func notAfter(t *testing.T) uint64 {
	t.Helper()
	return nowTicks(t) + 1
}

// nowTicks is the boot clock in the ticks of /proc/PID/stat.
func nowTicks(t *testing.T) uint64 {
	t.Helper()
	ticks, err := BootTicks()
	if err != nil {
		t.Fatal(err)
	}
	return ticks
}

func TestSweepGroup(t *testing.T) {
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("leader alive", func(t *testing.T) {
		cmd, pgid, ticks := startGroup(t, "/bin/sh", "-c", "sleep 300 & sleep 300; wait")
		if !eventually(5*time.Second, func() bool { return len(liveMembers(t, pgid)) >= 3 }) {
			t.Fatalf("group %d: %+v", pgid, liveMembers(t, pgid))
		}
		for _, tc := range []struct {
			name  string
			start uint64
			boot  string
		}{
			{"wrong boot id", ticks, "00000000-0000-0000-0000-000000000000"},
			{"no boot id", ticks, ""},
			{"other leader start", ticks + 1, boot},
			{"earlier leader start", ticks - 1, boot},
		} {
			n, err := SweepGroup(sweepable(t, pgid, tc.start, tc.boot), notAfter(t))
			if n != 0 || err != nil {
				t.Errorf("%s: SweepGroup = %d, %v; want 0, nil", tc.name, n, err)
			}
			if live := liveMembers(t, pgid); len(live) != 3 {
				t.Errorf("%s: group has %d live members after a refused sweep, want 3", tc.name, len(live))
			}
		}
		n, err := SweepGroup(sweepable(t, pgid, ticks, boot), notAfter(t))
		if n != 3 || err != nil {
			t.Fatalf("SweepGroup = %d, %v; want 3, nil", n, err) // Cleanup kills the group
		}
		cmd.Wait()
		assertGroupGone(t, pgid)
	})

	t.Run("leader gone", func(t *testing.T) {
		cmd, pgid, ticks := startGroup(t, "/bin/sh", "-c", "sleep 300 >/dev/null 2>&1 </dev/null & sleep 300 >/dev/null 2>&1 </dev/null &")
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if !eventually(5*time.Second, func() bool { return len(liveMembers(t, pgid)) == 2 }) {
			t.Fatalf("group %d: %+v", pgid, liveMembers(t, pgid))
		}
		// A member older than the recorded leader: the group id was reused.
		if n, err := SweepGroup(sweepable(t, pgid, ticks+1<<20, boot), notAfter(t)); n != 0 || err != nil {
			t.Errorf("SweepGroup(leader start after members) = %d, %v; want 0, nil", n, err)
		}
		// Members that started after the bound (the sweeping gateway's
		// own start) cannot be the crashed instance's.
		if n, err := SweepGroup(sweepable(t, pgid, ticks, boot), ticks-1); n != 0 || err != nil {
			t.Errorf("SweepGroup(members started after the bound) = %d, %v; want 0, nil", n, err)
		}
		// Another session: not processes a job of ours started.
		other := sweepable(t, pgid, ticks, boot)
		other.Sid++
		if n, err := SweepGroup(other, notAfter(t)); n != 0 || err != nil {
			t.Errorf("SweepGroup(other session) = %d, %v; want 0, nil", n, err)
		}
		if n, err := SweepGroup(sweepable(t, pgid, ticks, boot), notAfter(t)); n != 2 || err != nil {
			t.Errorf("SweepGroup = %d, %v; want 2, nil", n, err)
		}
		assertGroupGone(t, pgid)
		if n, err := SweepGroup(sweepable(t, pgid, ticks, boot), notAfter(t)); n != 0 || err != nil {
			t.Errorf("SweepGroup of an empty group = %d, %v; want 0, nil", n, err)
		}
	})

	// A double-forking daemon whose child got the recorded leader's pid:
	// the child made a session and group of its own (setsid) and left a
	// grandchild in it. The leader is gone and the member started after
	// the recorded leader, as a job's would; only the session tells it is
	// no job's.
	t.Run("daemon in the recorded group", func(t *testing.T) {
		leaderStart := nowTicks(t) - 1
		cmd := exec.Command("/bin/sh", "-c", "sleep 300 >/dev/null 2>&1 </dev/null &")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pgid := cmd.Process.Pid
		t.Cleanup(func() { unix.Kill(-pgid, unix.SIGKILL) })
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if !eventually(5*time.Second, func() bool { return len(liveMembers(t, pgid)) == 1 }) {
			t.Fatalf("group %d: %+v", pgid, liveMembers(t, pgid))
		}
		if n, err := SweepGroup(sweepable(t, pgid, leaderStart, boot), notAfter(t)); n != 0 || err != nil {
			t.Errorf("SweepGroup(a daemon's group) = %d, %v; want 0, nil", n, err)
		}
		if live := liveMembers(t, pgid); len(live) != 1 {
			t.Errorf("the daemon's process was killed: %d live members", len(live))
		}
	})

	t.Run("refused ids", func(t *testing.T) {
		for _, pgid := range []int{0, 1, -5, unix.Getpgrp()} {
			if n, err := SweepGroup(sweepable(t, pgid, 0, boot), notAfter(t)); n != 0 || err == nil {
				t.Errorf("SweepGroup(%d) = %d, %v; want 0 and an error", pgid, n, err)
			}
		}
	})
}

// In a container whose session leader lives outside its PID namespace
// (CI's), every session id reads 0. The sweep must still tell a job's
// group from a daemon's there: this runs TestSweepGroup again in such a
// namespace.
func TestSweepGroupSessionOutsideNamespace(t *testing.T) {
	if os.Getenv("EXECGW_IN_PID_NAMESPACE") != "" {
		t.Skip("already inside the namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1)")
	}
	probe := exec.Command(unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "true")
	if out, err := probe.CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace here: %v: %s", err, out)
	}
	cmd := exec.Command(unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
		os.Args[0], "-test.run", "^TestSweepGroup$", "-test.v")
	cmd.Env = append(os.Environ(), "EXECGW_IN_PID_NAMESPACE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("TestSweepGroup in a PID namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestSweepGroup/leader_alive") {
		t.Fatalf("TestSweepGroup did not run in the namespace:\n%s", out)
	}
}
