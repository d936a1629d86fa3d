package handler

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/config"
)

// fakeClock is a time source the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRateLimiterBucket(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newRateLimiter(config.Limits{Rate: 2, Burst: 3}, []config.Token{{Name: "ops"}}, clock.now)
	for i := range 3 {
		if ok, _ := l.allowToken("ops"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allowToken("ops")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("request beyond the burst: allowed %v, wait %v; want refused, 500ms", ok, wait)
	}
	if got := retryAfterSeconds(wait); got != 1 {
		t.Errorf("retryAfterSeconds(%v) = %d, want 1", wait, got)
	}
	// Another key has its own bucket.
	if ok, _ := l.allowClient("192.0.2.1"); !ok {
		t.Errorf("a client was refused for the token's requests")
	}
	clock.advance(500 * time.Millisecond)
	if ok, _ := l.allowToken("ops"); !ok {
		t.Errorf("refused after the refill of one request")
	}
	if ok, _ := l.allowToken("ops"); ok {
		t.Errorf("allowed twice after the refill of one request")
	}
	// A long pause refills to the burst, not beyond.
	clock.advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.allowToken("ops"); !ok {
			t.Fatalf("request %d of the refilled burst refused", i+1)
		}
	}
	if ok, _ := l.allowToken("ops"); ok {
		t.Errorf("the bucket held more than its burst after an hour")
	}
}

func TestRateLimiterOff(t *testing.T) {
	if l := newRateLimiter(config.Limits{Rate: 0, Burst: 5}, nil, time.Now); l != nil {
		t.Errorf("rate 0 made a limiter; want none (unlimited)")
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		want int
	}{
		{0, 1}, {time.Nanosecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2},
		{90 * time.Second, 90}, {1 << 62, maxRetryAfter},
	} {
		if got := retryAfterSeconds(tc.wait); got != tc.want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", tc.wait, got, tc.want)
		}
	}
	// A tiny rate must not overflow the wait.
	l := newRateLimiter(config.Limits{Rate: 1e-300, Burst: 1}, nil, time.Now)
	l.allowClient("x")
	if ok, wait := l.allowClient("x"); ok || retryAfterSeconds(wait) != maxRetryAfter {
		t.Errorf("tiny rate: allowed %v, Retry-After %d; want refused, %d", ok, retryAfterSeconds(wait), maxRetryAfter)
	}
}

func TestClientKey(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"::ffff:192.0.2.7":          "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":      "2001:db8:1:2::/64",
		"fe80::1%eth0":              "fe80::/64",
		"@":                         "@",
		"":                          "",
		"not an address":            "not an address",
		"2001:db8:1:3:3:4:5:6":      "2001:db8:1:3::/64",
		"::1":                       "::/64",
		"0000:0000:0000:0000::0001": "::/64",
	} {
		if got := clientKey(ip); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", ip, got, want)
		}
	}
}

// TestRateLimiterForgetsIdleClients: a client whose bucket has refilled is
// forgotten at the next sweep, since a new bucket is the same.
func TestRateLimiterForgetsIdleClients(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newRateLimiter(config.Limits{Rate: 10, Burst: 10}, nil, clock.now)
	for i := range 1000 {
		l.allowClient(fmt.Sprintf("a%d", i))
	}
	clock.advance(time.Second) // every bucket is full again
	for i := range 1000 {
		l.allowClient(fmt.Sprintf("b%d", i))
	}
	if n := len(l.clients); n > 1000 {
		t.Errorf("%d client buckets kept; want the idle ones forgotten", n)
	}
	for key := range l.clients {
		if key[0] == 'a' {
			t.Fatalf("idle client %s still tracked", key)
		}
	}
}

// TestRateLimiterIsBounded: a flood from ever new addresses, none of them
// idle, keeps at most maxTrackedClients buckets.
func TestRateLimiterIsBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newRateLimiter(config.Limits{Rate: 0.001, Burst: 1}, nil, clock.now)
	most := 0
	for i := range 10 * maxTrackedClients {
		l.allowClient(strconv.Itoa(i))
		most = max(most, len(l.clients))
	}
	if most > maxTrackedClients {
		t.Errorf("%d client buckets at most, want <= %d", most, maxTrackedClients)
	}
	// A client still tracked keeps its limit.
	for key := range l.clients {
		if ok, _ := l.allowClient(key); ok {
			t.Errorf("tracked client %s allowed beyond its burst", key)
		}
		break
	}
}

