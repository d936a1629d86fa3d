package runner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Crash recovery: a gateway that was SIGKILLed leaves its jobs' deeper
// descendants running (Pdeathsig only reaches direct children). The jobs
// store records each job's process group, its leader's start time, the
// session its processes inherited and the boot id; at start-up SweepGroup
// kills what is left, but only if the group id still names the same group:
// pids, hence group ids, get reused.

// procStat is what the runner needs of /proc/PID/stat.
type procStat struct {
	pid   int
	state byte   // field 3
	pgrp  int    // field 5
	sid   int    // field 6, session
	start uint64 // field 22, starttime, in clock ticks since boot
}

// readProcStat reads /proc/PID/stat.
func readProcStat(pid int) (procStat, error) {
	data, err := readSmall("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, err := parseProcStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	st.pid = pid
	return st, nil
}

// readSmall reads a small /proc file whole, by plain system calls: it is
// read for every job started, and os.ReadFile's *os.File (poller, stat,
// finalizer) costs more than the read.
func readSmall(name string) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// parseProcStat parses the content of /proc/PID/stat. The command name
// (field 2) is in parentheses and may itself contain spaces and ')', so
// the fields after it are counted from the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat: no ')'")
	}
	// fields[0] is field 3 (state), so field N is fields[N-3].
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 22-3+1 {
		return procStat{}, fmt.Errorf("malformed stat: %d fields after comm", len(fields))
	}
	if len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat: state %q", fields[0])
	}
	pgrp, err := strconv.Atoi(fields[5-3])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: pgrp: %w", err)
	}
	sid, err := strconv.Atoi(fields[6-3])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: session: %w", err)
	}
	start, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: starttime: %w", err)
	}
	return procStat{state: fields[0][0], pgrp: pgrp, sid: sid, start: start}, nil
}

// ProcStartTicks returns the start time of process pid: field 22
// (starttime) of /proc/PID/stat, in clock ticks since boot. With the boot
// id it identifies a process across pid reuse.
func ProcStartTicks(pid int) (uint64, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	return st.start, nil
}

// BootID returns /proc/sys/kernel/random/boot_id, trimmed: it changes at
// every boot, so start times recorded under another boot id mean nothing.
func BootID() (string, error) {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// Group identifies the process group of a job, as recorded when it
// started.
type Group struct {
	Pgid        int
	LeaderStart uint64 // the leader's start time, clock ticks since boot
	// Sid is the session the job's processes inherit: the gateway's own
	// (jobs are made group leaders, never session leaders). A process
	// that made a session of its own (a daemon) is in another. It reads 0
	// when the session's leader is outside the PID namespace (a
	// container's), which a daemon's session never is; negative means not
	// recorded.
	Sid    int
	BootID string
}

// SweepGroup sends SIGKILL to every process of group g.Pgid, but only when
// the group can only be the recorded one: the current boot id is
// g.BootID; the leader (pid == pgid), if alive, started at g.LeaderStart;
// and every member is in session g.Sid, started no earlier than the
// leader and no later than notAfter (the sweeping process's own start:
// what started after it belongs to no instance before it). Otherwise it
// signals nothing and returns 0, nil. A group whose session was not
// recorded (Sid < 0) cannot be told apart for certain and is never swept. It returns how many
// live (not zombie) processes it signalled. It scans /proc. It refuses
// pgid <= 1 and the caller's own group.
func SweepGroup(g Group, notAfter uint64) (int, error) {
	pgid := g.Pgid
	if pgid <= 1 {
		return 0, fmt.Errorf("sweep process group %d: invalid group id", pgid)
	}
	if pgid == unix.Getpgrp() {
		return 0, fmt.Errorf("sweep process group %d: it is the gateway's own group", pgid)
	}
	cur, err := BootID()
	if err != nil {
		return 0, fmt.Errorf("sweep process group %d: %w", pgid, err)
	}
	if g.BootID == "" || cur != g.BootID || g.Sid < 0 {
		return 0, nil // another boot, where the group died; or not identifiable
	}

	// The leader first: if a process with pid == pgid exists, it decides.
	if st, err := readProcStat(pgid); err == nil && st.start != g.LeaderStart {
		return 0, nil // pid reused by another process
	}
	members, err := groupMembers(pgid)
	if err != nil {
		return 0, fmt.Errorf("sweep process group %d: %w", pgid, err)
	}
	live := 0
	for _, m := range members {
		if m.sid != g.Sid || m.start > notAfter || m.pid != pgid && m.start < g.LeaderStart {
			// Another session (a daemon that got the recorded pid),
			// started after the crash, or before the recorded leader:
			// the group id names another group now.
			return 0, nil
		}
		if m.state != 'Z' {
			live++
		}
	}
	if live == 0 {
		return 0, nil
	}
	// One kill(2) of the group reaches every member, including any forked
	// since the scan; a member cannot fork once SIGKILL is pending.
	if err := unix.Kill(-pgid, unix.SIGKILL); err != nil {
		if err == unix.ESRCH {
			return 0, nil
		}
		return 0, fmt.Errorf("sweep process group %d: %w", pgid, err)
	}
	return live, nil
}

// groupMembers lists the processes of process group pgid from /proc.
func groupMembers(pgid int) ([]procStat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if st.pgrp == pgid {
			out = append(out, st)
		}
	}
	return out, nil
}

// BootTicks reads CLOCK_BOOTTIME in clock ticks, the clock and unit of the
// start times in /proc/PID/stat (USER_HZ is 100 on every Linux).
func BootTicks() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return uint64(ts.Nano()) / (1e9 / 100), nil
}
