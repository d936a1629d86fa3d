package handler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobstore"
)

// The tokens of authConfig. Their values appear nowhere in it: only their
// SHA-256 does, as an operator's file would hold them.
const (
	opsToken    = "egw_ops-secret-value-0123456789"
	echoToken   = "egw_echo-only-secret-9876543210"
	auditToken  = "egw_audit-all-jobs-secret-55555"
	nobodyToken = "egw_no-commands-secret-4444444"
	wrongToken  = "egw_not-configured-anywhere-000"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// authConfig has four tokens: ops may run everything, echoer only "echo",
// audit may read and cancel every job, nobody may run nothing.
var authConfig = `
auth:
  tokens:
    - {name: ops, sha256: "` + sha256Hex(opsToken) + `", commands: ["*"]}
    - {name: echoer, sha256: "` + sha256Hex(echoToken) + `", commands: [echo]}
    - {name: audit, sha256: "` + sha256Hex(auditToken) + `", commands: ["ec*"], all_jobs: true}
    - {name: nobody, sha256: "` + sha256Hex(nobodyToken) + `"}
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {required: true}
  sleep:
    argv: ["sleep", "300"]
    kill_grace: 100ms
`

// authServer is the whole API over a real socket, with a real registry,
// store and processes: what cmd/execgw wires, minus the process.
type authServer struct {
	t         testing.TB
	URL       string
	log       *lockedBuffer // the gateway's zerolog lines
	serverLog *lockedBuffer // net/http's own complaints: panics, bad requests
}

// startAuthServer parses yaml as a config file would be and serves it.
// Everything it starts is stopped by t's cleanup, which then checks that
// no goroutine was left behind.
func startAuthServer(t testing.TB, yaml string) *authServer {
	t.Helper()
	leakOpts := goleak.IgnoreCurrent()
	if _, ok := t.(*testing.T); ok {
		// Registered first, so it runs last, after everything is closed.
		t.Cleanup(func() { goleak.VerifyNone(t, leakOpts) })
	}
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "config.yaml"), []byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	store, err := jobstore.OpenBolt(filepath.Join(dir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	output, err := jobstore.NewFiles(filepath.Join(dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &lockedBuffer{}
	log := zerolog.New(logBuf)
	reg := jobs.New(jobs.Options{
		Store:  store,
		Output: output,
		Log:    log,
		Limits: jobs.Limits{MaxConcurrent: 8, MaxQueued: 8, OutputLimit: 1 << 20},
	})
	srv := httptest.NewUnstartedServer(New(Options{
		Config:   cfg,
		Jobs:     reg,
		Log:      log,
		Metrics:  prometheus.NewRegistry(),
		SpoolDir: dir,
	}))
	serverLog := &lockedBuffer{}
	srv.Config.ErrorLog = stdlog.New(serverLog, "", 0)
	srv.Config.MaxHeaderBytes = cfg.Limits.MaxHeaderBytes
	srv.Config.ReadHeaderTimeout = cfg.Limits.ReadHeaderTimeout
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		reg.Shutdown(ctx)
		reg.Close()
		_ = store.Close()
	})
	return &authServer{t: t, URL: srv.URL, log: logBuf, serverLog: serverLog}
}

// do sends a request, with the bearer token when it is not empty, and
// returns the response with its body read.
func (s *authServer) do(method, target, token string, body io.Reader) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.URL+target, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.send(req)
}

func (s *authServer) send(req *http.Request) (*http.Response, []byte) {
	s.t.Helper()
	return fetch(s.t, req)
}

// fetch sends req and returns the response with its body read; a fuzz
// target passes its own t, which s.t (the F) must not stand for.
func fetch(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, b
}

// lockedBuffer is a bytes.Buffer safe for the log's concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// take returns what was written since the last take and forgets it, so a
// fuzz target's log does not grow for as long as it runs.
func (b *lockedBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return s
}

// errorCode is the code of a contract error body, "" for anything else.
func errorCode(body []byte) string {
	var e errorBody
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// jobIDOf is the id of the record in body.
func jobIDOf(t testing.TB, body []byte) string {
	t.Helper()
	var rec struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &rec); err != nil || rec.ID == "" {
		t.Fatalf("no job record in %s (%v)", body, err)
	}
	return rec.ID
}

// TestTokenStatuses: every /v1 route answers 401 without a token or with a
// wrong one, 403 to a token not allowed the command, and serves the right
// one. Health, readiness and metrics need no token.
func TestTokenStatuses(t *testing.T) {
	s := startAuthServer(t, authConfig)
	tests := []struct {
		name, method, target, token string
		status                      int
		code, challenge             string
	}{
		{"missing", "POST", "/v1/commands/echo/run?text=hi", "", 401, codeUnauthenticated, `Bearer realm="execgw"`},
		{"wrong", "POST", "/v1/commands/echo/run?text=hi", wrongToken, 401, codeUnauthenticated, `Bearer realm="execgw", error="invalid_token"`},
		{"foreign command", "POST", "/v1/commands/sleep/run", echoToken, 403, codePermissionDenied, ""},
		{"no commands at all", "POST", "/v1/commands/echo/run?text=hi", nobodyToken, 403, codePermissionDenied, ""},
		{"glob", "POST", "/v1/commands/echo/run?text=hi", auditToken, 200, "", ""},
		{"right", "POST", "/v1/commands/echo/run?text=hi", echoToken, 200, "", ""},
		{"star", "POST", "/v1/commands/echo/run?text=hi", opsToken, 200, "", ""},
		{"list commands missing", "GET", "/v1/commands", "", 401, codeUnauthenticated, `Bearer realm="execgw"`},
		{"list jobs wrong", "GET", "/v1/jobs", wrongToken, 401, codeUnauthenticated, `Bearer realm="execgw", error="invalid_token"`},
		{"job missing", "GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "", 401, codeUnauthenticated, `Bearer realm="execgw"`},
		{"cancel wrong", "POST", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel", wrongToken, 401, codeUnauthenticated, `Bearer realm="execgw", error="invalid_token"`},
		{"delete missing", "DELETE", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "", 401, codeUnauthenticated, `Bearer realm="execgw"`},
		{"stdout missing", "GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/stdout", "", 401, codeUnauthenticated, `Bearer realm="execgw"`},
		{"events missing", "GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/events", "", 401, codeUnauthenticated, `Bearer realm="execgw"`},
		{"unknown job, right token", "GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", opsToken, 404, codeNotFound, ""},
		{"healthz", "GET", "/healthz", "", 200, "", ""},
		{"readyz", "GET", "/readyz", wrongToken, 200, "", ""},
		{"metrics", "GET", "/metrics", "", 200, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := s.do(tc.method, tc.target, tc.token, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.target, resp.StatusCode, body, tc.status)
			}
			if tc.code != "" && errorCode(body) != tc.code {
				t.Errorf("error body %s, want code %q", body, tc.code)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			if tc.status >= 400 && resp.Header.Get(headerJobID) != "" {
				t.Errorf("a refused request carries a job id")
			}
		})
	}
	if started := strings.Count(s.log.String(), `"message":"job started"`); started != 3 {
		t.Errorf("%d jobs started, want 3 (the three allowed runs)", started)
	}
}

// TestAuthorizationHeaderForms: the scheme is case-insensitive, anything
// else than one bearer token is no token.
func TestAuthorizationHeaderForms(t *testing.T) {
	s := startAuthServer(t, authConfig)
	tests := []struct {
		header string
		status int
	}{
		{"Bearer " + opsToken, 200},
		{"bearer " + opsToken, 200},
		{"BEARER   " + opsToken + "  ", 200},
		{"Basic " + opsToken, 401},
		{"Bearer", 401},
		{"Bearer ", 401},
		{opsToken, 401},
		{"Bearer " + opsToken + "x", 401},
		{"Bearer " + opsToken[:len(opsToken)-1], 401},
		{"Bearer " + strings.ToUpper(opsToken), 401},
		{"Bearer " + opsToken + " " + opsToken, 401},
		{"Bearer " + sha256Hex(opsToken), 401}, // the hash is not the token
	}
	for _, tc := range tests {
		req, _ := http.NewRequest("GET", s.URL+"/v1/commands", nil)
		req.Header.Set("Authorization", tc.header)
		if resp, body := s.send(req); resp.StatusCode != tc.status {
			t.Errorf("Authorization %q = %d %s, want %d", tc.header, resp.StatusCode, body, tc.status)
		}
	}
}

// TestTokenSeesOnlyItsCommands: GET /v1/commands lists what the token may run.
func TestTokenSeesOnlyItsCommands(t *testing.T) {
	s := startAuthServer(t, authConfig)
	for token, want := range map[string]string{opsToken: "echo,sleep", echoToken: "echo", nobodyToken: ""} {
		_, body := s.do("GET", "/v1/commands", token, nil)
		var list struct {
			Commands []struct{ Name string } `json:"commands"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range list.Commands {
			names = append(names, c.Name)
		}
		if got := strings.Join(names, ","); got != want {
			t.Errorf("commands of %s: %q, want %q", token[:8], got, want)
		}
	}
}

// TestTokenCannotTouchAnotherTokensJob: a token limited to one command can
// neither read, follow, cancel nor delete a job of another token, nor see
// it listed; a token with all_jobs can.
func TestTokenCannotTouchAnotherTokensJob(t *testing.T) {
	s := startAuthServer(t, authConfig)
	req, _ := http.NewRequest("POST", s.URL+"/v1/commands/sleep/run", nil)
	req.Header.Set("Authorization", "Bearer "+opsToken)
	req.Header.Set("Prefer", "respond-async")
	resp, body := s.send(req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("detached run = %d %s, want 202", resp.StatusCode, body)
	}
	opsJob := jobIDOf(t, body)
	_, body = s.do("POST", "/v1/commands/echo/run?text=mine", echoToken, nil)
	echoJob := jobIDOf(t, body)

	for _, target := range []string{
		"/v1/jobs/" + opsJob, "/v1/jobs/" + opsJob + "/stdout", "/v1/jobs/" + opsJob + "/stderr",
		"/v1/jobs/" + opsJob + "/stdout?follow=true", "/v1/jobs/" + opsJob + "/events",
	} {
		if resp, body := s.do("GET", target, echoToken, nil); resp.StatusCode != 403 || errorCode(body) != codePermissionDenied {
			t.Errorf("echoer GET %s = %d %s, want 403 permission_denied", target, resp.StatusCode, body)
		}
	}
	if resp, body := s.do("POST", "/v1/jobs/"+opsJob+"/cancel", echoToken, nil); resp.StatusCode != 403 {
		t.Errorf("echoer cancel = %d %s, want 403", resp.StatusCode, body)
	}
	if resp, body := s.do("DELETE", "/v1/jobs/"+opsJob, echoToken, nil); resp.StatusCode != 403 {
		t.Errorf("echoer delete = %d %s, want 403", resp.StatusCode, body)
	}
	if _, body := s.do("GET", "/v1/jobs", echoToken, nil); strings.Contains(string(body), opsJob) || !strings.Contains(string(body), echoJob) {
		t.Errorf("echoer's listing %s: want its own job %s and not %s", body, echoJob, opsJob)
	}
	// ops may read its own job but not echoer's: all_jobs, not "*", opens
	// other tokens' jobs.
	if resp, _ := s.do("GET", "/v1/jobs/"+echoJob, opsToken, nil); resp.StatusCode != 403 {
		t.Errorf("ops GET echoer's job = %d, want 403", resp.StatusCode)
	}
	if resp, _ := s.do("GET", "/v1/jobs/"+opsJob, opsToken, nil); resp.StatusCode != 200 {
		t.Errorf("ops GET its own job = %d, want 200", resp.StatusCode)
	}

	// The job is still running: nothing above stopped it.
	var rec struct {
		State        string `json:"state"`
		CancelReason string `json:"cancel_reason"`
	}
	_, body = s.do("GET", "/v1/jobs/"+opsJob, auditToken, nil)
	if err := json.Unmarshal(body, &rec); err != nil || rec.State != "running" {
		t.Fatalf("audit GET = %s, want the running job", body)
	}
	if _, body := s.do("GET", "/v1/jobs", auditToken, nil); !strings.Contains(string(body), opsJob) || !strings.Contains(string(body), echoJob) {
		t.Errorf("audit's listing %s lacks a job", body)
	}
	if resp, _ := s.do("GET", "/v1/jobs/"+echoJob+"/stdout", auditToken, nil); resp.StatusCode != 200 {
		t.Errorf("audit GET stdout = %d, want 200", resp.StatusCode)
	}
	resp, body = s.do("POST", "/v1/jobs/"+opsJob+"/cancel", auditToken, nil)
	if err := json.Unmarshal(body, &rec); resp.StatusCode != 200 || err != nil || rec.State != "canceled" || rec.CancelReason != "user" {
		t.Errorf("audit cancel = %d %s, want 200 canceled by user", resp.StatusCode, body)
	}
	if resp, _ := s.do("DELETE", "/v1/jobs/"+opsJob, auditToken, nil); resp.StatusCode != 204 {
		t.Errorf("audit delete = %d, want 204", resp.StatusCode)
	}
}

// TestRequestLogNamesTokenNeverItsValue: each request line carries the
// token's name; no line carries a token's value, right or wrong.
func TestRequestLogNamesTokenNeverItsValue(t *testing.T) {
	s := startAuthServer(t, authConfig)
	s.do("POST", "/v1/commands/echo/run?text=hi", echoToken, nil)
	s.do("GET", "/v1/jobs", opsToken, nil)
	s.do("GET", "/v1/commands", wrongToken, nil)
	s.do("GET", "/v1/commands", "", nil)
	s.do("GET", "/healthz", auditToken, nil)

	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s.log.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["message"] == "request" {
			lines = append(lines, m)
		}
	}
	want := []struct {
		path  string
		token any // nil: no token field
	}{
		{"/v1/commands/echo/run", "echoer"},
		{"/v1/jobs", "ops"},
		{"/v1/commands", nil},
		{"/v1/commands", nil},
		{"/healthz", "audit"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d request lines, want %d:\n%s", len(lines), len(want), s.log.String())
	}
	for i, w := range want {
		if lines[i]["path"] != w.path || lines[i]["token"] != w.token {
			t.Errorf("request line %d: path %v token %v, want %s %v", i, lines[i]["path"], lines[i]["token"], w.path, w.token)
		}
	}
	for _, secret := range []string{opsToken, echoToken, auditToken, wrongToken, "egw_"} {
		if strings.Contains(s.log.String(), secret) {
			t.Errorf("the log holds a token value (%s...)", secret[:8])
		}
	}
}

// TestAnonymousGatewayIsOpen: without tokens every route works without
// one, and a bearer token sent anyway changes nothing.
func TestAnonymousGatewayIsOpen(t *testing.T) {
	s := startAuthServer(t, `
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {required: true}
`)
	for _, token := range []string{"", wrongToken} {
		resp, body := s.do("POST", "/v1/commands/echo/run?text=hi", token, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("anonymous run with token %q = %d %s", token, resp.StatusCode, body)
		}
		id := jobIDOf(t, body)
		if resp, body := s.do("GET", "/v1/jobs/"+id, token, nil); resp.StatusCode != 200 {
			t.Errorf("anonymous GET job = %d %s", resp.StatusCode, body)
		}
	}
	if strings.Contains(s.log.String(), `"token":`) {
		t.Errorf("anonymous request lines name a token:\n%s", s.log.String())
	}
}

// TestMatchToken checks the comparison itself, on every configured hash.
func TestMatchToken(t *testing.T) {
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "c.yaml"), []byte(authConfig))
	if err != nil {
		t.Fatal(err)
	}
	h := &handler{cfg: cfg}
	for value, want := range map[string]string{
		opsToken: "ops", echoToken: "echoer", auditToken: "audit", nobodyToken: "nobody",
		wrongToken: "", "": "", sha256Hex(opsToken): "",
	} {
		got := ""
		if tok := h.matchToken(value); tok != nil {
			got = tok.Name
		}
		if got != want {
			t.Errorf("matchToken(%q) = %q, want %q", value, got, want)
		}
	}
}

// TestForgedRequestIDIsReplaced: an inbound X-Request-ID that could forge
// a log field or line is replaced by one of the gateway's own.
func TestForgedRequestIDIsReplaced(t *testing.T) {
	s := startAuthServer(t, authConfig)
	for _, id := range []string{`x","token":"ops`, "a b", strings.Repeat("r", 129), "ok-id.1:2_3"} {
		req, _ := http.NewRequest("GET", s.URL+"/healthz", nil)
		req.Header.Set("X-Request-ID", id)
		resp, _ := s.send(req)
		got := resp.Header.Get("X-Request-ID")
		if want := id == "ok-id.1:2_3"; (got == id) != want || got == "" {
			t.Errorf("X-Request-ID %q answered %q; kept: %v, want %v", id, got, got == id, want)
		}
	}
	if strings.Contains(s.log.String(), `"token":"ops"`) {
		t.Errorf("a forged request id added a field to the log:\n%s", s.log.String())
	}
}
