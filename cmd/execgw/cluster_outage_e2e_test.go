package main

import (
	"net/http"
	"testing"
	"time"
)

// TestClusterLongRedisOutage: Redis away for longer than node_timeout, for
// every gateway at once. The gateway stops its job (nobody can record it
// interrupted meanwhile) and, once Redis is back, stores the job's end
// itself: no record stays "running" for a job that is gone.
func TestClusterLongRedisOutage(t *testing.T) {
	cl := newClusterWithTimeout(t, `
shutdown_grace: 500ms
commands:
  sleeper:
    argv: ["sh", "-c", "echo begin; sleep 300"]
`, time.Second, "a")
	a := cl.nodes["a"]
	rec := a.detach("/v1/commands/sleeper/run")
	running := a.waitState(rec.ID, "running", 20*time.Second)
	a.waitOutput(rec.ID, "begin")

	cl.redis.Stop()
	waitFor(t, 20*time.Second, "the cut-off gateway to stop its job", func() bool { return !alive(running.Pid) })
	// Longer than the gateway tries to store the end by itself.
	time.Sleep(4 * cl.nodeTimeout)
	cl.redis.Start()

	var got record
	waitFor(t, 20*time.Second, "the job's final record after Redis is back", func() bool {
		resp, body := a.do("GET", "/v1/jobs/"+rec.ID, nil)
		if resp.StatusCode != http.StatusOK {
			return false
		}
		got = decode[record](t, body)
		return got.State != "running"
	})
	if got.State != "interrupted" || got.EndedAt == nil {
		t.Errorf("record after Redis is back: %s ended %v, want interrupted", got.State, got.EndedAt)
	}
	noOther5xx(t, "a", a)
}
