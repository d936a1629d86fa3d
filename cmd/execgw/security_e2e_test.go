package main

// Access control and abuse resistance, against the real binary: tokens,
// the refusal to serve anonymously on a public listener, `execgw token`,
// rate and size limits, and a bounded random run of bad input.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// The tokens of securityConfig; the config holds only their hashes.
const (
	opsTok   = "egw_e2e-ops-0123456789abcdef"
	echoTok  = "egw_e2e-echo-fedcba9876543210"
	auditTok = "egw_e2e-audit-aaaaaaaaaaaaaaaa"
	wrongTok = "egw_e2e-wrong-bbbbbbbbbbbbbbbb"
)

var securityConfig = `
auth:
  tokens:
    - {name: ops, sha256: "` + tokenHash(opsTok) + `", commands: ["*"]}
    - {name: echoer, sha256: "` + tokenHash(echoTok) + `", commands: [echo]}
    - {name: audit, sha256: "` + tokenHash(auditTok) + `", commands: [], all_jobs: true}
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {required: true}
  sleep:
    argv: ["sleep", "300"]
    kill_grace: 200ms
`

// startGatewayOn is startGateway on a listen address of the test's choosing.
func startGatewayOn(t *testing.T, listen, config string) *gateway {
	t.Helper()
	return startGateway(t, config, gatewayOptions{listen: listen})
}

// serveExpectingFailure runs `execgw serve` with config and returns its
// output and exit error; it must exit by itself.
func serveExpectingFailure(t *testing.T, config string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "serve", "--config", path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("execgw serve did not exit by itself; output:\n%s", out)
	}
	return string(out), err
}

// nonLoopbackIPv4 is an address of this host other hosts could reach, or "".
func nonLoopbackIPv4() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

