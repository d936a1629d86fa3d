package handler

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobstore"
)

// streamTestConfig holds the commands of the streaming tests. Scripts are
// literal blocks, so no quoting stands between the test and the shell.
const streamTestConfig = `
max_body: 16MiB
commands:
  lines:
    argv:
      - sh
      - -c
      - |
        printf 'one\ntwo\n'
        printf 'err1\nerr2\n' >&2
        printf 'cr\r\nx\ry\n'
        head -c 100000 /dev/zero | tr '\0' a
        echo
        printf 'bad\377\376byte\n'
        printf last
  follow:
    argv:
      - sh
      - -c
      - |
        echo one
        echo e1 >&2
        while [ ! -e "$0" ]; do sleep 0.02; done
        echo two
        printf three
      - "{flag}"
    params:
      flag: {required: true}
  ticks:
    argv: ["sh", "-c", 'i=0; while [ $i -lt 15 ]; do echo $i; i=$((i+1)); sleep 0.1; done']
  silent:
    argv: ["sleep", "1"]
  endless:
    argv: ["cat", "/dev/zero"]
    kill_grace: 1s
  wc:
    argv: ["wc", "-c"]
    stdin: body
  cat:
    argv: ["cat"]
    stdin: body
`

// testServer is the whole API behind a real loopback server, with a real
// registry, a bbolt store and output files in a temporary directory, and
// real processes.
type testServer struct {
	*httptest.Server
	reg *jobs.Registry
	dir string
}

func newTestServer(t *testing.T, yaml string) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "config.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	store, err := jobstore.OpenBolt(filepath.Join(dir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	output, err := jobstore.NewFiles(filepath.Join(dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	reg := jobs.New(jobs.Options{
		Store:  store,
		Output: output,
		Log:    log,
		Limits: jobs.Limits{
			MaxConcurrent: cfg.MaxConcurrent,
			MaxQueued:     cfg.MaxQueued,
			OutputLimit:   cfg.OutputLimit,
			Retention:     cfg.Retention,
		},
	})
	srv := httptest.NewServer(New(Options{
		Config:   cfg,
		Jobs:     reg,
		Log:      log,
		Metrics:  prometheus.NewRegistry(),
		SpoolDir: spool,
	}))
	t.Cleanup(func() {
		srv.Close() // ends bound runs: their clients are gone
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no grace: cancel detached jobs at once
		reg.Shutdown(ctx)
		reg.Close()
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	return &testServer{Server: srv, reg: reg, dir: dir}
}

// request sends a request and returns the response with its body unread;
// the body is closed at the end of the test.
func (s *testServer) request(t *testing.T, ctx context.Context, method, path string, body io.Reader, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// waitJob polls the registry until the job's record satisfies cond.
func (s *testServer) waitJob(t *testing.T, id string, timeout time.Duration, what string, cond func(jobs.Record) bool) jobs.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rec, err := s.reg.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("get job %s: %v", id, err)
		}
		if cond(rec) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: timed out after %v waiting for %s; record %+v", id, timeout, what, rec)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ended(rec jobs.Record) bool { return rec.State.Ended() }

// setForTest changes a package variable for the duration of the test.
func setForTest[T any](t *testing.T, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// sseEvent is one Server-Sent Event; a comment has name ":" and its text
// as data.
type sseEvent struct {
	name, data string
}

// sseReader is a minimal Server-Sent Events parser (WHATWG HTML, "event
// stream interpretation"), enough for execgw's streams: fields event and
// data, data lines joined with "\n", comments reported as events.
type sseReader struct {
	r *bufio.Reader
}

func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: bufio.NewReader(r)} }

// next returns the next event or comment; io.EOF at a clean end of stream.
func (s *sseReader) next() (sseEvent, error) {
	var (
		ev   sseEvent
		data []string
		seen bool
	)
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && (seen || line != "") {
				err = io.ErrUnexpectedEOF // an event must end with a blank line
			}
			return sseEvent{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if seen {
				ev.data = strings.Join(data, "\n")
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
			if !seen {
				return sseEvent{name: ":", data: strings.TrimPrefix(line[1:], " ")}, nil
			}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			seen = true
			switch field {
			case "event":
				ev.name = value
			case "data":
				data = append(data, value)
			}
		}
	}
}

// nextEvent skips comments.
func (s *sseReader) nextEvent() (sseEvent, error) {
	for {
		ev, err := s.next()
		if err != nil || ev.name != ":" {
			return ev, err
		}
	}
}

