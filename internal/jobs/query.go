package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Get returns the job's record: the live one while the job runs here, else
// the stored one.
func (r *Registry) Get(ctx context.Context, id string) (Record, error) {
	if err := r.reachable(); err != nil {
		return Record{}, err
	}
	j := r.Live(id)
	if j != nil && r.cluster == nil {
		return j.Record(), nil
	}
	// In a cluster the shared record is read even for a job running
	// here: Redis away is then a 503 for every job alike.
	rec, err := r.store.Get(ctx, id)
	if err != nil {
		return rec, err
	}
	if j != nil {
		return j.Record(), nil
	}
	return r.withStoredCounts(rec), nil
}

// withStoredCounts gives rec, the record of a job that runs on another
// node, the byte counts of its output so far: its stored record has them
// only once it has ended.
func (r *Registry) withStoredCounts(rec Record) Record {
	if rec.State == Running {
		rec.StdoutBytes, rec.StdoutTruncated = r.storedSize(rec.ID, Stdout)
		rec.StderrBytes, rec.StderrTruncated = r.storedSize(rec.ID, Stderr)
	}
	return rec
}

// reachable is ErrUnavailable while a cluster node's Redis is away: the
// job API answers alike for every job then, those running here included,
// and a load balancer sends the clients elsewhere.
func (r *Registry) reachable() error {
	if r.cluster != nil && !r.cluster.Reachable() {
		return fmt.Errorf("job api: %w", ErrUnavailable)
	}
	return nil
}

// Live returns the job if it is queued or running in this process.
func (r *Registry) Live(id string) *Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[id]
}

// List returns stored records matching f, newest first, and the cursor of
// the next page. Live jobs show their current byte counts.
func (r *Registry) List(ctx context.Context, f Filter) ([]Record, string, error) {
	if err := r.reachable(); err != nil {
		return nil, "", err
	}
	recs, next, err := r.store.List(ctx, f)
	if err != nil {
		return nil, "", err
	}
	for i := range recs {
		if j := r.Live(recs[i].ID); j != nil {
			recs[i] = j.Record()
		} else if r.cluster != nil {
			recs[i] = r.withStoredCounts(recs[i])
		}
	}
	return recs, next, nil
}

// Cancel ends a queued or running job with reason and returns its final
// record once it has ended, wherever in the cluster it runs. An ended
// job's record is returned unchanged.
func (r *Registry) Cancel(ctx context.Context, id, reason string) (Record, error) {
	if err := r.reachable(); err != nil {
		return Record{}, err
	}
	j := r.Live(id)
	if j == nil {
		rec, err := r.store.Get(ctx, id)
		if err != nil || r.cluster == nil || rec.State.Ended() {
			return rec, err
		}
		return r.cancelElsewhere(ctx, rec, reason)
	}
	j.Cancel(reason)
	select {
	case <-j.Done():
		return j.Record(), nil
	case <-ctx.Done():
		return Record{}, ctx.Err()
	}
}

// Delete removes an ended job and its output.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if err := r.reachable(); err != nil {
		return err
	}
	if r.Live(id) != nil {
		return ErrRunning
	}
	rec, err := r.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if !rec.State.Ended() {
		// Stored as live but not ours: a crash left it, recovery resolves it.
		return ErrRunning
	}
	return r.remove(ctx, id)
}

// remove deletes the job's output, then its record. In this order a crash
// in between leaves a record without output, which the next retention
// sweep removes, rather than output files that no record names and that
// nothing would ever remove.
func (r *Registry) remove(ctx context.Context, id string) error {
	if err := r.output.Remove(id); err != nil {
		return fmt.Errorf("remove output of job %s: %w", id, err)
	}
	return r.store.Delete(ctx, id)
}

// Copy copies the stream's stored output to w. With follow, for a job not
// ended it goes on with what comes until the job ends or ctx is done. Each
// Write to w carries what one read found, so a flushing writer shows
// output promptly.
func (r *Registry) Copy(ctx context.Context, id string, s Stream, w io.Writer, follow bool) error {
	if err := r.reachable(); err != nil {
		return err
	}
	j := r.Live(id)
	var rec Record
	if j == nil || r.cluster != nil {
		var err error
		if rec, err = r.store.Get(ctx, id); err != nil {
			return err
		}
	}
	rd, err := r.output.Open(id, s)
	if err != nil {
		return err
	}
	defer rd.Close()
	buf := make([]byte, 32<<10)
	if wr, ok := rd.(waitingReader); ok && follow {
		ended := func(ctx context.Context) (bool, error) {
			if j != nil {
				return isClosed(j.Done()), nil
			}
			if rec.State.Ended() {
				return true, nil
			}
			var err error
			rec, err = r.store.Get(ctx, id)
			return rec.State.Ended(), err
		}
		return followWaiting(ctx, wr, w, buf, ended)
	}
	for {
		// Look at the job before draining: output written before it
		// ended is then certain to be read by the drain below.
		var changed <-chan struct{}
		ended := j == nil || !follow || isClosed(j.Done())
		if !ended {
			changed = j.outputChanged()
		}
		if err := drain(rd, w, buf); err != nil {
			return err
		}
		if ended {
			return nil
		}
		select {
		case <-changed:
		case <-j.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// drain copies rd to w until rd has nothing more for now.
func drain(rd io.Reader, w io.Writer, buf []byte) error {
	for {
		n, err := rd.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// A waitingReader is output that can be waited for: the cluster's, where
// output written on another node arrives without a local write to wake
// the follower.
type waitingReader interface {
	io.Reader
	// Wait returns when there is more to read, ctx is done, or timeout
	// has passed; it reports whether there is more.
	Wait(ctx context.Context, timeout time.Duration) (bool, error)
}

// followPoll bounds how long a follower waits for output before it looks
// whether the job has ended.
const followPoll = 250 * time.Millisecond

// followWaiting copies rd to w until ended says the job has ended (asked before
// each drain, so that what was written before the end is read) or ctx is
// done.
func followWaiting(ctx context.Context, rd waitingReader, w io.Writer, buf []byte, ended func(context.Context) (bool, error)) error {
	for {
		done, err := ended(ctx)
		if err != nil {
			return err
		}
		if err := drain(rd, w, buf); err != nil {
			return err
		}
		if done {
			return nil
		}
		if _, err := rd.Wait(ctx, followPoll); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}
