// Package api is the wire form of execgw's HTTP API: the JSON the gateway
// sends and its client reads. It is the contract's, and changes only with
// the contract: how the gateway stores its records is another form,
// internal/jobstore's, and may change without changing this one.
package api

import "time"

// Job is the job record as the API shows it. Every key is always present,
// unset values null, so that a client can tell "exit code 0" from "no exit
// code"; memory_peak_bytes and cpu_time_ms appear only where per-job
// cgroups measured them.
type Job struct {
	ID      string `json:"id"`
	Command string `json:"command"`
	// Params are the effective values, secret ones as "***".
	Params       map[string]string `json:"params"`
	State        string            `json:"state"`
	ExitCode     *int              `json:"exit_code"`
	Signal       *string           `json:"signal"`
	CancelReason *string           `json:"cancel_reason"`
	Limit        *string           `json:"limit"`
	Pid          *int              `json:"pid"`
	Owner        *string           `json:"owner"`
	// Node is the gateway that ran the job, in a cluster; null standalone.
	Node            *string    `json:"node"`
	CreatedAt       time.Time  `json:"created_at"`
	StartedAt       *time.Time `json:"started_at"`
	EndedAt         *time.Time `json:"ended_at"`
	DurationMs      *int64     `json:"duration_ms"`
	StdoutBytes     int64      `json:"stdout_bytes"`
	StderrBytes     int64      `json:"stderr_bytes"`
	StdoutTruncated bool       `json:"stdout_truncated"`
	StderrTruncated bool       `json:"stderr_truncated"`
	OutputError     *string    `json:"output_error"`
	MemoryPeakBytes *int64     `json:"memory_peak_bytes,omitempty"`
	CPUTimeMs       *int64     `json:"cpu_time_ms,omitempty"`
}

// The states of a job, as Job.State names them.
const (
	Queued      = "queued"
	Running     = "running"
	Succeeded   = "succeeded"
	Failed      = "failed"
	Canceled    = "canceled"
	TimedOut    = "timed_out"
	Interrupted = "interrupted"
)

// JobList is a page of GET /v1/jobs, newest first; Next is the after value
// of the following page, "" on the last.
type JobList struct {
	Jobs []Job  `json:"jobs"`
	Next string `json:"next"`
}

// Error is the body of every error response.
type Error struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: a code of the contract and a message
// naming the offending parameter or limit.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
