package config

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

// envConfig passes parameters through the environment: a secret only
// there, a parameter both there and in argv, an optional one without a
// default, literal braces.
const envConfig = `commands:
  t:
    argv: [/bin/echo, "{mode}"]
    env:
      LC_ALL: C
      TOKEN: "{token}"
      AUTH: "Bearer {token}"
      MODE: "{mode}"
      OPT: "--opt={opt}"
      BRACES: "{{{n}}}"
      LITERAL: "{{not a placeholder}}"
    params:
      token: {secret: true, required: true}
      mode: {type: enum, values: [fast, slow], default: fast}
      opt: {}
      n: {type: int, default: "07"}
`

func loadEnvCommand(t *testing.T) *Command {
	t.Helper()
	cfg, err := Parse("env.yaml", []byte(envConfig))
	if err != nil {
		t.Fatalf("Parse(envConfig) = %v", err)
	}
	return cfg.Commands["t"]
}

func TestBindEnv(t *testing.T) {
	t.Setenv("PATH", "/gw/bin")
	cmd := loadEnvCommand(t)
	// The environment with token "s" and everything else defaulted.
	base := map[string]string{
		"AUTH":    "Bearer s",
		"BRACES":  "{7}",
		"LC_ALL":  "C",
		"LITERAL": "{not a placeholder}",
		"MODE":    "fast",
		"PATH":    "/gw/bin",
		"TOKEN":   "s",
	}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name   string
		values map[string]string
		want   map[string]string // the environment
		argv   []string
		errArg string
	}{
		{name: "defaults", values: map[string]string{"token": "s"}, want: base, argv: []string{"/bin/echo", "fast"}},
		{name: "optional given", values: map[string]string{"token": "s", "opt": "x y"}, want: with("OPT", "--opt=x y")},
		{name: "optional given empty", values: map[string]string{"token": "s", "opt": ""}, want: with("OPT", "--opt=")},
		{name: "int canonical", values: map[string]string{"token": "s", "n": "010"}, want: with("BRACES", "{10}")},
		{name: "in argv and env", values: map[string]string{"token": "s", "mode": "slow"}, want: with("MODE", "slow"), argv: []string{"/bin/echo", "slow"}},
		{name: "value stays literal", values: map[string]string{"token": "$(id) {mode}\n`x`;=="},
			want: with("TOKEN", "$(id) {mode}\n`x`;==", "AUTH", "Bearer $(id) {mode}\n`x`;==")},
		{name: "value with equals", values: map[string]string{"token": "a=b"}, want: with("TOKEN", "a=b", "AUTH", "Bearer a=b")},
		{name: "required missing", values: map[string]string{"opt": "o"}, errArg: "token"},
		{name: "NUL refused", values: map[string]string{"token": "a\x00b"}, errArg: "token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := cmd.Bind(tc.values)
			if tc.errArg != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Name != tc.errArg {
					t.Fatalf("Bind(%q) = %v, want a ParamError for %q", tc.values, err, tc.errArg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Bind(%q) = %v", tc.values, err)
			}
			if got := envMap(t, inv.Env); !maps.Equal(got, tc.want) {
				t.Errorf("Bind(%q).Env = %q, want %q", tc.values, inv.Env, tc.want)
			}
			if !slices.IsSorted(inv.Env) {
				t.Errorf("Bind(%q).Env = %q, want it sorted", tc.values, inv.Env)
			}
			if tc.argv != nil && !slices.Equal(inv.Argv, tc.argv) {
				t.Errorf("Bind(%q).Argv = %q, want %q", tc.values, inv.Argv, tc.argv)
			}
			// The secret reaches the environment, never argv or the
			// shown parameters.
			if tok := tc.values["token"]; slices.Contains(inv.Argv, tok) || inv.Params["token"] != "***" {
				t.Errorf("Bind(%q): Argv %q, Params %q: the secret shows", tc.values, inv.Argv, inv.Params)
			}
		})
	}
}

// envMap turns "K=V" entries into a map, failing on a repeated name.
func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if _, dup := m[k]; !ok || dup {
			t.Fatalf("environment %q: bad or repeated entry %q", env, kv)
		}
		m[k] = v
	}
	return m
}

// TestEnvironRendersDefaults: Environ is the environment of a run that
// gives no parameter: defaults filled in, variables whose placeholder has
// no value left out.
func TestEnvironRendersDefaults(t *testing.T) {
	t.Setenv("PATH", "/gw/bin")
	got := loadEnvCommand(t).Environ()
	want := []string{"BRACES={7}", "LC_ALL=C", "LITERAL={not a placeholder}", "MODE=fast", "PATH=/gw/bin"}
	if !slices.Equal(got, want) {
		t.Errorf("Environ() = %q, want %q", got, want)
	}
}

// TestEnvPlaceholderErrors: every problem with an env template names the
// file, the line of the value and the variable.
func TestEnvPlaceholderErrors(t *testing.T) {
	tests := []struct {
		name, env, params, want string
	}{
		{"undeclared", `TOKEN: "{tokn}"`, `token: {secret: true}`, `:5: commands.x.env.TOKEN: placeholder {tokn} names no declared parameter`},
		{"invalid name", `A: "{a-b}"`, `a: {}`, `:5: commands.x.env.A: invalid placeholder "{a-b}"`},
		{"lone open brace", `A: "x{y"`, `y: {}`, `:5: commands.x.env.A: unmatched "{" at byte 1`},
		{"lone close brace", `A: "x}"`, `y: {}`, `:5: commands.x.env.A: unmatched "}" at byte 1`},
		{"PATH", `PATH: "/opt/{v}/bin"`, `v: {}`, `:5: commands.x.env.PATH: must not contain a placeholder`},
		{"unused", `A: "{{a}}"`, `a: {}`, `:7: commands.x.params.a: is declared but neither argv nor env uses {a}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, "commands:\n  x:\n    argv: [/bin/echo]\n    env:\n      "+tc.env+"\n    params:\n      "+tc.params+"\n")
			_, err := Load(file)
			if err == nil || !strings.Contains(err.Error(), file+tc.want) {
				t.Errorf("Load(env %s) = %v, want an error containing %q", tc.env, err, file+tc.want)
			}
		})
	}
}

// TestParamUsedOnlyInEnv: a parameter that only the environment uses is
// not "unused".
func TestParamUsedOnlyInEnv(t *testing.T) {
	file := writeConfig(t, "commands:\n  x:\n    argv: [/bin/echo]\n    env: {K: \"{k}\"}\n    params: {k: {secret: true}}\n")
	mustLoad(t, file)
}
