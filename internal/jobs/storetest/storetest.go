// Package storetest is the behaviour every jobs.Store and jobs.OutputStore
// must have, as tests that each implementation runs against itself: the
// embedded one (bbolt and files) and the cluster's (Redis) pass the same
// suite.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/execgw/execgw/internal/jobs"
)

// Base is the creation time of ID(0).
var Base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// ID is the ULID of a job created i milliseconds after Base: ids sort as i
// does.
func ID(i int) string {
	return ulid.MustNew(ulid.Timestamp(Base.Add(time.Duration(i)*time.Millisecond)), nil).String()
}

func intp(n int) *int { return &n }

// FullRecord has every field set, times with nanoseconds and a zone.
func FullRecord(id string) jobs.Record {
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
		Sid:             4000,
		ProcStart:       987654321,
		BootID:          "0b5b1f5e-6c1e-4a3b-9f0e-1234567890ab",
		Owner:           "ops",
		Node:            "gw1:8080",
		CreatedAt:       created,
		StartedAt:       created.Add(time.Millisecond),
		EndedAt:         created.Add(1500 * time.Millisecond),
		StdoutBytes:     1 << 40,
		StderrBytes:     17,
		StdoutTruncated: true,
		StderrTruncated: true,
		MemoryPeak:      1 << 30,
		CPUTimeMs:       1234,
		OutputError:     "stdout: no space left on device",
	}
}

