package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

// The file is decoded into a yaml.Node tree and walked by hand rather than
// unmarshalled into structs: only the node tree has the line of every key,
// and walking it is what lets unknown keys, duplicate keys and wrong types be
// reported as "file:line: key: message".

// geteuid is replaced by tests to exercise the "must run as root" rule.
var geteuid = os.Geteuid

var (
	commandNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	tokenNameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	yamlErrLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)
)

// maxErrors bounds how many problems one load reports; past it, the rest of
// a badly broken file is noise.
const maxErrors = 20

// maxEntries bounds the mapping and list entries one load walks. Aliases
// let a small file name the same subtree over and over ("billion laughs");
// no real configuration comes near this.
const maxEntries = 1 << 18

// configError is one problem in a configuration file. Parse joins all it
// finds with errors.Join, one per line.
type configError struct {
	file string
	line int    // 0 when unknown
	key  string // key path such as "commands.dd.params.count.min"; "" for the file as a whole
	msg  string
}

func (e *configError) Error() string {
	var b strings.Builder
	b.WriteString(e.file)
	if e.line > 0 {
		fmt.Fprintf(&b, ":%d", e.line)
	}
	b.WriteString(": ")
	if e.key != "" {
		b.WriteString(e.key + ": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// parser walks one file's node tree, collecting errors as it goes so that
// one run reports every problem, not just the first.
type parser struct {
	file string // absolute path, for messages
	dir  string // base of relative paths
	errs []error
	// tokenRefs are the literal command names tokens refer to, checked once
	// all commands are known.
	tokenRefs []field
	entries   int // walked so far, against maxEntries
}

// walk counts n entries about to be walked; false means the budget is spent
// (reported once) and the caller must not descend.
func (p *parser) walk(at *yaml.Node, n int) bool {
	if p.entries > maxEntries {
		return false
	}
	p.entries += n
	if p.entries > maxEntries {
		// Past maxErrors too: this is why the load stopped.
		p.errs = append(p.errs, &configError{file: p.file, line: at.Line,
			msg: fmt.Sprintf("the file expands to more than %d entries through aliases", maxEntries)})
		return false
	}
	return true
}

func (p *parser) errorf(n *yaml.Node, key, format string, args ...any) {
	if len(p.errs) > maxErrors {
		return
	}
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, &configError{file: p.file, msg: "too many errors; stopped reporting"})
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	// One problem, one line, whatever text from the file a message quotes.
	msg := oneLine.Replace(fmt.Sprintf(format, args...))
	p.errs = append(p.errs, &configError{file: p.file, line: line, key: oneLine.Replace(key), msg: msg})
}

var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// field is one key of a mapping with its value.
type field struct {
	name string     // the key as written
	path string     // full key path for messages: "commands.dd.timeout"
	key  *yaml.Node // for errors about the key itself, and "is required" below it
	val  *yaml.Node // aliases resolved
}

func joinKey(path, name string) string {
	if path == "" {
		return display(name)
	}
	return path + "." + display(name)
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	// Bounded: an alias cannot name an alias, but the bound costs nothing.
	for i := 0; i < 8 && n != nil && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	}
	return "value"
}

// fields returns the keys of a mapping in file order, reporting duplicate
// and non-string keys. Merge keys ("<<: *anchor") are expanded, the
// mapping's own keys winning as YAML specifies. A null value is an empty
// mapping.
func (p *parser) fields(n *yaml.Node, path string) []field {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "must be a mapping, not a %s", kindName(n))
		return nil
	}
	if !p.walk(n, len(n.Content)/2) {
		return nil
	}
	seen := make(map[string]int) // key → line
	out, merges := p.keys(nil, n, path, seen, true)
	merged := make(map[*yaml.Node]bool)
	for _, m := range merges {
		out = p.merge(out, m, path, seen, merged, 0)
	}
	return out
}

