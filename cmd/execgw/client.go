package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	// Imported under another name: the package block has func client.
	"github.com/execgw/execgw/internal/api"
	apiclient "github.com/execgw/execgw/internal/client"
)

const defaultServer = "http://127.0.0.1:8080"

// clientUsage is the synopsis of each client subcommand.
var clientUsage = map[string]string{
	"run":    "execgw run [--server URL] [--token T] [--detach] NAME [key=value...]",
	"jobs":   "execgw jobs [--server URL] [--token T] [--state S] [--command C] [--limit N] [--after ID]",
	"logs":   "execgw logs [--server URL] [--token T] [-f] ID",
	"cancel": "execgw cancel [--server URL] [--token T] ID",
}

// client runs the subcommands that talk to a gateway: run, jobs, logs and
// cancel. A run's exit status is its remote command's; Ctrl-C ends any of
// them with 130, and a bound run's remote process with it.
func client(ctx context.Context, sub string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n", clientUsage[sub])
		fs.PrintDefaults()
	}
	// The defaults from the environment are applied after parsing, so
	// that -h never prints the token.
	server := fs.String("server", "", "gateway `URL` (default $EXECGW_SERVER, then "+defaultServer+")")
	token := fs.String("token", "", "API token `T` (default $EXECGW_TOKEN)")
	var (
		detach                bool
		state, command, after string
		limit                 int
		follow                bool
	)
	switch sub {
	case "run":
		fs.BoolVar(&detach, "detach", false, "start a detached job and print its id")
	case "jobs":
		fs.StringVar(&state, "state", "", "only jobs in state `S` (queued, running, succeeded, failed, canceled, timed_out, interrupted)")
		fs.StringVar(&command, "command", "", "only jobs of command `C`")
		fs.IntVar(&limit, "limit", 0, "at most `N` jobs (default: the gateway's page size)")
		fs.StringVar(&after, "after", "", "the page after job `ID`, as printed at the end of the previous one")
	case "logs":
		fs.BoolVar(&follow, "f", false, "follow: go on printing output until the job ends")
		fs.BoolVar(&follow, "follow", false, "same as -f")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitCode(2)
	}
	usageError := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "execgw %s: %s\n", sub, fmt.Sprintf(format, a...))
		fs.Usage()
		return exitCode(2)
	}

	if *server == "" {
		*server = getenv("EXECGW_SERVER")
	}
	if *server == "" {
		*server = defaultServer
	}
	if u, err := url.Parse(*server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError("--server %q: want http://HOST:PORT or https://HOST:PORT", *server)
	}
	if *token == "" {
		*token = getenv("EXECGW_TOKEN")
	}

	var call func(ctx context.Context, c *apiclient.Client) error
	switch sub {
	case "run":
		if fs.NArg() < 1 {
			return usageError("missing command name")
		}
		name := fs.Arg(0)
		params := make(map[string]string, fs.NArg()-1)
		for _, arg := range fs.Args()[1:] {
			key, value, ok := strings.Cut(arg, "=")
			if !ok || key == "" {
				return usageError("parameter %q is not key=value", arg)
			}
			if _, dup := params[key]; dup {
				return usageError("parameter %q is given more than once", key)
			}
			params[key] = value
		}
		call = func(ctx context.Context, c *apiclient.Client) error {
			return clientRun(ctx, c, name, params, detach, stdout, stderr)
		}
	case "jobs":
		if fs.NArg() > 0 {
			return usageError("unexpected argument %q", fs.Arg(0))
		}
		if limit < 0 {
			return usageError("--limit must be positive")
		}
		filter := url.Values{}
		for key, v := range map[string]string{"state": state, "command": command, "after": after} {
			if v != "" {
				filter.Set(key, v)
			}
		}
		if limit > 0 {
			filter.Set("limit", strconv.Itoa(limit))
		}
		call = func(ctx context.Context, c *apiclient.Client) error {
			return clientJobs(ctx, c, filter, stdout, stderr)
		}
	case "logs", "cancel":
		if fs.NArg() != 1 {
			return usageError("want exactly one job id")
		}
		id := fs.Arg(0)
		call = func(ctx context.Context, c *apiclient.Client) error {
			if sub == "logs" {
				return c.Logs(ctx, id, follow, stdout)
			}
			rec, err := c.Cancel(ctx, id)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, rec.State)
			return err
		}
	default:
		return usageError("unknown subcommand")
	}

	// Ctrl-C cancels the request: its connection closes, and for a bound
	// run the gateway kills the remote process.
	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	c := apiclient.New(*server, *token)
	defer c.Close()
	err := call(sigCtx, c)
	if err != nil && sigCtx.Err() != nil && ctx.Err() == nil {
		return exitCode(130)
	}
	return err
}

// clientRun runs a command on the gateway: bound, with its output on
// stdout and stderr and its exit status as the result, or detached,
// printing the job id.
func clientRun(ctx context.Context, c *apiclient.Client, name string, params map[string]string, detach bool, stdout, stderr io.Writer) error {
	if detach {
		rec, err := c.Run(ctx, name, params, true, nil, nil)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, rec.ID)
		return err
	}
	// The command's output, byte for byte: a failed write (a closed pipe)
	// ends the run, and so the remote process.
	rec, err := c.Run(ctx, name, params, false, stdout, stderr)
	if err != nil {
		return err
	}
	if rec.State != api.Succeeded && (rec.State != api.Failed || rec.ExitCode == nil) {
		// Killed, timed out, canceled by someone else, never started:
		// the exit status alone would not say which.
		fmt.Fprintf(stderr, "execgw: job %s %s%s\n", rec.ID, rec.State, endDetails(rec))
	}
	return remoteExit(rec)
}

// remoteExit is the exit status that mirrors how a job ended: its
// process's exit code, or 128 + the number of the signal that killed it,
// as a shell reports it; 1 when neither is known. A job that did not
// succeed is never 0, even if its process exited 0 (on SIGTERM, say).
func remoteExit(rec api.Job) error {
	n := 1
	switch {
	case rec.ExitCode != nil:
		n = *rec.ExitCode
	case rec.Signal != nil:
		if sig := unix.SignalNum(*rec.Signal); sig != 0 {
			n = 128 + int(sig)
		}
	}
	if n == 0 && rec.State != api.Succeeded {
		n = 1
	}
	if n == 0 {
		return nil
	}
	return exitCode(n)
}

// endDetails says why a job ended, as " (signal SIGKILL, user)".
func endDetails(rec api.Job) string {
	var parts []string
	if rec.Signal != nil {
		parts = append(parts, "signal "+*rec.Signal)
	}
	if rec.CancelReason != nil {
		parts = append(parts, *rec.CancelReason)
	}
	if rec.Limit != nil {
		parts = append(parts, "limit "+*rec.Limit)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// clientJobs prints one page of jobs as a table, and on stderr how to ask
// for the next.
func clientJobs(ctx context.Context, c *apiclient.Client, filter url.Values, stdout, stderr io.Writer) error {
	list, next, err := c.Jobs(ctx, filter)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCOMMAND\tSTATE\tEXIT\tCREATED")
	for _, rec := range list {
		exit := "-"
		switch {
		case rec.ExitCode != nil:
			exit = strconv.Itoa(*rec.ExitCode)
		case rec.Signal != nil:
			exit = *rec.Signal
		}
		created := "-"
		if !rec.CreatedAt.IsZero() {
			created = rec.CreatedAt.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rec.ID, rec.Command, rec.State, exit, created)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(stderr, "more: add --after %s\n", next)
	}
	return nil
}
