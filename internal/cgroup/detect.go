package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// GatewayLeaf is the leaf cgroup, below a delegated root, that Detect moves
// the gateway into: with controllers enabled in the root's
// cgroup.subtree_control, the root itself may hold no process.
const GatewayLeaf = "gateway"

// Detect finds the cgroup subtree systemd delegated to the gateway (a unit
// with Delegate=yes) and makes it usable for job cgroups. It is
// conservative: it answers ok only when
//
//   - INVOCATION_ID is set (the process runs as a systemd unit),
//   - the process's cgroup v2 cgroup P (the "0::" line of /proc/self/cgroup)
//     is not the root of the hierarchy,
//   - P carries systemd's delegation mark (extended attribute
//     trusted.delegate or user.delegate = "1", set by systemd 251 and later
//     on delegated cgroups), and
//   - P's cgroup.subtree_control and cgroup.procs are writable.
//
// Then it creates P/gateway, moves every process of P (the gateway first)
// into it, and returns P as the root for [Open]. When the process already
// lives in P/gateway (Detect ran before), P is returned as is.
// Detect changes nothing when it answers ok = false.
func Detect() (root string, ok bool) {
	root, err := detect(os.Getenv, "/proc/self/cgroup", "/proc/self/mountinfo")
	return root, err == nil
}

// errNotDelegated is detect's answer when there is no delegated subtree;
// the reason is only for tests.
var errNotDelegated = errors.New("no delegated cgroup")

func detect(getenv func(string) string, procCgroup, mountinfo string) (string, error) {
	if getenv("INVOCATION_ID") == "" {
		return "", fmt.Errorf("%w: INVOCATION_ID not set", errNotDelegated)
	}
	data, err := os.ReadFile(procCgroup)
	if err != nil {
		return "", err
	}
	p, ok := unifiedPath(data)
	if !ok {
		return "", fmt.Errorf("%w: no cgroup v2 line in %s", errNotDelegated, procCgroup)
	}
	mnt, mntRoot, err := mountpointFrom(mountinfo)
	if err != nil {
		return "", err
	}
	if mntRoot != "/" {
		rel, ok := strings.CutPrefix(p, mntRoot)
		if !ok || (rel != "" && rel[0] != '/') {
			return "", fmt.Errorf("%w: cgroup %s is outside the mount of %s", errNotDelegated, p, mntRoot)
		}
		p = rel
	}
	p = path.Clean("/" + p)
	if path.Base(p) == GatewayLeaf {
		p = path.Dir(p) // moved there by an earlier Detect
	}
	if p == "/" {
		return "", fmt.Errorf("%w: the process is in the root cgroup", errNotDelegated)
	}
	dir := filepath.Join(mnt, p)
	if err := checkCgroup2(dir); err != nil {
		return "", err
	}
	if !delegated(dir) {
		return "", fmt.Errorf("%w: %s has no delegate attribute", errNotDelegated, dir)
	}
	for _, name := range []string{"cgroup.subtree_control", "cgroup.procs"} {
		if err := unix.Access(filepath.Join(dir, name), unix.W_OK); err != nil {
			return "", fmt.Errorf("%w: %s: %v", errNotDelegated, name, err)
		}
	}
	leaf := filepath.Join(dir, GatewayLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	self := os.Getpid()
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(self)); err != nil {
		return "", err
	}
	// Whatever else the unit runs in P must leave it too, or enabling a
	// controller fails with EBUSY. These processes are the unit's own.
	if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for _, pid := range strings.Fields(string(procs)) {
			writeFile(filepath.Join(leaf, "cgroup.procs"), pid) // gone meanwhile: ESRCH, fine
		}
	}
	return dir, nil
}

// delegated reports whether systemd marked dir as delegated.
func delegated(dir string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		n, err := unix.Getxattr(dir, attr, buf)
		if err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}

// unifiedPath returns the cgroup v2 path of a /proc/PID/cgroup content: the
// "0::" line.
func unifiedPath(data []byte) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok && strings.HasPrefix(p, "/") {
			return p, true
		}
	}
	return "", false
}

// Mountpoint returns where the cgroup v2 hierarchy is mounted:
// /sys/fs/cgroup on a unified system, /sys/fs/cgroup/unified on a hybrid
// one. The first cgroup2 mount of /proc/self/mountinfo wins.
func Mountpoint() (string, error) {
	mnt, _, err := mountpointFrom("/proc/self/mountinfo")
	return mnt, err
}

// mountpointFrom returns the mount point and the mounted root (field 4,
// "/" unless a cgroup namespace or a bind mount shows a subtree) of the
// first cgroup2 mount in a mountinfo file.
func mountpointFrom(mountinfo string) (mnt, root string, err error) {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return "", "", err
	}
	mnt, root, ok := parseMountinfo(data)
	if !ok {
		return "", "", errors.New("no cgroup2 file system is mounted")
	}
	return mnt, root, nil
}

func parseMountinfo(data []byte) (mnt, root string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		return unescapeMount(fields[4]), unescapeMount(fields[3]), true
	}
	return "", "", false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
