package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/logkey"
)

// What a registry does as a node of a cluster (Options.Cluster): detached
// jobs go to the cluster's queue and run on whichever node takes them;
// cancels reach the node that runs the job; a node that dies has its jobs
// recorded interrupted by another; a node cut off from Redis stops its own.

// takePoll is how often a node looks at the cluster's queue without being
// told of a new job: a slot freed on another node says nothing here.
const takePoll = 250 * time.Millisecond

// Detach creates a detached job and returns its record. In a cluster a job
// without input joins the cluster's queue, from which any node may take
// it; a job with input (a spooled body) runs here, as Submit.
func (r *Registry) Detach(ctx context.Context, req Request) (Record, error) {
	req.Detached = true
	if r.cluster == nil || req.Stdin != nil {
		j, err := r.Submit(ctx, req)
		if err != nil {
			return Record{}, err
		}
		return j.Record(), nil
	}
	r.mu.Lock()
	draining := r.draining
	r.mu.Unlock()
	if draining {
		return Record{}, ErrDraining
	}
	if err := r.reachable(); err != nil {
		return Record{}, err
	}
	rec := newRecord(req, r.now().UTC())
	if err := r.cluster.Enqueue(ctx, rec, req.Values); err != nil {
		return Record{}, err
	}
	log := r.recordLog(rec)
	log.Info().Str(logkey.State, string(Queued)).Msg("job queued")
	r.wakeTaker()
	return rec, nil
}

// newRecord is the record of a new job, queued.
func newRecord(req Request, now time.Time) Record {
	return Record{
		ID:        newID(now),
		Command:   req.Command.Name,
		Params:    req.Invocation.Params,
		State:     Queued,
		Owner:     req.Owner,
		CreatedAt: now,
	}
}

func newID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String()
}

func (r *Registry) recordLog(rec Record) zerolog.Logger {
	return r.log.With().
		Str(logkey.JobID, rec.ID).
		Str(logkey.Command, rec.Command).
		Interface(logkey.Params, rec.Params).
		Logger()
}

// wakeTaker makes the node look at the cluster's queue (and at the slots
// its own waiting jobs need) now.
func (r *Registry) wakeTaker() {
	select {
	case r.takeWake <- struct{}{}:
	default:
	}
}

// takeQueued takes jobs from the cluster's queue while this node has room,
// until ctx is done.
func (r *Registry) takeQueued(ctx context.Context) {
	limits := make(map[string]int, len(r.commands))
	for name, cmd := range r.commands {
		limits[name] = max(cmd.MaxConcurrent, 0)
	}
	poll := time.NewTicker(takePoll)
	defer poll.Stop()
	for {
		r.acquireWaitingSlots(ctx)
		for ctx.Err() == nil && r.takeOne(ctx, limits) {
		}
		select {
		case <-ctx.Done():
			return
		case <-r.takeWake:
		case <-r.cluster.Queued():
		case <-poll.C:
		}
	}
}

// takeOne takes and starts one job if this node has room for it; it
// reports whether it did.
func (r *Registry) takeOne(ctx context.Context, limits map[string]int) bool {
	r.mu.Lock()
	if r.draining || r.running >= r.limits.MaxConcurrent || r.cluster.CutOff() {
		r.mu.Unlock()
		return false
	}
	r.running++ // the slot of the job about to be taken
	r.mu.Unlock()
	rec, params, ok, err := r.cluster.Take(ctx, limits)
	if err != nil || !ok { // an error is the cluster's to count and log
		r.mu.Lock()
		r.running--
		r.admitQueuedLocked()
		r.mu.Unlock()
		return false
	}
	r.startTaken(rec, params)
	return true
}

