package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/execgw/execgw/internal/redistest"
)

func TestInspect(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t) // AOF on, appendfsync always
	rdb := newClient(t, srv)
	join(t, srv, "gw1", time.Minute)
	info, err := Inspect(ctx, rdb, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Version, "7.") && !strings.HasPrefix(info.Version, "6.") {
		t.Errorf("Version = %q", info.Version)
	}
	if !info.AOF || info.AOFFsync != "always" || !info.Durable() {
		t.Errorf("persistence = %+v, want AOF with fsync always", info)
	}
	if !slices.Equal(info.Nodes, []string{"gw1"}) {
		t.Errorf("Nodes = %v, want [gw1]", info.Nodes)
	}
	// Persistence off: the gateway must be able to say so.
	if err := rdb.ConfigSet(ctx, "appendonly", "no").Err(); err != nil {
		t.Fatal(err)
	}
	info, err = Inspect(ctx, rdb, "test")
	if err != nil {
		t.Fatal(err)
	}
	if info.AOF || info.Durable() || info.RDB {
		t.Errorf("after appendonly no: %+v, want not durable", info)
	}
}
