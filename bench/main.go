// Command bench measures execgw against the targets of its issues and
// prints a Markdown report: cancel latency and per-run overhead (issue 2),
// the job store (issue 3), stream throughput (issue 4), cold start under
// socket activation (issue 5), load with 1000 clients (issue 6) and the
// memory of bound JSON runs (issue 13) and the cluster on Redis (issue 14).
//
//	go run ./bench              # the full run, several minutes
//	go run ./bench -quick       # a CI-sized run, under a minute
//	go run ./bench -o report.md -only cancel,load
//
// It builds the real gateway (go build ./cmd/execgw, no -race), starts it
// on 127.0.0.1 with a configuration of its own in a temporary directory and
// drives it over loopback. The machine is small and shared, so every figure
// is measured beside a baseline in the same run (a plain spawn, a direct
// kill, dd | cat, a minimal net/http + os/exec server) and read as a
// difference or a ratio. Every loop is bounded in count and time and only
// talks to 127.0.0.1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/gatewaytest"
)

// options are the command-line flags.
type options struct {
	quick        bool
	only         string
	out          string
	keep         bool
	clients      int
	loadDuration time.Duration
	loadRounds   int
	settle       time.Duration
	cancelRuns   int
	overheadRuns int
	detached     int
	recordJobs   int
	streamMiB    int
	streamReps   int
	coldStarts   int
	jobstore     bool
	strict       bool
}