// startTaken runs a job this node took from the cluster's queue, in the
// slot takeOne reserved for it.
func (r *Registry) startTaken(rec Record, params map[string]string) {
	ctx := context.Background()
	cmd := r.commands[rec.Command] // the queue gives only commands of this node
	inv, bindErr := cmd.Bind(params)
	rec.Node = r.cluster.Name()
	j := &Job{
		reg:         r,
		cmd:         cmd,
		env:         inv.Env,
		detached:    true,
		startErr:    bindErr,
		taken:       true,
		clusterSlot: true, // taking it took its slot
		admitted:    make(chan struct{}),
		stopReq:     make(chan struct{}),
		done:        make(chan struct{}),
		wake:        make(chan struct{}),
		rec:         rec,
	}
	log := r.jobLog(j)
	var err error
	if j.stdout, err = r.newSink(j, Stdout, nil); err == nil {
		if j.stderr, err = r.newSink(j, Stderr, nil); err != nil {
			j.stdout.close()
		}
	}

	r.mu.Lock()
	if err != nil || r.draining {
		// Not started: give it back to the cluster for another node.
		r.running--
		r.admitQueuedLocked()
		r.mu.Unlock()
		if err != nil {
			log.Error().Err(err).Msg("cannot take job: its output cannot be stored here")
		} else {
			j.stdout.close()
			j.stderr.close()
		}
		_ = r.output.Remove(rec.ID)
		if err := r.cluster.Requeue(ctx, r.cluster.Name()); err != nil {
			log.Error().Err(err).Msg("give back taken job")
		}
		return
	}
	r.perCmd[cmd.Name]++
	close(j.admitted)
	r.live[rec.ID] = j
	r.jobsWG.Add(1)
	r.mu.Unlock()
	r.activity.Begin()
	// A cancel sent while it was being taken found no live job here.
	if reason, err := r.cluster.CancelRequested(ctx, rec.ID); err == nil && reason != "" {
		j.Cancel(reason)
	}
	go func() { // exits when the job has ended and its record is stored
		defer r.jobsWG.Done()
		j.supervise(log, inv.Argv, false)
	}()
	j.stdout.openLive(true)
	j.stderr.openLive(true)
}

// acquireClusterSlot takes the cluster's slot of j's command for a job that
// runs here without being queued in the cluster; without a free one, j
// waits in this node's queue until acquireWaitingSlots gets it one.
func (r *Registry) acquireClusterSlot(ctx context.Context, j *Job) error {
	if j.cmd.MaxConcurrent <= 0 {
		return nil
	}
	ok, err := r.cluster.Acquire(ctx, j.cmd.Name, j.rec.ID, j.cmd.MaxConcurrent)
	if err != nil {
		return err
	}
	j.clusterSlot = ok // j is not shared yet
	return nil
}

// releaseClusterSlot gives back the slot of a job that never started.
func (r *Registry) releaseClusterSlot(j *Job) {
	r.mu.Lock()
	held := j.clusterSlot
	j.clusterSlot = false
	r.mu.Unlock()
	if r.cluster == nil || !held {
		return
	}
	if err := r.cluster.Release(context.Background(), j.cmd.Name, j.rec.ID); err != nil {
		log := r.jobLog(j)
		log.Error().Err(err).Msg("give back the slot of a job that did not start")
	}
}

// acquireWaitingSlots tries to get a cluster slot for each job waiting here
// for one, oldest first, and starts those it can.
func (r *Registry) acquireWaitingSlots(ctx context.Context) {
	r.mu.Lock()
	var waiting []*Job
	for _, j := range r.queue {
		if j.cmd.MaxConcurrent > 0 && !j.clusterSlot {
			waiting = append(waiting, j)
		}
	}
	r.mu.Unlock()
	for _, j := range waiting {
		ok, err := r.cluster.Acquire(ctx, j.cmd.Name, j.rec.ID, j.cmd.MaxConcurrent)
		if err != nil {
			return
		}
		if !ok {
			continue
		}
		r.mu.Lock()
		queued := isQueued(r.queue, j)
		if queued {
			j.clusterSlot = true
			r.admitQueuedLocked()
		}
		r.mu.Unlock()
		if !queued { // it ended meanwhile: nothing holds the slot
			_ = r.cluster.Release(ctx, j.cmd.Name, j.rec.ID)
		}
	}
}

func isQueued(queue []*Job, j *Job) bool {
	for _, q := range queue {
		if q == j {
			return true
		}
	}
	return false
}

// cancelElsewhere cancels a job this node does not hold: in the cluster's
// queue it is canceled at once; running on another node, that node is
// asked, and the answer waits for the record to say it ended.
func (r *Registry) cancelElsewhere(ctx context.Context, rec Record, reason string) (Record, error) {
	if rec.State == Queued && rec.Node == "" {
		final := rec
		final.State, final.CancelReason, final.EndedAt = Canceled, reason, r.now().UTC()
		ok, err := r.cluster.Unqueue(ctx, final)
		if err != nil {
			return Record{}, err
		}
		if ok {
			r.cluster.Ended(ctx, final.ID)
			r.metrics.ended(final)
			logEnd(r.recordLog(final), final)
			return final, nil
		}
		// A node took it meanwhile: it is canceled there.
	}
	if err := r.cluster.RequestCancel(ctx, rec.ID, reason); err != nil {
		return Record{}, err
	}
	final := rec
	err := r.cluster.WaitEnded(ctx, rec.ID, func(ctx context.Context) (bool, error) {
		got, err := r.store.Get(ctx, rec.ID)
		if err != nil {
			return false, err
		}
		final = got
		return got.State.Ended(), nil
	})
	if err != nil {
		return Record{}, err
	}
	if !final.State.Ended() { // woken by the end message
		return r.store.Get(ctx, rec.ID)
	}
	return final, nil
}

