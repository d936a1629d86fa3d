package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
	"github.com/execgw/execgw/internal/redistest"
)

// queueFixture is a queue and a store of one cluster on a fresh Redis.
func queueFixture(t *testing.T, maxQueued int) (*Queue, *Store) {
	t.Helper()
	rdb := newClient(t, redistest.Start(t))
	return NewQueue(rdb, "test", maxQueued), NewStore(rdb, "test")
}

func queued(i int, cmd string) jobs.Record {
	return jobs.Record{ID: storetest.ID(i), Command: cmd, State: jobs.Queued, CreatedAt: storetest.Base}
}

func mustEnqueue(t *testing.T, q *Queue, recs ...jobs.Record) {
	t.Helper()
	for _, rec := range recs {
		if err := q.Enqueue(context.Background(), rec, nil); err != nil {
			t.Fatalf("Enqueue(%s) = %v", rec.ID, err)
		}
	}
}

// take takes one job for node and returns its id ("" for none).
func take(t *testing.T, q *Queue, node string, limits map[string]int) (string, string) {
	t.Helper()
	tk, ok, err := q.Take(context.Background(), node, limits)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "", ""
	}
	return tk.Record.ID, tk.Lease
}

func TestQueueFIFOAndLimits(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	mustEnqueue(t, q, queued(1, "backup"), queued(2, "backup"), queued(3, "dd"), queued(4, "convert"))
	if rec, err := s.Get(ctx, storetest.ID(1)); err != nil || rec.State != jobs.Queued {
		t.Fatalf("the queued record: %+v, %v", rec, err)
	}
	limits := map[string]int{"backup": 1, "dd": 0}
	// The oldest first; the second backup waits for the first's slot; a
	// node that may not run convert never takes it.
	if id, _ := take(t, q, "a", limits); id != storetest.ID(1) {
		t.Fatalf("first take = %s, want %s", id, storetest.ID(1))
	}
	if id, _ := take(t, q, "b", limits); id != storetest.ID(3) {
		t.Fatalf("second take = %s, want %s (backup is at its limit)", id, storetest.ID(3))
	}
	if id, _ := take(t, q, "b", limits); id != "" {
		t.Fatalf("third take = %s, want none", id)
	}
	if n, _ := q.Len(ctx); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
	// The first backup ends (stored by its node, with its lease): its slot
	// is free, and the second backup can be taken.
	if id, _ := take(t, q, "a", map[string]int{"convert": 0}); id != storetest.ID(4) {
		t.Fatalf("take of convert = %s", id)
	}
	if id, _ := take(t, q, "b", limits); id != "" {
		t.Fatalf("take with backup still running = %s, want none", id)
	}
}

func TestQueueSlotFreedByEnd(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	mustEnqueue(t, q, queued(1, "backup"), queued(2, "backup"))
	limits := map[string]int{"backup": 1}
	tk, _, err := q.Take(ctx, "a", limits)
	if err != nil {
		t.Fatal(err)
	}
	rec, lease := tk.Record, tk.Lease
	rec.State, rec.StartedAt = jobs.Running, storetest.Base
	if err := s.PutLeased(ctx, rec, lease, lease, "a"); err != nil {
		t.Fatal(err)
	}
	if id, _ := take(t, q, "b", limits); id != "" {
		t.Fatalf("take while backup runs = %s", id)
	}
	rec.State, rec.EndedAt = jobs.Succeeded, storetest.Base.Add(time.Second)
	if err := s.PutLeased(ctx, rec, lease, lease, "a"); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.InUse(ctx, "backup"); n != 0 {
		t.Fatalf("slots of backup in use after it ended: %d", n)
	}
	if id, _ := take(t, q, "b", limits); id != storetest.ID(2) {
		t.Fatalf("take after backup ended = %s, want %s", id, storetest.ID(2))
	}
}

func TestQueueFull(t *testing.T) {
	q, _ := queueFixture(t, 2)
	mustEnqueue(t, q, queued(1, "dd"), queued(2, "dd"))
	if err := q.Enqueue(context.Background(), queued(3, "dd"), nil); !errors.Is(err, jobs.ErrQueueFull) {
		t.Fatalf("third Enqueue = %v, want ErrQueueFull", err)
	}
	take(t, q, "a", map[string]int{"dd": 0})
	mustEnqueue(t, q, queued(3, "dd"))
	if err := q.Enqueue(context.Background(), queued(3, "dd"), nil); err == nil {
		t.Fatal("Enqueue of an existing job = nil error")
	}
}

