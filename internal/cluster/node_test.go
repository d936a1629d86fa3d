package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
	"github.com/execgw/execgw/internal/redistest"
)

// joinNode makes a node of the cluster "test" on srv, which leaves when the
// test ends.
func joinNode(t *testing.T, srv *redistest.Server, name string, metrics prometheus.Registerer) *Node {
	t.Helper()
	clients, err := Connect(config.Cluster{Redis: srv.URL(), Prefix: "test", NodeTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n, err := Join(context.Background(), NodeOptions{
		Clients: clients, Prefix: "test", Name: name, Timeout: 3 * time.Second, MaxQueued: 100,
		Log: zerolog.New(zerolog.NewTestWriter(t)), Metrics: metrics,
		Cancel: func(string, string) {},
	})
	if err != nil {
		clients.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Leave(ctx)
		clients.Close()
	})
	return n
}

// The records of a job a node runs carry its lease: once another node has
// taken the job over (recorded it interrupted), the first node's writes
// are refused and change nothing.
func TestNodeLeaseFencesRunningJob(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := joinNode(t, srv, "a", nil), joinNode(t, srv, "b", nil)

	rec := jobs.Record{ID: storetest.ID(1), Command: "dd", State: jobs.Running, Node: "a", CreatedAt: storetest.Base}
	if err := a.Put(ctx, rec); err != nil {
		t.Fatalf("first record of a's job: %v", err)
	}
	rec.StdoutBytes = 10
	if err := a.Put(ctx, rec); err != nil {
		t.Fatalf("a's second write of its own job: %v", err)
	}
	interrupted := rec
	interrupted.State, interrupted.EndedAt = jobs.Interrupted, storetest.Base.Add(time.Minute)
	if err := b.Put(ctx, interrupted); err != nil {
		t.Fatalf("b records a's job interrupted: %v", err)
	}
	late := rec
	late.State, late.EndedAt = jobs.Succeeded, storetest.Base.Add(2*time.Minute)
	if err := a.Put(ctx, late); !errors.Is(err, jobs.ErrFenced) {
		t.Fatalf("a's late write = %v, want ErrFenced", err)
	}
	if got, err := b.Get(ctx, rec.ID); err != nil || got.State != jobs.Interrupted {
		t.Fatalf("record after a's late write: %s, %v; want interrupted", got.State, err)
	}
}

// A node whose taken job was given back before it claimed it (the others
// took it for dead) may not start it: the node that takes the job next
// runs it.
func TestNodeClaimAfterGiveBackIsFenced(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := joinNode(t, srv, "a", nil), joinNode(t, srv, "b", nil)
	rec := jobs.Record{ID: storetest.ID(1), Command: "dd", State: jobs.Queued, CreatedAt: storetest.Base}
	if err := a.Enqueue(ctx, rec, nil); err != nil {
		t.Fatal(err)
	}
	taken, _, ok, err := a.Take(ctx, map[string]int{"dd": 0})
	if err != nil || !ok {
		t.Fatalf("a's Take = %v, %v", ok, err)
	}
	if err := b.Reclaim(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	taken.Node = "a"
	if err := a.Claim(ctx, taken); !errors.Is(err, jobs.ErrFenced) {
		t.Fatalf("a's Claim after the give-back = %v, want ErrFenced", err)
	}
	retaken, _, ok, err := b.Take(ctx, map[string]int{"dd": 0})
	if err != nil || !ok || retaken.ID != rec.ID {
		t.Fatalf("b's Take after the give-back = %s, %v, %v", retaken.ID, ok, err)
	}
	retaken.Node = "b"
	if err := b.Claim(ctx, retaken); err != nil {
		t.Fatalf("b's Claim = %v", err)
	}
	if got, err := b.Get(ctx, rec.ID); err != nil || got.State != jobs.Queued || got.Node != "b" {
		t.Errorf("record = %s on %q, %v; want queued on b", got.State, got.Node, err)
	}
}

// Redis away is jobs.ErrUnavailable, counted by operation; an answer of
// Redis (a record not found) is not.
func TestNodeRedisAwayIsUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	metrics := prometheus.NewRegistry()
	n := joinNode(t, srv, "a", metrics)
	if _, err := n.Get(ctx, storetest.ID(9)); !errors.Is(err, jobs.ErrNotFound) || errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("Get(absent) = %v, want ErrNotFound only", err)
	}
	srv.Stop()
	if _, err := n.Get(ctx, storetest.ID(9)); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("Get with Redis stopped = %v, want ErrUnavailable", err)
	}
	if _, _, err := n.List(ctx, jobs.Filter{}); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("List with Redis stopped = %v, want ErrUnavailable", err)
	}
	err := testutil.GatherAndCompare(metrics, strings.NewReader(`
# HELP execgw_redis_errors_total Redis operations that failed because Redis could not be reached, by operation.
# TYPE execgw_redis_errors_total counter
execgw_redis_errors_total{op="get"} 1
execgw_redis_errors_total{op="list"} 1
`), "execgw_redis_errors_total")
	if err != nil {
		t.Error(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.Reachable() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n.Reachable() {
		t.Error("Reachable() still true 10 s after Redis stopped")
	}
	srv.Start()
	deadline = time.Now().Add(10 * time.Second)
	for !n.Reachable() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !n.Reachable() {
		t.Error("Reachable() still false 10 s after Redis came back")
	}
}
