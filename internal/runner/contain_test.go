package runner

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/cgroup/cgrouptest"
)

// jobCgroup makes a cgroup for one job in a test subtree of its own; the
// test is skipped when cgroup v2 is not writable.
func jobCgroup(t *testing.T) *cgroup.Job {
	t.Helper()
	m, err := cgroup.Open(cgrouptest.Root(t))
	if err != nil {
		t.Fatalf("cgroup.Open = %v", err)
	}
	j, err := m.NewJob("test", cgroup.Limits{})
	if err != nil {
		t.Fatalf("NewJob = %v", err)
	}
	t.Cleanup(func() {
		// As the jobs layer will: statistics, then remove, then close.
		if err := j.Remove(); err != nil {
			t.Errorf("Remove = %v", err)
		}
		j.Close()
	})
	return j
}

// proc is a process seen by a test, identified across pid reuse.
type proc struct {
	pid   int
	start uint64
}

func procsOf(t *testing.T, j *cgroup.Job) []proc {
	t.Helper()
	var ps []proc
	for _, pid := range cgrouptest.Procs(t, j.Path()) {
		if st, err := readProcStat(pid); err == nil && st.state != 'Z' {
			ps = append(ps, proc{pid, st.start})
		}
	}
	return ps
}

// newMark returns an environment entry unique to the test: every process a
// job started inherits it, wherever it went.
func newMark(t *testing.T) string {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	return "EXECGW_TEST_MARK=" + hex.EncodeToString(b[:])
}

// marked lists the live processes whose environment holds mark.
func marked(t *testing.T, mark string) []proc {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), mark) {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.state != 'Z' {
			ps = append(ps, proc{pid, st.start})
		}
	}
	return ps
}

// waitEscaped waits until pid has left the job's process group.
func waitEscaped(t *testing.T, pid, pgid int) {
	t.Helper()
	if !eventually(5*time.Second, func() bool {
		st, err := readProcStat(pid)
		return err == nil && st.pgrp != pgid
	}) {
		t.Fatalf("process %d never left group %d", pid, pgid)
	}
}

// A cancel kills the whole job, a setsid escapee included, whether the
// main process obeys SIGTERM or not.
func TestCgroupCancelKillsEscapee(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		wantKilled bool
	}{
		{"obeys TERM", `setsid sleep 300 & echo $!; sleep 300`, false},
		{"ignores TERM", `trap "" TERM; setsid sleep 300 & echo $!; while :; do sleep 0.05; done`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mark := newMark(t)
			j := jobCgroup(t)
			log, logs := newLog(t)
			var out syncBuffer
			p := start(t, Spec{Argv: sh(tc.script), Env: []string{"PATH=/usr/bin:/bin", mark}, Stdout: &out, Cgroup: j, KillGrace: 200 * time.Millisecond, Log: log})
			var escapee int
			if !eventually(5*time.Second, func() bool {
				escapee, _ = strconv.Atoi(strings.TrimSpace(out.String()))
				return escapee > 0
			}) {
				t.Fatalf("no pid on stdout: %q", out.String())
			}
			waitEscaped(t, escapee, p.Pid())
			if len(procsOf(t, j)) < 3 {
				t.Fatalf("cgroup holds %v, want sh, the escapee and a sleep", procsOf(t, j))
			}
			inside := procsOf(t, j)
			if got := marked(t, mark); len(got) < 3 {
				t.Fatalf("marked processes %v, want the job's (the check would see nothing)", got)
			}

			canceled := time.Now()
			p.Cancel(errors.New("user"))
			res := waitDone(t, p, 3*time.Second)
			t.Logf("Cancel to Done: %v", time.Since(canceled))
			if res.Killed != tc.wantKilled {
				t.Errorf("Killed = %v, want %v", res.Killed, tc.wantKilled)
			}
			// Done waited for the cgroup to empty: nothing is left, at once.
			if got := cgrouptest.Procs(t, j.Path()); len(got) != 0 {
				t.Errorf("cgroup.procs at Done = %v, want empty", got)
			}
			for _, pr := range inside {
				if !dead(pr.pid, pr.start) {
					t.Errorf("process %d of the job survived", pr.pid)
				}
			}
			if left := marked(t, mark); len(left) != 0 {
				t.Errorf("processes of the job left: %v", left)
			}
			if tc.wantKilled && !strings.Contains(logs.String(), "sent SIGKILL to process group and killed its cgroup") {
				t.Errorf("log lacks the escalation line:\n%s", logs.String())
			}
		})
	}
}