// readAll returns every event up to the end of the stream, comments
// skipped, and fails the test if the stream ends badly.
func (s *sseReader) readAll(t *testing.T) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for {
		ev, err := s.nextEvent()
		if err == io.EOF {
			return evs
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
}

// byStream returns the data of the events with the given name, in order.
func byStream(evs []sseEvent, name string) []string {
	var out []string
	for _, ev := range evs {
		if ev.name == name {
			out = append(out, ev.data)
		}
	}
	return out
}

// exitRecord checks that the stream ended with exactly one exit event, the
// last one, and returns its record.
func exitRecord(t *testing.T, evs []sseEvent) jobs.Record {
	t.Helper()
	if len(evs) == 0 || evs[len(evs)-1].name != "exit" {
		t.Fatalf("the stream does not end with an exit event: %v", names(evs))
	}
	if n := len(byStream(evs, "exit")); n != 1 {
		t.Fatalf("%d exit events, want 1", n)
	}
	// The API's record has the stored form's keys, less some.
	rec, err := jobstore.DecodeRecord([]byte(evs[len(evs)-1].data))
	if err != nil {
		t.Fatalf("exit event data %q: %v", evs[len(evs)-1].data, err)
	}
	return rec
}

func names(evs []sseEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.name
	}
	return out
}

func TestEventsOfBoundRun(t *testing.T) {
	s := newTestServer(t, streamTestConfig)
	resp := s.request(t, context.Background(), "POST", "/v1/commands/lines/run", nil, "Accept", "text/event-stream")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	id := resp.Header.Get(headerJobID)
	if id == "" {
		t.Errorf("no %s header", headerJobID)
	}
	evs := newSSEReader(resp.Body).readAll(t)

	want := []string{
		"one", "two",
		"cr",                                                            // CRLF ends a line like LF
		"x\ny",                                                          // a lone CR inside a line starts a new data line
		strings.Repeat("a", 64<<10), strings.Repeat("a", 100000-64<<10), // pieces of 64 KiB
		"bad\uFFFDbyte", // invalid UTF-8 replaced
		"last",          // the final unterminated line as it is
	}
	got := byStream(evs, "stdout")
	if len(got) != len(want) {
		t.Errorf("%d stdout events, want %d: %q", len(got), len(want), abbreviate(got))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("stdout event %d = %q, want %q", i, abbreviate(got[i:i+1]), abbreviate(want[i:i+1]))
		}
	}
	if got := byStream(evs, "stderr"); strings.Join(got, "|") != "err1|err2" {
		t.Errorf("stderr events %q, want err1, err2", got)
	}
	rec := exitRecord(t, evs)
	if rec.ID != id || rec.State != jobs.Succeeded || rec.ExitCode == nil || *rec.ExitCode != 0 {
		t.Errorf("exit record %+v, want job %s succeeded with 0", rec, id)
	}
	if want := int64(len("one\ntwo\ncr\r\nx\ry\n") + 100001 + len("bad\377\376byte\n") + len("last")); rec.StdoutBytes != want {
		t.Errorf("exit record stdout_bytes %d, want %d", rec.StdoutBytes, want)
	}
}

func abbreviate(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		if len(s) > 40 {
			s = fmt.Sprintf("%s...(%d bytes)", s[:20], len(s))
		}
		out[i] = s
	}
	return out
}

