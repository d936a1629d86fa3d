package jobstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/execgw/execgw/internal/jobs"
)

// Buckets of the database. "jobs" is the only one holding data; the others
// are indexes maintained in the same transaction as every change to "jobs",
// so they can never disagree with it.
var (
	// bucketJobs maps a job id to the record's JSON.
	bucketJobs = []byte("jobs")
	// bucketActive holds the id (value empty) of every record whose State
	// is Queued or Running, so that Unfinished and List by those states
	// read a handful of keys instead of the whole history.
	bucketActive = []byte("active")
	// bucketEnded holds endedKey(rec)+id (value empty) of every ended record,
	// in order of the time it ended, for the retention sweep.
	bucketEnded = []byte("ended")
)

// lockTimeout bounds the wait for bbolt's exclusive file lock. The lock is
// held for as long as the database is open, so waiting longer only delays
// the error a second gateway on the same state directory is going to get.
const lockTimeout = time.Second

// defaultPageSize is the page size of List when Filter.Limit is not set.
const defaultPageSize = 50

// Bolt is a jobs.Store in a bbolt database file. It is safe for concurrent
// use.
type Bolt struct {
	db     *bolt.DB
	path   string
	writes *groupCommit // Put's transactions
}

var _ jobs.Store = (*Bolt)(nil)

// OpenBolt opens the database at path (e.g. state_dir/jobs.db), creating it
// with mode 0600, and its directory with mode 0700, if need be. While it is
// open no other process can open it: a second OpenBolt on the same path
// fails after about a second.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open job store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open job store %s: locked by another process (is another gateway using this state_dir?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketJobs, bucketActive, bucketEnded} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	return &Bolt{db: db, path: path, writes: &groupCommit{db: db}}, nil
}

// Close closes the database and releases its file lock.
func (b *Bolt) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close job store %s: %w", b.path, err)
	}
	return nil
}

// Put creates or replaces the record with rec.ID, and its index entries, in
// one transaction that is on disk when Put returns.
func (b *Bolt) Put(ctx context.Context, rec jobs.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if rec.ID == "" {
		return errors.New("put job: empty id")
	}
	val, err := EncodeRecord(rec)
	if err != nil {
		return fmt.Errorf("put job %s: %w", rec.ID, err)
	}
	// Concurrent Puts share a transaction and its fsync. fn may run more
	// than once: put only writes what rec says, so it can be repeated.
	err = b.writes.do(func(tx *bolt.Tx) error { return put(tx, rec, val) })
	if err != nil {
		return fmt.Errorf("put job %s: %w", rec.ID, err)
	}
	return nil
}

// put stores rec, encoded as val, and maintains the indexes.
func put(tx *bolt.Tx, rec jobs.Record, val []byte) error {
	id := []byte(rec.ID)
	js, active, ended := buckets(tx)
	// A record in the active index is not ended and has no ended entry:
	// only another one needs decoding to find its entry.
	if old := js.Get(id); old != nil && active.Get(id) == nil {
		if err := deleteEnded(ended, id, old); err != nil {
			return err
		}
	}
	if err := js.Put(id, val); err != nil {
		return err
	}
	if rec.State.Ended() {
		if err := active.Delete(id); err != nil {
			return err
		}
		return ended.Put(endedKey(rec, id), nil)
	}
	return active.Put(id, nil)
}

// Get returns the record with the given id, or jobs.ErrNotFound.
func (b *Bolt) Get(ctx context.Context, id string) (jobs.Record, error) {
	if err := ctx.Err(); err != nil {
		return jobs.Record{}, err
	}
	var rec jobs.Record
	err := b.db.View(func(tx *bolt.Tx) error {
		val := tx.Bucket(bucketJobs).Get([]byte(id))
		if val == nil {
			return jobs.ErrNotFound
		}
		return decode(val, &rec)
	})
	if err != nil {
		return jobs.Record{}, fmt.Errorf("get job %q: %w", id, err)
	}
	return rec, nil
}

