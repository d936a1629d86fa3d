package handler

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// streamWriteTimeout bounds each write of a stream: a client that stops
// reading for this long is treated as gone, so it cannot hold a process
// forever. It is per write, not per response (no WriteTimeout cuts a long
// stream).
const streamWriteTimeout = 30 * time.Second

// keepAliveEvery is the period of SSE comments that keep idle streams
// open through proxies.
const keepAliveEvery = 15 * time.Second

// streamWriter writes a streaming response: every Write is flushed at
// once under its own deadline, and the first failure is remembered, closes
// failed, and makes later writes return at once.
type streamWriter struct {
	mu        sync.Mutex
	w         http.ResponseWriter
	rc        *http.ResponseController
	err       error
	failed    chan struct{}
	committed bool
}

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w), failed: make(chan struct{})}
}

// commit sends the status line and headers now, so the client sees the
// stream begin even before the first output.
func (s *streamWriter) commit() error {
	_, err := s.Write(nil)
	return err
}

func (s *streamWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
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

// sseWriter writes Server-Sent Events onto a streamWriter.
type sseWriter struct {
	*streamWriter
	buf bytes.Buffer // guarded by streamWriter.mu through send
	mu  sync.Mutex
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
// stays bounded whatever the process prints.
const maxEventLine = 64 << 10

// lineEvents is an io.Writer that turns one output stream into one event
// per line. It is written by one goroutine at a time.
type lineEvents struct {
	sse     *sseWriter
	name    string
	partial []byte
}

func (l *lineEvents) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxEventLine - len(l.partial)
			if len(p) < room {
				l.partial = append(l.partial, p...)
				break
			}
			l.partial = append(l.partial, p[:room]...)
			p = p[room:]
		} else {
			l.partial = append(l.partial, p[:i]...)
			p = p[i+1:]
		}
		if err := l.emit(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// flush sends a final line that had no newline.
func (l *lineEvents) flush() error {
	if len(l.partial) == 0 {
		return nil
	}
	return l.emit()
}

func (l *lineEvents) emit() error {
	line := strings.TrimSuffix(string(l.partial), "\r")
	l.partial = l.partial[:0]
	return l.sse.event(l.name, line)
}