// TestEventsOfDetachedJobReplayThenFollow: GET /v1/jobs/{id}/events sends
// what the job wrote before the request, then what it writes afterwards,
// keep-alive comments while it is silent, and the exit event at its end.
func TestEventsOfDetachedJobReplayThenFollow(t *testing.T) {
	setForTest(t, &keepAliveEvery, 50*time.Millisecond)
	s := newTestServer(t, streamTestConfig)
	flag := filepath.Join(t.TempDir(), "flag")
	resp := s.request(t, context.Background(), "POST", "/v1/commands/follow/run?flag="+flag, nil, "Prefer", "respond-async")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	id := resp.Header.Get(headerJobID)
	s.waitJob(t, id, 10*time.Second, "its first output", func(r jobs.Record) bool {
		return r.StdoutBytes == 4 && r.StderrBytes == 3
	})

	events := s.request(t, context.Background(), "GET", "/v1/jobs/"+id+"/events", nil)
	if events.StatusCode != http.StatusOK || events.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: status %d, Content-Type %q", events.StatusCode, events.Header.Get("Content-Type"))
	}
	sse := newSSEReader(events.Body)
	var replayed []sseEvent
	comments := 0
	for len(replayed) < 2 || comments == 0 {
		ev, err := sse.next()
		if err != nil {
			t.Fatalf("replay: %v after %v", err, replayed)
		}
		if ev.name == ":" {
			comments++
			continue
		}
		replayed = append(replayed, ev)
	}
	if got := byStream(replayed, "stdout"); len(got) != 1 || got[0] != "one" {
		t.Errorf("replayed stdout %q, want one", got)
	}
	if got := byStream(replayed, "stderr"); len(got) != 1 || got[0] != "e1" {
		t.Errorf("replayed stderr %q, want e1", got)
	}

	// The job is still waiting for the flag: what follows is live.
	if rec := s.waitJob(t, id, time.Second, "", func(jobs.Record) bool { return true }); rec.State != jobs.Running {
		t.Fatalf("job %s before the flag, want running", rec.State)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	live := sse.readAll(t)
	if got := byStream(live, "stdout"); strings.Join(got, "|") != "two|three" {
		t.Errorf("live stdout %q, want two, three", got)
	}
	if rec := exitRecord(t, live); rec.ID != id || rec.State != jobs.Succeeded {
		t.Errorf("exit record %+v, want job %s succeeded", rec, id)
	}

	// Once the job has ended, the events are a replay and the exit.
	again := newSSEReader(s.request(t, context.Background(), "GET", "/v1/jobs/"+id+"/events", nil).Body).readAll(t)
	if got := byStream(again, "stdout"); strings.Join(got, "|") != "one|two|three" {
		t.Errorf("replayed stdout of the ended job %q", got)
	}
	if got := byStream(again, "stderr"); strings.Join(got, "|") != "e1" {
		t.Errorf("replayed stderr of the ended job %q", got)
	}
	exitRecord(t, again)
}

// TestOutputFollow: GET /v1/jobs/{id}/stdout?follow=true streams the
// stored output, then what comes, until the job ends.
func TestOutputFollow(t *testing.T) {
	s := newTestServer(t, streamTestConfig)
	flag := filepath.Join(t.TempDir(), "flag")
	resp := s.request(t, context.Background(), "POST", "/v1/commands/follow/run?flag="+flag, nil, "Prefer", "respond-async")
	id := resp.Header.Get(headerJobID)
	s.waitJob(t, id, 10*time.Second, "its first output", func(r jobs.Record) bool { return r.StdoutBytes == 4 })

	out := s.request(t, context.Background(), "GET", "/v1/jobs/"+id+"/stdout?follow=true", nil)
	r := bufio.NewReader(out.Body)
	line, err := r.ReadString('\n')
	if err != nil || line != "one\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "two\nthree" {
		t.Errorf("rest %q, %v; want %q", rest, err, "two\nthree")
	}
}

// TestStuckClientIsCanceled: a client that stops reading a raw stream is
// treated as gone once a write has waited streamWriteTimeout, and the
// whole tree is killed.
func TestStuckClientIsCanceled(t *testing.T) {
	setForTest(t, &streamWriteTimeout, time.Second)
	s := newTestServer(t, streamTestConfig)
	for _, accept := range []string{"application/octet-stream", "text/event-stream"} {
		t.Run(accept, func(t *testing.T) {
			resp := s.request(t, context.Background(), "POST", "/v1/commands/endless/run", nil, "Accept", accept)
			id := resp.Header.Get(headerJobID)
			if resp.StatusCode != http.StatusOK || id == "" {
				t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
			}
			// Never read the body: socket buffers fill, then writes block.
			rec := s.waitJob(t, id, 30*time.Second, "the job to end", ended)
			if rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonClientDisconnected {
				t.Errorf("job %s %q, want canceled client_disconnected", rec.State, rec.CancelReason)
			}
			if err := syscall.Kill(-rec.Pgid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process group %d still exists (kill 0: %v)", rec.Pgid, err)
			}
		})
	}
}