// Every job is taken exactly once, however many gateways take at once.
func TestQueueTakenOnce(t *testing.T) {
	q, _ := queueFixture(t, 1000)
	const n, takers = 200, 8
	ofB := 0
	for i := range n {
		cmd := []string{"a", "b", "c"}[i%3]
		if cmd == "b" {
			ofB++
		}
		mustEnqueue(t, q, queued(i, cmd))
	}
	limits := map[string]int{"a": 0, "b": 2, "c": 0}
	var (
		mu    sync.Mutex
		taken = map[string]string{}
		wg    sync.WaitGroup
		errs  = make(chan error, takers)
	)
	for w := range takers {
		wg.Add(1)
		go func() { // exits when the queue has nothing more for it
			defer wg.Done()
			node := fmt.Sprint("node", w)
			for {
				tk, ok, err := q.Take(context.Background(), node, limits)
				rec := tk.Record
				if err != nil {
					errs <- err
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				if other, dup := taken[rec.ID]; dup {
					errs <- fmt.Errorf("%s taken by %s and %s", rec.ID, other, node)
				}
				taken[rec.ID] = node
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Command b holds 2 slots (its jobs never end here); the rest all went.
	wantTaken := n - (ofB - 2)
	if len(taken) != wantTaken {
		t.Errorf("%d jobs taken, want %d", len(taken), wantTaken)
	}
}

func TestQueueUnqueue(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	mustEnqueue(t, q, queued(1, "dd"), queued(2, "dd"))
	take(t, q, "a", map[string]int{"dd": 0}) // takes 1
	for _, tc := range []struct {
		id   string
		want bool
	}{{storetest.ID(2), true}, {storetest.ID(1), false}, {storetest.ID(2), false}} {
		rec, err := s.Get(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		rec.State, rec.CancelReason, rec.EndedAt = jobs.Canceled, jobs.ReasonUser, storetest.Base.Add(time.Second)
		got, err := q.Unqueue(ctx, rec)
		if err != nil || got != tc.want {
			t.Errorf("Unqueue(%s) = %v, %v; want %v", tc.id, got, err, tc.want)
		}
	}
	if rec, _ := s.Get(ctx, storetest.ID(2)); rec.State != jobs.Canceled {
		t.Errorf("unqueued job: %s, want canceled", rec.State)
	}
	if rec, _ := s.Get(ctx, storetest.ID(1)); rec.State != jobs.Queued {
		t.Errorf("taken job after a refused Unqueue: %s, want still queued (its node owns it)", rec.State)
	}
	if n, _ := q.Len(ctx); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

// A node that dies after taking jobs: those not started go back to the
// queue, in their order; a started one stays its node's (recovery records
// it interrupted).
func TestQueueRequeue(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	mustEnqueue(t, q, queued(1, "backup"), queued(2, "dd"), queued(3, "dd"))
	limits := map[string]int{"backup": 1, "dd": 0}
	id1, _ := take(t, q, "dead", limits)
	_, lease2 := take(t, q, "dead", limits)
	rec2, _ := s.Get(ctx, storetest.ID(2))
	rec2.State = jobs.Running
	if err := s.PutLeased(ctx, rec2, lease2, lease2, "dead"); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Requeue(ctx, "dead"); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v; want 1", n, err)
	}
	var order []string
	for {
		id, _ := take(t, q, "b", limits)
		if id == "" {
			break
		}
		order = append(order, id)
	}
	if want := []string{id1, storetest.ID(3)}; !slices.Equal(order, want) {
		t.Errorf("taken after requeue: %v, want %v", order, want)
	}
}

// A job claimed by the node that took it is never queued again, even if
// the node dies before it records the job running: it runs at most once.
// A node whose taken job was given back meanwhile cannot claim it.
func TestQueueClaim(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	mustEnqueue(t, q, queued(1, "dd"), queued(2, "dd"))
	limits := map[string]int{"dd": 0}

	id1, lease1 := take(t, q, "a", limits)
	claimed := queued(1, "dd")
	claimed.Node = "a"
	if err := q.Claim(ctx, claimed, lease1, "a"); err != nil {
		t.Fatalf("Claim by the node that took it = %v", err)
	}
	if n, err := q.Requeue(ctx, "a"); err != nil || n != 0 {
		t.Errorf("Requeue of a after its claim = %d, %v; want 0", n, err)
	}
	if rec, err := s.Get(ctx, id1); err != nil || rec.State != jobs.Queued || rec.Node != "a" {
		t.Errorf("claimed record = %s on %q, %v; want queued on a", rec.State, rec.Node, err)
	}

	id2, lease2 := take(t, q, "a", limits)
	if n, err := q.Requeue(ctx, "a"); err != nil || n != 1 {
		t.Fatalf("Requeue of a = %d, %v; want 1", n, err)
	}
	late := queued(2, "dd")
	late.Node = "a"
	if err := q.Claim(ctx, late, lease2, "a"); !errors.Is(err, jobs.ErrFenced) {
		t.Errorf("Claim of a job given back = %v, want ErrFenced", err)
	}
	if id, _ := take(t, q, "b", limits); id != id2 {
		t.Errorf("b took %q after the refused claim, want %s", id, id2)
	}
	if id, _ := take(t, q, "b", limits); id != "" {
		t.Errorf("b took %s, the claimed job, too", id)
	}
}

// A gateway that lost its lease writes nothing: the record the cluster
// wrote meanwhile stays.
func TestStoreFencing(t *testing.T) {
	ctx := context.Background()
	s, rec, lease := runningOnA(t)
	// Another node records it interrupted, under a lease of its own.
	interrupted := rec
	interrupted.State, interrupted.EndedAt = jobs.Interrupted, storetest.Base.Add(time.Minute)
	if err := s.PutLeased(ctx, interrupted, lease, newLease(), "a"); err != nil {
		t.Fatal(err)
	}
	// The cut-off node comes back with its stale view.
	stale := rec
	stale.State, stale.EndedAt = jobs.Succeeded, storetest.Base.Add(2*time.Minute)
	if err := s.PutLeased(ctx, stale, lease, lease, "a"); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale write = %v, want ErrFenced", err)
	}
	if err := s.Put(ctx, stale); !errors.Is(err, ErrFenced) {
		t.Fatalf("write without a lease = %v, want ErrFenced", err)
	}
	if got, _ := s.Get(ctx, rec.ID); got.State != jobs.Interrupted {
		t.Fatalf("record after the stale write: %s, want interrupted", got.State)
	}
}

// The parameters a queued job runs with reach the node that takes it, and
// leave Redis once the job has started: secret values are kept no longer
// than they must.
func TestQueueParams(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	params := map[string]string{"count": "3", "password": "hunter2"}
	if err := q.Enqueue(ctx, queued(1, "dd"), params); err != nil {
		t.Fatal(err)
	}
	tk, ok, err := q.Take(ctx, "a", map[string]int{"dd": 0})
	if err != nil || !ok {
		t.Fatalf("Take = %v, %v", ok, err)
	}
	if !maps.Equal(tk.Params, params) {
		t.Errorf("Take: params %v, want %v", tk.Params, params)
	}
	rec := tk.Record
	rec.State = jobs.Running
	if err := s.PutLeased(ctx, rec, tk.Lease, tk.Lease, "a"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.rdb.HExists(ctx, s.prefix+"job:"+rec.ID, "a").Result(); err != nil || n {
		t.Errorf("parameters still in Redis after the start: %v, %v", n, err)
	}
}

// A writer that takes over (recovery) writes whatever lease the record
// has, and fences its holder out.
func TestStoreTakeOver(t *testing.T) {
	ctx := context.Background()
	s, rec, lease := runningOnA(t)
	interrupted := rec
	interrupted.State, interrupted.EndedAt = jobs.Interrupted, storetest.Base.Add(time.Minute)
	if err := s.PutLeased(ctx, interrupted, TakeOver, "", "a"); err != nil {
		t.Fatalf("take-over write = %v", err)
	}
	if err := s.PutLeased(ctx, rec, lease, lease, "a"); !errors.Is(err, ErrFenced) {
		t.Fatalf("write of the former holder = %v, want ErrFenced", err)
	}
}

// runningOnA is a job taken by node "a" and recorded running under its
// lease.
func runningOnA(t *testing.T) (*Store, jobs.Record, string) {
	t.Helper()
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	mustEnqueue(t, q, queued(1, "dd"))
	tk, _, err := q.Take(ctx, "a", map[string]int{"dd": 0})
	if err != nil {
		t.Fatal(err)
	}
	rec := tk.Record
	rec.State = jobs.Running
	if err := s.PutLeased(ctx, rec, tk.Lease, tk.Lease, "a"); err != nil {
		t.Fatal(err)
	}
	return s, rec, tk.Lease
}

// A node that failed between taking a slot and storing its job's record
// leaves a slot no job holds; reclaiming the node frees it, and only it.
func TestQueueFreeSlots(t *testing.T) {
	ctx := context.Background()
	q, s := queueFixture(t, 100)
	for _, id := range []string{storetest.ID(1), storetest.ID(2), storetest.ID(3)} {
		if ok, err := q.Acquire(ctx, "backup", id, "a", 0); err != nil || !ok {
			t.Fatalf("Acquire(%s) = %v, %v", id, ok, err)
		}
	}
	if ok, err := q.Acquire(ctx, "backup", storetest.ID(4), "b", 0); err != nil || !ok {
		t.Fatal(err)
	}
	// 1 runs on a, 2 has ended (its slot somehow left), 3 has no record.
	running := queued(1, "backup")
	running.State = jobs.Running
	ended := queued(2, "backup")
	ended.State, ended.EndedAt = jobs.Failed, storetest.Base
	for _, rec := range []jobs.Record{running, ended} {
		if err := s.PutLeased(ctx, rec, TakeOver, "", "a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.rdb.HSet(ctx, s.prefix+"slots:backup", ended.ID, "a").Result(); err != nil {
		t.Fatal(err)
	}
	n, err := q.FreeSlots(ctx, "a", []string{"backup", "dd"})
	if err != nil || n != 2 {
		t.Fatalf("FreeSlots = %d, %v; want 2", n, err)
	}
	held, err := s.rdb.HKeys(ctx, s.prefix+"slots:backup").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(held)
	if want := []string{storetest.ID(1), storetest.ID(4)}; !slices.Equal(held, want) {
		t.Errorf("slots held after FreeSlots: %v, want %v (a's running job, b's)", held, want)
	}
}
