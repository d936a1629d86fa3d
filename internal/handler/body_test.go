package handler

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/execgw/execgw/internal/jobs"
)

func newTestBody(t *testing.T, body string, limit int64) (*bodyStdin, *[]error) {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/commands/cat/run", strings.NewReader(body))
	var gone []error
	b, err := newBodyStdin(httptest.NewRecorder(), req, limit, t.TempDir(), func(err error) { gone = append(gone, err) })
	if err != nil {
		t.Fatal(err)
	}
	return b, &gone
}

// A run refused or still queued never reads its body: close must not wait
// for a reader that never started, and the body stays unread.
func TestBodyStdinNeverRead(t *testing.T) {
	b, _ := newTestBody(t, "input", 1<<20)
	b.close()
	if n, err := b.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after close = %d, %v; want 0, os.ErrClosed", n, err)
	}
	if rest, _ := io.ReadAll(b.body); string(rest) != "input" {
		t.Errorf("the body was read: %q left of %q", rest, "input")
	}
}

func TestBodyStdinDeliversTheBody(t *testing.T) {
	input := strings.Repeat("0123456789abcdef", 10_000) // several fill chunks
	b, gone := newTestBody(t, input, 1<<20)
	got, err := io.ReadAll(b)
	b.close()
	if err != nil || string(got) != input {
		t.Errorf("read %d bytes, %v; want the %d bytes of the body", len(got), err, len(input))
	}
	if len(*gone) != 0 {
		t.Errorf("a body read to its end was reported gone: %v", *gone)
	}
}

// Over max_body, the process gets what fits, then jobs.ErrInputTooLarge
// (the job ends failed with limit max_body), and the client is not gone.
func TestBodyStdinOverLimit(t *testing.T) {
	b, gone := newTestBody(t, strings.Repeat("x", 100), 64)
	got, err := io.ReadAll(b)
	b.close()
	if len(got) != 64 || !errors.Is(err, jobs.ErrInputTooLarge) {
		t.Errorf("read %d bytes, %v; want 64, ErrInputTooLarge", len(got), err)
	}
	if len(*gone) != 0 {
		t.Errorf("a body over the limit was reported gone: %v", *gone)
	}
}
