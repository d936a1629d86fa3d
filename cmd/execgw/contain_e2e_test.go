package main

// End-to-end tests of containment (issue 7): a cgroup per job, so that
// what a job starts dies with it however it ends, even a process that left
// the job's process group with setsid; limits refused at start-up where
// they cannot be enforced; and credentials, rlimits and a umask applied in
// the child alone.
//
// The tests that need cgroups give the gateway a cgroup v2 directory of
// their own as cgroup.root (see cgrouptest.Root), and are skipped, saying
// why, where cgroup v2 is not writable. The processes a job starts are
// found in /proc by their command line: each test sleeps for a duration of
// its own, such as "301.482113", so that no two tests (and no leftover of
// an earlier run) share one.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/cgroup/cgrouptest"
)

// containRecord adds to record what a job's cgroup measured.
type containRecord struct {
	record
	MemoryPeak *int64 `json:"memory_peak_bytes"`
	CPUTimeMs  *int64 `json:"cpu_time_ms"`
}

// cgroupRoot returns a fresh cgroup v2 directory for cgroup.root; it is
// removed, with whatever is left in it, when the test ends (after the
// gateways the test started have been killed: cleanups run last first).
// The test is skipped when cgroup v2 is not writable here.
func cgroupRoot(t *testing.T) string {
	t.Helper()
	root := cgrouptest.Root(t)
	if _, err := os.Stat(filepath.Join(root, "cgroup.kill")); err != nil {
		t.Skipf("cgroup v2 has no cgroup.kill here (needs Linux 5.14 or later): %v", err)
	}
	return root
}

// sleepArg is a sleep duration of the caller's own, "<base>.<random>",
// that finds its processes in /proc by their command line.
func sleepArg(base int) string {
	return fmt.Sprintf("%d.%06d", base, rand.IntN(1000000))
}

// escapeConfig has the commands of the cgroup tests, each sleeping for
// its parameter d: "escape" leaves a setsid escapee and a sleep in its
// process group, "escape_timeout" too but times out, "leave" exits at once
// leaving the escapee (printing its pid once it has left the session), and
// "busy" burns CPU.
func escapeConfig(root string) string {
	cfg := `
shutdown_grace: 1s
commands:
  escape:
    argv: ["sh", "-c", 'setsid sleep "$1" & sleep "$1"', "sh", "{d}"]
    params: {d: {pattern: '^[0-9]+[.][0-9]+$', required: true}}
    kill_grace: 500ms
  escape_timeout:
    argv: ["sh", "-c", 'setsid sleep "$1" & sleep "$1"', "sh", "{d}"]
    params: {d: {pattern: '^[0-9]+[.][0-9]+$', required: true}}
    kill_grace: 500ms
    timeout: 1s
  leave:
    argv: ["sh", "-c", 'setsid sleep "$1" & p=$!; until [ "$(cat /proc/$p/comm 2>/dev/null)" = sleep ]; do :; done; echo "$p"', "sh", "{d}"]
    params: {d: {pattern: '^[0-9]+[.][0-9]+$', required: true}}
  busy:
    argv: ["sh", "-c", 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done']
`
	if root != "" {
		cfg = "cgroup: {root: " + root + "}\n" + cfg
	}
	return cfg
}

// jobsRoot is the cgroup the gateway makes its jobs' cgroups in: its
// subtree of cgroup.root, as its start-up line says.
func jobsRoot(t *testing.T, g *gateway) string {
	t.Helper()
	c := containment(t, g)
	dir, ok := strings.CutPrefix(c, "cgroups in ")
	if !ok {
		t.Fatalf("containment %q: no cgroups", c)
	}
	return dir
}

// containment is the "containment" field of the start-up log line.
func containment(t *testing.T, g *gateway) string {
	t.Helper()
	return startupLine[struct {
		Containment string `json:"containment"`
	}](t, g).Containment
}

// procsRunning lists the live processes whose command line is argv.
func procsRunning(argv ...string) []int {
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Equal(cmdline, want) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procIDs returns the process group and session of pid.
func procIDs(pid int) (pgrp, sid int, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which may hold spaces and ')':
	// state ppid pgrp session ...
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %q", pid, stat)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	sid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %q", pid, stat)
	}
	return pgrp, sid, nil
}

