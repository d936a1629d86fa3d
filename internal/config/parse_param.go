package config

// A command's "params": each parameter's keys as a table. Which keys a
// parameter may have depends on its type, so the type is read first.

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// params reads the declarations in f into c.Params, sorted by name, and
// returns their fields, in file order, for messages about them.
func (p *parser) params(c *Command, f field) []field {
	var decls []field
	for _, g := range p.fields(f.val, f.path) {
		if !paramNameRE.MatchString(g.name) {
			p.errorf(g.key, g.path, "a parameter name is [A-Za-z_][A-Za-z0-9_]*")
			continue
		}
		decls = append(decls, g)
		c.Params = append(c.Params, p.param(g))
	}
	slices.SortFunc(c.Params, func(a, b *Param) int { return strings.Compare(a.Name, b.Name) })
	return decls
}

// paramDoc is one parameter being read. The keys checked against others
// are kept for the checks after the table.
type paramDoc struct {
	prm              *Param
	def, max, values *field
}

// only reports f and returns false unless the parameter is of type t.
func (d *paramDoc) only(p *parser, f field, t ParamType) bool {
	if d.prm.Type != t {
		p.errorf(f.key, f.path, "only applies to type %s (this parameter is %s)", t, d.prm.Type)
		return false
	}
	return true
}

// paramKeys are a parameter's keys; "type" is read before them.
var paramKeys = table[paramDoc]{
	"type":        func(*parser, field, *paramDoc) {},
	"description": func(p *parser, f field, d *paramDoc) { p.str(f, &d.prm.Description) },
	"pattern": func(p *parser, f field, d *paramDoc) {
		var s string
		if d.only(p, f, TypeString) && p.str(f, &s) {
			re, err := regexp.Compile(s)
			if err != nil {
				p.errorf(f.val, f.path, "invalid regular expression: %v", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				return
			}
			d.prm.Pattern = re
		}
	},
	"max_len": func(p *parser, f field, d *paramDoc) {
		if d.only(p, f, TypeString) {
			p.intField(f, 0, &d.prm.MaxLen)
		}
	},
	"min": func(p *parser, f field, d *paramDoc) {
		if d.only(p, f, TypeInt) {
			if n, ok := p.signed(f); ok {
				d.prm.Min = &n
			}
		}
	},
	"max": func(p *parser, f field, d *paramDoc) {
		if d.only(p, f, TypeInt) {
			if n, ok := p.signed(f); ok {
				d.prm.Max = &n
				d.max = &f
			}
		}
	},
	"values": func(p *parser, f field, d *paramDoc) {
		if !d.only(p, f, TypeEnum) {
			return
		}
		d.values = &f
		seen := map[string]bool{}
		for _, it := range p.items(f) {
			s, ok := p.text(it.node, it.path)
			if !ok {
				continue
			}
			if !utf8.ValidString(s) {
				p.errorf(it.node, it.path, "must be valid UTF-8")
				continue
			}
			if seen[s] {
				p.errorf(it.node, it.path, "duplicate value %q", s)
				continue
			}
			seen[s] = true
			d.prm.Values = append(d.prm.Values, s)
		}
	},
	"required": func(p *parser, f field, d *paramDoc) { p.boolean(f, &d.prm.Required) },
	"default":  keep(func(d *paramDoc) **field { return &d.def }),
	"secret":   func(p *parser, f field, d *paramDoc) { p.boolean(f, &d.prm.Secret) },
}

// param reads one parameter's declaration.
func (p *parser) param(f field) *Param {
	d := paramDoc{prm: &Param{Name: f.name, Type: TypeString}}
	fields := p.fields(f.val, f.path)
	// The type first: which other keys are allowed depends on it.
	for _, g := range fields {
		if g.name == "type" {
			p.paramType(g, d.prm)
		}
	}
	decodeFields(p, fields, paramKeys, &d)
	p.checkParam(f, &d)
	return d.prm
}

func (p *parser) paramType(f field, prm *Param) {
	var s string
	if p.str(f, &s) {
		switch t := ParamType(s); t {
		case TypeString, TypeInt, TypeBool, TypeEnum:
			prm.Type = t
		default:
			p.errorf(f.val, f.path, "must be string, int, bool or enum")
		}
	}
}

// checkParam applies the rules that involve several keys.
func (p *parser) checkParam(f field, d *paramDoc) {
	prm := d.prm
	// An empty list, or none; a wrong type or invalid entries are reported
	// already.
	noValues := d.values == nil || isNull(d.values.val) ||
		(d.values.val.Kind == yaml.SequenceNode && len(d.values.val.Content) == 0)
	if prm.Type == TypeEnum && noValues {
		at := f.key
		if d.values != nil {
			at = d.values.val
		}
		p.errorf(at, f.path+".values", "an enum needs at least one value")
	}
	if prm.Min != nil && prm.Max != nil && *prm.Min > *prm.Max {
		p.errorf(d.max.val, d.max.path, "must not be less than min (%d)", *prm.Min)
	}
	if d.def != nil {
		if v, ok := p.scalar(d.def.val, d.def.path); ok {
			if prm.Required {
				p.errorf(d.def.key, d.def.path, "a required parameter cannot have a default")
			}
			canon, reason := prm.check(v)
			if reason != "" {
				p.errorf(d.def.val, d.def.path, "%s", reason)
			} else {
				prm.Default = &canon
			}
		}
	}
}

// signed reads an int parameter's bound, which may be negative.
func (p *parser) signed(f field) (int64, bool) {
	return p.integer(f, math.MinInt64)
}
