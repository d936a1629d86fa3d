package main

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const coreConfig = `
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {max_len: 100, required: true}
  exit:
    argv: ["sh", "-c", 'echo out; echo err >&2; exit "$1"', "exit", "{code}"]
    params:
      code: {type: int, min: 0, max: 255, required: true}
  args:
    argv: ["printf", "[%s]\n", "{a}", "{b}"]
    params:
      a: {required: true}
      b: {}
  typed:
    argv: ["echo", "n={n}", "flag={flag}", "color={color}", "word={word}", "s={secret}"]
    params:
      n: {type: int, min: 1, max: 10, required: true}
      flag: {type: bool, default: "false"}
      color: {type: enum, values: [red, green], default: red}
      word: {pattern: '^[a-z]+$', max_len: 8, default: abc}
      secret: {secret: true, default: hidden}
  pipe:
    argv: ["sh", "-c", "sleep 300 | cat"]
  stubborn:
    argv: ["sh", "-c", 'trap "" TERM; echo ready; while :; do sleep 0.05; done']
    kill_grace: 500ms
    timeout: 500ms
  slow:
    argv: ["sleep", "300"]
    timeout: 300ms
  env:
    argv: ["env"]
    env: {LC_ALL: C, GREETING: hello}
`

func TestRunReturnsOutput(t *testing.T) {
	g := startGateway(t, coreConfig)
	resp, body := g.do("POST", "/v1/commands/echo/run?text=hello", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	rec := decode[record](t, body)
	if rec.State != "succeeded" || rec.ExitCode == nil || *rec.ExitCode != 0 {
		t.Errorf("state %q exit %v, want succeeded 0", rec.State, rec.ExitCode)
	}
	if rec.Stdout == nil || *rec.Stdout != "hello\n" {
		t.Errorf("stdout %v, want %q", rec.Stdout, "hello\n")
	}
	if got := resp.Header.Get("Execgw-Job-Id"); got == "" || got != rec.ID {
		t.Errorf("Execgw-Job-Id %q, record id %q", got, rec.ID)
	}
	if rec.StartedAt == nil || rec.EndedAt == nil || rec.DurationMs == nil || rec.StdoutBytes != 6 {
		t.Errorf("record incomplete: %s", body)
	}

	// The same record is there afterwards, without the inlined output.
	resp, body = g.do("GET", "/v1/jobs/"+rec.ID, nil)
	if resp.StatusCode != http.StatusOK || decode[record](t, body).State != "succeeded" {
		t.Errorf("GET job: %d %s", resp.StatusCode, body)
	}
	resp, body = g.do("GET", "/v1/jobs/"+rec.ID+"/stdout", nil)
	if string(body) != "hello\n" {
		t.Errorf("GET stdout: %d %q", resp.StatusCode, body)
	}
	g.stop()
}

func TestRunParamsFromJSONBody(t *testing.T) {
	g := startGateway(t, coreConfig)
	resp, body := g.do("POST", "/v1/commands/typed/run", strings.NewReader(`{"params": {"n": 3, "flag": true, "color": "green"}}`),
		"Content-Type", "application/json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	rec := decode[record](t, body)
	if want := "n=3 flag=true color=green word=abc s=hidden\n"; rec.Stdout == nil || *rec.Stdout != want {
		t.Errorf("stdout %v, want %q", rec.Stdout, want)
	}
	if rec.Params["secret"] != "***" {
		t.Errorf("secret param shown as %q, want ***", rec.Params["secret"])
	}
	if strings.Contains(g.log.String(), "hidden") {
		t.Errorf("the secret's value reached the log")
	}
	g.stop()
}

func TestNonZeroExitIsFailed(t *testing.T) {
	g := startGateway(t, coreConfig)
	resp, body := g.do("POST", "/v1/commands/exit/run?code=3", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	rec := decode[record](t, body)
	if rec.State != "failed" || rec.ExitCode == nil || *rec.ExitCode != 3 || rec.Signal != nil {
		t.Errorf("got state %q exit %v signal %v, want failed 3 null", rec.State, rec.ExitCode, rec.Signal)
	}
	if *rec.Stdout != "out\n" || *rec.Stderr != "err\n" {
		t.Errorf("stdout %q stderr %q", *rec.Stdout, *rec.Stderr)
	}
	g.stop()
}

func TestBadInputIs4xxAndStartsNothing(t *testing.T) {
	g := startGateway(t, coreConfig)
	tests := []struct {
		name, method, path, body, ctype string
		status                          int
		code, mention                   string
	}{
		{"unknown command", "POST", "/v1/commands/nope/run", "", "", 404, "not_found", "nope"},
		{"undeclared", "POST", "/v1/commands/typed/run?n=1&bogus=1", "", "", 400, "invalid_argument", "bogus"},
		{"repeated", "POST", "/v1/commands/typed/run?n=1&n=2", "", "", 400, "invalid_argument", `"n"`},
		{"missing required", "POST", "/v1/commands/typed/run", "", "", 400, "invalid_argument", `"n"`},
		{"not an int", "POST", "/v1/commands/typed/run?n=x", "", "", 400, "invalid_argument", `"n"`},
		{"below min", "POST", "/v1/commands/typed/run?n=0", "", "", 400, "invalid_argument", `"n"`},
		{"above max", "POST", "/v1/commands/typed/run?n=11", "", "", 400, "invalid_argument", `"n"`},
		{"bad bool", "POST", "/v1/commands/typed/run?n=1&flag=maybe", "", "", 400, "invalid_argument", `"flag"`},
		{"bad enum", "POST", "/v1/commands/typed/run?n=1&color=blue", "", "", 400, "invalid_argument", `"color"`},
		{"pattern", "POST", "/v1/commands/typed/run?n=1&word=ABC", "", "", 400, "invalid_argument", `"word"`},
		{"max_len", "POST", "/v1/commands/typed/run?n=1&word=abcdefghi", "", "", 400, "invalid_argument", `"word"`},
		{"nul byte", "POST", "/v1/commands/echo/run?text=a%00b", "", "", 400, "invalid_argument", `"text"`},
		{"bad escape", "POST", "/v1/commands/echo/run?text=%zz", "", "", 400, "invalid_argument", "escape"},
		{"broken json", "POST", "/v1/commands/typed/run", `{"params": {`, "application/json", 400, "invalid_argument", "JSON"},
		{"json object value", "POST", "/v1/commands/typed/run", `{"params": {"n": {"x": 1}}}`, "application/json", 400, "invalid_argument", `"n"`},
		{"json unknown key", "POST", "/v1/commands/typed/run", `{"n": 1}`, "application/json", 400, "invalid_argument", "n"},
		{"json and query repeat", "POST", "/v1/commands/typed/run?n=1", `{"params": {"n": 2}}`, "application/json", 400, "invalid_argument", `"n"`},
		{"wrong method", "GET", "/v1/commands/echo/run", "", "", 405, "method_not_allowed", ""},
		{"unknown path", "GET", "/v1/nothing", "", "", 404, "not_found", ""},
		{"bad job id", "GET", "/v1/jobs/..%2F..%2Fetc", "", "", 404, "not_found", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			} else {
				body = strings.NewReader("")
			}
			resp, b := g.do(tc.method, tc.path, body, "Content-Type", tc.ctype)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, resp.StatusCode, b, tc.status)
			}
			e := decode[apiErr](t, b)
			if e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.mention) {
				t.Errorf("error %+v, want code %q mentioning %q", e.Error, tc.code, tc.mention)
			}
			if resp.Header.Get("Execgw-Job-Id") != "" {
				t.Errorf("a rejected request carries a job id")
			}
		})
	}
	if started := g.log.lines(`"message":"job started"`); len(started) != 0 {
		t.Errorf("bad input started processes: %v", started)
	}
	g.stop()
}

