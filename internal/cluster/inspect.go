package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Info is what a gateway can see of its cluster's Redis: for `execgw check
// --connect` and the start-up log.
type Info struct {
	Version string
	// AOF is whether the append-only file is on, and AOFFsync its
	// appendfsync policy ("always", "everysec", "no").
	AOF      bool
	AOFFsync string
	// RDB is whether snapshots are configured.
	RDB bool
	// Nodes are the gateways with a heartbeat in this cluster, alive or
	// not yet forgotten, by name (Redis orders them by heartbeat).
	Nodes []string
}

// Durable reports whether an acknowledged write survives a Redis restart:
// with the append-only file on and fsync not left to the kernel.
func (i Info) Durable() bool { return i.AOF && (i.AOFFsync == "always" || i.AOFFsync == "everysec") }

// Inspect reads the server's version and persistence settings, and the
// cluster's nodes.
func Inspect(ctx context.Context, rdb *redis.Client, prefix string) (Info, error) {
	var info Info
	server, err := rdb.Info(ctx, "server", "persistence").Result()
	if err != nil {
		return info, fmt.Errorf("redis INFO: %w", err)
	}
	fields := parseInfo(server)
	info.Version = fields["redis_version"]
	info.AOF = fields["aof_enabled"] == "1"
	// CONFIG GET may be renamed or refused (managed Redis): then only
	// what INFO says is known.
	if cfg, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err == nil {
		info.AOFFsync = cfg["appendfsync"]
	}
	if cfg, err := rdb.ConfigGet(ctx, "save").Result(); err == nil {
		info.RDB = strings.TrimSpace(cfg["save"]) != ""
	}
	if info.Nodes, err = rdb.ZRange(ctx, newKeys(prefix).prefix+"nodes", 0, -1).Result(); err != nil {
		return info, fmt.Errorf("redis: list nodes: %w", err)
	}
	slices.Sort(info.Nodes)
	return info, nil
}

// parseInfo reads INFO's "key:value" lines.
func parseInfo(text string) map[string]string {
	out := map[string]string{}
	for line := range strings.Lines(text) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}