// cgroupDir returns the directory of pid's cgroup v2 cgroup.
func cgroupDir(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("cgroup of %d: %v", pid, err)
	}
	mnt, err := cgroup.Mountpoint()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, p)
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/%d/cgroup: %q", pid, data)
	return ""
}

// jobCgroups lists the cgroups under root.
func jobCgroups(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a gateway's subtree, removed at its exit
	}
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	return dirs
}

// escapees waits until both sleeps of an escape job (arg its sleep
// duration, jobPid its main process) run and returns them: the escapee,
// which left the job's session and process group with setsid, and the
// sleep still in the job's process group. With root set, both must be in
// the job's cgroup, a child of root.
func escapees(t *testing.T, arg string, jobPid int, root string) (escapee, inGroup int) {
	t.Helper()
	var pids []int
	waitFor(t, 10*time.Second, "both sleeps of the job to run", func() bool {
		pids = procsRunning("sleep", arg)
		if len(pids) != 2 {
			return false
		}
		// Until setsid has run, the escapee is still in the group.
		escapee, inGroup = 0, 0
		for _, pid := range pids {
			pgrp, sid, err := procIDs(pid)
			switch {
			case err != nil:
			case sid == pid && pgrp == pid:
				escapee = pid
			case pgrp == jobPid:
				inGroup = pid
			}
		}
		return escapee != 0 && inGroup != 0
	})
	if root != "" {
		jobCg := cgroupDir(t, jobPid)
		if filepath.Dir(jobCg) != root {
			t.Errorf("the job's main process is in cgroup %s, want one of its own under %s", jobCg, root)
		}
		for _, pid := range []int{escapee, inGroup} {
			if cg := cgroupDir(t, pid); cg != jobCg {
				t.Errorf("process %d of the job is in cgroup %s, want the job's %s", pid, cg, jobCg)
			}
		}
	}
	return escapee, inGroup
}

// waitGone waits until none of pids is alive and nothing sleeps for arg
// any more.
func waitGone(t *testing.T, timeout time.Duration, what, arg string, pids ...int) {
	t.Helper()
	waitFor(t, timeout, what, func() bool {
		return !slices.ContainsFunc(pids, alive) && len(procsRunning("sleep", arg)) == 0
	})
}

// killAfter kills pid when the test ends, for a process that is meant to
// survive its job.
func killAfter(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
}

// TestContainCgroupKillsEscapees: with a cgroup per job, a process that
// left the job's process group and session (setsid) dies with the job
// when it is canceled, when it times out, and when its main process exits
// by itself, which ends the job at once; each job's cgroup is removed.
func TestContainCgroupKillsEscapees(t *testing.T) {
	root := cgroupRoot(t)
	g := startGateway(t, escapeConfig(root))
	if got, want := containment(t, g), "cgroups in "+root+"/gw-"; !strings.HasPrefix(got, want) {
		t.Errorf("start-up log: containment %q, want %q...", got, want)
	}
	sub := jobsRoot(t, g)

	t.Run("cancel", func(t *testing.T) {
		arg := sleepArg(301)
		rec := g.detach("/v1/commands/escape/run?d=" + arg)
		escapee, inGroup := escapees(t, arg, rec.Pid, sub)
		resp, body := g.do("POST", "/v1/jobs/"+rec.ID+"/cancel", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("cancel = %d %s", resp.StatusCode, body)
		}
		if got := decode[record](t, body); got.State != "canceled" || got.CancelReason == nil || *got.CancelReason != "user" {
			t.Errorf("cancel answered %s", body)
		}
		waitGone(t, 2*time.Second, "the canceled job's processes, the setsid escapee included, to be gone", arg, rec.Pid, escapee, inGroup)
		if dirs := jobCgroups(t, sub); len(dirs) != 0 {
			t.Errorf("cgroups left after the job ended: %v", dirs)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		arg := sleepArg(302)
		rec := g.detach("/v1/commands/escape_timeout/run?d=" + arg)
		escapee, inGroup := escapees(t, arg, rec.Pid, sub)
		got := g.waitJob(rec.ID, "timed_out")
		if got.EndedAt == nil || got.StartedAt == nil || got.EndedAt.Sub(*got.StartedAt) > 5*time.Second {
			t.Errorf("timed out job: started %v ended %v", got.StartedAt, got.EndedAt)
		}
		waitGone(t, 2*time.Second, "the timed out job's processes, the setsid escapee included, to be gone", arg, rec.Pid, escapee, inGroup)
		if dirs := jobCgroups(t, sub); len(dirs) != 0 {
			t.Errorf("cgroups left after the job ended: %v", dirs)
		}
	})

	t.Run("main_exits", func(t *testing.T) {
		arg := sleepArg(303)
		start := time.Now()
		resp, body := g.do("POST", "/v1/commands/leave/run?d="+arg, nil)
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("run = %d %s", resp.StatusCode, body)
		}
		rec := decode[record](t, body)
		if rec.State != "succeeded" || rec.Stdout == nil {
			t.Fatalf("job whose main process exited: %s", body)
		}
		if took > 2*time.Second {
			t.Errorf("the run took %v: a job ends when its main process exits, whatever it left running", took)
		}
		escapee, err := strconv.Atoi(strings.TrimSpace(*rec.Stdout))
		if err != nil {
			t.Fatalf("stdout %q, want the escapee's pid", *rec.Stdout)
		}
		waitGone(t, 2*time.Second, "the escapee left by the main process to be gone", arg, escapee)
		if dirs := jobCgroups(t, sub); len(dirs) != 0 {
			t.Errorf("cgroups left after the job ended: %v", dirs)
		}
	})
	g.stop()
}

