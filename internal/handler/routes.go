// Package handler is execgw's HTTP API: it turns requests into jobs and
// jobs into responses, JSON, raw streams or Server-Sent Events. All routes
// are in this file; errors are mapped in errors.go alone.
package handler

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// Jobs is what the handler needs of the job registry.
type Jobs interface {
	Submit(ctx context.Context, req jobs.Request) (*jobs.Job, error)
	Detach(ctx context.Context, req jobs.Request) (jobs.Record, error)
	Get(ctx context.Context, id string) (jobs.Record, error)
	List(ctx context.Context, f jobs.Filter) ([]jobs.Record, string, error)
	Cancel(ctx context.Context, id, reason string) (jobs.Record, error)
	Delete(ctx context.Context, id string) error
	Copy(ctx context.Context, id string, s jobs.Stream, w io.Writer, follow bool) error
}

// Activity is told when a request begins and ends, for idle exit.
type Activity interface {
	Begin()
	End()
}

// Options are the handler's dependencies.
type Options struct {
	Config   *config.Config
	Jobs     Jobs
	Log      zerolog.Logger
	Metrics  *prometheus.Registry
	Activity Activity    // nil: not counted
	Ready    func() bool // false while draining
	// ListenAddrs are the addresses the gateway listens on (systemd's
	// sockets under activation): Host values it answers to by default.
	ListenAddrs []net.Addr
	// SpoolDir holds request bodies of stdin jobs until their
	// process reads them.
	SpoolDir string
}

type handler struct {
	cfg      *config.Config
	jobs     Jobs
	log      zerolog.Logger
	spoolDir string
	ready    func() bool
	limiter  *rateLimiter // nil: no rate limit (limits.rate: 0)
	docs     *apiDocs     // the OpenAPI documents
	docsErr  error        // why they could not be built; served as a 500
}

// New returns the HTTP handler of the whole API.
func New(opts Options) http.Handler {
	h := &handler{
		cfg:      opts.Config,
		jobs:     opts.Jobs,
		log:      opts.Log,
		spoolDir: opts.SpoolDir,
		ready:    opts.Ready,
		limiter:  newRateLimiter(opts.Config.Limits, opts.Config.Auth.Tokens, time.Now),
	}
	h.docs, h.docsErr = newAPIDocs(opts.Config)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = handleError
	e.Logger.SetOutput(io.Discard) // Echo's own logger is unused; ours is zerolog
	// identify resolves the bearer token on every route, for the log line
	// and the rate limit; authenticate (below) requires one under /v1.
	// Cross-site requests are refused before anything else looks at
	// them, on every route: a page on another site must not even read
	// /metrics through DNS rebinding.
	hosts := hostRules(opts.Config.AllowedHosts, len(opts.Config.Auth.Tokens) > 0, opts.ListenAddrs)
	e.Use(requestLog(opts.Log, opts.Metrics, opts.Activity), recoverPanic, refuseCrossSite(hosts), h.identify, h.limitRate)

	e.GET("/", h.page)
	e.GET("/ui/:file", h.asset)
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{})))

	// Authentication is per route rather than on a group: a group with
	// middleware catches every /v1/* path and turns 405s into 404s.
	auth := h.authenticate
	e.GET("/v1/commands", h.listCommands, auth)
	e.POST("/v1/commands/:name/run", h.run, auth)
	e.GET("/v1/jobs", h.listJobs, auth)
	e.GET("/v1/jobs/:id", h.getJob, auth)
	e.GET("/v1/jobs/:id/stdout", h.jobOutput(jobs.Stdout), auth)
	e.GET("/v1/jobs/:id/stderr", h.jobOutput(jobs.Stderr), auth)
	e.GET("/v1/jobs/:id/events", h.jobEvents, auth)
	e.POST("/v1/jobs/:id/cancel", h.cancelJob, auth)
	e.DELETE("/v1/jobs/:id", h.deleteJob, auth)
	e.GET("/openapi.json", h.openAPI, auth)
	return e
}

func (h *handler) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handler) readyz(c echo.Context) error {
	if h.ready != nil && !h.ready() {
		return newError(codeUnavailable, "draining for shutdown")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
