package jobstore

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
)

func openTest(t testing.TB) *Bolt {
	t.Helper()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func mustPut(t testing.TB, b *Bolt, recs ...jobs.Record) {
	t.Helper()
	for _, rec := range recs {
		if err := b.Put(context.Background(), rec); err != nil {
			t.Fatalf("Put(%s) = %v", rec.ID, err)
		}
	}
}

// TestStoredRecordReadsAsWritten: a record written by an earlier version,
// in the stored form as it was then, reads with every field.
func TestStoredRecordReadsAsWritten(t *testing.T) {
	old := `{"id":"01JD0000000000000000000000","command":"dd","params":{"count":"10","secret":"***"},` +
		`"state":"canceled","exit_code":3,"signal":"SIGKILL","cancel_reason":"user","limit":"memory_max",` +
		`"pid":4242,"pgid":4242,"proc_start":987654321,"boot_id":"0b5b1f5e-6c1e-4a3b-9f0e-1234567890ab",` +
		`"owner":"ops","created_at":"2025-03-01T12:00:00.123456789+03:30","started_at":"2025-03-01T12:00:00.124456789+03:30",` +
		`"ended_at":"2025-03-01T12:00:01.623456789+03:30","duration_ms":1500,"stdout_bytes":1099511627776,"stderr_bytes":17,` +
		`"stdout_truncated":true,"stderr_truncated":true,"memory_peak_bytes":1073741824,"cpu_time_ms":1234}`
	got, err := DecodeRecord([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	want := storetest.FullRecord("01JD0000000000000000000000")
	want.Sid, want.OutputError, want.Node = -1, "", "" // not stored then
	if d := storetest.DiffRecord(got, want); d != "" {
		t.Errorf("DecodeRecord(an earlier version's record): %s", d)
	}
}

func TestRecordJSONRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  jobs.Record
	}{
		{"full", storetest.FullRecord(storetest.ID(1))},
		{"exit code 0", func() jobs.Record {
			r := storetest.FullRecord(storetest.ID(2))
			r.ExitCode = ptr(0)
			return r
		}()},
		{"no exit code", func() jobs.Record {
			r := storetest.FullRecord(storetest.ID(3))
			r.ExitCode = nil
			return r
		}()},
		{"session 0 (its leader outside the PID namespace)", func() jobs.Record {
			r := storetest.FullRecord(storetest.ID(5))
			r.Sid = 0
			return r
		}()},
		{"queued, nothing set", jobs.Record{ID: storetest.ID(4), Command: "dd", State: jobs.Queued, CreatedAt: storetest.Base}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeRecord(tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := storetest.DiffRecord(got, tc.rec); d != "" {
				t.Errorf("Unmarshal(Marshal(rec)): %s\nJSON: %s", d, b)
			}
		})
	}
}

func TestPutInvalid(t *testing.T) {
	b := openTest(t)
	if err := b.Put(context.Background(), jobs.Record{State: jobs.Queued}); err == nil {
		t.Error("Put(empty id) = nil, want error")
	}
	// bbolt refuses keys over 32KiB; the store goes on working.
	if err := b.Put(context.Background(), jobs.Record{ID: strings.Repeat("A", 40000)}); err == nil {
		t.Error("Put(40000-byte id) = nil, want error")
	}
	mustPut(t, b, jobs.Record{ID: storetest.ID(2), State: jobs.Queued})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, jobs.Record{ID: storetest.ID(1)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(canceled ctx) = %v, want context.Canceled", err)
	}
	if _, err := b.Get(context.Background(), storetest.ID(1)); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get after refused Put = %v, want ErrNotFound", err)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	ended := jobs.Record{ID: storetest.ID(1), State: jobs.Failed, CreatedAt: storetest.Base, EndedAt: storetest.Base.Add(time.Second)}
	live := jobs.Record{ID: storetest.ID(2), State: jobs.Running, CreatedAt: storetest.Base}
	mustPut(t, b, ended, live)
	for _, id := range []string{ended.ID, live.ID} {
		if err := b.Delete(ctx, id); err != nil {
			t.Fatalf("Delete(%s) = %v", id, err)
		}
		if _, err := b.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Get(%s) after Delete = %v, want ErrNotFound", id, err)
		}
		if err := b.Delete(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("second Delete(%s) = %v, want ErrNotFound", id, err)
		}
	}
	// The indexes forget them too.
	if recs, err := b.Unfinished(ctx); err != nil || len(recs) != 0 {
		t.Errorf("Unfinished() = %v, %v, want none", storetest.IDs(recs), err)
	}
	if got, err := b.EndedBefore(ctx, storetest.Base.Add(time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("EndedBefore() = %v, %v, want none", got, err)
	}
	if recs, next, err := b.List(ctx, jobs.Filter{}); err != nil || len(recs) != 0 || next != "" {
		t.Errorf("List() = %v, %q, %v, want none", storetest.IDs(recs), next, err)
	}
	countKeys(t, b, map[string]int{"jobs": 0, "active": 0, "ended": 0})
}

// countKeys checks how many keys each bucket holds.
func countKeys(t *testing.T, b *Bolt, want map[string]int) {
	t.Helper()
	err := b.db.View(func(tx *bolt.Tx) error {
		for name, n := range want {
			if got := tx.Bucket([]byte(name)).Stats().KeyN; got != n {
				t.Errorf("bucket %s has %d keys, want %d", name, got, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUnfinished(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	unfinished := func() []string {
		t.Helper()
		recs, err := b.Unfinished(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return storetest.IDs(recs)
	}
	a := jobs.Record{ID: storetest.ID(1), Command: "dd", State: jobs.Queued, CreatedAt: storetest.Base}
	c := jobs.Record{ID: storetest.ID(2), Command: "dd", State: jobs.Queued, CreatedAt: storetest.Base}
	mustPut(t, b, a, c)
	if got, want := unfinished(), []string{a.ID, c.ID}; !slices.Equal(got, want) {
		t.Errorf("Unfinished() = %v, want %v", got, want)
	}

	a.State, a.StartedAt, a.Pid = jobs.Running, storetest.Base.Add(time.Second), 10
	mustPut(t, b, a)
	recs, err := b.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || storetest.DiffRecord(recs[0], a) != "" {
		t.Errorf("Unfinished() = %+v, want the running %+v first", recs, a)
	}

	a.State, a.EndedAt, a.ExitCode = jobs.Succeeded, storetest.Base.Add(2*time.Second), ptr(0)
	mustPut(t, b, a)
	if got, want := unfinished(), []string{c.ID}; !slices.Equal(got, want) {
		t.Errorf("after a succeeded: Unfinished() = %v, want %v", got, want)
	}

	c.State, c.EndedAt, c.CancelReason = jobs.Canceled, storetest.Base.Add(time.Second), jobs.ReasonShutdown
	mustPut(t, b, c)
	if got := unfinished(); len(got) != 0 {
		t.Errorf("after c canceled: Unfinished() = %v, want none", got)
	}
	countKeys(t, b, map[string]int{"jobs": 2, "active": 0, "ended": 2})
}

func TestEndedBefore(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	at := func(sec int) time.Time { return storetest.Base.Add(time.Duration(sec) * time.Second) }
	// Ended times in an order unlike the ids'.
	recs := []jobs.Record{
		{ID: storetest.ID(0), State: jobs.Succeeded, CreatedAt: storetest.Base, EndedAt: at(50)},
		{ID: storetest.ID(1), State: jobs.Failed, CreatedAt: storetest.Base, EndedAt: at(10)},
		{ID: storetest.ID(2), State: jobs.Running, CreatedAt: storetest.Base},
		{ID: storetest.ID(3), State: jobs.Interrupted, CreatedAt: storetest.Base, EndedAt: at(30)},
		{ID: storetest.ID(4), State: jobs.TimedOut, CreatedAt: storetest.Base, EndedAt: at(20).Add(time.Nanosecond)},
		{ID: storetest.ID(5), State: jobs.Queued, CreatedAt: storetest.Base},
		{ID: storetest.ID(6), State: jobs.Canceled, CreatedAt: storetest.Base, EndedAt: at(20).In(time.FixedZone("Y", -7*3600))},
	}
	mustPut(t, b, recs...)
	check := func(before time.Time, max int, want ...string) {
		t.Helper()
		got, err := b.EndedBefore(ctx, before, max)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("EndedBefore(%v, %d) = %v, want %v", before, max, got, want)
		}
	}
	check(at(0), 10)
	check(at(10), 10)
	check(at(10).Add(time.Nanosecond), 10, storetest.ID(1))
	check(at(20).Add(time.Nanosecond), 10, storetest.ID(1), storetest.ID(6))
	check(at(31), 10, storetest.ID(1), storetest.ID(6), storetest.ID(4), storetest.ID(3))
	check(at(1000), 10, storetest.ID(1), storetest.ID(6), storetest.ID(4), storetest.ID(3), storetest.ID(0))
	check(at(1000), 2, storetest.ID(1), storetest.ID(6))
	check(at(1000), 0)
	check(time.Time{}, 10)

	// A record put again with another end time moves; a deleted one goes.
	r := recs[1]
	r.EndedAt = at(40)
	mustPut(t, b, r)
	if err := b.Delete(ctx, storetest.ID(4)); err != nil {
		t.Fatal(err)
	}
	check(at(1000), 10, storetest.ID(6), storetest.ID(3), storetest.ID(1), storetest.ID(0))
	countKeys(t, b, map[string]int{"jobs": 6, "active": 2, "ended": 4})

	// A running record that ends leaves the active index for the ended one.
	r = recs[2]
	r.State, r.EndedAt = jobs.Succeeded, at(5)
	mustPut(t, b, r)
	check(at(1000), 10, storetest.ID(2), storetest.ID(6), storetest.ID(3), storetest.ID(1), storetest.ID(0))
	countKeys(t, b, map[string]int{"jobs": 6, "active": 1, "ended": 5})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state", "jobs.db")
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	done := storetest.FullRecord(storetest.ID(1))
	live := jobs.Record{ID: storetest.ID(2), Command: "dd", State: jobs.Running, CreatedAt: storetest.Base, Pgid: 99}
	mustPut(t, b, done, live)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := b.Get(ctx, done.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := storetest.DiffRecord(got, done); d != "" {
		t.Errorf("Get after reopen: %s", d)
	}
	recs, err := b.Unfinished(ctx)
	if err != nil || len(recs) != 1 || storetest.DiffRecord(recs[0], live) != "" {
		t.Errorf("Unfinished after reopen = %+v, %v; want %+v", recs, err, live)
	}
	ended, err := b.EndedBefore(ctx, done.EndedAt.Add(time.Nanosecond), 10)
	if err != nil || !slices.Equal(ended, []string{done.ID}) {
		t.Errorf("EndedBefore after reopen = %v, %v; want [%s]", ended, err, done.ID)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	start := time.Now()
	second, err := OpenBolt(path)
	if err == nil {
		second.Close()
		t.Fatal("second OpenBolt on an open database succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("second OpenBolt failed after %v, want about %v", took, lockTimeout)
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second OpenBolt error = %q, want it to say the database is locked", err)
	}

	// The first one still works, and once closed the file opens again.
	mustPut(t, b, jobs.Record{ID: storetest.ID(1), State: jobs.Queued, CreatedAt: storetest.Base})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenBolt(path)
	if err != nil {
		t.Fatalf("OpenBolt after Close = %v", err)
	}
	again.Close()
}

func TestOpenNotADatabase(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenBolt(dir); err == nil {
		t.Error("OpenBolt(a directory) = nil error")
	}
}

func ptr[T any](v T) *T { return &v }
