package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/jobs"
)

// chunkSize bounds one stream entry: large enough that a fast writer costs
// few round trips, small enough that a follower sees output as it comes.
const chunkSize = 32 << 10

// Output is a jobs.OutputStore in Redis Streams, one stream per job and
// output stream, readable from every gateway of the cluster.
//
// A job's output is written to a local spool file first and shipped to
// Redis from there, so that a process never waits for Redis, and output
// produced while Redis is away reaches it once Redis is back. Each entry's
// id is the byte offset of its first byte plus one ("<offset+1>-1"): a
// chunk sent again after a lost reply is refused as a duplicate instead of
// stored twice, and a reader knows where every entry stands.
type Output struct {
	rdb    *redis.Client // commands
	follow *redis.Client // blocking reads, on connections of their own
	keys   keys
	spool  string // directory of the local spool files
	log    zerolog.Logger
	giveUp time.Duration

	ctx  context.Context // canceled by Close: shippers give up
	stop context.CancelFunc
	wg   sync.WaitGroup // one per shipper
}

var _ jobs.OutputStore = (*Output)(nil)

// OutputOptions configure an Output.
type OutputOptions struct {
	Client *redis.Client
	// Follow serves the blocking reads of followers; it must not be
	// Client, whose pool would otherwise be held by them.
	Follow *redis.Client
	Prefix string
	// SpoolDir holds the output of this gateway's running jobs until it
	// is in Redis.
	SpoolDir string
	Log      zerolog.Logger
	// GiveUp bounds how long closing a stream waits for Redis to take
	// what is left of it (0: for ever); the spool file then stays.
	GiveUp time.Duration
}

