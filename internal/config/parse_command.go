package config

// The "commands" section: each command's keys as a table, then its
// templates (argv and env), read once its parameters are known.

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	commandNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// commands reads the "commands" section, f (nil when absent), into cfg.
func (p *parser) commands(root *yaml.Node, f *field, cfg *Config) {
	if f == nil {
		p.errorf(root, "commands", "is required (at least one command)")
		return
	}
	entries := p.fields(f.val, f.path)
	for _, g := range entries {
		if !commandNameRE.MatchString(g.name) {
			p.errorf(g.key, g.path, "a command name is [A-Za-z0-9][A-Za-z0-9_.-]*")
			continue
		}
		cfg.Commands[g.name] = p.command(g)
	}
	// A list or a single value is reported by fields already.
	if len(entries) == 0 && (isNull(f.val) || f.val.Kind == yaml.MappingNode) {
		p.errorf(f.key, f.path, "at least one command is required")
	}
}

// commandDoc is one command being read. The keys that depend on others are
// kept and read once all are known.
type commandDoc struct {
	c                              *Command
	argv, params, env, user, group *field
}

// commandKeys are a command's keys: its own and its containment's
// (parse_containment.go).
var commandKeys = joinTables(table[commandDoc]{
	"description":    func(p *parser, f field, d *commandDoc) { p.str(f, &d.c.Description) },
	"argv":           keep(func(d *commandDoc) **field { return &d.argv }),
	"params":         keep(func(d *commandDoc) **field { return &d.params }),
	"env":            keep(func(d *commandDoc) **field { return &d.env }),
	"timeout":        func(p *parser, f field, d *commandDoc) { p.duration(f, &d.c.Timeout) },
	"kill_grace":     func(p *parser, f field, d *commandDoc) { p.duration(f, &d.c.KillGrace) },
	"max_concurrent": func(p *parser, f field, d *commandDoc) { p.intField(f, 0, &d.c.MaxConcurrent) },
	"stdin": func(p *parser, f field, d *commandDoc) {
		var s string
		if p.str(f, &s) {
			d.c.Stdin = StdinMode(s)
			if d.c.Stdin != StdinNone && d.c.Stdin != StdinBody {
				p.errorf(f.val, f.path, "must be none or body")
			}
		}
	},
	"dir": func(p *parser, f field, d *commandDoc) {
		if !p.pathSetting(f, &d.c.Dir) || d.c.Dir == "" {
			return
		}
		if fi, err := os.Stat(d.c.Dir); err != nil {
			p.errorf(f.val, f.path, "%s", statReason(err))
		} else if !fi.IsDir() {
			p.errorf(f.val, f.path, "%s is not a directory", display(d.c.Dir))
		}
	},
}, containmentKeys)

// command reads one entry of "commands".
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
	d := commandDoc{c: c}
	decode(p, f.val, f.path, commandKeys, &d)

	var decls []field
	if d.params != nil {
		decls = p.params(c, *d.params)
	}
	lookup := c.Param
	used := map[string]bool{}
	// The environment first: the program is looked up in its PATH.
	envOK := true
	if d.env != nil {
		envOK = p.env(c, *d.env, lookup, used)
	}
	argvOK := false
	if d.argv == nil {
		p.errorf(f.key, f.path+".argv", "is required")
	} else {
		argvOK = p.argv(c, *d.argv, lookup, used)
	}
	// Without every template, "unused" would be a guess.
	if argvOK && envOK {
		for _, g := range decls {
			if !used[g.name] {
				p.errorf(g.key, g.path, "is declared but neither argv nor env uses {%s}", g.name)
			}
		}
	}
	p.credentials(c, d.user, d.group)
	return c
}

// env parses the environment's templates into c and notes the parameters
// they use. ok is false when a value is invalid.
func (p *parser) env(c *Command, f field, lookup func(string) *Param, used map[string]bool) (ok bool) {
	ok = true
	c.Env = map[string]string{}
	c.envTmpl = map[string]element{}
	for _, g := range p.fields(f.val, f.path) {
		if !envNameRE.MatchString(g.name) {
			p.errorf(g.key, g.path, "an environment variable name is [A-Za-z_][A-Za-z0-9_]*")
			continue
		}
		v, good := p.text(g.val, g.path)
		if !good {
			ok = false
			continue
		}
		el, err := parseEnvValue(g.name, v, lookup)
		if err != nil {
			p.errorf(g.val, g.path, "%v", err)
			ok = false
			continue
		}
		for _, name := range el.params() {
			used[name] = true
		}
		c.Env[g.name] = v
		c.envTmpl[g.name] = el
	}
	return ok
}

// argv parses the templates, notes the parameters they use, and resolves
// the program. ok is false when an element is invalid.
func (p *parser) argv(c *Command, f field, lookup func(string) *Param, used map[string]bool) (ok bool) {
	elems := p.seq(f.val, f.path)
	if len(elems) == 0 {
		if f.val.Kind == yaml.SequenceNode || isNull(f.val) {
			p.errorf(f.val, f.path, "must not be empty")
		}
		return false
	}
	ok = true
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
			err = checkElement(i, el, lookup)
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
		// Without every element, the program would be a guess.
		c.tmpl = nil
		return false
	}
	c.Path = p.program(c, elems[0], index(f.path, 0))
	return true
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
