package config

import (
	"fmt"
	"regexp"
	"strings"
)

// An argv element or env value is parsed once, at load time, into segments:
// literal text and placeholders. Rendering only concatenates, so a value can
// never be re-interpreted, split or expanded: it becomes part of exactly one
// argument or variable.

// segment is literal text, or a placeholder when param is set.
type segment struct {
	text  string
	param string
}

// element is one parsed argv element.
type element []segment

var paramNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseElement parses one argv template: "{name}" is a placeholder, "{{" and
// "}}" are literal braces, and any other brace is an error.
func parseElement(s string) (element, error) {
	var el element
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			el = append(el, segment{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '{' && i+1 < len(s) && s[i+1] == '{':
			lit.WriteByte('{')
			i++
		case c == '}' && i+1 < len(s) && s[i+1] == '}':
			lit.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unmatched %q at byte %d (write {{ for a literal brace)", "{", i)
			}
			name := s[i+1 : i+1+end]
			if !paramNameRE.MatchString(name) {
				return nil, fmt.Errorf("invalid placeholder %q: a name is [A-Za-z_][A-Za-z0-9_]* (write {{ and }} for literal braces)", "{"+name+"}")
			}
			flush()
			el = append(el, segment{param: name})
			i += end + 1
		case c == '}':
			return nil, fmt.Errorf("unmatched %q at byte %d (write }} for a literal brace)", "}", i)
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return el, nil
}

// parseArgv parses every element of argv and checks that each placeholder
// names a declared parameter and that the program has none.
func parseArgv(argv []string, lookup func(string) *Param) ([]element, error) {
	out := make([]element, len(argv))
	for i, s := range argv {
		el, err := parseElement(s)
		if err != nil {
			return nil, fmt.Errorf("argv[%d]: %w", i, err)
		}
		if err := checkElement(i, el, lookup); err != nil {
			return nil, fmt.Errorf("argv[%d]: %w", i, err)
		}
		out[i] = el
	}
	return out, nil
}

// checkElement applies the rules that need the declarations.
func checkElement(i int, el element, lookup func(string) *Param) error {
	for _, seg := range el {
		if seg.param == "" {
			continue
		}
		if i == 0 {
			return fmt.Errorf("the program must not contain a placeholder; it is resolved at load time")
		}
		if lookup(seg.param) == nil {
			return fmt.Errorf("placeholder {%s} names no declared parameter", seg.param)
		}
	}
	return nil
}

// parseEnvValue parses the value of the environment variable name and
// checks that each placeholder names a declared parameter. PATH may hold
// none: the program is looked up in it at load time, and a client must not
// choose where programs are found.
func parseEnvValue(name, v string, lookup func(string) *Param) (element, error) {
	el, err := parseElement(v)
	if err != nil {
		return nil, err
	}
	for _, p := range el.params() {
		if name == "PATH" {
			return nil, fmt.Errorf("must not contain a placeholder; the program is looked up in PATH at load time")
		}
		if lookup(p) == nil {
			return nil, fmt.Errorf("placeholder {%s} names no declared parameter", p)
		}
	}
	return el, nil
}

// literal is the element's text when it has no placeholder.
func (el element) literal() string {
	var b strings.Builder
	for _, seg := range el {
		b.WriteString(seg.text)
	}
	return b.String()
}

// render substitutes values; ok is false when a placeholder has no value,
// which removes the element from the argv.
func (el element) render(values map[string]string) (s string, ok bool) {
	var b strings.Builder
	for _, seg := range el {
		if seg.param == "" {
			b.WriteString(seg.text)
			continue
		}
		v, ok := values[seg.param]
		if !ok {
			return "", false
		}
		b.WriteString(v)
	}
	return b.String(), true
}

// params lists the parameters the element refers to.
func (el element) params() []string {
	var names []string
	for _, seg := range el {
		if seg.param != "" {
			names = append(names, seg.param)
		}
	}
	return names
}
