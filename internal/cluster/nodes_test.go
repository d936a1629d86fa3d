package cluster

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/redistest"
)

func join(t *testing.T, srv *redistest.Server, name string, timeout time.Duration) *Nodes {
	t.Helper()
	n, err := JoinCluster(context.Background(), NodesOptions{
		Client: newClient(t, srv), Prefix: "test", Name: name, Timeout: timeout,
		Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Leave(context.Background()) })
	return n
}

func sorted(names []string, err error) []string {
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	slices.Sort(names)
	return names
}

func TestNodesAliveAndDead(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	const timeout = 600 * time.Millisecond
	a, b := join(t, srv, "a", timeout), join(t, srv, "b", timeout)
	if got := sorted(a.Alive(ctx)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Alive = %v, want [a b]", got)
	}
	// b stops beating without leaving, as a killed gateway does.
	b.stop()
	b.wg.Wait()
	time.Sleep(timeout + 200*time.Millisecond)
	if got := sorted(a.Alive(ctx)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Alive after b went silent = %v, want [a]", got)
	}
	if got := sorted(a.Dead(ctx)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Dead after b went silent = %v, want [b]", got)
	}
	if err := a.Forget(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got := sorted(a.Dead(ctx)); len(got) != 0 {
		t.Errorf("Dead after Forget = %v, want none", got)
	}
	// A node that leaves is gone at once.
	c := join(t, srv, "c", timeout)
	if err := c.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sorted(a.Alive(ctx)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Alive after c left = %v, want [a]", got)
	}
}

func TestNodesCutOff(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = 600 * time.Millisecond
	n := join(t, srv, "a", timeout)
	if n.CutOff() {
		t.Fatal("CutOff right after joining")
	}
	srv.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for !n.CutOff() {
		if time.Now().After(deadline) {
			t.Fatal("not CutOff 10 s after Redis stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Start()
	deadline = time.Now().Add(10 * time.Second)
	for n.CutOff() {
		if time.Now().After(deadline) {
			t.Fatal("still CutOff 10 s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A node takes itself for cut off a margin before the others can take it
// for dead: at worst one tick of its watch and one of theirs apart, it
// has stopped its jobs before they record them interrupted.
func TestNodesCutOffBeforeDead(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = time.Hour // no heartbeat but the first
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	n, err := JoinCluster(context.Background(), NodesOptions{
		Client: newClient(t, srv), Prefix: "test", Name: "a", Timeout: timeout, Now: clock,
		Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Leave(context.Background()) })
	joined := clock()
	for _, tc := range []struct {
		since time.Duration
		want  bool
	}{
		{timeout - time.Second - time.Millisecond, false},
		{timeout - time.Second + time.Millisecond, true},
		{timeout, true},
	} {
		mu.Lock()
		now = joined.Add(tc.since)
		mu.Unlock()
		if got := n.CutOff(); got != tc.want {
			t.Errorf("CutOff %v after the last heartbeat (node_timeout %v) = %v, want %v", tc.since, timeout, got, tc.want)
		}
	}
}

func TestJoinClusterWithoutRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newClient(t, srv)
	srv.Stop()
	_, err := JoinCluster(context.Background(), NodesOptions{Client: rdb, Prefix: "test", Name: "a", Timeout: time.Second})
	if err == nil {
		t.Fatal("JoinCluster with Redis stopped = nil error")
	}
}
