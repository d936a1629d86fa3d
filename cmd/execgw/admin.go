package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"regexp"

	"github.com/execgw/execgw/internal/config"
)

// check validates a configuration as serve would, without serving.
func check(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "configuration file")
	if ok, err := parseFlags(fs, args, stdout); !ok {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	// Only a configured cgroup.root is looked at: detecting systemd's
	// subtree would move this process, and check must change nothing.
	cgroups, err := openCgroups(cfg, false)
	if err != nil {
		return err
	}
	if cgroups != nil {
		// The subtree it opened, if new, goes again: check changes nothing.
		defer cgroups.Close()
		if err := checkContainment(cfg, cgroups); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "%s: ok, %d commands\n", cfg.Path, len(cfg.Commands))
	return err
}

// tokenNameRE is the config's rule for token names (auth.tokens[].name).
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// token prints a new random token and the config entry that accepts it:
// the config holds only the token's SHA-256.
func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "client", "name of the token in logs and job records")
	if ok, err := parseFlags(fs, args, stdout); !ok {
		return err
	}
	// The name goes into a YAML line to paste: one the config would reject,
	// or that breaks out of the flow mapping, must not be printed.
	if !tokenNameRE.MatchString(*name) || fs.NArg() > 0 {
		_, _ = fmt.Fprintln(stderr, "execgw token: --name must match [A-Za-z0-9_.-]+, and no other arguments are taken")
		return exitCode(2)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	tok := "egw_" + base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(tok))
	_, err := fmt.Fprintf(stdout, "token: %s\n\nadd to config.yaml under auth.tokens:\n    - {name: %s, sha256: %q, commands: [\"*\"]}\n",
		tok, *name, hex.EncodeToString(sum[:]))
	return err
}
