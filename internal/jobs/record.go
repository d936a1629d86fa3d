package jobs

import "time"

// State is where a job is in its life. Queued and Running are the only
// states a job leaves; every other state is final.
type State string

// The states of a job, as the contract names them.
const (
	Queued      State = "queued"
	Running     State = "running"
	Succeeded   State = "succeeded"
	Failed      State = "failed"
	Canceled    State = "canceled"
	TimedOut    State = "timed_out"
	Interrupted State = "interrupted"
)

// Ended reports whether s is a final state.
func (s State) Ended() bool { return s != Queued && s != Running }

// Valid reports whether s is one of the contract's states.
func (s State) Valid() bool {
	switch s {
	case Queued, Running, Succeeded, Failed, Canceled, TimedOut, Interrupted:
		return true
	}
	return false
}

// Cancel reasons recorded with State Canceled.
const (
	ReasonClientDisconnected = "client_disconnected"
	ReasonUser               = "user"
	ReasonShutdown           = "shutdown"
)

// Record is the durable description of one job. The zero values of the
// optional fields mean "not set" and are shown as JSON null.
type Record struct {
	ID      string
	Command string
	// Params are the effective parameter values, defaults included, with
	// the values of secret parameters already replaced by "***".
	Params map[string]string
	State  State
	// ExitCode is nil unless the process exited by itself.
	ExitCode     *int
	Signal       string // "SIGKILL" when a signal ended the process
	CancelReason string
	Limit        string // the limit that ended the job: "max_body", "memory_max", ...
	Pid          int
	// Pgid, ProcStart, Sid and BootID identify the process group for the
	// recovery sweep after a crash: ProcStart is the leader's start time
	// in clock ticks since boot (/proc/PID/stat field 22), Sid the session
	// the job's processes inherit (field 6; -1 in a record from a version
	// that did not store it), BootID the kernel's boot id.
	Pgid      int
	ProcStart uint64
	Sid       int
	BootID    string
	// Node is the cluster gateway that runs or ran the job; "" standalone,
	// and while a cluster job waits in the queue.
	Node string
	// Owner is the name of the token that created the job ("" when anonymous).
	Owner           string
	CreatedAt       time.Time
	StartedAt       time.Time
	EndedAt         time.Time
	StdoutBytes     int64
	StderrBytes     int64
	StdoutTruncated bool
	StderrTruncated bool
	// OutputError says why storing the output failed ("stdout: no space
	// left on device"), the first failure of either stream; "" when all
	// was stored or the cut was output_limit.
	OutputError string
	// MemoryPeak (bytes) and CPUTimeMs are known when the job had a
	// cgroup with the accounting; zero otherwise.
	MemoryPeak int64
	CPUTimeMs  int64
}

// Duration is how long the job ran, or has been running at now.
func (r *Record) Duration(now time.Time) time.Duration {
	switch {
	case r.StartedAt.IsZero():
		return 0
	case r.EndedAt.IsZero():
		return now.Sub(r.StartedAt)
	default:
		return r.EndedAt.Sub(r.StartedAt)
	}
}
