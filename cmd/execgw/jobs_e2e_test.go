package main

// End-to-end tests of detached jobs, the job API, admission, and durable
// records across restarts and crashes (issue 3).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const jobsConfig = `
shutdown_grace: 500ms
commands:
  sleeper:
    argv: ["sh", "-c", "echo started; sleep 300 | cat"]
    kill_grace: 2s
  printer:
    argv: ["sh", "-c", 'for i in $(seq 1 "$1"); do echo "line $i"; sleep 0.05; done', "printer", "{n}"]
    params:
      n: {type: int, min: 1, max: 1000, required: true}
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {max_len: 100, required: true}
`

// queueConfig allows one process and one waiting detached job.
const queueConfig = "max_concurrent: 1\nmax_queued: 1\n" + jobsConfig

// detach starts a detached run and checks the 202 answer.
func (g *gateway) detach(path string) record {
	g.t.Helper()
	resp, body := g.do("POST", path, nil, "Prefer", "respond-async")
	if resp.StatusCode != http.StatusAccepted {
		g.t.Fatalf("POST %s (respond-async) = %d %s, want 202", path, resp.StatusCode, body)
	}
	rec := decode[record](g.t, body)
	if rec.ID == "" || resp.Header.Get("Execgw-Job-Id") != rec.ID || resp.Header.Get("Location") != "/v1/jobs/"+rec.ID {
		g.t.Errorf("202 for job %q with Execgw-Job-Id %q, Location %q", rec.ID, resp.Header.Get("Execgw-Job-Id"), resp.Header.Get("Location"))
	}
	return rec
}

// job is GET /v1/jobs/{id}, which must answer 200.
func (g *gateway) job(id string) record {
	g.t.Helper()
	resp, body := g.do("GET", "/v1/jobs/"+id, nil)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("GET job %s = %d %s", id, resp.StatusCode, body)
	}
	return decode[record](g.t, body)
}

// waitJob waits until the job's state is want and returns its record.
func (g *gateway) waitJob(id, want string) record {
	g.t.Helper()
	return g.waitState(id, want, 20*time.Second)
}

// waitState waits up to timeout until the job's state is want and
// returns its record.
func (g *gateway) waitState(id, want string, timeout time.Duration) record {
	g.t.Helper()
	var rec record
	waitFor(g.t, timeout, fmt.Sprintf("job %s to be %s", id, want), func() bool {
		rec = g.job(id)
		return rec.State == want
	})
	return rec
}

// output is GET /v1/jobs/{id}/stdout (or stderr), which must answer 200.
func (g *gateway) output(id, stream string) string {
	g.t.Helper()
	resp, body := g.do("GET", "/v1/jobs/"+id+"/"+stream, nil)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("GET %s of %s = %d %s", stream, id, resp.StatusCode, body)
	}
	return string(body)
}

// waitOutput waits until the job's stored stdout contains substr.
func (g *gateway) waitOutput(id, substr string) {
	g.t.Helper()
	waitFor(g.t, 20*time.Second, fmt.Sprintf("stdout of %s to hold %q", id, substr), func() bool {
		return strings.Contains(g.output(id, "stdout"), substr)
	})
}

// list is GET /v1/jobs?query.
func (g *gateway) list(query string) ([]record, string) {
	g.t.Helper()
	resp, body := g.do("GET", "/v1/jobs?"+query, nil)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("GET /v1/jobs?%s = %d %s", query, resp.StatusCode, body)
	}
	page := decode[struct {
		Jobs []record `json:"jobs"`
		Next *string  `json:"next"`
	}](g.t, body)
	if page.Jobs == nil || page.Next == nil {
		g.t.Fatalf("GET /v1/jobs?%s: jobs or next missing: %s", query, body)
	}
	return page.Jobs, *page.Next
}

func ids(recs []record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// wantError checks a response is the contract's JSON error.
func wantError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s = %d %s, want %d", what, resp.StatusCode, body, status)
		return
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want JSON", what, ct)
	}
	if e := decode[apiErr](t, body); e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("%s: error %+v, want code %q with a message", what, e.Error, code)
	}
}

// TestDetachedJobCancel: a detached job runs independently of its
// request; canceling it by the API kills its whole tree, keeps its output,
// and DELETE conflicts until it has ended.
func TestDetachedJobCancel(t *testing.T) {
	g := startGateway(t, jobsConfig)
	rec := g.detach("/v1/commands/sleeper/run")
	if rec.State != "running" || rec.Pid <= 0 {
		t.Errorf("202 record: state %q pid %d, want running with a pid", rec.State, rec.Pid)
	}
	g.waitOutput(rec.ID, "started")
	waitFor(t, 10*time.Second, "sleep and cat to start", func() bool { return len(groupMembers(rec.Pid)) >= 3 })
	if got := g.job(rec.ID); got.State != "running" || got.StdoutBytes != int64(len("started\n")) || got.EndedAt != nil {
		t.Errorf("GET running job: %s stdout_bytes %d ended_at %v", got.State, got.StdoutBytes, got.EndedAt)
	}

	resp, body := g.do("DELETE", "/v1/jobs/"+rec.ID, nil)
	wantError(t, "DELETE of a running job", resp, body, http.StatusConflict, "conflict")

	resp, body = g.do("POST", "/v1/jobs/"+rec.ID+"/cancel", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel = %d %s", resp.StatusCode, body)
	}
	got := decode[record](t, body)
	if got.State != "canceled" || got.CancelReason == nil || *got.CancelReason != "user" || got.EndedAt == nil {
		t.Errorf("cancel answered %s %v ended %v, want canceled user with ended_at", got.State, got.CancelReason, got.EndedAt)
	}
	// The answer comes once the tree is dead; killed processes may still
	// await their reaping as zombies, which groupMembers skips.
	waitFor(t, 2*time.Second, "the process tree to be gone", func() bool { return len(groupMembers(rec.Pid)) == 0 })
	if out := g.output(rec.ID, "stdout"); out != "started\n" {
		t.Errorf("stdout after cancel %q, want the output before it kept", out)
	}
	if again := g.job(rec.ID); again.State != "canceled" {
		t.Errorf("GET after cancel: %s", again.State)
	}
	// Canceling again answers the record unchanged.
	resp, body = g.do("POST", "/v1/jobs/"+rec.ID+"/cancel", nil)
	if again := decode[record](t, body); resp.StatusCode != http.StatusOK || again.State != "canceled" || !again.EndedAt.Equal(*got.EndedAt) {
		t.Errorf("second cancel = %d %s", resp.StatusCode, body)
	}

	resp, body = g.do("DELETE", "/v1/jobs/"+rec.ID, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE of an ended job = %d %s, want 204", resp.StatusCode, body)
	}
	for _, path := range []string{"", "/stdout", "/stderr"} {
		resp, body = g.do("GET", "/v1/jobs/"+rec.ID+path, nil)
		wantError(t, "GET deleted job"+path, resp, body, http.StatusNotFound, "not_found")
	}
	resp, body = g.do("DELETE", "/v1/jobs/"+rec.ID, nil)
	wantError(t, "second DELETE", resp, body, http.StatusNotFound, "not_found")
	g.stop()
}

// TestFollowOutput: ?follow=true streams every line of a slow printer as
// it comes and ends when the job ends.
func TestFollowOutput(t *testing.T) {
	g := startGateway(t, jobsConfig)
	const n = 30
	rec := g.detach("/v1/commands/printer/run?n=" + strconv.Itoa(n))
	resp, err := http.Get(g.URL + "/v1/jobs/" + rec.ID + "/stdout?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Execgw-Job-Id") != rec.ID {
		t.Fatalf("follow = %d, job id %q", resp.StatusCode, resp.Header.Get("Execgw-Job-Id"))
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "line 1\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	// The first line came while the job still printed (n lines 50 ms
	// apart): following streams, it does not wait for the end.
	if st := g.job(rec.ID).State; st != "running" {
		t.Logf("job already %s after the first line (slow machine?)", st)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("follow body: %v", err)
	}
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got := first + string(rest); got != want.String() {
		t.Errorf("followed %q, want %q", got, want.String())
	}
	// The stream ended because the job did.
	if got := g.job(rec.ID); got.State != "succeeded" || got.StdoutBytes != int64(want.Len()) {
		t.Errorf("after the stream ended: %s with %d bytes, want succeeded with %d", got.State, got.StdoutBytes, want.Len())
	}
	// Following an ended job returns its output at once.
	if out := g.output(rec.ID, "stdout?follow=true"); out != want.String() {
		t.Errorf("follow of an ended job %q", out)
	}
	g.stop()
}

// TestQueueing: with max_concurrent 1 and max_queued 1, one job runs, one
// waits, the next is refused with 429; the waiting one runs when the first
// ends. A bound run waits beyond max_queued and leaves when its client
// does.
func TestQueueing(t *testing.T) {
	g := startGateway(t, queueConfig)
	first := g.detach("/v1/commands/sleeper/run")
	if first.State != "running" {
		t.Fatalf("first job %s, want running", first.State)
	}
	second := g.detach("/v1/commands/printer/run?n=1")
	if second.State != "queued" || second.Pid != 0 || second.StartedAt != nil {
		t.Errorf("second job %s pid %d, want queued, not started", second.State, second.Pid)
	}

	resp, body := g.do("POST", "/v1/commands/echo/run?text=x", nil, "Prefer", "respond-async")
	wantError(t, "detached run with the queue full", resp, body, http.StatusTooManyRequests, "resource_exhausted")
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q, want seconds", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("Execgw-Job-Id") != "" {
		t.Errorf("a refused run carries a job id")
	}

	// A bound run is not refused: it waits while its client is there.
	ctx, cancel := context.WithCancel(context.Background())
	errc := g.doInBackground(ctx, "POST", "/v1/commands/echo/run?text=bound", nil) // until cancel below
	var bound record
	waitFor(t, 10*time.Second, "the bound run to wait in the queue", func() bool {
		recs, _ := g.list("state=queued&command=echo")
		if len(recs) == 1 {
			bound = recs[0]
		}
		return len(recs) == 1
	})
	cancel()
	<-errc
	got := g.waitJob(bound.ID, "canceled")
	if got.CancelReason == nil || *got.CancelReason != "client_disconnected" || got.Pid != 0 || got.StartedAt != nil {
		t.Errorf("bound waiter whose client left: %v pid %d started %v, want canceled client_disconnected, never started", got.CancelReason, got.Pid, got.StartedAt)
	}
	if st := g.job(second.ID).State; st != "queued" {
		t.Errorf("detached waiter %s after the bound one left, want queued", st)
	}

	resp, body = g.do("POST", "/v1/jobs/"+first.ID+"/cancel", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel = %d %s", resp.StatusCode, body)
	}
	done := g.waitJob(second.ID, "succeeded")
	if g.output(second.ID, "stdout") != "line 1\n" || done.StartedAt == nil {
		t.Errorf("queued job did not run after the first ended")
	}
	// Room again.
	third := g.detach("/v1/commands/echo/run?text=again")
	g.waitJob(third.ID, "succeeded")
	g.stop()
}

// TestListJobs: filters by state and command, newest first, paged through
// next and after.
func TestListJobs(t *testing.T) {
	g := startGateway(t, jobsConfig)
	var echoes []string
	for i := range 5 {
		resp, body := g.do("POST", "/v1/commands/echo/run?text=n"+strconv.Itoa(i), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("run = %d %s", resp.StatusCode, body)
		}
		echoes = append(echoes, decode[record](t, body).ID)
	}
	running := g.detach("/v1/commands/sleeper/run")
	slices.Reverse(echoes) // newest first

	all, next := g.list("")
	if want := append([]string{running.ID}, echoes...); !slices.Equal(ids(all), want) || next != "" {
		t.Errorf("all jobs %v next %q, want newest first %v", ids(all), next, want)
	}
	recs, _ := g.list("state=running")
	if !slices.Equal(ids(recs), []string{running.ID}) || recs[0].State != "running" {
		t.Errorf("state=running: %v", ids(recs))
	}
	recs, _ = g.list("command=echo&state=succeeded")
	if !slices.Equal(ids(recs), echoes) {
		t.Errorf("command=echo&state=succeeded: %v, want %v", ids(recs), echoes)
	}
	recs, _ = g.list("command=printer")
	if len(recs) != 0 {
		t.Errorf("command=printer: %v, want none", ids(recs))
	}

	var paged []string
	after := ""
	for page := 0; ; page++ {
		q := "command=echo&limit=2"
		if after != "" {
			q += "&after=" + after
		}
		recs, next := g.list(q)
		if page > 5 || len(recs) == 0 || len(recs) > 2 {
			t.Fatalf("page %d: %d jobs, next %q", page, len(recs), next)
		}
		paged = append(paged, ids(recs)...)
		if next == "" {
			break
		}
		if next != recs[len(recs)-1].ID {
			t.Errorf("next %q is not the page's last id %q", next, recs[len(recs)-1].ID)
		}
		after = next
	}
	if !slices.Equal(paged, echoes) {
		t.Errorf("paged %v, want %v", paged, echoes)
	}
	// after a job's id: the jobs older than it.
	recs, _ = g.list("after=" + echoes[1])
	if !slices.Equal(ids(recs), echoes[2:]) {
		t.Errorf("after=%s: %v, want %v", echoes[1], ids(recs), echoes[2:])
	}
	recs, _ = g.list("after=00000000000000000000000000")
	if len(recs) != 0 {
		t.Errorf("after the smallest id: %v", ids(recs))
	}
	g.stop()
}

// TestJobsSurviveRestart: finished jobs and their output are there after
// a graceful restart; a job still running at shutdown is canceled with
// reason shutdown once the grace is over, and its record says so.
func TestJobsSurviveRestart(t *testing.T) {
	g := startGateway(t, jobsConfig)
	resp, body := g.do("POST", "/v1/commands/echo/run?text=persisted", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("run = %d %s", resp.StatusCode, body)
	}
	bound := decode[record](t, body)
	detached := g.detach("/v1/commands/printer/run?n=3")
	g.waitJob(detached.ID, "succeeded")
	long := g.detach("/v1/commands/sleeper/run")
	g.waitOutput(long.ID, "started")
	g.stop()
	waitFor(t, 2*time.Second, "the processes of the job running at shutdown to be gone", func() bool {
		return len(groupMembers(long.Pid)) == 0
	})

	g2 := startGateway(t, jobsConfig, gatewayOptions{dir: g.Dir})
	if got := g2.job(bound.ID); got.State != "succeeded" || got.ExitCode == nil || *got.ExitCode != 0 || got.StdoutBytes != int64(len("persisted\n")) {
		t.Errorf("bound job after restart: %+v", got)
	}
	if out := g2.output(bound.ID, "stdout"); out != "persisted\n" {
		t.Errorf("bound job's stdout after restart %q", out)
	}
	if out := g2.output(detached.ID, "stdout"); out != "line 1\nline 2\nline 3\n" {
		t.Errorf("detached job's stdout after restart %q", out)
	}
	got := g2.job(long.ID)
	if got.State != "canceled" || got.CancelReason == nil || *got.CancelReason != "shutdown" || got.EndedAt == nil {
		t.Errorf("job running at shutdown: %s %v ended %v, want canceled shutdown", got.State, got.CancelReason, got.EndedAt)
	}
	if out := g2.output(long.ID, "stdout"); out != "started\n" {
		t.Errorf("its stdout %q", out)
	}
	if recs, _ := g2.list(""); len(recs) != 3 {
		t.Errorf("%d jobs listed after restart, want 3", len(recs))
	}
	g2.stop()
}

// TestCrashRecovery: after kill -9 of the gateway mid-job, the job's
// direct child dies with it (parent-death signal); its deeper descendants
// are killed by the next start, which marks the job interrupted.
func TestCrashRecovery(t *testing.T) {
	g := startGateway(t, queueConfig)
	rec := g.detach("/v1/commands/sleeper/run")
	queued := g.detach("/v1/commands/echo/run?text=never")
	g.waitOutput(rec.ID, "started")
	waitFor(t, 10*time.Second, "sleep and cat to start", func() bool { return len(groupMembers(rec.Pid)) >= 3 })

	g.signal(syscall.SIGKILL)
	if err := g.wait(10 * time.Second); err == nil {
		t.Fatalf("gateway exited cleanly after SIGKILL")
	}
	killed := time.Now()
	waitFor(t, time.Second, "the job's direct child to die with the gateway", func() bool { return !alive(rec.Pid) })
	t.Logf("direct child gone %v after the gateway's exit was seen", time.Since(killed))
	// Pdeathsig does not reach grandchildren: sleep and cat are left for
	// the next start to find.
	left := groupMembers(rec.Pid)
	if len(left) == 0 {
		t.Logf("no grandchild left to sweep")
	}

	g2 := startGateway(t, queueConfig, gatewayOptions{dir: g.Dir})
	waitFor(t, 5*time.Second, "the job's leftover processes to be killed", func() bool { return len(groupMembers(rec.Pid)) == 0 })
	got := g2.job(rec.ID)
	if got.State != "interrupted" || got.EndedAt == nil || got.CancelReason != nil || got.ExitCode != nil {
		t.Errorf("job after the crash: %s ended %v cancel %v exit %v, want interrupted with ended_at", got.State, got.EndedAt, got.CancelReason, got.ExitCode)
	}
	if got.EndedAt != nil && got.StartedAt != nil && got.EndedAt.Before(*got.StartedAt) {
		t.Errorf("ended_at %v before started_at %v", got.EndedAt, got.StartedAt)
	}
	if out := g2.output(rec.ID, "stdout"); out != "started\n" || got.StdoutBytes != int64(len(out)) {
		t.Errorf("output after the crash %q (%d bytes recorded), want kept", out, got.StdoutBytes)
	}
	if len(left) > 0 && g2.log.find(`"message":"killed processes left by interrupted job"`) == "" {
		t.Errorf("the sweep of the leftover processes is not logged")
	}
	// The job waiting in the queue at the crash never ran: interrupted too.
	if got := g2.job(queued.ID); got.State != "interrupted" || got.EndedAt == nil || got.StartedAt != nil || got.Pid != 0 {
		t.Errorf("job queued at the crash: %s ended %v started %v pid %d, want interrupted, never started", got.State, got.EndedAt, got.StartedAt, got.Pid)
	}
	if recs, _ := g2.list("state=interrupted"); !slices.Equal(ids(recs), []string{queued.ID, rec.ID}) {
		t.Errorf("state=interrupted: %v", ids(recs))
	}
	// The new instance has its slot back.
	again := g2.detach("/v1/commands/echo/run?text=after")
	g2.waitJob(again.ID, "succeeded")
	// The interrupted job is ended: it can be deleted.
	if resp, body := g2.do("DELETE", "/v1/jobs/"+rec.ID, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE of the interrupted job = %d %s", resp.StatusCode, body)
	}
	g2.stop()
}

// TestJobAPIBadInput: bad job ids, filters and pagination are 4xx JSON,
// never 5xx.
func TestJobAPIBadInput(t *testing.T) {
	g := startGateway(t, jobsConfig)
	ended := g.detach("/v1/commands/echo/run?text=x")
	g.waitJob(ended.ID, "succeeded")
	const unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/jobs/" + unknown, 404, "not_found"},
		{"GET", "/v1/jobs/" + strings.ToLower(ended.ID), 404, "not_found"},
		{"GET", "/v1/jobs/nope", 404, "not_found"},
		{"GET", "/v1/jobs/" + ended.ID + "x", 404, "not_found"},
		{"GET", "/v1/jobs/" + strings.Repeat("A", 5000), 404, "not_found"},
		{"GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", 404, "not_found"},
		{"GET", "/v1/jobs/%00", 404, "not_found"},
		{"GET", "/v1/jobs/" + unknown + "/stdout", 404, "not_found"},
		{"GET", "/v1/jobs/" + unknown + "/stderr?follow=true", 404, "not_found"},
		{"GET", "/v1/jobs/" + unknown + "/events", 404, "not_found"},
		{"GET", "/v1/jobs/nope/stdout", 404, "not_found"},
		{"POST", "/v1/jobs/" + unknown + "/cancel", 404, "not_found"},
		{"POST", "/v1/jobs/nope/cancel", 404, "not_found"},
		{"DELETE", "/v1/jobs/" + unknown, 404, "not_found"},
		{"DELETE", "/v1/jobs/nope", 404, "not_found"},
		{"GET", "/v1/jobs/" + ended.ID + "/stdout?follow=maybe", 400, "invalid_argument"},
		{"GET", "/v1/jobs?state=bogus", 400, "invalid_argument"},
		{"GET", "/v1/jobs?state=", 400, "invalid_argument"},
		{"GET", "/v1/jobs?state=RUNNING", 400, "invalid_argument"},
		{"GET", "/v1/jobs?state=running&state=queued", 400, "invalid_argument"},
		{"GET", "/v1/jobs?command=nope", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=0", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=-1", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=abc", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=100000", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=99999999999999999999999", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=1.5", 400, "invalid_argument"},
		{"GET", "/v1/jobs?after=garbage", 400, "invalid_argument"},
		{"GET", "/v1/jobs?after=", 400, "invalid_argument"},
		{"GET", "/v1/jobs?after=" + strings.ToLower(unknown), 400, "invalid_argument"},
		{"GET", "/v1/jobs?after=" + url.QueryEscape("../../x"), 400, "invalid_argument"},
		{"GET", "/v1/jobs?after=ZZZZZZZZZZZZZZZZZZZZZZZZZZ", 400, "invalid_argument"},
		{"GET", "/v1/jobs?bogus=1", 400, "invalid_argument"},
		{"GET", "/v1/jobs?page=2", 400, "invalid_argument"},
		{"GET", "/v1/jobs?limit=%zz", 400, "invalid_argument"},
		{"GET", "/v1/jobs?state=running;limit=2", 400, "invalid_argument"},
		{"PUT", "/v1/jobs/" + ended.ID, 405, "method_not_allowed"},
		{"GET", "/v1/jobs/" + ended.ID + "/cancel", 405, "method_not_allowed"},
	}
	for _, tc := range tests {
		resp, body := g.do(tc.method, tc.path, nil)
		wantError(t, tc.method+" "+tc.path, resp, body, tc.status, tc.code)
	}
	// Valid edges are fine.
	for _, q := range []string{"limit=1", "limit=1000", "after=" + unknown, "state=interrupted", "command=echo&state=queued"} {
		if resp, body := g.do("GET", "/v1/jobs?"+q, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /v1/jobs?%s = %d %s", q, resp.StatusCode, body)
		}
	}
	if lines := g.log.lines(`"status":5`); len(lines) != 0 {
		t.Errorf("5xx answers: %v", lines)
	}
	if rec := g.job(ended.ID); rec.State != "succeeded" {
		t.Errorf("the ended job changed: %s", rec.State)
	}
	g.stop()
}

// TestDetachedStdin: a detached run of a stdin: body command gets the
// request body, spooled, and the spool file is let go once the job ends.
func TestDetachedStdin(t *testing.T) {
	g := startGateway(t, jobsConfig+`
  cat:
    argv: ["cat"]
    stdin: body
