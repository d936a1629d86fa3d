package runner

// Cancelling a process: SIGTERM to its group (or its cgroup), then,
// after the grace, SIGKILL to everything of it.

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/logkey"
)

// Cancel asks the process tree to stop: SIGTERM to the whole group now, and
// SIGKILL to the group after Spec.KillGrace unless the main process has
// exited by then. It does not block. Only the first call has an effect and
// its cause is the one reported in Result.Cause (nil is recorded as
// ErrCanceled). After the main process has exited, Cancel does nothing.
func (p *Process) Cancel(cause error) {
	if cause == nil {
		cause = ErrCanceled
	}
	p.mu.Lock()
	if p.cause != nil || p.exited {
		p.mu.Unlock()
		return
	}
	// The cause is recorded before anything is killed, so the result of
	// a canceled process always says why (Wait alone says "signal: ...").
	p.cause = cause
	termErr := unix.Kill(-p.pid, unix.SIGTERM)
	var killErr error
	if p.grace <= 0 {
		killErr = p.killAll()
		p.killed = true
	} else {
		p.timerWG.Add(1)
		p.timer = time.AfterFunc(p.grace, p.escalate)
	}
	p.mu.Unlock()

	ev := p.log.Info()
	if termErr != nil {
		ev = p.log.Warn().Err(termErr)
	}
	ev.Int(logkey.Pgid, p.pid).Str(logkey.Cause, cause.Error()).Msg("sent SIGTERM to process group")
	if p.grace <= 0 {
		ev := p.log.Warn()
		if killErr != nil {
			ev = ev.Err(killErr)
		}
		ev.Int(logkey.Pgid, p.pid).Int64(logkey.KillGraceMs, 0).Msg(p.killMsg())
	}
}

// killAll sends SIGKILL to the group and kills the cgroup, if any.
func (p *Process) killAll() error {
	err := unix.Kill(-p.pid, unix.SIGKILL)
	if p.cgroup != nil {
		err = errors.Join(err, p.cgroup.Kill())
	}
	return err
}

// killMsg is the log message of the escalation to SIGKILL.
func (p *Process) killMsg() string {
	if p.cgroup != nil {
		return "kill_grace elapsed; sent SIGKILL to process group and killed its cgroup"
	}
	return "kill_grace elapsed; sent SIGKILL to process group"
}

// escalate runs on the kill_grace timer: SIGKILL to the group unless the
// main process has exited meanwhile.
func (p *Process) escalate() {
	defer p.timerWG.Done()
	p.mu.Lock()
	if p.exited || p.leaderExited() {
		// The leader obeyed SIGTERM; the watcher's sweep takes care of
		// anything it left behind. No escalation.
		p.mu.Unlock()
		return
	}
	err := p.killAll()
	p.killed = true
	p.mu.Unlock()

	ev := p.log.Warn()
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Int(logkey.Pgid, p.pid).Int64(logkey.KillGraceMs, p.grace.Milliseconds()).Msg(p.killMsg())
}

// leaderExited reports whether the main process has exited and waits to be
// reaped, without reaping it.
func (p *Process) leaderExited() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	// Linux sets si_signo to SIGCHLD only when a child was waitable.
	return err == nil && info.Signo == int32(unix.SIGCHLD)
}
