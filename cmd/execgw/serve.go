package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/cluster"
	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/handler"
	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobstore"
	"github.com/execgw/execgw/internal/lifecycle"
	"github.com/execgw/execgw/internal/logkey"
)

// memoryReleaseDelay is how long the gateway must have had nothing in
// progress before it gives the memory its last burst of work used back to
// the system.
const memoryReleaseDelay = 3 * time.Second

// releaseMemory collects all garbage and returns free memory to the
// system. Two collections (FreeOSMemory runs the second): what sync.Pools
// hold (net/http's per-connection buffers, Echo's contexts) survives the
// first one in their victim caches.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "configuration file")
	if ok, err := parseFlags(fs, args, stdout); !ok {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	// Setting it turns off the runtime's own updates when the CPU limit
	// changes (Go 1.25): a new limit takes effect at the next start.
	runtime.GOMAXPROCS(schedulerProcs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)))
	// From here a SIGTERM is a graceful shutdown, even one that comes
	// while the gateway is still starting: Run acts on it once serving.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	cgroups, err := openCgroups(cfg, true)
	if err != nil {
		return err
	}
	if cgroups != nil {
		defer func() {
			if err := cgroups.Close(); err != nil {
				log.Warn().Err(err).Msg("remove cgroup subtree")
			}
		}()
	}
	if err := checkContainment(cfg, cgroups); err != nil {
		return err
	}
	containment := "process groups"
	if cgroups != nil {
		containment = "cgroups in " + cgroups.Root()
	}

	lns, activated, err := lifecycle.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer closeAll(lns)
	if err := checkExposure(cfg, lns); err != nil {
		return err
	}

	spoolDir := filepath.Join(cfg.StateDir, "spool")
	if err := os.MkdirAll(spoolDir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	// Standalone, bbolt holds the records; in a cluster, the process
	// groups of this node's jobs, for its crash sweep.
	local, err := jobstore.OpenBolt(filepath.Join(cfg.StateDir, "jobs.db"))
	if err != nil {
		return err
	}
	defer local.Close()

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	var (
		store  jobs.Store       = local
		output jobs.OutputStore = nil
		node   *cluster.Node
		// The registry, once made, for the cancels other nodes send.
		registryRef atomic.Pointer[jobs.Registry]
	)
	if cfg.Cluster.Enabled() {
		clients, err := cluster.Connect(cfg.Cluster)
		if err != nil {
			return err
		}
		defer clients.Close()
		name := cfg.Cluster.Node
		if name == "" {
			name = defaultNodeName(lns[0].Addr().String())
		}
		log = log.With().Str(logkey.Node, name).Logger()
		joinCtx, cancel := context.WithTimeout(ctx, cfg.Cluster.NodeTimeout)
		node, err = cluster.Join(joinCtx, cluster.NodeOptions{
			Clients: clients, Prefix: cfg.Cluster.Prefix, Name: name, Timeout: cfg.Cluster.NodeTimeout,
			MaxQueued: cfg.MaxQueued, Commands: cfg.CommandNames(), Log: log, Metrics: metrics,
			Cancel: func(id, reason string) {
				if r := registryRef.Load(); r != nil {
					r.CancelHere(id, reason)
				}
			},
		})
		if err != nil {
			cancel()
			return fmt.Errorf("%s: cluster.redis: %w", cfg.Path, err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Cluster.NodeTimeout)
			defer cancel()
			if err := node.Leave(ctx); err != nil {
				log.Warn().Err(err).Msg("leave the cluster")
			}
		}()
		logCluster(joinCtx, log, cfg.Cluster, clients)
		cancel()
		shared, err := cluster.NewOutput(cluster.OutputOptions{
			Client: clients.Commands, Follow: clients.Follow, Prefix: cfg.Cluster.Prefix,
			SpoolDir: filepath.Join(cfg.StateDir, "cluster-spool"), Log: log,
			// The cluster records a job interrupted after node_timeout:
			// output it cannot take by then is of no use to it.
			GiveUp: 2 * cfg.Cluster.NodeTimeout,
		})
		if err != nil {
			return err
		}
		defer shared.Close()
		store, output = node, shared
		metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "execgw_cluster_nodes",
			Help: "Gateways of the cluster alive now, this one included.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, _ := node.Alive(ctx)
			return float64(n)
		}))
	} else {
		files, err := jobstore.NewFiles(filepath.Join(cfg.StateDir, "output"))
		if err != nil {
			return err
		}
		output = files
	}
	idle := lifecycle.NewIdle(cfg.IdleExit)
	// Go collects garbage only as it allocates, or every 2 minutes: after a
	// burst an idle gateway would hold its peak heap for that long, and
	// then give it back slowly. A quiet gateway has the time to do both at
	// once.
	idle.OnQuiet(memoryReleaseDelay, releaseMemory)
	if node != nil {
		// Queued work this gateway could take keeps it up; Redis away
		// does not: the queue is kept there, and the others take it.
		idle.KeepWhile(func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Cluster.NodeTimeout/3)
			defer cancel()
			work, err := node.QueuedWork(ctx)
			return err == nil && work
		})
	}
	registry := jobs.New(jobs.Options{
		Store:  store,
		Output: output,
		Log:    log,
		Limits: jobs.Limits{
			MaxConcurrent: cfg.MaxConcurrent,
			MaxQueued:     cfg.MaxQueued,
			OutputLimit:   cfg.OutputLimit,
			Retention:     cfg.Retention,
		},
		Metrics:  metrics,
		Activity: idle,
		Cgroups:  cgroups,
		Cluster:  clusterOf(node),
		Commands: cfg.Commands,
		Groups:   groupsOf(node, local),
	})
	defer registry.Close()
	registryRef.Store(registry)
	if err := registry.Recover(ctx); err != nil {
		return fmt.Errorf("recover jobs of the previous instance: %w", err)
	}

	var ready atomic.Bool
	addrs := make([]net.Addr, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr()
	}
	h := handler.New(handler.Options{
		Config:   cfg,
		Jobs:     registry,
		Log:      log,
		Metrics:  metrics,
		Activity: idle,
		Ready: func() bool {
			return ready.Load() && (node == nil || node.Reachable())
		},
		SpoolDir: spoolDir,
		// Under socket activation these are systemd's sockets, not listen.
		ListenAddrs: addrs,
	})

	log.Info().
		Str("config", cfg.Path).
		Str("state_dir", cfg.StateDir).
		Bool("socket_activated", activated).
		Str("containment", containment).
		Int("gomaxprocs", runtime.GOMAXPROCS(0)).
		Int("commands", len(cfg.Commands)).
		Stringer("shutdown_grace", cfg.ShutdownGrace).
		Stringer("idle_exit", cfg.IdleExit).
		Msg("execgw starting")

	return lifecycle.Run(lifecycle.Options{
		Listeners:         lns,
		Handler:           h,
		Log:               log,
		ReadHeaderTimeout: cfg.Limits.ReadHeaderTimeout,
		IdleTimeout:       cfg.Limits.IdleTimeout,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		MaxConnections:    cfg.Limits.MaxConnections,
		ShutdownGrace:     cfg.ShutdownGrace,
		Signals:           signals,
		Idle:              idle,
		SetReady:          ready.Store,
		Refuse:            registry.Drain,
		Active:            registry.Active,
		Drain:             registry.Shutdown,
	})
}

