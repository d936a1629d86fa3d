// Package cgrouptest gives tests a cgroup v2 subtree of their own.
package cgrouptest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/cgroup"
)

// Root creates a fresh cgroup directory, <cgroup v2 mount>/execgw-test-<random>,
// and removes it when the test ends, after killing whatever is still in it
// or below it; a process of the test itself in there is moved back to the
// hierarchy's root first. Root skips the test, saying why, when there is no
// writable cgroup v2 hierarchy.
func Root(t testing.TB) string {
	t.Helper()
	mnt, err := cgroup.Mountpoint()
	if err != nil {
		t.Skipf("cgroup v2 not available: %v", err)
	}
	if err := unix.Access(filepath.Join(mnt, "cgroup.procs"), unix.W_OK); err != nil {
		t.Skipf("cgroup v2 hierarchy at %s not writable (tests need root): %v", mnt, err)
	}
	var b [6]byte
	rand.Read(b[:])
	dir := filepath.Join(mnt, "execgw-test-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup under %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := removeTree(mnt, dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}

// removeTree kills everything in dir and below, moves this process out if
// it is in there, and removes the directories bottom-up.
func removeTree(mnt, dir string) error {
	self := strconv.Itoa(os.Getpid())
	var dirs []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for _, d := range dirs {
		procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, pid := range bytes.Fields(procs) {
			if string(pid) == self {
				os.WriteFile(filepath.Join(mnt, "cgroup.procs"), []byte(self), 0)
			}
		}
	}
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := unix.Rmdir(dirs[i])
			if err == nil || err == unix.ENOENT {
				break
			}
			if err != unix.EBUSY || time.Now().After(deadline) {
				errs = append(errs, &fs.PathError{Op: "rmdir", Path: dirs[i], Err: err})
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// Procs returns the pids listed in dir's cgroup.procs.
func Procs(t testing.TB, dir string) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatalf("read cgroup.procs: %v", err)
	}
	var pids []int
	for _, f := range bytes.Fields(data) {
		pid, err := strconv.Atoi(string(f))
		if err != nil {
			t.Fatalf("cgroup.procs of %s: %q", dir, data)
		}
		pids = append(pids, pid)
	}
	return pids
}
