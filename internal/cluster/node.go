package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/logkey"
)

// Node is this gateway as a member of its cluster: the registry's
// jobs.Store and jobs.Cluster. It holds the lease of every job it runs,
// and every write of such a job's record carries it, so that a write from
// a node the cluster has given up on changes nothing. Every Redis error
// that means Redis is away becomes jobs.ErrUnavailable, is counted in
// execgw_redis_errors_total{op}, and is logged once per episode.
type Node struct {
	name     string
	timeout  time.Duration
	rdb      *redis.Client
	prefix   string // "{execgw}:"
	store    *Store
	queue    *Queue
	events   *Events
	nodes    *Nodes
	log      zerolog.Logger
	errors   *prometheus.CounterVec
	commands []string // whose slots Reclaim looks at

	mu      sync.Mutex
	leases  map[string]string // job id -> lease, for the jobs this node runs
	failing bool              // in an episode of Redis errors
	// failedAt is when an operation last found Redis away.
	failedAt time.Time
}

var (
	_ jobs.Store   = (*Node)(nil)
	_ jobs.Cluster = (*Node)(nil)
)

// NodeOptions configure a Node.
type NodeOptions struct {
	Clients   *Clients
	Prefix    string
	Name      string
	Timeout   time.Duration
	MaxQueued int
	// Commands are the configured commands' names.
	Commands []string
	Log      zerolog.Logger
	Metrics  prometheus.Registerer // nil: not exported
	// Cancel is called for every cancel another node asks of a job this
	// node runs; it must not block.
	Cancel func(id, reason string)
}

// Join makes this gateway a node of the cluster: its first heartbeat and
// its subscription to the cluster's events must reach Redis. Leave undoes
// it.
func Join(ctx context.Context, o NodeOptions) (*Node, error) {
	n := &Node{
		name: o.Name, timeout: o.Timeout, rdb: o.Clients.Commands, prefix: newKeys(o.Prefix).prefix,
		store: NewStore(o.Clients.Commands, o.Prefix), queue: NewQueue(o.Clients.Commands, o.Prefix, o.MaxQueued),
		log:    o.Log.With().Str(logkey.Component, "cluster").Logger(),
		leases: map[string]string{}, commands: o.Commands,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execgw_redis_errors_total",
			Help: "Redis operations that failed because Redis could not be reached, by operation.",
		}, []string{"op"}),
	}
	if o.Metrics != nil {
		o.Metrics.MustRegister(n.errors)
	}
	var err error
	n.nodes, err = JoinCluster(ctx, NodesOptions{Client: o.Clients.Commands, Prefix: o.Prefix, Name: o.Name, Timeout: o.Timeout, Log: n.log})
	if err != nil {
		return nil, err
	}
	n.events, err = Subscribe(ctx, EventsOptions{Client: o.Clients.Commands, Prefix: o.Prefix, Node: o.Name, Log: n.log, Cancel: o.Cancel})
	if err != nil {
		_ = n.nodes.Leave(ctx)
		return nil, err
	}
	return n, nil
}

// Leave gives back what the node took and did not start, stops the
// heartbeats and the events, and takes the node out of the cluster's set
// of nodes: the others need not wait for its timeout.
func (n *Node) Leave(ctx context.Context) error {
	_, err := n.queue.Requeue(ctx, n.name)
	if cerr := n.events.Close(); err == nil {
		err = cerr
	}
	if lerr := n.nodes.Leave(ctx); err == nil {
		err = lerr
	}
	return err
}

// Reachable reports whether Redis took one of this node's last two
// heartbeats, which it sends every third of the node timeout, and no
// operation has found Redis away since: false as soon as a request fails,
// or two heartbeats in a row are missing (one late beat on a busy machine
// is no outage); true again with the next heartbeat Redis takes.
func (n *Node) Reachable() bool {
	heard := n.nodes.LastHeard()
	n.mu.Lock()
	failedAt := n.failedAt
	n.mu.Unlock()
	return time.Since(heard) < 2*n.timeout/3 && heard.After(failedAt)
}

// Alive is the number of nodes alive now, this one included.
func (n *Node) Alive(ctx context.Context) (int, error) {
	names, err := n.nodes.Alive(ctx)
	return len(names), n.check("nodes", err)
}

// Name is this node's name.
func (n *Node) Name() string { return n.name }

// Timeout is the node timeout.
func (n *Node) Timeout() time.Duration { return n.timeout }

