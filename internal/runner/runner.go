// Package runner runs one OS process tree: it starts a command in its own
// process group, delivers its output, reports its result on a closed
// channel, and cancels it with SIGTERM, a grace period, then SIGKILL to the
// whole group.
//
// No shell is involved: Spec.Argv is executed directly with execve(2), so a
// parameter substituted into one argv element stays exactly one argument.
// Only an operator's own argv that names a shell (sh -c '...') gets one.
//
// It knows nothing of HTTP or job ids; the caller adds those to the logger
// it passes in.
//
// # Lifetime
//
// A job ends when its main process exits. Then whatever it left running in
// its process group is killed (one SIGKILL to the group, sent while the
// exited leader is still an unreaped zombie, so the group id cannot have
// been reused), the output still in the pipes is delivered, and Done is
// closed. A process that left the group (setsid) escapes that sweep; if it
// keeps an output pipe open, reading stops once the pipe has stayed idle for
// a bounded time after the main process exited (see [Process.Done]).
//
// Each child gets SysProcAttr{Setpgid: true, Pdeathsig: SIGKILL}: if the
// gateway dies, its direct children die with it. Pdeathsig is tied to the
// OS thread that forked the child (golang/go#27505), so nothing on the
// spawning path may call runtime.LockOSThread. Deeper descendants are not
// covered by Pdeathsig: after a crash, [SweepGroup] kills what is left of a
// recorded group.
//
// The runner never becomes a child subreaper and never waits for any pid but
// its own child's, so it cannot steal exit statuses from os/exec.
//
// # Containment
//
// With Spec.Cgroup the process tree also has a cgroup v2 of its own, which
// nothing started inside can leave: the child is cloned straight into it,
// the escalation to SIGKILL also writes cgroup.kill, and when the main
// process has exited the cgroup is killed and Done waits until it is empty,
// so a setsid escapee dies with the job and no longer holds its pipes.
// Spec.Credential runs the tree as another user without supplementary
// groups; Spec.Rlimits and Spec.Umask are applied in the child only,
// through a re-exec of the gateway's own binary (see [ShimArg]), never with
// Setrlimit in the gateway.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Spec describes the process to run.
type Spec struct {
	// Argv is the command and its arguments, executed directly, no shell.
	// Argv[0] should be an absolute path. A bare name (no slash) is looked
	// up in the PATH of Env, never in the gateway's own PATH, skipping
	// relative PATH entries; a relative path with a slash is relative to
	// Dir, as in os/exec.
	Argv []string
	// Dir is the working directory; "" inherits the gateway's.
	Dir string
	// Env is the complete environment of the process. Nil means an empty
	// environment, never "inherit the gateway's".
	Env []string
	// Stdin, when not nil, is copied into the process's standard input by a
	// goroutine of the runner; nil gives the process /dev/null. When a Read
	// fails with an error other than io.EOF, the process is canceled with
	// cause &StdinError{Err: err}. When the process closes its standard
	// input, the copy just stops. At io.EOF the process's standard input is
	// closed.
	//
	// The runner cannot interrupt a blocked Read: the caller must make Read
	// return once the process is done (an HTTP server closes the request
	// body when the handler returns). Done does not wait for the copy; the
	// copying goroutine ends at the first Read that returns after the
	// process has ended.
	Stdin io.Reader
	// Stdout receives the process's standard output as it is produced; nil
	// discards it. Write may block: that is backpressure on the process. If
	// Write fails, the rest of the output is read and discarded, so the
	// process never blocks on a dead consumer. Stdout and Stderr are written
	// from different goroutines: if they are the same writer, it must be safe
	// for concurrent use.
	Stdout io.Writer
	// Stderr receives the process's standard error, like Stdout.
	Stderr io.Writer
	// KillGrace is how long Cancel waits after SIGTERM before it sends
	// SIGKILL to the group; <= 0 sends SIGKILL right after SIGTERM.
	KillGrace time.Duration
	// Log receives the runner's lines about kill escalation and stuck pipes.
	// The zero Logger discards them.
	Log zerolog.Logger

	// Cgroup, when not nil, is the job's own cgroup (v2): the process is
	// spawned straight into it (SysProcAttr.CgroupFD, no window in which it
	// runs elsewhere). Cancel's escalation to SIGKILL also kills the
	// cgroup, and once the main process has exited the cgroup is killed
	// (whatever the job left running dies, processes that left the group
	// included) and Done waits, up to 2 s, for it to be empty. The caller
	// owns it: it creates it before Start, and reads its statistics,
	// removes and closes it after Done. Leave it a nil interface when there
	// is none: a nil *cgroup.Job stored in it is not nil.
	Cgroup CgroupJob
	// Credential, when not nil, runs the process as that user and group
	// (the gateway must be root). Supplementary groups are always dropped:
	// the runner ignores Groups and NoSetGroups.
	Credential *syscall.Credential
	// Umask, when not nil, is the process's umask.
	Umask *uint32
	// Rlimits are set, soft and hard, in the process only, never in the
	// gateway. With Umask, they make the child start as the gateway's own
	// binary in shim mode (see [ShimArg]), which applies them and then
	// executes Argv; the process keeps its pid, group and cgroup. An
	// error of the shim (a limit refused, Argv[0] not executable as
	// Credential's user) is reported on the process's stderr with exit
	// status 127.
	Rlimits []Rlimit
}

