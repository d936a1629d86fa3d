package jobstore

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit runs concurrent writes in shared transactions, so that many
// writers pay for one fsync instead of one each, without delaying a lone
// writer. Whoever gets the commit lock commits everything queued by then;
// a writer whose call was committed by someone else while it waited for the
// lock just returns that result. bbolt's own DB.Batch coalesces too, but it
// holds every call for MaxBatchDelay (10ms) first, which a lone writer
// pays in full: BenchmarkPut measured about 40 times slower with it.
type groupCommit struct {
	db *bolt.DB
	// commitMu is held for the whole of a commit: writers queue up behind
	// it while one is in progress, and the next holder takes them all.
	commitMu sync.Mutex
	mu       sync.Mutex // guards queue
	queue    []*call
}

type call struct {
	fn   func(*bolt.Tx) error
	done chan error // buffered: the committer never waits for the caller
}

// do runs fn in a read-write transaction, likely shared with other calls,
// and returns once that transaction is committed and synced, or failed.
// fn may be called more than once and must give the same result each
// time: when any call in a shared transaction fails, every call is run
// again in a transaction of its own, so one failure is not everybody's.
func (g *groupCommit) do(fn func(*bolt.Tx) error) error {
	c := &call{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	g.mu.Unlock()

	g.commitMu.Lock()
	defer g.commitMu.Unlock()
	select {
	case err := <-c.done:
		// Committed by the previous holder of commitMu.
		return err
	default:
	}
	g.mu.Lock()
	group := g.queue
	g.queue = nil
	g.mu.Unlock()
	// c is in group: it was queued before commitMu was taken, and only a
	// holder of commitMu empties the queue.
	g.commit(group)
	return <-c.done
}

// commit runs the calls of group in one transaction and tells each the
// outcome.
func (g *groupCommit) commit(group []*call) {
	failed := false
	err := g.db.Update(func(tx *bolt.Tx) error {
		for _, c := range group {
			if err := safeCall(c.fn, tx); err != nil {
				failed = true
				return err
			}
		}
		return nil
	})
	if !failed || len(group) == 1 {
		// Success, or a failure of the commit itself, is everybody's.
		for _, c := range group {
			c.done <- err
		}
		return
	}
	for _, c := range group {
		c.done <- g.db.Update(func(tx *bolt.Tx) error { return safeCall(c.fn, tx) })
	}
}

// safeCall turns a panic of fn into an error, so that it fails the caller
// whose fn it is rather than leaving the others of its group waiting.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("job store write panicked: %v", p)
		}
	}()
	return fn(tx)
}
