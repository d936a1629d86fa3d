package cluster

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/execgw/execgw/internal/config"
)

// Clients are the two connection pools a gateway keeps to its cluster's
// Redis: one for commands, whose replies are quick, and one for the
// blocking reads of output followers, so that followers never starve the
// first.
type Clients struct {
	Commands *redis.Client
	Follow   *redis.Client
}

// Connect makes the clients of the cluster c; it does not reach Redis yet.
// A password in REDIS_PASSWORD stands in for one missing from the URL, so
// that it need not be written in the configuration.
func Connect(c config.Cluster) (*Clients, error) {
	opts, err := redis.ParseURL(c.Redis)
	if err != nil {
		return nil, fmt.Errorf("cluster.redis: %w", err)
	}
	// go-redis logs each failed dial on stderr in a format of its own;
	// the gateway counts and logs Redis errors itself, once an episode.
	redis.SetLogger(quietLogger{})
	if opts.Password == "" {
		opts.Password = os.Getenv("REDIS_PASSWORD")
	}
	// A request must fail quickly when Redis is away: the client gets a
	// 503 to retry rather than a hung connection, and the heartbeat must
	// notice well within the node timeout.
	step := min(max(c.NodeTimeout/5, 200*time.Millisecond), 2*time.Second)
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = step, step, step
	// One dial a command: a refused connection is Redis away, not a
	// reason to wait.
	opts.MaxRetries, opts.DialerRetries = 1, 1
	opts.ClientName = "execgw"
	follow := *opts
	// go-redis adds a blocking command's own timeout to ReadTimeout.
	follow.PoolSize = 4 * opts.PoolSize
	if follow.PoolSize == 0 {
		follow.PoolSize = 64
	}
	return &Clients{Commands: redis.NewClient(opts), Follow: redis.NewClient(&follow)}, nil
}

// Close closes both pools.
func (c *Clients) Close() error {
	err := c.Commands.Close()
	if ferr := c.Follow.Close(); err == nil {
		err = ferr
	}
	return err
}

// quietLogger is a go-redis logger that drops what it is given.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
