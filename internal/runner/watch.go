package runner

// Watching a process end: its exit, the sweep of what it left behind,
// and the end of its output.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/logkey"
)

// watch is the only goroutine that waits for the process.
func (p *Process) watch() {
	// Wait for the exit without reaping: while the leader is a zombie its
	// pid, hence the group id, cannot be reused, so signalling -pid is safe.
	waitErr := p.awaitExit()
	endedAt := time.Now()
	p.mu.Lock()
	p.exited = true
	if p.timer != nil && p.timer.Stop() {
		p.timerWG.Done() // the escalation will never run
	}
	p.mu.Unlock()
	if waitErr == nil {
		p.sweep()
	}

	err := p.cmd.Wait() // reaps; returns at once, no os/exec goroutines to wait for
	if waitErr != nil {
		// Should not happen; sweep late rather than never.
		p.sweep()
	}
	p.timerWG.Wait()
	p.emptyCgroup()

	// The process is gone: a copy into its stdin cannot go on. A blocked
	// Write returns at once; a blocked Read of Spec.Stdin is the caller's.
	p.closeStdin()

	for _, c := range p.copiers {
		c.processExited()
	}
	p.copyWG.Wait()
	for _, c := range p.copiers {
		c.r.Close()
	}

	res := Result{ExitCode: -1, StartedAt: p.startedAt, EndedAt: endedAt}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		res.Err = err
	}
	if ps := p.cmd.ProcessState; ps != nil {
		res.ExitCode = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = ws.Signal()
			res.ExitCode = -1
		}
	}
	p.mu.Lock()
	res.Cause = p.cause
	res.Killed = p.killed
	p.mu.Unlock()
	p.result = res
	close(p.done)
}

// awaitExit returns once the main process has exited, leaving it an
// unreaped zombie. It waits in the netpoller on a pidfd, so a running job
// holds no OS thread: with a blocking waitid every running process would pin
// one, and each exit would cost a thread handoff.
func (p *Process) awaitExit() error {
	fd, err := unix.PidfdOpen(p.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return p.awaitExitBlocking() // a kernel without pidfds (before 5.10)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd") // non-blocking: registered with the netpoller
	defer pidfd.Close()
	conn, err := pidfd.SyscallConn()
	if err != nil {
		return p.awaitExitBlocking()
	}
	var waitErr error
	err = conn.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		for {
			waitErr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			if waitErr != unix.EINTR {
				break
			}
		}
		switch {
		case waitErr == unix.EAGAIN:
			return false // running: wait until the pidfd is readable
		case waitErr != nil:
			return true
		}
		// Linux sets si_signo to SIGCHLD only when a child was waitable.
		return info.Signo == int32(unix.SIGCHLD)
	})
	if err != nil {
		return p.awaitExitBlocking() // the pidfd is not pollable after all
	}
	return waitErr
}

// awaitExitBlocking is awaitExit in a blocking waitid, which holds an OS
// thread for as long as the process runs.
func (p *Process) awaitExitBlocking() error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// sweep kills whatever the main process left running in its group and
// in its cgroup.
func (p *Process) sweep() {
	if err := unix.Kill(-p.pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
		p.log.Warn().Err(err).Int(logkey.Pgid, p.pid).Msg("sweep process group")
	}
	if p.cgroup != nil {
		if err := p.cgroup.Kill(); err != nil {
			p.log.Warn().Err(err).Int(logkey.Pgid, p.pid).Msg("kill the job's cgroup")
		}
	}
}

// emptyCgroup waits, bounded, until the killed cgroup holds no process, so
// that a result never reports a job whose processes still run.
func (p *Process) emptyCgroup() {
	if p.cgroup == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cgroupEmptyWait)
	defer cancel()
	if err := p.cgroup.WaitEmpty(ctx); err != nil {
		p.log.Warn().Err(err).Int(logkey.Pgid, p.pid).Msg("the job's cgroup is not empty after cgroup.kill")
	}
}