`)
	const input = "first line\nsecond line\n"
	var jobIDs []string
	for range 3 {
		resp, body := g.do("POST", "/v1/commands/cat/run", strings.NewReader(input), "Prefer", "respond-async")
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("detached stdin run = %d %s", resp.StatusCode, body)
		}
		jobIDs = append(jobIDs, decode[record](t, body).ID)
	}
	for _, id := range jobIDs {
		g.waitJob(id, "succeeded")
		if out := g.output(id, "stdout"); out != input {
			t.Errorf("stdout %q, want the request body %q", out, input)
		}
	}
	waitFor(t, 5*time.Second, "the spooled bodies to be closed", func() bool {
		return len(spoolFDs(t, g.cmd.Process.Pid)) == 0
	})
	g.stop()
}

// spoolFDs lists the gateway's descriptors open on spooled request bodies.
func spoolFDs(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.Contains(target, "/spool/stdin-") {
			out = append(out, target)
		}
	}
	return out
}

// TestJobEvents: GET /v1/jobs/{id}/events replays and follows a detached
// job's output as events, then sends the exit event with the record.
func TestJobEvents(t *testing.T) {
	g := startGateway(t, jobsConfig)
	rec := g.detach("/v1/commands/printer/run?n=5")
	resp, err := http.Get(g.URL + "/v1/jobs/" + rec.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var stdout []string
	var exit string
	for _, ev := range strings.Split(string(body), "\n\n") {
		name, data := "", ""
		for _, line := range strings.Split(ev, "\n") {
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				data = v
			}
		}
		switch name {
		case "stdout":
			stdout = append(stdout, data)
		case "exit":
			exit = data
		}
	}
	if want := []string{"line 1", "line 2", "line 3", "line 4", "line 5"}; !slices.Equal(stdout, want) {
		t.Errorf("stdout events %q, want %q", stdout, want)
	}
	if got := decode[record](t, []byte(exit)); got.ID != rec.ID || got.State != "succeeded" {
		t.Errorf("exit event %q", exit)
	}
	g.stop()
}

// TestFullDisk: a job whose output fills the state directory's file system
// runs to its end; its record says the output was cut and why, and the
// gateway keeps answering. (A job started while the disk is full cannot
// store its record at all: that is another matter, not tested here.)
// fullDiskOutput is what the command flood writes: more than the state
// directory of startOnSmallDisk holds.
const fullDiskOutput = 4 << 20 // four times the file system

// startOnSmallDisk starts a gateway whose state directory is a 1 MiB
// tmpfs, with a command flood that writes four times that much.
func startOnSmallDisk(t *testing.T) *gateway {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", state, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs as the state directory (needs root or CAP_SYS_ADMIN): %v", err)
	}
	// Registered first, so it runs after the gateway is stopped.
	t.Cleanup(func() {
		if err := syscall.Unmount(state, 0); err != nil {
			t.Errorf("unmount %s: %v", state, err)
		}
	})
	g := startGateway(t, fmt.Sprintf(`
