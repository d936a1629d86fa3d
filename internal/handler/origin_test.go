package handler

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

const originConfig = `
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {required: true}
`

// TestCrossSiteRequestsAreRefused: on an open gateway (no tokens), a page
// of another origin, or one reached through DNS rebinding (a foreign Host),
// gets 403 permission_denied on every route and starts nothing; the
// gateway's own page, curl-like clients and configured hosts pass.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	s := startAuthServer(t, originConfig)
	u, _ := url.Parse(s.URL)
	port := u.Port()
	refused := []struct {
		name   string
		method string
		path   string
		host   string
		header map[string]string
		reason string
	}{
		{"cross-origin POST run", "POST", "/v1/commands/echo/run?text=hi", "", map[string]string{"Origin": "http://evil.example"}, "Origin"},
		{"null origin", "POST", "/v1/commands/echo/run?text=hi", "", map[string]string{"Origin": "null"}, "Origin"},
		{"other port origin", "POST", "/v1/commands/echo/run?text=hi", "", map[string]string{"Origin": "http://127.0.0.1:1"}, "Origin"},
		{"other scheme origin", "POST", "/v1/commands/echo/run?text=hi", "", map[string]string{"Origin": "https://" + u.Host}, "Origin"},
		{"sec-fetch-site cross-site", "POST", "/v1/commands/echo/run?text=hi", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"},
		{"rebinding POST run", "POST", "/v1/commands/echo/run?text=hi", "evil.example:" + port, nil, "Host"},
		{"rebinding read jobs", "GET", "/v1/jobs", "evil.example:" + port, map[string]string{"Origin": "http://evil.example:" + port}, "Host"},
		{"rebinding metrics", "GET", "/metrics", "evil.example:" + port, nil, "Host"},
		{"rebinding unknown path", "GET", "/nowhere", "evil.example", nil, "Host"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, body := s.send(req)
			if resp.StatusCode != http.StatusForbidden || errorCode(body) != codePermissionDenied {
				t.Fatalf("%s %s = %d %s, want 403 permission_denied", tc.method, tc.path, resp.StatusCode, body)
			}
			if !strings.Contains(string(body), tc.reason) {
				t.Errorf("message %s does not say why (%s)", body, tc.reason)
			}
			if resp.Header.Get(headerJobID) != "" {
				t.Errorf("refused request started job %s", resp.Header.Get(headerJobID))
			}
		})
	}
	resp, body := s.do("GET", "/v1/jobs", "", nil)
	var list struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(body, &list); resp.StatusCode != 200 || err != nil {
		t.Fatalf("GET /v1/jobs = %d %s (%v)", resp.StatusCode, body, err)
	}
	if len(list.Jobs) != 0 {
		t.Fatalf("refused requests left %d job records: %s", len(list.Jobs), body)
	}

	passes := []struct {
		name   string
		host   string
		header map[string]string
	}{
		{"curl-like", "", nil},
		{"same origin", "", map[string]string{"Origin": "http://" + u.Host, "Sec-Fetch-Site": "same-origin"}},
		{"typed address", "", map[string]string{"Sec-Fetch-Site": "none"}},
		{"localhost any port", "localhost:" + port, map[string]string{"Origin": "http://localhost:" + port}},
		{"ipv6 loopback", "[::1]:" + port, nil},
	}
	for _, tc := range passes {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", s.URL+"/v1/commands/echo/run?text=hi", nil)
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if resp, body := s.send(req); resp.StatusCode != 200 {
				t.Fatalf("run = %d %s, want 200", resp.StatusCode, body)
			}
		})
	}
}

// TestAllowedHosts: configured entries replace the defaults; one without a
// port matches any port, one with a port only that port. With tokens and
// no allowed_hosts any Host is served (the token is the defence).
func TestAllowedHosts(t *testing.T) {
	s := startAuthServer(t, "allowed_hosts: [gw.example, \"other.example:8443\", \"[::1]\"]\n"+originConfig)
	u, _ := url.Parse(s.URL)
	for host, want := range map[string]int{
		"gw.example":                200,
		"GW.example:" + u.Port():    200,
		"other.example:8443":        200,
		"[::1]:" + u.Port():         200,
		"other.example:" + u.Port(): 403,
		u.Host:                      403, // not listed: the defaults are replaced
		"evil.example":              403,
	} {
		req, _ := http.NewRequest("GET", s.URL+"/healthz", nil)
		req.Host = host
		if resp, body := s.send(req); resp.StatusCode != want {
			t.Errorf("Host %q: GET /healthz = %d %s, want %d", host, resp.StatusCode, body, want)
		}
	}

	tokens := startAuthServer(t, authConfig)
	req, _ := http.NewRequest("GET", tokens.URL+"/v1/commands", nil)
	req.Host = "anything.example"
	req.Header.Set("Authorization", "Bearer "+opsToken)
	if resp, body := tokens.send(req); resp.StatusCode != 200 {
		t.Errorf("with tokens, Host anything.example = %d %s, want 200", resp.StatusCode, body)
	}
	req.Header.Set("Origin", "http://evil.example")
	if resp, body := tokens.send(req); resp.StatusCode != 403 {
		t.Errorf("with tokens, cross-origin request = %d %s, want 403", resp.StatusCode, body)
	}
}
