package config

// A command's containment keys: the account it runs as, its umask, rlimits
// and cgroup limits. Parsed and validated here, enforced by the runner.

import (
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// geteuid is replaced by tests to exercise the "must run as root" rule.
var geteuid = os.Geteuid

// containmentKeys join commandKeys. user and group are resolved together,
// once both are known (credentials).
var containmentKeys = table[commandDoc]{
	"user":       keep(func(d *commandDoc) **field { return &d.user }),
	"group":      keep(func(d *commandDoc) **field { return &d.group }),
	"umask":      func(p *parser, f field, d *commandDoc) { p.umask(f, d.c) },
	"rlimits":    func(p *parser, f field, d *commandDoc) { d.c.Rlimits = p.rlimits(f) },
	"memory_max": func(p *parser, f field, d *commandDoc) { p.size(f, 0, &d.c.MemoryMax) },
	"pids_max": func(p *parser, f field, d *commandDoc) {
		if n, ok := p.integer(f, 0); ok {
			d.c.PidsMax = n
		}
	},
	"cpu_max": func(p *parser, f field, d *commandDoc) { p.float(f, &d.c.CPUMax) },
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
