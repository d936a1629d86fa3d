package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The minimal server is the baseline of the load and overhead figures: what
// net/http and os/exec alone cost, with no job records, no logs, no limits.
// It runs in a process of its own, like the gateway (the benchmark binary
// started again with -minimal-server), so both compete with the client for
// the same CPUs in the same way.

// serveMinimal is the whole minimal server. It listens on fd 3 when
// LISTEN_FDS=1 is set (as the gateway under socket activation), otherwise on
// a free loopback port, and prints "listening ADDR" on stdout.
func serveMinimal() error {
	var ln net.Listener
	var err error
	if os.Getenv("LISTEN_FDS") == "1" {
		ln, err = net.FileListener(os.NewFile(3, "listener"))
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	// POST /run runs /bin/true and answers its exit code.
	mux.HandleFunc("POST /run", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		err := exec.CommandContext(r.Context(), "/bin/true").Run()
		code := 0
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			code = exitErr.ExitCode()
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = fmt.Fprintf(w, "%d\n", code)
	})
	// POST /stream?count=N streams dd's stdout the plain os/exec way:
	// Cmd.Stdout is the ResponseWriter.
	mux.HandleFunc("POST /stream", func(w http.ResponseWriter, r *http.Request) {
		count, err := strconv.Atoi(r.URL.Query().Get("count"))
		if err != nil || count < 1 {
			http.Error(w, "count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		cmd := exec.CommandContext(r.Context(), "dd", "if=/dev/zero", "bs=1M", "count="+strconv.Itoa(count), "status=none")
		cmd.Stdout = w
		_ = cmd.Run()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	fmt.Printf("listening %s\n", ln.Addr())
	return srv.Serve(ln)
}

// minimal is a running minimal server.
type minimal struct {
	cmd    *exec.Cmd
	url    string
	client *http.Client
	exited chan struct{}
}

// startMinimal starts the minimal server. With listener, it serves that
// socket (passed as fd 3 through sh, as for the gateway) and does not wait
// for it to be ready.
func startMinimal(listener *os.File) (*minimal, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if listener != nil {
		cmd = exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, self, "-minimal-server")
		cmd.ExtraFiles = []*os.File{listener}
	} else {
		cmd = exec.Command(self, "-minimal-server")
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m := &minimal{cmd: cmd, client: newClient(4, nil), exited: make(chan struct{})}
	var stdout io.ReadCloser
	if listener == nil {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start minimal server: %w", err)
	}
	go func() { // exits when the server process does
		_ = cmd.Wait()
		close(m.exited)
	}()
	if listener != nil {
		return m, nil
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		m.stop()
		return nil, fmt.Errorf("minimal server: %w", err)
	}
	m.url = "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	return m, nil
}

func (m *minimal) pid() int { return m.cmd.Process.Pid }

func (m *minimal) stop() {
	m.client.CloseIdleConnections()
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
}

// runTrue is one run of /bin/true through the minimal server.
func (m *minimal) runTrue(ctx context.Context, client *http.Client) error {
	body, err := exchange(ctx, client, http.MethodPost, m.url+"/run")
	if err != nil {
		return err
	}
	if string(body) != "0\n" {
		return &stateError{body: string(body)}
	}
	return nil
}
