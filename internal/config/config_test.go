package config

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// asEUID makes the configuration believe the gateway runs with this
// effective uid, so that the root-only rules do not depend on who runs the
// tests.
func asEUID(t *testing.T, uid int) {
	t.Helper()
	old := geteuid
	geteuid = func() int { return uid }
	t.Cleanup(func() { geteuid = old })
}

// writeConfig writes a config file into a fresh directory and returns its
// path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func mustLoad(t *testing.T, file string) *Config {
	t.Helper()
	cfg, err := Load(file)
	if err != nil {
		t.Fatalf("Load(%q) = %v, want no error", file, err)
	}
	return cfg
}

func TestLoadFull(t *testing.T) {
	asEUID(t, 0)
	cfg := mustLoad(t, "testdata/full.yaml")
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}

	checks := []struct {
		name      string
		got, want any
	}{
		{"Path", cfg.Path, filepath.Join(dir, "full.yaml")},
		{"Listen", cfg.Listen, "127.0.0.1:9090"},
		{"StateDir", cfg.StateDir, filepath.Join(dir, "state")},
		{"Log", cfg.Log, Log{Level: zerolog.DebugLevel, Format: "json"}},
		{"ShutdownGrace", cfg.ShutdownGrace, 45 * time.Second},
		{"IdleExit", cfg.IdleExit, 10 * time.Minute},
		{"MaxConcurrent", cfg.MaxConcurrent, 8},
		{"MaxQueued", cfg.MaxQueued, 100},
		{"MaxBody", cfg.MaxBody, int64(1 << 30)},
		{"OutputLimit", cfg.OutputLimit, int64(4 << 20)},
		{"Retention", cfg.Retention, 24 * time.Hour},
		{"Limits", cfg.Limits, Limits{
			MaxHeaderBytes:    32 << 10,
			MaxQueryBytes:     4096,
			MaxParams:         16,
			MaxParamBytes:     1024,
			Rate:              2.5,
			Burst:             5,
			MaxConnections:    100,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
		}},
		{"Cgroup", cfg.Cgroup, Cgroup{Root: filepath.Join(dir, "cgroup")}},
		{"Cluster", cfg.Cluster, Cluster{Redis: "redis://user@10.0.0.9:6380/2", Prefix: "gw-prod", Node: "gw1:8080", NodeTimeout: 7 * time.Second}},
		{"CommandNames", cfg.CommandNames(), []string{"convert", "dd"}},
		{"Auth.AllowAnonymous", cfg.Auth.AllowAnonymous, false},
		{"len(Auth.Tokens)", len(cfg.Auth.Tokens), 2},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}

	ops := cfg.Auth.Tokens[0]
	// sha256("foo")
	if ops.Name != "ops" || !ops.AllJobs || !slices.Equal(ops.Commands, []string{"*"}) ||
		ops.SHA256[0] != 0x2c || ops.SHA256[31] != 0xae {
		t.Errorf("Tokens[0] = %+v", ops)
	}
	// Upper-case hex is accepted.
	if ci := cfg.Auth.Tokens[1]; ci.Name != "ci.runner-1" || ci.AllJobs || ci.SHA256[0] != 0xfc {
		t.Errorf("Tokens[1] = %+v", ci)
	}

	dd := cfg.Commands["dd"]
	umask := uint32(0o077)
	wantDD := &Command{
		Name:          "dd",
		Description:   "Copy zeros",
		Argv:          []string{"dd", "if=/dev/zero", "of=/dev/null", "bs={bs}", "count={count}"},
		Path:          dd.Path, // depends on the machine's PATH; checked below
		Timeout:       10 * time.Minute,
		KillGrace:     2 * time.Second,
		MaxConcurrent: 4,
		Stdin:         StdinNone,
		Dir:           dir,
		Env:           map[string]string{"LC_ALL": "C", "EMPTY": ""},
		User:          "root",
		Group:         "0",
		Uid:           0,
		Gid:           0,
		Umask:         &umask,
		Rlimits: []Rlimit{
			{"as", unix.RLIMIT_AS, 1 << 30},
			{"core", unix.RLIMIT_CORE, 0},
			{"cpu", unix.RLIMIT_CPU, 60},
			{"nofile", unix.RLIMIT_NOFILE, 1024},
			{"nproc", unix.RLIMIT_NPROC, 256},
			{"stack", unix.RLIMIT_STACK, unix.RLIM_INFINITY},
		},
		MemoryMax: 512 << 20,
		PidsMax:   128,
		CPUMax:    1.5,
	}
	got := *dd
	got.Params, got.tmpl, got.envTmpl = nil, nil, nil
	if !reflect.DeepEqual(&got, wantDD) {
		t.Errorf("commands.dd =\n%+v\nwant\n%+v", got, *wantDD)
	}
	if !filepath.IsAbs(dd.Path) || filepath.Base(dd.Path) != "dd" || executable(dd.Path) != "" {
		t.Errorf("commands.dd Path = %q, want an absolute path to an executable dd", dd.Path)
	}
	if names := paramNames(dd); !slices.Equal(names, []string{"bs", "count"}) {
		t.Errorf("commands.dd params = %q, want [bs count]", names)
	}
	if bs := dd.Param("bs"); bs.Type != TypeString || bs.Pattern.String() != "^[0-9]+[KMG]?$" || *bs.Default != "1M" || bs.Required {
		t.Errorf("commands.dd.params.bs = %+v", bs)
	}
	if count := dd.Param("count"); count.Type != TypeInt || *count.Min != 1 || *count.Max != 1000000 || !count.Required || count.Default != nil {
		t.Errorf("commands.dd.params.count = %+v", count)
	}
	if p := dd.Param("nope"); p != nil {
		t.Errorf("Param(%q) = %+v, want nil", "nope", p)
	}

	conv := cfg.Commands["convert"]
	if conv.Path != "/bin/sh" || conv.Stdin != StdinBody || conv.KillGrace != 5*time.Second || conv.Uid != -1 || conv.Gid != -1 || conv.Umask != nil {
		t.Errorf("commands.convert = %+v", conv)
	}
	// Defaults are stored canonical: "03" → "3", "1" → "true".
	for name, want := range map[string]string{"mode": "fast", "level": "3", "verbose": "true"} {
		if p := conv.Param(name); p == nil || p.Default == nil || *p.Default != want {
			t.Errorf("commands.convert.params.%s.default = %v, want %q", name, p, want)
		}
	}
	if name := conv.Param("name"); name.MaxLen != 8 || !name.Secret || name.Default != nil {
		t.Errorf("commands.convert.params.name = %+v", name)
	}
}