// clusterOf is the registry's cluster: none standalone (a nil *Node is
// not a nil interface).
func clusterOf(node *cluster.Node) jobs.Cluster {
	if node == nil {
		return nil
	}
	return node
}

// groupsOf is where a cluster node keeps its process groups: on this
// machine.
func groupsOf(node *cluster.Node, local jobs.Store) jobs.Store {
	if node == nil {
		return nil
	}
	return local
}

// logCluster logs the cluster joined, and warns when Redis would lose
// acknowledged records at a restart.
func logCluster(ctx context.Context, log zerolog.Logger, c config.Cluster, clients *cluster.Clients) {
	info, err := cluster.Inspect(ctx, clients.Commands, c.Prefix)
	if err != nil {
		log.Warn().Err(err).Msg("cannot inspect the cluster's redis")
		return
	}
	log.Info().Str("redis", maskedURL(c.Redis)).Str("prefix", c.Prefix).
		Str("redis_version", info.Version).Strs("nodes", info.Nodes).
		Stringer("node_timeout", c.NodeTimeout).Msg("joined the cluster")
	if !info.Durable() {
		log.Warn().Bool("appendonly", info.AOF).Str("appendfsync", info.AOFFsync).
			Msg("redis persistence is off or lax: a redis restart can lose acknowledged jobs (set appendonly yes, appendfsync everysec or always)")
	}
}

