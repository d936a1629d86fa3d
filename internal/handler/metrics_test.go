package handler

import (
	"regexp"
	"strings"
	"testing"
)

// TestHTTPMetricsLabels: the request series carry code, method and the
// route's pattern, never a job id or a path no route matches, whose
// requests share one bounded label.
func TestHTTPMetricsLabels(t *testing.T) {
	s := startAuthServer(t, originConfig)
	const id = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	if resp, body := s.do("GET", "/v1/jobs/"+id, "", nil); resp.StatusCode != 404 {
		t.Fatalf("GET unknown job = %d %s", resp.StatusCode, body)
	}
	for _, junk := range []string{"/junk/one", "/junk/two", "/v1/jobs/" + id + "/nowhere"} {
		if resp, body := s.do("GET", junk, "", nil); resp.StatusCode != 404 {
			t.Fatalf("GET %s = %d %s", junk, resp.StatusCode, body)
		}
	}
	s.do("BREW", "/v1/jobs/"+id, "", nil) // an invented method is no new series either
	_, body := s.do("GET", "/metrics", "", nil)
	text := string(body)
	for _, want := range []string{
		`execgw_http_requests_total{code="404",method="GET",route="/v1/jobs/:id"} 1`,
		`execgw_http_requests_total{code="404",method="GET",route="unmatched"} 3`,
		`execgw_http_request_duration_seconds_count{route="/v1/jobs/:id"} 2`, // GET and BREW,
		`execgw_http_request_duration_seconds_count{route="unmatched"} 3`,
		`method="other"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics has no line %s", want)
		}
	}
	for _, bad := range []string{id, "junk", "nowhere", `status="`, "BREW"} {
		for _, line := range regexp.MustCompile(`(?m)^execgw_http_.*$`).FindAllString(text, -1) {
			if strings.Contains(line, bad) {
				t.Errorf("/metrics line holds %q: %s", bad, line)
			}
		}
	}
}
