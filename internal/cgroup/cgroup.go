// Package cgroup gives each job its own cgroup v2 leaf under a root the
// gateway may write to: the child is spawned straight into it (the runner
// passes [Job.FD] as SysProcAttr.CgroupFD, so there is no window in which
// it runs elsewhere), cgroup.kill kills everything in it at once (a
// process that left its process group with setsid included),
// cgroup.events says when it is empty, and memory.max, pids.max and
// cpu.max bound it.
//
// A Manager owns one root directory, either configured (cgroup.root) or
// found by [Detect] under systemd (a unit with Delegate=yes). Job cgroups
// are named job-<id> directly under the root, so that after a crash
// [Manager.Sweep] finds a job's leftovers from its id alone.
//
// Controllers: a limit needs its controller (memory, pids, cpu) listed in
// the root's cgroup.controllers; [Manager.NewJob] enables it in the root's
// cgroup.subtree_control on first use. [Manager.Require] lets start-up
// refuse a configuration whose limits cannot be enforced. cgroup.kill,
// cgroup.events and cpu.stat (usage_usec) exist in every cgroup v2 cgroup,
// so killing and CPU accounting need no controller.
//
// Everything here is Linux only and needs a kernel of 5.14 or later
// (cgroup.kill).
package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotAvailable is matched (errors.Is) by the error of [Manager.Require]
// and of [Manager.NewJob] when a controller a limit needs is not available
// in the root.
var ErrNotAvailable = errors.New("cgroup controller not available")

// ControllerError says which controller a limit needs and what the root
// offers instead.
type ControllerError struct {
	Controller string   // "memory", "pids" or "cpu"
	Root       string   // the Manager's root directory
	Available  []string // the root's cgroup.controllers
}

func (e *ControllerError) Error() string {
	avail := "none"
	if len(e.Available) > 0 {
		avail = strings.Join(e.Available, " ")
	}
	return fmt.Sprintf("the %s controller is not available in %s (available: %s)", e.Controller, e.Root, avail)
}

// Is makes errors.Is(err, ErrNotAvailable) hold.
func (e *ControllerError) Is(target error) bool { return target == ErrNotAvailable }

// Manager creates, kills and removes job cgroups under one root. Its
// methods are safe for concurrent use.
type Manager struct {
	root        string
	controllers []string
	subtree     bool // made by OpenSubtree: Close removes it

	mu      sync.Mutex
	enabled map[string]bool // controllers known enabled in root's cgroup.subtree_control
}

// Open returns a Manager for root, an absolute path in a cgroup v2
// hierarchy. A missing root is created (only below an existing cgroup v2
// directory, never on another file system). Open fails when root is not
// cgroup v2 or not writable.
func Open(root string) (*Manager, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("cgroup root %q: not an absolute path", root)
	}
	root = filepath.Clean(root)
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		// Create it only inside cgroup v2: MkdirAll on the tmpfs of a
		// hybrid /sys/fs/cgroup would make plain directories.
		parent := filepath.Dir(root)
		for {
			if _, err := os.Stat(parent); err == nil || parent == "/" {
				break
			}
			parent = filepath.Dir(parent)
		}
		if err := checkCgroup2(parent); err != nil {
			return nil, fmt.Errorf("cgroup root %s does not exist and cannot be created: %w", root, err)
		}
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup root: %w", err)
		}
	}
	if err := checkCgroup2(root); err != nil {
		return nil, fmt.Errorf("cgroup root: %w", err)
	}
	for _, name := range []string{"", "cgroup.subtree_control", "cgroup.procs"} {
		p := filepath.Join(root, name)
		if err := unix.Access(p, unix.W_OK); err != nil {
			return nil, fmt.Errorf("cgroup root: %s is not writable: %w", p, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup root: %w", err)
	}
	m := &Manager{root: root, controllers: strings.Fields(string(data)), enabled: map[string]bool{}}
	if data, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control")); err == nil {
		for _, c := range strings.Fields(string(data)) {
			m.enabled[c] = true
		}
	}
	return m, nil
}

