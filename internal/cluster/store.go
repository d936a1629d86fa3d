package cluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobstore"
)

// Store is a jobs.Store in Redis. A record is a hash `{p}:job:<id>`: its
// encoding under "r", and under "s", "c", "o" the state, command and owner
// that its index entries are filed under, so that the scripts can move
// them without decoding the record. Indexes are sorted sets ordered by id
// (ids sort by creation time): every job, and the jobs of one state,
// command or owner; ended jobs are also in a set scored by when they
// ended, for retention. A record and its index entries change together,
// in one script.
type Store struct {
	rdb    *redis.Client
	prefix string // "{execgw}:"
}

var _ jobs.Store = (*Store)(nil)

// NewStore returns the store of the cluster whose keys start with prefix.
func NewStore(rdb *redis.Client, prefix string) *Store {
	return &Store{rdb: rdb, prefix: newKeys(prefix).prefix}
}

// Close does nothing: the client belongs to the caller.
func (s *Store) Close() error { return nil }

// The scripts that write records share record.lua.
var (
	//go:embed lua/record.lua
	recordLua string
	//go:embed lua/put.lua
	putLua string
	//go:embed lua/delete.lua
	deleteLua string
	//go:embed lua/list.lua
	listLua string

	putScript    = redis.NewScript(recordLua + putLua)
	deleteScript = redis.NewScript(deleteLua)
	listScript   = redis.NewScript(listLua)
)

// ErrFenced means a write came from a gateway that no longer holds the
// job's lease: the cluster gave the job to another, or recorded it
// interrupted, while the writer was cut off.
var ErrFenced = jobs.ErrFenced

// Put creates or replaces a record that has no lease, and its index
// entries, at once. With the append-only file on and fsync always, it is
// durable when Put returns.
func (s *Store) Put(ctx context.Context, rec jobs.Record) error {
	return s.PutLeased(ctx, rec, "", "", "")
}

// TakeOver, as PutLeased's expect, writes whatever lease the stored record
// has: for recovery, which resolves the jobs of a node that is gone.
const TakeOver = "*"

// PutLeased is Put for the holder of the record's lease expect: the record
// then has lease, and runs on node. A writer that does not hold the
// stored lease gets ErrFenced and writes nothing.
func (s *Store) PutLeased(ctx context.Context, rec jobs.Record, expect, lease, node string) error {
	if !validID(rec.ID) {
		return fmt.Errorf("put job %q: invalid id", rec.ID)
	}
	val, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("put job %s: %w", rec.ID, err)
	}
	ended := ""
	if rec.State.Ended() {
		ended = endedMember(rec)
	}
	err = putScript.Run(ctx, s.rdb, nil, s.prefix, rec.ID, val, string(rec.State), rec.Command, rec.Owner, ended, expect, lease, node).Err()
	switch {
	case hasErrorCode(err, "FENCED"):
		return fmt.Errorf("put job %s: %w", rec.ID, ErrFenced)
	case err != nil:
		return fmt.Errorf("put job %s: %w", rec.ID, err)
	}
	return nil
}

// Get returns the record, or jobs.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (jobs.Record, error) {
	if !validID(id) {
		return jobs.Record{}, jobs.ErrNotFound
	}
	val, err := s.rdb.HGet(ctx, s.prefix+"job:"+id, "r").Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return jobs.Record{}, jobs.ErrNotFound
	case err != nil:
		return jobs.Record{}, fmt.Errorf("get job %s: %w", id, err)
	}
	return decodeRecord(val)
}

// List returns the records matching f, newest first, walking the smallest
// index that f names.
func (s *Store) List(ctx context.Context, f jobs.Filter) ([]jobs.Record, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, jobs.MaxPageSize)
	res, err := listScript.Run(ctx, s.rdb, nil, s.prefix, string(f.State), f.Command, f.Owner, f.After, limit).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	// The script returns the records, then the next cursor ("" for none).
	if len(res) == 0 {
		return nil, "", nil
	}
	next := res[len(res)-1]
	recs := make([]jobs.Record, 0, len(res)-1)
	for _, val := range res[:len(res)-1] {
		rec, err := decodeRecord([]byte(val))
		if err != nil {
			return nil, "", err
		}
		recs = append(recs, rec)
	}
	return recs, next, nil
}

// Delete removes the record and its index entries, or returns
// jobs.ErrNotFound.
func (s *Store) Delete(ctx context.Context, id string) error {
	if !validID(id) {
		return jobs.ErrNotFound
	}
	n, err := deleteScript.Run(ctx, s.rdb, nil, s.prefix, id).Int()
	if err != nil {
		return fmt.Errorf("delete job %s: %w", id, err)
	}
	if n == 0 {
		return jobs.ErrNotFound
	}
	return nil
}

// Unfinished returns every record still queued or running.
func (s *Store) Unfinished(ctx context.Context) ([]jobs.Record, error) {
	var out []jobs.Record
	for _, st := range []jobs.State{jobs.Queued, jobs.Running} {
		after := ""
		for {
			recs, next, err := s.List(ctx, jobs.Filter{State: st, Limit: jobs.MaxPageSize, After: after})
			if err != nil {
				return nil, err
			}
			out = append(out, recs...)
			if next == "" {
				break
			}
			after = next
		}
	}
	return out, nil
}

// EndedBefore returns up to max ids of jobs that ended before t, those
// that ended first first.
func (s *Store) EndedBefore(ctx context.Context, t time.Time, max int) ([]string, error) {
	if max <= 0 {
		return nil, nil
	}
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.prefix + "idx:ended", ByLex: true,
		Start: "-", Stop: "(" + timeKey(t),
		Count: int64(max),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("list ended jobs: %w", err)
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m[timeKeyLen:]
	}
	return ids, nil
}

// The ended index orders jobs by when they ended, to the nanosecond, and
// then by id: its members are timeKey(ended_at) followed by the id, and all
// scores are 0, so the order is the members' byte order.
const timeKeyLen = 24

// timeKey encodes t so that byte order is time order, for any t: the Unix
// seconds with the sign bit flipped, then the nanoseconds, in fixed-width
// hex.
func timeKey(t time.Time) string {
	return fmt.Sprintf("%016x%08x", uint64(t.Unix())^(1<<63), t.Nanosecond())
}

// endedMember is rec's member of the ended index. A record in an ended
// state always has EndedAt; should one lack it, its creation time stands
// in, so retention still removes it in time.
func endedMember(rec jobs.Record) string {
	t := rec.EndedAt
	if t.IsZero() {
		t = rec.CreatedAt
	}
	return timeKey(t) + rec.ID
}

// encodeRecord and decodeRecord are the stored form of a record, the
// same as the embedded store's.
func encodeRecord(rec jobs.Record) ([]byte, error) { return jobstore.EncodeRecord(rec) }

func decodeRecord(val []byte) (jobs.Record, error) { return jobstore.DecodeRecord(val) }

// hasErrorCode reports whether err is a script's error reply with the
// given code (its first word).
func hasErrorCode(err error, code string) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), code+" ")
}
