package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/execgw/execgw/internal/logkey"
	"github.com/execgw/execgw/internal/runner"
)

// Recover resolves the jobs a previous instance left queued or running:
// whatever is left of their process groups is killed and their records say
// interrupted. Call it once, before serving.
func (r *Registry) Recover(ctx context.Context) error {
	const msg = "job interrupted by the previous instance's end"
	r.sweepCgroups()
	if r.cluster != nil {
		// The process groups of this machine are in its own store; the
		// cluster's records of this node's jobs may already say
		// interrupted (another node found it dead).
		groups, err := r.groups.Unfinished(ctx)
		if err != nil {
			return err
		}
		for _, rec := range groups {
			r.sweepLeftovers(rec)
			if err := r.groups.Delete(ctx, rec.ID); err != nil {
				return err
			}
		}
		return r.recoverNode(ctx, r.cluster.Name(), msg)
	}
	recs, err := r.store.Unfinished(ctx)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		r.sweepLeftovers(rec)
		if err := r.markInterrupted(ctx, rec, msg); err != nil {
			return err
		}
	}
	return nil
}

// sweepLeftovers kills what is left of the process group of a job of an
// earlier instance of this gateway.
func (r *Registry) sweepLeftovers(rec Record) {
	if rec.Pgid <= 0 {
		return
	}
	log := r.recordLog(rec)
	n, err := runner.SweepGroup(runner.Group{Pgid: rec.Pgid, LeaderStart: rec.ProcStart, Sid: rec.Sid, BootID: rec.BootID}, r.startTicks)
	if err != nil {
		log.Error().Err(err).Int(logkey.Pgid, rec.Pgid).Msg("sweep process group of interrupted job")
	} else if n > 0 {
		log.Warn().Int(logkey.Pgid, rec.Pgid).Int("killed", n).Msg("killed processes left by interrupted job")
	}
}

// markInterrupted records interrupted a job whose node ended without
// ending it, with msg in the log.
func (r *Registry) markInterrupted(ctx context.Context, rec Record, msg string) error {
	log := r.recordLog(rec)
	// A job that was still queued never started: its started_at stays
	// unset, as for a job canceled in the queue.
	rec.State = Interrupted
	rec.EndedAt = r.now().UTC()
	rec.StdoutBytes, rec.StdoutTruncated = r.storedSize(rec.ID, Stdout)
	rec.StderrBytes, rec.StderrTruncated = r.storedSize(rec.ID, Stderr)
	if err := r.store.Put(ctx, rec); err != nil {
		return err
	}
	if r.cluster != nil {
		r.cluster.Ended(ctx, rec.ID)
	}
	log.Warn().Str(logkey.State, string(rec.State)).Msg(msg)
	return nil
}

// storedSize is the stored bytes of a stream: after a crash that is all
// that is known of what the process wrote, and for a job running on
// another node all that this one knows.
func (r *Registry) storedSize(id string, s Stream) (int64, bool) {
	n, err := r.output.Size(id, s)
	if err != nil {
		return 0, false
	}
	return n, n >= r.limits.OutputLimit
}

// Drain refuses new jobs from now on; running and queued ones go on.
func (r *Registry) Drain() {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
}

// Shutdown drains, lets the jobs finish until ctx is done, then cancels
// what is left (reason shutdown, queued jobs too) and waits for every
// record to be stored. Each cancel ends within the command's kill_grace.
func (r *Registry) Shutdown(ctx context.Context) {
	r.Drain()
	allDone := make(chan struct{})
	go func() { // exits when every job has ended; no job can be added now
		r.jobsWG.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
		return
	case <-ctx.Done():
	}
	r.mu.Lock()
	// From now on a slot given back by a canceled job must not start a
	// queued one that is about to be canceled too.
	r.canceling = true
	left := make([]*Job, 0, len(r.live))
	for _, j := range r.live {
		left = append(left, j)
	}
	r.mu.Unlock()
	if len(left) > 0 {
		r.log.Warn().Int("jobs", len(left)).Msg("shutdown grace elapsed; canceling jobs")
	}
	for _, j := range left {
		j.Cancel(ReasonShutdown)
	}
	<-allDone
}

// Active is the number of queued and running jobs.
func (r *Registry) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// retain removes ended jobs older than the retention, in the background,
// until ctx is done.
func (r *Registry) retain(ctx context.Context) {
	if r.limits.Retention <= 0 {
		return
	}
	every := min(max(r.limits.Retention/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		// In a cluster one node at a time does it.
		if ok, _ := r.mayRemoveExpired(ctx, every); ok {
			r.removeExpired(ctx, r.now().Add(-r.limits.Retention))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Registry) mayRemoveExpired(ctx context.Context, every time.Duration) (bool, error) {
	if r.cluster == nil {
		return true, nil
	}
	return r.cluster.TryLock(ctx, "retention", every)
}

func (r *Registry) removeExpired(ctx context.Context, before time.Time) {
	const batch = 100
	for ctx.Err() == nil {
		ids, err := r.store.EndedBefore(ctx, before, batch)
		if err != nil {
			r.log.Error().Err(err).Msg("list expired jobs")
			return
		}
		for _, id := range ids {
			// A job deleted meanwhile (DELETE) is not in the way.
			if err := r.remove(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
				r.log.Error().Err(err).Str(logkey.JobID, id).Msg("remove expired job")
				return
			}
		}
		if len(ids) > 0 {
			r.log.Info().Int("jobs", len(ids)).Msg("removed expired jobs")
		}
		if len(ids) < batch {
			return
		}
	}
}
