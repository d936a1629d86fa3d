package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/redistest"
)

type cancelCall struct{ id, reason string }

func subscribe(t *testing.T, srv *redistest.Server, node string, cancels chan<- cancelCall) *Events {
	t.Helper()
	e, err := Subscribe(context.Background(), EventsOptions{
		Client: newClient(t, srv), Prefix: "test", Node: node,
		Log:    zerolog.New(zerolog.NewTestWriter(t)),
		Cancel: func(id, reason string) { cancels <- cancelCall{id, reason} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestEventsCancelReachesTheNode(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	toA, toB := make(chan cancelCall, 1), make(chan cancelCall, 1)
	a, b := subscribe(t, srv, "a", toA), subscribe(t, srv, "b", toB)
	if err := b.RequestCancel(ctx, "JOB1", "a", "user"); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-toA:
		if c != (cancelCall{"JOB1", "user"}) {
			t.Errorf("a was told %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel did not reach node a")
	}
	select {
	case c := <-toB:
		t.Errorf("node b was told %+v, meant for a", c)
	case <-time.After(100 * time.Millisecond):
	}
	// What a node that missed the message reads when it reconnects.
	if reason, err := a.CancelRequested(ctx, "JOB1"); err != nil || reason != "user" {
		t.Errorf("CancelRequested = %q, %v; want user", reason, err)
	}
	if reason, err := a.CancelRequested(ctx, "JOB2"); err != nil || reason != "" {
		t.Errorf("CancelRequested(no cancel) = %q, %v; want none", reason, err)
	}
}

func TestEventsWaitEnded(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := subscribe(t, srv, "a", make(chan cancelCall, 1)), subscribe(t, srv, "b", make(chan cancelCall, 1))
	never := func(context.Context) (bool, error) { return false, nil }

	// The message wakes the waiter, long before its poll would.
	done := make(chan error, 1)
	go func() { done <- b.WaitEnded(ctx, "JOB1", time.Hour, never) }()
	time.Sleep(50 * time.Millisecond) // let it register; a miss only delays the test
	if err := a.Ended(ctx, "JOB1"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitEnded did not return after the ended message")
	}

	// A message missed: the poll finds the end.
	var polls atomic.Int32
	endedOnThird := func(context.Context) (bool, error) { return polls.Add(1) >= 3, nil }
	if err := b.WaitEnded(ctx, "JOB2", 10*time.Millisecond, endedOnThird); err != nil {
		t.Fatal(err)
	}
	// The caller's context bounds the wait.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.WaitEnded(short, "JOB3", time.Hour, never); err != context.DeadlineExceeded {
		t.Fatalf("WaitEnded past its context = %v, want DeadlineExceeded", err)
	}
	b.mu.Lock()
	n := len(b.waiters)
	b.mu.Unlock()
	if n != 0 {
		t.Errorf("%d waiters left registered", n)
	}
}

func TestEventsQueuedWakesEveryNode(t *testing.T) {
	srv := redistest.Start(t)
	a, b := subscribe(t, srv, "a", nil), subscribe(t, srv, "b", nil)
	if err := a.NotifyQueued(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*Events{"a": a, "b": b} {
		select {
		case <-e.Queued():
		case <-time.After(5 * time.Second):
			t.Errorf("node %s was not told of the queued job", name)
		}
	}
}
