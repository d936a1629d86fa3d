package handler

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/jobs"
)

// The request body as a process's stdin. Both ways below keep it in an
// unlinked file in the spool directory, never whole in memory: a detached
// job's body is read before the answer (spool), a bound run's while it
// runs or waits (bodyStdin).

// spool copies a detached job's input to an unlinked file in the spool
// directory: the request ends before the process reads it, and a large
// upload must not be held in memory.
func (h *handler) spool(body io.ReadCloser) (*os.File, error) {
	f, err := os.CreateTemp(h.spoolDir, "stdin-*")
	if err != nil {
		return nil, fmt.Errorf("spool request body: %w", err)
	}
	_ = os.Remove(f.Name()) // the open descriptor keeps the data
	if _, err := io.Copy(f, http.MaxBytesReader(nil, body, h.cfg.MaxBody)); err != nil {
		_ = f.Close()
		return nil, bodyError(err, h.cfg.MaxBody)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("spool request body: %w", err)
	}
	return f, nil
}

// errSpool is the cause of a bound run's end when its body could not be
// spooled: the gateway's failure, not the client's.
var errSpool = errors.New("spool request body")

// bodyStdin feeds a bound run's request body to its process as stdin. Its
// goroutine (fill) takes the body off the connection as fast as the
// client sends it, into an unlinked spool file that the process reads at
// its own pace: Go sees a client leave only once the body has been read to
// its end (golang/go#23262), so neither a process that stops reading its
// stdin nor one that has not started yet may stop the body from being
// read. The spool is bounded by max_body.
//
// The handler that makes it owns fill: start starts it, stop stops it and
// waits for it. Read, called by the runner's goroutine, starts nothing.
type bodyStdin struct {
	rc      *http.ResponseController
	body    io.Reader // limited to max_body
	spool   *os.File
	gone    func(error) // told once if reading the body fails: the client left
	log     *zerolog.Logger
	started bool          // by start; read and written by the owner only
	done    chan struct{} // closed when fill returns

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the fields below change
	spooled int64
	read    int64
	end     error // once the body has ended: io.EOF, jobs.ErrInputTooLarge, or the read error
	stopped bool
}

// newBodyStdin prepares a spool file in dir for the body of req. Nothing
// is read before start.
func newBodyStdin(w http.ResponseWriter, req *http.Request, limit int64, dir string, gone func(error)) (*bodyStdin, error) {
	f, err := os.CreateTemp(dir, "stdin-*")
	if err != nil {
		return nil, fmt.Errorf("spool request body: %w", err)
	}
	_ = os.Remove(f.Name()) // the open descriptor keeps the data
	b := &bodyStdin{
		rc:      http.NewResponseController(w),
		body:    http.MaxBytesReader(nil, req.Body, limit),
		spool:   f,
		gone:    gone,
		log:     zerolog.Ctx(req.Context()),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	return b, nil
}

// start begins taking the body off the connection. Call it at most once,
// before stop.
func (b *bodyStdin) start() {
	b.started = true
	go b.fill() // exits at the body's end, or when stop cuts its read
}

// fill copies the body into the spool.
func (b *bodyStdin) fill() {
	defer close(b.done)
	buf := make([]byte, 32<<10)
	var off int64
	for {
		n, err := b.body.Read(buf)
		if n > 0 {
			if _, werr := b.spool.WriteAt(buf[:n], off); werr != nil {
				// The job cannot get its input: it ends as if its
				// client had left, and the log says why.
				b.log.Error().Err(werr).Msg("spool request body")
				err = fmt.Errorf("%w: %w", errSpool, werr)
			} else {
				off += int64(n)
			}
		}
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			err = jobs.ErrInputTooLarge
		}
		b.mu.Lock()
		b.spooled = off
		b.end = err
		stopped := b.stopped
		b.notifyLocked()
		b.mu.Unlock()
		if err == nil {
			continue
		}
		if err != io.EOF && err != jobs.ErrInputTooLarge && !stopped {
			b.gone(err)
		}
		return
	}
}

func (b *bodyStdin) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Read returns spooled bytes, waiting for more until the body has ended;
// then it returns how it ended.
func (b *bodyStdin) Read(p []byte) (int, error) {
	b.mu.Lock()
	for !b.stopped && b.read == b.spooled && b.end == nil {
		changed := b.changed
		b.mu.Unlock()
		<-changed
		b.mu.Lock()
	}
	off, avail, end, stopped := b.read, b.spooled-b.read, b.end, b.stopped
	b.mu.Unlock()
	switch {
	case stopped:
		return 0, os.ErrClosed
	case avail == 0:
		return 0, end
	}
	n, err := b.spool.ReadAt(p[:min(int64(len(p)), avail)], off)
	b.mu.Lock()
	b.read += int64(n)
	b.mu.Unlock()
	if n > 0 {
		err = nil // ReadAt's io.EOF at the end of what is spooled so far
	}
	return n, err
}

// stop ends reading, waits for fill and releases the spool: the body must
// not be touched once the handler has returned.
func (b *bodyStdin) stop() {
	b.mu.Lock()
	b.stopped = true
	b.notifyLocked()
	b.mu.Unlock()
	if b.started {
		select {
		case <-b.done:
			// A body read to its end must get no read deadline: the
			// server is watching that connection for a close.
		default:
			// fill may be blocked on a slow client: the deadline makes
			// its read return.
			_ = b.rc.SetReadDeadline(time.Now())
			<-b.done
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	_ = b.spool.Close()
}
