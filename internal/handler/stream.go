package handler

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/execgw/execgw/internal/jobs"
)

// streamWriteTimeout bounds each write of a stream: a client that stops
// reading for this long is treated as gone, so it cannot hold a process
// forever. It is per write, not per response (no WriteTimeout cuts a long
// stream). A variable only so that tests can shorten it.
var streamWriteTimeout = 30 * time.Second

// keepAliveEvery is the period of SSE comments that keep idle streams
// open through proxies. A variable only so that tests can shorten it.
var keepAliveEvery = 15 * time.Second

// streamWriter writes a streaming response: every Write is flushed at
// once under its own deadline, and the first failure is remembered, closes
// failed, and makes later writes return at once.
//
// Writes wait until commit: the process's output may arrive (from the
// runner's goroutines) before the handler has set the headers, the job id
// among them, and the first write would send the headers without it.
type streamWriter struct {
	mu        sync.Mutex
	w         http.ResponseWriter
	rc        *http.ResponseController
	err       error
	failed    chan struct{}
	committed bool
	open      chan struct{} // closed by commit
	openOnce  sync.Once
}

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	return &streamWriter{
		w:      w,
		rc:     http.NewResponseController(flushable(w)),
		failed: make(chan struct{}),
		open:   make(chan struct{}),
	}
}

// flushable unwraps w down to the first writer whose flush reports its
// error. http.ResponseController prefers a Flush method to Unwrap, and
// Echo's Response.Flush swallows the error: a client gone would only be
// noticed at the next write, or never for the last one.
func flushable(w http.ResponseWriter) http.ResponseWriter {
	for {
		if _, ok := w.(interface{ FlushError() error }); ok {
			return w
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// commit sends the status line and the headers set so far, so the client
// sees the stream begin even before the first output, and lets writes
// through. It must be called once the headers are set, before waiting for
// anything that waits for a Write.
func (s *streamWriter) commit() error {
	s.mu.Lock()
	_, err := s.writeLocked(nil)
	s.mu.Unlock()
	s.openOnce.Do(func() { close(s.open) })
	return err
}

func (s *streamWriter) Write(p []byte) (int, error) {
	<-s.open
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeLocked(p)
}

func (s *streamWriter) writeLocked(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
		return 0, s.fail(err)
	}
	if !s.committed {
		s.w.WriteHeader(http.StatusOK)
		s.committed = true
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil {
		return n, s.fail(err)
	}
	return n, nil
}

func (s *streamWriter) fail(err error) error {
	s.err = err
	close(s.failed)
	return err
}

// finish lifts the write deadline of a stream that ended well, so that it
// does not linger on the keep-alive connection into the next response. A
// failed stream keeps it: its connection is done for.
func (s *streamWriter) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
}

func setSSEHeaders(h http.Header) {
	h.Set("Content-Type", contentTypeSSE)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
}

// sendExit sends the exit event, the job's record.
func sendExit(sse *sseWriter, rec jobs.Record) error {
	data, err := json.Marshal(apiJob(rec, time.Now()))
	if err != nil {
		return err
	}
	return sse.event("exit", string(data))
}

// sseWriter writes Server-Sent Events onto a streamWriter.
type sseWriter struct {
	*streamWriter
	mu  sync.Mutex   // one event at a time, stdout's or stderr's
	buf bytes.Buffer // guarded by mu
}

// event sends one event. Every line break in data (\n, \r\n or \r, which
// SSE also reads as one) becomes a new data line, so no text can end the
// event early or forge a field; invalid UTF-8 is replaced.
func (e *sseWriter) event(name, data string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf.Reset()
	e.buf.WriteString("event: ")
	e.buf.WriteString(name)
	e.buf.WriteByte('\n')
	data = strings.ToValidUTF8(data, string(utf8.RuneError))
	data = strings.ReplaceAll(data, "\r\n", "\n")
	for line := range strings.SplitSeq(strings.ReplaceAll(data, "\r", "\n"), "\n") {
		e.buf.WriteString("data: ")
		e.buf.WriteString(line)
		e.buf.WriteByte('\n')
	}
	e.buf.WriteByte('\n')
	_, err := e.Write(e.buf.Bytes())
	return err
}

func (e *sseWriter) comment(text string) error {
	_, err := e.Write([]byte(": " + text + "\n\n"))
	return err
}

// keepAlive sends a comment every keepAliveEvery until stop is closed.
func (e *sseWriter) keepAlive(stop <-chan struct{}) {
	t := time.NewTicker(keepAliveEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if e.comment("keep-alive") != nil {
				return
			}
		}
	}
}

// maxEventLine is the longest line sent as one event; a longer line (or
// binary data without newlines) is sent in pieces of this size, so memory
// stays bounded whatever the process prints. A piece ends before a UTF-8
// character it would cut (up to 3 bytes shorter), so that the character is
// not replaced.
const maxEventLine = 64 << 10

// lineEvents is an io.Writer that turns one output stream into one event
// per line. It is written by one goroutine at a time.
type lineEvents struct {
	sse     *sseWriter
	name    string
	partial []byte // the line so far, at most maxEventLine bytes
}

func (l *lineEvents) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := maxEventLine - len(l.partial)
		i := bytes.IndexByte(p, '\n')
		switch {
		case i >= 0 && i <= room:
			// The line ends within the limit.
			l.partial = append(l.partial, p[:i]...)
			p = p[i+1:]
			if err := l.emit(true); err != nil {
				return n, err
			}
		case len(p) <= room:
			// No end of line yet, and room to wait for it. A line of
			// exactly maxEventLine bytes waits here too, so that the
			// newline that may follow does not make an empty event.
			l.partial = append(l.partial, p...)
			return n, nil
		default:
			// More than fits: send a piece of maxEventLine bytes.
			l.partial = append(l.partial, p[:room]...)
			p = p[room:]
			if err := l.emit(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush sends a final line that had no newline.
func (l *lineEvents) flush() error {
	if len(l.partial) == 0 {
		return nil
	}
	return l.emit(true)
}

// emit sends partial as one event: a whole line (without a CR before its
// LF), or a piece of a long one, whose incomplete last character, if any,
// stays in partial for the next piece.
func (l *lineEvents) emit(wholeLine bool) error {
	send, keep := l.partial, 0
	if wholeLine {
		send = bytes.TrimSuffix(send, []byte("\r"))
	} else {
		keep = incompleteRune(send)
		send = send[:len(send)-keep]
	}
	err := l.sse.event(l.name, string(send))
	l.partial = l.partial[:copy(l.partial, l.partial[len(l.partial)-keep:])]
	return err
}

// incompleteRune returns the length of the start of a multi-byte UTF-8
// character at the end of b (0 to 3 bytes). Invalid bytes are complete:
// they are replaced wherever they are.
func incompleteRune(b []byte) int {
	for k := 1; k <= utf8.UTFMax-1 && k <= len(b); k++ {
		if utf8.RuneStart(b[len(b)-k]) {
			if utf8.FullRune(b[len(b)-k:]) {
				return 0
			}
			return k
		}
	}
	return 0
}