// TestAnonymousRefusedOnPublicListener: without tokens, and without
// auth.allow_anonymous, the gateway will not serve a listener other hosts
// can reach; it exits non-zero saying why and what to do.
func TestAnonymousRefusedOnPublicListener(t *testing.T) {
	listens := []string{"0.0.0.0:0"}
	if ln, err := net.Listen("tcp", "[::]:0"); err == nil { // where IPv6 is available
		ln.Close()
		listens = append(listens, "[::]:0")
	}
	if ip := nonLoopbackIPv4(); ip != "" {
		listens = append(listens, ip+":0")
	}
	for _, listen := range listens {
		t.Run(listen, func(t *testing.T) {
			out, err := serveExpectingFailure(t, "listen: \""+listen+"\"\nstate_dir: ./state\nlog: {format: json}\n"+
				"commands:\n  echo:\n    argv: [echo, hi]\n")
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("execgw serve on %s without tokens: %v, want a non-zero exit; output:\n%s", listen, err, out)
			}
			for _, want := range []string{"no tokens are configured", "not a loopback address", "auth.tokens", "allow_anonymous: true"} {
				if !strings.Contains(out, want) {
					t.Errorf("message lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, `"message":"serving"`) {
				t.Errorf("it served before refusing:\n%s", out)
			}
		})
	}
}

// TestAnonymousServedWhenAllowed: auth.allow_anonymous: true opens a public
// listener deliberately; tokens make one safe without it; loopback needs
// neither.
func TestAnonymousServedWhenAllowed(t *testing.T) {
	const cmds = "commands:\n  echo:\n    argv: [echo, \"{text}\"]\n    params:\n      text: {required: true}\n"
	t.Run("allow_anonymous", func(t *testing.T) {
		g := startGatewayOn(t, "0.0.0.0:0", "auth: {allow_anonymous: true}\n"+cmds)
		if resp, body := g.do("POST", "/v1/commands/echo/run?text=open", nil); resp.StatusCode != 200 {
			t.Errorf("anonymous run = %d %s, want 200", resp.StatusCode, body)
		}
		g.stop()
	})
	t.Run("tokens", func(t *testing.T) {
		g := startGatewayOn(t, "0.0.0.0:0", "auth:\n  tokens:\n    - {name: ops, sha256: \""+tokenHash(opsTok)+"\", commands: [\"*\"]}\n"+cmds)
		if resp, _ := g.do("POST", "/v1/commands/echo/run?text=x", nil); resp.StatusCode != 401 {
			t.Errorf("run without token = %d, want 401", resp.StatusCode)
		}
		if resp, body := g.do("POST", "/v1/commands/echo/run?text=x", nil, "Authorization", "Bearer "+opsTok); resp.StatusCode != 200 {
			t.Errorf("run with token = %d %s, want 200", resp.StatusCode, body)
		}
		g.stop()
	})
	t.Run("loopback", func(t *testing.T) {
		g := startGatewayOn(t, "127.0.0.1:0", cmds)
		if resp, body := g.do("POST", "/v1/commands/echo/run?text=local", nil); resp.StatusCode != 200 {
			t.Errorf("anonymous run on loopback = %d %s, want 200", resp.StatusCode, body)
		}
		g.stop()
	})
}

// TestTokenCommandLineAuthenticates: the line `execgw token` prints, pasted
// under auth.tokens, accepts the token it printed and nothing else.
func TestTokenCommandLineAuthenticates(t *testing.T) {
	out, err := exec.Command(binary(t), "token", "--name", "ci-bot").Output()
	if err != nil {
		t.Fatalf("execgw token: %v", err)
	}
	tokenLine := regexp.MustCompile(`(?m)^token: (\S+)$`).FindSubmatch(out)
	configLine := regexp.MustCompile(`(?m)^\s*- \{name: ci-bot, .*\}$`).Find(out)
	if tokenLine == nil || configLine == nil {
		t.Fatalf("execgw token printed no token or config line:\n%s", out)
	}
	token := string(tokenLine[1])
	if bytes.Contains(configLine, []byte(token)) {
		t.Fatalf("the config line holds the token itself: %s", configLine)
	}

	g := startGateway(t, "auth:\n  tokens:\n"+string(configLine)+"\n"+coreConfig)
	resp, body := g.do("POST", "/v1/commands/echo/run?text=pasted", nil, "Authorization", "Bearer "+token)
	if resp.StatusCode != 200 {
		t.Fatalf("run with the printed token = %d %s, want 200", resp.StatusCode, body)
	}
	for _, other := range []string{"", "Bearer " + token + "x", "Bearer " + tokenHash(token)} {
		if resp, _ := g.do("GET", "/v1/jobs", nil, "Authorization", other); resp.StatusCode != 401 {
			t.Errorf("Authorization %q = %d, want 401", other, resp.StatusCode)
		}
	}
	g.stop()
	if g.log.find(`"token":"ci-bot"`) == "" {
		t.Errorf("no request line names the token ci-bot")
	}
	if strings.Contains(g.log.String(), token) {
		t.Errorf("the token's value reached the log")
	}

	// Two tokens are never the same, and a name the config would refuse
	// is refused before anything is printed.
	again, _ := exec.Command(binary(t), "token").Output()
	if bytes.Contains(again, tokenLine[1]) {
		t.Errorf("execgw token printed the same token twice")
	}
	bad := exec.Command(binary(t), "token", "--name", "x}, all_jobs: true, y: {")
	if out, err := bad.Output(); err == nil || len(out) != 0 {
		t.Errorf("execgw token with a bad name: %v, printed %q; want a refusal", err, out)
	}
}

// TestTokensEndToEnd: each status for missing, wrong, foreign and right
// tokens, jobs of one token closed to another, and the log naming tokens
// but never holding their values.
func TestTokensEndToEnd(t *testing.T) {
	g := startGateway(t, securityConfig)
	auth := func(tok string) []string {
		if tok == "" {
			return nil
		}
		return []string{"Authorization", "Bearer " + tok}
	}
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"missing", "POST", "/v1/commands/echo/run?text=a", "", 401, "unauthenticated"},
		{"wrong", "POST", "/v1/commands/echo/run?text=a", wrongTok, 401, "unauthenticated"},
		{"foreign", "POST", "/v1/commands/sleep/run", echoTok, 403, "permission_denied"},
		{"none allowed", "POST", "/v1/commands/echo/run?text=a", auditTok, 403, "permission_denied"},
		{"right", "POST", "/v1/commands/echo/run?text=a", echoTok, 200, ""},
		{"health without token", "GET", "/healthz", "", 200, ""},
	} {
		resp, body := g.do(tc.method, tc.path, nil, auth(tc.token)...)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s %s = %d %s, want %d", tc.name, tc.method, tc.path, resp.StatusCode, body, tc.status)
			continue
		}
		if tc.code != "" {
			if e := decode[apiErr](t, body); e.Error.Code != tc.code {
				t.Errorf("%s: code %q, want %q", tc.name, e.Error.Code, tc.code)
			}
		}
		if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("%s: 401 without a Bearer challenge: %q", tc.name, resp.Header.Get("WWW-Authenticate"))
		}
	}

	resp, body := g.do("POST", "/v1/commands/sleep/run", nil, append(auth(opsTok), "Prefer", "respond-async")...)
	if resp.StatusCode != 202 {
		t.Fatalf("detached run = %d %s", resp.StatusCode, body)
	}
	job := decode[record](t, body).ID
	for _, req := range [][2]string{
		{"GET", "/v1/jobs/" + job}, {"GET", "/v1/jobs/" + job + "/stdout"},
		{"GET", "/v1/jobs/" + job + "/events"}, {"POST", "/v1/jobs/" + job + "/cancel"}, {"DELETE", "/v1/jobs/" + job},
	} {
		if resp, body := g.do(req[0], req[1], nil, auth(echoTok)...); resp.StatusCode != 403 {
			t.Errorf("echoer %s %s = %d %s, want 403", req[0], req[1], resp.StatusCode, body)
		}
	}
	if resp, body := g.do("POST", "/v1/jobs/"+job+"/cancel", nil, auth(auditTok)...); resp.StatusCode != 200 || decode[record](t, body).State != "canceled" {
		t.Errorf("audit (all_jobs) cancel = %d %s, want 200 canceled", resp.StatusCode, body)
	}
	g.stop()

	for _, name := range []string{"ops", "echoer", "audit"} {
		if g.log.find(`"token":"`+name+`"`) == "" {
			t.Errorf("no request line names token %s", name)
		}
	}
	for _, tok := range []string{opsTok, echoTok, auditTok, wrongTok} {
		if strings.Contains(g.log.String(), tok) {
			t.Errorf("a token's value reached the log")
		}
	}
}

