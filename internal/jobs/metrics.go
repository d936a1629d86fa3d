package jobs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the registry's Prometheus series.
type metrics struct {
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
	duration *prometheus.HistogramVec
	queued   prometheus.Gauge
	running  prometheus.GaugeFunc
}

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
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "execgw_jobs_queued",
			Help: "Jobs waiting for a slot.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.started, m.finished, m.duration, m.queued)
	}
	return m
}

// registerRunning exports the number of running processes, read from the
// registry when scraped so that it can never drift from the truth.
func (m *metrics) registerRunning(reg prometheus.Registerer, running func() float64) {
	if reg == nil {
		return
	}
	m.running = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "execgw_jobs_running",
		Help: "Jobs holding a slot (running processes).",
	}, running)
	reg.MustRegister(m.running)
}

func (m *metrics) ended(rec Record) {
	m.finished.WithLabelValues(rec.Command, string(rec.State)).Inc()
	if !rec.StartedAt.IsZero() {
		m.duration.WithLabelValues(rec.Command).Observe(rec.EndedAt.Sub(rec.StartedAt).Seconds())
	}
}
