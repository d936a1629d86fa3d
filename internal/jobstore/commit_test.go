package jobstore

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestGroupCommitFailure queues calls behind a held commit lock so that
// they share one transaction, one of them failing and one panicking: the
// others must still be committed, and only those two fail.
func TestGroupCommitFailure(t *testing.T) {
	s := openTest(t)
	g := s.writes
	errBoom := errors.New("boom")
	const n = 6
	fns := make([]func(*bolt.Tx) error, n)
	for i := range fns {
		key := []byte(fmt.Sprint("k", i))
		fns[i] = func(tx *bolt.Tx) error {
			return tx.Bucket(bucketJobs).Put(key, []byte("v"))
		}
	}
	fns[2] = func(*bolt.Tx) error { return errBoom }
	fns[4] = func(*bolt.Tx) error { panic("bad") }

	g.commitMu.Lock()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		// Exits when its call has been committed or has failed.
		go func() {
			defer wg.Done()
			errs[i] = g.do(fn)
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		queued := len(g.queue)
		g.mu.Unlock()
		if queued == n {
			break
		}
		if time.Now().After(deadline) {
			g.commitMu.Unlock()
			t.Fatalf("%d calls queued, want %d", queued, n)
		}
	}
	g.commitMu.Unlock()
	wg.Wait()

	for i, err := range errs {
		switch i {
		case 2:
			if !errors.Is(err, errBoom) {
				t.Errorf("call %d = %v, want %v", i, err, errBoom)
			}
		case 4:
			if err == nil {
				t.Errorf("panicking call %d = nil, want an error", i)
			}
		default:
			if err != nil {
				t.Errorf("call %d = %v, want nil", i, err)
			}
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		for i := range n {
			got := tx.Bucket(bucketJobs).Get([]byte(fmt.Sprint("k", i)))
			if want := i != 2 && i != 4; (got != nil) != want {
				t.Errorf("key k%d stored: %v, want %v", i, got != nil, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