commands:
  flood:
    argv: ["sh", "-c", "head -c %d /dev/zero; echo done"]
  echo:
    argv: ["echo", "{text}"]
    params:
      text: {max_len: 100, required: true}
`, fullDiskOutput), gatewayOptions{dir: dir})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.log.String())
		}
	})
	return g
}

func TestFullDisk(t *testing.T) {
	const size = fullDiskOutput
	g := startOnSmallDisk(t)
	rec := g.detach("/v1/commands/flood/run")
	rec = g.waitJob(rec.ID, "succeeded")
	if rec.StdoutBytes != size+int64(len("done\n")) || !rec.StdoutTruncated {
		t.Errorf("stdout_bytes %d truncated %v, want every byte counted and truncated", rec.StdoutBytes, rec.StdoutTruncated)
	}
	if rec.OutputError == nil || *rec.OutputError != "stdout: no space left on device" {
		t.Errorf("output_error %v, want \"stdout: no space left on device\"", rec.OutputError)
	}
	if n := len(g.log.lines(`"message":"job output not stored"`, rec.ID)); n != 1 {
		t.Errorf("the failure logged %d times, want once:\n%s", n, g.log.String())
	}

	resp, body := g.do("GET", "/healthz", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with a full disk = %d %s", resp.StatusCode, body)
	}
	resp, body = g.do("GET", "/v1/jobs", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), rec.ID) {
		t.Errorf("GET /v1/jobs with a full disk = %d %s, want the job listed", resp.StatusCode, body)
	}
	if out := g.output(rec.ID, "stdout"); len(out) == 0 || len(out) >= size {
		t.Errorf("stored stdout %d bytes, want what fitted", len(out))
	}
	g.stop()
}

// A job whose record cannot be stored (the disk is full) is refused with a
// 503, whatever the mode, and leaves nothing running: a job the gateway
// acknowledged is a job it has recorded.
func TestFullDiskRefusesNewJobs(t *testing.T) {
	g := startOnSmallDisk(t)
	g.waitJob(g.detach("/v1/commands/flood/run").ID, "succeeded")

	path := "/v1/commands/echo/run?text=hello"
	for _, mode := range []struct {
		name   string
		header []string
	}{
		{"bound", nil},
		{"detached", []string{"Prefer", "respond-async"}},
		{"raw stream", []string{"Accept", "application/octet-stream"}},
	} {
		resp, body := g.do("POST", path, nil, mode.header...)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s run with the disk full: %d %s (Retry-After %q), want 503 with Retry-After",
				mode.name, resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
		if id := resp.Header.Get("Execgw-Job-Id"); id != "" {
			if resp, _ := g.do("GET", "/v1/jobs/"+id, nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s run: the refused job %s answers %d, want 404", mode.name, id, resp.StatusCode)
			}
		}
	}
	// The operator learns why.
	if n := len(g.log.lines(`"level":"error"`, "no space left on device", `job`)); n == 0 {
		t.Errorf("no error line says the disk is full")
	}
	g.stop()
}
