// Package logkey names the fields of execgw's log lines, so that every
// component says job_id and never jobId in one place and job in another.
// Operators build queries and alerts on these names: they are part of the
// product.
package logkey

// Fields of job events.
const (
	JobID        = "job_id"
	Command      = "command"
	Params       = "params"
	Pid          = "pid"
	Pgid         = "pgid"
	State        = "state"
	ExitCode     = "exit_code"
	Signal       = "signal"
	CancelReason = "cancel_reason"
	Limit        = "limit"
	OutputError  = "output_error"
	DurationMs   = "duration_ms"
	StdoutBytes  = "stdout_bytes"
	StderrBytes  = "stderr_bytes"
	KillGraceMs  = "kill_grace_ms"
	MemoryPeak   = "memory_peak_bytes"
	CPUTimeMs    = "cpu_time_ms"
	Stream       = "stream"
	Cause        = "cause"
)

// Fields of request lines.
const (
	RequestID = "request_id"
	Method    = "method"
	Path      = "path"
	Status    = "status"
	LatencyMs = "latency_ms"
	Remote    = "remote"
	Token     = "token"
)

// Fields of a cluster node's lines: every line carries Node, its own name;
// Peer names another node a line is about.
const (
	Node = "node"
	Peer = "peer"
)

// Component is the field that says which part of execgw wrote a line.
const Component = "component"
