// Package jobs runs commands as jobs: it admits them under the concurrency
// limits, queues what must wait, starts each through the runner, stores its
// record and output as they change, and ends it on request, on timeout or at
// shutdown. Bound and detached runs are the same kind of job; only who asks
// them to stop differs.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/logkey"
	"github.com/execgw/execgw/internal/runner"
)

// Errors of the registry, for the handler to map to statuses.
var (
	ErrDraining  = errors.New("the gateway is shutting down")
	ErrQueueFull = errors.New("concurrency limit reached and queue full")
	ErrRunning   = errors.New("job is still running")
	// ErrInputTooLarge is what a Request's Stdin returns when the input
	// exceeds its limit; the job then ends failed with limit "max_body".
	ErrInputTooLarge = errors.New("input exceeds max_body")
	// ErrNotStored means a new job was refused because its record could
	// not be stored (a full disk): nothing is acknowledged that is not
	// recorded.
	ErrNotStored = errors.New("the job's record could not be stored")
)

// Limits bound the registry's work.
type Limits struct {
	MaxConcurrent int           // processes at once, all commands together
	MaxQueued     int           // detached jobs waiting for a slot
	OutputLimit   int64         // bytes stored per stream per job
	Retention     time.Duration // ended jobs older than this are removed
}

// Activity is told when work begins and ends; the idle-exit timer counts it.
type Activity interface {
	Begin()
	End()
}

// Options are the registry's dependencies.
type Options struct {
	Store    Store
	Output   OutputStore
	Log      zerolog.Logger
	Limits   Limits
	Metrics  prometheus.Registerer // nil: not exported
	Activity Activity              // nil: not counted
	// Cgroups, when set, puts every job in a cgroup of its own, so that
	// everything it starts dies with it and its limits hold; nil: the
	// process group is the unit.
	Cgroups *cgroup.Manager
	// Now is the registry's clock, for records, queue waits and cancel
	// times; nil: time.Now. Timers (timeouts) run on the runtime's clock.
	Now func() time.Time
	// Cluster, when set, makes the registry a node of a cluster: Store is
	// then the cluster's, detached jobs go to the cluster's queue, and
	// Commands are what this node takes from it.
	Cluster  Cluster
	Commands map[string]*config.Command
	// Groups, in a cluster, keeps on this machine the records of the
	// jobs this node runs, for the crash sweep of its next start.
	Groups Store
}

// Request asks for one run of a command.
type Request struct {
	Command    *config.Command
	Invocation config.Invocation
	Owner      string
	// Values are the parameters as given, secret ones included: in a
	// cluster, a node that takes a queued job binds them again.
	Values   map[string]string
	Detached bool
	// Stdin is the process's standard input; nil is /dev/null. If it is
	// an io.Closer (a spooled request body), the registry closes it once
	// the job has ended, whether it ran or not; if Submit fails, closing it
	// is the caller's.
	Stdin io.Reader
	// Stdout and Stderr receive the output as it is produced, besides the
	// store. A blocking Write slows the process down; nil: store only.
	Stdout, Stderr io.Writer
}

// Registry owns every job of this process.
type Registry struct {
	store    Store
	output   OutputStore
	log      zerolog.Logger
	limits   Limits
	metrics  *metrics
	activity Activity
	bootID   string // recorded with each process group, for the recovery sweep
	sid      int    // the session jobs inherit, recorded likewise
	// startTicks is when the registry was made, on the clock of process
	// start times: nothing of an earlier instance's jobs started later.
	startTicks uint64
	cgroups    *cgroup.Manager
	now        func() time.Time
	cluster    Cluster // nil standalone
	groups     Store   // in a cluster: this node's running jobs, on this machine
	commands   map[string]*config.Command
	takeWake   chan struct{} // a slot here may be free: look at the cluster's queue

	jobsWG sync.WaitGroup // one per job supervisor
	stop   context.CancelFunc
	bgWG   sync.WaitGroup // the retention loop

	mu             sync.Mutex
	draining       bool
	canceling      bool // the shutdown grace is over: queued jobs never start
	live           map[string]*Job
	queue          []*Job // FIFO of jobs waiting for a slot
	running        int
	perCmd         map[string]int
	detachedQueued int
	// unstoredEnds are final records Redis could not take in time; the
	// cluster watcher stores them once it is back.
	unstoredEnds []Record
}

