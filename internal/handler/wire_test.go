package handler

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRecordKeys: the API's record has the contract's keys and no more;
// what the store keeps for the crash sweep (pgid, proc_start, sid,
// boot_id) never reaches a client.
func TestRecordKeys(t *testing.T) {
	s := startAuthServer(t, `
commands:
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {required: true}
`)
	want := []string{"cancel_reason", "command", "created_at", "duration_ms", "ended_at", "exit_code", "id",
		"limit", "node", "output_error", "owner", "params", "pid", "signal", "started_at", "state",
		"stderr_bytes", "stderr_truncated", "stdout_bytes", "stdout_truncated"}
	keysOf := func(what string, body []byte) []string {
		t.Helper()
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: %v: %s", what, err, body)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return keys
	}
	req, _ := http.NewRequest("POST", s.URL+"/v1/commands/echo/run?text=hi", nil)
	req.Header.Set("Prefer", "respond-async")
	_, body := s.send(req)
	id := jobIDOf(t, body)
	if got := keysOf("202", body); !slices.Equal(got, want) {
		t.Errorf("detached run's record keys %v, want %v", got, want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = s.do("GET", "/v1/jobs/"+id, "", nil)
		if strings.Contains(string(body), `"state":"succeeded"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := keysOf("GET", body); !slices.Equal(got, want) {
		t.Errorf("GET record keys %v, want %v", got, want)
	}
	_, body = s.do("GET", "/v1/jobs", "", nil)
	var list struct{ Jobs []json.RawMessage }
	if err := json.Unmarshal(body, &list); err != nil || len(list.Jobs) != 1 {
		t.Fatalf("GET /v1/jobs: %v %s", err, body)
	}
	if got := keysOf("list", list.Jobs[0]); !slices.Equal(got, want) {
		t.Errorf("listed record keys %v, want %v", got, want)
	}
	_, body = s.do("POST", "/v1/commands/echo/run?text=hi", "", nil)
	if got := keysOf("bound", body); !slices.Equal(got, sortedWith(want, "stderr", "stdout")) {
		t.Errorf("bound run's keys %v, want the record's and stdout, stderr", got)
	}
}

func sortedWith(keys []string, more ...string) []string {
	out := append(slices.Clone(keys), more...)
	slices.Sort(out)
	return out
}