// merge adds the keys of a merged mapping (or list of mappings) that are not
// set yet. A mapping merged twice adds nothing the second time, so merged
// skips it: that keeps "<<: [*a, *a, ...]" chains from costing exponential
// time.
func (p *parser) merge(out []field, m *yaml.Node, path string, seen map[string]int, merged map[*yaml.Node]bool, depth int) []field {
	m = resolve(m)
	if depth > 8 {
		p.errorf(m, joinKey(path, "<<"), "merges nested too deeply")
		return out
	}
	if merged[m] || !p.walk(m, len(m.Content)) {
		return out
	}
	merged[m] = true
	switch {
	case m.Kind == yaml.SequenceNode:
		for _, e := range m.Content {
			if e = resolve(e); e.Kind != yaml.MappingNode {
				p.errorf(e, joinKey(path, "<<"), "must be a mapping or a list of mappings")
				continue
			}
			out = p.merge(out, e, path, seen, merged, depth+1)
		}
		return out
	case m.Kind != yaml.MappingNode:
		p.errorf(m, joinKey(path, "<<"), "must be a mapping or a list of mappings")
		return out
	}
	out, nested := p.keys(out, m, path, seen, false)
	for _, n := range nested {
		out = p.merge(out, n, path, seen, merged, depth+1)
	}
	return out
}

// keys appends the keys of mapping m to out and returns the merge keys'
// values for the caller to expand. A mapping's own keys (own) may not
// repeat; a merged mapping's keys already set are skipped, as YAML says.
func (p *parser) keys(out []field, m *yaml.Node, path string, seen map[string]int, own bool) ([]field, []*yaml.Node) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if rk := resolve(k); rk.Kind == yaml.ScalarNode {
			k = rk
		} else {
			p.errorf(k, path, "keys must be strings")
			continue
		}
		key := joinKey(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			if own {
				p.errorf(k, key, "duplicate key (first at line %d)", line)
			}
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, field{name: k.Value, path: key, key: k, val: resolve(v)})
	}
	return out, merges
}

func (p *parser) unknown(f field) {
	p.errorf(f.key, f.path, "unknown key")
}

// scalar returns a setting's text. A null value means "not set" (ok false);
// a list or mapping is reported.
func (p *parser) scalar(n *yaml.Node, path string) (string, bool) {
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "must be a single value, not a %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// text returns an element's text as written: unlike a setting, "~" or an
// empty entry in a list of arguments is the text itself, not "not set".
func (p *parser) text(n *yaml.Node, path string) (string, bool) {
	if n == nil || n.Kind == 0 {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "must be a single value, not a %s", kindName(n))
		return "", false
	}
	if strings.IndexByte(n.Value, 0) >= 0 {
		p.errorf(n, path, "must not contain NUL bytes")
		return "", false
	}
	return n.Value, true
}

func (p *parser) str(f field, dst *string) bool {
	v, ok := p.scalar(f.val, f.path)
	if ok {
		*dst = v
	}
	return ok
}

func (p *parser) boolean(f field, dst *bool) {
	v, ok := p.scalar(f.val, f.path)
	if !ok {
		return
	}
	b, err := strconv.ParseBool(strings.ToLower(v))
	if f.val.ShortTag() != "!!bool" || err != nil {
		p.errorf(f.val, f.path, "must be true or false")
		return
	}
	*dst = b
}

func (p *parser) integer(f field, lo int64) (int64, bool) {
	v, ok := p.scalar(f.val, f.path)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		p.errorf(f.val, f.path, "must be an integer")
		return 0, false
	}
	if n < lo {
		p.errorf(f.val, f.path, "must be at least %d", lo)
		return 0, false
	}
	return n, true
}

// intField is integer for int-typed settings.
func (p *parser) intField(f field, lo int64, dst *int) {
	if n, ok := p.integer(f, lo); ok {
		if n > math.MaxInt32 {
			// No setting of this kind is sensibly this large; refusing keeps
			// arithmetic on it from overflowing anywhere.
			p.errorf(f.val, f.path, "must be at most %d", math.MaxInt32)
			return
		}
		*dst = int(n)
	}
}

func (p *parser) float(f field, dst *float64) {
	v, ok := p.scalar(f.val, f.path)
	if !ok {
		return
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		p.errorf(f.val, f.path, "must be a number")
		return
	}
	if x < 0 {
		p.errorf(f.val, f.path, "must not be negative")
		return
	}
	*dst = x
}

func (p *parser) duration(f field, dst *time.Duration) {
	v, ok := p.scalar(f.val, f.path)
	if !ok {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.errorf(f.val, f.path, "must be a duration such as 30s, 10m or 1h30m")
		return
	}
	if d < 0 {
		p.errorf(f.val, f.path, "must not be negative")
		return
	}
	*dst = d
}