// New returns a registry and starts its retention loop; Close stops it.
func New(opts Options) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registry{
		store:    opts.Store,
		output:   opts.Output,
		log:      opts.Log.With().Str(logkey.Component, "jobs").Logger(),
		limits:   opts.Limits,
		metrics:  newMetrics(opts.Metrics),
		activity: opts.Activity,
		cgroups:  opts.Cgroups,
		now:      opts.Now,
		stop:     cancel,
		live:     map[string]*Job{},
		perCmd:   map[string]int{},
		cluster:  opts.Cluster,
		groups:   opts.Groups,
		commands: opts.Commands,
		takeWake: make(chan struct{}, 1),
	}
	registerGauges(opts.Metrics, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(r.running)
	}, r.queuedCount)
	r.bootID, _ = runner.BootID()
	r.sid, _ = unix.Getsid(0)
	r.startTicks, _ = runner.BootTicks()
	if r.now == nil {
		r.now = time.Now
	}
	if r.activity == nil {
		r.activity = noActivity{}
	}
	r.bgWG.Add(1)
	go func() { // exits when Close cancels ctx
		defer r.bgWG.Done()
		r.retain(ctx)
	}()
	if r.cluster != nil {
		r.bgWG.Add(2)
		go func() { // exits when Close cancels ctx
			defer r.bgWG.Done()
			r.takeQueued(ctx)
		}()
		go func() { // exits when Close cancels ctx
			defer r.bgWG.Done()
			r.watchCluster(ctx)
		}()
	}
	return r
}

// Close stops the retention loop. Call it after Shutdown.
func (r *Registry) Close() {
	r.stop()
	r.bgWG.Wait()
}

// Submit creates a job and starts it, or queues it when the limits say it
// must wait. The record is durable when Submit returns.
func (r *Registry) Submit(ctx context.Context, req Request) (*Job, error) {
	now := r.now().UTC()
	j := &Job{
		reg:      r,
		cmd:      req.Command,
		env:      req.Invocation.Env,
		detached: req.Detached,
		stdin:    req.Stdin,
		admitted: make(chan struct{}),
		stopReq:  make(chan struct{}),
		done:     make(chan struct{}),
		wake:     make(chan struct{}),
		rec:      newRecord(req, now),
	}
	if r.cluster != nil {
		if err := r.reachable(); err != nil {
			return nil, err
		}
		// A job submitted here runs here: its input or its client is here.
		j.rec.Node = r.cluster.Name()
		if err := r.acquireClusterSlot(ctx, j); err != nil {
			return nil, err
		}
	}
	var err error
	if j.stdout, err = r.newSink(j, Stdout, req.Stdout); err != nil {
		r.releaseClusterSlot(j)
		return nil, err
	}
	if j.stderr, err = r.newSink(j, Stderr, req.Stderr); err != nil {
		j.stdout.close()
		r.releaseClusterSlot(j)
		return nil, err
	}

	r.mu.Lock()
	if err := r.admitLocked(j); err != nil {
		r.mu.Unlock()
		j.stdout.close()
		j.stderr.close()
		_ = r.output.Remove(j.rec.ID)
		r.releaseClusterSlot(j)
		return nil, err
	}
	r.live[j.rec.ID] = j
	r.jobsWG.Add(1)
	r.mu.Unlock()
	r.activity.Begin()

	log := r.jobLog(j)
	// A job that starts at once is created and started in one durable
	// write (start stores it running); a queued one is stored now, so that
	// waiting jobs survive a restart as records. In a cluster every job is
	// stored before its process starts: Redis may be gone since the last
	// heartbeat, and a job must not start that cannot be recorded.
	startNow := isClosed(j.admitted)
	if !startNow || r.cluster != nil {
		if err := r.store.Put(ctx, j.rec); err != nil {
			// Nothing started yet: undo the admission so the job never existed.
			r.mu.Lock()
			r.forgetLocked(j)
			r.mu.Unlock()
			r.jobsWG.Done()
			r.activity.End()
			j.stdout.close()
			j.stderr.close()
			_ = r.output.Remove(j.rec.ID)
			r.releaseClusterSlot(j)
			log.Error().Err(err).Str(logkey.State, string(Queued)).Msg("store new job")
			return nil, notStored(err)
		}
		if !startNow {
			log.Info().Str(logkey.State, string(Queued)).Msg("job queued")
		}
	}
	var notStoredErr error
	if startNow {
		notStoredErr = j.start(log, req.Invocation.Argv)
		if notStoredErr != nil {
			// Its process has started, but no answer may acknowledge a
			// job without a record: it is stopped at once, as a job
			// canceled, and forgotten. Its caller will not take its
			// output.
			j.refused = true
			j.stdout.openLive(false)
			j.stderr.openLive(false)
			j.requestStop(stop{state: Canceled})
		}
	}
	go func() { // exits when the job has ended and its record is stored
		defer r.jobsWG.Done()
		j.supervise(log, req.Invocation.Argv, startNow)
	}()
	if notStoredErr != nil {
		<-j.done
		if err := r.remove(context.Background(), j.rec.ID); err != nil && !errors.Is(err, ErrNotFound) {
			log.Error().Err(err).Msg("remove refused job")
		}
		return nil, notStored(notStoredErr)
	}
	j.stdout.openLive(true)
	j.stderr.openLive(true)
	return j, nil
}

