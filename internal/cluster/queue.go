package cluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/execgw/execgw/internal/jobs"
)

// Queue is the cluster's FIFO of detached jobs waiting for a slot, and the
// slots themselves: a command's max_concurrent holds for the whole cluster.
// Slots are the hashes `{p}:slots:<command>`, job id -> node; a job takes
// its slot when it is taken from the queue (or, for a bound run, before it
// starts) and gives it back in the same step that records its end.
//
// Taking is reliable: the job taken is leased to its node (the lease is a
// token only that node knows, checked by every later write of the record)
// and listed in `{p}:taken:<node>` until the node claims it, just before it
// starts the job's process. If the node dies first, Requeue puts it back;
// once claimed, a job is never queued again: it runs at most once.
type Queue struct {
	rdb       *redis.Client
	prefix    string
	maxQueued int
}

// NewQueue returns the queue of the cluster whose keys start with prefix,
// holding at most maxQueued jobs.
func NewQueue(rdb *redis.Client, prefix string, maxQueued int) *Queue {
	return &Queue{rdb: rdb, prefix: newKeys(prefix).prefix, maxQueued: maxQueued}
}

var (
	//go:embed lua/enqueue.lua
	enqueueLua string
	//go:embed lua/take.lua
	takeLua string
	//go:embed lua/acquire.lua
	acquireLua string
	//go:embed lua/claim.lua
	claimLua string
	//go:embed lua/unqueue.lua
	unqueueLua string
	//go:embed lua/requeue.lua
	requeueLua string
	//go:embed lua/freeslots.lua
	freeSlotsLua string
	//go:embed lua/waiting.lua
	waitingLua string

	enqueueScript   = redis.NewScript(recordLua + enqueueLua)
	takeScript      = redis.NewScript(takeLua)
	acquireScript   = redis.NewScript(acquireLua)
	claimScript     = redis.NewScript(recordLua + claimLua)
	unqueueScript   = redis.NewScript(recordLua + unqueueLua)
	requeueScript   = redis.NewScript(requeueLua)
	freeSlotsScript = redis.NewScript(freeSlotsLua)
	waitingScript   = redis.NewScript(waitingLua)
)

// Enqueue stores a new job's record, queued, with the parameters it runs
// with, and puts it at the end of the queue in one step;
// jobs.ErrQueueFull when max_queued jobs wait. The parameters stay in Redis
// until a gateway starts the job.
func (q *Queue) Enqueue(ctx context.Context, rec jobs.Record, params map[string]string) error {
	if !validID(rec.ID) {
		return fmt.Errorf("enqueue job %q: invalid id", rec.ID)
	}
	val, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("enqueue job %s: %w", rec.ID, err)
	}
	if params == nil {
		params = map[string]string{}
	}
	args, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("enqueue job %s: %w", rec.ID, err)
	}
	err = enqueueScript.Run(ctx, q.rdb, nil, q.prefix, rec.ID, val, rec.Command, rec.Owner, q.maxQueued, args).Err()
	switch {
	case hasErrorCode(err, "QUEUEFULL"):
		return jobs.ErrQueueFull
	case err != nil:
		return fmt.Errorf("enqueue job %s: %w", rec.ID, err)
	}
	return nil
}

// Taken is a job a node took from the queue.
type Taken struct {
	Record jobs.Record
	Params map[string]string // as given to Enqueue
	Lease  string
}

// Take leases to node the oldest queued job it may run: one whose command
// is in limits (command -> its max_concurrent, 0 for none) and has a free
// slot in the cluster. ok is false when there is none.
func (q *Queue) Take(ctx context.Context, node string, limits map[string]int) (t Taken, ok bool, err error) {
	t.Lease = newLease()
	args := []any{q.prefix, node, t.Lease}
	for cmd, limit := range limits {
		args = append(args, cmd, limit)
	}
	vals, err := takeScript.Run(ctx, q.rdb, nil, args...).Slice()
	switch {
	case errors.Is(err, redis.Nil):
		return Taken{}, false, nil
	case err != nil:
		return Taken{}, false, fmt.Errorf("take a queued job: %w", err)
	}
	rec, _ := vals[0].(string)
	if t.Record, err = decodeRecord([]byte(rec)); err != nil {
		return Taken{}, false, err
	}
	// A job queued by an earlier version has no parameters stored: it
	// runs with its defaults, or fails to bind on the node that took it.
	if params, _ := vals[1].(string); params != "" {
		if err := json.Unmarshal([]byte(params), &t.Params); err != nil {
			return Taken{}, false, fmt.Errorf("take job %s: its parameters: %w", t.Record.ID, err)
		}
	}
	return t, true, nil
}