// OpenSubtree returns a Manager for root/name, a subtree of its own under
// a root that other gateways may share (cgroup.root): it works only below
// it, so its start-up sweep never reaches another gateway's jobs. It
// creates the subtree, after enabling in root every limit controller that
// root offers, so that the subtree can offer them in turn. Close removes
// the subtree once it is empty.
func OpenSubtree(root, name string) (*Manager, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name[0] == '.' || strings.HasPrefix(name, jobPrefix) {
		return nil, fmt.Errorf("cgroup subtree %q: invalid name", name)
	}
	parent, err := Open(root)
	if err != nil {
		return nil, err
	}
	var offered []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		if parent.Require(c) == nil {
			offered = append(offered, c)
		}
	}
	// Should it fail, limits fail at start-up, naming what is missing;
	// the subtree still kills and accounts.
	_ = parent.enable(offered)
	m, err := Open(filepath.Join(parent.root, name))
	if err != nil {
		return nil, err
	}
	m.subtree = true
	return m, nil
}

// Close removes the Manager's subtree (see [OpenSubtree]) if nothing is in
// it any more; for a root of its own, it does nothing.
func (m *Manager) Close() error {
	if !m.subtree {
		return nil
	}
	if err := unix.Rmdir(m.root); err != nil && err != unix.ENOENT && err != unix.EBUSY {
		return fmt.Errorf("remove cgroup subtree: %w", &fs.PathError{Op: "rmdir", Path: m.root, Err: err})
	}
	return nil
}

// checkCgroup2 fails unless dir is a directory of a cgroup v2 file system.
func checkCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return &fs.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%s is not in a cgroup v2 hierarchy (file system type %#x)", dir, st.Type)
	}
	return nil
}

// Root returns the Manager's root directory.
func (m *Manager) Root() string { return m.root }

// Controllers returns the controllers available in the root (its
// cgroup.controllers, read by Open).
func (m *Manager) Controllers() []string { return slices.Clone(m.controllers) }

// Require returns a *ControllerError (matching ErrNotAvailable) unless
// controller is available in the root.
func (m *Manager) Require(controller string) error {
	if slices.Contains(m.controllers, controller) {
		return nil
	}
	return &ControllerError{Controller: controller, Root: m.root, Available: m.Controllers()}
}

// Limits are the bounds of one job's cgroup; zero values mean none.
type Limits struct {
	MemoryMax int64   // bytes: memory.max (needs the memory controller)
	PidsMax   int64   // tasks: pids.max (needs the pids controller)
	CPUMax    float64 // CPUs: cpu.max, quota per 100 ms period (needs the cpu controller)
}

// Controllers returns the controllers l needs, in the order memory, pids,
// cpu.
func (l Limits) Controllers() []string {
	var cs []string
	if l.MemoryMax > 0 {
		cs = append(cs, "memory")
	}
	if l.PidsMax > 0 {
		cs = append(cs, "pids")
	}
	if l.CPUMax > 0 {
		cs = append(cs, "cpu")
	}
	return cs
}

// cpuPeriod is the cpu.max period in microseconds (the kernel's default).
const cpuPeriod = 100000

// minCPUQuota is the smallest quota the kernel accepts, in microseconds.
const minCPUQuota = 1000

// jobPrefix names job cgroups: root/job-<id>.
const jobPrefix = "job-"

