package jobstore

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/oklog/ulid/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
)

// benchParallelism times GOMAXPROCS is the number of writers in the
// parallel benchmarks: a gateway ending many jobs at once, at shutdown say.
const benchParallelism = 8

// benchRecord is a realistic ended record with the i-th id.
func benchRecord(i uint64) jobs.Record {
	rec := storetest.FullRecord(ulid.MustNew(ulid.Timestamp(storetest.Base)+i, nil).String())
	rec.State = jobs.Succeeded
	return rec
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPut measures one writer: each Put is a transaction and an fsync.
func BenchmarkPut(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	var n uint64
	for b.Loop() {
		n++
		if err := s.Put(ctx, benchRecord(n)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkPutParallel measures concurrent writers, which share
// transactions.
func BenchmarkPutParallel(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	var n atomic.Uint64
	b.SetParallelism(benchParallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Put(ctx, benchRecord(n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b)
}

// BenchmarkCommit compares ways to commit Put's transactions, one writer
// and many: bbolt's Update (one fsync per Put), bbolt's Batch (coalescing
// after a delay) and groupCommit, which Put uses.
func BenchmarkCommit(b *testing.B) {
	for _, v := range []struct {
		name   string
		commit func(s *Bolt, fn func(*bolt.Tx) error) error
	}{
		{"update", func(s *Bolt, fn func(*bolt.Tx) error) error { return s.db.Update(fn) }},
		{"batch", func(s *Bolt, fn func(*bolt.Tx) error) error { return s.db.Batch(fn) }},
		{"group", func(s *Bolt, fn func(*bolt.Tx) error) error { return s.writes.do(fn) }},
	} {
		for _, parallel := range []bool{false, true} {
			name := v.name + "/sequential"
			if parallel {
				name = v.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				s := openTest(b)
				var n atomic.Uint64
				one := func() error {
					rec := benchRecord(n.Add(1))
					val, err := EncodeRecord(rec)
					if err != nil {
						return err
					}
					return v.commit(s, func(tx *bolt.Tx) error { return put(tx, rec, val) })
				}
				if !parallel {
					for b.Loop() {
						if err := one(); err != nil {
							b.Fatal(err)
						}
					}
					reportRate(b)
					return
				}
				b.SetParallelism(benchParallelism)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := one(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				reportRate(b)
			})
		}
	}
}
