package handler

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execgw/execgw/internal/jobs"
)

// goneRecorder collects what a bodyStdin reports as its client gone.
type goneRecorder struct {
	mu   sync.Mutex
	errs []error
	told chan struct{} // closed at the first report
}

func (g *goneRecorder) gone(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs = append(g.errs, err)
	if len(g.errs) == 1 {
		close(g.told)
	}
}

func (g *goneRecorder) reports() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]error(nil), g.errs...)
}

func newTestBody(t *testing.T, body io.Reader, limit int64) (*bodyStdin, *goneRecorder) {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/commands/cat/run", body)
	g := &goneRecorder{told: make(chan struct{})}
	b, err := newBodyStdin(httptest.NewRecorder(), req, limit, t.TempDir(), g.gone)
	if err != nil {
		t.Fatal(err)
	}
	return b, g
}

// A run refused never starts reading its body: stop must not wait for a
// reader that never started, and the body stays unread.
func TestBodyStdinNeverStarted(t *testing.T) {
	b, _ := newTestBody(t, strings.NewReader("input"), 1<<20)
	b.stop()
	if n, err := b.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after stop = %d, %v; want 0, os.ErrClosed", n, err)
	}
	if rest, _ := io.ReadAll(b.body); string(rest) != "input" {
		t.Errorf("the body was read: %q left of %q", rest, "input")
	}
}

func TestBodyStdinDeliversTheBody(t *testing.T) {
	input := strings.Repeat("0123456789abcdef", 10_000) // several fill chunks
	b, gone := newTestBody(t, strings.NewReader(input), 1<<20)
	b.start()
	got, err := io.ReadAll(b)
	b.stop()
	if err != nil || string(got) != input {
		t.Errorf("read %d bytes, %v; want the %d bytes of the body", len(got), err, len(input))
	}
	if errs := gone.reports(); len(errs) != 0 {
		t.Errorf("a body read to its end was reported gone: %v", errs)
	}
}

// Once started, the body is taken off the connection whether or not
// anything reads the stdin (a queued job does not): a client that leaves
// is reported at once.
func TestBodyStdinClientLeavesUnread(t *testing.T) {
	pr, pw := io.Pipe()
	b, gone := newTestBody(t, pr, 1<<20)
	b.start()
	if _, err := pw.Write([]byte("some input")); err != nil {
		t.Fatalf("the body is not read once started: %v", err)
	}
	left := errors.New("connection reset by peer")
	_ = pw.CloseWithError(left)
	select {
	case <-gone.told:
	case <-time.After(10 * time.Second):
		t.Fatal("a client that left while nothing read the stdin was not reported")
	}
	b.stop()
	if errs := gone.reports(); len(errs) != 1 || !errors.Is(errs[0], left) {
		t.Errorf("reported %v, want once %v", errs, left)
	}
}

// Over max_body, the process gets what fits, then jobs.ErrInputTooLarge
// (the job ends failed with limit max_body), and the client is not gone.
func TestBodyStdinOverLimit(t *testing.T) {
	b, gone := newTestBody(t, strings.NewReader(strings.Repeat("x", 100)), 64)
	b.start()
	got, err := io.ReadAll(b)
	b.stop()
	if len(got) != 64 || !errors.Is(err, jobs.ErrInputTooLarge) {
		t.Errorf("read %d bytes, %v; want 64, ErrInputTooLarge", len(got), err)
	}
	if errs := gone.reports(); len(errs) != 0 {
		t.Errorf("a body over the limit was reported gone: %v", errs)
	}
}
