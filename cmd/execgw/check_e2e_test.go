package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/cluster"
	"github.com/execgw/execgw/internal/gatewaytest"
	"github.com/execgw/execgw/internal/redistest"
)

// checkResult is what one `execgw check` run printed and how it exited.
type checkResult struct {
	stdout, stderr string
	code           int
}

// runCheck writes config to a new directory and runs the real binary's
// `check --config` on it with args and extra environment.
func runCheck(t *testing.T, config string, env []string, args ...string) checkResult {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary(t), append([]string{"check", "--config", path}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	res := checkResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("execgw check: %v", err)
	}
	t.Logf("execgw check %s: exit %d\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	return res
}

// clusterConfig is a valid configuration of one command in the cluster
// of the given cluster block's body.
func clusterConfig(block string) string {
	return "listen: 127.0.0.1:8080\nstate_dir: ./state\ncommands:\n  echo:\n    argv: [echo, hi]\ncluster:\n" + block
}

// redisClient is a client of srv for the test's own looks and changes.
func redisClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// joinAs gives the cluster of prefix a gateway named name, heartbeating
// as a real one does, until the test ends.
func joinAs(t *testing.T, rdb *redis.Client, prefix, name string) {
	t.Helper()
	n, err := cluster.JoinCluster(context.Background(), cluster.NodesOptions{
		Client: rdb, Prefix: prefix, Name: name, Timeout: 10 * time.Second,
		Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Leave(context.Background()) })
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// TestCheckConnectReportsRedis: `check --connect` reaches the cluster's
// Redis and says its version, its persistence as it is changed under it,
// whether an acknowledged job survives a restart, and the nodes of this
// cluster (not those of another prefix on the same Redis).
func TestCheckConnectReportsRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redisClient(t, srv)
	ctx := context.Background()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(info, "redis_version:")
	version, _, _ := strings.Cut(rest, "\r\n")
	if version == "" {
		t.Fatalf("no redis_version in INFO:\n%s", info)
	}
	joinAs(t, rdb, "ops", "gw-a:8080")
	joinAs(t, rdb, "ops", "gw-b:8080")
	joinAs(t, rdb, "elsewhere", "gw-z:8080")
	config := clusterConfig("  redis: " + srv.URL() + "\n  prefix: ops\n  node: gw-b:8080\n")

	steps := []struct {
		name   string
		config [][2]string // CONFIG SET before the check
		wants  []string
	}{
		{"as started: AOF on, fsync always", nil, []string{
			"persistence: AOF on, appendfsync always; RDB snapshots off",
			"durability: an acknowledged job survives a Redis restart, and a crash of Redis or its machine",
		}},
		{"fsync every second, snapshots on", [][2]string{{"appendfsync", "everysec"}, {"save", "3600 1"}}, []string{
			"persistence: AOF on, appendfsync everysec; RDB snapshots on",
			"durability: an acknowledged job survives a Redis restart; a crash of Redis or its machine may lose the last second",
		}},
		{"AOF off", [][2]string{{"appendonly", "no"}}, []string{
			"persistence: AOF off, appendfsync everysec; RDB snapshots on",
			"durability: NO: jobs acknowledged since the last snapshot are lost when Redis restarts",
		}},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			for _, kv := range step.config {
				if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
					t.Fatal(err)
				}
			}
			res := runCheck(t, config, nil, "--connect")
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing", res.code, res.stderr)
			}
			wantContains(t, "stdout", res.stdout, append([]string{
				": ok, 1 commands\n",
				"cluster: redis " + srv.URL() + ", prefix ops, node gw-b:8080, node_timeout 10s\n",
				"redis: version " + version + " at " + srv.URL() + "\n",
				"nodes: 2 with a heartbeat: gw-a:8080, gw-b:8080 (this configuration's node)\n",
			}, step.wants...)...)
			if strings.Contains(res.stdout, "gw-z") {
				t.Errorf("a node of another prefix is listed:\n%s", res.stdout)
			}
		})
	}
}

// TestCheckConnectUnreachable: a Redis that is not there fails `check
// --connect` with a message naming it (password masked), in bounded time;
// without --connect, check does not try, and describes the cluster.
func TestCheckConnectUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a closed port: connections are refused
	config := clusterConfig("  redis: redis://:s3cret@" + addr + "/0\n")

	start := time.Now()
	connected := runCheck(t, config, nil, "--connect")
	if connected.code == 0 {
		t.Errorf("exit 0 with Redis away")
	}
	wantContains(t, "stderr", connected.stderr, "cannot reach Redis at redis://:***@"+addr+"/0", "connection refused")
	if lines := strings.Count(strings.TrimSpace(connected.stderr), "\n") + 1; lines != 1 {
		t.Errorf("stderr has %d lines, want the one message", lines)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("check --connect took %v with Redis away", took)
	}

	res := runCheck(t, config, nil)
	if res.code != 0 || res.stderr != "" {
		t.Errorf("without --connect: exit %d, stderr %q; want 0 and nothing", res.code, res.stderr)
	}
	host, _ := os.Hostname()
	wantContains(t, "stdout", res.stdout,
		"cluster: redis redis://:***@"+addr+"/0, prefix execgw, node default: "+net.JoinHostPort(host, "8080")+" (hostname:port of its listener), node_timeout 10s\n")
	for _, r := range []checkResult{connected, res} {
		if strings.Contains(r.stdout+r.stderr, "s3cret") {
			t.Errorf("the password was printed:\n%s%s", r.stdout, r.stderr)
		}
	}
}

