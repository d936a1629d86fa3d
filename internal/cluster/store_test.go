package cluster

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
	"github.com/execgw/execgw/internal/redistest"
)

// newClient returns a client of srv, closed when the test ends.
func newClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestStoreSuite(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newClient(t, srv)
	storetest.Store(t, func(t *testing.T) jobs.Store {
		// One server for the suite, a cluster of its own per test.
		return NewStore(rdb, "test-"+t.Name())
	})
}

func TestOutputSuite(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Output(t, func(t *testing.T) jobs.OutputStore { return newOutput(t, srv) })
}
