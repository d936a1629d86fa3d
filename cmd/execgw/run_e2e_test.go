package main

// End-to-end tests of bound runs under load (issue 13): a client that gives
// up while its run waits in the queue, and a large JSON answer.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// queuedConfig has a command that touches a marker file named by its
// parameter as soon as it starts, then sleeps; touch is how a test sees
// whether a run ever started. mark reads its stdin first; note does not.
const queuedConfig = `
commands:
  mark:
    argv: ["sh", "-c", 'touch "$0"; cat > /dev/null; sleep "$1"', "{name}", "{secs}"]
    params:
      name: {pattern: '^[a-z]+$', required: true}
      secs: {type: int, min: 0, max: 300, required: true}
    stdin: body
    dir: %[1]s
    kill_grace: 1s
    %[2]s
  note:
    argv: ["sh", "-c", 'touch "$0"; sleep "$1"', "{name}", "{secs}"]
    params:
      name: {pattern: '^[a-z]+$', required: true}
      secs: {type: int, min: 0, max: 300, required: true}
    dir: %[1]s
    kill_grace: 1s
    %[2]s
`

// TestQueuedBoundRunClientGivesUp: with the one slot busy, a bound run
// whose client gives up while it waits leaves the queue at once, ends
// canceled (client_disconnected), never starts its process, and its
// request is logged as 499 (a stream's, begun, as 200); for a stdin: body
// run, whose body the process has not read yet, as for any other.
func TestQueuedBoundRunClientGivesUp(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("needs curl, the client that gives up")
	}
	for _, limit := range []struct{ name, global, command string }{
		{"global max_concurrent", "max_concurrent: 1\n", ""},
		{"command max_concurrent", "", "max_concurrent: 1"},
	} {
		for _, run := range []struct {
			name    string
			command string
			args    []string // curl's arguments sending the body
			status  string   // of the request's log line
		}{
			{"stdin body", "mark", []string{"--data-binary", "input that nobody reads yet"}, "499"},
			{"JSON params", "note", []string{"-H", "Content-Type: application/json", "--data-binary", `{"params": {"secs": 0}}`}, "499"},
			// A stream begins (200) before the job starts, so that the
			// client knows its job id.
			{"stdin body raw stream", "mark", []string{"-H", "Accept: application/octet-stream", "--data-binary", "input"}, "200"},
		} {
			t.Run(limit.name+"/"+run.name, func(t *testing.T) {
				work := t.TempDir()
				g := startGateway(t, limit.global+fmt.Sprintf(queuedConfig, work, limit.command))
				blocker := g.detach("/v1/commands/" + run.command + "/run?name=blocker&secs=300")
				if blocker.State != "running" {
					t.Fatalf("blocker %s, want running", blocker.State)
				}

				path := "/v1/commands/" + run.command + "/run?name=waiter"
				if run.command == "mark" {
					path += "&secs=0"
				}
				args := append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1"}, run.args...)
				out, err := exec.Command(curl, append(args, g.URL+path)...).Output()
				if code := curlExit(err); code != 28 { // 28: operation timed out
					t.Fatalf("curl exit %d (%v), output %q; want 28, timed out while the run waits", code, err, out)
				}

				queued := decode[jobLine](t, []byte(g.waitLog(`"message":"job queued"`, 5*time.Second)))
				var rec record
				waitFor(t, 5*time.Second, "the waiting run to leave the queue", func() bool {
					rec = g.job(queued.JobID)
					return rec.State != "queued"
				})
				if rec.State != "canceled" || rec.CancelReason == nil || *rec.CancelReason != "client_disconnected" || rec.StartedAt != nil {
					t.Errorf("waiter %s %v started %v, want canceled client_disconnected, never started", rec.State, rec.CancelReason, rec.StartedAt)
				}
				if st := g.job(blocker.ID).State; st != "running" {
					t.Errorf("blocker %s, want still running", st)
				}

				// Free the slot: nothing of the waiter may start now.
				if resp, body := g.do("POST", "/v1/jobs/"+blocker.ID+"/cancel", nil); resp.StatusCode != http.StatusOK {
					t.Fatalf("cancel blocker: %d %s", resp.StatusCode, body)
				}
				g.stop()
				if _, err := os.Stat(filepath.Join(work, "waiter")); !os.IsNotExist(err) {
					t.Errorf("the waiter's process ran (marker: %v)", err)
				}
				if _, err := os.Stat(filepath.Join(work, "blocker")); err != nil {
					t.Errorf("the blocker's marker: %v (is the test's marker wrong?)", err)
				}
				lines := g.log.lines(`"message":"request"`, `"job_id":"`+queued.JobID+`"`)
				if len(lines) != 1 || !strings.Contains(lines[0], `"status":`+run.status+`,`) {
					t.Errorf("request lines of the waiter %q, want one with status %s", lines, run.status)
				}
			})
		}
	}
}

func curlExit(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestBoundJSONLargeOutput: a bound JSON run printing output_limit
// (16 MiB) of text that needs escaping answers valid JSON holding every
// byte, and the gateway's memory grows by far less than the answer.
func TestBoundJSONLargeOutput(t *testing.T) {
	const size = 16 << 20
	line := "tab\there \"quoted\" <b>&amp; back\\slash\n"
	g := startGateway(t, `
commands:
  big:
    argv: ["sh", "-c", 'yes "$0" | head -c 16777216; echo done >&2', 'tab	here "quoted" <b>&amp; back\slash']
  small:
    argv: ["echo", "warm"]
`)
	want := sha256.New()
	for left := size; left > 0; left -= len(line) {
		io.WriteString(want, line[:min(left, len(line))])
	}

	// Warm up, so that the baseline holds what any run needs.
	if resp, body := g.do("POST", "/v1/commands/small/run", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %d %.300s", resp.StatusCode, body)
	}
	base := streamRSS(t, g.cmd.Process.Pid)
	stopRSS := streamPeakRSS(t, g)
	resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/big/run", nil)
	body, err := io.ReadAll(resp.Body)
	peak := stopRSS()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var rec struct {
		record
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
	}
	if err := json.Unmarshal(body, &rec); err != nil {
		t.Fatalf("the answer is not JSON: %v; it ends %q", err, body[max(0, len(body)-200):])
	}
	if rec.State != "succeeded" || rec.StdoutBytes != size || rec.StdoutTruncated || rec.ID != resp.Header.Get("Execgw-Job-Id") {
		t.Errorf("record %+v", rec.record)
	}
	if got := sha256.Sum256([]byte(rec.Stdout)); fmt.Sprintf("%x", got) != fmt.Sprintf("%x", want.Sum(nil)) || len(rec.Stdout) != size {
		t.Errorf("stdout: %d bytes, sha256 %x; want %d bytes, %x", len(rec.Stdout), got, size, want.Sum(nil))
	}
	if rec.Stderr != "done\n" {
		t.Errorf("stderr %q, want %q", rec.Stderr, "done\n")
	}
	t.Logf("gateway RSS %d MiB before, peak %d MiB, for a %d MiB answer", base/mib, peak/mib, len(body)/mib)
	if grew := peak - base; grew > 32*mib {
		t.Errorf("gateway RSS grew by %d MiB answering %d MiB of stdout", grew/mib, size/mib)
	}
	g.stop()
}
