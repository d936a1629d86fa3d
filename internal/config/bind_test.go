package config

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// bindConfig declares one parameter of every kind. Its argv exercises
// placeholders inside elements, several per element, literal braces and
// optional parameters without defaults.
const bindConfig = `commands:
  t:
    argv:
      - /bin/echo
      - "--count={count}"
      - "{name}"
      - "-v={verbose}"
      - "{mode}"
      - "--opt={opt}"
      - "{a}-{b}"
      - "{{lit}}"
      - "{{{a}}}"
      - "{word}"
      - "{token}"
      - "{neg}"
    params:
      count: {type: int, min: 1, max: 100, required: true}
      name: {max_len: 32, default: def}
      verbose: {type: bool, default: "false"}
      mode: {type: enum, values: [fast, slow], default: fast}
      opt: {}
      a: {default: A}
      b: {description: optional without default}
      word: {pattern: '^[a-z]+$', default: w}
      token: {secret: true, default: hidden}
      neg: {type: int, min: -10, max: -1, default: "-5"}
`

func loadBindCommand(t testing.TB) *Command {
	t.Helper()
	cfg, err := Parse("bind.yaml", []byte(bindConfig))
	if err != nil {
		t.Fatalf("Parse(bindConfig) = %v", err)
	}
	return cfg.Commands["t"]
}

// baseArgv is the argv with {count: 5} and every other parameter defaulted.
var baseArgv = []string{"/bin/echo", "--count=5", "def", "-v=false", "fast", "{lit}", "{A}", "w", "hidden", "-5"}

// with returns a copy of baseArgv with element i replaced by v.
func with(i int, v string) []string {
	out := slices.Clone(baseArgv)
	out[i] = v
	return out
}

