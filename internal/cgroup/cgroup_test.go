package cgroup_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/cgroup/cgrouptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func open(t *testing.T) *cgroup.Manager {
	t.Helper()
	m, err := cgroup.Open(cgrouptest.Root(t))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	return m
}

func newJob(t *testing.T, m *cgroup.Manager, id string) *cgroup.Job {
	t.Helper()
	j, err := m.NewJob(id, cgroup.Limits{})
	if err != nil {
		t.Fatalf("NewJob(%q) = %v", id, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// spawn starts argv straight into the cgroup of j, outside any runner, and
// returns the pids it printed on stdout (one per line, want of them).
func spawn(t *testing.T, j *cgroup.Job, want int, argv ...string) (*exec.Cmd, []int) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: j.FD()}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %q in %s: %v", argv, j.Path(), err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var pids []int
	sc := bufio.NewScanner(out)
	for len(pids) < want && sc.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("not a pid: %q", sc.Text())
		}
		pids = append(pids, pid)
	}
	if len(pids) < want {
		t.Fatalf("got pids %v, want %d", pids, want)
	}
	go io.Copy(io.Discard, out) // exits when the last writer is gone
	return cmd, pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && len(data) > i+2 && data[i+2] != 'Z'
}

func TestOpen(t *testing.T) {
	root := cgrouptest.Root(t)
	m, err := cgroup.Open(root)
	if err != nil {
		t.Fatalf("Open(%s) = %v", root, err)
	}
	data, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Controllers(), strings.Fields(string(data)); !slices.Equal(got, want) {
		t.Errorf("Controllers() = %v, want %v", got, want)
	}
	if m.Root() != root {
		t.Errorf("Root() = %q, want %q", m.Root(), root)
	}

	// A missing root below a cgroup v2 directory is created.
	sub := filepath.Join(root, "a", "b")
	if _, err := cgroup.Open(sub); err != nil {
		t.Errorf("Open(missing %s) = %v", sub, err)
	}
	if err := checkIsCgroup(sub); err != nil {
		t.Errorf("Open did not create a cgroup: %v", err)
	}

	tmp := t.TempDir()
	for _, tc := range []struct{ name, dir, want string }{
		{"not cgroup v2", tmp, "not in a cgroup v2 hierarchy"},
		{"missing, not below cgroup v2", filepath.Join(tmp, "x", "y"), "cannot be created"},
		{"relative", "x", "not an absolute path"},
	} {
		if _, err := cgroup.Open(tc.dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open(%q) = %v, want an error saying %q", tc.name, tc.dir, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed Open created directories outside cgroup v2: %v", err)
	}
}

func checkIsCgroup(dir string) error {
	_, err := os.Stat(filepath.Join(dir, "cgroup.procs"))
	return err
}

func TestRequire(t *testing.T) {
	m := open(t)
	if slices.Contains(m.Controllers(), "memory") {
		if err := m.Require("memory"); err != nil {
			t.Errorf("Require(memory) = %v with memory available", err)
		}
		t.Skip("the memory controller is available here; the refusal cannot be shown")
	}
	err := m.Require("memory")
	if !errors.Is(err, cgroup.ErrNotAvailable) {
		t.Fatalf("Require(memory) = %v, want ErrNotAvailable", err)
	}
	avail := "none"
	if c := m.Controllers(); len(c) > 0 {
		avail = strings.Join(c, " ")
	}
	want := "the memory controller is not available in " + m.Root() + " (available: " + avail + ")"
	if err.Error() != want {
		t.Errorf("Require(memory) = %q, want %q", err, want)
	}
	var ce *cgroup.ControllerError
	if !errors.As(err, &ce) || ce.Controller != "memory" {
		t.Errorf("Require(memory) = %#v, want a *ControllerError for memory", err)
	}
}

// A limit whose controller is missing is refused, and nothing is left.
func TestNewJobMissingController(t *testing.T) {
	m := open(t)
	for _, tc := range []struct {
		controller string
		l          cgroup.Limits
	}{
		{"memory", cgroup.Limits{MemoryMax: 64 << 20}},
		{"pids", cgroup.Limits{PidsMax: 16}},
		{"cpu", cgroup.Limits{CPUMax: 0.5}},
	} {
		if slices.Contains(m.Controllers(), tc.controller) {
			continue
		}
		j, err := m.NewJob("limited", tc.l)
		if err == nil {
			j.Close()
			t.Fatalf("NewJob(%+v) succeeded without the %s controller", tc.l, tc.controller)
		}
		if !errors.Is(err, cgroup.ErrNotAvailable) || !strings.Contains(err.Error(), "the "+tc.controller+" controller is not available") {
			t.Errorf("NewJob(%+v) = %v, want ErrNotAvailable naming %s", tc.l, err, tc.controller)
		}
		if ids, _ := m.Jobs(); len(ids) != 0 {
			t.Errorf("a refused NewJob left job cgroups %v", ids)
		}
	}
}

