package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The shim: rlimits and a umask must be set in the child only, between fork
// and exec, and SysProcAttr has no field for them; Setrlimit in the gateway
// would change its own limits and every later child's. So a child that
// needs them starts as the gateway's own binary, /proc/self/exe (resolved
// by execve in the child: the running gateway's image, even if the file
// was replaced or deleted since), with the arguments
//
//	ShimArg [-umask=OCTAL] [-rlimit=RESOURCE,SOFT,HARD]... -- PATH ARGV0 ARGS...
//
// and main hands them to RunShim, which applies them and executes PATH in
// place: same pid, process group, cgroup, credentials, parent-death signal
// and descriptors.

// ShimArg, as os.Args[1], tells the execgw binary to act as the shim. main
// must check it before anything else:
//
//	if len(os.Args) > 1 && os.Args[1] == runner.ShimArg {
//		err := runner.RunShim(os.Args[2:])
//		fmt.Fprintln(os.Stderr, "execgw:", err)
//		os.Exit(127)
//	}
const ShimArg = "__execgw-exec"

// shimPath is the binary started as the shim. Tests may point it elsewhere.
var shimPath = "/proc/self/exe"

// shimArgv builds the shim's argv for executing path with argv.
func shimArgv(path string, argv []string, umask *uint32, rlimits []Rlimit) []string {
	args := make([]string, 0, 4+len(rlimits)+len(argv))
	args = append(args, "execgw", ShimArg)
	if umask != nil {
		args = append(args, "-umask="+strconv.FormatUint(uint64(*umask), 8))
	}
	for _, l := range rlimits {
		args = append(args, fmt.Sprintf("-rlimit=%d,%d,%d", l.Resource, l.Soft, l.Hard))
	}
	args = append(args, "--", path)
	return append(args, argv...)
}

// shimSpec is what the shim is asked to do.
type shimSpec struct {
	umask   *uint32
	rlimits []Rlimit
	path    string
	argv    []string
}

func parseShimArgs(args []string) (shimSpec, error) {
	var s shimSpec
	for i, a := range args {
		if a == "--" {
			rest := args[i+1:]
			if len(rest) < 2 {
				return s, errors.New("no command after --")
			}
			s.path, s.argv = rest[0], rest[1:]
			return s, nil
		}
		name, val, ok := strings.Cut(a, "=")
		switch {
		case ok && name == "-umask":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil || m > 0o777 {
				return s, fmt.Errorf("bad umask %q", val)
			}
			u := uint32(m)
			s.umask = &u
		case ok && name == "-rlimit":
			f := strings.Split(val, ",")
			if len(f) != 3 {
				return s, fmt.Errorf("bad rlimit %q", val)
			}
			res, err1 := strconv.Atoi(f[0])
			soft, err2 := strconv.ParseUint(f[1], 10, 64)
			hard, err3 := strconv.ParseUint(f[2], 10, 64)
			if err := errors.Join(err1, err2, err3); err != nil || res < 0 || soft > hard {
				return s, fmt.Errorf("bad rlimit %q", val)
			}
			s.rlimits = append(s.rlimits, Rlimit{Resource: res, Soft: soft, Hard: hard})
		default:
			return s, fmt.Errorf("unknown argument %q", a)
		}
	}
	return s, errors.New("no -- before the command")
}

// RunShim is the shim's whole work: args are os.Args[2:] of a process
// started with ShimArg. It sets the rlimits and the umask they name in this
// process and executes the command with the current environment. It
// returns only on failure.
func RunShim(args []string) error {
	s, err := parseShimArgs(args)
	if err != nil {
		return fmt.Errorf("exec shim: %w", err)
	}
	for _, l := range s.rlimits {
		// unix.Setrlimit goes through syscall.Setrlimit, which also tells
		// syscall.Exec not to restore the runtime's original
		// RLIMIT_NOFILE over ours.
		if err := unix.Setrlimit(l.Resource, &unix.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return fmt.Errorf("exec shim: setrlimit %s to %d/%d: %w", rlimitName(l.Resource), l.Soft, l.Hard, err)
		}
	}
	if s.umask != nil {
		unix.Umask(int(*s.umask))
	}
	err = unix.Exec(s.path, s.argv, os.Environ())
	return fmt.Errorf("exec %q: %w", s.path, err)
}

// rlimitName names a resource in the shim's error messages.
func rlimitName(res int) string {
	switch res {
	case unix.RLIMIT_AS:
		return "as"
	case unix.RLIMIT_CORE:
		return "core"
	case unix.RLIMIT_CPU:
		return "cpu"
	case unix.RLIMIT_DATA:
		return "data"
	case unix.RLIMIT_FSIZE:
		return "fsize"
	case unix.RLIMIT_NOFILE:
		return "nofile"
	case unix.RLIMIT_NPROC:
		return "nproc"
	case unix.RLIMIT_STACK:
		return "stack"
	case unix.RLIMIT_MEMLOCK:
		return "memlock"
	}
	return "resource " + strconv.Itoa(res)
}

// checkExecutable fails, as os/exec would, when path (relative to dir if
// relative) is missing, not a regular file, or has no execute bit.
func checkExecutable(path, dir string) error {
	p := path
	if !filepath.IsAbs(p) && dir != "" {
		p = filepath.Join(dir, p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return &fs.PathError{Op: "exec", Path: path, Err: syscall.EACCES}
	}
	return nil
}
