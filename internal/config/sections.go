package config

// The sections of the top level besides commands, each a table of its keys.

import (
	"encoding/hex"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

var logLevels = map[string]zerolog.Level{
	"trace": zerolog.TraceLevel,
	"debug": zerolog.DebugLevel,
	"info":  zerolog.InfoLevel,
	"warn":  zerolog.WarnLevel,
	"error": zerolog.ErrorLevel,
}

// logKeys: the "log" section.
var logKeys = table[Log]{
	"level": func(p *parser, f field, l *Log) {
		var s string
		if p.str(f, &s) {
			if lvl, ok := logLevels[s]; ok {
				l.Level = lvl
			} else {
				p.errorf(f.val, f.path, "must be trace, debug, info, warn or error")
			}
		}
	},
	"format": func(p *parser, f field, l *Log) {
		if p.str(f, &l.Format) && l.Format != "json" && l.Format != "console" {
			p.errorf(f.val, f.path, "must be json or console")
		}
	},
}

// authKeys: the "auth" section.
var authKeys = table[Auth]{
	"tokens":          (*parser).tokens,
	"allow_anonymous": func(p *parser, f field, a *Auth) { p.boolean(f, &a.AllowAnonymous) },
}

// tokens reads the list of tokens: names and hashes are unique.
func (p *parser) tokens(f field, a *Auth) {
	names := map[string]int{}
	hashes := map[[32]byte]string{}
	for _, it := range p.items(f) {
		t, ok := p.token(it.node, it.path)
		if !ok {
			continue
		}
		if line, dup := names[t.Name]; dup {
			p.errorf(it.node, it.path+".name", "duplicate token name %q (first at line %d)", t.Name, line)
			continue
		}
		names[t.Name] = it.node.Line
		if other, dup := hashes[t.SHA256]; dup {
			p.errorf(it.node, it.path+".sha256", "the same token as %q", other)
			continue
		}
		hashes[t.SHA256] = t.Name
		a.Tokens = append(a.Tokens, t)
	}
}

// tokenDoc is one token being read.
type tokenDoc struct {
	t       Token
	hashSet bool // sha256 is given, valid or not
}

// tokenKeys: one entry of "auth.tokens".
var tokenKeys = table[tokenDoc]{
	"name": func(p *parser, f field, d *tokenDoc) {
		if p.str(f, &d.t.Name) && !tokenNameRE.MatchString(d.t.Name) {
			p.errorf(f.val, f.path, "a token name is [A-Za-z0-9_.-]+")
		}
	},
	"sha256": func(p *parser, f field, d *tokenDoc) {
		var s string
		d.hashSet = !isNull(f.val) // reported here if invalid, not as missing later
		if !p.str(f, &s) {
			return
		}
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != len(d.t.SHA256) {
			p.errorf(f.val, f.path, "must be 64 hexadecimal characters, the SHA-256 of the token (sha256sum)")
			return
		}
		copy(d.t.SHA256[:], b)
	},
	"commands": func(p *parser, f field, d *tokenDoc) {
		for _, it := range p.items(f) {
			s, ok := p.text(it.node, it.path)
			if !ok {
				continue
			}
			if _, err := path.Match(s, ""); err != nil {
				p.errorf(it.node, it.path, "invalid glob %q", s)
				continue
			}
			if !strings.ContainsAny(s, `*?[\`) {
				p.tokenRefs = append(p.tokenRefs, field{name: s, path: it.path, val: it.node})
			}
			d.t.Commands = append(d.t.Commands, s)
		}
	},
	"all_jobs": func(p *parser, f field, d *tokenDoc) { p.boolean(f, &d.t.AllJobs) },
}

// token reads one token; ok is false when anything about it is wrong.
func (p *parser) token(n *yaml.Node, at string) (t Token, ok bool) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, at, "must be a mapping with name and sha256")
		return t, false
	}
	before := len(p.errs)
	var d tokenDoc
	decode(p, n, at, tokenKeys, &d)
	if d.t.Name == "" {
		p.errorf(n, at+".name", "is required")
	}
	if !d.hashSet {
		p.errorf(n, at+".sha256", "is required")
	}
	return d.t, len(p.errs) == before
}

// limitsKeys: the "limits" section.
var limitsKeys = table[Limits]{
	"max_header_bytes": func(p *parser, f field, l *Limits) { p.sizeInt(f, 1, &l.MaxHeaderBytes) },
	"max_query_bytes":  func(p *parser, f field, l *Limits) { p.sizeInt(f, 1, &l.MaxQueryBytes) },
	"max_params":       func(p *parser, f field, l *Limits) { p.intField(f, 1, &l.MaxParams) },
	"max_param_bytes":  func(p *parser, f field, l *Limits) { p.sizeInt(f, 1, &l.MaxParamBytes) },
	"rate":             func(p *parser, f field, l *Limits) { p.float(f, &l.Rate) },
	"burst":            func(p *parser, f field, l *Limits) { p.intField(f, 1, &l.Burst) },
	"max_connections":  func(p *parser, f field, l *Limits) { p.intField(f, 1, &l.MaxConnections) },
	"read_header_timeout": func(p *parser, f field, l *Limits) {
		p.duration(f, &l.ReadHeaderTimeout)
		if l.ReadHeaderTimeout == 0 {
			p.errorf(f.val, f.path, "must be positive")
		}
	},
	"idle_timeout": func(p *parser, f field, l *Limits) {
		p.duration(f, &l.IdleTimeout)
		if l.IdleTimeout == 0 {
			p.errorf(f.val, f.path, "must be positive")
		}
	},
}

// cgroupKeys: the "cgroup" section.
var cgroupKeys = table[Cgroup]{
	"root": func(p *parser, f field, c *Cgroup) { p.pathSetting(f, &c.Root) },
}

// nodeNameRE: a node name is part of Redis keys and channels, and of
// logs and metrics; host:port names fit it.
var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]{1,128}$`)

// clusterKeys: the "cluster" section.
var clusterKeys = table[Cluster]{
	"redis": func(p *parser, f field, c *Cluster) {
		if p.str(f, &c.Redis) && c.Redis != "" {
			if _, err := redis.ParseURL(c.Redis); err != nil {
				p.errorf(f.val, f.path, "must be a redis:// or rediss:// URL (such as redis://127.0.0.1:6379/0): %v", err)
			}
		}
	},
	"prefix": func(p *parser, f field, c *Cluster) {
		if p.str(f, &c.Prefix) && !prefixRE.MatchString(c.Prefix) {
			p.errorf(f.val, f.path, "must be 1 to 64 letters, digits, '_', '.', ':' or '-' (it is inside a hash tag: no braces)")
		}
	},
	"node": func(p *parser, f field, c *Cluster) {
		if p.str(f, &c.Node) && c.Node != "" && !nodeNameRE.MatchString(c.Node) {
			p.errorf(f.val, f.path, "must be up to 128 letters, digits, '_', '.', ':', '[', ']' or '-'")
		}
	},
	"node_timeout": func(p *parser, f field, c *Cluster) {
		if p.duration(f, &c.NodeTimeout); c.NodeTimeout < time.Second {
			p.errorf(f.val, f.path, "must be at least 1s")
		}
	},
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