func TestNewJob(t *testing.T) {
	m := open(t)
	j := newJob(t, m, "01ABC")
	if want := filepath.Join(m.Root(), "job-01ABC"); j.Path() != want {
		t.Errorf("Path() = %q, want %q", j.Path(), want)
	}
	if ids, err := m.Jobs(); err != nil || !slices.Equal(ids, []string{"01ABC"}) {
		t.Errorf("Jobs() = %v, %v; want [01ABC]", ids, err)
	}
	if _, err := m.NewJob("01ABC", cgroup.Limits{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("NewJob of an existing id = %v, want ErrExist", err)
	}
	for _, id := range []string{"", "../x", ".hidden", "a/b"} {
		if _, err := m.NewJob(id, cgroup.Limits{}); err == nil {
			t.Errorf("NewJob(%q) succeeded", id)
		}
	}
	// An empty cgroup: WaitEmpty returns at once, Remove removes it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := j.WaitEmpty(ctx); err != nil {
		t.Errorf("WaitEmpty(empty) = %v", err)
	}
	if err := j.Remove(); err != nil {
		t.Errorf("Remove = %v", err)
	}
	if err := j.Remove(); err != nil {
		t.Errorf("second Remove = %v", err)
	}
	if err := j.WaitEmpty(ctx); err != nil {
		t.Errorf("WaitEmpty(removed) = %v", err)
	}
	if err := j.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// cgroup.kill takes a setsid escapee along, and WaitEmpty sees it go.
func TestKillSetsidEscapee(t *testing.T) {
	m := open(t)
	j := newJob(t, m, "escapee")
	cmd, pids := spawn(t, j, 2, "/bin/sh", "-c", `setsid sleep 300 >/dev/null & echo $!; echo $$; exec sleep 300`)
	escapee := pids[0]
	// Wait until the escapee really left the group (setsid done).
	deadline := time.Now().Add(5 * time.Second)
	for {
		pgid, err := unix.Getpgid(escapee)
		if err == nil && pgid == escapee {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("escapee %d never became a group leader: %v", escapee, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := cgrouptest.Procs(t, j.Path()); len(got) != 2 {
		t.Fatalf("cgroup.procs = %v, want the sleep and the escapee", got)
	}

	start := time.Now()
	if err := j.Kill(); err != nil {
		t.Fatalf("Kill = %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := j.WaitEmpty(ctx); err != nil {
		t.Fatalf("WaitEmpty = %v", err)
	}
	t.Logf("cgroup.kill to populated 0: %v", time.Since(start))
	if got := cgrouptest.Procs(t, j.Path()); len(got) != 0 {
		t.Errorf("cgroup.procs after kill = %v, want empty", got)
	}
	if alive(escapee) {
		t.Errorf("escapee %d survived cgroup.kill", escapee)
	}
	if err := cmd.Wait(); err == nil || cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("main process: %v, want killed by SIGKILL", err)
	}
	if err := j.Remove(); err != nil {
		t.Errorf("Remove = %v", err)
	}
	if _, err := os.Stat(j.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cgroup still there after Remove: %v", err)
	}
}

func TestWaitEmptyContext(t *testing.T) {
	m := open(t)
	j := newJob(t, m, "busy")
	spawn(t, j, 1, "/bin/sh", "-c", "echo $$; exec sleep 300")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := j.WaitEmpty(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitEmpty(populated) = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("WaitEmpty returned %v after its context ended", d)
	}
	// Remove refuses a populated cgroup, after a bounded retry.
	if err := j.Remove(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("Remove(populated) = %v, want EBUSY", err)
	}
	j.Kill()
}

func TestStatsCPUTime(t *testing.T) {
	m := open(t)
	j := newJob(t, m, "cpu")
	cmd, _ := spawn(t, j, 0, "/bin/sh", "-c", `i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done`)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	s := j.Stats()
	if s.CPUTime <= 0 {
		t.Errorf("Stats().CPUTime = %v after a busy loop, want > 0", s.CPUTime)
	}
	if s.OOMKilled || s.PidsMaxHit {
		t.Errorf("Stats() = %+v: no limit was hit", s)
	}
	t.Logf("Stats() = %+v", s)
}

// After a crash, a new Manager finds the job's cgroup by id and kills it.
func TestSweep(t *testing.T) {
	root := cgrouptest.Root(t)
	m, err := cgroup.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	j := newJob(t, m, "crashed")
	_, pids := spawn(t, j, 1, "/bin/sh", "-c", `setsid sleep 300 >/dev/null & echo $!; sleep 300`)
	j.Close() // the crashed gateway's descriptor is gone

	m2, err := cgroup.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := m2.Jobs(); err != nil || !slices.Equal(ids, []string{"crashed"}) {
		t.Errorf("Jobs() = %v, %v; want [crashed]", ids, err)
	}
	killed, err := m2.Sweep("crashed")
	if !killed || err != nil {
		t.Errorf("Sweep = %v, %v; want true, nil", killed, err)
	}
	if alive(pids[0]) {
		t.Errorf("escapee %d survived Sweep", pids[0])
	}
	if _, err := os.Stat(j.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cgroup still there after Sweep: %v", err)
	}
	if killed, err := m2.Sweep("crashed"); killed || err != nil {
		t.Errorf("second Sweep = %v, %v; want false, nil", killed, err)
	}

	// An empty leftover is removed, and nothing reported killed.
	newJob(t, m2, "empty")
	if killed, err := m2.Sweep("empty"); killed || err != nil {
		t.Errorf("Sweep(empty) = %v, %v; want false, nil", killed, err)
	}
	if ids, _ := m2.Jobs(); len(ids) != 0 {
		t.Errorf("Jobs() after sweeps = %v, want none", ids)
	}
}

// Detect, as under systemd with Delegate=yes: the test process plays the
// gateway in a delegated cgroup.
func TestDetect(t *testing.T) {
	root := cgrouptest.Root(t)
	mnt, err := cgroup.Mountpoint()
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	orig, _, _ := strings.Cut(string(before[strings.Index(string(before), "0::")+3:]), "\n")
	moveTo := func(dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(self), 0); err != nil {
			t.Fatalf("move the test process to %s: %v", dir, err)
		}
	}
	t.Cleanup(func() { moveTo(filepath.Join(mnt, orig)) })
	moveTo(root)

	systemd := func(k string) string {
		if k == "INVOCATION_ID" {
			return "0123456789abcdef"
		}
		return ""
	}
	detect := func(getenv func(string) string) (string, error) {
		return cgroup.DetectWith(getenv, "/proc/self/cgroup", "/proc/self/mountinfo")
	}

	if _, err := detect(func(string) string { return "" }); !errors.Is(err, cgroup.ErrNotDelegated) {
		t.Errorf("detect without INVOCATION_ID = %v, want ErrNotDelegated", err)
	}
	if _, err := detect(systemd); !errors.Is(err, cgroup.ErrNotDelegated) {
		t.Errorf("detect of a cgroup not marked delegated = %v, want ErrNotDelegated", err)
	}
	if _, err := os.Stat(filepath.Join(root, cgroup.GatewayLeaf)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused detect created the leaf: %v", err)
	}

	if err := unix.Setxattr(root, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Skipf("cannot mark %s delegated: %v", root, err)
	}
	for range 2 { // the second time the process is in the leaf already
		got, err := detect(systemd)
		if err != nil || got != root {
			t.Fatalf("detect = %q, %v; want %q", got, err, root)
		}
		if procs := cgrouptest.Procs(t, filepath.Join(root, cgroup.GatewayLeaf)); !slices.Contains(procs, os.Getpid()) {
			t.Errorf("the process is not in the gateway leaf: %v", procs)
		}
		if procs := cgrouptest.Procs(t, root); len(procs) != 0 {
			t.Errorf("processes left in the root: %v", procs)
		}
	}
	m, err := cgroup.Open(root)
	if err != nil {
		t.Fatalf("Open(detected root) = %v", err)
	}
	j, err := m.NewJob("x", cgroup.Limits{})
	if err != nil {
		t.Fatalf("NewJob under the detected root = %v", err)
	}
	j.Close()
}

// TestOpenSubtree: two managers on one root each see only their own jobs,
// and a subtree goes once empty.
func TestOpenSubtree(t *testing.T) {
	root := cgrouptest.Root(t)
	a, err := cgroup.OpenSubtree(root, "gw-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := cgroup.OpenSubtree(root, "gw-b")
	if err != nil {
		t.Fatal(err)
	}
	if a.Root() != filepath.Join(root, "gw-a") {
		t.Errorf("Root() = %s, want %s/gw-a", a.Root(), root)
	}
	job, err := a.NewJob("J1", cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := b.Jobs(); err != nil || len(ids) != 0 {
		t.Errorf("b.Jobs() = %v, %v; want none: a's job is not b's", ids, err)
	}
	if ids, err := a.Jobs(); err != nil || len(ids) != 1 || ids[0] != "J1" {
		t.Errorf("a.Jobs() = %v, %v; want [J1]", ids, err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close with a job inside = %v, want nil (the subtree stays)", err)
	}
	if _, err := os.Stat(a.Root()); err != nil {
		t.Errorf("a's subtree went while a job was in it: %v", err)
	}
	if err := job.Remove(); err != nil {
		t.Fatal(err)
	}
	job.Close()
	for _, m := range []*cgroup.Manager{a, b} {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(m.Root()); !os.IsNotExist(err) {
			t.Errorf("subtree %s after Close: %v, want gone", m.Root(), err)
		}
	}
	for _, name := range []string{"", "a/b", ".x", "job-1"} {
		if _, err := cgroup.OpenSubtree(root, name); err == nil {
			t.Errorf("OpenSubtree(%q) = nil error", name)
		}
	}
}
