package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/gatewaytest"
)

// Cancel latency (issue 2): a bound run of sh -c 'sleep 300 | cat'; the
// client closes its connection; the time until the last process of the
// job's process group has exited. Beside it, the same tree started and
// SIGTERMed by the benchmark itself: the floor no gateway can beat.

func benchCancel(ctx context.Context, r *report, g *gateway, runs int) error {
	var viaGateway, direct durations
	var ids []string
	client := newClient(1, nil)
	defer client.CloseIdleConnections()
	for i := range runs {
		// Interleaved, so that both see the same machine.
		d, id, err := cancelThroughGateway(ctx, g, client)
		if err != nil {
			return fmt.Errorf("cancel run %d: %w", i, err)
		}
		viaGateway = append(viaGateway, d)
		ids = append(ids, id)
		if d, err = cancelDirect(); err != nil {
			return fmt.Errorf("direct cancel run %d: %w", i, err)
		}
		direct = append(direct, d)
	}
	// Every job must say why it ended.
	bad := 0
	var example string
	for _, id := range ids {
		rec, err := waitEnded(ctx, g, id)
		if err != nil {
			return err
		}
		if rec.State != "canceled" || rec.CancelReason != "client_disconnected" {
			bad++
			example = fmt.Sprintf("%s: %s/%s", id, rec.State, rec.CancelReason)
		}
	}

	r.section("1. Cancel latency (issue 2)")
	r.printf("A bound JSON run of `sh -c 'sleep 300 | cat'` (3 processes in the job's group); the tree is complete " +
		"(sh, sleep and cat seen in /proc) when the client closes its connection (its request context canceled). " +
		"Measured from that instant until the last process of the group has exited (a pidfd per process, polled). " +
		"Beside it, interleaved run by run: the same tree started by the benchmark in its own group and sent SIGTERM " +
		"with kill(2) directly, the floor of any implementation.\n\n")
	r.table([]string{"", "runs", "p50", "p90", "p99", "max"}, [][]string{
		{"client close → group gone, through the gateway", fmt.Sprint(len(viaGateway)), ms(viaGateway.pct(50)), ms(viaGateway.pct(90)), ms(viaGateway.pct(99)), ms(viaGateway.max())},
		{"kill(-pgid, SIGTERM) → group gone, direct", fmt.Sprint(len(direct)), ms(direct.pct(50)), ms(direct.pct(90)), ms(direct.pct(99)), ms(direct.max())},
	})
	r.printf("The gateway adds %s at p50 and %s at p99 to the direct kill. Job records saying `canceled`/`client_disconnected`: %d of %d",
		ms(viaGateway.pct(50)-direct.pct(50)), ms(viaGateway.pct(99)-direct.pct(99)), len(ids)-bad, len(ids))
	if bad > 0 {
		r.printf(" (e.g. %s)", example)
	}
	r.printf(".\n\n")
	r.target(target{issue: "2", figure: "cancel latency p99", measured: ms(viaGateway.pct(99)) + " (direct kill: " + ms(direct.pct(99)) + ")",
		goal: "p99 < 50 ms", met: viaGateway.pct(99) < 50*time.Millisecond && bad == 0})
	return nil
}