// The job ends when its main process exits; what it left running in its
// cgroup (a setsid escapee holding stdout) is killed then, and Done does not
// wait for the pipe.
func TestCgroupExitKillsEscapee(t *testing.T) {
	mark := newMark(t)
	j := jobCgroup(t)
	log, logs := newLog(t)
	var out, errs syncBuffer
	// The fifo makes sh wait until the escapee has left the group.
	script := `mkfifo f; setsid sh -c 'echo >f; exec sleep 300' & echo $! >&2; read _ <f; echo done`
	p := start(t, Spec{Argv: sh(script), Env: []string{"PATH=/usr/bin:/bin", mark}, Dir: t.TempDir(), Stdout: &out, Stderr: &errs, Cgroup: j, Log: log})
	res := waitDone(t, p, 3*time.Second)
	if d := time.Since(res.EndedAt); d > time.Second {
		t.Errorf("Done %v after the main process exited, want well under the pipe bound", d)
	} else {
		t.Logf("Done %v after the main process exited", d)
	}
	if res.ExitCode != 0 || res.Cause != nil || res.Killed {
		t.Errorf("result %+v, want exit 0, no cause, not killed", res)
	}
	if got := out.String(); got != "done\n" {
		t.Errorf("stdout = %q, want %q", got, "done\n")
	}
	escapee, err := strconv.Atoi(strings.TrimSpace(errs.String()))
	if err != nil {
		t.Fatalf("escapee pid: %v", err)
	}
	if st, err := readProcStat(escapee); err == nil && st.state != 'Z' {
		t.Errorf("escapee %d alive after Done: %+v", escapee, st)
	}
	if got := cgrouptest.Procs(t, j.Path()); len(got) != 0 {
		t.Errorf("cgroup.procs at Done = %v, want empty", got)
	}
	if left := marked(t, mark); len(left) != 0 {
		t.Errorf("processes of the job left: %v", left)
	}
	if strings.Contains(logs.String(), "pipe still held open") {
		t.Errorf("a pipe was held open despite the cgroup:\n%s", logs.String())
	}
}

// CPU time of a job is in its cgroup, read after Done.
func TestCgroupStats(t *testing.T) {
	j := jobCgroup(t)
	res := start(t, Spec{Argv: sh(`i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done`), Cgroup: j}).Wait()
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	if s := j.Stats(); s.CPUTime <= 0 {
		t.Errorf("Stats().CPUTime = %v, want > 0", s.CPUTime)
	}
}

// umaskOf reads the umask of the process from /proc/self/status.
func umaskOf(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no Umask line in /proc/self/status")
	return ""
}

func getrlimits(t *testing.T) map[int]unix.Rlimit {
	t.Helper()
	m := map[int]unix.Rlimit{}
	for _, res := range []int{unix.RLIMIT_NOFILE, unix.RLIMIT_AS, unix.RLIMIT_CPU, unix.RLIMIT_NPROC, unix.RLIMIT_CORE} {
		var l unix.Rlimit
		if err := unix.Getrlimit(res, &l); err != nil {
			t.Fatal(err)
		}
		m[res] = l
	}
	return m
}

func ptr[T any](v T) *T { return &v }

// Rlimits and umask reach the command, through the shim, and only it.
func TestShimRlimitsUmask(t *testing.T) {
	limitsBefore, umaskBefore := getrlimits(t), umaskOf(t)
	var out, errs syncBuffer
	p := start(t, Spec{
		Argv:   sh(`ulimit -n; ulimit -v; ulimit -c; umask; echo $$; cut -d' ' -f5 /proc/$$/stat`),
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: &out, Stderr: &errs,
		Umask: ptr(uint32(0o027)),
		Rlimits: []Rlimit{
			{Resource: unix.RLIMIT_NOFILE, Soft: 512, Hard: 1024},
			{Resource: unix.RLIMIT_AS, Soft: 1 << 30, Hard: 1 << 30},
			{Resource: unix.RLIMIT_CORE, Soft: 0, Hard: 0},
		},
	})
	res := waitDone(t, p, 10*time.Second)
	if res.ExitCode != 0 {
		t.Fatalf("result %+v, stderr %q", res, errs.String())
	}
	pid := strconv.Itoa(p.Pid())
	// The command keeps the pid (and group) the runner started: the shim
	// executed it in place.
	if got, want := out.String(), "512\n1048576\n0\n0027\n"+pid+"\n"+pid+"\n"; strings.Join(strings.Fields(got), "\n")+"\n" != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if got := getrlimits(t); !equalLimits(got, limitsBefore) {
		t.Errorf("the test process's own limits changed: %v, were %v", got, limitsBefore)
	}
	if got := umaskOf(t); got != umaskBefore {
		t.Errorf("the test process's umask changed: %s, was %s", got, umaskBefore)
	}
}

func equalLimits(a, b map[int]unix.Rlimit) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The shim's own failures end the process with 127 and a message on its
// stderr.
func TestShimFailure(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to switch users")
	}
	var cur unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
	if cur.Max >= 1<<20 {
		t.Skipf("hard RLIMIT_NOFILE already %d", cur.Max)
	}
	// An unprivileged process may not raise its hard limit.
	var errs syncBuffer
	res := start(t, Spec{
		Argv:       []string{"/bin/true"},
		Stderr:     &errs,
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
		Rlimits:    []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 1 << 20, Hard: 1 << 20}},
	}).Wait()
	if res.ExitCode != 127 || !strings.Contains(errs.String(), "setrlimit nofile") {
		t.Errorf("exit %d, stderr %q; want 127 and the setrlimit error", res.ExitCode, errs.String())
	}
}

