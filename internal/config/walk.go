package config

// The generic part of reading the file: a walker of the yaml.Node tree that
// knows nothing of execgw's keys. It reports unknown and duplicate keys as
// "file:line: key: message" and expands aliases and merge keys within a
// budget; values.go reads typed values and reports wrong types likewise.
// What the keys mean is in tables (key -> decoder), one per mapping:
// parse.go (top level), sections.go, parse_command.go, parse_param.go,
// parse_containment.go.

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
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

// A decoder reads the value of one key of a mapping into the document
// being built, a T.
type decoder[T any] func(p *parser, f field, dst *T)

// table holds the decoders of a mapping's keys; a key it does not hold is
// unknown.
type table[T any] map[string]decoder[T]

// decode walks the mapping n, handing each key to its decoder in file
// order. A null value is an empty mapping; anything but a mapping is
// reported.
func decode[T any](p *parser, n *yaml.Node, path string, keys table[T], dst *T) {
	decodeFields(p, p.fields(n, path), keys, dst)
}

// decodeFields is decode on the fields of a mapping already walked.
func decodeFields[T any](p *parser, fields []field, keys table[T], dst *T) {
	for _, f := range fields {
		d, ok := keys[f.name]
		if !ok {
			p.unknown(f)
			continue
		}
		d(p, f, dst)
	}
}

// joinTables returns one table holding the keys of all; a key in two of
// them is a mistake in this package, found by any test that loads a file.
func joinTables[T any](tables ...table[T]) table[T] {
	out := table[T]{}
	for _, t := range tables {
		for k, d := range t {
			if _, dup := out[k]; dup {
				panic("config: key " + k + " decoded twice")
			}
			out[k] = d
		}
	}
	return out
}

// keep is the decoder of a key read later, once other keys are known: it
// stores the field in the document.
func keep[T any](slot func(*T) **field) decoder[T] {
	return func(_ *parser, f field, dst *T) {
		*slot(dst) = &f
	}
}

// item is one element of a list with its key path ("x.commands[2]").
type item struct {
	node *yaml.Node
	path string
}

// items returns the elements of the list in f, each with its key path.
func (p *parser) items(f field) []item {
	nodes := p.seq(f.val, f.path)
	out := make([]item, len(nodes))
	for i, n := range nodes {
		out[i] = item{node: n, path: index(f.path, i)}
	}
	return out
}
