package main

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
)

// secretEnvConfig hands a secret to its command through the environment.
// The command prints its own /proc/PID/cmdline (what any local user can
// read while it runs), a newline, then its own /proc/PID/environ: exactly
// the environment it was executed with. "shim" does the same through the
// exec shim (a umask makes the runner start one).
const secretEnvConfig = `
commands:
  direct:
    argv: ["sh", "-c", 'cat /proc/$$/cmdline; printf "\n"; cat /proc/$$/environ']
    env: {LC_ALL: C, TOKEN: "{token}", AUTH: "Bearer {token}", OPT: "{opt}"}
    params:
      token: {secret: true, required: true}
      opt: {}
  shim:
    argv: ["sh", "-c", 'cat /proc/$$/cmdline; printf "\n"; cat /proc/$$/environ']
    env: {LC_ALL: C, TOKEN: "{token}", AUTH: "Bearer {token}", OPT: "{opt}"}
    umask: "0077"
    params:
      token: {secret: true, required: true}
      opt: {}
`

func TestSecretReachesTheEnvironmentOnly(t *testing.T) {
	const secret = "s3cret-4711-do-not-show"
	g := startGateway(t, secretEnvConfig)
	for _, name := range []string{"direct", "shim"} {
		t.Run(name, func(t *testing.T) {
			resp, body := g.do("POST", "/v1/commands/"+name+"/run",
				strings.NewReader(`{"params": {"token": "`+secret+`"}}`), "Content-Type", "application/json")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			rec := decode[record](t, body)
			if rec.State != "succeeded" || rec.Stdout == nil {
				t.Fatalf("state %q, stdout %v; want succeeded with output", rec.State, rec.Stdout)
			}
			cmdline, environ, ok := strings.Cut(*rec.Stdout, "\n")
			if !ok {
				t.Fatalf("stdout %q: no newline between cmdline and environ", *rec.Stdout)
			}
			if strings.Contains(cmdline, secret) || !strings.Contains(cmdline, "/proc/$$/environ") {
				t.Errorf("the child's cmdline %q: want the script without the secret", cmdline)
			}
			// Exactly PATH plus env, with the placeholders filled in; the
			// optional parameter not given leaves its variable out.
			got := strings.Split(strings.TrimSuffix(environ, "\x00"), "\x00")
			slices.Sort(got)
			want := []string{"AUTH=Bearer " + secret, "LC_ALL=C", "PATH=" + os.Getenv("PATH"), "TOKEN=" + secret}
			if !slices.Equal(got, want) {
				t.Errorf("the child's environment %q, want exactly %q", got, want)
			}
			if rec.Params["token"] != "***" {
				t.Errorf("the answer's params %q, want token ***", rec.Params)
			}
			resp, body = g.do("GET", "/v1/jobs/"+rec.ID, nil)
			if stored := decode[record](t, body); resp.StatusCode != http.StatusOK || stored.Params["token"] != "***" {
				t.Errorf("the stored record: %d %s, want token ***", resp.StatusCode, body)
			}
		})
	}
	g.stop()
	if strings.Contains(g.log.String(), secret) {
		t.Errorf("the secret reached the gateway's log:\n%s", g.log.String())
	}
}