// CgroupJob is the cgroup of one job, as the runner uses it
// (*cgroup.Job implements it).
type CgroupJob interface {
	// FD is an open descriptor of the cgroup's directory.
	FD() int
	// Kill kills every process in the cgroup (cgroup.kill).
	Kill() error
	// WaitEmpty returns once no process is left in the cgroup, or with
	// ctx's error.
	WaitEmpty(ctx context.Context) error
}

// Rlimit is one resource limit for the process: setrlimit(2)'s Resource
// (unix.RLIMIT_NOFILE, ...) and its soft and hard values
// (unix.RLIM_INFINITY for unlimited).
type Rlimit struct {
	Resource   int
	Soft, Hard uint64
}

// Result says how a process ended.
type Result struct {
	// ExitCode is the exit status, or -1 when a signal ended the process.
	ExitCode int
	// Signal is the signal that ended the process, 0 if it exited.
	Signal syscall.Signal
	// Cause is the cause given to the first Cancel that took effect (before
	// the process exited), nil if it was never canceled.
	Cause error
	// Killed reports that SIGKILL had to be sent to the group because the
	// process still ran kill_grace after SIGTERM (or at once when KillGrace
	// <= 0).
	Killed bool
	// StartedAt is when the process had started; EndedAt when its exit was
	// observed.
	StartedAt time.Time
	EndedAt   time.Time
	// Err is an unexpected error from waiting for the process, other than
	// an exit status; nil normally.
	Err error
}

// StdinError is the cancel cause when reading Spec.Stdin failed.
type StdinError struct{ Err error }

func (e *StdinError) Error() string { return "read stdin: " + e.Err.Error() }

// Unwrap returns the read error.
func (e *StdinError) Unwrap() error { return e.Err }

// ErrCanceled is the cause recorded when Cancel is called with a nil cause.
var ErrCanceled = errors.New("runner: canceled")

// postExitIdle bounds how long a copy goroutine may wait in Read, in total,
// once the main process has exited and its group has been swept: only a
// process outside the group (a setsid escapee) can then still hold the pipe
// open. Time spent in Stdout/Stderr Write does not count, so a slow consumer
// still gets every byte the tree wrote.
const postExitIdle = 2 * time.Second

// cgroupEmptyWait bounds how long the runner waits for the job's cgroup to
// empty after killing it.
const cgroupEmptyWait = 2 * time.Second

// copyBufSize is the largest buffer of a copy goroutine.
const copyBufSize = 32 << 10

// minCopyBufSize is where an output copier's buffer starts.
const minCopyBufSize = 2 << 10

// Process is one started process tree. Its methods are safe for concurrent
// use.
type Process struct {
	cmd        *exec.Cmd
	pid        int // also the process group id (Setpgid)
	grace      time.Duration
	cgroup     CgroupJob // nil without Spec.Cgroup
	startTicks uint64
	log        zerolog.Logger
	startedAt  time.Time
	copiers    []*copier
	copyWG     sync.WaitGroup // the output copy goroutines
	stdinW     *os.File       // parent's end of the child's stdin; nil without Spec.Stdin
	stdinOnce  sync.Once

	mu      sync.Mutex
	cause   error
	exited  bool // the leader's exit was observed: no more signals from Cancel or the timer
	killed  bool
	timer   *time.Timer
	timerWG sync.WaitGroup // the escalation timer's function, when it may run

	done   chan struct{}
	result Result // written once before done is closed
}

