package jobs

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable means the shared state of the cluster cannot be reached
// now (Redis is away): the request may be tried again shortly.
var ErrUnavailable = errors.New("the cluster's shared state is unreachable")

// ErrFenced means a write of a job's record came from a node that no
// longer holds the job's lease: while it was cut off, the cluster gave the
// job up (recorded it interrupted) or to another node.
var ErrFenced = errors.New("the job's record has another lease")

// Cluster is what a registry needs of the cluster it is a node of; a
// standalone registry has none. The cluster's Store is the registry's
// Store: shared records, whose writes for jobs this node runs are fenced
// by a lease (see cluster.Node).
type Cluster interface {
	// Name is this node's name, recorded in the records of its jobs.
	Name() string
	// Timeout is the node timeout: a node silent this long is dead.
	Timeout() time.Duration

	// Enqueue stores a new detached job, queued, with the parameters it
	// runs with, and queues it for any node: ErrQueueFull when the
	// cluster's queue is full.
	Enqueue(ctx context.Context, rec Record, params map[string]string) error
	// Take leases to this node the oldest queued job it may run (limits:
	// each of its commands and its max_concurrent, 0 for none); ok is
	// false when there is none.
	Take(ctx context.Context, limits map[string]int) (rec Record, params map[string]string, ok bool, err error)
	// Claim records, before its process starts, that this node starts
	// rec, a job it took: from then on the job is never queued again, and
	// this node's death has it recorded interrupted. ErrFenced when the
	// job was given back meanwhile: another node may run it.
	Claim(ctx context.Context, rec Record) error
	// Acquire takes one of the cluster's slots of command cmd (limit
	// max_concurrent) for job id, which runs here without being queued;
	// the slot is given back when the job's ended record is stored.
	Acquire(ctx context.Context, cmd, id string, limit int) (bool, error)
	// Release gives back a slot of a job that never started.
	Release(ctx context.Context, cmd, id string) error
	// Unqueue stores rec, the final record of a job still in the queue,
	// in one step with taking it out; false when a node took it first.
	Unqueue(ctx context.Context, rec Record) (bool, error)
	// Requeue puts back in the queue what node took and did not start.
	Requeue(ctx context.Context, node string) error
	// Reclaim, for a node that is gone (dead, or this one's previous
	// life), requeues what it took and did not start, and frees the
	// slots it holds for jobs without a record or already ended.
	Reclaim(ctx context.Context, node string) error

	// RequestCancel asks the node that runs job id to cancel it.
	RequestCancel(ctx context.Context, id, reason string) error
	// CancelRequested is the reason of a cancel requested of job id
	// while it was being taken, "" for none.
	CancelRequested(ctx context.Context, id string) (string, error)
	// Ended tells the cluster that job id's ended record is stored.
	Ended(ctx context.Context, id string)
	// WaitEnded waits until job id has ended, as ended (asked now and
	// then) or an end message says.
	WaitEnded(ctx context.Context, id string, ended func(context.Context) (bool, error)) error
	// QueueLen is the number of jobs in the cluster's queue.
	QueueLen(ctx context.Context) (int, error)
	// Queued receives a value when a job was queued anywhere.
	Queued() <-chan struct{}

	// Reachable reports whether Redis took this node's last heartbeat: a
	// job is not started while it did not, since its record could not be
	// stored.
	Reachable() bool
	// CutOff reports whether Redis has not heard this node for longer
	// than the node timeout: the others then take its jobs for dead.
	CutOff() bool
	// Settled reports whether this node has reached Redis without a
	// break for a node timeout: only then can it tell a dead node from
	// one that has not yet been heard since Redis came back.
	Settled() bool
	// Dead returns the nodes silent for longer than the node timeout;
	// Forget takes one out once its jobs are resolved.
	Dead(ctx context.Context) ([]string, error)
	Forget(ctx context.Context, node string) error
	// TryLock takes the cluster-wide lock name for ttl, if nobody holds
	// it: for work one node at a time does.
	TryLock(ctx context.Context, name string, ttl time.Duration) (bool, error)
}