// TestStreamOutlivesWriteTimeout: the write deadline is per write, so a
// stream that lasts many times streamWriteTimeout, or a process silent for
// longer than it, is not cut.
func TestStreamOutlivesWriteTimeout(t *testing.T) {
	setForTest(t, &streamWriteTimeout, 300*time.Millisecond)
	setForTest(t, &keepAliveEvery, 100*time.Millisecond)
	s := newTestServer(t, streamTestConfig)

	resp := s.request(t, context.Background(), "POST", "/v1/commands/ticks/run", nil, "Accept", "text/plain")
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	want := ""
	for i := range 15 {
		want += strconv.Itoa(i) + "\n"
	}
	if string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
	if st := resp.Trailer.Get(trailerState); st != "succeeded" {
		t.Errorf("trailer %s %q, want succeeded", trailerState, st)
	}

	for _, accept := range []string{"text/plain", "text/event-stream"} {
		resp := s.request(t, context.Background(), "POST", "/v1/commands/silent/run", nil, "Accept", accept)
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: read stream: %v", accept, err)
		}
		if accept == "text/plain" {
			if len(body) != 0 || resp.Trailer.Get(trailerState) != "succeeded" {
				t.Errorf("%s: body %q trailers %v", accept, body, resp.Trailer)
			}
			continue
		}
		sse := newSSEReader(strings.NewReader(string(body)))
		comments := 0
		var evs []sseEvent
		for {
			ev, err := sse.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.name == ":" {
				comments++
				continue
			}
			evs = append(evs, ev)
		}
		if rec := exitRecord(t, evs); rec.State != jobs.Succeeded {
			t.Errorf("%s: exit record %+v", accept, rec)
		}
		if comments == 0 {
			t.Errorf("%s: no keep-alive comment in a second of silence", accept)
		}
	}
}

// TestRefusedStreamAnswersJSON: when no job starts (here: draining), a run
// that asked for a stream gets the contract's JSON error, not a JSON body
// labelled as a stream, and no trailers are announced.
func TestRefusedStreamAnswersJSON(t *testing.T) {
	s := newTestServer(t, streamTestConfig)
	s.reg.Drain()
	for _, accept := range []string{"application/octet-stream", "text/plain", "text/event-stream", "application/json"} {
		resp := s.request(t, context.Background(), "POST", "/v1/commands/lines/run", nil, "Accept", accept)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503", accept, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q, want application/json", accept, ct)
		}
		var e errorBody
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != codeUnavailable {
			t.Errorf("%s: body %q, want code %s", accept, body, codeUnavailable)
		}
		if resp.Header.Get("Trailer") != "" || resp.Header.Get(headerJobID) != "" || resp.Header.Get("Cache-Control") != "" {
			t.Errorf("%s: stream headers on an error: %v", accept, resp.Header)
		}
	}
}

// countingReader produces n bytes of a fixed pattern without holding
// them, and remembers how far it got.
type countingReader struct {
	n, read int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.read)]
	for i := range p {
		p[i] = byte('a' + (r.read+int64(i))%26)
	}
	r.read += int64(len(p))
	return len(p), nil
}