// TestRateLimitEndToEnd: beyond limits.burst a token gets 429 with
// Retry-After; the probes are never limited.
func TestRateLimitEndToEnd(t *testing.T) {
	g := startGateway(t, "limits: {rate: 0.5, burst: 2}\n"+securityConfig)
	var statuses []int
	for range 3 {
		resp, _ := g.do("GET", "/v1/commands", nil, "Authorization", "Bearer "+opsTok)
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode == 429 {
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
				t.Errorf("Retry-After %q, want 1 or 2 seconds at 0.5 requests a second", resp.Header.Get("Retry-After"))
			}
		}
	}
	if fmt.Sprint(statuses) != "[200 200 429]" {
		t.Errorf("statuses %v, want [200 200 429]", statuses)
	}
	for range 10 {
		if resp, _ := g.do("GET", "/healthz", nil, "Authorization", "Bearer "+opsTok); resp.StatusCode != 200 {
			t.Fatalf("/healthz = %d, want 200: never limited", resp.StatusCode)
		}
	}
	if resp, _ := g.do("GET", "/v1/commands", nil, "Authorization", "Bearer "+echoTok); resp.StatusCode != 200 {
		t.Errorf("another token = %d, want 200: limits are per token", resp.StatusCode)
	}
	g.stop()
}