func init() {
	// zerolog's default is whole seconds: too coarse to order the lines of
	// one request and its job.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
}

// newLogger writes JSON lines, or a console format for people: when asked,
// or by default when stderr is a terminal.
func newLogger(cfg config.Log, w io.Writer) zerolog.Logger {
	console := cfg.Format == "console"
	if cfg.Format == "" {
		if f, ok := w.(*os.File); ok {
			_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
			console = err == nil
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(cfg.Level).With().Timestamp().Logger()
}

// openCgroups returns the manager of per-job cgroups: under cgroup.root
// when configured (an unusable one stops start-up), else under systemd's
// delegated subtree when detect allows looking for it (that moves the
// gateway into a leaf of its own); nil when there is none.
func openCgroups(cfg *config.Config, detect bool) (*cgroup.Manager, error) {
	root := cfg.Cgroup.Root
	if root == "" {
		var ok bool
		if !detect {
			return nil, nil
		}
		if root, ok = cgroup.Detect(); !ok {
			return nil, nil
		}
	}
	if cfg.Cgroup.Root == "" {
		// The service's own delegated cgroup: no other gateway is in it.
		m, err := cgroup.Open(root)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		return m, nil
	}
	// A configured root may be shared by several gateways: each works in
	// a subtree named after its state directory, which no other gateway
	// can share (bbolt locks it), and which stays the same across restarts
	// so that a restart sweeps its own leftovers.
	m, err := cgroup.OpenSubtree(root, cgroupSubtree(cfg.StateDir))
	if err != nil {
		return nil, fmt.Errorf("%s: cgroup.root: %w", cfg.Path, err)
	}
	return m, nil
}

// cgroupSubtree names a gateway's subtree of a shared cgroup.root.
func cgroupSubtree(stateDir string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return "gw-" + hex.EncodeToString(sum[:6])
}

// checkContainment refuses limits that cannot be enforced: a limit that
// is silently ignored is worse than none.
func checkContainment(cfg *config.Config, cgroups *cgroup.Manager) error {
	var errs []error
	for _, name := range cfg.CommandNames() {
		cmd := cfg.Commands[name]
		limits := map[string]string{"memory": "memory_max", "pids": "pids_max", "cpu": "cpu_max"}
		need := cgroup.Limits{MemoryMax: cmd.MemoryMax, PidsMax: cmd.PidsMax, CPUMax: cmd.CPUMax}
		for _, controller := range need.Controllers() {
			var err error
			if cgroups == nil {
				err = errors.New("per-job cgroups are not in use (set cgroup.root to a writable cgroup v2 directory, or run under systemd with Delegate=yes)")
			} else {
				err = cgroups.Require(controller)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: command %q: %s cannot be enforced: %w", cfg.Path, name, limits[controller], err))
			}
		}
	}
	return errors.Join(errs...)
}

// checkExposure refuses to serve without tokens on a listener other hosts
// can reach, unless the config says so explicitly.
func checkExposure(cfg *config.Config, lns []net.Listener) error {
	if len(cfg.Auth.Tokens) > 0 || cfg.Auth.AllowAnonymous {
		return nil
	}
	for _, ln := range lns {
		if !isLoopback(ln.Addr()) {
			return fmt.Errorf("%s: auth: no tokens are configured and %s is not a loopback address; configure auth.tokens, or set auth.allow_anonymous: true to serve it open", cfg.Path, ln.Addr())
		}
	}
	return nil
}

func isLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true // reachable only through the file system's permissions
	}
	return false
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}