func TestInjectionStaysOneArgument(t *testing.T) {
	g := startGateway(t, coreConfig)
	marker := filepath.Join(t.TempDir(), "x")
	for _, v := range []string{"1; touch " + marker, "$(touch " + marker + ")", "a b", "`touch " + marker + "`", "-n", "{b}"} {
		resp, body := g.do("POST", "/v1/commands/args/run?a="+url.QueryEscape(v), nil)
		rec := decode[record](t, body)
		if resp.StatusCode != 200 || rec.Stdout == nil || *rec.Stdout != "["+v+"]\n" {
			t.Errorf("a=%q: %d stdout %v, want one argument [%s]", v, resp.StatusCode, rec.Stdout, v)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a parameter value ran a shell command")
	}
	g.stop()
}

func TestOptionalParamWithoutDefaultDropsItsArgument(t *testing.T) {
	g := startGateway(t, coreConfig)
	_, body := g.do("POST", "/v1/commands/args/run?a=one", nil)
	if rec := decode[record](t, body); rec.Stdout == nil || *rec.Stdout != "[one]\n" {
		t.Errorf("stdout %v, want [one] alone", rec.Stdout)
	}
	g.stop()
}

// TestClientDisconnectKillsTree closes the client's connection mid-run:
// every process of `sleep 300 | cat` must be gone within 2 s, and the job
// recorded canceled by client_disconnected.
func TestClientDisconnectKillsTree(t *testing.T) {
	g := startGateway(t, coreConfig)
	ctx, cancel := context.WithCancel(context.Background())
	errc := g.doInBackground(ctx, "POST", "/v1/commands/pipe/run", nil) // until cancel below
	rec := decode[jobLine](t, []byte(g.waitLog(`"message":"job started"`, 10*time.Second)))
	waitFor(t, 5*time.Second, "sleep and cat to start", func() bool { return len(groupMembers(rec.Pid)) >= 3 })

	cancel()
	<-errc
	closed := time.Now()
	waitFor(t, 2*time.Second, "the process tree to die", func() bool { return len(groupMembers(rec.Pid)) == 0 })
	t.Logf("tree gone %v after the client closed", time.Since(closed))

	var got record
	waitFor(t, 5*time.Second, "the job to end", func() bool {
		_, body := g.do("GET", "/v1/jobs/"+rec.JobID, nil)
		got = decode[record](t, body)
		return got.State != "running"
	})
	if got.State != "canceled" || got.CancelReason == nil || *got.CancelReason != "client_disconnected" {
		t.Errorf("job %s %v, want canceled client_disconnected", got.State, got.CancelReason)
	}
	g.stop()
}

func TestTermIgnoringCommandIsKilledAfterGrace(t *testing.T) {
	g := startGateway(t, coreConfig)
	start := time.Now()
	_, body := g.do("POST", "/v1/commands/stubborn/run", nil)
	rec := decode[record](t, body)
	if rec.State != "timed_out" || rec.Signal == nil || *rec.Signal != "SIGKILL" || rec.ExitCode != nil {
		t.Errorf("got %s signal %v exit %v, want timed_out SIGKILL null", rec.State, rec.Signal, rec.ExitCode)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("ended after %v, before timeout + kill_grace", took)
	}
	if len(g.log.lines(`"job_id":"`+rec.ID, "SIGTERM")) == 0 || len(g.log.lines(`"job_id":"`+rec.ID, "SIGKILL", "kill_grace")) == 0 {
		t.Errorf("the log does not show the escalation from SIGTERM to SIGKILL:\n%s", g.log.String())
	}
	if len(groupMembers(rec.Pid)) != 0 {
		t.Errorf("processes of the job survive")
	}
	g.stop()
}

func TestTimeoutIsTimedOut(t *testing.T) {
	g := startGateway(t, coreConfig)
	_, body := g.do("POST", "/v1/commands/slow/run", nil)
	rec := decode[record](t, body)
	if rec.State != "timed_out" || rec.Signal == nil || *rec.Signal != "SIGTERM" {
		t.Errorf("got %s signal %v, want timed_out by SIGTERM", rec.State, rec.Signal)
	}
	g.stop()
}

func TestChildEnvironmentHoldsNothingOfTheGateway(t *testing.T) {
	g := startGateway(t, coreConfig, gatewayOptions{env: []string{"GATEWAY_SECRET=leak", "NOTIFY_SOCKET=/nonexistent"}})
	_, body := g.do("POST", "/v1/commands/env/run", nil)
	rec := decode[record](t, body)
	got := strings.Fields(*rec.Stdout)
	want := []string{"GREETING=hello", "LC_ALL=C", "PATH=" + os.Getenv("PATH")}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("child environment %q, want exactly %q", got, want)
	}
	g.stop()
}