// cancelThroughGateway runs the tree bound, waits until it is complete,
// closes the client's connection and times the group's end.
func cancelThroughGateway(ctx context.Context, g *gateway, client *http.Client) (time.Duration, string, error) {
	if err := g.logs.skipToEnd(); err != nil {
		return 0, "", err
	}
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, g.url+"/v1/commands/tree/run", nil)
	if err != nil {
		return 0, "", err
	}
	answered := make(chan error, 1)
	go func() { // exits when the request ends: cancel, below, ends it
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the run answered %s before the client left", resp.Status)
		} else if errors.Is(err, context.Canceled) {
			err = nil
		}
		answered <- err
	}()
	line, err := g.logs.waitFor(ctx, 10*time.Second, `"message":"job started"`, func(l *logLine) bool { return l.Command == "tree" })
	if err != nil {
		return 0, "", err
	}
	members, err := waitTree(line.Pid, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	fds := openPidfds(members)
	defer closeAll(fds)

	start := time.Now()
	cancel() // the transport closes the connection
	gone, err := waitGroupGone(line.Pid, fds, 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	if err := <-answered; err != nil {
		return 0, "", err
	}
	return gone.Sub(start), line.JobID, nil
}

// cancelDirect starts the same tree, waits until it is complete, and
// times kill(-pgid, SIGTERM) until the group is gone.
func cancelDirect() (time.Duration, error) {
	cmd := exec.Command("sh", "-c", "sleep 300 | cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pgid := cmd.Process.Pid
	defer func() {
		_ = unix.Kill(-pgid, unix.SIGKILL) // nothing should be left
		_ = cmd.Wait()
	}()
	members, err := waitTree(pgid, 5*time.Second)
	if err != nil {
		return 0, err
	}
	fds := openPidfds(members)
	defer closeAll(fds)
	start := time.Now()
	if err := unix.Kill(-pgid, unix.SIGTERM); err != nil {
		return 0, err
	}
	gone, err := waitGroupGone(pgid, fds, 10*time.Second)
	if err != nil {
		return 0, err
	}
	return gone.Sub(start), nil
}

// waitTree waits until group pgid holds its sleep and its cat, and returns
// its live members.
func waitTree(pgid int, timeout time.Duration) ([]gatewaytest.Proc, error) {
	deadline := time.Now().Add(timeout)
	for {
		members := gatewaytest.GroupMembers(pgid)
		var sleep, cat bool
		for _, m := range members {
			sleep = sleep || m.Comm == "sleep"
			cat = cat || m.Comm == "cat"
		}
		if sleep && cat {
			return members, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("process group %d incomplete after %v: %v", pgid, timeout, members)
		}
		time.Sleep(time.Millisecond)
	}
}

// openPidfds opens a pidfd for each process; one already gone gets none.
func openPidfds(members []gatewaytest.Proc) []int {
	var fds []int
	for _, m := range members {
		fd, err := unix.PidfdOpen(m.Pid, 0)
		if err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// waitGroupGone waits until every pidfd says its process exited, then
// checks /proc for any other live member of the group (polling until there
// is none), and returns when the last one was seen gone.
func waitGroupGone(pgid int, fds []int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	pending := make([]unix.PollFd, 0, len(fds))
	for _, fd := range fds {
		pending = append(pending, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	last := time.Now()
	for len(pending) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return time.Time{}, fmt.Errorf("process group %d: %d processes still running after %v", pgid, len(pending), timeout)
		}
		n, err := unix.Poll(pending, int(left/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		if n == 0 {
			continue
		}
		last = time.Now()
		rest := pending[:0]
		for _, p := range pending {
			if p.Revents == 0 {
				rest = append(rest, p)
			}
		}
		pending = rest
	}
	for {
		members := gatewaytest.GroupMembers(pgid)
		if len(members) == 0 {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("process group %d: still running after %v: %v", pgid, timeout, members)
		}
		time.Sleep(200 * time.Microsecond)
		last = time.Now()
	}
}

// jobRecord holds the fields of a job record the benchmark checks.
type jobRecord struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	CancelReason string `json:"cancel_reason"`
}

// waitEnded polls a job until its record is in an ended state.
func waitEnded(ctx context.Context, g *gateway, id string) (jobRecord, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rec jobRecord
		if err := g.getJSON(ctx, "/v1/jobs/"+id, &rec); err != nil {
			return rec, fmt.Errorf("job %s: %w", id, err)
		}
		if rec.State != "queued" && rec.State != "running" {
			return rec, nil
		}
		if time.Now().After(deadline) {
			return rec, fmt.Errorf("job %s still %s after 10 s", id, rec.State)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return rec, err
		}
	}
}