// validID reports whether id can name a cgroup directory: not empty, no
// slash, no leading dot, no control characters.
func validID(id string) bool {
	if id == "" || len(id) > 200 || id[0] == '.' {
		return false
	}
	for _, r := range id {
		if r == '/' || r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// enable makes sure the controllers are enabled in the root's
// cgroup.subtree_control, so that job cgroups get their files.
func (m *Manager) enable(controllers []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var missing []string
	for _, c := range controllers {
		if err := m.Require(c); err != nil {
			return err
		}
		if !m.enabled[c] {
			missing = append(missing, "+"+c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	path := filepath.Join(m.root, "cgroup.subtree_control")
	if err := writeFile(path, strings.Join(missing, " ")); err != nil {
		if errors.Is(err, unix.EBUSY) {
			// The no-internal-process rule: the root itself holds
			// processes (the gateway?); they must live in a leaf.
			return fmt.Errorf("enable %s in %s: the root holds processes, which must be moved into a leaf cgroup first: %w",
				strings.Join(missing, " "), path, err)
		}
		return fmt.Errorf("enable %s: %w", strings.Join(missing, " "), err)
	}
	for _, c := range controllers {
		m.enabled[c] = true
	}
	return nil
}

// NewJob creates the cgroup root/job-<id> with the limits l, enabling
// their controllers in the root first, and opens it for [Job.FD]. It fails
// if the cgroup exists already (see [Manager.Sweep]) or a limit's
// controller is not available (a *ControllerError). On error nothing is
// left behind.
func (m *Manager) NewJob(id string, l Limits) (*Job, error) {
	if !validID(id) {
		return nil, fmt.Errorf("new job cgroup: invalid id %q", id)
	}
	controllers := l.Controllers()
	if !slices.Contains(controllers, "memory") && slices.Contains(m.controllers, "memory") {
		// Every job's peak memory is worth recording, limited or not.
		controllers = append(controllers, "memory")
	}
	if err := m.enable(controllers); err != nil {
		return nil, fmt.Errorf("new job cgroup %s: %w", id, err)
	}
	path := filepath.Join(m.root, jobPrefix+id)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("new job cgroup: %w", err)
	}
	fail := func(err error) (*Job, error) {
		unix.Rmdir(path)
		return nil, fmt.Errorf("new job cgroup %s: %w", id, err)
	}
	if l.MemoryMax > 0 {
		if err := writeFile(filepath.Join(path, "memory.max"), strconv.FormatInt(l.MemoryMax, 10)); err != nil {
			return fail(err)
		}
		// Without swap limit, memory.max would only move the excess to
		// swap; and one OOM kill ends the whole job, not a random part
		// of it. Both files are optional (no swap accounting, old
		// kernels).
		if err := writeFile(filepath.Join(path, "memory.swap.max"), "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
		if err := writeFile(filepath.Join(path, "memory.oom.group"), "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
	}
	if l.PidsMax > 0 {
		if err := writeFile(filepath.Join(path, "pids.max"), strconv.FormatInt(l.PidsMax, 10)); err != nil {
			return fail(err)
		}
	}
	if l.CPUMax > 0 {
		quota := max(int64(l.CPUMax*cpuPeriod), minCPUQuota)
		if err := writeFile(filepath.Join(path, "cpu.max"), fmt.Sprintf("%d %d", quota, cpuPeriod)); err != nil {
			return fail(err)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(&fs.PathError{Op: "open", Path: path, Err: err})
	}
	return &Job{id: id, path: path, fd: fd}, nil
}

// Jobs returns the ids of the job cgroups under the root, for a start-up
// sweep of jobs that no record knows of.
func (m *Manager) Jobs() ([]string, error) {
	ents, err := os.ReadDir(m.root)
	if err != nil {
		return nil, fmt.Errorf("list job cgroups: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutPrefix(e.Name(), jobPrefix); ok && e.IsDir() && validID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// sweepWait bounds how long Sweep waits for a killed cgroup to empty.
const sweepWait = 2 * time.Second

// Sweep is crash recovery: if the cgroup of job id exists, it kills
// everything in it, waits for it to empty (up to 2 s) and removes it.
// killed reports that processes were still running in it.
func (m *Manager) Sweep(id string) (killed bool, err error) {
	if !validID(id) {
		return false, fmt.Errorf("sweep job cgroup: invalid id %q", id)
	}
	path := filepath.Join(m.root, jobPrefix+id)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sweep job cgroup: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	j := &Job{id: id, path: path, fd: fd}
	defer j.Close()
	populated, err := j.populated()
	if err != nil {
		return false, fmt.Errorf("sweep job cgroup %s: %w", id, err)
	}
	if populated {
		if err := j.Kill(); err != nil {
			return false, fmt.Errorf("sweep job cgroup %s: %w", id, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), sweepWait)
		err := j.WaitEmpty(ctx)
		cancel()
		if err != nil {
			return true, fmt.Errorf("sweep job cgroup %s: %w", id, err)
		}
	}
	if err := j.Remove(); err != nil {
		return populated, fmt.Errorf("sweep job cgroup %s: %w", id, err)
	}
	return populated, nil
}

// Job is one job's cgroup. Its methods are safe for concurrent use; Close
// it once the job has ended (after Stats and Remove).
type Job struct {
	id   string
	path string
	fd   int

	closeOnce sync.Once
}

// FD returns the open descriptor of the cgroup directory, for
// SysProcAttr{UseCgroupFD: true, CgroupFD: fd}. It is valid until Close.
func (j *Job) FD() int { return j.fd }

// Path returns the cgroup's directory.
func (j *Job) Path() string { return j.path }

// Kill kills every process in the cgroup (and any cgroup below it) with
// SIGKILL, by writing "1" to cgroup.kill. The kernel also kills processes
// forking meanwhile. It does not wait: see WaitEmpty.
func (j *Job) Kill() error {
	if err := j.write("cgroup.kill", "1"); err != nil {
		return fmt.Errorf("kill job cgroup %s: %w", j.id, err)
	}
	return nil
}

// WaitEmpty returns nil once no process is left in the cgroup
// (cgroup.events says "populated 0"; a removed cgroup is empty too), or
// ctx's error when ctx ends first.
//
// It polls cgroup.events, every 250 µs at first, backing off to every
// 8 ms: killed processes are usually gone within a millisecond. (Not
// inotify: the kernel rate-limits cgroup.events notifications to one per
// 10 ms, and closing an inotify descriptor waits for an SRCU grace period,
// 10-20 ms measured, which every job would pay.)
func (j *Job) WaitEmpty(ctx context.Context) error {
	backoff := minEmptyPoll
	var t *time.Timer
	for {
		populated, err := j.populated()
		if err != nil {
			return fmt.Errorf("wait for job cgroup %s to empty: %w", j.id, err)
		}
		if !populated {
			return nil
		}
		if t == nil {
			t = time.NewTimer(backoff)
			defer t.Stop()
		} else {
			t.Reset(backoff)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for job cgroup %s to empty: %w", j.id, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(2*backoff, maxEmptyPoll)
	}
}

// The polling interval of WaitEmpty grows from minEmptyPoll to
// maxEmptyPoll.
const (
	minEmptyPoll = 250 * time.Microsecond
	maxEmptyPoll = 8 * time.Millisecond
)

// populated reads "populated" of cgroup.events; a removed cgroup is not
// populated.
func (j *Job) populated() (bool, error) {
	data, err := j.read("cgroup.events")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	v, ok := keyed(data, "populated")
	if !ok {
		return false, fmt.Errorf("%s/cgroup.events has no populated line", j.path)
	}
	return v != 0, nil
}

// Stats is what a job's cgroup measured.
type Stats struct {
	MemoryPeak int64         // bytes, memory.peak; 0 without the memory controller (or a kernel before 5.19)
	CPUTime    time.Duration // user + system CPU time of every process the job ran, cpu.stat usage_usec
	OOMKilled  bool          // memory.max was hit and the OOM killer killed (memory.events oom_kill > 0)
	PidsMaxHit bool          // a fork failed at pids.max (pids.events max > 0)
}

// Stats reads the cgroup's accounting. Call it before Remove; files that
// are missing (their controller is not enabled) read as zero.
func (j *Job) Stats() Stats {
	var s Stats
	if data, err := j.read("memory.peak"); err == nil {
		s.MemoryPeak, _ = strconv.ParseInt(string(bytes.TrimSpace(data)), 10, 64)
	}
	if data, err := j.read("cpu.stat"); err == nil {
		if v, ok := keyed(data, "usage_usec"); ok {
			s.CPUTime = time.Duration(v) * time.Microsecond
		}
	}
	if data, err := j.read("memory.events"); err == nil {
		v, _ := keyed(data, "oom_kill")
		s.OOMKilled = v > 0
	}
	if data, err := j.read("pids.events"); err == nil {
		v, _ := keyed(data, "max")
		s.PidsMaxHit = v > 0
	}
	return s
}

// removeWait bounds how long Remove retries while the cgroup is busy.
const removeWait = time.Second

// Remove removes the cgroup directory. It must be empty (Kill, then
// WaitEmpty); Remove retries for up to 1 s while the kernel still reports
// it busy. A cgroup already gone is no error.
func (j *Job) Remove() error {
	deadline := time.Now().Add(removeWait)
	for {
		err := unix.Rmdir(j.path)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("remove job cgroup: %w", &fs.PathError{Op: "rmdir", Path: j.path, Err: err})
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close closes the cgroup's descriptor. It does not remove the cgroup.
func (j *Job) Close() error {
	var err error
	j.closeOnce.Do(func() { err = unix.Close(j.fd) })
	return err
}

// read reads a file of the cgroup through its descriptor.
func (j *Job) read(name string) ([]byte, error) {
	fd, err := unix.Openat(j.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: filepath.Join(j.path, name), Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(j.path, name))
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// write writes s to a file of the cgroup through its descriptor.
func (j *Job) write(name, s string) error {
	fd, err := unix.Openat(j.fd, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: filepath.Join(j.path, name), Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		return &fs.PathError{Op: "write", Path: filepath.Join(j.path, name), Err: err}
	}
	return nil
}

// writeFile writes s to a cgroup file in one write(2): the kernel parses
// each write on its own.
func writeFile(path, s string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// keyed returns the value of "key N" in a flat-keyed cgroup file.
func keyed(data []byte, key string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
