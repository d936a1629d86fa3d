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
	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/handler"
	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobstore"
	"github.com/execgw/execgw/internal/lifecycle"
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
	store, err := jobstore.OpenBolt(filepath.Join(cfg.StateDir, "jobs.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	output, err := jobstore.NewFiles(filepath.Join(cfg.StateDir, "output"))
	if err != nil {
		return err
	}

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	idle := lifecycle.NewIdle(cfg.IdleExit)
	// Go collects garbage only as it allocates, or every 2 minutes: after a
	// burst an idle gateway would hold its peak heap for that long, and
	// then give it back slowly. A quiet gateway has the time to do both at
	// once.
	idle.OnQuiet(memoryReleaseDelay, releaseMemory)
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
	})
	defer registry.Close()
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
		Ready:    ready.Load,
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
