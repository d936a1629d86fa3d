// Package config loads, defaults and validates execgw's YAML configuration,
// and checks the parameters of a run against a command's declarations.
//
// A configuration is checked completely at load time: every error names the
// file, the line and the key (`/etc/execgw/config.yaml:12:
// commands.dd.params.count.min: must be an integer`), executables are
// resolved to absolute paths, and argv templates are parsed once. At run time
// [Command.Bind] only validates values and fills in the parsed templates; a
// value always stays exactly one argv element, and no shell is involved.
package config

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of the top-level settings, as the README documents them.
const (
	defaultListen        = "127.0.0.1:8080"
	defaultStateDir      = "./var/execgw"
	defaultShutdownGrace = 30 * time.Second
	defaultMaxConcurrent = 64
	defaultMaxQueued     = 1000
	defaultMaxBody       = 100 << 20
	defaultOutputLimit   = 16 << 20
	defaultRetention     = 168 * time.Hour
	defaultKillGrace     = 5 * time.Second
	defaultClusterPrefix = "execgw"
	defaultNodeTimeout   = 10 * time.Second
)

// Config is a loaded, defaulted and validated configuration file.
type Config struct {
	Path          string // absolute path of the loaded file
	Listen        string // host:port, default "127.0.0.1:8080"
	StateDir      string // absolute; default "./var/execgw" relative to the config file's directory
	Log           Log
	ShutdownGrace time.Duration // default 30s
	IdleExit      time.Duration // 0 (default): never exit for idleness
	MaxConcurrent int           // default 64, >= 1
	MaxQueued     int           // default 1000, >= 0
	MaxBody       int64         // default 100MiB
	OutputLimit   int64         // default 16MiB, per stream per job
	Retention     time.Duration // default 168h; 0 keeps ended jobs forever
	// AllowedHosts are the Host header values served, each a host (any
	// port) or host:port; empty: the default of handler's cross-site
	// guard (loopback names without tokens, any with them).
	AllowedHosts []string
	Auth         Auth
	Limits       Limits
	Cgroup       Cgroup
	Cluster      Cluster
	Commands     map[string]*Command // at least one
}

// CommandNames returns the names of the configured commands, sorted.
func (c *Config) CommandNames() []string {
	return slices.Sorted(maps.Keys(c.Commands))
}

// Log is the "log" section.
type Log struct {
	Level  zerolog.Level // "level": trace|debug|info|warn|error; default info
	Format string        // "format": "json" | "console" | "" (console when stderr is a terminal)
}

// Auth is the "auth" section.
type Auth struct {
	Tokens         []Token // "tokens"
	AllowAnonymous bool    // "allow_anonymous"
}

// Token is one accepted bearer token, stored as the SHA-256 of its value so
// the configuration holds no secret.
type Token struct {
	Name     string   // unique, [A-Za-z0-9_.-]+; logged in place of the token
	SHA256   [32]byte // "sha256": 64 hex characters
	Commands []string // "commands": command names or path.Match globs; none by default
	AllJobs  bool     // "all_jobs": may read and cancel jobs of other tokens
}

// Limits is the "limits" section: bounds on what one request may cost.
type Limits struct {
	MaxHeaderBytes    int           // "max_header_bytes", default 64KiB
	MaxQueryBytes     int           // "max_query_bytes", default 8KiB
	MaxParams         int           // "max_params", default 64
	MaxParamBytes     int           // "max_param_bytes", default 4KiB per value
	Rate              float64       // "rate": requests per second per token (per remote IP when anonymous); 0 = unlimited
	Burst             int           // "burst", default 2*rate rounded up, at least 1
	MaxConnections    int           // "max_connections", default 4096
	ReadHeaderTimeout time.Duration // "read_header_timeout", default 10s
	IdleTimeout       time.Duration // "idle_timeout", default 120s
}

// Cgroup is the "cgroup" section.
type Cgroup struct {
	// Root is a writable cgroup v2 directory for per-job cgroups, absolute;
	// "" lets the gateway use its delegated subtree under systemd, if any.
	Root string
}

// Cluster is the "cluster" section: with Redis set, the gateway shares its
// jobs, queue and output with every gateway of the same Redis and prefix.
type Cluster struct {
	// Redis is a redis:// or rediss:// URL; "" (default): standalone.
	Redis string
	// Prefix starts every key, inside a Redis Cluster hash tag; default
	// "execgw".
	Prefix string
	// Node is this gateway's unique name; "" (default): hostname:port of
	// its listener, decided at start-up.
	Node string
	// NodeTimeout is how long a gateway may be silent before the others
	// take it for dead; default 10s.
	NodeTimeout time.Duration
}

// Enabled reports whether the gateway runs in a cluster.
func (c Cluster) Enabled() bool { return c.Redis != "" }

// Load reads, defaults and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read. path names the file in messages, and
// its directory is the base of relative paths in the configuration.
//
// The error, when there is one, joins every problem found (errors.Join),
// each on its own line as "file:line: key: message".
func Parse(path string, data []byte) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	p := &parser{file: abs, dir: filepath.Dir(abs)}
	return p.parse(data)
}

// defaults returns a Config holding every default, for the file's values to
// override.
func defaults(file string) *Config {
	dir := filepath.Dir(file)
	return &Config{
		Path:          file,
		Listen:        defaultListen,
		StateDir:      filepath.Join(dir, defaultStateDir),
		Log:           Log{Level: zerolog.InfoLevel},
		ShutdownGrace: defaultShutdownGrace,
		MaxConcurrent: defaultMaxConcurrent,
		MaxQueued:     defaultMaxQueued,
		MaxBody:       defaultMaxBody,
		OutputLimit:   defaultOutputLimit,
		Retention:     defaultRetention,
		Limits: Limits{
			MaxHeaderBytes:    64 << 10,
			MaxQueryBytes:     8 << 10,
			MaxParams:         64,
			MaxParamBytes:     4 << 10,
			MaxConnections:    4096,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
		},
		Cluster:  Cluster{Prefix: defaultClusterPrefix, NodeTimeout: defaultNodeTimeout},
		Commands: map[string]*Command{},
	}
}

// ValidHost reports whether s can be an allowed_hosts entry: a host name,
// an IPv4 address or a bracketed IPv6 address, with or without a port.
func ValidHost(s string) bool {
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
		if strings.HasPrefix(s, "[") { // IPv6, bracketed
			return strings.Contains(host, ":") && net.ParseIP(host) != nil
		}
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return net.ParseIP(s[1:len(s)-1]) != nil
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
