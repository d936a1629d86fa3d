package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/execgw/execgw/internal/api"
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

	mu      sync.Mutex
	auths   []string // Authorization of every request
	params  map[string]string
	prefer  string
	query   url.Values
	lastRun string // the command of the last bound run: its job's record and stderr
}

// fakeRuns are the bound runs the fake gateway knows: what they print and
// how they end.
var fakeRuns = map[string]struct {
	stdout, stderr string
	exit           *int
	signal         string
}{
	// Every byte value, a carriage return, invalid UTF-8, no final newline.
	"echo":   {stdout: "hello\r\n\x00\xff\xfe bin\x80\ntwo\nlines", stderr: "warning\r\x01\n", exit: ptr(0)},
	"fail":   {stderr: "boom\n", exit: ptr(3)},
	"killed": {signal: "SIGKILL"},
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	g := &fakeGateway{disconnected: make(chan struct{}), logGate: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/commands/{name}/run", g.run)
	mux.HandleFunc("GET /v1/jobs", g.jobs)
	mux.HandleFunc("GET /v1/jobs/{id}", g.job)
	mux.HandleFunc("GET /v1/jobs/{id}/stdout", g.stdout)
	mux.HandleFunc("GET /v1/jobs/{id}/stderr", g.stderr)
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
	rec := api.Job{ID: testJobID, Command: name, Params: body.Params, State: api.Running, Pid: ptr(42), CreatedAt: testCreated, StartedAt: ptr(testCreated)}
	w.Header().Set("Execgw-Job-Id", testJobID)
	if r.Header.Get("Prefer") == "respond-async" {
		w.Header().Set("Location", "/v1/jobs/"+testJobID)
		writeJSON(w, http.StatusAccepted, rec)
		return
	}
	if r.Header.Get("Accept") != "application/octet-stream" {
		writeError(w, http.StatusBadRequest, "invalid_argument", "the fake gateway only streams raw output")
		return
	}
	g.mu.Lock()
	g.lastRun = name
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", "Execgw-Exit-Code, Execgw-State")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	switch name {
	case "hang":
		_, _ = io.WriteString(w, "started\n")
		_ = rc.Flush()
		<-r.Context().Done()
		close(g.disconnected)
		return
	case "cut":
		_, _ = io.WriteString(w, "partial\n")
		_ = rc.Flush()
		panic(http.ErrAbortHandler) // the connection drops: no trailers
	}
	_, _ = io.WriteString(w, fakeRuns[name].stdout)
	w.Header().Set("Execgw-State", string(fakeRecord(name).State))
	w.Header().Set("Execgw-Exit-Code", "0")
}

// fakeRecord is the ended record of a bound run of command name.
func fakeRecord(name string) api.Job {
	run := fakeRuns[name]
	rec := api.Job{ID: testJobID, Command: name, State: api.Failed, Pid: ptr(42), CreatedAt: testCreated, StartedAt: ptr(testCreated),
		EndedAt: ptr(testCreated.Add(time.Second)), ExitCode: run.exit}
	if run.signal != "" {
		rec.Signal = ptr(run.signal)
	}
	if run.exit != nil && *run.exit == 0 {
		rec.State = api.Succeeded
	}
	return rec
}

func (g *fakeGateway) job(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	name := g.lastRun
	g.mu.Unlock()
	if r.PathValue("id") != testJobID || name == "" {
		writeError(w, http.StatusNotFound, "not_found", "job not found")
		return
	}
	writeJSON(w, http.StatusOK, fakeRecord(name))
}

func (g *fakeGateway) stderr(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	name := g.lastRun
	g.mu.Unlock()
	if r.PathValue("id") != testJobID {
		writeError(w, http.StatusNotFound, "not_found", "job not found")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.WriteString(w, fakeRuns[name].stderr)
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
	if s := q.Get("state"); s != "" && !slices.Contains([]string{api.Queued, api.Running, api.Succeeded, api.Failed, api.Canceled, api.TimedOut, api.Interrupted}, s) {
		writeError(w, http.StatusBadRequest, "invalid_argument", "state "+s+" is not a state")
		return
	}
	code := 0
	list := []api.Job{
		{ID: testJobID, Command: "dd", State: api.Running, CreatedAt: testCreated},
		{ID: nextJobID, Command: "dd", State: api.Succeeded, ExitCode: &code, CreatedAt: testCreated},
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
	rec := api.Job{
		ID: testJobID, Command: "dd", State: api.Canceled, CancelReason: ptr("user"),
		Signal: ptr("SIGTERM"), CreatedAt: testCreated, StartedAt: ptr(testCreated), EndedAt: ptr(testCreated.Add(time.Second)),
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

// TestRunOutput: a bound run's stdout and stderr reach their writers byte
// for byte, and Run returns the ended record.
func TestRunOutput(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g)
	for _, name := range []string{"echo", "fail", "killed"} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			rec, err := c.Run(t.Context(), name, map[string]string{"count": "1"}, false, &stdout, &stderr)
			if err != nil {
				t.Fatalf("Run(%q) error: %v", name, err)
			}
			want := fakeRuns[name]
			if stdout.String() != want.stdout || stderr.String() != want.stderr {
				t.Errorf("Run(%q) stdout %q, stderr %q; want %q, %q", name, stdout.String(), stderr.String(), want.stdout, want.stderr)
			}
			if wantRec := fakeRecord(name); rec.ID != testJobID || rec.State != wantRec.State || derefString(rec.Signal) != want.signal || !reflect.DeepEqual(rec.ExitCode, want.exit) {
				t.Errorf("Run(%q) = {id %s, state %s, exit %v, signal %q}, want {id %s, state %s, exit %v, signal %q}",
					name, rec.ID, rec.State, deref(rec.ExitCode), derefString(rec.Signal), testJobID, wantRec.State, deref(want.exit), want.signal)
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

func derefString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
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
	var out bytes.Buffer
	rec, err := c.Run(t.Context(), "echo", map[string]string{"count": "3"}, true, &out, &out)
	if err != nil {
		t.Fatalf("Run detached: %v", err)
	}
	if called := out.Len() > 0; rec.ID != testJobID || rec.State != api.Running || called {
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
	_, err := c.Run(ctx, "hang", nil, false, writerFunc(func([]byte) { cancel() }), nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run(hang) after cancel: error = %v, want context.Canceled", err)
	}
	select {
	case <-g.disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not see the client go away")
	}
}

// writerFunc calls f with every write.
type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
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
	if rec.State != api.Canceled || derefString(rec.CancelReason) != "user" || rec.ExitCode != nil {
		t.Errorf("Cancel() = {state %s, reason %q, exit %v}, want {canceled, user, nil}", rec.State, derefString(rec.CancelReason), deref(rec.ExitCode))
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
	// Each of the two bound runs also follows the job's stderr and reads
	// its record.
	if want := len(calls) + 2*2; len(auths) != want {
		t.Errorf("gateway saw %d requests, want %d", len(auths), want)
	}
	for i, a := range auths {
		if a != "Bearer "+testToken {
			t.Errorf("request %d: Authorization = %q, want %q", i, a, "Bearer "+testToken)
		}
	}
	// A bound run's stderr is followed while its stdout streams: a second
	// connection when the stream still holds the first, kept for the
	// calls after it.
	if n := g.newConns.Load(); n < 1 || n > 2 {
		t.Errorf("%d calls opened %d connections, want 1 or 2", len(calls), n)
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