func (p *parser) size(f field, lo int64, dst *int64) {
	v, ok := p.scalar(f.val, f.path)
	if !ok {
		return
	}
	n, err := ParseSize(v)
	if err != nil {
		p.errorf(f.val, f.path, "%v", err)
		return
	}
	if n < lo {
		p.errorf(f.val, f.path, "must be at least %d bytes", lo)
		return
	}
	*dst = n
}

// sizeInt is size for int-typed settings.
func (p *parser) sizeInt(f field, lo int64, dst *int) {
	n := int64(*dst)
	p.size(f, lo, &n)
	if n > math.MaxInt32 {
		p.errorf(f.val, f.path, "must be at most %d bytes", math.MaxInt32)
		return
	}
	*dst = int(n)
}

// pathSetting reads a path, made absolute relative to the config file's
// directory; "" stays "". ok is false when it is not set or invalid.
func (p *parser) pathSetting(f field, dst *string) bool {
	v, ok := p.scalar(f.val, f.path)
	if !ok {
		return false
	}
	if strings.IndexByte(v, 0) >= 0 {
		p.errorf(f.val, f.path, "must not contain NUL bytes")
		return false
	}
	*dst = ""
	if v != "" {
		*dst = p.abs(v)
	}
	return true
}

// abs makes a path from the file absolute: relative paths are relative to
// the config file's directory, not to wherever the gateway was started.
func (p *parser) abs(v string) string {
	if filepath.IsAbs(v) {
		return filepath.Clean(v)
	}
	return filepath.Join(p.dir, v)
}

// seq returns the elements of a list, aliases resolved; null is empty.
func (p *parser) seq(n *yaml.Node, path string) []*yaml.Node {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "must be a list, not a %s", kindName(n))
		return nil
	}
	if !p.walk(n, len(n.Content)) {
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, e := range n.Content {
		out[i] = resolve(e)
	}
	return out
}

func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// parse is the whole of Parse after the path is known.
func (p *parser) parse(data []byte) (*Config, error) {
	cfg := defaults(p.file)
	root := p.document(data)
	if root != nil {
		p.config(root, cfg)
	}
	if cfg.Limits.Burst == 0 { // not set: a burst of at least 1 is never 0
		cfg.Limits.Burst = int(min(max(math.Ceil(2*cfg.Limits.Rate), 1), math.MaxInt32))
	}
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// document decodes the single YAML document of the file.
func (p *parser) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(nil, "", "the file is empty; at least one command is required")
			return nil
		}
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		p.errorf(&extra, "", "more than one YAML document; the configuration is one")
		return nil
	case !errors.Is(err, io.EOF):
		p.yamlError(err)
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		p.errorf(nil, "", "the file is empty; at least one command is required")
		return nil
	}
	return resolve(doc.Content[0])
}