// TestContainCgroupShutdown: a job still running when shutdown_grace
// elapses is canceled (reason shutdown) with everything it started,
// the setsid escapee included, before the gateway exits.
func TestContainCgroupShutdown(t *testing.T) {
	root := cgroupRoot(t)
	arg := sleepArg(304)
	g := startGateway(t, escapeConfig(root))
	sub := jobsRoot(t, g)
	rec := g.detach("/v1/commands/escape/run?d=" + arg)
	escapee, inGroup := escapees(t, arg, rec.Pid, sub)

	start := time.Now()
	g.signal(syscall.SIGTERM)
	if err := g.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v; log:\n%s", err, g.log.String())
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("exited %v after SIGTERM, before shutdown_grace", took)
	}
	waitGone(t, 2*time.Second, "the job's processes, the setsid escapee included, to be gone with the gateway", arg, rec.Pid, escapee, inGroup)
	ended := g.log.lines(`"job_id":"`+rec.ID+`"`, `"message":"job ended"`)
	if len(ended) != 1 {
		t.Fatalf("%d job ended lines for the job; log:\n%s", len(ended), g.log.String())
	}
	if got := decode[record](t, []byte(ended[0])); got.State != "canceled" || got.CancelReason == nil || *got.CancelReason != "shutdown" {
		t.Errorf("job at shutdown: %s, want canceled with cancel_reason shutdown", ended[0])
	}
	if dirs := jobCgroups(t, sub); len(dirs) != 0 {
		t.Errorf("cgroups left after the gateway exited: %v", dirs)
	}
}