// TestCheckConnectPassword: against a Redis that requires a password,
// check --connect fails without one, and succeeds with it in the URL or in
// REDIS_PASSWORD, never printing it.
func TestCheckConnectPassword(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redisClient(t, srv)
	const password = "pw-4d2a9c"
	if err := rdb.ConfigSet(context.Background(), "requirepass", password).Err(); err != nil {
		t.Fatal(err)
	}
	plain := clusterConfig("  redis: " + srv.URL() + "\n")
	withPassword := clusterConfig("  redis: redis://:" + password + "@" + srv.Addr + "/0\n")

	res := runCheck(t, plain, nil, "--connect")
	if res.code == 0 {
		t.Errorf("exit 0 without the password")
	}
	wantContains(t, "stderr", res.stderr, "redis at "+srv.URL()+" refused", "NOAUTH")

	for _, c := range []struct {
		name, config string
		env          []string
		masked       string
	}{
		{"in the URL", withPassword, nil, "redis://:***@" + srv.Addr + "/0"},
		{"in REDIS_PASSWORD", plain, []string{"REDIS_PASSWORD=" + password}, srv.URL() + " (password from REDIS_PASSWORD)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := runCheck(t, c.config, c.env, "--connect")
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing", res.code, res.stderr)
			}
			wantContains(t, "stdout", res.stdout, "cluster: redis "+c.masked+",", "redis: version ", "nodes: none yet")
			if strings.Contains(res.stdout, password) {
				t.Errorf("the password was printed:\n%s", res.stdout)
			}
		})
	}
}

// TestCheckConnectStandalone: with no cluster.redis, --connect has nothing
// to reach and says so, successfully; check names no cluster.
func TestCheckConnectStandalone(t *testing.T) {
	config := "listen: 127.0.0.1:8080\nstate_dir: ./state\ncommands:\n  echo:\n    argv: [echo, hi]\n"
	for _, args := range [][]string{nil, {"--connect"}} {
		res := runCheck(t, config, nil, args...)
		if res.code != 0 || res.stderr != "" {
			t.Errorf("check %v: exit %d, stderr %q; want 0 and nothing", args, res.code, res.stderr)
		}
		if strings.Contains(res.stdout, "cluster:") {
			t.Errorf("check %v names a cluster:\n%s", args, res.stdout)
		}
		connect := len(args) > 0
		if said := strings.Contains(res.stdout, "standalone (no cluster.redis): nothing to connect to"); said != connect {
			t.Errorf("check %v: says there is nothing to connect to: %v, want %v:\n%s", args, said, connect, res.stdout)
		}
	}
}

// TestShippedRedisConfig: redis-server takes deploy/redis/execgw.conf as it
// is, and the Redis it gives is one check --connect calls durable, that
// never evicts.
func TestShippedRedisConfig(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not installed (apt-get install redis-server)")
		}
		t.Skip("redis-server is not installed (apt-get install redis-server)")
	}
	root, err := gatewaytest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	ln.Close()
	dir := t.TempDir()
	// The fragment first, as an include at the end of redis.conf would
	// be; only where to listen and write is added.
	srv := exec.Command("redis-server", filepath.Join(root, "deploy", "redis", "execgw.conf"),
		"--port", port, "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"))
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { // ends when redis-server does
		waitErr = srv.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		<-exited
	})

	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	// Dialled by hand until it listens: go-redis would log each refusal.
	up := func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil && rdb.Ping(ctx).Err() == nil
	}
	for deadline := time.Now().Add(10 * time.Second); !up(); {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server refused the shipped config: %v; its log:\n%s", waitErr, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server with the shipped config: no answer after 10 s")
		}
	}
	if got := rdb.ConfigGet(ctx, "maxmemory-policy").Val()["maxmemory-policy"]; got != "noeviction" {
		t.Errorf("maxmemory-policy %q, want noeviction", got)
	}
	res := runCheck(t, clusterConfig("  redis: redis://"+addr+"/0\n"), nil, "--connect")
	if res.code != 0 {
		t.Fatalf("exit %d", res.code)
	}
	wantContains(t, "stdout", res.stdout, "persistence: AOF on, appendfsync everysec;", "durability: an acknowledged job survives a Redis restart;")
}
