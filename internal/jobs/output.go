package jobs

import (
	"errors"
	"io"
	"sync"
	"syscall"
)

// sink receives one stream of a running job. It stores the first limit
// bytes through the OutputStore, counts everything, and passes every byte
// on to the live consumer of a streaming run (whose blocking Write is the
// backpressure that slows the process down to the client's pace). When
// storing fails (a full disk), it stops storing, says truncated, and tells
// failed once; the process runs on and every byte is still counted and
// passed on: the output is the only thing lost, and only its stored copy.
type sink struct {
	mu        sync.Mutex
	file      io.WriteCloser
	limit     int64
	stored    int64
	produced  int64
	truncated bool
	storeErr  error
	live      io.Writer
	// liveReady is closed once Submit has decided: the live consumer
	// gets output only from a job Submit accepted, and never waits for a
	// job Submit refused (whose response never begins).
	liveReady chan struct{}
	wrote     func()                    // wakes followers of the stored output
	failed    func(error)               // told the first storage error, outside mu
	counted   interface{ Add(float64) } // execgw_output_bytes_total of the stream
}

func (s *sink) Write(p []byte) (int, error) {
	s.counted.Add(float64(len(p)))
	s.mu.Lock()
	s.produced += int64(len(p))
	keep := p
	if room := s.limit - s.stored; int64(len(keep)) > room {
		keep = keep[:max(room, 0)]
		s.truncated = true
	}
	var failed error
	if len(keep) > 0 && s.storeErr == nil {
		n, err := s.file.Write(keep)
		s.stored += int64(n)
		if err != nil {
			s.storeErr, s.truncated, failed = err, true, err
		}
	}
	hasLive := s.live != nil
	s.mu.Unlock()
	if failed != nil {
		s.failed(failed)
	}
	if len(keep) > 0 {
		s.wrote()
	}
	if hasLive {
		<-s.liveReady
		s.mu.Lock()
		live := s.live
		s.mu.Unlock()
		if live != nil {
			// The live consumer decides itself what a failed write
			// means (it cancels the job); storing and counting go on
			// regardless.
			_, _ = live.Write(p)
		}
	}
	return len(p), nil
}

// openLive lets output through to the live consumer, or with keep false
// drops it from now on.
func (s *sink) openLive(keep bool) {
	if !keep {
		s.mu.Lock()
		s.live = nil
		s.mu.Unlock()
	}
	close(s.liveReady)
}

// counts returns the bytes produced so far and whether storage was cut.
func (s *sink) counts() (produced int64, truncated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.produced, s.truncated
}

// close makes the stored output durable. If that fails, what was stored
// may not all be there: the stream counts as truncated, and failed is told
// unless a write failed before.
func (s *sink) close() {
	s.mu.Lock()
	err := s.file.Close()
	if err == nil || s.storeErr != nil {
		s.mu.Unlock()
		return
	}
	s.storeErr, s.truncated = err, true
	s.mu.Unlock()
	s.failed(err)
}

// An aborter is stored output that can be dropped at once rather than
// made durable (the cluster's, which would wait for Redis).
type aborter interface{ Abort() }

// abort drops the stored output of a job whose output nobody will read.
func (s *sink) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.file.(aborter); ok {
		a.Abort()
		return
	}
	_ = s.file.Close()
}

// storeErrorMessage is the output_error of a storage failure: the system's
// word for it ("no space left on device"), never the path or other detail
// of the gateway's file system.
func storeErrorMessage(s Stream, err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return string(s) + ": " + errno.Error()
	}
	return string(s) + ": write failed"
}
