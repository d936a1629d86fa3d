package jobs

import (
	"encoding/json"
	"time"
)

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
	// the job's processes inherit (field 6), BootID the kernel's boot id.
	Pgid      int
	ProcStart uint64
	Sid       int
	BootID    string
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

// wireRecord is the JSON form of a Record: every key is always present, and
// unset values are null rather than zero, so clients can tell "exit code 0"
// from "no exit code".
type wireRecord struct {
	ID              string            `json:"id"`
	Command         string            `json:"command"`
	Params          map[string]string `json:"params"`
	State           State             `json:"state"`
	ExitCode        *int              `json:"exit_code"`
	Signal          *string           `json:"signal"`
	CancelReason    *string           `json:"cancel_reason"`
	Limit           *string           `json:"limit"`
	Pid             *int              `json:"pid"`
	Pgid            *int              `json:"pgid,omitempty"`
	ProcStart       uint64            `json:"proc_start,omitempty"`
	Sid             *int              `json:"sid,omitempty"`
	BootID          string            `json:"boot_id,omitempty"`
	Owner           *string           `json:"owner"`
	CreatedAt       time.Time         `json:"created_at"`
	StartedAt       *time.Time        `json:"started_at"`
	EndedAt         *time.Time        `json:"ended_at"`
	DurationMs      *int64            `json:"duration_ms"`
	StdoutBytes     int64             `json:"stdout_bytes"`
	StderrBytes     int64             `json:"stderr_bytes"`
	StdoutTruncated bool              `json:"stdout_truncated"`
	StderrTruncated bool              `json:"stderr_truncated"`
	OutputError     *string           `json:"output_error"`
	MemoryPeak      *int64            `json:"memory_peak_bytes,omitempty"`
	CPUTimeMs       *int64            `json:"cpu_time_ms,omitempty"`
}

// MarshalJSON writes the record in the contract's form.
func (r Record) MarshalJSON() ([]byte, error) {
	w := wireRecord{
		ID:              r.ID,
		Command:         r.Command,
		Params:          r.Params,
		State:           r.State,
		ExitCode:        r.ExitCode,
		Signal:          nonEmpty(r.Signal),
		CancelReason:    nonEmpty(r.CancelReason),
		Limit:           nonEmpty(r.Limit),
		Pid:             nonZero(r.Pid),
		Pgid:            nonZero(r.Pgid),
		ProcStart:       r.ProcStart,
		Sid:             nonZero(r.Sid),
		BootID:          r.BootID,
		Owner:           nonEmpty(r.Owner),
		CreatedAt:       r.CreatedAt,
		StartedAt:       nonZeroTime(r.StartedAt),
		EndedAt:         nonZeroTime(r.EndedAt),
		StdoutBytes:     r.StdoutBytes,
		StderrBytes:     r.StderrBytes,
		StdoutTruncated: r.StdoutTruncated,
		StderrTruncated: r.StderrTruncated,
		OutputError:     nonEmpty(r.OutputError),
		MemoryPeak:      nonZero(r.MemoryPeak),
		CPUTimeMs:       nonZero(r.CPUTimeMs),
	}
	if w.Params == nil {
		w.Params = map[string]string{}
	}
	if !r.StartedAt.IsZero() {
		ms := r.Duration(time.Now()).Milliseconds()
		w.DurationMs = &ms
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w wireRecord
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Record{
		ID:              w.ID,
		Command:         w.Command,
		Params:          w.Params,
		State:           w.State,
		ExitCode:        w.ExitCode,
		Signal:          deref(w.Signal),
		CancelReason:    deref(w.CancelReason),
		Limit:           deref(w.Limit),
		Pid:             deref(w.Pid),
		Pgid:            deref(w.Pgid),
		ProcStart:       w.ProcStart,
		Sid:             deref(w.Sid),
		BootID:          w.BootID,
		Owner:           deref(w.Owner),
		CreatedAt:       w.CreatedAt,
		StartedAt:       deref(w.StartedAt),
		EndedAt:         deref(w.EndedAt),
		StdoutBytes:     w.StdoutBytes,
		StderrBytes:     w.StderrBytes,
		StdoutTruncated: w.StdoutTruncated,
		StderrTruncated: w.StderrTruncated,
		OutputError:     deref(w.OutputError),
		MemoryPeak:      deref(w.MemoryPeak),
		CPUTimeMs:       deref(w.CPUTimeMs),
	}
	return nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonZero[T int | int64](n T) *T {
	if n == 0 {
		return nil
	}
	return &n
}

func nonZeroTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