// sections in report order; -only takes these names.
var sections = []string{"cancel", "overhead", "store", "stream", "coldstart", "load", "jsonmem", "cluster"}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-minimal-server" {
		if err := serveMinimal(); err != nil {
			fmt.Fprintln(os.Stderr, "minimal server:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		return // the usage is printed
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.strict, "strict", false, "exit non-zero when a correctness target (zero load errors, back to idle after the load) is missed; speed targets only report")
	fs.BoolVar(&o.quick, "quick", false, "a CI-sized run (under a minute): smaller counts, shorter load, no jobstore benchmark")
	fs.StringVar(&o.only, "only", "", "comma-separated sections to run: "+strings.Join(sections, ",")+" (default: all)")
	fs.StringVar(&o.out, "o", "", "also write the report to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, gateway logs, state)")
	fs.IntVar(&o.clients, "clients", 1000, "concurrent clients of the load test")
	fs.DurationVar(&o.loadDuration, "load-duration", 10*time.Second, "measured window of each load test (quick: 3s)")
	fs.IntVar(&o.loadRounds, "load-rounds", 2, "rounds of the load targets, order reversed every other round (quick: 1)")
	fs.DurationVar(&o.settle, "settle", 30*time.Second, "how long at most to wait for the gateway to get back to idle after the load; it gives memory back after 3 s with nothing in progress (quick: 10s)")
	fs.IntVar(&o.cancelRuns, "cancel-runs", 100, "cancel latency runs (quick: 20)")
	fs.IntVar(&o.overheadRuns, "overhead-runs", 1000, "sequential runs per variant of the overhead test (quick: 200)")
	fs.IntVar(&o.detached, "detached", 200, "running detached jobs for the memory test (quick: 50)")
	fs.IntVar(&o.recordJobs, "record-jobs", 1000, "detached jobs for the records-per-second test (quick: 200)")
	fs.IntVar(&o.streamMiB, "stream-mib", 1024, "MiB per stream (quick: 128)")
	fs.IntVar(&o.streamReps, "stream-reps", 5, "streams per variant (quick: 3)")
	fs.IntVar(&o.coldStarts, "cold-starts", 10, "measured cold starts (quick: 5)")
	fs.BoolVar(&o.jobstore, "jobstore", true, "also run go test -bench in internal/jobstore (quick: false)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"load-duration": func() { o.loadDuration = 3 * time.Second },
			"load-rounds":   func() { o.loadRounds = 1 },
			"settle":        func() { o.settle = 10 * time.Second },
			"cancel-runs":   func() { o.cancelRuns = 20 },
			"overhead-runs": func() { o.overheadRuns = 200 },
			"detached":      func() { o.detached = 50 },
			"record-jobs":   func() { o.recordJobs = 200 },
			"stream-mib":    func() { o.streamMiB = 128 },
			"stream-reps":   func() { o.streamReps = 3 },
			"cold-starts":   func() { o.coldStarts = 5 },
			"jobstore":      func() { o.jobstore = false },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	for _, s := range strings.Split(o.only, ",") {
		if s != "" && !contains(sections, s) {
			return o, fmt.Errorf("-only: unknown section %q (have %s)", s, strings.Join(sections, ","))
		}
	}
	return o, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (o *options) wants(section string) bool {
	return o.only == "" || contains(strings.Split(o.only, ","), section)
}

func run(ctx context.Context, args []string) (err error) {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	began := time.Now()
	raiseFileLimit()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}

	modRoot, err := gatewaytest.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "execgw-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		progress("keeping %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	progress("go build ./cmd/execgw")
	bin, err := gatewaytest.Build(ctx, modRoot, dir, false)
	if err != nil {
		return err
	}

	// Cleanups run in reverse order, on error too.
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	parts := map[string]*report{}
	for _, s := range sections {
		parts[s] = &report{}
	}

	// The shipped configuration: state on disk (the temporary directory),
	// info logs. On tmpfs, the same without the cost of fsync; and without
	// logs too.
	shm, haveShm := tmpfsDir()
	if haveShm {
		if shm, err = os.MkdirTemp(shm, "execgw-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(shm)
	} else {
		shm = ""
		progress("no tmpfs at /dev/shm: the shares of durability are not measured")
	}
	needGateways := o.wants("cancel") || o.wants("overhead") || o.wants("store") || o.wants("stream")
	var disk, tmpfs, quiet *gateway
	var mini *minimal
	if needGateways {
		gwOpts := gatewayOptions{maxConcurrent: 2048, maxQueued: 10000}
		if disk, err = startGateway(ctx, bin, filepath.Join(dir, "disk"), "state on disk", gwOpts); err != nil {
			return err
		}
		cleanups = append(cleanups, func() { _ = disk.stop() })
		if shm != "" && (o.wants("overhead") || o.wants("store")) {
			tmpOpts := gwOpts
			tmpOpts.stateDir = filepath.Join(shm, "tmpfs")
			if tmpfs, err = startGateway(ctx, bin, filepath.Join(dir, "tmpfs"), "state on tmpfs", tmpOpts); err != nil {
				return err
			}
			cleanups = append(cleanups, func() { _ = tmpfs.stop() })
			tmpOpts.stateDir = filepath.Join(shm, "quiet")
			tmpOpts.logLevel = "error"
			if quiet, err = startGateway(ctx, bin, filepath.Join(dir, "quiet"), "state on tmpfs, logs off", tmpOpts); err != nil {
				return err
			}
			cleanups = append(cleanups, func() { _ = quiet.stop() })
		}
	}
	if needGateways || o.wants("load") {
		if mini, err = startMinimal(nil); err != nil {
			return err
		}
		cleanups = append(cleanups, mini.stop)
	}

	// Memory first, while the gateways are fresh.
	if o.wants("store") {
		progress("store: %d detached jobs, %d jobs for records/s", o.detached, o.recordJobs)
		if err := benchStore(ctx, parts["store"], []*gateway{disk, tmpfs}, o.detached, o.recordJobs, 32); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if o.jobstore {
			progress("store: go test -bench ./internal/jobstore/")
			lines, err := jobstoreBench(ctx, modRoot)
			if err != nil {
				return err
			}
			p := parts["store"]
			p.printf("**The store alone** (`go test -run '^$' -bench '^(BenchmarkPut|BenchmarkPutParallel)$' -benchtime 2000x ./internal/jobstore/`, "+
				"same run, same disk): one `Put` is one bbolt transaction and its fsyncs; parallel writers share transactions.\n\n```\n%s\n```\n\n",
				strings.Join(lines, "\n"))
		}
	}
	if o.wants("cancel") {
		progress("cancel latency: %d runs", o.cancelRuns)
		if err := benchCancel(ctx, parts["cancel"], disk, o.cancelRuns); err != nil {
			return fmt.Errorf("cancel: %w", err)
		}
	}
	if o.wants("overhead") {
		progress("per-run overhead: %d runs per variant", o.overheadRuns)
		if err := benchOverhead(ctx, parts["overhead"], overheadGateways{disk: disk, tmpfs: tmpfs, quiet: quiet, minimal: mini}, o.overheadRuns); err != nil {
			return fmt.Errorf("overhead: %w", err)
		}
	}
	if o.wants("stream") {
		progress("stream: %d MiB × %d", o.streamMiB, o.streamReps)
		if err := benchStream(ctx, parts["stream"], disk, mini, o.streamMiB, o.streamReps); err != nil {
			return fmt.Errorf("stream: %w", err)
		}
	}
	// The other gateways are done: stop them before the load.
	for _, g := range []*gateway{disk, tmpfs, quiet} {
		if g != nil {
			if err := g.stop(); err != nil {
				return fmt.Errorf("gateway %s: %w", g.name, err)
			}
		}
	}
	if o.wants("coldstart") {
		progress("cold start: %d starts", o.coldStarts)
		if err := benchColdStart(ctx, parts["coldstart"], bin, dir, o.coldStarts); err != nil {
			return fmt.Errorf("cold start: %w", err)
		}
	}
	if o.wants("load") {
		progress("load: %d clients, %v per target, %d rounds", o.clients, o.loadDuration, o.loadRounds)
		if err := benchLoad(ctx, parts["load"], bin, dir, shm, mini, o.clients, o.loadDuration, o.settle, o.loadRounds); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}

	if o.wants("cluster") {
		co := clusterOptions{clients: 32, duration: 5 * time.Second, jobs: 200, cancels: 50, follows: 5}
		if o.quick {
			co = clusterOptions{clients: 16, duration: time.Second, jobs: 30, cancels: 10, follows: 1}
		}
		progress("cluster: %+v", co)
		if err := benchCluster(ctx, parts["cluster"], bin, dir, co); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}

	if o.wants("jsonmem") {
		progress("jsonmem: bound JSON runs of 16 MiB, %v at once", jsonMemLevels)
		if err := benchJSONMemory(ctx, parts["jsonmem"], bin, dir); err != nil {
			return fmt.Errorf("jsonmem: %w", err)
		}
	}

	containment := "unknown"
	for _, g := range []*gateway{disk, tmpfs, quiet} {
		if g != nil {
			containment = startupField(g.logPath, "containment")
			break
		}
	}
	doc := header(ctx, modRoot, args, began, containment)
	all := &report{}
	for _, s := range sections {
		all.targets = append(all.targets, parts[s].targets...)
	}
	doc += "\n## Targets\n\n" + all.summary()
	for _, s := range sections {
		doc += parts[s].b.String()
	}
	fmt.Print(doc)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(doc), 0o644); err != nil {
			return err
		}
	}
	if o.strict {
		for _, t := range all.targets {
			if t.correctness && !t.met {
				return fmt.Errorf("issue %s: %s: measured %s, want %s", t.issue, t.figure, t.measured, t.goal)
			}
		}
	}
	return nil
}

