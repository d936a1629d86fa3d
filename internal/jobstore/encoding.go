package jobstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/execgw/execgw/internal/jobs"
)

// storedRecord is how a record is stored, as JSON (in bbolt, and in the
// cluster's Redis): the record's every field, the crash sweep's included.
// Its keys are those of the records already stored, which must still
// read: a new field is a new key, never a renamed one. It is not the API's
// form (internal/api), though it began as the same.
type storedRecord struct {
	ID              string            `json:"id"`
	Command         string            `json:"command"`
	Params          map[string]string `json:"params"`
	State           jobs.State        `json:"state"`
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
	Node            string            `json:"node,omitempty"`
	CreatedAt       time.Time         `json:"created_at"`
	StartedAt       *time.Time        `json:"started_at"`
	EndedAt         *time.Time        `json:"ended_at"`
	StdoutBytes     int64             `json:"stdout_bytes"`
	StderrBytes     int64             `json:"stderr_bytes"`
	StdoutTruncated bool              `json:"stdout_truncated"`
	StderrTruncated bool              `json:"stderr_truncated"`
	OutputError     *string           `json:"output_error"`
	MemoryPeak      *int64            `json:"memory_peak_bytes,omitempty"`
	CPUTimeMs       *int64            `json:"cpu_time_ms,omitempty"`
}

// EncodeRecord is the stored form of r.
func EncodeRecord(r jobs.Record) ([]byte, error) {
	w := storedRecord{
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
		Sid:             sessionOf(r),
		BootID:          r.BootID,
		Owner:           nonEmpty(r.Owner),
		Node:            r.Node,
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
	return json.Marshal(w)
}

// DecodeRecord reads what EncodeRecord wrote.
func DecodeRecord(b []byte) (jobs.Record, error) {
	var w storedRecord
	if err := json.Unmarshal(b, &w); err != nil {
		return jobs.Record{}, fmt.Errorf("decode job record: %w", err)
	}
	return jobs.Record{
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
		Sid:             sessionOrUnknown(w.Pgid, w.Sid),
		BootID:          w.BootID,
		Owner:           deref(w.Owner),
		Node:            w.Node,
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
	}, nil
}

// sessionOf is the stored sid of a started job: 0 is a session like any
// other (one whose leader is outside the PID namespace), so it is stored
// whenever the group is.
func sessionOf(r jobs.Record) *int {
	if r.Pgid == 0 {
		return nil
	}
	return &r.Sid
}

// sessionOrUnknown is -1 for a group stored without its session (by an
// earlier version), which the crash sweep then leaves alone.
func sessionOrUnknown(pgid, sid *int) int {
	if pgid != nil && sid == nil {
		return -1
	}
	return deref(sid)
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
