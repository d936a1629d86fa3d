package handler

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCancelClientGivesUp: a cancel whose client stops waiting for a job
// that ignores SIGTERM is a client gone (499 in the request line), not a
// failure of the gateway: no 500, no error line.
func TestCancelClientGivesUp(t *testing.T) {
	s := startAuthServer(t, `
commands:
  stubborn:
    argv: [sh, -c, 'trap "" TERM; echo ready; sleep 300']
    kill_grace: 3s
`)
	req, _ := http.NewRequest("POST", s.URL+"/v1/commands/stubborn/run", nil)
	req.Header.Set("Prefer", "respond-async")
	resp, body := s.send(req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("detached run = %d %s", resp.StatusCode, body)
	}
	id := jobIDOf(t, body)
	deadline := time.Now().Add(10 * time.Second)
	// Running is not enough: SIGTERM must come once the trap is set.
	for {
		_, body := s.do("GET", "/v1/jobs/"+id+"/stdout", "", nil)
		if string(body) == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never got ready: %q", body)
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/jobs/"+id+"/cancel", nil)
	if resp, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("cancel of a TERM-ignoring job answered within 0.5s: %v", err)
	}

	var line string
	for deadline := time.Now().Add(10 * time.Second); line == "" && time.Now().Before(deadline); {
		for _, l := range strings.Split(s.log.String(), "\n") {
			if strings.Contains(l, `"path":"/v1/jobs/`+id+`/cancel"`) {
				line = l
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(line, `"status":499`) {
		t.Errorf("cancel request line = %q, want status 499", line)
	}
	for _, l := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(l, `"level":"error"`) {
			t.Errorf("error line in the gateway log: %s", l)
		}
	}
}
