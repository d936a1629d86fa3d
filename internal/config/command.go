package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// StdinMode says what a command reads on its standard input.
type StdinMode string

// The stdin modes.
const (
	StdinNone StdinMode = "none" // /dev/null
	StdinBody StdinMode = "body" // the request body, streamed
)

// Command is one configured command.
type Command struct {
	Name        string
	Description string
	// Argv holds the templates as configured. Argv[0] has no placeholder.
	Argv []string
	// Path is Argv[0] resolved at load time to an absolute, existing,
	// executable regular file: relative to the config file's directory when
	// it contains a "/", else looked up in the child's PATH (see Environ).
	Path          string
	Params        []*Param          // sorted by name
	Timeout       time.Duration     // 0 = none
	KillGrace     time.Duration     // SIGTERM to SIGKILL; default 5s
	MaxConcurrent int               // 0 = only the global limit
	Stdin         StdinMode         // default none
	Dir           string            // absolute, an existing directory; "" = not set
	Env           map[string]string // the child's environment besides PATH, as configured: values are templates (see Bind)

	// Containment: parsed and validated here, enforced by the runner.

	User, Group string  // as written (names or numeric ids); "" = not set
	Uid, Gid    int     // resolved ids, -1 when not set; Gid is the user's primary group when only User is set
	Umask       *uint32 // nil = not set
	Rlimits     []Rlimit
	MemoryMax   int64   // bytes; 0 = none
	PidsMax     int64   // 0 = none
	CPUMax      float64 // CPUs; 0 = none

	// tmpl is Argv parsed at load time, and envTmpl Env, so Bind never
	// re-parses them.
	tmpl    []element
	envTmpl map[string]element
}

// Rlimit is one resource limit, set as both the soft and the hard value.
type Rlimit struct {
	Name     string // as configured: nofile, as, cpu, ...
	Resource int    // unix.RLIMIT_*
	Value    uint64 // unix.RLIM_INFINITY for "unlimited"
}

// ParamType is the type of a parameter's value.
type ParamType string

// The parameter types.
const (
	TypeString ParamType = "string"
	TypeInt    ParamType = "int"
	TypeBool   ParamType = "bool"
	TypeEnum   ParamType = "enum"
)

// Param is one declared parameter of a command.
type Param struct {
	Name        string
	Type        ParamType // default string
	Description string
	Pattern     *regexp.Regexp // string only; must match the value (operators anchor it themselves)
	MaxLen      int            // string only, in bytes; 0 = no limit of its own
	Min, Max    *int64         // int only
	Values      []string       // enum only, not empty
	Required    bool
	Default     *string // canonical form, valid against the declaration
	Secret      bool    // shown as "***" in records and logs
}

// secretMask replaces the values of secret parameters wherever they would be
// shown.
const secretMask = "***"

// ErrInvalidParam is matched (errors.Is) by every *ParamError.
var ErrInvalidParam = errors.New("invalid parameter")

// ParamError says why a parameter value was refused. Its message is meant
// for the client: it names the parameter and the rule, never internals.
type ParamError struct {
	Name   string
	Reason string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("parameter %q: %s", e.Name, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidParam) hold for every ParamError.
func (e *ParamError) Is(target error) bool {
	return target == ErrInvalidParam
}

// Invocation is a command bound to validated parameter values.
type Invocation struct {
	Argv   []string          // Argv[0] == Command.Path
	Env    []string          // the child's complete environment, "K=V" sorted by name (see Command.Bind)
	Params map[string]string // effective values (given or default); secret ones are "***"
}

// Param returns the declaration of the named parameter, or nil.
func (c *Command) Param(name string) *Param {
	// A linear scan: commands have few parameters, and it stays correct for
	// a Command built by hand whose Params are not sorted.
	for _, p := range c.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// defaultChildPath is the child's PATH when the gateway has none.
const defaultChildPath = "/usr/local/bin:/usr/bin:/bin"

// childPath is the PATH the child gets, and the one Argv[0] is looked up in.
func (c *Command) childPath() string {
	v, ok := c.Env["PATH"]
	if !ok {
		if p := os.Getenv("PATH"); p != "" {
			return p
		}
		return defaultChildPath
	}
	// PATH has no placeholder (Load refuses one), but "{{" and "}}" still
	// stand for braces there, as in every other value.
	if el, err := c.envElement("PATH", v, nil); err == nil {
		return el.literal()
	}
	return v
}

// Environ returns the child's environment for a run that gives no
// parameter: Bind's Invocation.Env with every placeholder filled in by its
// parameter's default, a variable whose placeholder has none left out. A
// run's environment is the one Bind returns.
func (c *Command) Environ() []string {
	defaults := make(map[string]string, len(c.Params))
	for _, p := range c.Params {
		if p.Default != nil {
			defaults[p.Name] = *p.Default
		}
	}
	// A value that does not parse (only in a Command not built by Load) is
	// left out; Bind reports it.
	tmpl, _ := c.envTemplates()
	return c.environ(tmpl, defaults)
}

// envElement returns the parsed template of the variable name, whose value
// is v. lookup checks placeholders against the declarations; nil skips
// that check.
func (c *Command) envElement(name, v string, lookup func(string) *Param) (element, error) {
	if el, ok := c.envTmpl[name]; ok {
		return el, nil
	}
	// A Command not built by Load (tests elsewhere build them by hand).
	if lookup == nil {
		return parseElement(v)
	}
	return parseEnvValue(name, v, lookup)
}

// envTemplates returns the parsed templates of Env, and the first error of
// a value that does not parse, by name.
func (c *Command) envTemplates() (map[string]element, error) {
	out := make(map[string]element, len(c.Env))
	var first error
	for _, name := range slices.Sorted(maps.Keys(c.Env)) {
		el, err := c.envElement(name, c.Env[name], c.Param)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("env.%s: %w", name, err)
			}
			continue
		}
		out[name] = el
	}
	return out, first
}