// A command that cannot run is still an error of Start with the shim.
func TestShimStartError(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv0 string
		want  error
	}{
		{filepath.Join(dir, "nope"), os.ErrNotExist},
		{notExec, os.ErrPermission},
		{dir, os.ErrPermission},
	} {
		fds := openFDs(t)
		p, err := Start(Spec{Argv: []string{tc.argv0}, Umask: ptr(uint32(0o22)), Stdout: &syncBuffer{}})
		if err == nil {
			p.Wait()
			t.Errorf("Start(%q) with a umask succeeded", tc.argv0)
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), strconv.Quote(tc.argv0)) {
			t.Errorf("Start(%q) = %v, want %v naming the command", tc.argv0, err, tc.want)
		}
		if got := openFDs(t); got != fds {
			t.Errorf("open descriptors: %d before, %d after a failed Start", fds, got)
		}
	}
}

func TestShimArgs(t *testing.T) {
	rl := []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 1, Hard: 2}, {Resource: unix.RLIMIT_AS, Soft: unix.RLIM_INFINITY, Hard: unix.RLIM_INFINITY}}
	argv := []string{"/bin/echo", "--", "-umask=1", ""}
	args := shimArgv("/bin/echo", argv, ptr(uint32(0o077)), rl)
	if args[1] != ShimArg {
		t.Fatalf("shimArgv = %q: ShimArg not at [1]", args)
	}
	s, err := parseShimArgs(args[2:])
	if err != nil {
		t.Fatalf("parseShimArgs(%q) = %v", args[2:], err)
	}
	if s.umask == nil || *s.umask != 0o077 || !slices.Equal(s.rlimits, rl) || s.path != "/bin/echo" || !slices.Equal(s.argv, argv) {
		t.Errorf("parseShimArgs(%q) = %+v, want umask 077, %v, /bin/echo, %q", args[2:], s, rl, argv)
	}
	for _, bad := range [][]string{
		nil,
		{"--"},
		{"--", "/bin/true"},
		{"-umask=8", "--", "/bin/true", "true"},
		{"-umask=1000", "--", "/bin/true", "true"},
		{"-rlimit=7,2,1", "--", "/bin/true", "true"},
		{"-rlimit=7,1", "--", "/bin/true", "true"},
		{"-rlimit=x,1,1", "--", "/bin/true", "true"},
		{"-nice=1", "--", "/bin/true", "true"},
		{"/bin/true", "true"},
	} {
		if _, err := parseShimArgs(bad); err == nil {
			t.Errorf("parseShimArgs(%q) succeeded", bad)
		}
		if err := RunShim(bad); err == nil {
			t.Errorf("RunShim(%q) returned nil", bad)
		}
	}
}

// Credential: the command runs as nobody/nogroup without the gateway's
// supplementary groups, even when Groups asks for some.
func TestCredential(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to switch users")
	}
	tests := []struct {
		name string
		spec Spec
	}{
		{"plain", Spec{}},
		// The shim (/proc/self/exe) runs as nobody too, and in a cgroup.
		{"shim and cgroup", Spec{Umask: ptr(uint32(0o077)), Rlimits: []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 256, Hard: 256}}, Cgroup: jobCgroup(t)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errs syncBuffer
			spec := tc.spec
			spec.Argv = sh("id -u; id -g; id -G")
			spec.Env = []string{"PATH=/usr/bin:/bin"}
			spec.Dir = "/"
			spec.Stdout, spec.Stderr = &out, &errs
			spec.Credential = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{0, 4}}
			res := waitDone(t, start(t, spec), 10*time.Second)
			if res.ExitCode != 0 {
				t.Fatalf("result %+v, stderr %q", res, errs.String())
			}
			if got, want := out.String(), "65534\n65534\n65534\n"; got != want {
				t.Errorf("id -u; id -g; id -G = %q, want %q", got, want)
			}
		})
	}
}

// BenchmarkRun measures a whole run of /bin/true: with a process group
// only, with a cgroup per job (created, killed, emptied, read and removed),
// and through the rlimit shim.
func BenchmarkRun(b *testing.B) {
	b.Run("process group", func(b *testing.B) {
		for b.Loop() {
			runOnce(b, Spec{Argv: []string{"/bin/true"}})
		}
	})
	b.Run("cgroup", func(b *testing.B) {
		m, err := cgroup.Open(cgrouptest.Root(b))
		if err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			i++
			j, err := m.NewJob(strconv.Itoa(i), cgroup.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			runOnce(b, Spec{Argv: []string{"/bin/true"}, Cgroup: j})
			j.Stats()
			if err := j.Remove(); err != nil {
				b.Fatal(err)
			}
			j.Close()
		}
	})
	b.Run("shim", func(b *testing.B) {
		for b.Loop() {
			runOnce(b, Spec{Argv: []string{"/bin/true"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}})
		}
	})
}

func runOnce(b *testing.B, spec Spec) {
	p, err := Start(spec)
	if err != nil {
		b.Fatal(err)
	}
	if res := p.Wait(); res.ExitCode != 0 {
		b.Fatalf("result %+v", res)
	}
}