const limitedConfig = `
auth:
  tokens:
    - {name: ops, sha256: "%s", commands: ["*"]}
    - {name: echoer, sha256: "%s", commands: [echo]}
limits: {rate: 0.01, burst: 2}
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {required: true}
`

// TestRateLimitPerToken: beyond its burst a token gets 429
// resource_exhausted with Retry-After; other tokens and the probes do not.
func TestRateLimitPerToken(t *testing.T) {
	s := startAuthServer(t, fmt.Sprintf(limitedConfig, sha256Hex(opsToken), sha256Hex(echoToken)))
	for i := range 2 {
		if resp, body := s.do("GET", "/v1/commands", opsToken, nil); resp.StatusCode != 200 {
			t.Fatalf("request %d of the burst = %d %s", i+1, resp.StatusCode, body)
		}
	}
	for _, target := range []string{"/v1/commands", "/v1/commands/echo/run?text=x", "/v1/jobs", "/", "/v1/nothing"} {
		method := "GET"
		if target == "/v1/commands/echo/run?text=x" {
			method = "POST"
		}
		resp, body := s.do(method, target, opsToken, nil)
		if resp.StatusCode != http.StatusTooManyRequests || errorCode(body) != codeResourceExhausted {
			t.Fatalf("%s %s beyond the burst = %d %s, want 429 resource_exhausted", method, target, resp.StatusCode, body)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
			t.Errorf("Retry-After %q, want the seconds to the next request (100 at 0.01/s)", resp.Header.Get("Retry-After"))
		}
	}
	for _, target := range []string{"/healthz", "/readyz", "/metrics"} {
		for range 5 {
			if resp, _ := s.do("GET", target, opsToken, nil); resp.StatusCode != 200 {
				t.Errorf("GET %s = %d, want 200: probes are not limited", target, resp.StatusCode)
			}
		}
	}
	if resp, body := s.do("GET", "/v1/commands", echoToken, nil); resp.StatusCode != 200 {
		t.Errorf("another token = %d %s, want 200: limits are per token", resp.StatusCode, body)
	}
}

// TestRateLimitWithoutToken: anonymous requests, and requests whose token
// is wrong, are limited by address, which also slows token guessing.
func TestRateLimitWithoutToken(t *testing.T) {
	s := startAuthServer(t, fmt.Sprintf(limitedConfig, sha256Hex(opsToken), sha256Hex(echoToken)))
	codes := []int{}
	for _, token := range []string{wrongToken, "", wrongToken + "2"} {
		resp, _ := s.do("GET", "/v1/commands", token, nil)
		codes = append(codes, resp.StatusCode)
	}
	if fmt.Sprint(codes) != "[401 401 429]" {
		t.Errorf("statuses %v, want [401 401 429]: wrong tokens share the address's bucket", codes)
	}
	if resp, _ := s.do("GET", "/v1/commands", opsToken, nil); resp.StatusCode != 200 {
		t.Errorf("a valid token from the same address = %d, want 200", resp.StatusCode)
	}
}

// TestRateLimitPerAddress drives the handler with several remote addresses,
// which a loopback socket cannot have.
func TestRateLimitPerAddress(t *testing.T) {
	cfg, err := config.Parse(t.TempDir()+"/c.yaml", []byte("limits: {rate: 0.01, burst: 1}\ncommands:\n  echo:\n    argv: [echo]\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := New(Options{Config: cfg, Log: zerolog.Nop(), Metrics: prometheus.NewRegistry()})
	status := func(remote string) int {
		// httptest's default Host, example.com, is not one an open
		// gateway answers to.
		req := httptest.NewRequest("GET", "http://localhost/v1/nothing", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tc := range []struct {
		remote string
		want   int
	}{
		{"192.0.2.1:1000", 404}, {"192.0.2.1:1001", 429}, {"192.0.2.2:1000", 404},
		{"[2001:db8::1]:1000", 404}, {"[2001:db8::2]:1000", 429}, {"[2001:db8:0:1::1]:1000", 404},
		{"[::ffff:192.0.2.2]:5", 429},
	} {
		if got := status(tc.remote); got != tc.want {
			t.Errorf("request from %s = %d, want %d", tc.remote, got, tc.want)
		}
	}
}
