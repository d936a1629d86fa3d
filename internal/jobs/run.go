package jobs

// The life of one job: its process started, watched until it ends or is
// stopped, and its final record decided and stored.

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/logkey"
	"github.com/execgw/execgw/internal/runner"
)

// start starts the admitted job's process and stores the running record.
// A process that cannot start ends the job as failed. The error says the
// process runs but its record could not be stored.
func (j *Job) start(log zerolog.Logger, argv []string) error {
	if j.taken && !j.claim(log) {
		return nil
	}
	env := j.env
	if env == nil { // an Invocation not made by Bind
		env = j.cmd.Environ()
	}
	spec := runner.Spec{
		Argv:      argv,
		Dir:       j.cmd.Dir,
		Env:       env,
		Stdin:     j.stdin,
		Stdout:    j.stdout,
		Stderr:    j.stderr,
		KillGrace: j.cmd.KillGrace,
		// The runner logs only about a started process: the escalations
		// of a running job.
		Log:        log.With().Str(logkey.State, string(Running)).Logger(),
		Credential: credential(j.cmd),
		Umask:      j.cmd.Umask,
		Rlimits:    rlimits(j.cmd),
	}
	var err error
	if m := j.reg.cgroups; m != nil {
		var cg *cgroup.Job
		cg, err = m.NewJob(j.rec.ID, cgroup.Limits{MemoryMax: j.cmd.MemoryMax, PidsMax: j.cmd.PidsMax, CPUMax: j.cmd.CPUMax})
		if err == nil {
			j.cg, spec.Cgroup = cg, cg
		}
	}
	var proc *runner.Process
	if err == nil && j.startErr != nil {
		err = j.startErr
	}
	if err == nil {
		proc, err = runner.Start(spec)
	}
	now := j.reg.now().UTC()
	j.mu.Lock()
	j.rec.StartedAt = now
	if err != nil {
		j.mu.Unlock()
		j.releaseCgroup(log)
		// The job ends failed; "job ended" follows.
		log.Error().Err(err).Str(logkey.State, string(Failed)).Msg("job could not start")
		return nil
	}
	j.proc = proc
	j.rec.State = Running
	j.rec.Pid = proc.Pid()
	j.rec.Pgid = proc.Pid()
	j.rec.ProcStart = proc.StartTicks()
	j.rec.BootID = j.reg.bootID
	j.rec.Sid = j.reg.sid
	rec := j.rec
	j.mu.Unlock()

	j.reg.metrics.startedJob(rec)
	log = log.With().Str(logkey.State, string(Running)).Logger()
	log.Info().Int(logkey.Pid, rec.Pid).Msg("job started")
	if g := j.reg.groups; g != nil {
		// Before the shared record: a crash in between must not leave a
		// group that the next start does not know of.
		if err := g.Put(context.Background(), rec); err != nil {
			log.Error().Err(err).Msg("store the job's process group on this machine")
		}
	}
	if err := j.reg.store.Put(context.Background(), rec); err != nil {
		// A job started from the queue runs on, and its end will be
		// stored (its queued record is there); only a crash before then
		// would miss its process group.
		log.Error().Err(err).Msg("store running job")
		return err
	}
	return nil
}

