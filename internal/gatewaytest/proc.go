package gatewaytest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Proc is what the tests and the benchmark read of /proc/PID/stat.
type Proc struct {
	Pid   int
	Comm  string
	State byte // R, S, D, Z, ...
	Ppid  int
	Pgrp  int
	Sid   int
	// CPU is the user and system time the process has used; ChildrenCPU
	// that of the children it has waited for.
	CPU, ChildrenCPU time.Duration
}

// clockTick is the unit of the times in /proc/PID/stat (USER_HZ).
const clockTick = 10 * time.Millisecond

// ReadProc parses /proc/PID/stat.
func ReadProc(pid int) (Proc, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, err
	}
	// The command name may hold spaces and ')': it ends at the last ')'.
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return Proc{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// f[0] is field 3 (state): ppid 4, pgrp 5, session 6, utime 14,
	// stime 15, cutime 16, cstime 17.
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 15 || len(f[0]) != 1 {
		return Proc{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	var n [7]int64
	for i, idx := range []int{1, 2, 3, 11, 12, 13, 14} {
		if n[i], err = strconv.ParseInt(f[idx], 10, 64); err != nil {
			return Proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	return Proc{
		Pid: pid, Comm: string(data[open+1 : end]), State: f[0][0],
		Ppid: int(n[0]), Pgrp: int(n[1]), Sid: int(n[2]),
		CPU:         time.Duration(n[3]+n[4]) * clockTick,
		ChildrenCPU: time.Duration(n[5]+n[6]) * clockTick,
	}, nil
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	p, err := ReadProc(pid)
	return err == nil && p.State != 'Z' && p.State != 'X'
}

// Processes lists the live (not zombie) processes for which keep is true.
func Processes(keep func(Proc) bool) []Proc {
	ents, _ := os.ReadDir("/proc")
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := ReadProc(pid)
		if err != nil || p.State == 'Z' || p.State == 'X' || !keep(p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// GroupMembers lists the live processes of process group pgid.
func GroupMembers(pgid int) []Proc {
	return Processes(func(p Proc) bool { return p.Pgrp == pgid })
}

// Status returns the numeric values (kB for sizes) of /proc/PID/status.
func Status(pid int) (map[string]int64, error) {
	return StatusFile("/proc/" + strconv.Itoa(pid) + "/status")
}

// StatusFile reads "Key: value [kB]" lines (/proc/PID/status,
// /proc/meminfo).
func StatusFile(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}