// CancelHere cancels job id if it runs (or waits) on this node: a cancel
// another node was asked for.
func (r *Registry) CancelHere(id, reason string) {
	if j := r.Live(id); j != nil {
		j.Cancel(reason)
	}
}

// WatchInterval is how often a node of a cluster whose node timeout is
// timeout looks whether it is cut off, and for dead nodes.
func WatchInterval(timeout time.Duration) time.Duration {
	return min(timeout/10, 500*time.Millisecond)
}

// watchCluster stops this node's jobs when it is cut off from Redis for
// longer than the node timeout, and resolves the jobs of dead nodes, until
// ctx is done.
func (r *Registry) watchCluster(ctx context.Context) {
	timeout := r.cluster.Timeout()
	// Cut off, the node stops its jobs (a margin before the timeout: see
	// cluster.Nodes.CutOff); a dead node's jobs are recorded interrupted
	// within a tick of it.
	t := time.NewTicker(WatchInterval(timeout))
	defer t.Stop()
	cutOff := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch {
		case r.cluster.CutOff():
			if !cutOff {
				r.log.Error().Dur("node_timeout", timeout).
					Msg("cut off from redis for longer than the node timeout: stopping this node's jobs, which the cluster records interrupted")
			}
			cutOff = true
			r.interruptAll()
		case r.cluster.Settled():
			cutOff = false
			r.storeUnstoredEnds(ctx)
			r.recoverDeadNodes(ctx)
		default:
			cutOff = false
		}
	}
}

// storeUnstoredEnds stores the final records that Redis could not take
// when their jobs ended; a record the cluster has meanwhile written
// otherwise (interrupted) stays as it is.
func (r *Registry) storeUnstoredEnds(ctx context.Context) {
	r.mu.Lock()
	pending := r.unstoredEnds
	r.unstoredEnds = nil
	r.mu.Unlock()
	for i, rec := range pending {
		err := r.store.Put(ctx, rec)
		switch {
		case errors.Is(err, ErrUnavailable):
			r.mu.Lock()
			r.unstoredEnds = append(r.unstoredEnds, pending[i:]...)
			r.mu.Unlock()
			return
		case err == nil:
			r.cluster.Ended(ctx, rec.ID)
			log := r.recordLog(rec)
			log.Info().Str(logkey.State, string(rec.State)).Msg("ended job stored after redis came back")
		case !errors.Is(err, ErrFenced):
			log := r.recordLog(rec)
			log.Error().Err(err).Str(logkey.State, string(rec.State)).Msg("store ended job")
		}
	}
}

// interruptAll stops every job of this node, queued or running, as
// interrupted.
func (r *Registry) interruptAll() {
	r.mu.Lock()
	live := make([]*Job, 0, len(r.live))
	for _, j := range r.live {
		live = append(live, j)
	}
	r.mu.Unlock()
	for _, j := range live {
		j.requestStop(stop{state: Interrupted})
	}
}

// recoverDeadNodes records the jobs of every dead node interrupted and
// queues again what they took without starting, each dead node by one
// node of the cluster.
func (r *Registry) recoverDeadNodes(ctx context.Context) {
	dead, err := r.cluster.Dead(ctx)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) { // already logged once per episode
			r.log.Error().Err(err).Msg("list the dead nodes")
		}
		return
	}
	for _, node := range dead {
		if node == r.cluster.Name() {
			continue
		}
		ok, err := r.cluster.TryLock(ctx, "recover:"+node, r.cluster.Timeout())
		if err != nil && !errors.Is(err, ErrUnavailable) {
			r.log.Error().Err(err).Str(logkey.Peer, node).Msg("lock the recovery of a dead node")
		}
		if !ok {
			continue
		}
		if err := r.recoverNode(ctx, node, "job interrupted: its node is dead"); err != nil {
			r.log.Error().Err(err).Str(logkey.Peer, node).Msg("recover the jobs of a dead node")
			continue
		}
		if err := r.cluster.Forget(ctx, node); err != nil {
			r.log.Error().Err(err).Str(logkey.Peer, node).Msg("forget a dead node")
		}
	}
}

// recoverNode queues again what node took without starting, frees the
// slots it may have left, and records its other unfinished jobs
// interrupted, each with msg.
func (r *Registry) recoverNode(ctx context.Context, node, msg string) error {
	if err := r.cluster.Reclaim(ctx, node); err != nil {
		return err
	}
	recs, err := r.store.Unfinished(ctx)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.Node != node {
			continue
		}
		if err := r.markInterrupted(ctx, rec, msg); err != nil {
			return err
		}
	}
	return nil
}