// check turns an error of Redis being away into jobs.ErrUnavailable, and
// counts and logs it; other errors (a script's reply, a record not found)
// pass unchanged. A success ends an episode of errors.
func (n *Node) check(op string, err error) error {
	if err != nil && !unreachable(err) {
		return err
	}
	n.mu.Lock()
	was := n.failing
	n.failing = err != nil
	if err != nil {
		n.failedAt = time.Now()
	}
	n.mu.Unlock()
	if err == nil {
		if was {
			n.log.Info().Msg("redis reachable again")
		}
		return nil
	}
	n.errors.WithLabelValues(op).Inc()
	if !was {
		n.log.Error().Err(err).Str("op", op).Msg("redis unreachable; requests that need it answer 503 until it is back")
	}
	return fmt.Errorf("%w: %s: %v", jobs.ErrUnavailable, op, err)
}

// unreachable reports whether err says Redis could not be reached or did
// not answer in time, rather than answered.
func unreachable(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return false // Redis answered, with an error
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, context.DeadlineExceeded)
}

// --- jobs.Store ---

// Put stores rec. For a job this node runs it carries the job's lease (a
// new one with the job's first record); a job it does not run (recovery
// of another node's, or of its own after a restart) is taken over.
func (n *Node) Put(ctx context.Context, rec jobs.Record) error {
	expect, lease := n.leaseFor(rec)
	err := n.store.PutLeased(ctx, rec, expect, lease, rec.Node)
	if rec.State.Ended() && (err == nil || errors.Is(err, ErrFenced)) {
		n.mu.Lock()
		delete(n.leases, rec.ID)
		n.mu.Unlock()
	}
	return n.check("put", err)
}

// leaseFor returns what a write of rec expects of the stored lease, and
// the lease it leaves.
func (n *Node) leaseFor(rec jobs.Record) (expect, lease string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l, ok := n.leases[rec.ID]; ok {
		return l, l
	}
	if rec.Node == n.name && !rec.State.Ended() {
		// The first record of a job this node runs: nobody else has
		// written it.
		l := newLease()
		n.leases[rec.ID] = l
		return "", l
	}
	return TakeOver, ""
}

// Get returns the record, or jobs.ErrNotFound.
func (n *Node) Get(ctx context.Context, id string) (jobs.Record, error) {
	rec, err := n.store.Get(ctx, id)
	return rec, n.check("get", err)
}

// List returns one page of the cluster's records.
func (n *Node) List(ctx context.Context, f jobs.Filter) ([]jobs.Record, string, error) {
	recs, next, err := n.store.List(ctx, f)
	return recs, next, n.check("list", err)
}

// Delete removes a record.
func (n *Node) Delete(ctx context.Context, id string) error {
	return n.check("delete", n.store.Delete(ctx, id))
}

// Unfinished returns the cluster's queued and running records.
func (n *Node) Unfinished(ctx context.Context) ([]jobs.Record, error) {
	recs, err := n.store.Unfinished(ctx)
	return recs, n.check("list", err)
}

// EndedBefore returns ids of the cluster's jobs that ended before t.
func (n *Node) EndedBefore(ctx context.Context, t time.Time, max int) ([]string, error) {
	ids, err := n.store.EndedBefore(ctx, t, max)
	return ids, n.check("list", err)
}

// Close does nothing: Leave ends the membership.
func (n *Node) Close() error { return nil }

// --- jobs.Cluster ---

// Enqueue queues a new detached job for any node, and tells the nodes.
func (n *Node) Enqueue(ctx context.Context, rec jobs.Record, params map[string]string) error {
	if err := n.check("enqueue", n.queue.Enqueue(ctx, rec, params)); err != nil {
		return err
	}
	// Nodes that miss the message find the job when they next look.
	_ = n.check("publish", n.events.NotifyQueued(ctx))
	return nil
}

// Take leases the oldest job this node may run to it.
func (n *Node) Take(ctx context.Context, limits map[string]int) (jobs.Record, map[string]string, bool, error) {
	t, ok, err := n.queue.Take(ctx, n.name, limits)
	if err = n.check("take", err); err != nil || !ok {
		return jobs.Record{}, nil, false, err
	}
	n.mu.Lock()
	n.leases[t.Record.ID] = t.Lease
	n.mu.Unlock()
	return t.Record, t.Params, true, nil
}

// Claim records that this node starts rec, a job it took, before the
// job's process starts.
func (n *Node) Claim(ctx context.Context, rec jobs.Record) error {
	n.mu.Lock()
	lease, ok := n.leases[rec.ID]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("claim job %s: not taken by this node: %w", rec.ID, jobs.ErrFenced)
	}
	err := n.queue.Claim(ctx, rec, lease, n.name)
	if errors.Is(err, ErrFenced) {
		n.mu.Lock()
		delete(n.leases, rec.ID)
		n.mu.Unlock()
	}
	return n.check("claim", err)
}

