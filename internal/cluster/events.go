package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Events carries what one gateway must tell another: "cancel this job,
// which runs on you" (on the channel `{p}:node:<name>` of the node that
// runs it), "this job has ended" (on `{p}:ended`, for whoever waits for
// it) and "a job was queued" (on `{p}:queued`, for the nodes that may take
// it). Pub/sub loses what is sent while a subscriber is disconnected, so
// neither message is the only record: a cancel is also written into the
// job's hash (field x, the reason), which the node reads again when it
// reconnects, and a waiter for an end also polls the record.
type Events struct {
	rdb    *redis.Client
	prefix string
	node   string
	log    zerolog.Logger
	cancel func(id, reason string) // called for a cancel sent to this node
	queued chan struct{}           // a job was queued; buffered, one pending

	ps *redis.PubSub
	wg sync.WaitGroup

	mu      sync.Mutex
	waiters map[string][]chan struct{} // job id -> closed when it ends
}

// EventsOptions configure Events.
type EventsOptions struct {
	Client *redis.Client
	Prefix string
	Node   string
	Log    zerolog.Logger
	// Cancel is called, from one goroutine, for every cancel sent to this
	// node; it must not block.
	Cancel func(id, reason string)
}

// Subscribe starts receiving this node's events; Close stops.
func Subscribe(ctx context.Context, o EventsOptions) (*Events, error) {
	e := &Events{
		rdb: o.Client, prefix: newKeys(o.Prefix).prefix, node: o.Node, log: o.Log, cancel: o.Cancel,
		waiters: map[string][]chan struct{}{}, queued: make(chan struct{}, 1),
	}
	e.ps = e.rdb.Subscribe(ctx, e.nodeChannel(o.Node), e.prefix+"ended", e.prefix+"queued")
	// The first reply confirms the subscription: from now on nothing sent
	// to this node is missed while the connection holds.
	if _, err := e.ps.Receive(ctx); err != nil {
		_ = e.ps.Close()
		return nil, fmt.Errorf("subscribe to cluster events: %w", err)
	}
	e.wg.Add(1)
	go func() { // exits when Close closes the subscription
		defer e.wg.Done()
		e.receive()
	}()
	return e, nil
}

// Close stops receiving and waits for the receiver.
func (e *Events) Close() error {
	err := e.ps.Close()
	e.wg.Wait()
	return err
}

func (e *Events) nodeChannel(node string) string { return e.prefix + "node:" + node }

func (e *Events) receive() {
	for msg := range e.ps.Channel() {
		verb, rest, _ := strings.Cut(msg.Payload, " ")
		switch {
		case msg.Channel == e.prefix+"ended" && verb == "ended":
			e.wakeWaiters(rest)
		case msg.Channel == e.prefix+"queued":
			select {
			case e.queued <- struct{}{}:
			default: // one pending wake-up covers any number of jobs
			}
		case verb == "cancel":
			id, reason, _ := strings.Cut(rest, " ")
			e.cancel(id, reason)
		default:
			e.log.Warn().Str("channel", msg.Channel).Str("message", msg.Payload).Msg("unknown cluster event")
		}
	}
}

// RequestCancel asks node, which runs job id, to cancel it with reason: in
// the job's hash, where the node finds it even if it misses the message,
// and by a message on the node's channel.
func (e *Events) RequestCancel(ctx context.Context, id, node, reason string) error {
	_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, e.prefix+"job:"+id, "x", reason)
		p.Publish(ctx, e.nodeChannel(node), "cancel "+id+" "+reason)
		return nil
	})
	if err != nil {
		return fmt.Errorf("cancel job %s on %s: %w", id, node, err)
	}
	return nil
}

// CancelRequested returns the cancel reason written for job id, "" when
// none: a node that reconnects asks this of each job it runs.
func (e *Events) CancelRequested(ctx context.Context, id string) (string, error) {
	reason, err := e.rdb.HGet(ctx, e.prefix+"job:"+id, "x").Result()
	if err == redis.Nil {
		return "", nil
	}
	return reason, err
}

// Ended tells the waiters of job id, wherever they are, that it has ended.
// Call it once the ended record is stored.
func (e *Events) Ended(ctx context.Context, id string) error {
	return e.rdb.Publish(ctx, e.prefix+"ended", "ended "+id).Err()
}

// WaitEnded waits until job id has ended: until its ended message arrives
// or ended, asked now and then in case the message was missed, says so.
func (e *Events) WaitEnded(ctx context.Context, id string, poll time.Duration, ended func(context.Context) (bool, error)) error {
	c := make(chan struct{})
	e.mu.Lock()
	e.waiters[id] = append(e.waiters[id], c)
	e.mu.Unlock()
	defer e.forget(id, c)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		// Asked after registering: an end between the two is not missed.
		if done, err := ended(ctx); err != nil || done {
			return err
		}
		select {
		case <-c:
			return nil
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (e *Events) wakeWaiters(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.waiters[id] {
		close(c)
	}
	delete(e.waiters, id)
}

func (e *Events) forget(id string, c chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ws := e.waiters[id]
	for i, w := range ws {
		if w == c {
			e.waiters[id] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(e.waiters[id]) == 0 {
		delete(e.waiters, id)
	}
}

// NotifyQueued tells every node that a job was queued.
func (e *Events) NotifyQueued(ctx context.Context) error {
	return e.rdb.Publish(ctx, e.prefix+"queued", "queued").Err()
}

// Queued receives a value after a job was queued anywhere in the cluster
// (one value for any number of jobs queued since the last receive).
func (e *Events) Queued() <-chan struct{} { return e.queued }
