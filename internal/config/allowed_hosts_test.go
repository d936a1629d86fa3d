package config

import (
	"slices"
	"testing"
)

func TestAllowedHosts(t *testing.T) {
	cfg, err := Parse("/etc/execgw/config.yaml", []byte(`
allowed_hosts: [localhost, GW.Example.com:8443, "10.0.0.5:8080", "[::1]:8080", "[fe80::1]"]
commands: {x: {argv: [/bin/echo]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"localhost", "gw.example.com:8443", "10.0.0.5:8080", "[::1]:8080", "[fe80::1]"}
	if !slices.Equal(cfg.AllowedHosts, want) {
		t.Errorf("AllowedHosts = %q, want %q", cfg.AllowedHosts, want)
	}
}

func TestValidHost(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"localhost", true},
		{"gw.example.com", true},
		{"gw.example.com:443", true},
		{"127.0.0.1", true},
		{"127.0.0.1:8080", true},
		{"[::1]", true},
		{"[::1]:8080", true},
		{"", false},
		{"gw example.com", false},
		{"gw.example.com:", false},
		{"gw.example.com:0", false},
		{"gw.example.com:70000", false},
		{"http://gw.example.com", false},
		{"gw.example.com/path", false},
		{"::1", false},
		{"[::1", false},
		{"[nothost]:80", false},
		{"a..b", false},
		{"*", false},
	} {
		if got := ValidHost(tc.in); got != tc.want {
			t.Errorf("ValidHost(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