// QueueLen is the number of jobs in the cluster's queue.
func (n *Node) QueueLen(ctx context.Context) (int, error) {
	l, err := n.queue.Len(ctx)
	return l, n.check("queue", err)
}

// QueuedWork reports whether the cluster's queue holds a job this node
// could take, once a slot frees: one of its commands.
func (n *Node) QueuedWork(ctx context.Context) (bool, error) {
	ok, err := n.queue.Waiting(ctx, n.commands)
	return ok, n.check("queue", err)
}

// Acquire takes a slot of cmd for job id, run here.
func (n *Node) Acquire(ctx context.Context, cmd, id string, limit int) (bool, error) {
	ok, err := n.queue.Acquire(ctx, cmd, id, n.name, limit)
	return ok, n.check("acquire", err)
}

// Release gives back a slot of a job that never started.
func (n *Node) Release(ctx context.Context, cmd, id string) error {
	return n.check("release", n.queue.Release(ctx, cmd, id))
}

// Unqueue ends a job still in the queue.
func (n *Node) Unqueue(ctx context.Context, rec jobs.Record) (bool, error) {
	ok, err := n.queue.Unqueue(ctx, rec)
	return ok, n.check("unqueue", err)
}

// Requeue puts back what node took and did not start.
func (n *Node) Requeue(ctx context.Context, node string) error {
	_, err := n.queue.Requeue(ctx, node)
	return n.check("requeue", err)
}

// Reclaim requeues what node took and did not start, and frees the slots
// it holds for jobs without a record or already ended.
func (n *Node) Reclaim(ctx context.Context, node string) error {
	if _, err := n.queue.Requeue(ctx, node); err != nil {
		return n.check("requeue", err)
	}
	freed, err := n.queue.FreeSlots(ctx, node, n.commands)
	if err != nil {
		return n.check("requeue", err)
	}
	if freed > 0 {
		n.log.Warn().Str(logkey.Peer, node).Int("slots", freed).Msg("freed command slots held for jobs that never started")
	}
	return nil
}

// RequestCancel asks the node that runs job id to cancel it.
func (n *Node) RequestCancel(ctx context.Context, id, reason string) error {
	node, err := n.rdb.HGet(ctx, n.prefix+"job:"+id, "n").Result()
	if errors.Is(err, redis.Nil) {
		return jobs.ErrNotFound
	}
	if err := n.check("cancel", err); err != nil {
		return err
	}
	return n.check("cancel", n.events.RequestCancel(ctx, id, node, reason))
}

// CancelRequested is the reason of a cancel requested of job id, if any.
func (n *Node) CancelRequested(ctx context.Context, id string) (string, error) {
	reason, err := n.events.CancelRequested(ctx, id)
	return reason, n.check("cancel", err)
}

// Ended tells the cluster that job id's ended record is stored. A waiter
// that misses it finds the record ended when it next looks.
func (n *Node) Ended(ctx context.Context, id string) {
	_ = n.check("publish", n.events.Ended(ctx, id))
}

// WaitEnded waits until job id has ended.
func (n *Node) WaitEnded(ctx context.Context, id string, ended func(context.Context) (bool, error)) error {
	return n.events.WaitEnded(ctx, id, endPoll, ended)
}

// endPoll is how often a waiter for a job's end looks at its record, in
// case the end message was lost.
const endPoll = time.Second

// Queued receives a value when a job was queued anywhere.
func (n *Node) Queued() <-chan struct{} { return n.events.Queued() }

// CutOff reports whether Redis has not heard this node for longer than
// the node timeout.
func (n *Node) CutOff() bool { return n.nodes.CutOff() }

// Settled reports whether Redis has heard this node without a break for a
// node timeout.
func (n *Node) Settled() bool { return n.nodes.Settled() }

// Dead returns the nodes silent for longer than the node timeout.
func (n *Node) Dead(ctx context.Context) ([]string, error) {
	names, err := n.nodes.Dead(ctx)
	return names, n.check("nodes", err)
}

// Forget takes a dead node out of the cluster's set.
func (n *Node) Forget(ctx context.Context, node string) error {
	return n.check("nodes", n.nodes.Forget(ctx, node))
}

// TryLock takes the cluster-wide lock name for ttl if nobody holds it.
func (n *Node) TryLock(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	ok, err := n.rdb.SetNX(ctx, n.prefix+"lock:"+name, n.name, ttl).Result()
	return ok, n.check("lock", err)
}