// claim tells the cluster that this node starts j, a job it took from the
// queue, before its process exists: were the node to die between the start
// and the running record, the job would otherwise be queued again and run
// twice. While Redis is away it tries again, until the job is stopped (a
// node cut off stops its jobs). It reports whether the job may start; a
// claim Redis refuses for another reason makes the job fail to start.
func (j *Job) claim(log zerolog.Logger) bool {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := j.reg.cluster.Claim(context.Background(), j.Record())
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrFenced):
			j.lost = true
			log.Warn().Msg("job given back to the cluster's queue before it started here: another node runs it")
			return false
		case !errors.Is(err, ErrUnavailable):
			j.startErr = err
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-j.stopReq:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// supervise waits for the job to be admitted, to end by itself, to be
// stopped or to time out, then stores its final record. started says
// whether Submit has already started the process.
func (j *Job) supervise(log zerolog.Logger, argv []string, started bool) {
	if !started {
		select {
		case <-j.admitted:
		case <-j.stopReq:
		}
		if isClosed(j.stopReq) {
			// Stopped while waiting, or admitted in the same instant:
			// nothing was started, nothing needs killing.
			j.finish(log, runner.Result{EndedAt: j.reg.now()})
			return
		}
		_ = j.start(log, argv) // logged; its queued record is stored
	}
	j.mu.Lock()
	proc := j.proc
	j.mu.Unlock()
	if proc == nil {
		j.finish(log, runner.Result{EndedAt: j.reg.now()})
		return
	}

	var timeout <-chan time.Time
	if j.cmd.Timeout > 0 {
		t := time.NewTimer(j.cmd.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-proc.Done():
	case <-j.stopReq:
		proc.Cancel(errors.New(j.stopWhy.reason))
	case <-timeout:
		j.requestStop(stop{state: TimedOut})
		proc.Cancel(errors.New("timeout"))
	}
	res := proc.Wait()
	// The runner has swept the group (and emptied the cgroup) before Wait
	// returns: the tree is gone now. A stop that came after the process
	// exited stopped nothing (res.Cause is nil) and is not timed.
	if isClosed(j.stopReq) && res.Cause != nil {
		reason := j.stopWhy.reason
		switch j.stopWhy.state {
		case TimedOut:
			reason = cancelTimeout
		case Interrupted:
			reason = cancelCutOff
		}
		j.reg.metrics.cancel.WithLabelValues(reason).Observe(j.reg.now().Sub(j.stopAt).Seconds())
	}
	j.finish(log, res)
}

// finish stores the final record, gives back the slot and closes done.
func (j *Job) finish(log zerolog.Logger, res runner.Result) {
	r := j.reg
	if j.lost {
		j.stdout.abort()
		j.stderr.abort()
		r.mu.Lock()
		r.forgetLocked(j)
		r.mu.Unlock()
		close(j.done)
		r.activity.End()
		return
	}
	if j.refused {
		// Nobody will read it: it is removed with the job.
		j.stdout.abort()
		j.stderr.abort()
	} else {
		j.stdout.close()
		j.stderr.close()
	}
	if c, ok := j.stdin.(io.Closer); ok {
		// The process is gone: nothing reads it any more.
		_ = c.Close()
	}

	j.mu.Lock()
	rec := &j.rec
	rec.EndedAt = res.EndedAt.UTC()
	rec.StdoutBytes, rec.StdoutTruncated = j.stdout.counts()
	rec.StderrBytes, rec.StderrTruncated = j.stderr.counts()
	if res.Signal != 0 {
		rec.Signal = unix.SignalName(res.Signal)
	} else if j.proc != nil && res.Err == nil {
		code := res.ExitCode
		rec.ExitCode = &code
	}
	stats := j.releaseCgroup(log)
	rec.MemoryPeak, rec.CPUTimeMs = stats.MemoryPeak, stats.CPUTime.Milliseconds()
	var why *stop
	if isClosed(j.stopReq) {
		why = &j.stopWhy
	}
	var stdinErr error
	if se := (*runner.StdinError)(nil); errors.As(res.Cause, &se) {
		stdinErr = se.Err
	}
	end := decideEnd(why, j.proc != nil, res, stats, stdinErr)
	rec.State, rec.CancelReason, rec.Limit = end.state, end.cancelReason, end.limit
	final := j.rec
	j.mu.Unlock()

	r.storeEnd(log, final)
	if r.groups != nil && j.proc != nil {
		if err := r.groups.Delete(context.Background(), final.ID); err != nil {
			log.Error().Err(err).Msg("forget the job's process group on this machine")
		}
	}
	r.mu.Lock()
	r.forgetLocked(j)
	r.mu.Unlock()
	r.metrics.ended(final)
	logEnd(log, final)
	close(j.done)
	r.activity.End()
}

// storeEnd stores a job's final record. In a cluster a record that cannot
// reach Redis is tried again for as long as the cluster may still believe
// the job runs here, and after that by watchCluster until Redis is back;
// then its waiters are told.
func (r *Registry) storeEnd(log zerolog.Logger, final Record) {
	ctx := context.Background()
	err := r.store.Put(ctx, final)
	if r.cluster != nil {
		giveUp := time.Now().Add(2 * r.cluster.Timeout())
		for wait := 100 * time.Millisecond; errors.Is(err, ErrUnavailable) && time.Now().Before(giveUp); wait = min(2*wait, time.Second) {
			time.Sleep(wait)
			err = r.store.Put(ctx, final)
		}
	}
	switch {
	case errors.Is(err, ErrFenced):
		log.Warn().Str(logkey.State, string(final.State)).
			Msg("the cluster recorded this job's end while this node was cut off; its record stays as the cluster wrote it")
	case errors.Is(err, ErrUnavailable):
		log.Error().Err(err).Str(logkey.State, string(final.State)).Msg("store ended job: tried again once redis is back")
		r.mu.Lock()
		r.unstoredEnds = append(r.unstoredEnds, final)
		r.mu.Unlock()
	case err != nil:
		log.Error().Err(err).Str(logkey.State, string(final.State)).Msg("store ended job")
	case r.cluster != nil:
		r.cluster.Ended(ctx, final.ID)
	}
}

// ending is how a job ended: its final state, and the cancel reason or the
// limit that explains it.
type ending struct {
	state        State
	cancelReason string
	limit        string
}

// decideEnd is the final state of a job, from what is known once it is
// over: why it was asked to stop (nil: nobody asked), whether a process
// started, the runner's result, the cgroup's accounting (zero without one)
// and the error that ended reading its stdin (nil: none).
func decideEnd(why *stop, started bool, res runner.Result, stats cgroup.Stats, stdinErr error) ending {
	switch {
	case why != nil && (!started || res.Cause != nil):
		// Stopped before it started, or the stop reached the process:
		// the runner records a cause only for a Cancel that came before
		// the process exited. A stop that came after the exit (while
		// the output was still being read) changes nothing: the process
		// ended by itself.
		return ending{state: why.state, cancelReason: why.reason}
	case stdinErr != nil && errors.Is(stdinErr, ErrInputTooLarge):
		return ending{state: Failed, limit: "max_body"}
	case stdinErr != nil:
		return ending{state: Canceled, cancelReason: ReasonClientDisconnected}
	case stats.OOMKilled:
		return ending{state: Failed, limit: "memory_max"}
	case started && res.Signal == 0 && res.ExitCode == 0 && res.Err == nil:
		return ending{state: Succeeded}
	case stats.PidsMaxHit:
		// A fork refused at pids_max explains the failure; on a job that
		// succeeded anyway it is no cause of anything.
		return ending{state: Failed, limit: "pids_max"}
	default:
		return ending{state: Failed}
	}
}

func logEnd(log zerolog.Logger, rec Record) {
	ev := log.Info()
	if rec.State == Failed || rec.State == TimedOut {
		ev = log.Warn()
	}
	ev = ev.Str(logkey.State, string(rec.State)).
		Int(logkey.Pid, rec.Pid).
		Int64(logkey.DurationMs, rec.Duration(rec.EndedAt).Milliseconds()).
		Int64(logkey.StdoutBytes, rec.StdoutBytes).
		Int64(logkey.StderrBytes, rec.StderrBytes)
	if rec.ExitCode != nil {
		ev = ev.Int(logkey.ExitCode, *rec.ExitCode)
	}
	if rec.Signal != "" {
		ev = ev.Str(logkey.Signal, rec.Signal)
	}
	if rec.CancelReason != "" {
		ev = ev.Str(logkey.CancelReason, rec.CancelReason)
	}
	if rec.Limit != "" {
		ev = ev.Str(logkey.Limit, rec.Limit)
	}
	if rec.OutputError != "" {
		ev = ev.Str(logkey.OutputError, rec.OutputError)
	}
	if rec.MemoryPeak > 0 {
		ev = ev.Int64(logkey.MemoryPeak, rec.MemoryPeak)
	}
	if rec.CPUTimeMs > 0 {
		ev = ev.Int64(logkey.CPUTimeMs, rec.CPUTimeMs)
	}
	ev.Msg("job ended")
}