// Acquire takes a slot of cmd for job id on node unless limit (0: none)
// jobs of cmd already hold one; it reports whether it did. The slot is
// given back when the job's ended record is stored, or by Release.
func (q *Queue) Acquire(ctx context.Context, cmd, id, node string, limit int) (bool, error) {
	n, err := acquireScript.Run(ctx, q.rdb, nil, q.prefix, cmd, id, node, limit).Int()
	if err != nil {
		return false, fmt.Errorf("acquire a slot of %s: %w", cmd, err)
	}
	return n == 1, nil
}

// Release gives back a slot taken by Acquire for a job that never started.
func (q *Queue) Release(ctx context.Context, cmd, id string) error {
	if err := q.rdb.HDel(ctx, q.prefix+"slots:"+cmd, id).Err(); err != nil {
		return fmt.Errorf("release a slot of %s: %w", cmd, err)
	}
	return nil
}

// Claim records, before the job's process starts, that node starts rec, a
// job it took with lease: the record (still queued) names the node, and the
// job is no longer one Requeue puts back. ErrFenced when the lease is no
// longer node's: the job was given back, and another node may run it.
func (q *Queue) Claim(ctx context.Context, rec jobs.Record, lease, node string) error {
	val, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("claim job %s: %w", rec.ID, err)
	}
	err = claimScript.Run(ctx, q.rdb, nil, q.prefix, rec.ID, val, rec.Command, rec.Owner, lease, node).Err()
	switch {
	case hasErrorCode(err, "FENCED"):
		return fmt.Errorf("claim job %s: %w", rec.ID, ErrFenced)
	case err != nil:
		return fmt.Errorf("claim job %s: %w", rec.ID, err)
	}
	return nil
}

// Unqueue stores rec, a final record of a job that is still in the queue
// (canceled, say), in one step with taking it out. It reports false, and
// writes nothing, when the job is no longer in the queue: a gateway has
// taken it.
func (q *Queue) Unqueue(ctx context.Context, rec jobs.Record) (bool, error) {
	val, err := encodeRecord(rec)
	if err != nil {
		return false, fmt.Errorf("unqueue job %s: %w", rec.ID, err)
	}
	n, err := unqueueScript.Run(ctx, q.rdb, nil, q.prefix, rec.ID, val, string(rec.State), rec.Command, rec.Owner, endedMember(rec)).Int()
	if err != nil {
		return false, fmt.Errorf("unqueue job %s: %w", rec.ID, err)
	}
	return n == 1, nil
}

// Requeue puts the jobs node took but never started back in the queue, with
// their slots freed: node is dead, or gives them back as it stops.
func (q *Queue) Requeue(ctx context.Context, node string) (int, error) {
	n, err := requeueScript.Run(ctx, q.rdb, nil, q.prefix, node).Int()
	if err != nil {
		return 0, fmt.Errorf("requeue the jobs of %s: %w", node, err)
	}
	return n, nil
}

// FreeSlots frees the slots of commands that node holds for jobs without
// a record, or whose record has ended: a node that failed between taking a
// slot and storing its job's record leaves such a slot, which would
// otherwise hold the command's max_concurrent for ever.
func (q *Queue) FreeSlots(ctx context.Context, node string, commands []string) (int, error) {
	args := []any{q.prefix, node}
	for _, c := range commands {
		args = append(args, c)
	}
	n, err := freeSlotsScript.Run(ctx, q.rdb, nil, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("free the slots of %s: %w", node, err)
	}
	return n, nil
}

// Waiting reports whether the queue holds a job of one of commands.
func (q *Queue) Waiting(ctx context.Context, commands []string) (bool, error) {
	args := []any{q.prefix}
	for _, c := range commands {
		args = append(args, c)
	}
	n, err := waitingScript.Run(ctx, q.rdb, nil, args...).Int()
	if err != nil {
		return false, fmt.Errorf("look for queued jobs: %w", err)
	}
	return n == 1, nil
}

// Len is the number of jobs waiting in the queue.
func (q *Queue) Len(ctx context.Context) (int, error) {
	n, err := q.rdb.ZCard(ctx, q.prefix+"queue").Result()
	return int(n), err
}

// InUse is the number of slots of cmd held in the cluster.
func (q *Queue) InUse(ctx context.Context, cmd string) (int, error) {
	n, err := q.rdb.HLen(ctx, q.prefix+"slots:"+cmd).Result()
	return int(n), err
}

// newLease is a token nobody can guess or repeat.
func newLease() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
