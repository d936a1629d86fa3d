package jobs

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound means no job has the given id.
var ErrNotFound = errors.New("job not found")

// Store keeps job records durably. The registry is its only user; the
// embedded implementation is jobstore.Bolt, and a shared one (Redis) can
// stand beside it without the registry or the handler changing.
type Store interface {
	// Put creates or replaces the record with rec.ID and returns once the
	// record is durable: a crash after Put returns loses nothing.
	Put(ctx context.Context, rec Record) error
	// Get returns the record with the given id, or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// List returns the records matching f, newest first, and the id to pass
	// as f.After for the next page ("" when there is none).
	List(ctx context.Context, f Filter) ([]Record, string, error)
	// Delete removes the record, or returns ErrNotFound.
	Delete(ctx context.Context, id string) error
	// Unfinished returns every record still Queued or Running: after a
	// crash these are the jobs to resolve.
	Unfinished(ctx context.Context) ([]Record, error)
	// EndedBefore returns up to max ids of ended jobs whose EndedAt is
	// before t.
	EndedBefore(ctx context.Context, t time.Time, max int) ([]string, error)
	Close() error
}

// Filter selects records for Store.List. Zero fields match everything.
type Filter struct {
	State   State
	Command string
	Owner   string
	// Limit is the page size; the store caps it at MaxPageSize.
	Limit int
	// After is the id of the last record of the previous page. Ids sort
	// by creation time, so "after" in newest-first order means smaller.
	After string
}

// MaxPageSize bounds one page of Store.List.
const MaxPageSize = 1000

// Stream names one of a job's two outputs.
type Stream string

// The streams of a job.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// OutputStore keeps the bytes a job wrote, as they are produced.
type OutputStore interface {
	// Create starts the stream of a new job: job ids are never reused, so
	// there is nothing to truncate. Close makes what was written durable.
	Create(id string, s Stream) (io.WriteCloser, error)
	// Open reads the stream from its start. Reading past the end returns
	// io.EOF; bytes written later are returned by later reads, which is
	// what following a live job relies on. A stream never created reads
	// empty.
	Open(id string, s Stream) (io.ReadCloser, error)
	// Size is the number of bytes the stream holds now, found without
	// reading them; a stream never created holds none.
	Size(id string, s Stream) (int64, error)
	// Remove deletes both streams of the job; absent streams are no error.
	Remove(id string) error
}
