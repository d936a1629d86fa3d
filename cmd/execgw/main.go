// Command execgw is an HTTP gateway that runs operator-configured commands
// for HTTP clients and kills them the moment nobody wants the result. It is
// also the command-line client of such a gateway.
//
//	execgw [serve] [--config config.yaml]   run the gateway
//	execgw check --config FILE              validate a configuration
//	execgw token [--name NAME]              make a new API token
//	execgw run|jobs|logs|cancel ...         talk to a gateway
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/execgw/execgw/internal/runner"
)

func main() {
	// A job with rlimits or a umask starts as this binary re-executed: it
	// applies them in the child alone, then execs the command.
	if len(os.Args) > 1 && os.Args[1] == runner.ShimArg {
		err := runner.RunShim(os.Args[2:])
		fmt.Fprintln(os.Stderr, "execgw:", err)
		os.Exit(127)
	}
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var exit exitCode
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case err != nil:
		fmt.Fprintln(os.Stderr, "execgw:", err)
		os.Exit(1)
	}
}

// exitCode is an error that only sets the process's exit status: the
// client mirrors the remote command's.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `usage:
  execgw [serve] [--config FILE]     run the gateway (default ./config.yaml)
  execgw check --config FILE         validate a configuration and exit;
                                     --connect: reach the cluster's Redis too
  execgw token [--name NAME]         print a new token and its config line
  execgw run [--server URL] [--token T] [--detach] NAME [key=value...]
  execgw jobs [--server URL] [--token T] [--state S] [--command C]
  execgw logs [--server URL] [--token T] [-f] ID
  execgw cancel [--server URL] [--token T] ID
`

// run is main without the process: arguments, environment and output are
// passed in, so tests can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	sub := "serve"
	if len(args) > 0 && isHelp(args[0]) {
		sub = "help"
	} else if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "serve":
		return serve(ctx, args, stdout, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "run", "jobs", "logs", "cancel":
		return client(ctx, sub, args, getenv, stdout, stderr)
	case "help":
		_, err := io.WriteString(stdout, usage)
		return err
	}
	_, _ = io.WriteString(stderr, usage)
	return exitCode(2)
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// parseFlags parses a subcommand's flags. Help asked for is no error: the
// flags go to stdout and ok is false with a nil error, so the caller
// stops and the exit status is 0. A bad flag is reported on fs's output
// (stderr) and exits 2.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (ok bool, err error) {
	stderr := fs.Output()
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return false, nil
	case err != nil:
		fmt.Fprintf(stderr, "execgw %s: %v\n", fs.Name(), err)
		fs.Usage()
		return false, exitCode(2)
	}
	return true, nil
}
