package handler

import (
	"time"

	"github.com/execgw/execgw/internal/api"
	"github.com/execgw/execgw/internal/jobs"
)

// apiJob is the record as the API shows it: what identifies its process
// group for the crash sweep, and anything else the store keeps for itself,
// stays out.
func apiJob(r jobs.Record, now time.Time) api.Job {
	j := api.Job{
		ID:              r.ID,
		Command:         r.Command,
		Params:          r.Params,
		State:           string(r.State),
		ExitCode:        r.ExitCode,
		Signal:          nonEmpty(r.Signal),
		CancelReason:    nonEmpty(r.CancelReason),
		Limit:           nonEmpty(r.Limit),
		Pid:             nonZero(r.Pid),
		Owner:           nonEmpty(r.Owner),
		Node:            nonEmpty(r.Node),
		CreatedAt:       r.CreatedAt,
		StartedAt:       nonZeroTime(r.StartedAt),
		EndedAt:         nonZeroTime(r.EndedAt),
		StdoutBytes:     r.StdoutBytes,
		StderrBytes:     r.StderrBytes,
		StdoutTruncated: r.StdoutTruncated,
		StderrTruncated: r.StderrTruncated,
		OutputError:     nonEmpty(r.OutputError),
		MemoryPeakBytes: nonZero(r.MemoryPeak),
		CPUTimeMs:       nonZero(r.CPUTimeMs),
	}
	if j.Params == nil {
		j.Params = map[string]string{}
	}
	if !r.StartedAt.IsZero() {
		ms := r.Duration(now).Milliseconds()
		j.DurationMs = &ms
	}
	return j
}

func apiJobs(recs []jobs.Record, now time.Time) []api.Job {
	out := make([]api.Job, len(recs))
	for i, r := range recs {
		out[i] = apiJob(r, now)
	}
	return out
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