// TestRequestSizeLimits: each size limit answers with its status and names
// itself, before anything starts.
func TestRequestSizeLimits(t *testing.T) {
	g := startGateway(t, "limits: {max_header_bytes: 8KiB, max_query_bytes: 1KiB, max_params: 3, max_param_bytes: 100}\n"+coreConfig)
	many := "a=1&b=2&c=3&d=4"
	for _, tc := range []struct {
		name, path string
		body       string
		header     []string
		status     int
		mention    string
	}{
		{"query", "/v1/commands/echo/run?text=" + strings.Repeat("x", 1100), "", nil, 400, "max_query_bytes"},
		{"param", "/v1/commands/echo/run?text=" + strings.Repeat("x", 101), "", nil, 400, "max_param_bytes"},
		{"params", "/v1/commands/args/run?" + many, "", nil, 400, "max_params"},
		{"json body", "/v1/commands/echo/run", `{"params": {"text": "` + strings.Repeat("x", 2<<20) + `"}}`, []string{"Content-Type", "application/json"}, 413, "bytes"},
	} {
		resp, body := g.do("POST", tc.path, strings.NewReader(tc.body), tc.header...)
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.mention) {
			t.Errorf("%s: %d %.200s, want %d mentioning %q", tc.name, resp.StatusCode, body, tc.status, tc.mention)
		}
	}
	// Headers beyond max_header_bytes: net/http answers 431 and closes,
	// which a raw socket sees whole.
	status, _ := sendRaw(strings.TrimPrefix(g.URL, "http://"), badRequest{
		method: "POST", target: "/v1/commands/echo/run?text=x",
		header: [][2]string{{"X-Big", strings.Repeat("h", 16<<10)}},
	})
	if status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers beyond max_header_bytes: %d, want 431", status)
	}
	g.stop()
	if started := g.log.lines(`"message":"job started"`); len(started) != 0 {
		t.Errorf("a refused request started a process: %v", started)
	}
}

// TestConnectionLimit: beyond limits.max_connections a connection waits to
// be accepted rather than costing the gateway anything.
func TestConnectionLimit(t *testing.T) {
	g := startGateway(t, "limits: {max_connections: 2}\n"+coreConfig)
	addr := strings.TrimPrefix(g.URL, "http://")
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// An answer proves the connection was accepted; keep-alive holds it.
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	third, err := net.Dial("tcp", addr) // the kernel's backlog takes it
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = third.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _ := third.Read(make([]byte, 1)); n != 0 {
		t.Fatalf("a third connection was served beyond max_connections: 2")
	}
	held[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("once a connection closed, the third got %v %v; want 200", resp, err)
	}
	resp.Body.Close()
	held[1].Close()
	g.stop()
}

// badInputConfig has commands whose parameters random input cannot
// satisfy: any started process came from a request the test did not make.
var badInputConfig = `
auth:
  tokens:
    - {name: fuzz, sha256: "` + tokenHash(opsTok) + `", commands: ["*"], all_jobs: true}
limits: {read_header_timeout: 2s}
commands:
  guarded:
    argv: ["echo", "{key}", "{n}", "{text}"]
    params:
      key: {type: enum, values: [k-7f3c9e21d8b4a6f05e], required: true}
      n: {type: int, min: 424242, max: 424242, required: true}
      text: {max_len: 16}
  upload:
    argv: ["cat", "-", "{key}"]
    stdin: body
    params:
      key: {type: enum, values: [k-7f3c9e21d8b4a6f05e], required: true}
`

// badInputSeed makes the run reproducible; the failing request is logged.
const badInputSeed = 20240611