// yamlError turns yaml's "yaml: line N: msg" into "file:N: msg".
func (p *parser) yamlError(err error) {
	if m := yamlErrLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		// yaml.v3 counts lines from 0 for its parser's errors (all "did not
		// find expected ..."), from 1 for its scanner's; the parser's line
		// is where the block it was reading starts.
		if strings.HasPrefix(m[2], "did not find expected") {
			line++
		}
		p.errs = append(p.errs, &configError{file: p.file, line: line, msg: "invalid YAML: " + m[2]})
		return
	}
	p.errs = append(p.errs, &configError{file: p.file, msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
}

func (p *parser) config(root *yaml.Node, cfg *Config) {
	if !isNull(root) && root.Kind != yaml.MappingNode {
		p.errorf(root, "", "the configuration must be a mapping, not a %s", kindName(root))
		return
	}
	var commands *field
	for _, f := range p.fields(root, "") {
		switch f.name {
		case "listen":
			if p.str(f, &cfg.Listen) {
				if _, port, err := net.SplitHostPort(cfg.Listen); err != nil || port == "" {
					p.errorf(f.val, f.path, "must be host:port, such as 127.0.0.1:8080")
				}
			}
		case "state_dir":
			if p.pathSetting(f, &cfg.StateDir) && cfg.StateDir == "" {
				p.errorf(f.val, f.path, "must not be empty")
			}
		case "log":
			p.log(f, &cfg.Log)
		case "shutdown_grace":
			p.duration(f, &cfg.ShutdownGrace)
		case "idle_exit":
			p.duration(f, &cfg.IdleExit)
		case "max_concurrent":
			p.intField(f, 1, &cfg.MaxConcurrent)
		case "max_queued":
			p.intField(f, 0, &cfg.MaxQueued)
		case "max_body":
			p.size(f, 1, &cfg.MaxBody)
		case "output_limit":
			p.size(f, 1, &cfg.OutputLimit)
		case "retention":
			p.duration(f, &cfg.Retention)
		case "allowed_hosts":
			for i, n := range p.seq(f.val, f.path) {
				if h, ok := p.text(n, index(f.path, i)); ok && (h == "" || strings.ContainsAny(h, " \t/")) {
					p.errorf(n, index(f.path, i), "must be a host name or address, with an optional :port")
				} else if ok {
					cfg.AllowedHosts = append(cfg.AllowedHosts, h)
				}
			}
		case "auth":
			p.auth(f, &cfg.Auth)
		case "limits":
			p.limits(f, &cfg.Limits)
		case "cgroup":
			p.cgroup(f, &cfg.Cgroup)
		case "commands":
			commands = &f
		default:
			p.unknown(f)
		}
	}
	var entries []field
	if commands != nil {
		entries = p.fields(commands.val, commands.path)
		for _, f := range entries {
			if !commandNameRE.MatchString(f.name) {
				p.errorf(f.key, f.path, "a command name is [A-Za-z0-9][A-Za-z0-9_.-]*")
				continue
			}
			cfg.Commands[f.name] = p.command(f)
		}
	}
	switch {
	case commands == nil:
		p.errorf(root, "commands", "is required (at least one command)")
	case len(entries) == 0 && (isNull(commands.val) || commands.val.Kind == yaml.MappingNode):
		p.errorf(commands.key, commands.path, "at least one command is required")
	}
	// Tokens naming a command that does not exist are typos; globs may
	// match nothing yet.
	for _, ref := range p.tokenRefs {
		if _, ok := cfg.Commands[ref.name]; !ok && len(cfg.Commands) > 0 {
			p.errorf(ref.val, ref.path, "no command is named %q", ref.name)
		}
	}
}

var logLevels = map[string]zerolog.Level{
	"trace": zerolog.TraceLevel,
	"debug": zerolog.DebugLevel,
	"info":  zerolog.InfoLevel,
	"warn":  zerolog.WarnLevel,
	"error": zerolog.ErrorLevel,
}

func (p *parser) log(f field, l *Log) {
	for _, g := range p.fields(f.val, f.path) {
		switch g.name {
		case "level":
			var s string
			if p.str(g, &s) {
				if lvl, ok := logLevels[s]; ok {
					l.Level = lvl
				} else {
					p.errorf(g.val, g.path, "must be trace, debug, info, warn or error")
				}
			}
		case "format":
			if p.str(g, &l.Format) && l.Format != "json" && l.Format != "console" {
				p.errorf(g.val, g.path, "must be json or console")
			}
		default:
			p.unknown(g)
		}
	}
}

func (p *parser) auth(f field, a *Auth) {
	for _, g := range p.fields(f.val, f.path) {
		switch g.name {
		case "tokens":
			names := map[string]int{}
			hashes := map[[32]byte]string{}
			for i, n := range p.seq(g.val, g.path) {
				t, ok := p.token(n, index(g.path, i))
				if !ok {
					continue
				}
				if line, dup := names[t.Name]; dup {
					p.errorf(n, index(g.path, i)+".name", "duplicate token name %q (first at line %d)", t.Name, line)
					continue
				}
				names[t.Name] = n.Line
				if other, dup := hashes[t.SHA256]; dup {
					p.errorf(n, index(g.path, i)+".sha256", "the same token as %q", other)
					continue
				}
				hashes[t.SHA256] = t.Name
				a.Tokens = append(a.Tokens, t)
			}
		case "allow_anonymous":
			p.boolean(g, &a.AllowAnonymous)
		default:
			p.unknown(g)
		}
	}
}

func (p *parser) token(n *yaml.Node, at string) (Token, bool) {
	var t Token
	if n.Kind != yaml.MappingNode {
		p.errorf(n, at, "must be a mapping with name and sha256")
		return t, false
	}
	before := len(p.errs)
	var hashSet bool
	for _, g := range p.fields(n, at) {
		switch g.name {
		case "name":
			if p.str(g, &t.Name) && !tokenNameRE.MatchString(t.Name) {
				p.errorf(g.val, g.path, "a token name is [A-Za-z0-9_.-]+")
			}
		case "sha256":
			var s string
			hashSet = !isNull(g.val) // reported here if invalid, not as missing below
			if !p.str(g, &s) {
				continue
			}
			b, err := hex.DecodeString(s)
			if err != nil || len(b) != len(t.SHA256) {
				p.errorf(g.val, g.path, "must be 64 hexadecimal characters, the SHA-256 of the token (sha256sum)")
				continue
			}
			copy(t.SHA256[:], b)
		case "commands":
			for i, e := range p.seq(g.val, g.path) {
				key := index(g.path, i)
				s, ok := p.text(e, key)
				if !ok {
					continue
				}
				if _, err := path.Match(s, ""); err != nil {
					p.errorf(e, key, "invalid glob %q", s)
					continue
				}
				if !strings.ContainsAny(s, `*?[\`) {
					p.tokenRefs = append(p.tokenRefs, field{name: s, path: key, val: e})
				}
				t.Commands = append(t.Commands, s)
			}
		case "all_jobs":
			p.boolean(g, &t.AllJobs)
		default:
			p.unknown(g)
		}
	}
	if t.Name == "" {
		p.errorf(n, at+".name", "is required")
	}
	if !hashSet {
		p.errorf(n, at+".sha256", "is required")
	}
	return t, len(p.errs) == before
}

func (p *parser) limits(f field, l *Limits) {
	for _, g := range p.fields(f.val, f.path) {
		switch g.name {
		case "max_header_bytes":
			p.sizeInt(g, 1, &l.MaxHeaderBytes)
		case "max_query_bytes":
			p.sizeInt(g, 1, &l.MaxQueryBytes)
		case "max_params":
			p.intField(g, 1, &l.MaxParams)
		case "max_param_bytes":
			p.sizeInt(g, 1, &l.MaxParamBytes)
		case "rate":
			p.float(g, &l.Rate)
		case "burst":
			p.intField(g, 1, &l.Burst)
		case "max_connections":
			p.intField(g, 1, &l.MaxConnections)
		case "read_header_timeout":
			p.duration(g, &l.ReadHeaderTimeout)
			if l.ReadHeaderTimeout == 0 {
				p.errorf(g.val, g.path, "must be positive")
			}
		case "idle_timeout":
			p.duration(g, &l.IdleTimeout)
			if l.IdleTimeout == 0 {
				p.errorf(g.val, g.path, "must be positive")
			}
		default:
			p.unknown(g)
		}
	}
}

func (p *parser) cgroup(f field, c *Cgroup) {
	for _, g := range p.fields(f.val, f.path) {
		switch g.name {
		case "root":
			p.pathSetting(g, &c.Root)
		default:
			p.unknown(g)
		}
	}
}

// command parses one entry of "commands".
func (p *parser) command(f field) *Command {
	c := &Command{
		Name:      f.name,
		KillGrace: defaultKillGrace,
		Stdin:     StdinNone,
		Uid:       -1,
		Gid:       -1,
	}
	if isNull(f.val) {
		p.errorf(f.key, f.path+".argv", "is required")
		return c
	}
	if f.val.Kind != yaml.MappingNode {
		p.fields(f.val, f.path) // reports it
		return c
	}
	var argv, params, usr, grp *field
	for _, g := range p.fields(f.val, f.path) {
		switch g.name {
		case "description":
			p.str(g, &c.Description)
		case "argv":
			argv = &g
		case "params":
			params = &g
		case "timeout":
			p.duration(g, &c.Timeout)
		case "kill_grace":
			p.duration(g, &c.KillGrace)
		case "max_concurrent":
			p.intField(g, 0, &c.MaxConcurrent)
		case "stdin":
			var s string
			if p.str(g, &s) {
				c.Stdin = StdinMode(s)
				if c.Stdin != StdinNone && c.Stdin != StdinBody {
					p.errorf(g.val, g.path, "must be none or body")
				}
			}
		case "dir":
			if !p.pathSetting(g, &c.Dir) || c.Dir == "" {
				break
			}
			if fi, err := os.Stat(c.Dir); err != nil {
				p.errorf(g.val, g.path, "%s", statReason(err))
			} else if !fi.IsDir() {
				p.errorf(g.val, g.path, "%s is not a directory", display(c.Dir))
			}
		case "env":
			c.Env = p.env(g)
		case "user":
			usr = &g
		case "group":
			grp = &g
		case "umask":
			p.umask(g, c)
		case "rlimits":
			c.Rlimits = p.rlimits(g)
		case "memory_max":
			p.size(g, 0, &c.MemoryMax)
		case "pids_max":
			if n, ok := p.integer(g, 0); ok {
				c.PidsMax = n
			}
		case "cpu_max":
			p.float(g, &c.CPUMax)
		default:
			p.unknown(g)
		}
	}

	declared := map[string]*Param{}
	var decls []field
	if params != nil {
		for _, g := range p.fields(params.val, params.path) {
			if !paramNameRE.MatchString(g.name) {
				p.errorf(g.key, g.path, "a parameter name is [A-Za-z_][A-Za-z0-9_]*")
				continue
			}
			prm := p.param(g)
			declared[g.name] = prm
			decls = append(decls, g)
			c.Params = append(c.Params, prm)
		}
	}
	slices.SortFunc(c.Params, func(a, b *Param) int { return strings.Compare(a.Name, b.Name) })

	if argv == nil {
		p.errorf(f.key, f.path+".argv", "is required")
	} else {
		p.argv(c, *argv, declared, decls)
	}
	p.credentials(c, usr, grp)
	return c
}

// argv parses the templates, checks every parameter is used, and resolves
// the program.
func (p *parser) argv(c *Command, f field, declared map[string]*Param, decls []field) {
	elems := p.seq(f.val, f.path)
	if len(elems) == 0 {
		if f.val.Kind == yaml.SequenceNode || isNull(f.val) {
			p.errorf(f.val, f.path, "must not be empty")
		}
		return
	}
	used := map[string]bool{}
	ok := true
	for i, n := range elems {
		key := index(f.path, i)
		s, good := p.text(n, key)
		if !good {
			ok = false
			continue
		}
		c.Argv = append(c.Argv, s)
		el, err := parseElement(s)
		if err == nil {
			err = checkElement(i, el, func(name string) *Param { return declared[name] })
		}
		if err != nil {
			p.errorf(n, key, "%v", err)
			ok = false
			continue
		}
		for _, name := range el.params() {
			used[name] = true
		}
		c.tmpl = append(c.tmpl, el)
	}
	if !ok {
		// Without every element, "unused" and the program would be guesses.
		c.tmpl = nil
		return
	}
	for _, g := range decls {
		if !used[g.name] {
			p.errorf(g.key, g.path, "is declared but no argv element uses {%s}", g.name)
		}
	}
	c.Path = p.program(c, elems[0], index(f.path, 0))
}

// program resolves argv[0] as exec would, but now rather than at every run,
// so that a missing program is a configuration error.
func (p *parser) program(c *Command, n *yaml.Node, key string) string {
	name := c.tmpl[0].literal()
	if name == "" {
		p.errorf(n, key, "the program must not be empty")
		return ""
	}
	if strings.Contains(name, "/") {
		file := p.abs(name)
		if reason := executable(file); reason != "" {
			p.errorf(n, key, "%s", reason)
			return ""
		}
		return file
	}
	search := c.childPath()
	for _, dir := range filepath.SplitList(search) {
		// Relative entries would be relative to whatever directory the
		// gateway happens to run in; exec.LookPath refuses them for the
		// same reason.
		if !filepath.IsAbs(dir) {
			continue
		}
		file := filepath.Join(dir, name)
		if executable(file) == "" {
			return file
		}
	}
	p.errorf(n, key, "executable %q not found in PATH %q", name, search)
	return ""
}

// executable returns why file cannot be run, or "".
func executable(file string) string {
	fi, err := os.Stat(file)
	switch {
	case err != nil:
		return statReason(err)
	case fi.IsDir():
		return display(file) + " is a directory"
	case !fi.Mode().IsRegular():
		return display(file) + " is not a regular file"
	case fi.Mode().Perm()&0o111 == 0:
		return display(file) + " is not executable"
	}
	return ""
}

// statReason says what is wrong without Go's "stat " prefix.
func statReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return display(pe.Path) + " does not exist"
		case errors.Is(err, os.ErrPermission):
			return display(pe.Path) + " is not accessible"
		}
		return display(pe.Path) + ": " + pe.Err.Error()
	}
	return err.Error()
}

func (p *parser) param(f field) *Param {
	prm := &Param{Name: f.name, Type: TypeString}
	fields := p.fields(f.val, f.path)
	// The type first: which other keys are allowed depends on it.
	for _, g := range fields {
		if g.name != "type" {
			continue
		}
		var s string
		if p.str(g, &s) {
			switch t := ParamType(s); t {
			case TypeString, TypeInt, TypeBool, TypeEnum:
				prm.Type = t
			default:
				p.errorf(g.val, g.path, "must be string, int, bool or enum")
			}
		}
	}
	only := func(g field, t ParamType) bool {
		if prm.Type != t {
			p.errorf(g.key, g.path, "only applies to type %s (this parameter is %s)", t, prm.Type)
			return false
		}
		return true
	}
	var def, maxF *field
	var valuesF *field
	for _, g := range fields {
		switch g.name {
		case "type":
		case "description":
			p.str(g, &prm.Description)
		case "pattern":
			var s string
			if only(g, TypeString) && p.str(g, &s) {
				re, err := regexp.Compile(s)
				if err != nil {
					p.errorf(g.val, g.path, "invalid regular expression: %v", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
					break
				}
				prm.Pattern = re
			}
		case "max_len":
			if only(g, TypeString) {
				p.intField(g, 0, &prm.MaxLen)
			}
		case "min":
			if only(g, TypeInt) {
				if n, ok := p.signed(g); ok {
					prm.Min = &n
				}
			}
		case "max":
			if only(g, TypeInt) {
				if n, ok := p.signed(g); ok {
					prm.Max = &n
					maxF = &g
				}
			}
		case "values":
			if only(g, TypeEnum) {
				valuesF = &g
				seen := map[string]bool{}
				for i, n := range p.seq(g.val, g.path) {
					key := index(g.path, i)
					s, ok := p.text(n, key)
					if !ok {
						continue
					}
					if !utf8.ValidString(s) {
						p.errorf(n, key, "must be valid UTF-8")
						continue
					}
					if seen[s] {
						p.errorf(n, key, "duplicate value %q", s)
						continue
					}
					seen[s] = true
					prm.Values = append(prm.Values, s)
				}
			}
		case "required":
			p.boolean(g, &prm.Required)
		case "default":
			def = &g
		case "secret":
			p.boolean(g, &prm.Secret)
		default:
			p.unknown(g)
		}
	}
	// An empty list, or none; a wrong type or invalid entries are reported
	// already.
	noValues := valuesF == nil || isNull(valuesF.val) ||
		(valuesF.val.Kind == yaml.SequenceNode && len(valuesF.val.Content) == 0)
	if prm.Type == TypeEnum && noValues {
		at := f.key
		if valuesF != nil {
			at = valuesF.val
		}
		p.errorf(at, f.path+".values", "an enum needs at least one value")
	}
	if prm.Min != nil && prm.Max != nil && *prm.Min > *prm.Max {
		p.errorf(maxF.val, maxF.path, "must not be less than min (%d)", *prm.Min)
	}
	if def != nil {
		if v, ok := p.scalar(def.val, def.path); ok {
			if prm.Required {
				p.errorf(def.key, def.path, "a required parameter cannot have a default")
			}
			canon, reason := prm.check(v)
			if reason != "" {
				p.errorf(def.val, def.path, "%s", reason)
			} else {
				prm.Default = &canon
			}
		}
	}
	return prm
}

// signed reads an int parameter's bound, which may be negative.
func (p *parser) signed(f field) (int64, bool) {
	return p.integer(f, math.MinInt64)
}

func (p *parser) env(f field) map[string]string {
	env := map[string]string{}
	for _, g := range p.fields(f.val, f.path) {
		if !envNameRE.MatchString(g.name) {
			p.errorf(g.key, g.path, "an environment variable name is [A-Za-z_][A-Za-z0-9_]*")
			continue
		}
		if v, ok := p.text(g.val, g.path); ok {
			env[g.name] = v
		}
	}
	return env
}

func (p *parser) umask(f field, c *Command) {
	s, ok := p.scalar(f.val, f.path)
	if !ok {
		return
	}
	// Always octal, whether written "0077", 0077 or 077: a umask is never
	// meant in decimal.
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O"), 8, 32)
	if err != nil || n > 0o777 {
		p.errorf(f.val, f.path, "must be an octal mode such as \"0077\"")
		return
	}
	m := uint32(n)
	c.Umask = &m
}

type rlimitKind int

const (
	rlimitCount rlimitKind = iota
	rlimitSize
	rlimitSeconds
)

var rlimitResources = map[string]struct {
	resource int
	kind     rlimitKind
}{
	"nofile":  {unix.RLIMIT_NOFILE, rlimitCount},
	"nproc":   {unix.RLIMIT_NPROC, rlimitCount},
	"as":      {unix.RLIMIT_AS, rlimitSize},
	"core":    {unix.RLIMIT_CORE, rlimitSize},
	"fsize":   {unix.RLIMIT_FSIZE, rlimitSize},
	"memlock": {unix.RLIMIT_MEMLOCK, rlimitSize},
	"stack":   {unix.RLIMIT_STACK, rlimitSize},
	"cpu":     {unix.RLIMIT_CPU, rlimitSeconds},
}

func (p *parser) rlimits(f field) []Rlimit {
	var out []Rlimit
	for _, g := range p.fields(f.val, f.path) {
		r, known := rlimitResources[g.name]
		if !known {
			p.errorf(g.key, g.path, "unknown rlimit; known are as, core, cpu, fsize, memlock, nofile, nproc, stack")
			continue
		}
		s, ok := p.scalar(g.val, g.path)
		if !ok {
			continue
		}
		v, err := rlimitValue(s, r.kind)
		if err != "" {
			p.errorf(g.val, g.path, "%s", err)
			continue
		}
		out = append(out, Rlimit{Name: g.name, Resource: r.resource, Value: v})
	}
	slices.SortFunc(out, func(a, b Rlimit) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func rlimitValue(s string, kind rlimitKind) (uint64, string) {
	if s == "unlimited" {
		return unix.RLIM_INFINITY, ""
	}
	switch kind {
	case rlimitSize:
		n, err := ParseSize(s)
		if err != nil {
			return 0, err.Error() + `, or "unlimited"`
		}
		return uint64(n), ""
	case rlimitSeconds:
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return n, ""
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, `must be a number of seconds, a duration such as 60s, or "unlimited"`
		}
		// The kernel counts whole seconds; round up so a limit never
		// becomes stricter than written.
		return uint64((d + time.Second - 1) / time.Second), ""
	default:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, `must be a non-negative integer or "unlimited"`
		}
		return n, ""
	}
}

// credentials resolves user and group. Switching needs root, and a name
// that does not resolve now would fail every run later, so both are
// configuration errors.
func (p *parser) credentials(c *Command, usr, grp *field) {
	if usr != nil && p.str(*usr, &c.User) {
		if geteuid() != 0 {
			p.errorf(usr.val, usr.path, "execgw must run as root to switch users")
		} else if u, err := lookupUser(c.User); err != nil {
			p.errorf(usr.val, usr.path, "unknown user %q", c.User)
		} else {
			c.Uid, _ = strconv.Atoi(u.Uid)
			// The runner needs a group too: the user's primary one unless
			// "group" says otherwise.
			c.Gid, _ = strconv.Atoi(u.Gid)
		}
	}
	if grp != nil && p.str(*grp, &c.Group) {
		if geteuid() != 0 {
			p.errorf(grp.val, grp.path, "execgw must run as root to switch groups")
		} else if g, err := lookupGroup(c.Group); err != nil {
			p.errorf(grp.val, grp.path, "unknown group %q", c.Group)
		} else {
			c.Gid, _ = strconv.Atoi(g.Gid)
		}
	}
}

func isNumeric(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

func lookupUser(s string) (*user.User, error) {
	if isNumeric(s) {
		return user.LookupId(s)
	}
	return user.Lookup(s)
}

func lookupGroup(s string) (*user.Group, error) {
	if isNumeric(s) {
		return user.LookupGroupId(s)
	}
	return user.LookupGroup(s)
}