// TestRequestLogLines checks the operator's view: one line per request
// with its fields, and job events with theirs.
func TestRequestLogLines(t *testing.T) {
	g := startGateway(t, coreConfig)
	resp, _ := g.do("POST", "/v1/commands/echo/run?text=hi", nil, "X-Request-ID", "abc-123")
	if resp.Header.Get("X-Request-ID") != "abc-123" {
		t.Errorf("request id not echoed")
	}
	g.stop()
	line := g.log.find(`"request_id":"abc-123"`)
	for _, field := range []string{`"method":"POST"`, `"path":"/v1/commands/echo/run"`, `"status":200`, `"latency_ms":`, `"remote":"127.0.0.1"`} {
		if !strings.Contains(line, field) {
			t.Errorf("request line %s lacks %s", line, field)
		}
	}
	end := g.log.find(`"message":"job ended"`)
	if job := decode[jobLine](t, []byte(end)); job.JobID == "" || !strings.Contains(line, `"job_id":"`+job.JobID+`"`) {
		t.Errorf("request line %s does not name the job of %s", line, end)
	}
	if !regexp.MustCompile(`"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"`).MatchString(line) {
		t.Errorf("request line %s: time without milliseconds", line)
	}
	for _, field := range []string{`"job_id":`, `"command":"echo"`, `"params":{"text":"hi"}`, `"state":"succeeded"`, `"exit_code":0`, `"duration_ms":`, `"stdout_bytes":3`} {
		if !strings.Contains(end, field) {
			t.Errorf("job line %s lacks %s", end, field)
		}
	}
}

// TestSlowHeadersAreCut: a client that never finishes its headers is
// disconnected by ReadHeaderTimeout rather than holding a connection.
func TestSlowHeadersAreCut(t *testing.T) {
	g := startGateway(t, coreConfig+"limits: {read_header_timeout: 500ms}\n")
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _ := conn.Read(buf)
	if n > 0 && !strings.Contains(string(buf[:n]), "408") {
		t.Errorf("slow client got %q", buf[:n])
	}
	g.stop()
}
