package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzConfig puts every parameter in exactly one argv element, so that the
// expected argv can be computed independently of the implementation.
const fuzzConfig = `commands:
  f:
    argv: [/bin/echo, lit, "--s={s}", "{n}", "x{b}y", "{e}/{o}", "{{{p}}}"]
    env: {F_S: "<{s}>", F_O: "{o}", F_L: "{{x}}"}
    params:
      s: {max_len: 64}
      n: {type: int, min: -5, max: 100, default: "7"}
      b: {type: bool}
      e: {type: enum, values: [a, b, c], required: true}
      p: {pattern: '^[a-z ;$()]*$', default: z}
      o: {secret: true}
`

var fuzzPattern = regexp.MustCompile(`^[a-z ;$()]*$`)

// fuzzValid is an independent statement of the rules in fuzzConfig.
func fuzzValid(name, v string) bool {
	if strings.Contains(v, "\x00") || !utf8.ValidString(v) {
		return false
	}
	switch name {
	case "s":
		return len(v) <= 64
	case "n":
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n >= -5 && n <= 100
	case "b":
		return v == "true" || v == "false" || v == "1" || v == "0"
	case "e":
		return v == "a" || v == "b" || v == "c"
	case "p":
		return fuzzPattern.MatchString(v)
	case "o":
		return true
	}
	return false
}

func FuzzBind(f *testing.F) {
	cfg, err := Parse("fuzz.yaml", []byte(fuzzConfig))
	if err != nil {
		f.Fatalf("Parse(fuzzConfig) = %v", err)
	}
	cmd := cfg.Commands["f"]
	const templateElements = 7

	f.Add("a b", "5", "true", "a", "x y", "$(id)", uint8(0x3f), "")
	f.Add("1; touch /tmp/x", "010", "0", "c", "", "`id`", uint8(0x3f), "s")
	f.Add("", "-5", "1", "b", "a;b", "", uint8(0x08), "")
	f.Add("{s}", "+100", "false", "a", "$(x)", "{{", uint8(0x0f), "")
	f.Add("a\x00b", "101", "yes", "d", "A", "\xff", uint8(0x7f), "zz")
	f.Add(strings.Repeat("x", 65), "99999999999999999999", "", "", "()", "}}", uint8(0x7f), "e")

	f.Fuzz(func(t *testing.T, s, n, b, e, p, o string, given uint8, extra string) {
		values := map[string]string{}
		for i, name := range []string{"s", "n", "b", "e", "p", "o"} {
			if given&(1<<i) != 0 {
				values[name] = []string{s, n, b, e, p, o}[i]
			}
		}
		if _, dup := values[extra]; given&(1<<6) != 0 && !dup {
			values[extra] = s
		}

		wantErr := false
		for name, v := range values {
			if cmd.Param(name) == nil || !fuzzValid(name, v) {
				wantErr = true
			}
		}
		if _, ok := values["e"]; !ok {
			wantErr = true
		}

		inv, err := cmd.Bind(values)
		if err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalidParam) {
				t.Fatalf("Bind(%q) = %v, want a *ParamError", values, err)
			}
			if !wantErr {
				t.Fatalf("Bind(%q) = %v, want success", values, err)
			}
			return
		}
		if wantErr {
			t.Fatalf("Bind(%q) = %q, want an error", values, inv.Argv)
		}

		// The effective values, canonical.
		eff := map[string]string{"n": "7", "p": "z"}
		for name, v := range values {
			switch name {
			case "n":
				i, _ := strconv.ParseInt(v, 10, 64)
				v = strconv.FormatInt(i, 10)
			case "b":
				v = strconv.FormatBool(v == "true" || v == "1")
			}
			eff[name] = v
		}
		want := []string{cmd.Path, "lit"}
		removed := 0
		add := func(parts ...string) {
			// parts alternate literal, parameter, literal, ...
			var el strings.Builder
			for i, part := range parts {
				if i%2 == 0 {
					el.WriteString(part)
					continue
				}
				v, ok := eff[part]
				if !ok {
					removed++
					return
				}
				el.WriteString(v)
			}
			want = append(want, el.String())
		}
		add("--s=", "s", "")
		add("", "n", "")
		add("x", "b", "y")
		add("", "e", "/", "o", "")
		add("{", "p", "}")

		// Each value is inside exactly one element, where its placeholder
		// is: comparing every element exactly says so.
		if len(inv.Argv) != templateElements-removed {
			t.Fatalf("Bind(%q) = %d elements %q, want %d", values, len(inv.Argv), inv.Argv, templateElements-removed)
		}
		if !slices.Equal(inv.Argv, want) {
			t.Fatalf("Bind(%q) = %q, want %q", values, inv.Argv, want)
		}
		// Likewise each value is inside exactly its variable, which is
		// left out when the value is.
		wantEnv := []string{"F_L={x}"}
		if v, ok := eff["o"]; ok {
			wantEnv = append(wantEnv, "F_O="+v)
		}
		if v, ok := eff["s"]; ok {
			wantEnv = append(wantEnv, "F_S=<"+v+">")
		}
		wantEnv = append(wantEnv, "PATH="+cmd.childPath())
		if !slices.Equal(inv.Env, wantEnv) {
			t.Fatalf("Bind(%q).Env = %q, want %q", values, inv.Env, wantEnv)
		}
		if v, ok := inv.Params["o"]; ok && v != "***" {
			t.Fatalf("Bind(%q).Params[o] = %q, want it masked", values, v)
		}
	})
}

func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, "testdata/full.yaml")
	for _, file := range seeds {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(bindConfig))
	f.Add([]byte(fuzzConfig))
	f.Add([]byte("commands: {a: &a {argv: [/bin/echo]}, b: {<<: [*a, *a], timeout: 1s}}"))
	f.Add([]byte("commands:\n  x: {argv: [/bin/echo, '{{{a}}}'], params: {a: {type: int, min: -1}}}\n"))

	const file = "testdata/fuzz.yaml"
	abs, err := filepath.Abs(file)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(file, data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse(%q) = %v, %v: want exactly one of a config and an error", data, cfg, err)
		}
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, abs+":") {
					t.Fatalf("Parse(%q): error line %q does not name the file", data, line)
				}
			}
			return
		}
		if len(cfg.Commands) == 0 {
			t.Fatalf("Parse(%q) succeeded without commands", data)
		}
		for name, c := range cfg.Commands {
			if !filepath.IsAbs(c.Path) || len(c.tmpl) != len(c.Argv) || len(c.Argv) == 0 {
				t.Fatalf("Parse(%q): command %q has Path %q, argv %q", data, name, c.Path, c.Argv)
			}
			c.Environ()
			if inv, err := c.Bind(nil); err == nil && inv.Argv[0] != c.Path {
				t.Fatalf("Parse(%q): Bind(nil) = %q, want Argv[0] %q", data, inv.Argv, c.Path)
			}
		}
	})
}