// TestContainCgroupCrashRestart: after kill -9 of the gateway, the job's
// setsid escapee survives (the parent-death signal reaches the direct
// child only, the next start's process-group sweep not at all), until the
// next start kills what is left in the job's cgroup, removes it, and
// records the job as interrupted.
func TestContainCgroupCrashRestart(t *testing.T) {
	root := cgroupRoot(t)
	arg := sleepArg(305)
	cfg := escapeConfig(root)
	g := startGateway(t, cfg)
	sub := jobsRoot(t, g)
	rec := g.detach("/v1/commands/escape/run?d=" + arg)
	escapee, inGroup := escapees(t, arg, rec.Pid, sub)
	killAfter(t, escapee) // should the restart miss it
	killAfter(t, inGroup)

	g.signal(syscall.SIGKILL)
	if err := g.wait(10 * time.Second); err == nil {
		t.Fatalf("gateway exited cleanly after SIGKILL")
	}
	waitFor(t, 2*time.Second, "the job's direct child to die with the gateway", func() bool { return !alive(rec.Pid) })
	if !alive(escapee) {
		t.Fatalf("the setsid escapee died with the gateway: nothing left for the restart to sweep")
	}
	if dirs := jobCgroups(t, sub); len(dirs) != 1 {
		t.Errorf("cgroups after the crash: %v, want the job's", dirs)
	}

	g2 := startGateway(t, cfg, gatewayOptions{dir: g.Dir})
	waitGone(t, 2*time.Second, "the restart to kill the escapee left in the job's cgroup", arg, escapee, inGroup)
	if got := g2.job(rec.ID); got.State != "interrupted" || got.EndedAt == nil {
		t.Errorf("job after the crash and restart: %s ended %v, want interrupted", got.State, got.EndedAt)
	}
	if g2.log.find(`"message":"killed processes left in the cgroup of an interrupted job"`) == "" {
		t.Errorf("the sweep of the job's cgroup is not logged:\n%s", g2.log.String())
	}
	if dirs := jobCgroups(t, sub); len(dirs) != 0 {
		t.Errorf("cgroups left after the restart: %v", dirs)
	}
	g2.stop()
}

// TestContainCgroupRecordsCPUTime: the record and the log line of a job
// with a cgroup carry the CPU time it used. (Peak memory needs the memory
// controller, absent here: only its absence is checked then.)
func TestContainCgroupRecordsCPUTime(t *testing.T) {
	root := cgroupRoot(t)
	g := startGateway(t, escapeConfig(root))
	resp, body := g.do("POST", "/v1/commands/busy/run", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("run = %d %s", resp.StatusCode, body)
	}
	rec := decode[containRecord](t, body)
	if rec.State != "succeeded" || rec.DurationMs == nil {
		t.Fatalf("busy job: %s", body)
	}
	if rec.CPUTimeMs == nil || *rec.CPUTimeMs <= 0 {
		t.Errorf("busy job's record has no cpu_time_ms: %s", body)
	} else if *rec.CPUTimeMs > *rec.DurationMs+100 {
		// One process, one thread: no more CPU time than wall time.
		t.Errorf("cpu_time_ms %d of a single-threaded job that ran %d ms", *rec.CPUTimeMs, *rec.DurationMs)
	}
	stored := decode[containRecord](t, must(g.do("GET", "/v1/jobs/"+rec.ID, nil)))
	if stored.CPUTimeMs == nil || rec.CPUTimeMs == nil || *stored.CPUTimeMs != *rec.CPUTimeMs {
		t.Errorf("stored record's cpu_time_ms %v, answered %v", stored.CPUTimeMs, rec.CPUTimeMs)
	}
	ended := g.log.lines(`"job_id":"`+rec.ID+`"`, `"message":"job ended"`)
	if len(ended) != 1 || !strings.Contains(ended[0], `"cpu_time_ms":`) {
		t.Errorf("job ended line without cpu_time_ms: %v", ended)
	}
	memory, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(memory)), "memory") && rec.MemoryPeak != nil {
		t.Errorf("memory_peak_bytes %d without a memory controller in %s", *rec.MemoryPeak, root)
	}
	t.Logf("cpu_time_ms %v, duration_ms %d, memory_peak_bytes %v", *rec.CPUTimeMs, *rec.DurationMs, rec.MemoryPeak)
	g.stop()
}

// must drops the response of gateway.do, keeping the body.
func must(_ *http.Response, body []byte) []byte { return body }

// TestContainProcessGroupsWithoutCgroupRoot: without cgroup.root (and not
// under systemd) the start-up log says the process group is the unit; as
// the README says, a setsid escapee then survives its job. That is the
// control of the cgroup tests: the same job there leaves nothing.
func TestContainProcessGroupsWithoutCgroupRoot(t *testing.T) {
	arg := sleepArg(306)
	g := startGateway(t, escapeConfig(""))
	if got := containment(t, g); got != "process groups" {
		t.Errorf("start-up log: containment %q, want %q", got, "process groups")
	}
	resp, body := g.do("POST", "/v1/commands/leave/run?d="+arg, nil)
	rec := decode[record](t, body)
	if resp.StatusCode != http.StatusOK || rec.State != "succeeded" || rec.Stdout == nil {
		t.Fatalf("run = %d %s", resp.StatusCode, body)
	}
	escapee, err := strconv.Atoi(strings.TrimSpace(*rec.Stdout))
	if err != nil {
		t.Fatalf("stdout %q, want the escapee's pid", *rec.Stdout)
	}
	killAfter(t, escapee)
	time.Sleep(100 * time.Millisecond)
	if !alive(escapee) {
		t.Errorf("the setsid escapee of a job without cgroups is gone: the cgroup tests prove nothing")
	}
	g.stop()
}

