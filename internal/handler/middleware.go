package handler

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/logkey"
)

const headerRequestID = "X-Request-ID"

// An inbound request id is trusted only when it cannot forge log lines.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// tokenNameKey is where the auth middleware leaves the token's name for
// the request log line.
const tokenNameKey = "execgw.token"

// requestLog gives each request an id and a logger in its context, counts
// it as activity, and writes one line when it ends.
func requestLog(base zerolog.Logger, reg prometheus.Registerer, activity Activity) echo.MiddlewareFunc {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "execgw_http_requests_total",
		Help: "HTTP requests, by status code, method and route pattern.",
	}, []string{"code", "method", "route"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "execgw_http_request_duration_seconds",
		Help:    "HTTP request latency, by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
	}, []string{"route"})
	if reg != nil {
		reg.MustRegister(requests, latency)
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if activity != nil {
				activity.Begin()
				defer activity.End()
			}
			start := time.Now()
			req := c.Request()
			id := req.Header.Get(headerRequestID)
			if !validRequestID.MatchString(id) {
				id = ulid.Make().String()
			}
			c.Response().Header().Set(headerRequestID, id)
			log := base.With().Str(logkey.RequestID, id).Logger()
			c.SetRequest(req.WithContext(log.WithContext(req.Context())))

			err := next(c)
			if err != nil {
				c.Error(err) // writes the error response now, so the line below has its status
			}

			status := c.Response().Status
			if req.Context().Err() != nil && !c.Response().Committed {
				status = 499 // the client went away before any answer
			}
			route := c.Path()
			if route == "" {
				route = unmatchedRoute // never the raw path: labels stay bounded
			}
			requests.WithLabelValues(strconv.Itoa(status), metricMethod(req.Method), route).Inc()
			latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
			ev := log.Info()
			if status >= 500 && status != 499 {
				ev = log.Error()
			}
			ev = ev.Str(logkey.Method, req.Method).
				Str(logkey.Path, req.URL.Path).
				Int(logkey.Status, status).
				Float64(logkey.LatencyMs, float64(time.Since(start).Microseconds())/1000).
				Str(logkey.Remote, remoteIP(req))
			if name, ok := c.Get(tokenNameKey).(string); ok {
				ev = ev.Str(logkey.Token, name)
			}
			if job := c.Response().Header().Get(headerJobID); job != "" {
				// Ties the request to its job's own lines.
				ev = ev.Str(logkey.JobID, job)
			}
			ev.Msg("request")
			return nil
		}
	}
}

// unmatchedRoute is the route label of a request no route matched.
const unmatchedRoute = "unmatched"

// metricMethod bounds the method label: any method a client invents would
// otherwise be a new series.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

func remoteIP(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return host
}

// recoverPanic turns a panic in a handler into a logged 500: one bad
// request must not take the gateway and its running jobs down.
func recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return next(c)
	}
}
