package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/execgw/execgw/internal/cluster"
	"github.com/execgw/execgw/internal/config"
)

// connectTimeout bounds `check --connect`'s whole conversation with Redis:
// an operator waiting at a prompt wants an answer, not a hang.
const connectTimeout = 5 * time.Second

// check validates a configuration as serve would, without serving; with
// --connect it also reaches the cluster's Redis and says what it found.
func check(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "configuration file")
	connect := fs.Bool("connect", false, "also reach the cluster's Redis (cluster.redis) and report its version, persistence and nodes")
	if ok, err := parseFlags(fs, args, stdout); !ok {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	// Only a configured cgroup.root is looked at: detecting systemd's
	// subtree would move this process, and check must change nothing.
	cgroups, err := openCgroups(cfg, false)
	if err != nil {
		return err
	}
	if cgroups != nil {
		// The subtree it opened, if new, goes again: check changes nothing.
		defer cgroups.Close()
		if err := checkContainment(cfg, cgroups); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(stdout, "%s: ok, %d commands\n", cfg.Path, len(cfg.Commands)); err != nil {
		return err
	}
	if cfg.Cluster.Enabled() {
		if _, err := fmt.Fprintln(stdout, describeCluster(cfg)); err != nil {
			return err
		}
	}
	if !*connect {
		return nil
	}
	return checkConnect(cfg, stdout)
}

// describeCluster is check's one line on the cluster a gateway would join.
// The password, if any, is masked: the line may be pasted into a ticket.
func describeCluster(cfg *config.Config) string {
	c := cfg.Cluster
	redisURL := maskedURL(c.Redis)
	if u, err := url.Parse(c.Redis); err == nil && !hasPassword(u) && os.Getenv("REDIS_PASSWORD") != "" {
		redisURL += " (password from REDIS_PASSWORD)"
	}
	node := c.Node
	if node == "" {
		node = "default: " + defaultNodeName(cfg.Listen) + " (hostname:port of its listener)"
	}
	return fmt.Sprintf("cluster: redis %s, prefix %s, node %s, node_timeout %s", redisURL, c.Prefix, node, c.NodeTimeout)
}

// defaultNodeName is a node's default name: this host's name and the port
// of its listener (check can only know the configured one; systemd's
// socket, if it passes one, may have its own port).
func defaultNodeName(listen string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "hostname"
	}
	port := "port"
	if _, p, err := net.SplitHostPort(listen); err == nil && p != "" && p != "0" {
		port = p
	}
	return net.JoinHostPort(host, port)
}

func hasPassword(u *url.URL) bool {
	if u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}

// maskedURL is a Redis URL with its password, if any, replaced by ***.
func maskedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Validated by config.Load, so not expected; never echo it.
		return "(unparsable URL)"
	}
	if !hasPassword(u) {
		return u.String()
	}
	// url.URL would escape the asterisks: put them in afterwards.
	const mark = "PASSWORD-MASK"
	u.User = url.UserPassword(u.User.Username(), mark)
	return strings.Replace(u.String(), ":"+mark+"@", ":***@", 1)
}

// checkConnect reaches the cluster's Redis as a gateway would and prints
// what it found; an error when Redis cannot be reached or refuses us.
func checkConnect(cfg *config.Config, stdout io.Writer) error {
	if !cfg.Cluster.Enabled() {
		_, err := fmt.Fprintln(stdout, "standalone (no cluster.redis): nothing to connect to")
		return err
	}
	where := maskedURL(cfg.Cluster.Redis)
	clients, err := cluster.Connect(cfg.Cluster)
	if err != nil {
		return err
	}
	defer clients.Close()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	info, err := cluster.Inspect(ctx, clients.Commands, cfg.Cluster.Prefix)
	if err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("cannot reach Redis at %s (is it running, and is this its address?): %w", where, err)
		}
		return fmt.Errorf("redis at %s refused: %w", where, err)
	}
	lines := []string{
		fmt.Sprintf("redis: version %s at %s", info.Version, where),
		"persistence: " + describePersistence(info),
		"durability: " + describeDurability(info),
		"nodes: " + describeNodes(info.Nodes, cfg.Cluster.Node),
	}
	_, err = fmt.Fprintln(stdout, strings.Join(lines, "\n"))
	return err
}

func describePersistence(info cluster.Info) string {
	aof := "AOF off"
	if info.AOF {
		aof = "AOF on"
	}
	if info.AOFFsync == "" {
		// CONFIG GET refused (managed Redis): INFO told only this much.
		return aof + "; appendfsync and RDB snapshots unknown (CONFIG GET refused)"
	}
	rdb := "RDB snapshots off"
	if info.RDB {
		rdb = "RDB snapshots on"
	}
	return fmt.Sprintf("%s, appendfsync %s; %s", aof, info.AOFFsync, rdb)
}

func describeDurability(info cluster.Info) string {
	switch {
	case info.Durable() && info.AOFFsync == "always":
		return "an acknowledged job survives a Redis restart, and a crash of Redis or its machine"
	case info.Durable():
		return "an acknowledged job survives a Redis restart; a crash of Redis or its machine may lose the last second of writes (appendfsync everysec)"
	case info.AOF && info.AOFFsync == "":
		return "unknown: the AOF is on, its appendfsync could not be read"
	default:
		return "NO: jobs acknowledged since the last snapshot are lost when Redis restarts; " +
			"set appendonly yes and appendfsync everysec or always (see deploy/redis/execgw.conf)"
	}
}

// describeNodes lists the gateways with a heartbeat in the cluster,
// marking the one this configuration names.
func describeNodes(nodes []string, self string) string {
	if len(nodes) == 0 {
		return "none yet (no gateway of this prefix has a heartbeat)"
	}
	named := make([]string, len(nodes))
	for i, n := range nodes {
		named[i] = n
		if n == self {
			named[i] += " (this configuration's node)"
		}
	}
	return fmt.Sprintf("%d with a heartbeat: %s", len(nodes), strings.Join(named, ", "))
}

// tokenNameRE is the config's rule for token names (auth.tokens[].name).
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// token prints a new random token and the config entry that accepts it:
// the config holds only the token's SHA-256.
func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "client", "name of the token in logs and job records")
	if ok, err := parseFlags(fs, args, stdout); !ok {
		return err
	}
	// The name goes into a YAML line to paste: one the config would reject,
	// or that breaks out of the flow mapping, must not be printed.
	if !tokenNameRE.MatchString(*name) || fs.NArg() > 0 {
		_, _ = fmt.Fprintln(stderr, "execgw token: --name must match [A-Za-z0-9_.-]+, and no other arguments are taken")
		return exitCode(2)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	tok := "egw_" + base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(tok))
	_, err := fmt.Fprintf(stdout, "token: %s\n\nadd to config.yaml under auth.tokens:\n    - {name: %s, sha256: %q, commands: [\"*\"]}\n",
		tok, *name, hex.EncodeToString(sum[:]))
	return err
}
