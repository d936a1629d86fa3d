package jobs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the registry's Prometheus series.
type metrics struct {
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// queueWait is created to started; cancel is a stop decided to the
	// last process of the tree gone.
	queueWait *prometheus.HistogramVec
	cancel    *prometheus.HistogramVec
	output    *prometheus.CounterVec
}

// cancelTimeout is the reason label of execgw_cancel_seconds for a job
// that timed out: its record has no cancel reason, but its tree is stopped
// like a canceled one's.
const cancelTimeout = "timeout"

// cancelCutOff is the reason label of a job a cluster node killed because
// it was cut off from Redis for longer than the node timeout.
const cancelCutOff = "cut_off"

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execgw_jobs_started_total",
			Help: "Processes started, by command.",
		}, []string{"command"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execgw_jobs_finished_total",
			Help: "Jobs ended, by command and final state.",
		}, []string{"command", "state"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "execgw_job_duration_seconds",
			Help:    "How long jobs ran, by command.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"command"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "execgw_job_queue_wait_seconds",
			Help:    "How long jobs waited from creation to the start of their process, by command.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"command"}),
		cancel: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "execgw_cancel_seconds",
			Help: "From the decision to stop a running job to the last process of its tree gone, " +
				"by reason (client_disconnected, user, shutdown, timeout).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"reason"}),
		output: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execgw_output_bytes_total",
			Help: "Bytes jobs wrote, stored or not, by command and stream.",
		}, []string{"command", "stream"}),
	}
	if reg != nil {
		reg.MustRegister(m.started, m.finished, m.duration, m.queueWait, m.cancel, m.output)
	}
	return m
}

// registerGauges exports the numbers of running and of waiting jobs, read
// from the registry when scraped so that they can never drift from the
// truth.
func registerGauges(reg prometheus.Registerer, running, queued func() float64) {
	if reg == nil {
		return
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "execgw_jobs_running",
		Help: "Jobs holding a slot of this gateway (running processes).",
	}, running), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "execgw_jobs_queued",
		Help: "Jobs waiting for a slot: this gateway's, and in a cluster those in the cluster's queue " +
			"(the same on every gateway).",
	}, queued))
}

// startedJob counts a started process and its wait in the queue.
func (m *metrics) startedJob(rec Record) {
	m.started.WithLabelValues(rec.Command).Inc()
	m.queueWait.WithLabelValues(rec.Command).Observe(rec.StartedAt.Sub(rec.CreatedAt).Seconds())
}

func (m *metrics) ended(rec Record) {
	m.finished.WithLabelValues(rec.Command, string(rec.State)).Inc()
	if !rec.StartedAt.IsZero() {
		m.duration.WithLabelValues(rec.Command).Observe(rec.EndedAt.Sub(rec.StartedAt).Seconds())
	}
}
