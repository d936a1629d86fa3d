package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/execgw/execgw/internal/jobs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testToken = "s3cret"
	testJobID = "01JD0000000000000000000000"
	nextJobID = "01JC0000000000000000000000"
	slowJobID = "01JE0000000000000000000000"
)

var testCreated = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeGateway imitates the gateway's answers, as internal/handler gives
// them, closely enough for the client.
type fakeGateway struct {
	srv      *httptest.Server
	newConns atomic.Int32
	// disconnected is closed when the "hang" run sees its client go.
	disconnected chan struct{}
	// logGate lets a followed log go on to its second line.
	logGate chan struct{}

	mu     sync.Mutex
	auths  []string // Authorization of every request
	params map[string]string
	prefer string
	query  url.Values
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	g := &fakeGateway{disconnected: make(chan struct{}), logGate: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/commands/{name}/run", g.run)
	mux.HandleFunc("GET /v1/jobs", g.jobs)
	mux.HandleFunc("GET /v1/jobs/{id}/stdout", g.stdout)
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", g.cancel)
	g.srv = httptest.NewUnstartedServer(g.authenticate(mux))
	g.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			g.newConns.Add(1)
		}
	}
	g.srv.Start()
	t.Cleanup(g.srv.Close)
	return g
}

// newTestClient returns a client of g with the test token.
func newTestClient(t *testing.T, g *fakeGateway) *Client {
	t.Helper()
	c := New(g.srv.URL+"/", testToken)
	t.Cleanup(c.Close)
	return c
}

func (g *fakeGateway) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		g.mu.Lock()
		g.auths = append(g.auths, auth)
		g.mu.Unlock()
		if auth != "Bearer "+testToken {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *fakeGateway) run(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Params map[string]string `json:"params"`
	}
	if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&body) != nil {
		writeError(w, http.StatusBadRequest, "invalid_argument", "malformed JSON body")
		return
	}
	name := r.PathValue("name")
	g.mu.Lock()
	g.params, g.prefer = body.Params, r.Header.Get("Prefer")
	g.mu.Unlock()
	switch name {
	case "nope":
		writeError(w, http.StatusNotFound, "not_found", `command "nope" is not configured`)
		return
	case "proxied":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>\n")
		return
	}
	rec := jobs.Record{ID: testJobID, Command: name, Params: body.Params, State: jobs.Running, Pid: 42, CreatedAt: testCreated, StartedAt: testCreated}
	w.Header().Set("Execgw-Job-Id", testJobID)
	if r.Header.Get("Prefer") == "respond-async" {
		w.Header().Set("Location", "/v1/jobs/"+testJobID)
		writeJSON(w, http.StatusAccepted, rec)
		return
	}
	if r.Header.Get("Accept") != "text/event-stream" {
		writeError(w, http.StatusBadRequest, "invalid_argument", "the fake gateway only streams events")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(raw string) {
		_, _ = io.WriteString(w, raw)
		_ = rc.Flush()
	}
	exit := func(rec jobs.Record, code *int, signal string) {
		rec.ExitCode, rec.Signal, rec.EndedAt = code, signal, testCreated.Add(time.Second)
		switch {
		case code != nil && *code == 0:
			rec.State = jobs.Succeeded
		default:
			rec.State = jobs.Failed
		}
		b, _ := json.Marshal(rec)
		send("event: exit\ndata: " + string(b) + "\n\n")
	}
	switch name {
	case "echo":
		send("event: stdout\ndata: hello\n\n")
		send(": keep-alive\n\n")
		send("event: stderr\ndata: warning\n\n")
		send("event: stdout\ndata: \n\n")
		send("event: stdout\ndata: two\ndata: lines\n\n")
		send("event: progress\ndata: 50%\n\n")
		exit(rec, ptr(0), "")
	case "fail":
		send("event: stderr\ndata: boom\n\n")
		exit(rec, ptr(3), "")
	case "killed":
		exit(rec, nil, "SIGKILL")
	case "hang":
		send("event: stdout\ndata: started\n\n")
		<-r.Context().Done()
		close(g.disconnected)
	case "cut":
		send("event: stdout\ndata: partial\n\n")
	}
}