func TestBind(t *testing.T) {
	cmd := loadBindCommand(t)
	tests := []struct {
		name   string
		values map[string]string
		want   []string // argv
		errArg string   // ParamError.Name
		errMsg string   // ParamError.Reason
	}{
		{name: "defaults", values: map[string]string{"count": "5"}, want: baseArgv},
		{name: "int canonical", values: map[string]string{"count": "010"}, want: with(1, "--count=10")},
		{name: "int plus sign", values: map[string]string{"count": "+7"}, want: with(1, "--count=7")},
		{name: "int min", values: map[string]string{"count": "1"}, want: with(1, "--count=1")},
		{name: "int max", values: map[string]string{"count": "100"}, want: with(1, "--count=100")},
		{name: "int below min", values: map[string]string{"count": "0"}, errArg: "count", errMsg: "must be at least 1"},
		{name: "int above max", values: map[string]string{"count": "101"}, errArg: "count", errMsg: "must be at most 100"},
		{name: "int not a number", values: map[string]string{"count": "ten"}, errArg: "count", errMsg: "must be an integer"},
		{name: "int with space", values: map[string]string{"count": " 5"}, errArg: "count", errMsg: "must be an integer"},
		{name: "int hex", values: map[string]string{"count": "0x10"}, errArg: "count", errMsg: "must be an integer"},
		{name: "int empty", values: map[string]string{"count": ""}, errArg: "count", errMsg: "must be an integer"},
		{name: "int overflow", values: map[string]string{"count": "99999999999999999999"}, errArg: "count", errMsg: "is out of the range of a 64-bit integer"},
		{name: "int injection", values: map[string]string{"count": "5; rm -rf /"}, errArg: "count", errMsg: "must be an integer"},
		{name: "negative int", values: map[string]string{"count": "5", "neg": "-010"}, want: with(9, "-10")},
		{name: "negative int above max", values: map[string]string{"count": "5", "neg": "0"}, errArg: "neg", errMsg: "must be at most -1"},
		{name: "negative int below min", values: map[string]string{"count": "5", "neg": "-11"}, errArg: "neg", errMsg: "must be at least -10"},
		{name: "required missing", values: map[string]string{"name": "x"}, errArg: "count", errMsg: "is required"},
		{name: "required missing, nil map", values: nil, errArg: "count", errMsg: "is required"},
		{name: "undeclared", values: map[string]string{"count": "5", "nope": "1"}, errArg: "nope", errMsg: `is not declared by command "t"`},
		{name: "undeclared before invalid", values: map[string]string{"count": "x", "zz": "1"}, errArg: "zz", errMsg: `is not declared by command "t"`},

		// A value is one argument, whatever it looks like.
		{name: "semicolon", values: map[string]string{"count": "5", "name": "1; touch /tmp/x"}, want: with(2, "1; touch /tmp/x")},
		{name: "command substitution", values: map[string]string{"count": "5", "name": "$(id)"}, want: with(2, "$(id)")},
		{name: "backticks", values: map[string]string{"count": "5", "name": "`id`"}, want: with(2, "`id`")},
		{name: "space", values: map[string]string{"count": "5", "name": "a b"}, want: with(2, "a b")},
		{name: "newline", values: map[string]string{"count": "5", "name": "a\nb"}, want: with(2, "a\nb")},
		{name: "looks like a flag", values: map[string]string{"count": "5", "name": "--count=1"}, want: with(2, "--count=1")},
		{name: "glob", values: map[string]string{"count": "5", "name": "*"}, want: with(2, "*")},
		{name: "placeholder-looking", values: map[string]string{"count": "5", "name": "{count}"}, want: with(2, "{count}")},
		{name: "braces", values: map[string]string{"count": "5", "name": "{{}}"}, want: with(2, "{{}}")},
		{name: "given empty string stays an argument", values: map[string]string{"count": "5", "name": ""}, want: with(2, "")},

		{name: "max_len", values: map[string]string{"count": "5", "name": strings.Repeat("x", 32)}, want: with(2, strings.Repeat("x", 32))},
		{name: "over max_len", values: map[string]string{"count": "5", "name": strings.Repeat("x", 33)}, errArg: "name", errMsg: "must be at most 32 bytes long"},
		{name: "max_len counts bytes", values: map[string]string{"count": "5", "name": strings.Repeat("é", 17)}, errArg: "name", errMsg: "must be at most 32 bytes long"},
		{name: "NUL", values: map[string]string{"count": "5", "name": "a\x00b"}, errArg: "name", errMsg: "must not contain NUL bytes"},
		{name: "NUL in int", values: map[string]string{"count": "5\x00"}, errArg: "count", errMsg: "must not contain NUL bytes"},
		{name: "invalid UTF-8", values: map[string]string{"count": "5", "name": "a\xffb"}, errArg: "name", errMsg: "must be valid UTF-8"},

		{name: "pattern", values: map[string]string{"count": "5", "word": "abc"}, want: with(7, "abc")},
		{name: "pattern mismatch", values: map[string]string{"count": "5", "word": "ABC"}, errArg: "word", errMsg: "does not match pattern ^[a-z]+$"},
		{name: "pattern trailing newline", values: map[string]string{"count": "5", "word": "abc\n"}, errArg: "word", errMsg: "does not match pattern ^[a-z]+$"},
		{name: "pattern empty", values: map[string]string{"count": "5", "word": ""}, errArg: "word", errMsg: "does not match pattern ^[a-z]+$"},

		{name: "bool true", values: map[string]string{"count": "5", "verbose": "true"}, want: with(3, "-v=true")},
		{name: "bool 1", values: map[string]string{"count": "5", "verbose": "1"}, want: with(3, "-v=true")},
		{name: "bool 0", values: map[string]string{"count": "5", "verbose": "0"}, want: with(3, "-v=false")},
		{name: "bool false", values: map[string]string{"count": "5", "verbose": "false"}, want: with(3, "-v=false")},
		{name: "bool yes", values: map[string]string{"count": "5", "verbose": "yes"}, errArg: "verbose", errMsg: "must be true, false, 1 or 0"},
		{name: "bool TRUE", values: map[string]string{"count": "5", "verbose": "TRUE"}, errArg: "verbose", errMsg: "must be true, false, 1 or 0"},

		{name: "enum", values: map[string]string{"count": "5", "mode": "slow"}, want: with(4, "slow")},
		{name: "enum other", values: map[string]string{"count": "5", "mode": "medium"}, errArg: "mode", errMsg: `must be one of "fast", "slow"`},
		{name: "enum case", values: map[string]string{"count": "5", "mode": "Fast"}, errArg: "mode", errMsg: `must be one of "fast", "slow"`},

		{name: "optional given", values: map[string]string{"count": "5", "opt": "o"},
			want: slices.Insert(slices.Clone(baseArgv), 5, "--opt=o")},
		{name: "optional given empty", values: map[string]string{"count": "5", "opt": ""},
			want: slices.Insert(slices.Clone(baseArgv), 5, "--opt=")},
		{name: "two placeholders in one element", values: map[string]string{"count": "5", "b": "B"},
			want: slices.Insert(slices.Clone(baseArgv), 5, "A-B")},
		{name: "two placeholders, both given", values: map[string]string{"count": "5", "a": "x y", "b": "$(id)"},
			want: slices.Insert(with(6, "{x y}"), 5, "x y-$(id)")},
		{name: "secret substituted", values: map[string]string{"count": "5", "token": "s3cret"}, want: with(8, "s3cret")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := cmd.Bind(tc.values)
			if tc.errMsg != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Name != tc.errArg || pe.Reason != tc.errMsg {
					t.Fatalf("Bind(%q) = %v, want %v", tc.values, err, &ParamError{Name: tc.errArg, Reason: tc.errMsg})
				}
				if !errors.Is(err, ErrInvalidParam) {
					t.Errorf("Bind(%q): errors.Is(%v, ErrInvalidParam) = false", tc.values, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Bind(%q) = %v, want %q", tc.values, err, tc.want)
			}
			if !slices.Equal(inv.Argv, tc.want) {
				t.Errorf("Bind(%q) = %q, want %q", tc.values, inv.Argv, tc.want)
			}
			if inv.Argv[0] != cmd.Path {
				t.Errorf("Bind(%q): Argv[0] = %q, want Path %q", tc.values, inv.Argv[0], cmd.Path)
			}
		})
	}
}

