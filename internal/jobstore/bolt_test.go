package jobstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/execgw/execgw/internal/jobs"
)

// base is the creation time of testID(0).
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// testID is the ULID of a job created i milliseconds after base: ids sort
// as i does.
func testID(i int) string {
	return ulid.MustNew(ulid.Timestamp(base.Add(time.Duration(i)*time.Millisecond)), nil).String()
}

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

// putMany stores recs in one transaction, through the code Put uses, to
// fill a database faster than one fsync per record allows.
func putMany(t testing.TB, b *Bolt, recs []jobs.Record) {
	t.Helper()
	err := b.db.Update(func(tx *bolt.Tx) error {
		for _, rec := range recs {
			val, err := EncodeRecord(rec)
			if err != nil {
				return err
			}
			if err := put(tx, rec, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func intp(n int) *int { return &n }

// fullRecord has every field set, times with nanoseconds and a zone.
func fullRecord(id string) jobs.Record {
	zone := time.FixedZone("X", 3*3600+1800)
	created := time.Date(2025, 3, 1, 12, 0, 0, 123456789, zone)
	return jobs.Record{
		ID:              id,
		Command:         "dd",
		Params:          map[string]string{"count": "10", "secret": "***"},
		State:           jobs.Canceled,
		ExitCode:        intp(3),
		Signal:          "SIGKILL",
		CancelReason:    jobs.ReasonUser,
		Limit:           "memory_max",
		Pid:             4242,
		Pgid:            4242,
		ProcStart:       987654321,
		BootID:          "0b5b1f5e-6c1e-4a3b-9f0e-1234567890ab",
		Owner:           "ops",
		CreatedAt:       created,
		StartedAt:       created.Add(time.Millisecond),
		EndedAt:         created.Add(1500 * time.Millisecond),
		StdoutBytes:     1 << 40,
		StderrBytes:     17,
		StdoutTruncated: true,
		StderrTruncated: true,
	}
}

// diffRecord says how got differs from want, "" if it does not: times by
// instant (JSON keeps the instant and offset, not the *time.Location), a
// nil Params as an empty one.
func diffRecord(got, want jobs.Record) string {
	var d []string
	for _, f := range []struct {
		name      string
		got, want time.Time
	}{
		{"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"StartedAt", got.StartedAt, want.StartedAt},
		{"EndedAt", got.EndedAt, want.EndedAt},
	} {
		if !f.got.Equal(f.want) || f.got.IsZero() != f.want.IsZero() {
			d = append(d, fmt.Sprintf("%s = %v, want %v", f.name, f.got, f.want))
		}
	}
	switch {
	case (got.ExitCode == nil) != (want.ExitCode == nil):
		d = append(d, fmt.Sprintf("ExitCode = %v, want %v", got.ExitCode, want.ExitCode))
	case got.ExitCode != nil && *got.ExitCode != *want.ExitCode:
		d = append(d, fmt.Sprintf("ExitCode = %d, want %d", *got.ExitCode, *want.ExitCode))
	}
	if len(got.Params) != 0 || len(want.Params) != 0 {
		if !reflect.DeepEqual(got.Params, want.Params) {
			d = append(d, fmt.Sprintf("Params = %v, want %v", got.Params, want.Params))
		}
	}
	got.CreatedAt, got.StartedAt, got.EndedAt, got.ExitCode, got.Params = time.Time{}, time.Time{}, time.Time{}, nil, nil
	want.CreatedAt, want.StartedAt, want.EndedAt, want.ExitCode, want.Params = time.Time{}, time.Time{}, time.Time{}, nil, nil
	if !reflect.DeepEqual(got, want) {
		d = append(d, fmt.Sprintf("other fields = %+v, want %+v", got, want))
	}
	return strings.Join(d, "; ")
}

func ids(recs []jobs.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
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
	want := fullRecord("01JD0000000000000000000000")
	want.MemoryPeak, want.CPUTimeMs = 1<<30, 1234
	if d := diffRecord(got, want); d != "" {
		t.Errorf("DecodeRecord(an earlier version's record): %s", d)
	}
}

func TestRecordJSONRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  jobs.Record
	}{
		{"full", fullRecord(testID(1))},
		{"exit code 0", func() jobs.Record {
			r := fullRecord(testID(2))
			r.ExitCode = intp(0)
			return r
		}()},
		{"no exit code", func() jobs.Record {
			r := fullRecord(testID(3))
			r.ExitCode = nil
			return r
		}()},
		{"queued, nothing set", jobs.Record{ID: testID(4), Command: "dd", State: jobs.Queued, CreatedAt: base}},
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
			if d := diffRecord(got, tc.rec); d != "" {
				t.Errorf("Unmarshal(Marshal(rec)): %s\nJSON: %s", d, b)
			}
		})
	}
}

func TestPutGet(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	zero := fullRecord(testID(1))
	zero.ExitCode = intp(0)
	none := fullRecord(testID(2))
	none.ExitCode = nil
	bare := jobs.Record{ID: testID(3), Command: "dd", State: jobs.Queued, CreatedAt: base}
	recs := []jobs.Record{fullRecord(testID(0)), zero, none, bare}
	mustPut(t, b, recs...)
	for _, want := range recs {
		got, err := b.Get(ctx, want.ID)
		if err != nil {
			t.Fatalf("Get(%s) = %v", want.ID, err)
		}
		if d := diffRecord(got, want); d != "" {
			t.Errorf("Get(%s): %s", want.ID, d)
		}
	}
	if got, _ := b.Get(ctx, zero.ID); got.ExitCode == nil || *got.ExitCode != 0 {
		t.Errorf("Get(%s).ExitCode = %v, want 0", zero.ID, got.ExitCode)
	}
	if got, _ := b.Get(ctx, none.ID); got.ExitCode != nil {
		t.Errorf("Get(%s).ExitCode = %d, want nil", none.ID, *got.ExitCode)
	}

	// Put replaces.
	upd := bare
	upd.State, upd.Pid, upd.StartedAt = jobs.Running, 7, base.Add(time.Second)
	mustPut(t, b, upd)
	got, err := b.Get(ctx, upd.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecord(got, upd); d != "" {
		t.Errorf("Get after replace: %s", d)
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
	mustPut(t, b, jobs.Record{ID: testID(2), State: jobs.Queued})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, jobs.Record{ID: testID(1)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(canceled ctx) = %v, want context.Canceled", err)
	}
	if _, err := b.Get(context.Background(), testID(1)); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get after refused Put = %v, want ErrNotFound", err)
	}
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	mustPut(t, b, jobs.Record{ID: testID(1), State: jobs.Succeeded, CreatedAt: base, EndedAt: base})
	for _, id := range []string{testID(2), "", "../x", "\x00"} {
		if _, err := b.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
		if err := b.Delete(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	ended := jobs.Record{ID: testID(1), State: jobs.Failed, CreatedAt: base, EndedAt: base.Add(time.Second)}
	live := jobs.Record{ID: testID(2), State: jobs.Running, CreatedAt: base}
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
		t.Errorf("Unfinished() = %v, %v, want none", ids(recs), err)
	}
	if got, err := b.EndedBefore(ctx, base.Add(time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("EndedBefore() = %v, %v, want none", got, err)
	}
	if recs, next, err := b.List(ctx, jobs.Filter{}); err != nil || len(recs) != 0 || next != "" {
		t.Errorf("List() = %v, %q, %v, want none", ids(recs), next, err)
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

// listFixture stores 30 records, ids 0..29, in a mix of states, commands
// and owners, and returns them.
func listFixture(t *testing.T, b *Bolt) []jobs.Record {
	t.Helper()
	states := []jobs.State{jobs.Succeeded, jobs.Running, jobs.Failed, jobs.Queued, jobs.Canceled}
	var recs []jobs.Record
	for i := range 30 {
		rec := jobs.Record{
			ID:        testID(i),
			Command:   []string{"dd", "backup", "convert"}[i%3],
			Owner:     []string{"", "ops"}[i%2],
			State:     states[i%len(states)],
			CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
		}
		if rec.State.Ended() {
			rec.EndedAt = rec.CreatedAt.Add(time.Second)
		}
		recs = append(recs, rec)
	}
	// Stored out of order: order comes from the ids alone.
	for _, i := range []int{5, 29, 0, 17} {
		mustPut(t, b, recs[i])
	}
	var rest []jobs.Record
	for i, r := range recs {
		if !slices.Contains([]int{5, 29, 0, 17}, i) {
			rest = append(rest, r)
		}
	}
	putMany(t, b, rest)
	return recs
}

// newestFirst is the ids of the records that match f, newest first.
func newestFirst(recs []jobs.Record, f jobs.Filter) []string {
	var out []string
	for i := len(recs) - 1; i >= 0; i-- {
		if matches(&recs[i], &f) {
			out = append(out, recs[i].ID)
		}
	}
	return out
}

func TestListFilters(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	recs := listFixture(t, b)
	for _, tc := range []struct {
		name string
		f    jobs.Filter
		n    int // how many match
	}{
		{"all", jobs.Filter{}, 30},
		{"running", jobs.Filter{State: jobs.Running}, 6},
		{"queued", jobs.Filter{State: jobs.Queued}, 6},
		{"succeeded", jobs.Filter{State: jobs.Succeeded}, 6},
		{"command", jobs.Filter{Command: "backup"}, 10},
		{"owner", jobs.Filter{Owner: "ops"}, 15},
		{"running backup", jobs.Filter{State: jobs.Running, Command: "backup"}, 2},
		{"queued ops dd", jobs.Filter{State: jobs.Queued, Command: "dd", Owner: "ops"}, 1},
		{"no such state", jobs.Filter{State: "bogus"}, 0},
		{"no such command", jobs.Filter{Command: "rm"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, next, err := b.List(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			want := newestFirst(recs, tc.f)
			if len(want) != tc.n {
				t.Fatalf("fixture: %d records match, want %d", len(want), tc.n)
			}
			if !slices.Equal(ids(got), want) || next != "" {
				t.Errorf("List(%+v) = %v, %q; want %v, \"\"", tc.f, ids(got), next, want)
			}
			for _, r := range got {
				if !matches(&r, &tc.f) {
					t.Errorf("List(%+v) returned %+v", tc.f, r)
				}
			}
		})
	}
}

func TestListPages(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	recs := listFixture(t, b)
	for _, tc := range []struct {
		name string
		f    jobs.Filter
	}{
		{"all by 7", jobs.Filter{Limit: 7}},
		{"all by 10", jobs.Filter{Limit: 10}}, // the last page is exactly full
		{"all by 1", jobs.Filter{Limit: 1}},
		{"all by 30", jobs.Filter{Limit: 30}},
		{"running by 4", jobs.Filter{State: jobs.Running, Limit: 4}},
		{"running by 3", jobs.Filter{State: jobs.Running, Limit: 3}},
		{"ops by 4", jobs.Filter{Owner: "ops", Limit: 4}},
		{"failed convert by 1", jobs.Filter{State: jobs.Failed, Command: "convert", Limit: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := newestFirst(recs, tc.f)
			var all []string
			f := tc.f
			for pages := 0; ; pages++ {
				if pages > len(recs) {
					t.Fatal("pagination does not end")
				}
				got, next, err := b.List(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) == 0 || len(got) > f.Limit {
					t.Fatalf("List(%+v) returned %d records, want 1..%d", f, len(got), f.Limit)
				}
				all = append(all, ids(got)...)
				if next == "" {
					break
				}
				if next != got[len(got)-1].ID {
					t.Fatalf("List(%+v) next = %q, want the last id %q", f, next, got[len(got)-1].ID)
				}
				f.After = next
			}
			if !slices.Equal(all, want) {
				t.Errorf("pages of %+v = %v, want %v", tc.f, all, want)
			}
		})
	}
}

func TestListAfter(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	recs := listFixture(t, b)
	all := newestFirst(recs, jobs.Filter{})
	// An id between testID(9) and testID(10), not stored.
	between := ulid.MustNew(ulid.Timestamp(base.Add(9*time.Millisecond)), strings.NewReader(strings.Repeat("\xff", 10))).String()
	for _, tc := range []struct {
		name  string
		after string
		want  []string
	}{
		{"stored id", testID(20), all[10:]},
		{"oldest id", testID(0), nil},
		{"newest id", testID(29), all[1:]},
		{"id not stored", between, all[20:]},
		{"after everything", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", all},
		{"lower case sorts after upper", "zzz", all},
		{"before everything", "0", nil},
		{"prefix of stored ids", testID(20)[:10], all[:0]},
		{"path", "../../etc/passwd", nil},
		{"NUL", "\x00", nil},
		{"high bytes", "\xff\xfe", all},
		{"long", strings.Repeat("Z", 5000), all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := jobs.Filter{After: tc.after, Limit: jobs.MaxPageSize}
			got, next, err := b.List(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if tc.name == "prefix of stored ids" {
				// A prefix sorts before every id it begins.
				want = nil
				for _, id := range all {
					if id < tc.after {
						want = append(want, id)
					}
				}
			}
			if !slices.Equal(ids(got), want) || next != "" {
				t.Errorf("List(after %q) = %v, %q; want %v, \"\"", tc.after, ids(got), next, want)
			}
		})
	}
}

func TestListLimit(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	const n = jobs.MaxPageSize + 5
	recs := make([]jobs.Record, n)
	for i := range recs {
		recs[i] = jobs.Record{ID: testID(i), Command: "dd", State: jobs.Succeeded, CreatedAt: base, EndedAt: base}
	}
	putMany(t, b, recs)
	for _, tc := range []struct {
		limit, want int
	}{
		{0, defaultPageSize},
		{-1, defaultPageSize},
		{1, 1},
		{jobs.MaxPageSize, jobs.MaxPageSize},
		{jobs.MaxPageSize + 1, jobs.MaxPageSize},
		{1 << 40, jobs.MaxPageSize},
	} {
		got, next, err := b.List(ctx, jobs.Filter{Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want || next != got[len(got)-1].ID || got[0].ID != testID(n-1) {
			t.Errorf("List(limit %d) = %d records from %s, next %q; want %d from %s, next the last",
				tc.limit, len(got), got[0].ID, next, tc.want, testID(n-1))
		}
	}
}

func TestListCanceled(t *testing.T) {
	b := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := b.List(ctx, jobs.Filter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("List(canceled ctx) = %v, want context.Canceled", err)
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
		return ids(recs)
	}
	a := jobs.Record{ID: testID(1), Command: "dd", State: jobs.Queued, CreatedAt: base}
	c := jobs.Record{ID: testID(2), Command: "dd", State: jobs.Queued, CreatedAt: base}
	mustPut(t, b, a, c)
	if got, want := unfinished(), []string{a.ID, c.ID}; !slices.Equal(got, want) {
		t.Errorf("Unfinished() = %v, want %v", got, want)
	}

	a.State, a.StartedAt, a.Pid = jobs.Running, base.Add(time.Second), 10
	mustPut(t, b, a)
	recs, err := b.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || diffRecord(recs[0], a) != "" {
		t.Errorf("Unfinished() = %+v, want the running %+v first", recs, a)
	}

	a.State, a.EndedAt, a.ExitCode = jobs.Succeeded, base.Add(2*time.Second), intp(0)
	mustPut(t, b, a)
	if got, want := unfinished(), []string{c.ID}; !slices.Equal(got, want) {
		t.Errorf("after a succeeded: Unfinished() = %v, want %v", got, want)
	}

	c.State, c.EndedAt, c.CancelReason = jobs.Canceled, base.Add(time.Second), jobs.ReasonShutdown
	mustPut(t, b, c)
	if got := unfinished(); len(got) != 0 {
		t.Errorf("after c canceled: Unfinished() = %v, want none", got)
	}
	countKeys(t, b, map[string]int{"jobs": 2, "active": 0, "ended": 2})
}

func TestEndedBefore(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	// Ended times in an order unlike the ids'.
	recs := []jobs.Record{
		{ID: testID(0), State: jobs.Succeeded, CreatedAt: base, EndedAt: at(50)},
		{ID: testID(1), State: jobs.Failed, CreatedAt: base, EndedAt: at(10)},
		{ID: testID(2), State: jobs.Running, CreatedAt: base},
		{ID: testID(3), State: jobs.Interrupted, CreatedAt: base, EndedAt: at(30)},
		{ID: testID(4), State: jobs.TimedOut, CreatedAt: base, EndedAt: at(20).Add(time.Nanosecond)},
		{ID: testID(5), State: jobs.Queued, CreatedAt: base},
		{ID: testID(6), State: jobs.Canceled, CreatedAt: base, EndedAt: at(20).In(time.FixedZone("Y", -7*3600))},
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
	check(at(10).Add(time.Nanosecond), 10, testID(1))
	check(at(20).Add(time.Nanosecond), 10, testID(1), testID(6))
	check(at(31), 10, testID(1), testID(6), testID(4), testID(3))
	check(at(1000), 10, testID(1), testID(6), testID(4), testID(3), testID(0))
	check(at(1000), 2, testID(1), testID(6))
	check(at(1000), 0)
	check(time.Time{}, 10)

	// A record put again with another end time moves; a deleted one goes.
	r := recs[1]
	r.EndedAt = at(40)
	mustPut(t, b, r)
	if err := b.Delete(ctx, testID(4)); err != nil {
		t.Fatal(err)
	}
	check(at(1000), 10, testID(6), testID(3), testID(1), testID(0))
	countKeys(t, b, map[string]int{"jobs": 6, "active": 2, "ended": 4})

	// A running record that ends leaves the active index for the ended one.
	r = recs[2]
	r.State, r.EndedAt = jobs.Succeeded, at(5)
	mustPut(t, b, r)
	check(at(1000), 10, testID(2), testID(6), testID(3), testID(1), testID(0))
	countKeys(t, b, map[string]int{"jobs": 6, "active": 1, "ended": 5})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state", "jobs.db")
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	done := fullRecord(testID(1))
	live := jobs.Record{ID: testID(2), Command: "dd", State: jobs.Running, CreatedAt: base, Pgid: 99}
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
	if d := diffRecord(got, done); d != "" {
		t.Errorf("Get after reopen: %s", d)
	}
	recs, err := b.Unfinished(ctx)
	if err != nil || len(recs) != 1 || diffRecord(recs[0], live) != "" {
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
	mustPut(t, b, jobs.Record{ID: testID(1), State: jobs.Queued, CreatedAt: base})
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

// TestConcurrent puts, reads and lists from many goroutines at once: the
// race detector and the final state check it.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	b := openTest(t)
	const workers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		// Exits after its records went through queued, running and ended.
		go func() {
			defer wg.Done()
			for i := range each {
				rec := jobs.Record{ID: testID(w*each + i), Command: "dd", State: jobs.Queued, CreatedAt: base}
				for _, s := range []jobs.State{jobs.Queued, jobs.Running, jobs.Succeeded} {
					rec.State = s
					if s.Ended() {
						rec.EndedAt = base.Add(time.Duration(i) * time.Second)
					}
					if err := b.Put(ctx, rec); err != nil {
						errs <- err
						return
					}
				}
				if _, _, err := b.List(ctx, jobs.Filter{State: jobs.Running}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	countKeys(t, b, map[string]int{"jobs": workers * each, "active": 0, "ended": workers * each})
}