// header says what ran where.
func header(ctx context.Context, modRoot string, args []string, began time.Time, containment string) string {
	var b strings.Builder
	b.WriteString("# execgw benchmark report\n\n")
	fmt.Fprintf(&b, "- command: `%s`\n", strings.TrimSpace("go run ./bench "+strings.Join(args, " ")))
	fmt.Fprintf(&b, "- gateway: `go build -o $TMP/execgw ./cmd/execgw` (no -race) at %s; containment in use: %s\n", gitVersion(ctx, modRoot), containment)
	fmt.Fprintf(&b, "- machine: nproc %d, %s, %s RAM, kernel %s, %s\n", nproc(), cpuModel(), memTotal(), kernel(), goVersion(ctx))
	fmt.Fprintf(&b, "- date: %s, the run took %s\n", began.UTC().Format(time.RFC3339), time.Since(began).Round(time.Second))
	return b.String()
}

func nproc() int { return runtime.NumCPU() }

func kernel() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return "Linux " + strings.TrimSpace(string(data))
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	st, err := gatewaytest.StatusFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.0f GiB", float64(st["MemTotal"])/(1<<20))
}

func goVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "go", "version").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}

func gitVersion(ctx context.Context, modRoot string) string {
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD")
	cmd.Dir = modRoot
	out, err := cmd.Output()
	if err != nil {
		return "an unknown commit"
	}
	v := "commit " + strings.TrimSpace(string(out))
	cmd = exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no")
	cmd.Dir = modRoot
	if out, err := cmd.Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		v += " with uncommitted changes"
	}
	return v
}

// startupField returns a field of the gateway's "execgw starting" log line.
func startupField(logPath, field string) string {
	data, err := os.ReadFile(logPath)
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(data)) {
		if !strings.Contains(line, `"execgw starting"`) {
			continue
		}
		var fields map[string]any
		if json.Unmarshal([]byte(line), &fields) == nil {
			if v, ok := fields[field]; ok {
				return fmt.Sprint(v)
			}
		}
	}
	return "unknown"
}

// tmpfsDir returns /dev/shm when it is a tmpfs.
func tmpfsDir() (string, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return "", false
	}
	return "/dev/shm", true
}

// raiseFileLimit lifts the benchmark's own descriptor soft limit to the
// hard one: 1000 clients and 1000 spawns at once need several thousand.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
