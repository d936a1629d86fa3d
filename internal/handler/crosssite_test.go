package handler

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// markerConfig has one command, which leaves a file behind: a refused
// request must not have started it.
func markerConfig(extra string) string {
	return extra + `
commands:
  touch:
    argv: ["touch", "{path}"]
    params:
      path: {max_len: 4096, required: true}
`
}

// The cases below go through the whole API (startAuthServer), each with a
// command whose side effect shows whether anything started.

// crossSiteCase is one request as a browser on some page would send it.
type crossSiteCase struct {
	name   string
	host   string // "" : the gateway's own address
	header map[string]string
	token  string
	want   int
}

func runCrossSiteCases(t *testing.T, s *authServer, cases []crossSiteCase) {
	t.Helper()
	own := strings.TrimPrefix(s.URL, "http://")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			for _, target := range []struct{ method, path string }{
				{"POST", "/v1/commands/touch/run?path=" + url.QueryEscape(marker)},
				{"GET", "/v1/jobs"},
				{"GET", "/metrics"},
			} {
				req, err := http.NewRequest(target.method, s.URL+target.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = own
				if tc.host != "" {
					req.Host = tc.host
				}
				for k, v := range tc.header {
					req.Header.Set(k, strings.ReplaceAll(v, "OWN", own))
				}
				if tc.token != "" {
					req.Header.Set("Authorization", "Bearer "+tc.token)
				}
				resp, body := s.send(req)
				if resp.StatusCode != tc.want {
					t.Errorf("%s %s: %d %s, want %d", target.method, target.path, resp.StatusCode, body, tc.want)
				}
				if tc.want == http.StatusForbidden && errorCode(body) != codePermissionDenied {
					t.Errorf("%s %s: code %q, want %s", target.method, target.path, errorCode(body), codePermissionDenied)
				}
			}
			_, err := os.Stat(marker)
			if ran := err == nil; ran != (tc.want == http.StatusOK) {
				t.Errorf("the command ran: %v, want %v", ran, tc.want == http.StatusOK)
			}
		})
	}
}

// A gateway without tokens, the demo's case: any page the operator visits
// could drive it, were it not for the checks of Host, Origin and
// Sec-Fetch-Site.
func TestCrossSiteRefusedWithoutTokens(t *testing.T) {
	s := startAuthServer(t, markerConfig(""))
	port := s.URL[strings.LastIndexByte(s.URL, ':')+1:]
	runCrossSiteCases(t, s, []crossSiteCase{
		{name: "curl", want: http.StatusOK},
		{name: "own origin", header: map[string]string{"Origin": "http://OWN", "Sec-Fetch-Site": "same-origin"}, want: http.StatusOK},
		{name: "typed in the address bar", header: map[string]string{"Sec-Fetch-Site": "none"}, want: http.StatusOK},
		{name: "localhost", host: "localhost:" + port, want: http.StatusOK},
		{name: "localhost origin", host: "localhost:" + port, header: map[string]string{"Origin": "http://localhost:" + port}, want: http.StatusOK},
		{name: "ipv6 loopback", host: "[::1]:" + port, want: http.StatusOK},
		{name: "page on another site", header: map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, want: http.StatusForbidden},
		{name: "another origin only", header: map[string]string{"Origin": "http://evil.example"}, want: http.StatusForbidden},
		{name: "another port of localhost", header: map[string]string{"Origin": "http://127.0.0.1:1"}, want: http.StatusForbidden},
		{name: "https origin", header: map[string]string{"Origin": "https://OWN"}, want: http.StatusForbidden},
		{name: "null origin", header: map[string]string{"Origin": "null"}, want: http.StatusForbidden},
		{name: "cross-site without origin", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: http.StatusForbidden},
		{name: "dns rebinding", host: "evil.example:" + port, header: map[string]string{"Origin": "http://evil.example:" + port, "Sec-Fetch-Site": "same-origin"}, want: http.StatusForbidden},
		{name: "rebinding without origin", host: "evil.example", want: http.StatusForbidden},
	})
}

func TestAllowedHostsAreTheWholeList(t *testing.T) {
	s := startAuthServer(t, markerConfig("allowed_hosts: [gw.example.com, \"other.example:9999\"]"))
	port := s.URL[strings.LastIndexByte(s.URL, ':')+1:]
	runCrossSiteCases(t, s, []crossSiteCase{
		{name: "listed host, any port", host: "gw.example.com:" + port, want: http.StatusOK},
		{name: "listed host, its page", host: "gw.example.com:" + port, header: map[string]string{"Origin": "http://gw.example.com:" + port}, want: http.StatusOK},
		{name: "listed host:port", host: "other.example:9999", want: http.StatusOK},
		{name: "listed host, other port", host: "other.example:" + port, want: http.StatusForbidden},
		{name: "loopback not listed", want: http.StatusForbidden},
	})
}

// With tokens, any Host is served by default (a foreign page has no
// token), but a page on another origin is refused all the same.
func TestCrossSiteRefusedWithTokens(t *testing.T) {
	const token = "egw_cross-site-test-token-000000"
	s := startAuthServer(t, markerConfig(fmt.Sprintf(`auth:
  tokens: [{name: ops, sha256: "%s", commands: ["*"]}]`, sha256Hex(token))))
	runCrossSiteCases(t, s, []crossSiteCase{
		{name: "any host", host: "gw.example.com", token: token, want: http.StatusOK},
		{name: "page on another site", header: map[string]string{"Origin": "http://evil.example"}, token: token, want: http.StatusForbidden},
	})
}
