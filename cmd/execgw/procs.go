package main

// schedulerProcs is the number of Ps (GOMAXPROCS) the gateway runs with:
// twice the runtime's default (def, the CPUs it may use), unless the
// operator chose a number in the GOMAXPROCS environment variable (env),
// which is then kept.
//
// A process start parks its OS thread in vfork(2) until the child has
// called execve, and Go makes that system call raw (syscall.forkExec's
// rawVforkSyscall), so the scheduler cannot hand the thread's P to another
// thread meanwhile. With one P per CPU, two starts in flight stop every
// other goroutine of the gateway: requests, job ends, store commits. Spare
// Ps keep those moving. Under the 1000-client load this gives about 6%
// more runs per second for 6% less gateway CPU per run; four times the
// CPUs is no better than twice (docs/performance.md).
func schedulerProcs(env string, def int) int {
	if env != "" {
		return def
	}
	return 2 * def
}
