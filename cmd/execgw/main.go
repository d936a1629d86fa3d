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
  execgw check --config FILE         validate a configuration and exit
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
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "serve":
		return serve(ctx, args, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "run", "jobs", "logs", "cancel":
		return client(ctx, sub, args, getenv, stdout, stderr)
	case "help", "-h", "--help":
		_, err := io.WriteString(stdout, usage)
		return err
	}
	_, _ = io.WriteString(stderr, usage)
	return exitCode(2)
}