func paramNames(c *Command) []string {
	var names []string
	for _, p := range c.Params {
		names = append(names, p.Name)
	}
	return names
}

func TestDefaults(t *testing.T) {
	file := writeConfig(t, "commands: {x: {argv: [/bin/echo]}}\n")
	cfg := mustLoad(t, file)
	want := &Config{
		Path:          file,
		Listen:        "127.0.0.1:8080",
		StateDir:      filepath.Join(filepath.Dir(file), "var", "execgw"),
		Log:           Log{Level: zerolog.InfoLevel},
		ShutdownGrace: 30 * time.Second,
		MaxConcurrent: 64,
		MaxQueued:     1000,
		MaxBody:       100 << 20,
		OutputLimit:   16 << 20,
		Retention:     168 * time.Hour,
		Cluster:       Cluster{Prefix: "execgw", NodeTimeout: 10 * time.Second},
		Limits: Limits{
			MaxHeaderBytes:    64 << 10,
			MaxQueryBytes:     8 << 10,
			MaxParams:         64,
			MaxParamBytes:     4 << 10,
			Burst:             1,
			MaxConnections:    4096,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
		},
		Commands: map[string]*Command{"x": {
			Name:      "x",
			Argv:      []string{"/bin/echo"},
			Path:      "/bin/echo",
			KillGrace: 5 * time.Second,
			Stdin:     StdinNone,
			Uid:       -1,
			Gid:       -1,
			tmpl:      []element{{{text: "/bin/echo"}}},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(%q) =\n%+v\nwant\n%+v", file, cfg, want)
		t.Errorf("commands.x =\n%+v\nwant\n%+v", cfg.Commands["x"], want.Commands["x"])
	}
}

func TestBurstDefault(t *testing.T) {
	tests := []struct {
		limits string
		want   int
	}{
		{"{}", 1},
		{"{rate: 0.2}", 1},
		{"{rate: 2.5}", 5},
		{"{rate: 3}", 6},
		{"{rate: 3, burst: 2}", 2},
		{"{rate: 1e300}", 1<<31 - 1},
	}
	for _, tc := range tests {
		t.Run(tc.limits, func(t *testing.T) {
			cfg := mustLoad(t, writeConfig(t, "limits: "+tc.limits+"\ncommands: {x: {argv: [/bin/echo]}}\n"))
			if cfg.Limits.Burst != tc.want {
				t.Errorf("Burst = %d, want %d", cfg.Limits.Burst, tc.want)
			}
		})
	}
}

// TestBrokenConfigs loads every file in testdata/bad. The first line of
// each says what the error must contain after the file's path:
// "# want: LINE: KEY: MESSAGE".
func TestBrokenConfigs(t *testing.T) {
	asEUID(t, 0) // so that user and group are looked up, not refused
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want := fixtureWant(t, file)
			abs, err := filepath.Abs(file)
			if err != nil {
				t.Fatal(err)
			}
			want = abs + ":" + want
			cfg, err := Load(file)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Load(%q) = %v, want an error containing %q", file, err, want)
			}
			if cfg != nil {
				t.Errorf("Load(%q) returned a config with its error", file)
			}
			// Every reported problem names the file and a line.
			located := regexp.MustCompile(`^` + regexp.QuoteMeta(abs) + `:[0-9]+: `)
			for _, line := range strings.Split(err.Error(), "\n") {
				if !located.MatchString(line) {
					t.Errorf("Load(%q): error line %q does not start with file:line:", file, line)
				}
			}
		})
	}
}