// DiffRecord says how got differs from want, "" if it does not: times by
// instant (a store keeps the instant, not the *time.Location), a nil
// Params as an empty one.
func DiffRecord(got, want jobs.Record) string {
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

// IDs are the records' ids, in order.
func IDs(recs []jobs.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func mustPut(t *testing.T, s jobs.Store, recs ...jobs.Record) {
	t.Helper()
	for _, rec := range recs {
		if err := s.Put(context.Background(), rec); err != nil {
			t.Fatalf("Put(%s) = %v", rec.ID, err)
		}
	}
}

// Store runs the suite of a jobs.Store; open returns an empty store,
// closed when the test ends.
func Store(t *testing.T, open func(t *testing.T) jobs.Store) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, jobs.Store)
	}{
		{"PutGet", testPutGet},
		{"PutRefused", testPutRefused},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"ListFilters", testListFilters},
		{"ListPages", testListPages},
		{"ListAfter", testListAfter},
		{"ListLimit", testListLimit},
		{"ListCanceled", testListCanceled},
		{"Unfinished", testUnfinished},
		{"EndedBefore", testEndedBefore},
		{"Concurrent", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

func testPutGet(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	zero := FullRecord(ID(1))
	zero.ExitCode = intp(0)
	none := FullRecord(ID(2))
	none.ExitCode = nil
	bare := jobs.Record{ID: ID(3), Command: "dd", State: jobs.Queued, CreatedAt: Base}
	recs := []jobs.Record{FullRecord(ID(0)), zero, none, bare}
	mustPut(t, s, recs...)
	for _, want := range recs {
		got, err := s.Get(ctx, want.ID)
		if err != nil {
			t.Fatalf("Get(%s) = %v", want.ID, err)
		}
		if d := DiffRecord(got, want); d != "" {
			t.Errorf("Get(%s): %s", want.ID, d)
		}
	}
	// Put replaces.
	upd := bare
	upd.State, upd.Pid, upd.StartedAt = jobs.Running, 7, Base.Add(time.Second)
	mustPut(t, s, upd)
	got, err := s.Get(ctx, upd.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffRecord(got, upd); d != "" {
		t.Errorf("Get after replace: %s", d)
	}
}

func testPutRefused(t *testing.T, s jobs.Store) {
	if err := s.Put(context.Background(), jobs.Record{State: jobs.Queued}); err == nil {
		t.Error("Put(empty id) = nil, want error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, jobs.Record{ID: ID(1), State: jobs.Queued}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(canceled ctx) = %v, want context.Canceled", err)
	}
	if _, err := s.Get(context.Background(), ID(1)); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get after refused Put = %v, want ErrNotFound", err)
	}
}

func testNotFound(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	mustPut(t, s, jobs.Record{ID: ID(1), State: jobs.Succeeded, CreatedAt: Base, EndedAt: Base})
	for _, id := range []string{ID(2), "", "../x", "\x00", "a:b"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
		if err := s.Delete(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func testDelete(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	ended := jobs.Record{ID: ID(1), Command: "dd", State: jobs.Failed, CreatedAt: Base, EndedAt: Base.Add(time.Second)}
	live := jobs.Record{ID: ID(2), Command: "dd", State: jobs.Running, CreatedAt: Base}
	mustPut(t, s, ended, live)
	for _, id := range []string{ended.ID, live.ID} {
		if err := s.Delete(ctx, id); err != nil {
			t.Fatalf("Delete(%s) = %v", id, err)
		}
		if _, err := s.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Get(%s) after Delete = %v, want ErrNotFound", id, err)
		}
		if err := s.Delete(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("second Delete(%s) = %v, want ErrNotFound", id, err)
		}
	}
	// The indexes forget them too.
	if recs, err := s.Unfinished(ctx); err != nil || len(recs) != 0 {
		t.Errorf("Unfinished() = %v, %v, want none", IDs(recs), err)
	}
	if got, err := s.EndedBefore(ctx, Base.Add(time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("EndedBefore() = %v, %v, want none", got, err)
	}
	for _, f := range []jobs.Filter{{}, {Command: "dd"}, {State: jobs.Failed}} {
		if recs, next, err := s.List(ctx, f); err != nil || len(recs) != 0 || next != "" {
			t.Errorf("List(%+v) = %v, %q, %v, want none", f, IDs(recs), next, err)
		}
	}
}

// listFixture stores 30 records, ids 0..29, in a mix of states, commands
// and owners, out of order, and returns them in id order.
func listFixture(t *testing.T, s jobs.Store) []jobs.Record {
	t.Helper()
	states := []jobs.State{jobs.Succeeded, jobs.Running, jobs.Failed, jobs.Queued, jobs.Canceled}
	var recs []jobs.Record
	for i := range 30 {
		rec := jobs.Record{
			ID:        ID(i),
			Command:   []string{"dd", "backup", "convert"}[i%3],
			Owner:     []string{"", "ops"}[i%2],
			State:     states[i%len(states)],
			CreatedAt: Base.Add(time.Duration(i) * time.Millisecond),
		}
		if rec.State.Ended() {
			rec.EndedAt = rec.CreatedAt.Add(time.Second)
		}
		recs = append(recs, rec)
	}
	// Order comes from the ids alone.
	for _, i := range []int{5, 29, 0, 17} {
		mustPut(t, s, recs[i])
	}
	for i, r := range recs {
		if !slices.Contains([]int{5, 29, 0, 17}, i) {
			mustPut(t, s, r)
		}
	}
	return recs
}

func matches(rec *jobs.Record, f *jobs.Filter) bool {
	return (f.State == "" || rec.State == f.State) &&
		(f.Command == "" || rec.Command == f.Command) &&
		(f.Owner == "" || rec.Owner == f.Owner)
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

func testListFilters(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	recs := listFixture(t, s)
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
			got, next, err := s.List(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			want := newestFirst(recs, tc.f)
			if len(want) != tc.n {
				t.Fatalf("fixture: %d records match, want %d", len(want), tc.n)
			}
			if !slices.Equal(IDs(got), want) || next != "" {
				t.Errorf("List(%+v) = %v, %q; want %v, \"\"", tc.f, IDs(got), next, want)
			}
		})
	}
}

func testListPages(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	recs := listFixture(t, s)
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
				got, next, err := s.List(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) == 0 || len(got) > f.Limit {
					t.Fatalf("List(%+v) returned %d records, want 1..%d", f, len(got), f.Limit)
				}
				all = append(all, IDs(got)...)
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

func testListAfter(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	recs := listFixture(t, s)
	all := newestFirst(recs, jobs.Filter{})
	// An id between ID(9) and ID(10), not stored.
	between := ulid.MustNew(ulid.Timestamp(Base.Add(9*time.Millisecond)), strings.NewReader(strings.Repeat("\xff", 10))).String()
	prefix := ID(20)[:10]
	var beforePrefix []string
	for _, id := range all {
		if id < prefix { // a prefix sorts before every id it begins
			beforePrefix = append(beforePrefix, id)
		}
	}
	for _, tc := range []struct {
		name  string
		after string
		want  []string
	}{
		{"stored id", ID(20), all[10:]},
		{"oldest id", ID(0), nil},
		{"newest id", ID(29), all[1:]},
		{"id not stored", between, all[20:]},
		{"after everything", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", all},
		{"lower case sorts after upper", "zzz", all},
		{"before everything", "0", nil},
		{"prefix of stored ids", prefix, beforePrefix},
		{"path", "../../etc/passwd", nil},
		{"NUL", "\x00", nil},
		{"high bytes", "\xff\xfe", all},
		{"long", strings.Repeat("Z", 5000), all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, next, err := s.List(ctx, jobs.Filter{After: tc.after, Limit: jobs.MaxPageSize})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(IDs(got), tc.want) || next != "" {
				t.Errorf("List(after %q) = %v, %q; want %v, \"\"", tc.after, IDs(got), next, tc.want)
			}
		})
	}
}

func testListLimit(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	const n = jobs.MaxPageSize + 5
	for i := range n {
		mustPut(t, s, jobs.Record{ID: ID(i), Command: "dd", State: jobs.Succeeded, CreatedAt: Base, EndedAt: Base})
	}
	const defaultPageSize = 50
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
		got, next, err := s.List(ctx, jobs.Filter{Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want || next != got[len(got)-1].ID || got[0].ID != ID(n-1) {
			t.Errorf("List(limit %d) = %d records from %s, next %q; want %d from %s, next the last",
				tc.limit, len(got), got[0].ID, next, tc.want, ID(n-1))
		}
	}
}

func testListCanceled(t *testing.T, s jobs.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.List(ctx, jobs.Filter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("List(canceled ctx) = %v, want context.Canceled", err)
	}
}

func testUnfinished(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	unfinished := func() []string {
		t.Helper()
		recs, err := s.Unfinished(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids := IDs(recs)
		slices.Sort(ids)
		return ids
	}
	a := jobs.Record{ID: ID(1), Command: "dd", State: jobs.Queued, CreatedAt: Base}
	c := jobs.Record{ID: ID(2), Command: "dd", State: jobs.Queued, CreatedAt: Base}
	mustPut(t, s, a, c)
	if got, want := unfinished(), []string{a.ID, c.ID}; !slices.Equal(got, want) {
		t.Errorf("Unfinished() = %v, want %v", got, want)
	}

	a.State, a.StartedAt, a.Pid = jobs.Running, Base.Add(time.Second), 10
	mustPut(t, s, a)
	recs, err := s.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(recs, func(r jobs.Record) bool { return r.ID == a.ID })
	if len(recs) != 2 || i < 0 || DiffRecord(recs[i], a) != "" {
		t.Errorf("Unfinished() = %+v, want the running %+v among 2", recs, a)
	}

	a.State, a.EndedAt, a.ExitCode = jobs.Succeeded, Base.Add(2*time.Second), intp(0)
	mustPut(t, s, a)
	if got, want := unfinished(), []string{c.ID}; !slices.Equal(got, want) {
		t.Errorf("after a succeeded: Unfinished() = %v, want %v", got, want)
	}

	c.State, c.EndedAt, c.CancelReason = jobs.Canceled, Base.Add(time.Second), jobs.ReasonShutdown
	mustPut(t, s, c)
	if got := unfinished(); len(got) != 0 {
		t.Errorf("after c canceled: Unfinished() = %v, want none", got)
	}
}

func testEndedBefore(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	at := func(sec int) time.Time { return Base.Add(time.Duration(sec) * time.Second) }
	// Ended times in an order unlike the ids'.
	recs := []jobs.Record{
		{ID: ID(0), State: jobs.Succeeded, CreatedAt: Base, EndedAt: at(50)},
		{ID: ID(1), State: jobs.Failed, CreatedAt: Base, EndedAt: at(10)},
		{ID: ID(2), State: jobs.Running, CreatedAt: Base},
		{ID: ID(3), State: jobs.Interrupted, CreatedAt: Base, EndedAt: at(30)},
		{ID: ID(4), State: jobs.TimedOut, CreatedAt: Base, EndedAt: at(20).Add(time.Nanosecond)},
		{ID: ID(5), State: jobs.Queued, CreatedAt: Base},
		{ID: ID(6), State: jobs.Canceled, CreatedAt: Base, EndedAt: at(20).In(time.FixedZone("Y", -7*3600))},
	}
	mustPut(t, s, recs...)
	check := func(before time.Time, max int, want ...string) {
		t.Helper()
		got, err := s.EndedBefore(ctx, before, max)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("EndedBefore(%v, %d) = %v, want %v", before, max, got, want)
		}
	}
	check(at(0), 10)
	check(at(10), 10)
	check(at(10).Add(time.Nanosecond), 10, ID(1))
	check(at(20).Add(time.Nanosecond), 10, ID(1), ID(6))
	check(at(31), 10, ID(1), ID(6), ID(4), ID(3))
	check(at(1000), 10, ID(1), ID(6), ID(4), ID(3), ID(0))
	check(at(1000), 2, ID(1), ID(6))
	check(at(1000), 0)
	check(time.Time{}, 10)

	// A record put again with another end time moves; a deleted one goes.
	r := recs[1]
	r.EndedAt = at(40)
	mustPut(t, s, r)
	if err := s.Delete(ctx, ID(4)); err != nil {
		t.Fatal(err)
	}
	check(at(1000), 10, ID(6), ID(3), ID(1), ID(0))

	// A running record that ends joins them.
	r = recs[2]
	r.State, r.EndedAt = jobs.Succeeded, at(5)
	mustPut(t, s, r)
	check(at(1000), 10, ID(2), ID(6), ID(3), ID(1), ID(0))
}

// testConcurrent puts, reads and lists from many goroutines at once: the
// race detector and the final state check it.
func testConcurrent(t *testing.T, s jobs.Store) {
	ctx := context.Background()
	const workers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		// Exits after its records went through queued, running and ended.
		go func() {
			defer wg.Done()
			for i := range each {
				rec := jobs.Record{ID: ID(w*each + i), Command: "dd", State: jobs.Queued, CreatedAt: Base}
				for _, st := range []jobs.State{jobs.Queued, jobs.Running, jobs.Succeeded} {
					rec.State = st
					if st.Ended() {
						rec.EndedAt = Base.Add(time.Duration(i) * time.Second)
					}
					if err := s.Put(ctx, rec); err != nil {
						errs <- err
						return
					}
				}
				if _, _, err := s.List(ctx, jobs.Filter{State: jobs.Running}); err != nil {
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
	recs, err := s.Unfinished(ctx)
	if err != nil || len(recs) != 0 {
		t.Errorf("Unfinished() = %v, %v; want none", IDs(recs), err)
	}
	ended, err := s.EndedBefore(ctx, Base.Add(time.Hour), 1000)
	if err != nil || len(ended) != workers*each {
		t.Errorf("EndedBefore() = %d ids, %v; want %d", len(ended), err, workers*each)
	}
}

// Output runs the suite of a jobs.OutputStore; open returns an empty one,
// closed when the test ends. A store may make written bytes readable a
// little later than the write returns (Redis ships them), never later than
// the writer's Close.
func Output(t *testing.T, open func(t *testing.T) jobs.OutputStore) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, jobs.OutputStore)
	}{
		{"CreateOpenRemove", testOutputCreateOpenRemove},
		{"Follow", testOutputFollow},
		{"Size", testOutputSize},
		{"BadID", testOutputBadID},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

// ReadAll reads stream s of job id from o, whole.
func ReadAll(t *testing.T, o jobs.OutputStore, id string, s jobs.Stream) string {
	t.Helper()
	r, err := o.Open(id, s)
	if err != nil {
		t.Fatalf("Open(%s, %s) = %v", id, s, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s %s: %v", id, s, err)
	}
	return string(b)
}

func testOutputCreateOpenRemove(t *testing.T, o jobs.OutputStore) {
	id := ID(1)
	if got := ReadAll(t, o, id, jobs.Stdout); got != "" {
		t.Errorf("stream never created reads %q, want empty", got)
	}
	binary := make([]byte, 256*300) // every byte value, more than one read
	for i := range binary {
		binary[i] = byte(i)
	}
	for s, text := range map[jobs.Stream]string{jobs.Stdout: string(binary), jobs.Stderr: "err\n"} {
		w, err := o.Create(id, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, text); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
	}
	if got := ReadAll(t, o, id, jobs.Stdout); got != string(binary) {
		t.Errorf("stdout: read %d bytes, not the %d written", len(got), len(binary))
	}
	if got := ReadAll(t, o, id, jobs.Stderr); got != "err\n" {
		t.Errorf("stderr = %q, want %q", got, "err\n")
	}
	// A stream created but never written reads empty.
	w, err := o.Create(ID(3), jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ReadAll(t, o, ID(3), jobs.Stdout); got != "" {
		t.Errorf("stream never written reads %q, want empty", got)
	}
	if err := o.Remove(id); err != nil {
		t.Fatalf("Remove = %v", err)
	}
	for _, s := range []jobs.Stream{jobs.Stdout, jobs.Stderr} {
		if got := ReadAll(t, o, id, s); got != "" {
			t.Errorf("%s after Remove reads %q, want empty", s, got)
		}
	}
	if err := o.Remove(id); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
}

// testOutputFollow reads a stream while it is written, as following a live
// job does: EOF at the end so far, then the bytes written after it.
func testOutputFollow(t *testing.T, o jobs.OutputStore) {
	id := ID(1)
	w, err := o.Create(id, jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(id, jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64)
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read of empty stream = %d, %v; want 0, EOF", n, err)
	}
	for _, chunk := range []string{"first ", "second\n", "third"} {
		if _, err := io.WriteString(w, chunk); err != nil {
			t.Fatal(err)
		}
		var got []byte
		deadline := time.Now().Add(10 * time.Second)
		for len(got) < len(chunk) {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if n == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("after writing %q: read %q within 10 s", chunk, got)
				}
				time.Sleep(time.Millisecond)
			}
		}
		if string(got) != chunk {
			t.Fatalf("read after writing %q = %q", chunk, got)
		}
		if n, err := r.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read at end = %d, %v; want 0, EOF", n, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ReadAll(t, o, id, jobs.Stdout); got != "first second\nthird" {
		t.Errorf("after Close: %q", got)
	}
}

// testOutputSize: a stream's size is the bytes written to it, each chunk
// counted once, without reading them; a stream never written holds none.
func testOutputSize(t *testing.T, o jobs.OutputStore) {
	id := ID(1)
	if n, err := o.Size(id, jobs.Stdout); n != 0 || err != nil {
		t.Errorf("Size of a stream never created = %d, %v; want 0, nil", n, err)
	}
	w, err := o.Create(id, jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	chunks := []string{"one\n", strings.Repeat("x", 100_000), "\x00\xff"}
	want := 0
	for _, c := range chunks {
		if _, err := io.WriteString(w, c); err != nil {
			t.Fatal(err)
		}
		want += len(c)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := o.Size(id, jobs.Stdout); n != int64(want) || err != nil {
		t.Errorf("Size = %d, %v; want %d", n, err, want)
	}
	if n, err := o.Size(id, jobs.Stderr); n != 0 || err != nil {
		t.Errorf("Size of the stream not written = %d, %v; want 0", n, err)
	}
}

func testOutputBadID(t *testing.T, o jobs.OutputStore) {
	for _, id := range []string{"", "../x", "a/b", "a:b", "{x}", "\x00", strings.Repeat("A", 200)} {
		if _, err := o.Create(id, jobs.Stdout); err == nil {
			t.Errorf("Create(%q) = nil error", id)
		}
		if _, err := o.Open(id, jobs.Stdout); err == nil {
			t.Errorf("Open(%q) = nil error", id)
		}
		if err := o.Remove(id); err == nil {
			t.Errorf("Remove(%q) = nil error", id)
		}
		if _, err := o.Size(id, jobs.Stdout); err == nil {
			t.Errorf("Size(%q) = nil error", id)
		}
	}
	if _, err := o.Create(ID(1), jobs.Stream("stdin")); err == nil {
		t.Error("Create(stream stdin) = nil error")
	}
}
