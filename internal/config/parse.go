package config

// Reading a file: the YAML document, its top-level keys (configKeys), then
// the checks that need the whole file.
//
// The file is decoded into a yaml.Node tree and walked by hand rather than
// unmarshalled into structs: only the node tree has the line of every key,
// and walking it (walk.go) is what lets unknown keys, duplicate keys and
// wrong types be reported as "file:line: key: message".

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var yamlErrLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// configDoc is the top level of the file being read.
type configDoc struct {
	cfg      *Config
	commands *field // read once every other key is
}

// configKeys are the top-level keys. A new one is an entry here, its field
// in Config, and its default in defaults().
var configKeys = table[configDoc]{
	"listen": func(p *parser, f field, d *configDoc) {
		if p.str(f, &d.cfg.Listen) {
			if _, port, err := net.SplitHostPort(d.cfg.Listen); err != nil || port == "" {
				p.errorf(f.val, f.path, "must be host:port, such as 127.0.0.1:8080")
			}
		}
	},
	"state_dir": func(p *parser, f field, d *configDoc) {
		if p.pathSetting(f, &d.cfg.StateDir) && d.cfg.StateDir == "" {
			p.errorf(f.val, f.path, "must not be empty")
		}
	},
	"log":            func(p *parser, f field, d *configDoc) { decode(p, f.val, f.path, logKeys, &d.cfg.Log) },
	"shutdown_grace": func(p *parser, f field, d *configDoc) { p.duration(f, &d.cfg.ShutdownGrace) },
	"idle_exit":      func(p *parser, f field, d *configDoc) { p.duration(f, &d.cfg.IdleExit) },
	"max_concurrent": func(p *parser, f field, d *configDoc) { p.intField(f, 1, &d.cfg.MaxConcurrent) },
	"max_queued":     func(p *parser, f field, d *configDoc) { p.intField(f, 0, &d.cfg.MaxQueued) },
	"max_body":       func(p *parser, f field, d *configDoc) { p.size(f, 1, &d.cfg.MaxBody) },
	"output_limit":   func(p *parser, f field, d *configDoc) { p.size(f, 1, &d.cfg.OutputLimit) },
	"retention":      func(p *parser, f field, d *configDoc) { p.duration(f, &d.cfg.Retention) },
	"allowed_hosts": func(p *parser, f field, d *configDoc) {
		for _, it := range p.items(f) {
			host, ok := p.text(it.node, it.path)
			if !ok {
				continue
			}
			if !ValidHost(host) {
				p.errorf(it.node, it.path, "%q is not a host or host:port (such as gw.example.com, 10.0.0.5:8080 or [::1]:8080)", host)
				continue
			}
			d.cfg.AllowedHosts = append(d.cfg.AllowedHosts, strings.ToLower(host))
		}
	},
	"auth":     func(p *parser, f field, d *configDoc) { decode(p, f.val, f.path, authKeys, &d.cfg.Auth) },
	"limits":   func(p *parser, f field, d *configDoc) { decode(p, f.val, f.path, limitsKeys, &d.cfg.Limits) },
	"cgroup":   func(p *parser, f field, d *configDoc) { decode(p, f.val, f.path, cgroupKeys, &d.cfg.Cgroup) },
	"cluster":  func(p *parser, f field, d *configDoc) { decode(p, f.val, f.path, clusterKeys, &d.cfg.Cluster) },
	"commands": keep(func(d *configDoc) **field { return &d.commands }),
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

// config reads the top level into cfg, then the commands, then checks what
// refers to them.
func (p *parser) config(root *yaml.Node, cfg *Config) {
	if !isNull(root) && root.Kind != yaml.MappingNode {
		p.errorf(root, "", "the configuration must be a mapping, not a %s", kindName(root))
		return
	}
	d := configDoc{cfg: cfg}
	decode(p, root, "", configKeys, &d)
	p.commands(root, d.commands, cfg)
	// Tokens naming a command that does not exist are typos; globs may
	// match nothing yet.
	for _, ref := range p.tokenRefs {
		if _, ok := cfg.Commands[ref.name]; !ok && len(cfg.Commands) > 0 {
			p.errorf(ref.val, ref.path, "no command is named %q", ref.name)
		}
	}
}