// List returns the records matching f, newest first (by descending id),
// starting after f.After, and the id to pass as f.After for the next page:
// "" when no further record matches, so the last page is never empty.
//
// Filtering by Queued or Running reads only the active index; any other
// filter reads records from f.After backwards until the page is full.
func (b *Bolt) List(ctx context.Context, f jobs.Filter) ([]jobs.Record, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultPageSize
	}
	limit = min(limit, jobs.MaxPageSize)

	var (
		recs []jobs.Record
		next string
	)
	err := b.db.View(func(tx *bolt.Tx) error {
		js, active, _ := buckets(tx)
		// The keys of both buckets are job ids, so the same walk serves
		// either; the active index only needs a lookup of the record.
		walk := js
		if f.State == jobs.Queued || f.State == jobs.Running {
			walk = active
		}
		c := walk.Cursor()
		var k, v []byte
		if f.After == "" {
			k, v = c.Last()
		} else if k, _ = c.Seek([]byte(f.After)); k == nil {
			// Every key sorts before After.
			k, v = c.Last()
		} else {
			// k is the first key >= After; the one before is < After.
			k, v = c.Prev()
		}
		for n := 0; k != nil; k, v = c.Prev() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if walk == active {
				if v = js.Get(k); v == nil {
					continue
				}
			}
			var rec jobs.Record
			if err := decode(v, &rec); err != nil {
				return err
			}
			if !matches(&rec, &f) {
				continue
			}
			if len(recs) == limit {
				// One more match exists beyond the page.
				next = recs[len(recs)-1].ID
				return nil
			}
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	return recs, next, nil
}

func matches(rec *jobs.Record, f *jobs.Filter) bool {
	return (f.State == "" || rec.State == f.State) &&
		(f.Command == "" || rec.Command == f.Command) &&
		(f.Owner == "" || rec.Owner == f.Owner)
}

// Delete removes the record and its index entries, or returns
// jobs.ErrNotFound.
func (b *Bolt) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := []byte(id)
	err := b.db.Update(func(tx *bolt.Tx) error {
		js, active, ended := buckets(tx)
		old := js.Get(key)
		if old == nil {
			return jobs.ErrNotFound
		}
		if err := deleteEnded(ended, key, old); err != nil {
			return err
		}
		if err := active.Delete(key); err != nil {
			return err
		}
		return js.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("delete job %q: %w", id, err)
	}
	return nil
}

// Unfinished returns every record still Queued or Running, oldest first.
func (b *Bolt) Unfinished(ctx context.Context) ([]jobs.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var recs []jobs.Record
	err := b.db.View(func(tx *bolt.Tx) error {
		js, active, _ := buckets(tx)
		return active.ForEach(func(k, _ []byte) error {
			val := js.Get(k)
			if val == nil {
				return nil
			}
			var rec jobs.Record
			if err := decode(val, &rec); err != nil {
				return err
			}
			recs = append(recs, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list unfinished jobs: %w", err)
	}
	return recs, nil
}

// EndedBefore returns up to max ids of ended jobs whose EndedAt is before
// t, those that ended first first. max <= 0 returns none.
func (b *Bolt) EndedBefore(ctx context.Context, t time.Time, max int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	limit := timeKey(t)
	var ids []string
	err := b.db.View(func(tx *bolt.Tx) error {
		js, _, ended := buckets(tx)
		c := ended.Cursor()
		for k, _ := c.First(); k != nil && len(ids) < max; k, _ = c.Next() {
			if len(k) <= timeKeyLen || bytes.Compare(k[:timeKeyLen], limit) >= 0 {
				break
			}
			// Skip an entry left behind by a record that could not be
			// decoded when it was replaced or deleted: returning an id
			// that Delete does not know would stall the sweep.
			if id := k[timeKeyLen:]; js.Get(id) != nil {
				ids = append(ids, string(id))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list ended jobs: %w", err)
	}
	return ids, nil
}

func buckets(tx *bolt.Tx) (js, active, ended *bolt.Bucket) {
	return tx.Bucket(bucketJobs), tx.Bucket(bucketActive), tx.Bucket(bucketEnded)
}

func decode(val []byte, rec *jobs.Record) error {
	r, err := DecodeRecord(val)
	if err != nil {
		return err
	}
	*rec = r
	return nil
}

// deleteEnded removes the ended index entry of the stored record old, if it
// has one. A record that cannot be decoded is not in the way of replacing or
// deleting it: its entry, if any, is left and EndedBefore skips it.
func deleteEnded(ended *bolt.Bucket, id, old []byte) error {
	rec, err := DecodeRecord(old)
	if err != nil || !rec.State.Ended() {
		return nil
	}
	return ended.Delete(endedKey(rec, id))
}

// timeKeyLen is the length of timeKey's result.
const timeKeyLen = 12

// timeKey encodes t so that byte order is time order, for any t: the Unix
// seconds with the sign bit flipped, big-endian, then the nanoseconds.
func timeKey(t time.Time) []byte {
	k := make([]byte, timeKeyLen, timeKeyLen+32)
	binary.BigEndian.PutUint64(k, uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(k[8:], uint32(t.Nanosecond()))
	return k
}

// endedKey is the ended index key of rec: when it ended, then its id. A
// record in an ended state always has EndedAt; should one lack it, it is
// filed under its creation time, so retention still removes it in time.
func endedKey(rec jobs.Record, id []byte) []byte {
	t := rec.EndedAt
	if t.IsZero() {
		t = rec.CreatedAt
	}
	return append(timeKey(t), id...)
}
