package jobs

import (
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/runner"
)

// TestDecideEnd covers every branch of the end-state decision, and the
// order between them where two apply at once.
func TestDecideEnd(t *testing.T) {
	exited := func(code int) runner.Result { return runner.Result{ExitCode: code} }
	signaled := runner.Result{ExitCode: -1, Signal: syscall.SIGTERM}
	canceled := runner.Result{ExitCode: -1, Signal: syscall.SIGTERM, Cause: errors.New("user")}
	killedByStdin := runner.Result{ExitCode: -1, Signal: syscall.SIGTERM, Cause: &runner.StdinError{Err: io.ErrUnexpectedEOF}}
	user := &stop{state: Canceled, reason: ReasonUser}
	timedOut := &stop{state: TimedOut}
	oom := cgroup.Stats{OOMKilled: true}
	pids := cgroup.Stats{PidsMaxHit: true}

	tests := []struct {
		name     string
		why      *stop
		started  bool
		res      runner.Result
		stats    cgroup.Stats
		stdinErr error
		want     ending
	}{
		{"exit 0", nil, true, exited(0), cgroup.Stats{}, nil, ending{state: Succeeded}},
		{"exit 1", nil, true, exited(1), cgroup.Stats{}, nil, ending{state: Failed}},
		{"killed by a signal nobody sent", nil, true, signaled, cgroup.Stats{}, nil, ending{state: Failed}},
		{"wait error", nil, true, runner.Result{Err: errors.New("wait")}, cgroup.Stats{}, nil, ending{state: Failed}},
		{"never started", nil, false, runner.Result{}, cgroup.Stats{}, nil, ending{state: Failed}},
		{"canceled while queued", user, false, runner.Result{}, cgroup.Stats{}, nil, ending{state: Canceled, cancelReason: ReasonUser}},
		{"canceled while running", user, true, canceled, cgroup.Stats{}, nil, ending{state: Canceled, cancelReason: ReasonUser}},
		{"timed out", timedOut, true, canceled, cgroup.Stats{}, nil, ending{state: TimedOut}},
		{"stop after the exit changes nothing", user, true, exited(0), cgroup.Stats{}, nil, ending{state: Succeeded}},
		{"stop after a failed exit changes nothing", user, true, exited(3), cgroup.Stats{}, nil, ending{state: Failed}},
		{"stop wins over an OOM kill it caused", user, true, canceled, oom, nil, ending{state: Canceled, cancelReason: ReasonUser}},
		{"input over max_body", nil, true, killedByStdin, cgroup.Stats{}, ErrInputTooLarge, ending{state: Failed, limit: "max_body"}},
		{"input over max_body, wrapped", nil, true, killedByStdin, cgroup.Stats{}, errors.Join(errors.New("spool"), ErrInputTooLarge), ending{state: Failed, limit: "max_body"}},
		{"client left during the upload", nil, true, killedByStdin, cgroup.Stats{}, io.ErrUnexpectedEOF, ending{state: Canceled, cancelReason: ReasonClientDisconnected}},
		{"stdin error wins over OOM", nil, true, killedByStdin, oom, io.ErrUnexpectedEOF, ending{state: Canceled, cancelReason: ReasonClientDisconnected}},
		{"OOM killed", nil, true, runner.Result{ExitCode: -1, Signal: syscall.SIGKILL}, oom, nil, ending{state: Failed, limit: "memory_max"}},
		{"OOM kill of a child, exit 0 anyway", nil, true, exited(0), oom, nil, ending{state: Failed, limit: "memory_max"}},
		{"pids_max hit and failed", nil, true, exited(1), pids, nil, ending{state: Failed, limit: "pids_max"}},
		{"pids_max hit but succeeded", nil, true, exited(0), pids, nil, ending{state: Succeeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decideEnd(tt.why, tt.started, tt.res, tt.stats, tt.stdinErr); got != tt.want {
				t.Errorf("decideEnd = %+v, want %+v", got, tt.want)
			}
		})
	}
}