// Start starts the process described by spec. On error nothing is left
// running and every descriptor it opened is closed.
func Start(spec Spec) (*Process, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errors.New("start: empty argv")
	}
	argv0 := spec.Argv[0]
	path := argv0
	if !strings.Contains(argv0, "/") {
		var err error
		if path, err = lookPath(argv0, spec.Env); err != nil {
			return nil, fmt.Errorf("start %q: %w", argv0, err)
		}
	}
	env := spec.Env
	if env == nil {
		env = []string{} // nil would make os/exec inherit the gateway's environment
	}
	sys := &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if spec.Credential != nil {
		// A nil Groups makes the child call setgroups(0, NULL): no
		// supplementary group of the gateway's survives.
		sys.Credential = &syscall.Credential{Uid: spec.Credential.Uid, Gid: spec.Credential.Gid}
	}
	if spec.Cgroup != nil {
		sys.UseCgroupFD = true
		sys.CgroupFD = spec.Cgroup.FD()
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        spec.Argv,
		Dir:         spec.Dir,
		Env:         env,
		SysProcAttr: sys,
	}
	if spec.Umask != nil || len(spec.Rlimits) > 0 {
		// The shim reports a command it cannot execute only as exit 127:
		// catch the common cases here, as an error of Start.
		if err := checkExecutable(path, spec.Dir); err != nil {
			return nil, fmt.Errorf("start %q: %w", argv0, err)
		}
		cmd.Path = shimPath
		cmd.Args = shimArgv(path, spec.Argv, spec.Umask, spec.Rlimits)
	}
	// Every stdio of the child is an *os.File (or nil, /dev/null opened by
	// os/exec), so os/exec starts no copy goroutine of its own and Wait
	// returns as soon as the process has exited, whoever else holds a pipe.
	var (
		closeOnErr []*os.File // everything to close if Start fails
		childEnds  []*os.File // the child's ends, closed in the parent after Start
		p          = &Process{grace: spec.KillGrace, cgroup: spec.Cgroup, log: spec.Log, done: make(chan struct{})}
	)
	fail := func(err error) (*Process, error) {
		for _, f := range closeOnErr {
			f.Close()
		}
		return nil, fmt.Errorf("start %q: %w", argv0, err)
	}
	null, err := devNull()
	if err != nil {
		return fail(err)
	}
	for _, s := range []struct {
		name string
		w    io.Writer
		dst  *io.Writer
	}{{"stdout", spec.Stdout, &cmd.Stdout}, {"stderr", spec.Stderr, &cmd.Stderr}} {
		if s.w == nil {
			*s.dst = null
			continue
		}
		r, w, err := pipe(true)
		if err != nil {
			return fail(err)
		}
		closeOnErr = append(closeOnErr, r, w)
		childEnds = append(childEnds, w)
		*s.dst = w
		p.copiers = append(p.copiers, &copier{stream: s.name, r: r, w: s.w, log: spec.Log})
	}
	cmd.Stdin = null
	if spec.Stdin != nil {
		w, r, err := pipe(false)
		if err != nil {
			return fail(err)
		}
		closeOnErr = append(closeOnErr, r, w)
		childEnds = append(childEnds, r)
		cmd.Stdin = r
		p.stdinW = w
	}

	ticksBefore, clockErr := BootTicks()
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	ticksAfter, _ := BootTicks()
	p.startedAt = time.Now()
	// The parent's copies of the child's ends must go, or the copy
	// goroutines would never see EOF (and the child never EOF on stdin).
	for _, f := range childEnds {
		f.Close()
	}
	p.cmd = cmd
	p.pid = cmd.Process.Pid
	if clockErr == nil && ticksBefore == ticksAfter {
		// The kernel stamped the child's start between the two readings
		// of the same clock /proc reports it in.
		p.startTicks = ticksBefore
	} else {
		// A tick boundary fell in between: ask /proc (the process
		// cannot have been reaped, only watch reaps it).
		p.startTicks, _ = ProcStartTicks(p.pid)
	}

	for _, c := range p.copiers {
		c.pgid = p.pid
		p.copyWG.Add(1)
		// Exits at EOF (every writer of the pipe gone), or, after the main
		// process exited, once it has spent postExitIdle waiting in Read
		// (only a process outside the group can still hold the pipe).
		go func() {
			defer p.copyWG.Done()
			c.run()
		}()
	}
	if spec.Stdin != nil {
		// Exits at EOF or a read error of spec.Stdin, or at the first
		// write after the child's stdin was closed (the child closed it,
		// or the process ended and the watcher closed our end). Not
		// waited for by Done: a blocked Read can only be ended by the
		// caller.
		go p.copyStdin(spec.Stdin)
	}
	// Exits once the process has exited and its output has been delivered.
	go p.watch()
	return p, nil
}

// Pid returns the process id of the main process, which is also the id of
// its process group.
func (p *Process) Pid() int { return p.pid }

// StartTicks returns the start time of the main process as
// [ProcStartTicks] reports it, without reading /proc in most cases.
func (p *Process) StartTicks() uint64 { return p.startTicks }

// Done returns a channel closed when the result is final and all output has
// been delivered to Stdout and Stderr. Output is read until EOF; only when a
// process that left the group holds a pipe open does reading stop early,
// once the pipe has stayed idle for about 2 s after the main process exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Result returns how the process ended. It is valid once Done is closed;
// before that it returns the zero Result.
func (p *Process) Result() Result {
	select {
	case <-p.done:
		return p.result
	default:
		return Result{}
	}
}

// Wait waits for Done and returns the Result.
func (p *Process) Wait() Result {
	<-p.done
	return p.result
}

// lookPath finds an executable named file in the PATH of env. Relative PATH
// entries are ignored, as os/exec does since Go 1.19 for ".".
func lookPath(file string, env []string) (string, error) {
	pathEnv := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v // the last one wins, as in os/exec
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(dir) {
			continue
		}
		path := filepath.Join(dir, file)
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}