func fixtureWant(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	want, ok := strings.CutPrefix(sc.Text(), "# want: ")
	if !ok {
		t.Fatalf("%s: first line must be \"# want: LINE: KEY: MESSAGE\"", file)
	}
	return want
}

func TestErrorsAreCollected(t *testing.T) {
	file := writeConfig(t, `listen: nowhere
max_queued: -1
commands:
  x:
    argv: [/bin/echo, "{n}"]
    params: {n: {type: int, min: a}}
    timeout: soon
`)
	_, err := Load(file)
	if err == nil {
		t.Fatalf("Load(%q) = nil, want errors", file)
	}
	want := []string{
		file + ":1: listen: must be host:port",
		file + ":2: max_queued: must be at least 0",
		file + ":7: commands.x.timeout: must be a duration",
		file + ":6: commands.x.params.n.min: must be an integer",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("Load(%q) = %v, want %d errors", file, err, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestEmptyFile(t *testing.T) {
	for _, text := range []string{"", "# only a comment\n", "~\n"} {
		file := writeConfig(t, text)
		_, err := Load(file)
		if err == nil || !strings.HasPrefix(err.Error(), file+":") {
			t.Errorf("Load(%q) = %v, want an error naming the file", text, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := Load(file)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), file) {
		t.Errorf("Load(%q) = %v, want a not-exist error naming the file", file, err)
	}
}

func TestUserNeedsRoot(t *testing.T) {
	asEUID(t, 1000)
	tests := []struct {
		key, want string
	}{
		{"user: root", ":4: commands.x.user: execgw must run as root to switch users"},
		{"group: \"0\"", ":4: commands.x.group: execgw must run as root to switch groups"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			file := writeConfig(t, "commands:\n  x:\n    argv: [/bin/echo]\n    "+tc.key+"\n")
			_, err := Load(file)
			if err == nil || !strings.Contains(err.Error(), file+tc.want) {
				t.Errorf("Load(%q) = %v, want %q", tc.key, err, file+tc.want)
			}
		})
	}
}

func TestUserAndGroup(t *testing.T) {
	asEUID(t, 0)
	tests := []struct {
		keys     string
		uid, gid int
	}{
		{"user: root", 0, 0},
		{"user: \"0\"", 0, 0},
		{"group: \"0\"", -1, 0},
		{"user: root, group: \"0\"", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.keys, func(t *testing.T) {
			file := writeConfig(t, "commands:\n  x: {"+tc.keys+", argv: [/bin/echo]}\n")
			c := mustLoad(t, file).Commands["x"]
			if c.Uid != tc.uid || c.Gid != tc.gid {
				t.Errorf("Load(%q): Uid, Gid = %d, %d, want %d, %d", tc.keys, c.Uid, c.Gid, tc.uid, tc.gid)
			}
		})
	}
}

func TestExecutableResolution(t *testing.T) {
	dir := t.TempDir()
	mustWrite := func(name string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("bin/tool", 0o755)
	mustWrite("bin/data", 0o644)
	mustWrite("other/tool", 0o755)
	if err := os.Mkdir(filepath.Join(dir, "bin/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")

	tests := []struct {
		name    string
		cmd     string // the command's flow mapping, without braces
		gwPath  string // the gateway's PATH
		want    string // Path
		wantErr string
	}{
		{name: "relative with dot", cmd: "argv: [./bin/tool]", want: bin + "/tool"},
		{name: "relative with slash", cmd: "argv: [bin/tool]", want: bin + "/tool"},
		{name: "absolute", cmd: "argv: [" + bin + "/tool]", want: bin + "/tool"},
		{name: "dot-dot", cmd: "argv: [bin/../other/tool]", want: dir + "/other/tool"},
		{name: "gateway PATH", cmd: "argv: [tool]", gwPath: "/nonexistent:" + bin, want: bin + "/tool"},
		{name: "env PATH wins", cmd: "argv: [tool], env: {PATH: " + dir + "/other}", gwPath: bin, want: dir + "/other/tool"},
		{name: "first in PATH", cmd: "argv: [tool]", gwPath: dir + "/other:" + bin, want: dir + "/other/tool"},
		{name: "non-executable skipped", cmd: "argv: [data]", gwPath: bin, wantErr: `:3: commands.x.argv[0]: executable "data" not found in PATH`},
		{name: "relative PATH entries ignored", cmd: "argv: [tool], env: {PATH: bin}", wantErr: `:3: commands.x.argv[0]: executable "tool" not found in PATH "bin"`},
		{name: "not executable", cmd: "argv: [./bin/data]", wantErr: ":3: commands.x.argv[0]: " + bin + "/data is not executable"},
		{name: "directory", cmd: "argv: [./bin/sub]", wantErr: ":3: commands.x.argv[0]: " + bin + "/sub is a directory"},
		{name: "missing", cmd: "argv: [./bin/nope]", wantErr: ":3: commands.x.argv[0]: " + bin + "/nope does not exist"},
		{name: "missing in PATH", cmd: "argv: [nope-execgw]", gwPath: bin, wantErr: `:3: commands.x.argv[0]: executable "nope-execgw" not found in PATH "` + bin + `"`},
		{name: "empty", cmd: `argv: [""]`, wantErr: ":3: commands.x.argv[0]: the program must not be empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.gwPath)
			file := filepath.Join(dir, "config.yaml")
			text := "commands:\n  x:\n    {" + tc.cmd + "}\n"
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(file)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), file+tc.wantErr) {
					t.Errorf("Load(%q) = %v, want an error containing %q", tc.cmd, err, file+tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(%q) = %v", tc.cmd, err)
			}
			if got := cfg.Commands["x"].Path; got != tc.want {
				t.Errorf("Load(%q): Path = %q, want %q", tc.cmd, got, tc.want)
			}
		})
	}
}

func TestEnviron(t *testing.T) {
	t.Setenv("EXECGW_TEST_SECRET", "must not leak")
	file := writeConfig(t, `commands:
  plain: {argv: [/bin/echo]}
  env: {argv: [/bin/echo], env: {LC_ALL: C, A: "x=y", Z_EMPTY: ""}}
  path: {argv: [/bin/echo], env: {PATH: /only/here, B: b}}
`)
	cfg := mustLoad(t, file)
	tests := []struct {
		cmd    string
		gwPath string
		unset  bool
		want   []string
	}{
		{"plain", "/gw/bin", false, []string{"PATH=/gw/bin"}},
		{"plain", "", true, []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
		{"plain", "", false, []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
		{"env", "/gw/bin", false, []string{"A=x=y", "LC_ALL=C", "PATH=/gw/bin", "Z_EMPTY="}},
		{"path", "/gw/bin", false, []string{"B=b", "PATH=/only/here"}},
	}
	for _, tc := range tests {
		t.Run(tc.cmd, func(t *testing.T) {
			t.Setenv("PATH", tc.gwPath)
			if tc.unset {
				os.Unsetenv("PATH")
			}
			got := cfg.Commands[tc.cmd].Environ()
			if !slices.Equal(got, tc.want) {
				t.Errorf("Environ() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMergeKeys(t *testing.T) {
	file := writeConfig(t, `commands:
  a: &base
    argv: [/bin/echo, "{x}"]
    params: {x: {default: hi}}
    timeout: 5s
  b:
    <<: *base
    timeout: 7s
  c:
    <<: [*base]
    description: also
`)
	cfg := mustLoad(t, file)
	for name, want := range map[string]time.Duration{"a": 5 * time.Second, "b": 7 * time.Second, "c": 5 * time.Second} {
		c := cfg.Commands[name]
		if c.Timeout != want || !slices.Equal(c.Argv, []string{"/bin/echo", "{x}"}) || c.Param("x") == nil {
			t.Errorf("commands.%s = %+v, want timeout %v and b's argv", name, c, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "10B", want: 10},
		{in: "1KiB", want: 1024},
		{in: "1K", want: 1024},
		{in: "1k", want: 1024},
		{in: "1KB", want: 1000},
		{in: "1kB", want: 1000},
		{in: "100MiB", want: 100 << 20},
		{in: "100M", want: 100 << 20},
		{in: "100MB", want: 100e6},
		{in: "2GiB", want: 2 << 30},
		{in: "2G", want: 2 << 30},
		{in: "2GB", want: 2e9},
		{in: "3TiB", want: 3 << 40},
		{in: "3T", want: 3 << 40},
		{in: "1.5GiB", want: 3 << 29},
		{in: "0.5K", want: 512},
		{in: " 16 MiB ", want: 16 << 20},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "8388608TiB", wantErr: true},
		{in: "9223372036854775807", want: 1<<63 - 1},
		{in: "9223372036854775808", wantErr: true},
		{in: "1e3", wantErr: true},
		{in: "", wantErr: true},
		{in: "MiB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-1MiB", wantErr: true},
		{in: "1XB", wantErr: true},
		{in: "1.2.3K", wantErr: true},
		{in: ".", wantErr: true},
		{in: "1 1", wantErr: true},
		{in: "1e400K", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseSize(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestRlimitValues(t *testing.T) {
	file := writeConfig(t, `commands:
  x:
    argv: [/bin/echo]
    rlimits: {cpu: 1m30s, fsize: 10M, memlock: unlimited, nofile: "64"}
  y:
    argv: [/bin/echo]
    rlimits: {cpu: 90, core: 1KB}
  z:
    argv: [/bin/echo]
    rlimits: {cpu: 1500ms}
`)
	cfg := mustLoad(t, file)
	want := map[string][]Rlimit{
		"x": {
			{"cpu", unix.RLIMIT_CPU, 90},
			{"fsize", unix.RLIMIT_FSIZE, 10 << 20},
			{"memlock", unix.RLIMIT_MEMLOCK, unix.RLIM_INFINITY},
			{"nofile", unix.RLIMIT_NOFILE, 64},
		},
		"y": {
			{"core", unix.RLIMIT_CORE, 1000},
			{"cpu", unix.RLIMIT_CPU, 90},
		},
		// Rounded up: a limit never becomes stricter than written.
		"z": {{"cpu", unix.RLIMIT_CPU, 2}},
	}
	for name, w := range want {
		if got := cfg.Commands[name].Rlimits; !reflect.DeepEqual(got, w) {
			t.Errorf("commands.%s.rlimits = %+v, want %+v", name, got, w)
		}
	}
}

func TestUmask(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
	}{
		{`"0077"`, 0o077},
		{`0077`, 0o077},
		{`"077"`, 0o077},
		{`"0o27"`, 0o027},
		{`"0"`, 0},
		{`"0777"`, 0o777},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			cfg := mustLoad(t, writeConfig(t, "commands: {x: {argv: [/bin/echo], umask: "+tc.in+"}}\n"))
			if got := cfg.Commands["x"].Umask; got == nil || *got != tc.want {
				t.Errorf("umask %s = %v, want %#o", tc.in, got, tc.want)
			}
		})
	}
	for _, bad := range []string{`"1777"`, `"8"`, `"-1"`, `"rw"`} {
		file := writeConfig(t, "commands: {x: {argv: [/bin/echo], umask: "+bad+"}}\n")
		if _, err := Load(file); err == nil || !strings.Contains(err.Error(), "commands.x.umask") {
			t.Errorf("Load(umask %s) = %v, want a commands.x.umask error", bad, err)
		}
	}
}

func TestTokenGlobs(t *testing.T) {
	file := writeConfig(t, `auth:
  tokens:
    - name: a
      sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
      commands: ["backup-*", "d?", "[a-c]*"]
commands: {dd: {argv: [/bin/echo]}}
`)
	// Globs may match no command: commands come and go, tokens stay.
	cfg := mustLoad(t, file)
	if got := cfg.Auth.Tokens[0].Commands; !slices.Equal(got, []string{"backup-*", "d?", "[a-c]*"}) {
		t.Errorf("commands = %q", got)
	}
}

// TestAliasExpansionBounded: aliases let a small file name one subtree many
// times over; loading it must stop early instead of walking it all.
func TestAliasExpansionBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-values: &v [")
	for i := range 200 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(i))
	}
	b.WriteString("]\nx-param: &q {type: enum, values: *v}\nx-params: &p {")
	for i := range 200 {
		fmt.Fprintf(&b, "p%d: *q, ", i)
	}
	b.WriteString("}\ncommands:\n")
	for i := range 200 {
		fmt.Fprintf(&b, "  c%d: {argv: [/bin/echo], params: *p}\n", i)
	}
	file := writeConfig(t, b.String())
	start := time.Now()
	_, err := Load(file)
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Errorf("Load(%d bytes of aliases) = %v, want an expansion error", b.Len(), err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Load took %v", d)
	}
}

func TestErrorsAreOneLinePerProblem(t *testing.T) {
	file := writeConfig(t, "\"a\\nb\": 1\ncommands: {x: {argv: [/bin/echo], dir: \"/no\\nsuch\"}}\n")
	_, err := Load(file)
	want := []string{
		file + `:1: "a\nb": unknown key`,
		file + `:2: commands.x.dir: "/no\nsuch" does not exist`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("Load(%q) = %v, want %q", file, err, want)
	}
}

// TestAllowedHostsLoad: the list is kept; an entry that cannot be a Host
// header value is reported with its line.
func TestAllowedHostsLoad(t *testing.T) {
	file := writeConfig(t, `allowed_hosts: [gw.example, "gw.example:8443", "[::1]"]
commands:
  x: {argv: [/bin/echo]}
`)
	cfg, err := Load(file)
	if err != nil {
		t.Fatalf("Load(%q) = %v", file, err)
	}
	if want := []string{"gw.example", "gw.example:8443", "[::1]"}; !slices.Equal(cfg.AllowedHosts, want) {
		t.Errorf("AllowedHosts = %q, want %q", cfg.AllowedHosts, want)
	}
	file = writeConfig(t, `allowed_hosts: [ok.example, "http://gw.example/"]
commands:
  x: {argv: [/bin/echo]}
`)
	_, err = Load(file)
	if want := file + `:1: allowed_hosts[1]: "http://gw.example/" is not a host or host:port`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(%q) = %v, want prefix %q", file, err, want)
	}
}
