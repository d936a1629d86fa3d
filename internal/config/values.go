package config

// Typed values of the walked tree: each reader reports a value of the wrong
// type or out of range at its line and key, and stores nothing then.

import (
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

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