// TestRandomBadInput sends 3000 random malformed requests: methods, paths
// (.., %00, %2e%2e, huge ids, unicode), broken JSON, huge query strings and
// headers, random content types and bodies, through a Go client and, for
// what a Go client refuses to send, a raw socket. No answer may be a 5xx,
// nothing may be logged as an error or panic, no process may start, and
// the gateway must still be healthy and stop cleanly afterwards.
func TestRandomBadInput(t *testing.T) {
	const total, workers = 3000, 4
	g := startGateway(t, badInputConfig)
	addr := strings.TrimPrefix(g.URL, "http://")
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		noAnswer int
		failures []string
	)
	record := func(req badRequest, status int, body string) {
		mu.Lock()
		defer mu.Unlock()
		if status == 0 {
			noAnswer++
			return
		}
		statuses[status]++
		// The one 5xx allowed: net/http itself answers a transfer coding it
		// does not implement with 501, as RFC 9112 section 6.1 says, before
		// any handler runs.
		if status == http.StatusNotImplemented && req.unknownTransferCoding() && strings.Contains(body, "Unsupported transfer encoding") {
			return
		}
		if status >= 500 && len(failures) < 20 {
			failures = append(failures, fmt.Sprintf("%d %.100q for %s", status, body, req))
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() { // exits after its share of the requests
			defer wg.Done()
			gen := &badInput{r: rand.New(rand.NewPCG(badInputSeed, uint64(w)))}
			for range total / workers {
				req := gen.request()
				status, body := 0, ""
				if !req.raw && gen.r.IntN(5) != 0 {
					status, body = sendClient(client, g.URL, req)
				}
				if status == 0 {
					// Raw by choice, or what the Go client refused to send
					// (or the server cut, as after a 431): raw bytes then.
					status, body = sendRaw(addr, req)
				}
				record(req, status, body)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests in %v (seed %d): statuses %v, %d without an answer", total, time.Since(start).Round(time.Millisecond), badInputSeed, statuses, noAnswer)
	for _, f := range failures {
		t.Errorf("5xx: %s", f)
	}
	if n := statuses[400] + statuses[404] + statuses[405] + statuses[401]; n < total/2 {
		t.Errorf("only %d requests were answered 400, 401, 404 or 405: the input is not reaching the API", n)
	}

	if resp, _ := g.do("GET", "/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("/healthz after the run = %d", resp.StatusCode)
	}
	if _, body := g.do("GET", "/v1/jobs", nil, "Authorization", "Bearer "+opsTok); !strings.Contains(string(body), `"jobs":[]`) {
		t.Errorf("jobs exist after the run: %.300s", body)
	}
	g.stop()
	if started := g.log.lines(`"message":"job started"`); len(started) != 0 {
		t.Errorf("bad input started %d processes: %v", len(started), started[0])
	}
	for _, bad := range []string{`"level":"error"`, "panic", `"status":5`} {
		if lines := g.log.lines(bad); len(lines) != 0 {
			t.Errorf("%d log lines with %s, first: %s", len(lines), bad, lines[0])
		}
	}
}

// badRequest is one generated request.
type badRequest struct {
	method, target string
	header         [][2]string
	body           []byte
	raw            bool // only a raw socket can send it
}

func (r badRequest) String() string {
	return fmt.Sprintf("%.40q %.200q (%d headers, %d body bytes)", r.method, r.target, len(r.header), len(r.body))
}

// badInput generates bad requests from a seeded source.
type badInput struct{ r *rand.Rand }

func (g *badInput) pick(s ...string) string { return s[g.r.IntN(len(s))] }

func (g *badInput) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	return b
}

// id is something in the place of a job id.
func (g *badInput) id() string {
	switch g.r.IntN(12) {
	case 0:
		return ".."
	case 1:
		return "%2e%2e"
	case 2:
		return "..%2F..%2F..%2Fetc%2Fpasswd"
	case 3:
		return "%00"
	case 4:
		return strings.Repeat("9", 1+g.r.IntN(20000)) // huge; sometimes beyond max_header_bytes
	case 5:
		return "ÜñíçødЁ✓𝄞"
	case 6:
		return "%ff%fe%c0%af"
	case 7:
		return strings.ToLower(g.ulid())
	case 8:
		return g.ulid() // well formed, but no such job
	case 9:
		return "a/b/../c"
	case 10:
		return "%zz"
	}
	return string(g.bytes(1 + g.r.IntN(30)))
}

func (g *badInput) ulid() string {
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	b := make([]byte, 26)
	b[0] = crockford[g.r.IntN(8)]
	for i := 1; i < len(b); i++ {
		b[i] = crockford[g.r.IntN(32)]
	}
	return string(b)
}

func (g *badInput) path() string {
	cmd := g.pick("guarded", "upload", "nope", "..", "%2e%2e", "gu%00arded", "GUARDED", "ünï", "guarded/../upload", strings.Repeat("c", 5000))
	id := g.id()
	return g.pick(
		"/v1/commands/"+cmd+"/run", "/v1/commands/"+cmd+"/run", "/v1/commands/"+cmd+"/run",
		"/v1/commands", "/v1/commands/"+cmd, "/v1/jobs", "/v1/jobs/"+id, "/v1/jobs/"+id+"/stdout",
		"/v1/jobs/"+id+"/stderr", "/v1/jobs/"+id+"/events", "/v1/jobs/"+id+"/cancel",
		"/", "/healthz", "/readyz", "/metrics", "/v1", "/v1/", "//v1//jobs", "/v1/jobs/../../etc/passwd",
		"/v1/%2e%2e/%2e%2e/etc/passwd", "/%00", "/v1/jobs/"+id+"/stdout/"+id, "/ünïcødé",
	)
}

func (g *badInput) query() string {
	if g.r.IntN(4) == 0 {
		return ""
	}
	var parts []string
	for range g.r.IntN(8) {
		name := g.pick("key", "n", "text", "follow", "state", "limit", "after", "command", "bogus", "", "%00", "ü", "a[]", "key")
		value := g.pick("", "1", "-1", "424241", "99999999999999999999999", "true", "maybe", "%00", "%zz", "%",
			"k-7f3c9e21d8b4a6f05", "running", "..%2F", "ünï", strings.Repeat("v", g.r.IntN(3000)), string(g.bytes(g.r.IntN(20))))
		parts = append(parts, name+"="+value)
	}
	q := strings.Join(parts, g.pick("&", "&", ";", "&&"))
	if g.r.IntN(20) == 0 {
		q += "&pad=" + strings.Repeat("q", 9000+g.r.IntN(100000)) // beyond max_query_bytes, sometimes max_header_bytes
	}
	return q
}

func (g *badInput) body() []byte {
	switch g.r.IntN(10) {
	case 0, 1:
		return nil
	case 2:
		return []byte(g.pick(`{`, `{"params":`, `{"params": {"key": }}`, `[1,2`, `{"params": {"n": 1e999}}`,
			`{"params": {"key": "\u0000"}}`, `{"params": {"n": 424242}} trailing`, `"just a string"`, `null`,
			`{"params": {"key": {"nested": [1]}}}`, `{"params": {"key": "x", "key": "y"}}`, `{"Params": 5}`,
			`{"params": {"n": "424242", "n": "424242"}}`, "\xff\xfe{\x00", `{"params":{"n":424242,"key":"k"}}`))
	case 3:
		return []byte(strings.Repeat("[", 1+g.r.IntN(100000)))
	case 4:
		return []byte(`{"params": {"text": "` + strings.Repeat("x", g.r.IntN(1<<21)) + `"}}`) // up to 2 MiB
	}
	return g.bytes(g.r.IntN(4096))
}

func (g *badInput) request() badRequest {
	req := badRequest{
		method: g.pick("GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW", "get"),
		target: g.path(),
		body:   g.body(),
	}
	if q := g.query(); q != "" {
		req.target += "?" + q
	}
	add := func(k, v string) { req.header = append(req.header, [2]string{k, v}) }
	add("Content-Type", g.pick("application/json", "application/json", "application/json; charset=utf-16",
		"text/plain", "multipart/form-data; boundary=--x", "application/x-www-form-urlencoded", "", "%%%",
		"application/json; charset=\"", "*/*", "application/octet-stream"))
	if g.r.IntN(2) == 0 {
		add("Accept", g.pick("text/event-stream", "application/octet-stream", "text/plain", "*/*", ";;;", "text/plain;q=x"))
	}
	if g.r.IntN(4) == 0 {
		add("Prefer", g.pick("respond-async", "respond-async, wait=1", ";"))
	}
	switch g.r.IntN(4) {
	case 0:
		add("Authorization", "Bearer "+opsTok)
	case 1:
		add("Authorization", g.pick("Bearer "+wrongTok, "Bearer", "Basic Zm9vOmJhcg==", "Bearer "+strings.Repeat("t", 5000)))
	case 2:
		add("Authorization", "Bearer "+opsTok) // valid: the request must fail on its content
	}
	if g.r.IntN(4) == 0 {
		add("X-Request-ID", g.pick("ok-id", "\"forged\":\"line\"", strings.Repeat("r", 300)))
	}
	if g.r.IntN(25) == 0 {
		add("X-Huge", strings.Repeat("h", 70<<10)) // beyond max_header_bytes
	}
	for range g.r.IntN(3) {
		add(g.pick("X-Junk", "Expect", "Transfer-Encoding", "Range", "If-None-Match"), g.pick("100-continue", "chunked", "bytes=0-1", "*", "x"))
	}
	// What a Go client would refuse or fix up goes over a raw socket.
	if g.r.IntN(8) == 0 {
		req.raw = true
		switch g.r.IntN(6) {
		case 0:
			req.method = g.pick("GET\x00", "G ET", "", "ПОСТ", strings.Repeat("M", 300))
		case 1:
			req.target = g.pick("*", "v1/jobs", "/v1/jobs/\x00", "/v1/jobs/a b", "http://evil.example/v1/jobs", "/\xff\xfe") + req.target
		case 2:
			add("Bad Header", "x")
		case 3:
			add("X-Ctl", "a\x01b")
		case 4:
			add("Content-Length", g.pick("-1", "99999999999999999999", "abc", "10, 20"))
		case 5:
			add("Transfer-Encoding", "chunked")
			req.body = []byte(g.pick("zz\r\n", "5\r\nabc", "0\r\n\r\n", "-1\r\n"))
		}
	}
	return req
}

// unknownTransferCoding reports whether req names a transfer coding other
// than chunked.
func (r badRequest) unknownTransferCoding() bool {
	for _, h := range r.header {
		if strings.EqualFold(h[0], "Transfer-Encoding") && !strings.EqualFold(strings.TrimSpace(h[1]), "chunked") {
			return true
		}
	}
	return false
}

// answerPrefix is how much of an answer's body is kept for messages.
const answerPrefix = 512

// sendClient sends req through a keep-alive Go client and returns the
// status and the start of the body; status 0 when no answer came (the
// client refused to send it, or the server closed the connection, as it
// does after a 431).
func sendClient(client *http.Client, base string, req badRequest) (int, string) {
	hreq, err := http.NewRequest(req.method, base+req.target, bytes.NewReader(req.body))
	if err != nil {
		return 0, ""
	}
	for _, h := range req.header {
		hreq.Header.Add(h[0], h[1])
	}
	resp, err := client.Do(hreq)
	if err != nil {
		return 0, ""
	}
	return readAnswer(resp)
}

func readAnswer(resp *http.Response) (int, string) {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, answerPrefix))
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, string(b)
}