// NewOutput returns an Output; Close stops its shippers.
func NewOutput(o OutputOptions) (*Output, error) {
	if err := os.MkdirAll(o.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("output spool: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Output{
		rdb: o.Client, follow: o.Follow, keys: newKeys(o.Prefix), spool: o.SpoolDir,
		log: o.Log, ctx: ctx, stop: cancel, giveUp: o.GiveUp,
	}, nil
}

// Close makes every shipper give up and waits for them: output not yet in
// Redis stays in the spool directory.
func (o *Output) Close() {
	o.stop()
	o.wg.Wait()
}

// Create returns the writer of a new job's stream. Writes go to the spool
// at once; Close returns once everything written is in Redis.
func (o *Output) Create(id string, s jobs.Stream) (io.WriteCloser, error) {
	if err := checkStream(id, s); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(o.spool, id+"."+string(s)), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool output of job %s: %w", id, err)
	}
	ctx, cancel := context.WithCancel(o.ctx)
	w := &streamWriter{o: o, key: o.keys.output(id, s), spool: f, more: make(chan struct{}, 1), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	o.wg.Add(1)
	go func() { // exits when everything written after Close is shipped, or Output.Close
		defer o.wg.Done()
		defer close(w.done)
		w.err = w.ship()
	}()
	return w, nil
}

// Open reads the stream from its start.
func (o *Output) Open(id string, s jobs.Stream) (io.ReadCloser, error) {
	if err := checkStream(id, s); err != nil {
		return nil, err
	}
	return &streamReader{o: o, key: o.keys.output(id, s), last: "0-0"}, nil
}

// Size is what the stream holds in Redis: its last entry's offset, which
// is in its id, plus that entry's length.
func (o *Output) Size(id string, s jobs.Stream) (int64, error) {
	if err := checkStream(id, s); err != nil {
		return 0, err
	}
	msgs, err := o.rdb.XRevRangeN(context.Background(), o.keys.output(id, s), "+", "-", 1).Result()
	if err != nil {
		return 0, fmt.Errorf("size of output: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	off, err := entryOffset(msgs[0].ID)
	if err != nil {
		return 0, err
	}
	d, _ := msgs[0].Values["d"].(string)
	return off + int64(len(d)), nil
}

// Remove deletes both streams of the job.
func (o *Output) Remove(id string) error {
	if err := checkStream(id, jobs.Stdout); err != nil {
		return err
	}
	if err := o.rdb.Del(context.Background(), o.keys.output(id, jobs.Stdout), o.keys.output(id, jobs.Stderr)).Err(); err != nil {
		return fmt.Errorf("remove output of job %s: %w", id, err)
	}
	return nil
}

func checkStream(id string, s jobs.Stream) error {
	if !validID(id) {
		return fmt.Errorf("output of job %q: invalid job id", id)
	}
	if s != jobs.Stdout && s != jobs.Stderr {
		return fmt.Errorf("output of job %s: invalid stream %q", id, s)
	}
	return nil
}

// validID accepts the alphanumeric ids the registry makes; anything else
// could make a key or file name of another meaning.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// streamWriter appends to the local spool and wakes the shipper.
type streamWriter struct {
	o     *Output
	key   string
	spool *os.File
	more  chan struct{} // a write happened, or Close

	mu      sync.Mutex
	written int64
	closed  bool

	done   chan struct{} // closed when ship has returned
	err    error         // ship's result
	ctx    context.Context
	cancel context.CancelFunc // makes ship give up
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.spool.WriteAt(p, w.written)
	w.written += int64(n)
	w.mu.Unlock()
	w.wake()
	if err != nil {
		return n, fmt.Errorf("spool output: %w", err)
	}
	return n, nil
}

func (w *streamWriter) wake() {
	select {
	case w.more <- struct{}{}:
	default:
	}
}

// Close waits until everything written is in Redis (or GiveUp has passed:
// the spool file then stays and Close fails), then removes the
// spool file.
func (w *streamWriter) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.wake()
	if w.o.giveUp > 0 {
		t := time.NewTimer(w.o.giveUp)
		select {
		case <-w.done:
		case <-t.C:
			w.cancel()
		}
		t.Stop()
	}
	<-w.done
	w.cancel()
	name := w.spool.Name()
	_ = w.spool.Close()
	if w.err != nil {
		return fmt.Errorf("ship output to redis: %w", w.err) // the spool file stays
	}
	_ = os.Remove(name)
	return nil
}

// Abort gives up shipping and removes the spool file: for output nobody
// will read.
func (w *streamWriter) Abort() {
	w.cancel()
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	<-w.done
	name := w.spool.Name()
	_ = w.spool.Close()
	_ = os.Remove(name)
}

// ship sends the spool to Redis in order, chunk by chunk, until Close has
// been called and all is sent. A chunk that fails is sent again, the same
// chunk at the same offset, until Redis takes it or the Output closes.
func (w *streamWriter) ship() error {
	buf := make([]byte, chunkSize)
	var off int64
	for {
		w.mu.Lock()
		written, closed := w.written, w.closed
		w.mu.Unlock()
		if off == written {
			if closed {
				return nil
			}
			select {
			case <-w.more:
				continue
			case <-w.ctx.Done():
				return w.ctx.Err()
			}
		}
		n, err := w.spool.ReadAt(buf[:min(int64(len(buf)), written-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if err := w.send(off, buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
}

// send adds one chunk at offset off, retrying with backoff while Redis is
// away; a chunk already there (its reply was lost) counts as sent. The
// entry's id is the chunk's offset plus one (a stream's ids start above
// 0-0): the offsets order the entries, and a chunk sent twice is refused.
func (w *streamWriter) send(off int64, chunk []byte) error {
	id := strconv.FormatInt(off+1, 10) + "-1"
	backoff := 50 * time.Millisecond
	for {
		err := w.o.rdb.XAdd(w.ctx, &redis.XAddArgs{Stream: w.key, ID: id, Values: []any{"d", chunk}}).Err()
		if err == nil || isDuplicateID(err) {
			return nil
		}
		if w.ctx.Err() != nil {
			return w.ctx.Err()
		}
		w.o.log.Debug().Err(err).Str("key", w.key).Msg("ship output: retrying")
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
			return w.ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// entryOffset is the offset of the chunk in the entry with id (see send).
func entryOffset(id string) (int64, error) {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("output stream entry %q: not an offset", id)
	}
	return n - 1, nil
}

func isDuplicateID(err error) bool {
	return err != nil && strings.Contains(err.Error(), "equal or smaller than the target stream top item")
}

// streamReader reads a stream entry by entry from the start. At the end
// of what is there it returns io.EOF; a later Read returns what came
// since, which is how a follower goes on.
type streamReader struct {
	o       *Output
	key     string
	last    string // id of the last entry read
	pending []byte // rest of an entry larger than the caller's buffer
}

func (r *streamReader) Read(p []byte) (int, error) {
	if len(r.pending) == 0 {
		msgs, err := r.o.rdb.XRangeN(context.Background(), r.key, "("+r.last, "+", 16).Result()
		if err != nil {
			return 0, fmt.Errorf("read output: %w", err)
		}
		if len(msgs) == 0 {
			return 0, io.EOF
		}
		for _, m := range msgs {
			d, _ := m.Values["d"].(string)
			r.pending = append(r.pending, d...)
			r.last = m.ID
		}
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// Wait blocks until the stream has entries past what was read, ctx is
// done, or timeout passes; it reports whether there are.
func (r *streamReader) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	if len(r.pending) > 0 {
		return true, nil
	}
	res, err := r.o.follow.XRead(ctx, &redis.XReadArgs{Streams: []string{r.key, r.last}, Count: 1, Block: timeout}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, err
	}
	return len(res) > 0 && len(res[0].Messages) > 0, nil
}

func (r *streamReader) Close() error { return nil }