func (g *fakeGateway) jobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	g.mu.Lock()
	g.query = q
	g.mu.Unlock()
	switch q.Get("command") {
	case "slow": // the answer never comes
		<-r.Context().Done()
		return
	case "slowbody": // the headers come, the body never
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
		return
	}
	if s := q.Get("state"); s != "" && !jobs.State(s).Valid() {
		writeError(w, http.StatusBadRequest, "invalid_argument", "state "+s+" is not a state")
		return
	}
	code := 0
	list := []jobs.Record{
		{ID: testJobID, Command: "dd", State: jobs.Running, CreatedAt: testCreated},
		{ID: nextJobID, Command: "dd", State: jobs.Succeeded, ExitCode: &code, CreatedAt: testCreated},
	}
	if q.Get("limit") == "100" {
		// Sent chunked, the value flushed before its final newline: the
		// JSON decoder stops before the body's end, which closeBody must
		// read for the connection to be reused.
		for len(list) < 100 {
			list = append(list, list[1])
		}
		b, _ := json.Marshal(map[string]any{"jobs": list, "next": ""})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		_ = http.NewResponseController(w).Flush()
		_, _ = io.WriteString(w, "\n")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": list, "next": nextJobID})
}

func (g *fakeGateway) stdout(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id != testJobID && id != slowJobID {
		writeError(w, http.StatusNotFound, "not_found", "job not found")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.WriteString(w, "line 1\n")
	if r.URL.Query().Get("follow") != "true" {
		return
	}
	_ = http.NewResponseController(w).Flush()
	var more <-chan time.Time
	if id == slowJobID {
		more = time.After(300 * time.Millisecond)
	}
	select {
	case <-g.logGate:
	case <-more:
	case <-r.Context().Done():
		return
	}
	_, _ = io.WriteString(w, "line 2\n")
}

func (g *fakeGateway) cancel(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != testJobID {
		writeError(w, http.StatusNotFound, "not_found", "job not found")
		return
	}
	rec := jobs.Record{
		ID: testJobID, Command: "dd", State: jobs.Canceled, CancelReason: jobs.ReasonUser,
		Signal: "SIGTERM", CreatedAt: testCreated, StartedAt: testCreated, EndedAt: testCreated.Add(time.Second),
	}
	writeJSON(w, http.StatusOK, rec)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}

func ptr[T any](v T) *T { return &v }

func TestRunEvents(t *testing.T) {
	tests := []struct {
		command    string
		wantStdout []string
		wantStderr []string
		wantState  jobs.State
		wantExit   *int
		wantSignal string
	}{
		{"echo", []string{"hello", "", "two\nlines"}, []string{"warning"}, jobs.Succeeded, ptr(0), ""},
		{"fail", nil, []string{"boom"}, jobs.Failed, ptr(3), ""},
		{"killed", nil, nil, jobs.Failed, nil, "SIGKILL"},
	}
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	for _, tc := range tests {
		t.Run(tc.command, func(t *testing.T) {
			var stdout, stderr []string
			rec, err := c.Run(t.Context(), tc.command, map[string]string{"count": "1"}, false,
				func(line string) { stdout = append(stdout, line) },
				func(line string) { stderr = append(stderr, line) })
			if err != nil {
				t.Fatalf("Run(%q) error: %v", tc.command, err)
			}
			if !reflect.DeepEqual(stdout, tc.wantStdout) {
				t.Errorf("Run(%q) stdout = %q, want %q", tc.command, stdout, tc.wantStdout)
			}
			if !reflect.DeepEqual(stderr, tc.wantStderr) {
				t.Errorf("Run(%q) stderr = %q, want %q", tc.command, stderr, tc.wantStderr)
			}
			if rec.ID != testJobID || rec.State != tc.wantState || rec.Signal != tc.wantSignal || !reflect.DeepEqual(rec.ExitCode, tc.wantExit) {
				t.Errorf("Run(%q) = {id %s, state %s, exit %v, signal %q}, want {id %s, state %s, exit %v, signal %q}",
					tc.command, rec.ID, rec.State, deref(rec.ExitCode), rec.Signal, testJobID, tc.wantState, deref(tc.wantExit), tc.wantSignal)
			}
			g.mu.Lock()
			params, prefer := g.params, g.prefer
			g.mu.Unlock()
			if want := map[string]string{"count": "1"}; !reflect.DeepEqual(params, want) || prefer != "" {
				t.Errorf("gateway got params %v, Prefer %q; want %v, none", params, prefer, want)
			}
		})
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestRunDetached(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	called := false
	onLine := func(string) { called = true }
	rec, err := c.Run(t.Context(), "echo", map[string]string{"count": "3"}, true, onLine, onLine)
	if err != nil {
		t.Fatalf("Run detached: %v", err)
	}
	if rec.ID != testJobID || rec.State != jobs.Running || called {
		t.Errorf("Run detached = {id %s, state %s}, output callback called %v; want {id %s, state running}, not called",
			rec.ID, rec.State, called, testJobID)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if want := map[string]string{"count": "3"}; !reflect.DeepEqual(g.params, want) || g.prefer != "respond-async" {
		t.Errorf("gateway got params %v, Prefer %q; want %v, respond-async", g.params, g.prefer, want)
	}
}

func TestRunStreamEndsEarly(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	_, err := c.Run(t.Context(), "cut", nil, false, nil, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), testJobID) {
		t.Errorf("Run(cut) error = %v, want io.ErrUnexpectedEOF naming job %s", err, testJobID)
	}
}

// TestRunCancel is Ctrl-C: cancelling the context ends Run at once and
// closes the connection, which is how the gateway learns to kill the job.
func TestRunCancel(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := c.Run(ctx, "hang", nil, false, func(string) { cancel() }, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run(hang) after cancel: error = %v, want context.Canceled", err)
	}
	select {
	case <-g.disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not see the client go away")
	}
}

func TestJobs(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	filter := url.Values{"state": {"running"}, "command": {"dd"}, "limit": {"2"}}
	list, next, err := c.Jobs(t.Context(), filter)
	if err != nil {
		t.Fatalf("Jobs: %v", err)
	}
	var ids []string
	for _, r := range list {
		ids = append(ids, r.ID)
	}
	if want := []string{testJobID, nextJobID}; !reflect.DeepEqual(ids, want) || next != nextJobID {
		t.Errorf("Jobs() = %v, next %q; want %v, next %q", ids, next, want, nextJobID)
	}
	if list[1].ExitCode == nil || *list[1].ExitCode != 0 || list[0].ExitCode != nil {
		t.Errorf("Jobs() exit codes = %v, %v; want nil, 0", deref(list[0].ExitCode), deref(list[1].ExitCode))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !reflect.DeepEqual(g.query, filter) {
		t.Errorf("gateway got query %v, want %v", g.query, filter)
	}
}

// gateWriter collects a followed log and opens the gateway's gate once the
// first line has arrived: the second is sent only then, so the test shows
// that output is passed on while the response is still going.
type gateWriter struct {
	strings.Builder
	gate chan struct{}
	once sync.Once
}

func (w *gateWriter) Write(p []byte) (int, error) {
	n, err := w.Builder.Write(p)
	if strings.Contains(w.String(), "line 1\n") {
		w.once.Do(func() { close(w.gate) })
	}
	return n, err
}

func TestLogs(t *testing.T) {
	tests := []struct {
		name   string
		follow bool
		want   string
	}{
		{"stored", false, "line 1\n"},
		{"follow", true, "line 1\nline 2\n"},
	}
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			w := &gateWriter{gate: make(chan struct{})}
			if tc.follow {
				w.gate = g.logGate
			}
			if err := c.Logs(ctx, testJobID, tc.follow, w); err != nil {
				t.Fatalf("Logs(follow=%v): %v", tc.follow, err)
			}
			if got := w.String(); got != tc.want {
				t.Errorf("Logs(follow=%v) wrote %q, want %q", tc.follow, got, tc.want)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	rec, err := c.Cancel(t.Context(), testJobID)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if rec.State != jobs.Canceled || rec.CancelReason != jobs.ReasonUser || rec.ExitCode != nil {
		t.Errorf("Cancel() = {state %s, reason %q, exit %v}, want {canceled, user, nil}", rec.State, rec.CancelReason, deref(rec.ExitCode))
	}
}

func TestErrors(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	anonymous := New(g.srv.URL, "")
	t.Cleanup(anonymous.Close)
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want APIError
	}{
		{"unknown command", func() error {
			_, err := c.Run(ctx, "nope", nil, false, nil, nil)
			return err
		}, APIError{404, "not_found", `command "nope" is not configured`}},
		{"unknown command detached", func() error {
			_, err := c.Run(ctx, "nope", nil, true, nil, nil)
			return err
		}, APIError{404, "not_found", `command "nope" is not configured`}},
		{"not the contract's body", func() error {
			_, err := c.Run(ctx, "proxied", nil, false, nil, nil)
			return err
		}, APIError{502, "", "Bad Gateway"}},
		{"bad filter", func() error {
			_, _, err := c.Jobs(ctx, url.Values{"state": {"sleeping"}})
			return err
		}, APIError{400, "invalid_argument", "state sleeping is not a state"}},
		{"logs of unknown job", func() error {
			return c.Logs(ctx, "01JX0000000000000000000000", false, io.Discard)
		}, APIError{404, "not_found", "job not found"}},
		{"cancel unknown job", func() error {
			_, err := c.Cancel(ctx, "01JX0000000000000000000000")
			return err
		}, APIError{404, "not_found", "job not found"}},
		{"no token", func() error {
			_, _, err := anonymous.Jobs(ctx, nil)
			return err
		}, APIError{401, "unauthenticated", "missing or unknown token"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var got *APIError
			if !errors.As(err, &got) || *got != tc.want {
				t.Errorf("error = %#v, want %#v", err, &tc.want)
			}
		})
	}
}

func TestAPIErrorText(t *testing.T) {
	tests := []struct {
		err  APIError
		want string
	}{
		{APIError{404, "not_found", "job not found"}, "job not found (not_found, HTTP 404)"},
		{APIError{502, "", "Bad Gateway"}, "Bad Gateway (HTTP 502)"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%#v.Error() = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestTokenAndConnectionReuse checks that every call carries the token and
// that one keep-alive connection serves them all, error answers included:
// each body must be read to its end for that.
func TestTokenAndConnectionReuse(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	ctx := t.Context()
	calls := []func() error{
		func() error { _, _, err := c.Jobs(ctx, nil); return err },
		func() error { _, err := c.Run(ctx, "echo", nil, true, nil, nil); return err },
		func() error { _, err := c.Run(ctx, "echo", nil, false, nil, nil); return err },
		func() error { _, err := c.Run(ctx, "fail", nil, false, nil, nil); return err },
		func() error { return c.Logs(ctx, testJobID, false, io.Discard) },
		func() error { _, err := c.Cancel(ctx, testJobID); return err },
		func() error { _, err := c.Run(ctx, "nope", nil, false, nil, nil); return err },
		func() error { _, err := c.Run(ctx, "proxied", nil, true, nil, nil); return err },
		func() error { _, _, err := c.Jobs(ctx, url.Values{"state": {"bad"}}); return err },
		func() error { _, _, err := c.Jobs(ctx, url.Values{"limit": {"100"}}); return err },
		func() error { _, _, err := c.Jobs(ctx, nil); return err },
	}
	for i, call := range calls {
		err := call()
		var apiErr *APIError
		if err != nil && !errors.As(err, &apiErr) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	g.mu.Lock()
	auths := g.auths
	g.mu.Unlock()
	if len(auths) != len(calls) {
		t.Errorf("gateway saw %d requests, want %d", len(auths), len(calls))
	}
	for i, a := range auths {
		if a != "Bearer "+testToken {
			t.Errorf("request %d: Authorization = %q, want %q", i, a, "Bearer "+testToken)
		}
	}
	if n := g.newConns.Load(); n != 1 {
		t.Errorf("%d calls opened %d connections, want 1", len(calls), n)
	}
}

func TestTimeouts(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	c.headerTimeout, c.callTimeout = 50*time.Millisecond, 50*time.Millisecond
	ctx := t.Context()
	tests := []struct {
		name    string
		call    func() error
		wantErr error
	}{
		{"no answer", func() error {
			_, _, err := c.Jobs(ctx, url.Values{"command": {"slow"}})
			return err
		}, ErrTimeout},
		{"no body", func() error {
			_, _, err := c.Jobs(ctx, url.Values{"command": {"slowbody"}})
			return err
		}, ErrTimeout},
		// A stream has a limit on its headers, not on its length.
		{"slow stream", func() error {
			return c.Logs(ctx, slowJobID, true, io.Discard)
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("error = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestEventReader(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	tests := []struct {
		name    string
		in      string
		want    []event
		wantErr bool
	}{
		{"one", "event: stdout\ndata: a\n\n", []event{{"stdout", "a"}}, false},
		{"crlf", "event: stdout\r\ndata: a\r\n\r\n", []event{{"stdout", "a"}}, false},
		{"comments", ": keep-alive\n\n:x\nevent: e\ndata: 1\n\n", []event{{"e", "1"}}, false},
		{"data lines joined", "data: a\ndata: b\ndata:\n\n", []event{{"message", "a\nb\n"}}, false},
		{"no space", "event:e\ndata:v\n\n", []event{{"e", "v"}}, false},
		{"one space removed", "data:  v \n\n", []event{{"message", " v "}}, false},
		{"empty data", "event: stdout\ndata:\n\nevent: stdout\ndata\n\n", []event{{"stdout", ""}, {"stdout", ""}}, false},
		{"no data, no event", "event: ping\n\ndata: d\n\n", []event{{"message", "d"}}, false},
		{"other fields", "id: 1\nretry: 5\nfoo\ndata: d\n\n", []event{{"message", "d"}}, false},
		{"unfinished dropped", "data: a\n\ndata: b\n", []event{{"message", "a"}}, false},
		{"long line", "data: " + long + "\n\n", []event{{"message", long}}, false},
		{"line too long", "data: " + strings.Repeat("x", maxEventSize) + "\n\n", nil, true},
		{"event too long", strings.Repeat("data: "+long+"\n", 6) + "\n", nil, true},
		{"empty", "", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newEventReader(strings.NewReader(tc.in))
			var got []event
			var err error
			for {
				var ev event
				if ev, err = r.next(); err != nil {
					break
				}
				got = append(got, ev)
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("events of %.40q = %.80q, error %v; want %.80q, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