func TestBindParams(t *testing.T) {
	cmd := loadBindCommand(t)
	values := map[string]string{"count": "007", "verbose": "1", "token": "s3cret", "b": "B"}
	inv, err := cmd.Bind(values)
	if err != nil {
		t.Fatal(err)
	}
	// Effective values, canonical, defaults included, secrets masked,
	// optional ones not given absent.
	want := map[string]string{
		"count":   "7",
		"name":    "def",
		"verbose": "true",
		"mode":    "fast",
		"a":       "A",
		"b":       "B",
		"word":    "w",
		"token":   "***",
		"neg":     "-5",
	}
	if !maps.Equal(inv.Params, want) {
		t.Errorf("Bind(%q).Params = %q, want %q", values, inv.Params, want)
	}
	if slices.Contains(inv.Argv, "***") || !slices.Contains(inv.Argv, "s3cret") {
		t.Errorf("Bind(%q).Argv = %q, want the secret itself", values, inv.Argv)
	}
	// The secret default is masked too.
	inv, err = cmd.Bind(map[string]string{"count": "1"})
	if err != nil || inv.Params["token"] != "***" {
		t.Errorf("Bind: Params = %q, %v, want token masked", inv.Params, err)
	}
	// Bind does not modify its argument.
	if values["count"] != "007" || len(values) != 4 {
		t.Errorf("Bind modified its argument: %q", values)
	}
}

func TestParamErrorMessage(t *testing.T) {
	err := error(&ParamError{Name: "count", Reason: "must be an integer"})
	if got, want := err.Error(), `parameter "count": must be an integer`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, ErrInvalidParam) {
		t.Errorf("errors.Is(%v, ErrInvalidParam) = false", err)
	}
	// Wrapped, as the handler may.
	if wrapped := errors.Join(errors.New("context"), err); !errors.Is(wrapped, ErrInvalidParam) {
		t.Errorf("errors.Is(%v, ErrInvalidParam) = false", wrapped)
	}
	if errors.Is(errors.New("other"), ErrInvalidParam) {
		t.Error("an unrelated error matches ErrInvalidParam")
	}
}

func TestParseElement(t *testing.T) {
	p := func(name string) segment { return segment{param: name} }
	l := func(text string) segment { return segment{text: text} }
	tests := []struct {
		in      string
		want    element
		wantErr string
	}{
		{in: "", want: nil},
		{in: "abc", want: element{l("abc")}},
		{in: "{a}", want: element{p("a")}},
		{in: "--x={a}", want: element{l("--x="), p("a")}},
		{in: "{a}-{b}", want: element{p("a"), l("-"), p("b")}},
		{in: "{a}{b}", want: element{p("a"), p("b")}},
		{in: "{_A9}", want: element{p("_A9")}},
		{in: "{{", want: element{l("{")}},
		{in: "}}", want: element{l("}")}},
		{in: "{{a}}", want: element{l("{a}")}},
		{in: "{{{a}}}", want: element{l("{"), p("a"), l("}")}},
		{in: "x{{}}y", want: element{l("x{}y")}},
		{in: "{", wantErr: `unmatched "{" at byte 0`},
		{in: "}", wantErr: `unmatched "}" at byte 0`},
		{in: "{a", wantErr: `unmatched "{" at byte 0`},
		{in: "a}", wantErr: `unmatched "}" at byte 1`},
		{in: "{}", wantErr: `invalid placeholder "{}"`},
		{in: "{1a}", wantErr: `invalid placeholder "{1a}"`},
		{in: "{a b}", wantErr: `invalid placeholder "{a b}"`},
		{in: "{a{b}", wantErr: `invalid placeholder "{a{b}"`},
		{in: "{{a}", wantErr: `unmatched "}" at byte 3`},
		{in: "{a}}", wantErr: `unmatched "}" at byte 3`},
		{in: "{{{", wantErr: `unmatched "{" at byte 2`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseElement(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("parseElement(%q) = %v, %v, want error %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseElement(%q) = %#v, %v, want %#v", tc.in, got, err, tc.want)
			}
		})
	}
}

// TestBindHandBuilt covers Commands built without Load, as other packages'
// tests may: the templates are parsed on demand and Argv[0] is used as is.
func TestBindHandBuilt(t *testing.T) {
	c := &Command{
		Name:   "h",
		Argv:   []string{"echo", "{x}", "{y}"},
		Params: []*Param{{Name: "y", Type: TypeInt}, {Name: "x", Type: TypeString, Required: true}},
	}
	inv, err := c.Bind(map[string]string{"x": "a b"})
	if want := []string{"echo", "a b"}; err != nil || !slices.Equal(inv.Argv, want) {
		t.Errorf("Bind = %q, %v, want %q", inv.Argv, err, want)
	}
	c.Argv = []string{"echo", "{z}"}
	if _, err := c.Bind(map[string]string{"x": "1"}); err == nil || errors.Is(err, ErrInvalidParam) {
		t.Errorf("Bind with a broken template = %v, want a non-parameter error", err)
	}
}