// limitConfigs are, for each limit, a command that sets it.
var limitConfigs = []struct {
	limit, command, controller, config string
}{
	{"memory_max", "hog", "memory", "memory_max: 64MiB"},
	{"pids_max", "forker", "pids", "pids_max: 20"},
	{"cpu_max", "spinner", "cpu", "cpu_max: 0.5"},
}

// limitConfig is a whole configuration with one command that sets a limit.
func limitConfig(root, command, limit string) string {
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: ./state\ncommands:\n  %s:\n    argv: [\"true\"]\n    %s\n", command, limit)
	if root != "" {
		cfg += "cgroup: {root: " + root + "}\n"
	}
	return cfg
}

// TestContainLimitsRefusedWithoutCgroups: a limit that needs a cgroup
// stops start-up when there is none, naming the command, the limit and
// what is missing.
func TestContainLimitsRefusedWithoutCgroups(t *testing.T) {
	for _, l := range limitConfigs {
		t.Run(l.limit, func(t *testing.T) {
			out, err := serveExpectingFailure(t, limitConfig("", l.command, l.config))
			if err == nil {
				t.Fatalf("the gateway started with %s and no cgroups; output:\n%s", l.limit, out)
			}
			for _, want := range []string{strconv.Quote(l.command), l.limit, "cgroup"} {
				if !strings.Contains(out, want) {
					t.Errorf("start-up error does not say %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, `"message":"serving"`) {
				t.Errorf("served before refusing:\n%s", out)
			}
		})
	}
}

// TestContainCgroupLimitNeedsController: with a cgroup root whose
// cgroup.controllers lacks a limit's controller, start-up stops naming the
// command, the limit and the missing controller.
func TestContainCgroupLimitNeedsController(t *testing.T) {
	root := cgroupRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	available := strings.Fields(string(data))
	for _, l := range limitConfigs {
		t.Run(l.limit, func(t *testing.T) {
			if slices.Contains(available, l.controller) {
				t.Skipf("the %s controller is available in %s: %s can be enforced here", l.controller, root, l.limit)
			}
			out, err := serveExpectingFailure(t, limitConfig(root, l.command, l.config))
			if err == nil {
				t.Fatalf("the gateway started with %s and no %s controller; output:\n%s", l.limit, l.controller, out)
			}
			for _, want := range []string{strconv.Quote(l.command), l.limit, l.controller + " controller", root} {
				if !strings.Contains(out, want) {
					t.Errorf("start-up error does not say %q:\n%s", want, out)
				}
			}
		})
	}
	if dirs := jobCgroups(t, root); len(dirs) != 0 {
		t.Errorf("cgroups left by a refused start: %v", dirs)
	}
}

// gatewayGroups are the supplementary groups TestContainRlimitsUmaskUser
// starts the gateway with (adm and sudo on Debian; the numbers are enough).
var gatewayGroups = []uint32{4, 27}

// gatewayLimits returns the lines of the gateway's /proc/PID/limits for
// open files and address space, and its umask and supplementary groups
// from /proc/PID/status.
func gatewayLimits(t *testing.T, g *gateway) []string {
	t.Helper()
	pid := g.cmd.Process.Pid
	var out []string
	for _, file := range []string{"limits", "status"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			if strings.HasPrefix(line, "Max open files") || strings.HasPrefix(line, "Max address space") || strings.HasPrefix(line, "Umask:") || strings.HasPrefix(line, "Groups:") {
				out = append(out, strings.Join(strings.Fields(line), " "))
			}
		}
	}
	if len(out) != 4 {
		t.Fatalf("gateway limits, umask and groups: %q", out)
	}
	return out
}

// TestContainRlimitsUmaskUser: a command's rlimits (soft and hard), umask,
// user and that user's primary group hold in the job, without
// supplementary groups (the gateway has some), with and without a cgroup
// per job, and the gateway's own limits and umask do not change. The job
// runs the shim, the gateway's binary re-executed through /proc/self/exe,
// as nobody: the binary's directory (the harness's, mode 0700) need not be
// searchable by nobody for that.
func TestContainRlimitsUmaskUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to another user needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	const cfg = `
commands:
  ids:
    argv: ["sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -Sv; ulimit -Hv; umask; id -u; id -g; id -G"]
    rlimits: {nofile: 1024, as: 1GiB}
    umask: "0027"
    user: nobody
    dir: /tmp
`
	// nobody's primary group, nogroup on Debian.
	want := strings.Join([]string{"1024", "1024", "1048576", "1048576", "0027", nobody.Uid, nobody.Gid, nobody.Gid}, "\n") + "\n"
	for _, mode := range []string{"process groups", "cgroups"} {
		t.Run(strings.ReplaceAll(mode, " ", "_"), func(t *testing.T) {
			config := cfg
			if mode == "cgroups" {
				config = "cgroup: {root: " + cgroupRoot(t) + "}\n" + cfg
			}
			// The gateway gets supplementary groups of its own, which
			// the job must not inherit.
			g := startGateway(t, config, gatewayOptions{extra: func(cmd *exec.Cmd) {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: gatewayGroups}}
			}})
			if got := containment(t, g); !strings.HasPrefix(got, mode) {
				t.Errorf("containment %q, want %s", got, mode)
			}
			before := gatewayLimits(t, g)
			if !slices.Contains(before, "Groups: "+strings.Trim(fmt.Sprint(gatewayGroups), "[]")) {
				t.Fatalf("the gateway runs without the supplementary groups %v: %q", gatewayGroups, before)
			}
			resp, body := g.do("POST", "/v1/commands/ids/run", nil)
			rec := decode[record](t, body)
			if resp.StatusCode != http.StatusOK || rec.State != "succeeded" || rec.Stdout == nil {
				t.Fatalf("run = %d %s", resp.StatusCode, body)
			}
			if *rec.Stdout != want {
				t.Errorf("the job printed\n%s\nwant (ulimit -Sn -Hn -Sv -Hv, umask, id -u -g -G)\n%s", *rec.Stdout, want)
			}
			if after := gatewayLimits(t, g); !slices.Equal(before, after) {
				t.Errorf("the gateway's own limits changed with the job's:\nbefore %q\nafter  %q", before, after)
			}
			if fi, err := os.Stat(filepath.Dir(binary(t))); err == nil {
				t.Logf("gateway: %q; its binary's directory: %v", before, fi.Mode())
			}
			g.stop()
		})
	}
}

