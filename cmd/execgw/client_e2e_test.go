package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clientGateway runs commands that print files as they are, and one that
// runs until it is stopped.
const clientGateway = `
commands:
  print:
    argv: ["sh", "-c", "cat \"$0\"; cat \"$1\" >&2; exit 3", "{out}", "{err}"]
    params:
      out: {max_len: 4096, required: true}
      err: {max_len: 4096, required: true}
  sleeper:
    argv: ["sh", "-c", "echo started; sleep 300 | cat"]
`

// TestClientRunIsByteExact: execgw run writes the command's stdout to its
// stdout and its stderr to its stderr byte for byte (every byte value,
// carriage returns, invalid UTF-8, no final newline), and exits with the
// command's exit code.
func TestClientRunIsByteExact(t *testing.T) {
	g := startGateway(t, clientGateway)
	dir := t.TempDir()
	var out bytes.Buffer
	for i := range 3 {
		for b := range 256 {
			out.WriteByte(byte(b))
		}
		out.WriteString("\r\nline\rover\xff\xfe\x80" + strings.Repeat("x", i*40000))
	}
	errOut := []byte("warning\r\x00\xc3\x28 no newline")
	outFile, errFile := filepath.Join(dir, "out"), filepath.Join(dir, "err")
	if err := os.WriteFile(outFile, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(errFile, errOut, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "run", "--server", g.URL, "print", "out="+outFile, "err="+errFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("execgw run: %v, want exit status 3; stderr %q", err, stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), out.Bytes()) {
		t.Errorf("stdout: %d bytes, not the command's %d (first difference at %d)", stdout.Len(), out.Len(), firstDiff(stdout.Bytes(), out.Bytes()))
	}
	if !bytes.Equal(stderr.Bytes(), errOut) {
		t.Errorf("stderr = %q, want %q", stderr.Bytes(), errOut)
	}
	g.stop()
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestClientRunInterrupt is Ctrl-C: execgw run exits 130 and the remote
// process tree is killed, its job canceled as a client that went away.
func TestClientRunInterrupt(t *testing.T) {
	g := startGateway(t, clientGateway)
	cmd := exec.Command(binary(t), "run", "--server", g.URL, "sleeper")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("started\n"))
	if _, err := stdout.Read(buf); err != nil || string(buf) != "started\n" {
		t.Fatalf("first output %q, %v", buf, err)
	}
	line := g.waitLog(`"message":"job started"`, 10*time.Second)
	var started jobLine
	if err := json.Unmarshal([]byte(line), &started); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("execgw run after SIGINT: %v, want exit status 130", err)
	}
	waitFor(t, 5*time.Second, "the remote tree to die", func() bool { return len(groupMembers(started.Pid)) == 0 })
	rec := g.waitJob(started.JobID, "canceled")
	if rec.CancelReason == nil || *rec.CancelReason != "client_disconnected" {
		t.Errorf("cancel_reason %v, want client_disconnected", rec.CancelReason)
	}
	g.stop()
}
