package cluster

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/jobs"
)

// Nodes is this gateway's membership of the cluster: it says it is alive
// (a heartbeat in the sorted set `{p}:nodes`, scored by time) every third
// of the node timeout, and knows when Redis last heard it. A node whose
// heartbeat is older than the node timeout is dead to the others; a node
// that has not been heard for that long must take itself for dead too.
type Nodes struct {
	rdb     *redis.Client
	key     string
	name    string
	timeout time.Duration
	now     func() time.Time
	log     zerolog.Logger

	mu        sync.Mutex
	lastHeard time.Time // when Redis last took our heartbeat
	// heardSince is when the heartbeats began to reach Redis without a
	// failure since; zero while they fail.
	heardSince time.Time

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// NodesOptions configure Nodes.
type NodesOptions struct {
	Client  *redis.Client
	Prefix  string
	Name    string
	Timeout time.Duration // node_timeout
	Now     func() time.Time
	Log     zerolog.Logger
}

// JoinCluster sends the first heartbeat, which must reach Redis, then
// keeps sending them until Leave.
func JoinCluster(ctx context.Context, o NodesOptions) (*Nodes, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	n := &Nodes{
		rdb: o.Client, key: newKeys(o.Prefix).prefix + "nodes", name: o.Name,
		timeout: o.Timeout, now: o.Now, log: o.Log,
	}
	if err := n.beat(ctx); err != nil {
		return nil, fmt.Errorf("join cluster as %s: %w", o.Name, err)
	}
	loop, stop := context.WithCancel(context.Background())
	n.stop = stop
	n.wg.Add(1)
	go func() { // exits when Leave cancels loop
		defer n.wg.Done()
		n.heartbeats(loop)
	}()
	return n, nil
}

// Leave stops the heartbeats and takes the node out of the set: the others
// need not wait for its timeout to know it is gone.
func (n *Nodes) Leave(ctx context.Context) error {
	n.stop()
	n.wg.Wait()
	return n.rdb.ZRem(ctx, n.key, n.name).Err()
}

func (n *Nodes) heartbeats(ctx context.Context) {
	t := time.NewTicker(n.timeout / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := n.beat(ctx)
		if err != nil {
			n.mu.Lock()
			n.heardSince = time.Time{}
			n.mu.Unlock()
		}
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			// Once per episode: Redis may stay away for a while.
			n.log.Error().Err(err).Msg("cluster heartbeat failed; retrying")
			failing = true
		case err == nil && failing:
			n.log.Info().Msg("cluster heartbeat reaches Redis again")
			failing = false
		}
	}
}

// beat records the heartbeat, with Redis's own clock so that the nodes'
// clocks need not agree.
func (n *Nodes) beat(ctx context.Context) error {
	sent := n.now()
	ctx, cancel := context.WithTimeout(ctx, n.timeout/3)
	defer cancel()
	if err := beatScript.Run(ctx, n.rdb, []string{n.key}, n.name).Err(); err != nil {
		return err
	}
	n.mu.Lock()
	// The beat was taken no earlier than it was sent.
	if sent.After(n.lastHeard) {
		n.lastHeard = sent
	}
	if n.heardSince.IsZero() {
		n.heardSince = sent
	}
	n.mu.Unlock()
	return nil
}

var beatScript = redis.NewScript(`
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 1`)

// CutOff reports whether Redis has not heard this node for nearly the node
// timeout, after which the others take it for dead: the node must have
// stopped its jobs by then, and both sides look only once a
// jobs.WatchInterval. So it is cut off a margin early: two intervals.
func (n *Nodes) CutOff() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.now().Sub(n.lastHeard) > n.timeout-2*jobs.WatchInterval(n.timeout)
}

// LastHeard is when Redis last took a heartbeat of this node.
func (n *Nodes) LastHeard() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastHeard
}

// Settled reports whether Redis has heard every heartbeat of this node for
// a node timeout: every live node has then beaten since Redis came back (or
// since this node joined), and a node that has not is dead indeed.
func (n *Nodes) Settled() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.heardSince.IsZero() && n.now().Sub(n.heardSince) >= n.timeout
}

// Alive returns the nodes whose last heartbeat is within the node timeout,
// this one included while Redis hears it.
func (n *Nodes) Alive(ctx context.Context) ([]string, error) {
	since, err := n.since(ctx)
	if err != nil {
		return nil, err
	}
	return n.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: n.key, ByScore: true, Start: since, Stop: "+inf"}).Result()
}

// Dead returns the nodes whose last heartbeat is older than the node
// timeout.
func (n *Nodes) Dead(ctx context.Context) ([]string, error) {
	since, err := n.since(ctx)
	if err != nil {
		return nil, err
	}
	return n.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: n.key, ByScore: true, Start: "-inf", Stop: "(" + since}).Result()
}

// since is the score before which a heartbeat is too old, by Redis's
// clock, which every heartbeat was scored by.
func (n *Nodes) since(ctx context.Context) (string, error) {
	now, err := n.rdb.Time(ctx).Result()
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(now.Add(-n.timeout).UnixMilli(), 10), nil
}

// Forget takes a dead node out of the set, once its jobs are resolved.
func (n *Nodes) Forget(ctx context.Context, name string) error {
	return n.rdb.ZRem(ctx, n.key, name).Err()
}