// TestStreamedRunReadsWholeBody: a raw or SSE run of a stdin command
// begins its response while its body is still arriving. The whole body
// must reach the process: net/http would otherwise consume (and discard)
// what is left of the body when the headers go out.
func TestStreamedRunReadsWholeBody(t *testing.T) {
	s := newTestServer(t, streamTestConfig)
	for _, tc := range []struct {
		accept  string
		size    int64
		chunked bool
	}{
		{"application/octet-stream", 8 << 20, true},
		{"application/octet-stream", 100 << 10, false},
		{"text/event-stream", 8 << 20, true},
		{"text/event-stream", 100 << 10, false},
	} {
		t.Run(fmt.Sprintf("%s/%d/chunked=%v", tc.accept, tc.size, tc.chunked), func(t *testing.T) {
			req, err := http.NewRequest("POST", s.URL+"/v1/commands/wc/run", &countingReader{n: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.size
			if tc.chunked {
				req.ContentLength = -1
			}
			req.Header.Set("Accept", tc.accept)
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			want := strconv.FormatInt(tc.size, 10)
			if tc.accept == "text/event-stream" {
				evs := newSSEReader(resp.Body).readAll(t)
				if got := byStream(evs, "stdout"); len(got) != 1 || got[0] != want {
					t.Errorf("stdout events %q, want %s", got, want)
				}
				if rec := exitRecord(t, evs); rec.State != jobs.Succeeded {
					t.Errorf("exit record %+v", rec)
				}
				return
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(body)) != want {
				t.Errorf("wc -c says %q, want %s", body, want)
			}
			if resp.Trailer.Get(trailerState) != "succeeded" {
				t.Errorf("trailers %v", resp.Trailer)
			}
		})
	}
}

// TestRawStreamEchoesBody: cat with stdin from the body, streamed both
// ways at once (full duplex), byte-exact.
func TestRawStreamEchoesBody(t *testing.T) {
	s := newTestServer(t, streamTestConfig)
	const size = 4 << 20
	req, _ := http.NewRequest("POST", s.URL+"/v1/commands/cat/run", &countingReader{n: size})
	req.ContentLength = -1
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(&countingReader{n: size})
	if string(got) != string(want) {
		t.Errorf("echoed %d bytes, want the %d sent", len(got), size)
	}
	if resp.Trailer.Get(trailerExit) != "0" || resp.Trailer.Get(trailerState) != "succeeded" {
		t.Errorf("trailers %v", resp.Trailer)
	}
}

// memWriter is a ResponseWriter that keeps what is written and whose
// flushes fail with flushErr.
type memWriter struct {
	header   http.Header
	body     strings.Builder
	flushErr error
}

func (m *memWriter) Header() http.Header {
	if m.header == nil {
		m.header = http.Header{}
	}
	return m.header
}
func (m *memWriter) Write(p []byte) (int, error)      { return m.body.Write(p) }
func (m *memWriter) WriteHeader(int)                  {}
func (m *memWriter) FlushError() error                { return m.flushErr }
func (m *memWriter) SetWriteDeadline(time.Time) error { return nil }

// TestStreamWriterSeesFlushErrors: Echo's Response.Flush swallows the
// error of the flush; the stream writer must not go through it.
func TestStreamWriterSeesFlushErrors(t *testing.T) {
	broken := errors.New("broken pipe")
	mw := &memWriter{}
	w := newStreamWriter(echo.NewResponse(mw, echo.New()))
	if err := w.commit(); err != nil {
		t.Fatalf("commit = %v", err)
	}
	mw.flushErr = broken
	if _, err := w.Write([]byte("data")); !errors.Is(err, broken) {
		t.Errorf("Write = %v, want the flush error", err)
	}
	select {
	case <-w.failed:
	default:
		t.Errorf("failed is not closed after a failed flush")
	}
	if _, err := w.Write([]byte("more")); !errors.Is(err, broken) {
		t.Errorf("later Write = %v, want the first error", err)
	}
}

// TestLineEvents checks how output, however the pipe cuts it, becomes
// events: one per line, long lines in pieces of maxEventLine bytes (never
// splitting a character), nothing empty made up at a piece's end.
func TestLineEvents(t *testing.T) {
	const max = maxEventLine
	a := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"lines", []string{"one\ntwo\n"}, []string{"one", "two"}},
		{"split line", []string{"o", "ne\nt", "wo\n"}, []string{"one", "two"}},
		{"final unterminated", []string{"one\ntw", "o"}, []string{"one", "two"}},
		{"empty lines", []string{"\n\nx\n"}, []string{"", "", "x"}},
		{"crlf", []string{"one\r\ntwo\r", "\n"}, []string{"one", "two"}},
		{"exactly max", []string{a(max) + "\n"}, []string{a(max)}},
		{"exactly max, newline later", []string{a(max / 2), a(max / 2), "\n", "b\n"}, []string{a(max), "b"}},
		{"exactly max, unterminated", []string{a(max / 2), a(max / 2)}, []string{a(max)}},
		{"max plus one", []string{a(max+1) + "\n"}, []string{a(max), "a"}},
		{"long line", []string{a(100000) + "\nb\n"}, []string{a(max), a(100000 - max), "b"}},
		{"long line in writes", []string{a(60000), a(10000) + "\n"}, []string{a(max), a(70000 - max)}},
		{"two pieces exactly", []string{a(2 * max), "\n"}, []string{a(max), a(max)}},
		{"no newline at all", []string{a(3*max + 5)}, []string{a(max), a(max), a(max), a(5)}},
		{"character at the cut", []string{a(max-1) + "é" + "b\n"}, []string{a(max - 1), "éb"}},
		{"4-byte character at the cut", []string{a(max - 2), "😀", "\n"}, []string{a(max - 2), "😀"}},
		{"invalid utf-8", []string{"a\xff\xfeb\n"}, []string{"a\uFFFDb"}},
		{"invalid utf-8 at the cut", []string{a(max-1) + "\xff\xffb\n"}, []string{a(max-1) + "\uFFFD", "\uFFFDb"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mw := &memWriter{}
			sse := &sseWriter{streamWriter: newStreamWriter(mw)}
			lines := &lineEvents{sse: sse, name: "stdout"}
			if err := sse.commit(); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.writes {
				if n, err := lines.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := lines.flush(); err != nil {
				t.Fatal(err)
			}
			evs := newSSEReader(strings.NewReader(mw.body.String())).readAll(t)
			got := byStream(evs, "stdout")
			if len(got) != len(evs) {
				t.Errorf("events %v, want stdout only", names(evs))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("events %q, want %q", abbreviate(got), abbreviate(tc.want))
			}
			for i, d := range got {
				if len(d) > max+len("\uFFFD") || !utf8.ValidString(d) {
					t.Errorf("event %d: %d bytes, valid UTF-8 %v", i, len(d), utf8.ValidString(d))
				}
			}
		})
	}
}
