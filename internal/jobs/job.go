package jobs

import (
	"io"
	"sync"
	"time"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/logkey"
	"github.com/execgw/execgw/internal/runner"
)

// stop is why a job was asked to end before its process did.
type stop struct {
	state  State  // Canceled or TimedOut
	reason string // the cancel reason, with Canceled
}

// Job is a job of this process: queued or running, or just ended and still
// held by a caller. Its record is the truth while it lives; once ended, the
// store has the same record.
type Job struct {
	reg *Registry
	cmd *config.Command
	env []string // the child's environment, as Bind rendered it
	// startErr, when set, is why the job cannot start (its parameters
	// no longer bind on the node that took it): it ends failed.
	startErr error
	// refused says Submit refused the job after its process started
	// (its record could not be stored): its output is dropped.
	refused  bool
	detached bool
	stdin    io.Reader

	stdout, stderr *sink

	// admitted is closed when the job may start; stopReq when somebody
	// wants it to end; done when its final record is stored.
	admitted chan struct{}
	stopReq  chan struct{}
	stopOnce sync.Once
	stopWhy  stop
	stopAt   time.Time // when the stop was decided; set with stopWhy
	done     chan struct{}
	// taken says the job came from the cluster's queue: its start is
	// claimed first. lost says the cluster gave it to another node
	// before it started here: this node records nothing of it.
	taken, lost bool
	// clusterSlot says the job holds a slot of its command in the
	// cluster; guarded by the registry's mu.
	clusterSlot bool

	mu      sync.Mutex
	rec     Record
	proc    *runner.Process
	cg      *cgroup.Job   // nil without per-job cgroups
	wake    chan struct{} // closed when new output was stored
	watched bool          // someone waits on wake
}

// ID is the job's id.
func (j *Job) ID() string { return j.rec.ID }

// Done is closed once the job has ended and its record is stored.
func (j *Job) Done() <-chan struct{} { return j.done }

// Record returns the job's current record, byte counts included.
func (j *Job) Record() Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	rec := j.rec
	if !rec.State.Ended() {
		rec.StdoutBytes, rec.StdoutTruncated = j.stdout.counts()
		rec.StderrBytes, rec.StderrTruncated = j.stderr.counts()
	}
	return rec
}

// Cancel asks the job to end with the given cancel reason. It returns at
// once; Done says when the job has ended. Only the first request counts.
func (j *Job) Cancel(reason string) {
	j.requestStop(stop{state: Canceled, reason: reason})
}

func (j *Job) requestStop(s stop) {
	j.stopOnce.Do(func() {
		j.stopWhy, j.stopAt = s, j.reg.now()
		close(j.stopReq)
	})
}

// outputFailed records and logs that storing stream s failed; each sink
// calls it at most once. The first failure of the job names the cause.
func (j *Job) outputFailed(s Stream, err error) {
	j.mu.Lock()
	if j.rec.OutputError == "" {
		j.rec.OutputError = storeErrorMessage(s, err)
	}
	state := j.rec.State
	j.mu.Unlock()
	log := j.reg.jobLog(j)
	log.Error().Err(err).Str(logkey.Stream, string(s)).Str(logkey.State, string(state)).
		Msg("job output not stored")
}

// outputWritten wakes the followers of the job's stored output.
func (j *Job) outputWritten() {
	j.mu.Lock()
	if j.watched {
		close(j.wake)
		j.wake = make(chan struct{})
		j.watched = false
	}
	j.mu.Unlock()
}

// outputChanged returns a channel closed at the next write of output.
func (j *Job) outputChanged() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.watched = true
	return j.wake
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
