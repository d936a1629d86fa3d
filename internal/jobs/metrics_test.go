package jobs_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/execgw/execgw/internal/jobs"
)

// scrape serves the registry's metrics as /metrics does and returns the
// exposition's samples, "name{labels}" to value, labels as exposed.
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(e.metrics, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		e.t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	samples := map[string]float64{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			e.t.Fatalf("sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// TestMetrics: after real runs, /metrics carries every job series of the
// contract with the values the runs produced.
func TestMetrics(t *testing.T) {
	e := newEnv(t, jobs.Limits{MaxConcurrent: 1, MaxQueued: 5, OutputLimit: 1 << 20})
	g := newGate(t)
	gated := e.submit(gatedCommand("gated", g, ""), true)
	queued := e.submit(command("echo", "echo hi; echo err >&2"), true)
	// The queued job waits at least this long for its slot.
	const wait = 100 * time.Millisecond
	time.Sleep(wait)
	if got := e.scrape(); got["execgw_jobs_queued"] != 1 || got["execgw_jobs_running"] != 1 {
		t.Errorf("while one runs and one waits: queued %v running %v, want 1 1", got["execgw_jobs_queued"], got["execgw_jobs_running"])
	}
	g.open(t)
	waitDone(t, gated)
	waitDone(t, queued)

	user := e.submit(command("sleep", "echo started; sleep 300"), true)
	e.waitOutput(user, "started")
	if _, err := e.reg.Cancel(context.Background(), user.ID(), jobs.ReasonUser); err != nil {
		t.Fatal(err)
	}
	slow := command("slow", "sleep 300")
	slow.Timeout = 50 * time.Millisecond
	waitDone(t, e.submit(slow, true))

	got := e.scrape()
	want := map[string]float64{
		`execgw_jobs_started_total{command="gated"}`:                   1,
		`execgw_jobs_started_total{command="echo"}`:                    1,
		`execgw_jobs_started_total{command="sleep"}`:                   1,
		`execgw_jobs_finished_total{command="echo",state="succeeded"}`: 1,
		`execgw_jobs_finished_total{command="sleep",state="canceled"}`: 1,
		`execgw_jobs_finished_total{command="slow",state="timed_out"}`: 1,
		`execgw_jobs_running`:                                          0,
		`execgw_jobs_queued`:                                           0,
		`execgw_job_duration_seconds_count{command="echo"}`:            1,
		`execgw_job_duration_seconds_count{command="slow"}`:            1,
		`execgw_job_queue_wait_seconds_count{command="echo"}`:          1,
		`execgw_job_queue_wait_seconds_count{command="gated"}`:         1,
		`execgw_cancel_seconds_count{reason="user"}`:                   1,
		`execgw_cancel_seconds_count{reason="timeout"}`:                1,
		`execgw_output_bytes_total{command="echo",stream="stdout"}`:    3,
		`execgw_output_bytes_total{command="echo",stream="stderr"}`:    4,
		`execgw_output_bytes_total{command="gated",stream="stdout"}`:   float64(len("started\n")),
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if s := got[`execgw_job_queue_wait_seconds_sum{command="echo"}`]; s < wait.Seconds() {
		t.Errorf("queue wait of the job that waited: %vs, want at least %v", s, wait)
	}
	// Generous: the machine may be slow to fork, but the job never queued.
	if s := got[`execgw_job_queue_wait_seconds_sum{command="gated"}`]; s < 0 || s >= 5 {
		t.Errorf("queue wait of the job that started at once: %vs, want its start latency only", s)
	}
	if s := got[`execgw_cancel_seconds_sum{reason="user"}`]; s <= 0 || s > waitLong.Seconds() {
		t.Errorf("cancel_seconds of the user cancel: %vs", s)
	}
	// Label values come from the configuration, never the request.
	var series bytes.Buffer
	for k := range got {
		if strings.HasPrefix(k, "execgw_") {
			series.WriteString(k + "\n")
		}
	}
	if strings.Contains(series.String(), user.ID()) {
		t.Errorf("a job id among the labels:\n%s", series.String())
	}
}
