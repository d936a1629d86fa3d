package runner

// The process's standard streams: stdin fed from a reader, stdout and
// stderr copied to writers.

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/logkey"
)

func (p *Process) closeStdin() {
	if p.stdinW != nil {
		p.stdinOnce.Do(func() { p.stdinW.Close() })
	}
}

// copyStdin copies src into the child's standard input.
func (p *Process) copyStdin(src io.Reader) {
	defer p.closeStdin()
	buf := make([]byte, copyBufSize)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := p.stdinW.Write(buf[:n]); werr != nil {
				// EPIPE: the child closed its stdin or ended; closed or
				// deadline: the process ended. Neither is an error of
				// the job.
				return
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			p.Cancel(&StdinError{Err: rerr})
			return
		}
	}
}

// copier delivers one output pipe to its writer.
type copier struct {
	stream string
	pgid   int
	r      *os.File
	w      io.Writer
	log    zerolog.Logger

	mu       sync.Mutex
	deadline time.Time // zero until the process exited; then the read deadline
}

// processExited starts the bound on reading: postExitIdle of time in Read
// from now, extended by the time spent in Write.
func (c *copier) processExited() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = time.Now().Add(postExitIdle)
	c.r.SetReadDeadline(c.deadline)
}

// extend moves the read deadline by d, the time just spent writing.
func (c *copier) extend(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.deadline.IsZero() {
		c.deadline = c.deadline.Add(d)
		c.r.SetReadDeadline(c.deadline)
	}
}

func (c *copier) run() {
	// Start small and grow while reads fill the buffer: a quiet job (most
	// detached ones) then costs a few KiB, a streaming one gets full-size
	// reads after a handful.
	buf := make([]byte, minCopyBufSize)
	w := c.w
	for {
		n, err := c.r.Read(buf)
		if n > 0 && w != nil {
			start := time.Now()
			if _, werr := w.Write(buf[:n]); werr != nil {
				w = nil // drain and discard from now on
			}
			c.extend(time.Since(start))
		}
		if n == len(buf) && len(buf) < copyBufSize {
			buf = make([]byte, 2*len(buf))
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.log.Warn().Int(logkey.Pgid, c.pgid).
					Msg(c.stream + " pipe still held open after the process group ended (a process left the group?); stopped reading")
			}
			return
		}
	}
}

// pipe returns a new pipe as the parent's end, registered with the
// netpoller, and the child's end, a plain blocking descriptor. os.Pipe
// would register both ends, and os/exec then switch the child's back to
// blocking: four system calls per pipe for nothing, on every job. With
// parentReads the parent reads (an output pipe), else it writes (stdin).
func pipe(parentReads bool) (parent, child *os.File, err error) {
	var fds [2]int // read end, write end
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	p, c := fds[1], fds[0]
	if parentReads {
		p, c = fds[0], fds[1]
	}
	if err := unix.SetNonblock(p, true); err != nil {
		unix.Close(p)
		unix.Close(c)
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p), "|parent"), os.NewFile(uintptr(c), "|child"), nil
}

// devNull is /dev/null opened read-write once, shared by every child that
// has no stdin or discards an output: os/exec would open it anew for each
// stream of each process.
var devNull = sync.OnceValues(func() (*os.File, error) {
	return os.OpenFile(os.DevNull, os.O_RDWR, 0)
})
