package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestHelpGoesToStdout: asking for help is not an error: the usage goes to
// stdout, nothing to stderr, and the exit status is 0, so that
// `execgw --help | less` works.
func TestHelpGoesToStdout(t *testing.T) {
	bin := binary(t)
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"serve", "-h"}, {"serve", "--help"}, {"check", "-h"}, {"token", "--help"}} {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Dir = t.TempDir() // no config.yaml here: help must not need one
		err := cmd.Run()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("execgw %s: %v, stderr %q", strings.Join(args, " "), err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "-config") && !strings.Contains(stdout.String(), "-name") {
			t.Errorf("execgw %s printed no usage on stdout: %q", strings.Join(args, " "), stdout.String())
		}
	}
}
