package jobs

import (
	"io"
	"sync"
)

// sink receives one stream of a running job. It stores the first limit
// bytes through the OutputStore, counts everything, and passes every byte
// on to the live consumer of a streaming run (whose blocking Write is the
// backpressure that slows the process down to the client's pace).
type sink struct {
	mu        sync.Mutex
	file      io.WriteCloser
	limit     int64
	stored    int64
	produced  int64
	truncated bool
	storeErr  error
	live      io.Writer
	wrote     func() // wakes followers of the stored output
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.produced += int64(len(p))
	keep := p
	if room := s.limit - s.stored; int64(len(keep)) > room {
		keep = keep[:max(room, 0)]
		s.truncated = true
	}
	if len(keep) > 0 && s.storeErr == nil {
		n, err := s.file.Write(keep)
		s.stored += int64(n)
		s.storeErr = err
	}
	s.mu.Unlock()
	if len(keep) > 0 {
		s.wrote()
	}
	if s.live != nil {
		// The live consumer decides itself what a failed write means (it
		// cancels the job); storing and counting go on regardless.
		_, _ = s.live.Write(p)
	}
	return len(p), nil
}

// counts returns the bytes produced so far and whether storage was cut.
func (s *sink) counts() (produced int64, truncated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.produced, s.truncated
}

// close makes the stored output durable and reports the first storage error.
func (s *sink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.file.Close()
	if s.storeErr != nil {
		return s.storeErr
	}
	return err
}