// environ renders the child's complete environment, "K=V" sorted by name:
// PATH (the gateway's own, or /usr/local/bin:/usr/bin:/bin when it has
// none, unless Env sets PATH) plus Env. Nothing else of the gateway's
// environment is passed on, so secrets in it cannot leak to commands.
func (c *Command) environ(tmpl map[string]element, values map[string]string) []string {
	env := make(map[string]string, len(tmpl)+1)
	env["PATH"] = c.childPath()
	for name, el := range tmpl {
		if name == "PATH" {
			continue
		}
		if v, ok := el.render(values); ok {
			env[name] = v
		}
	}
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// Bind validates values against the command's declarations and renders the
// argv and the environment. Every refusal is a *ParamError. A value is
// substituted literally into the one argv element holding its placeholder;
// an optional parameter without a default that is not given removes that
// whole element. Env values are templates by the same rules: a value is
// substituted into that one variable, and a variable whose placeholder has
// no value is left out of the environment. The environment is how a secret
// reaches a command without showing in its /proc/PID/cmdline.
func (c *Command) Bind(values map[string]string) (Invocation, error) {
	// Sorted, so that a request with several problems always gets the same
	// answer.
	for _, name := range slices.Sorted(maps.Keys(values)) {
		if c.Param(name) == nil {
			return Invocation{}, &ParamError{Name: name, Reason: fmt.Sprintf("is not declared by command %q", c.Name)}
		}
	}
	effective := make(map[string]string, len(c.Params))
	for _, p := range c.Params {
		v, given := values[p.Name]
		switch {
		case given:
			canon, reason := p.check(v)
			if reason != "" {
				return Invocation{}, &ParamError{Name: p.Name, Reason: reason}
			}
			effective[p.Name] = canon
		case p.Default != nil:
			effective[p.Name] = *p.Default
		case p.Required:
			return Invocation{}, &ParamError{Name: p.Name, Reason: "is required"}
		}
	}

	tmpl := c.tmpl
	if tmpl == nil {
		// A Command not built by Load (tests elsewhere build them by hand).
		var err error
		if tmpl, err = parseArgv(c.Argv, c.Param); err != nil {
			return Invocation{}, fmt.Errorf("command %q: %w", c.Name, err)
		}
	}
	if len(tmpl) == 0 {
		return Invocation{}, fmt.Errorf("command %q has no argv", c.Name)
	}
	argv := make([]string, 0, len(tmpl))
	if c.Path != "" {
		argv = append(argv, c.Path)
	} else {
		argv = append(argv, tmpl[0].literal())
	}
	for _, el := range tmpl[1:] {
		if s, ok := el.render(effective); ok {
			argv = append(argv, s)
		}
	}

	envTmpl := c.envTmpl
	if envTmpl == nil && len(c.Env) > 0 {
		var err error
		if envTmpl, err = c.envTemplates(); err != nil {
			return Invocation{}, fmt.Errorf("command %q: %w", c.Name, err)
		}
	}
	env := c.environ(envTmpl, effective)

	shown := make(map[string]string, len(effective))
	for name, v := range effective {
		if c.Param(name).Secret {
			v = secretMask
		}
		shown[name] = v
	}
	return Invocation{Argv: argv, Env: env, Params: shown}, nil
}

// display shows text from the file or a client as it is, unless it holds
// control characters or invalid UTF-8: then quoted, so that a message stays
// one honest line.
func display(s string) string {
	if strconv.CanBackquote(s) {
		return s
	}
	return strconv.Quote(s)
}

// check validates one value against the declaration and returns its
// canonical form, or the reason it is refused (for a ParamError, or a config
// error when checking a default).
func (p *Param) check(v string) (canon, reason string) {
	if strings.IndexByte(v, 0) >= 0 {
		return "", "must not contain NUL bytes"
	}
	if !utf8.ValidString(v) {
		return "", "must be valid UTF-8"
	}
	switch p.Type {
	case TypeInt:
		n, err := strconv.ParseInt(v, 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return "", "is out of the range of a 64-bit integer"
		}
		if err != nil {
			return "", "must be an integer"
		}
		if p.Min != nil && n < *p.Min {
			return "", fmt.Sprintf("must be at least %d", *p.Min)
		}
		if p.Max != nil && n > *p.Max {
			return "", fmt.Sprintf("must be at most %d", *p.Max)
		}
		return strconv.FormatInt(n, 10), ""
	case TypeBool:
		switch v {
		case "true", "1":
			return "true", ""
		case "false", "0":
			return "false", ""
		}
		return "", "must be true, false, 1 or 0"
	case TypeEnum:
		if slices.Contains(p.Values, v) {
			return v, ""
		}
		quoted := make([]string, len(p.Values))
		for i, s := range p.Values {
			quoted[i] = strconv.Quote(s)
		}
		return "", "must be one of " + strings.Join(quoted, ", ")
	default: // TypeString
		if p.MaxLen > 0 && len(v) > p.MaxLen {
			return "", fmt.Sprintf("must be at most %d bytes long", p.MaxLen)
		}
		if p.Pattern != nil && !p.Pattern.MatchString(v) {
			return "", "does not match pattern " + display(p.Pattern.String())
		}
		return v, ""
	}
}
