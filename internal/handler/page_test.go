package handler

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestPageAndAssetsUnderStrictCSP: the page, its script and its style
// sheet are served with a policy that allows nothing inline, and the page
// itself holds no inline script or style for it to block.
func TestPageAndAssetsUnderStrictCSP(t *testing.T) {
	s := startAuthServer(t, authConfig)
	resp, body := s.do("GET", "/", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if csp == "" || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q; want script-src 'self' and no 'unsafe-inline'", csp)
	}
	page := string(body)
	for _, inline := range []string{"<script>", "<style", " style=", " onclick=", " onsubmit=", "javascript:"} {
		if strings.Contains(page, inline) {
			t.Errorf("the page holds %q, which its policy blocks", inline)
		}
	}
	for _, asset := range []struct{ path, contentType string }{
		{"/ui/app.js", "text/javascript"}, {"/ui/app.css", "text/css"}, {"/ui/favicon.svg", "image/svg+xml"},
	} {
		if !strings.Contains(page, asset.path) {
			t.Errorf("the page does not load %s", asset.path)
		}
		resp, body := s.do("GET", asset.path, "", nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), asset.contentType) || len(body) == 0 {
			t.Errorf("GET %s = %d %q, %d bytes", asset.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	for _, missing := range []string{"/ui/index.html", "/ui/nope.js", "/ui/webui.go"} {
		if resp, _ := s.do("GET", missing, "", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", missing, resp.StatusCode)
		}
	}
}

// TestOpenAPINeedsTokenAndShowsItsCommands: /openapi.json is protected as
// /v1 is, and each token's document holds the run operations of the
// commands it may run, no other.
func TestOpenAPINeedsTokenAndShowsItsCommands(t *testing.T) {
	s := startAuthServer(t, authConfig)
	for _, tok := range []string{"", wrongToken} {
		if resp, _ := s.do("GET", "/openapi.json", tok, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /openapi.json with token %q = %d, want 401", tok, resp.StatusCode)
		}
	}
	for _, tc := range []struct {
		token string
		runs  []string
	}{
		{opsToken, []string{"/v1/commands/echo/run", "/v1/commands/sleep/run"}},
		{echoToken, []string{"/v1/commands/echo/run"}},
		{nobodyToken, nil},
	} {
		resp, body := s.do("GET", "/openapi.json", tc.token, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /openapi.json = %d: %s", resp.StatusCode, body)
		}
		var doc struct {
			OpenAPI string                     `json:"openapi"`
			Paths   map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		var runs []string
		for p := range doc.Paths {
			if strings.HasSuffix(p, "/run") {
				runs = append(runs, p)
			}
		}
		slices.Sort(runs)
		if doc.OpenAPI != "3.1.0" || !slices.Equal(runs, tc.runs) {
			t.Errorf("token %s: openapi %q, run operations %v, want %v", tc.token[:8], doc.OpenAPI, runs, tc.runs)
		}
	}
}
