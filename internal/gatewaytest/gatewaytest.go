// Package gatewaytest runs the real execgw binary for the end-to-end tests
// and the benchmark: it builds the binary, writes a configuration, starts
// the gateway on a loopback port (or on a listening socket passed the way
// systemd passes it), waits until it serves, reads its log, and stops it.
// It also looks at processes in /proc, which is how both tell that a job's
// tree is gone.
//
// Everything here returns errors rather than failing a test, so that the
// benchmark, which is no test, can use it too.
package gatewaytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Build compiles ./cmd/execgw of the module at modRoot into dir and returns
// the binary's path; race adds -race.
func Build(ctx context.Context, modRoot, dir string, race bool) (string, error) {
	name, args := "execgw", []string{"build"}
	if race {
		name, args = "execgw-race", append(args, "-race")
	}
	bin := filepath.Join(dir, name)
	args = append(args, "-o", bin, "./cmd/execgw")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// ModuleRoot is the directory of the go.mod above the working directory.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the execgw module")
	}
	return filepath.Dir(mod), nil
}

// Options describe one gateway to start.
type Options struct {
	Bin string
	// Dir receives config.yaml; relative paths in Config are relative to it.
	Dir    string
	Config string // the whole YAML
	// Env is the gateway's whole environment besides PATH.
	Env []string
	// Log receives the gateway's stdout and stderr; nil: a new Log, kept
	// in memory.
	Log io.Writer
	// Listener, when set, is passed as fd 3 the way systemd passes a
	// socket (LISTEN_FDS=1, LISTEN_PID the gateway's own pid).
	Listener *os.File
	// Prepare, when set, may change the command before it starts.
	Prepare func(*exec.Cmd)
}

// Gateway is one running execgw process.
type Gateway struct {
	Cmd *exec.Cmd
	Dir string
	// Log is the gateway's log when Options.Log was nil.
	Log *Log

	exited  chan struct{}
	exitErr error
}

// Start writes the configuration and starts the process; it does not wait
// for it to serve (see WaitServing).
func Start(o Options) (*Gateway, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(o.Dir, "config.yaml")
	if err := os.WriteFile(path, []byte(o.Config), 0o600); err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if o.Listener != nil {
		// LISTEN_PID must be the gateway's own pid, which exec keeps.
		cmd = exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, o.Bin, "serve", "--config", path)
		cmd.ExtraFiles = []*os.File{o.Listener}
	} else {
		cmd = exec.Command(o.Bin, "serve", "--config", path)
	}
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, o.Env...)
	g := &Gateway{Cmd: cmd, Dir: o.Dir, exited: make(chan struct{})}
	out := o.Log
	if out == nil {
		g.Log = &Log{}
		out = g.Log
	}
	cmd.Stdout, cmd.Stderr = out, out
	if o.Prepare != nil {
		o.Prepare(cmd)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	go func() { // exits when the gateway process does
		g.exitErr = cmd.Wait()
		close(g.exited)
	}()
	return g, nil
}

// Pid is the gateway's process id.
func (g *Gateway) Pid() int { return g.Cmd.Process.Pid }

// Exited is closed when the process has exited.
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// ExitErr is the process's exit error, once Exited is closed.
func (g *Gateway) ExitErr() error { return g.exitErr }

// WaitLog waits for a line of the in-memory log that contains substr, and
// returns it. It fails early when the gateway exits without logging it.
func (g *Gateway) WaitLog(ctx context.Context, substr string, timeout time.Duration) (string, error) {
	if g.Log == nil {
		return "", errors.New("the gateway's log is not kept in memory")
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if line := g.Log.Find(substr); line != "" {
			return line, nil
		}
		select {
		case <-g.exited:
			if line := g.Log.Find(substr); line != "" {
				return line, nil
			}
			return "", fmt.Errorf("gateway exited (%v) before logging %q", g.exitErr, substr)
		case <-deadline.C:
			return "", fmt.Errorf("no log line with %q after %v", substr, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// ServingURL waits for the "serving" log line and returns the URL it names.
func (g *Gateway) ServingURL(ctx context.Context, timeout time.Duration) (string, error) {
	line, err := g.WaitLog(ctx, `"message":"serving"`, timeout)
	if err != nil {
		return "", err
	}
	var serving struct {
		Listen string `json:"listen"`
	}
	if err := json.Unmarshal([]byte(line), &serving); err != nil {
		return "", fmt.Errorf("serving line %q: %w", line, err)
	}
	return "http://" + serving.Listen, nil
}

// Signal sends sig to the gateway.
func (g *Gateway) Signal(sig syscall.Signal) error { return g.Cmd.Process.Signal(sig) }

// Wait waits at most timeout for the gateway to exit and returns its exit
// error.
func (g *Gateway) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-g.exited:
		return g.exitErr
	case <-t.C:
		return fmt.Errorf("gateway still running after %v", timeout)
	}
}

// Stop sends SIGTERM and waits at most timeout for the exit; after that it
// kills the gateway and says so.
func (g *Gateway) Stop(timeout time.Duration) error {
	select {
	case <-g.exited:
		return g.exitErr
	default:
	}
	if err := g.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := g.Wait(timeout); err != nil {
		select {
		case <-g.exited:
			return err // the exit error
		default:
		}
		g.Kill()
		return err
	}
	return nil
}

// Kill kills the gateway at once, if it still runs, and waits for it.
func (g *Gateway) Kill() {
	select {
	case <-g.exited:
	default:
		_ = g.Cmd.Process.Kill()
		<-g.exited
	}
}