// sendRaw writes req on a new connection exactly as generated, closes the
// writing side (so a short body ends rather than hangs), and reads the
// answer: its status and the start of its body, or 0 when the server
// closed without one.
func sendRaw(addr string, req badRequest) (int, string) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost\r\n", req.method, req.target)
	hasLength := false
	for _, h := range req.header {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
		hasLength = hasLength || strings.EqualFold(h[0], "Content-Length") || strings.EqualFold(h[0], "Transfer-Encoding")
	}
	if !hasLength {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(req.body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.Write(req.body)
	_, _ = conn.Write(b.Bytes())
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, ""
	}
	return readAnswer(resp)
}

// The demo's case: an open gateway on loopback. A web page the operator
// visits can make the browser POST to it, or read it through DNS
// rebinding; the gateway refuses both and starts nothing.
func TestCrossSiteRefusedEndToEnd(t *testing.T) {
	g := startGateway(t, `
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {max_len: 100}
`)
	host := strings.TrimPrefix(g.URL, "http://")
	_, port, _ := net.SplitHostPort(host)
	for _, tc := range []struct {
		name   string
		method string
		path   string
		header []string
		want   int
	}{
		{"form post from another site", "POST", "/v1/commands/echo/run?text=pwned", []string{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site", "Content-Type", "application/x-www-form-urlencoded"}, 403},
		{"rebinding read of the jobs", "GET", "/v1/jobs", []string{"Host", "evil.example:" + port}, 403},
		{"rebinding read of the metrics", "GET", "/metrics", []string{"Host", "evil.example:" + port}, 403},
		{"the gateway's own page", "POST", "/v1/commands/echo/run?text=ok", []string{"Origin", "http://" + host, "Sec-Fetch-Site", "same-origin"}, 200},
		{"curl", "GET", "/v1/jobs", nil, 200},
	} {
		req, err := http.NewRequest(tc.method, g.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(tc.header); i += 2 {
			if tc.header[i] == "Host" {
				req.Host = tc.header[i+1]
			} else {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.want)
		}
		if tc.want == 403 && !strings.Contains(string(body), `"code":"permission_denied"`) {
			t.Errorf("%s: %s, want permission_denied", tc.name, body)
		}
	}
	_, body := g.do("GET", "/v1/jobs", nil)
	if strings.Contains(string(body), "pwned") {
		t.Errorf("a cross-site run started a job: %s", body)
	}
	g.stop()
}