// TestContainTwoGatewaysShareCgroupRoot: two gateways on one cgroup.root
// (two on a host, as a cluster runs them) each work in a subtree of their
// own: the start-up sweep of one never touches the other's jobs.
func TestContainTwoGatewaysShareCgroupRoot(t *testing.T) {
	root := cgroupRoot(t)
	arg := sleepArg(307)
	first := startGateway(t, escapeConfig(root))
	rec := first.detach("/v1/commands/escape/run?d=" + arg)
	escapee, inGroup := escapees(t, arg, rec.Pid, jobsRoot(t, first))

	second := startGateway(t, escapeConfig(root))
	second.waitLog(`"message":"ready"`, 10*time.Second)
	for _, pid := range []int{rec.Pid, escapee, inGroup} {
		if !alive(pid) {
			t.Errorf("process %d of the first gateway's job died when the second started", pid)
		}
	}
	if got := first.waitJob(rec.ID, "running"); got.State != "running" {
		t.Errorf("the first gateway's job: %s", got.State)
	}
	a, b := containment(t, first), containment(t, second)
	if a == b || !strings.HasPrefix(a, "cgroups in "+root+"/") || !strings.HasPrefix(b, "cgroups in "+root+"/") {
		t.Errorf("containment %q and %q, want two subtrees of %s", a, b, root)
	}
	second.stop()
	first.stop()
}