// admitLocked takes a slot for j, or queues it, or refuses it.
func (r *Registry) admitLocked(j *Job) error {
	if r.draining {
		return ErrDraining
	}
	// Every queued job is blocked (admitQueuedLocked runs after every
	// change), so a job with room overtakes none that could run: those
	// waiting are all of commands at their own limit, or there is no room
	// at all. A job with room therefore runs at once, whatever the queue
	// holds; it must not be refused because the queue is full.
	if r.hasRoomLocked(j) {
		r.takeSlotLocked(j)
		return nil
	}
	if j.detached {
		if r.detachedQueued >= r.limits.MaxQueued {
			return ErrQueueFull
		}
		r.detachedQueued++
	}
	r.queue = append(r.queue, j)
	// A job of another command may have room although the head may not.
	r.admitQueuedLocked()
	return nil
}

func (r *Registry) hasRoomLocked(j *Job) bool {
	if r.running >= r.limits.MaxConcurrent {
		return false
	}
	if r.cluster != nil {
		// The command's limit is the cluster's: its slot says.
		return j.cmd.MaxConcurrent <= 0 || j.clusterSlot
	}
	return j.cmd.MaxConcurrent <= 0 || r.perCmd[j.cmd.Name] < j.cmd.MaxConcurrent
}

func (r *Registry) takeSlotLocked(j *Job) {
	r.running++
	r.perCmd[j.cmd.Name]++
	close(j.admitted)
}

// admitQueuedLocked starts queued jobs in FIFO order, skipping those whose
// command is at its own limit so they do not hold up the others.
func (r *Registry) admitQueuedLocked() {
	if r.canceling {
		return
	}
	for i := 0; i < len(r.queue) && r.running < r.limits.MaxConcurrent; {
		j := r.queue[i]
		if !r.hasRoomLocked(j) {
			i++
			continue
		}
		r.queue = slices.Delete(r.queue, i, i+1)
		r.dequeuedLocked(j)
		r.takeSlotLocked(j)
	}
}

func (r *Registry) dequeuedLocked(j *Job) {
	if j.detached {
		r.detachedQueued--
	}
}

// queuedCount is the number of jobs waiting for a slot, for the metrics:
// those waiting here, and the cluster's queue (Redis away: not counted).
func (r *Registry) queuedCount() float64 {
	r.mu.Lock()
	n := len(r.queue)
	r.mu.Unlock()
	if r.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if queued, err := r.cluster.QueueLen(ctx); err == nil {
			n += queued
		}
	}
	return float64(n)
}

// forgetLocked releases whatever j holds: its place in the queue or its slot.
func (r *Registry) forgetLocked(j *Job) {
	if i := slices.Index(r.queue, j); i >= 0 {
		r.queue = slices.Delete(r.queue, i, i+1)
		r.dequeuedLocked(j)
	} else if isClosed(j.admitted) {
		r.running--
		r.perCmd[j.cmd.Name]--
		r.admitQueuedLocked()
		r.wakeTaker()
	}
	delete(r.live, j.rec.ID)
}

// notStored is the error of a new job whose record could not be stored:
// the cluster's shared state unreachable, or the local store failing.
func notStored(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("store new job: %w", ErrNotStored)
}

func (r *Registry) newSink(j *Job, s Stream, live io.Writer) (*sink, error) {
	f, err := r.output.Create(j.rec.ID, s)
	if err != nil {
		return nil, fmt.Errorf("create %s of job %s: %w", s, j.rec.ID, err)
	}
	return &sink{
		file:      f,
		limit:     r.limits.OutputLimit,
		live:      live,
		wrote:     j.outputWritten,
		counted:   r.metrics.output.WithLabelValues(j.rec.Command, string(s)),
		liveReady: make(chan struct{}),
		failed:    func(err error) { j.outputFailed(s, err) },
	}, nil
}

func (r *Registry) jobLog(j *Job) zerolog.Logger {
	return r.log.With().
		Str(logkey.JobID, j.rec.ID).
		Str(logkey.Command, j.rec.Command).
		Interface(logkey.Params, j.rec.Params).
		Logger()
}

type noActivity struct{}

func (noActivity) Begin() {}
func (noActivity) End()   {}
