package handler

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"

	"github.com/execgw/execgw/internal/api"
	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// commandView is a command as GET /v1/commands shows it.
type commandView struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Params      []paramView `json:"params"`
	Stdin       string      `json:"stdin"`
	Timeout     string      `json:"timeout,omitempty"`
}

type paramView struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Description string   `json:"description,omitempty"`
	Required    bool     `json:"required"`
	Default     *string  `json:"default,omitempty"`
	Pattern     string   `json:"pattern,omitempty"`
	MaxLen      int      `json:"max_len,omitempty"`
	Min         *int64   `json:"min,omitempty"`
	Max         *int64   `json:"max,omitempty"`
	Values      []string `json:"values,omitempty"`
	Secret      bool     `json:"secret,omitempty"`
}

func (h *handler) listCommands(c echo.Context) error {
	views := make([]commandView, 0, len(h.cfg.Commands))
	for _, name := range h.cfg.CommandNames() {
		if !mayRun(requestToken(c), name) {
			continue
		}
		cmd := h.cfg.Commands[name]
		v := commandView{Name: name, Description: cmd.Description, Stdin: string(cmd.Stdin), Params: []paramView{}}
		if v.Stdin == "" {
			v.Stdin = string(config.StdinNone)
		}
		if cmd.Timeout > 0 {
			v.Timeout = cmd.Timeout.String()
		}
		for _, p := range cmd.Params {
			pv := paramView{
				Name: p.Name, Type: string(p.Type), Description: p.Description,
				Required: p.Required, MaxLen: p.MaxLen, Min: p.Min, Max: p.Max,
				Values: p.Values, Secret: p.Secret,
			}
			if pv.Type == "" {
				pv.Type = string(config.TypeString)
			}
			if p.Default != nil && !p.Secret {
				pv.Default = p.Default
			}
			if p.Pattern != nil {
				pv.Pattern = p.Pattern.String()
			}
			v.Params = append(v.Params, pv)
		}
		views = append(views, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"commands": views})
}

// listJobs is GET /v1/jobs?state=&command=&limit=&after=.
func (h *handler) listJobs(c echo.Context) error {
	query, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return errInvalid("malformed query string: %v", queryErrorText(err))
	}
	f := jobs.Filter{Owner: ownerFilter(c)}
	for key, vs := range query {
		if len(vs) > 1 {
			return errInvalid("query parameter %q is given more than once", key)
		}
		v := vs[0]
		switch key {
		case "state":
			if !jobs.State(v).Valid() {
				return errInvalid("state %q is not one of queued, running, succeeded, failed, canceled, timed_out, interrupted", v)
			}
			f.State = jobs.State(v)
		case "command":
			if _, ok := h.cfg.Commands[v]; !ok {
				return errInvalid("command %q is not configured", v)
			}
			f.Command = v
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > jobs.MaxPageSize {
				return errInvalid("limit must be an integer from 1 to %d", jobs.MaxPageSize)
			}
			f.Limit = n
		case "after":
			if !validJobID(v) {
				return errInvalid("after must be a job id")
			}
			f.After = v
		default:
			return errInvalid("unknown query parameter %q (known: state, command, limit, after)", key)
		}
	}
	recs, next, err := h.jobs.List(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, api.JobList{Jobs: apiJobs(recs, time.Now()), Next: next})
}

func (h *handler) getJob(c echo.Context) error {
	rec, err := h.authorizeJob(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiJob(rec, time.Now()))
}

// jobOutput is GET /v1/jobs/{id}/stdout|stderr[?follow=true].
func (h *handler) jobOutput(s jobs.Stream) echo.HandlerFunc {
	return func(c echo.Context) error {
		rec, err := h.authorizeJob(c)
		if err != nil {
			return err
		}
		id := rec.ID
		follow := false
		if v := c.QueryParam("follow"); v != "" {
			if follow, err = strconv.ParseBool(v); err != nil {
				return errInvalid("follow must be true or false")
			}
		}
		ctx := c.Request().Context()
		hdr := c.Response().Header()
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set(headerJobID, id)
		w := newStreamWriter(c.Response())
		_ = w.commit()
		err = h.jobs.Copy(ctx, id, s, w, follow)
		w.finish()
		if err != nil && ctx.Err() == nil && w.err == nil {
			// Headers are gone: all that is left is to say it in the log.
			return err
		}
		return nil
	}
}

// jobEvents is GET /v1/jobs/{id}/events: stored output replayed as
// events, then live output, then the exit event.
func (h *handler) jobEvents(c echo.Context) error {
	rec, err := h.authorizeJob(c)
	if err != nil {
		return err
	}
	id, ctx := rec.ID, c.Request().Context()
	setSSEHeaders(c.Response().Header())
	c.Response().Header().Set(headerJobID, id)
	sse := &sseWriter{streamWriter: newStreamWriter(c.Response())}
	_ = sse.commit()

	stop := make(chan struct{})
	var keepAlive, streams sync.WaitGroup
	keepAlive.Add(1)
	go func() { // exits when stop is closed, below
		defer keepAlive.Done()
		sse.keepAlive(stop)
	}()
	errs := make([]error, 2)
	for i, s := range []jobs.Stream{jobs.Stdout, jobs.Stderr} {
		streams.Add(1)
		go func() { // exits when the job has ended or the client is gone
			defer streams.Done()
			lines := &lineEvents{sse: sse, name: string(s)}
			if errs[i] = h.jobs.Copy(ctx, id, s, lines, true); errs[i] == nil {
				errs[i] = lines.flush()
			}
		}()
	}
	streams.Wait()
	close(stop)
	keepAlive.Wait()
	if errs[0] == nil && errs[1] == nil {
		if rec, err := h.jobs.Get(ctx, id); err == nil {
			_ = sendExit(sse, rec)
		}
	}
	sse.finish()
	return nil
}

func (h *handler) cancelJob(c echo.Context) error {
	rec, err := h.authorizeJob(c)
	if err != nil {
		return err
	}
	rec, err = h.jobs.Cancel(c.Request().Context(), rec.ID, jobs.ReasonUser)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiJob(rec, time.Now()))
}

func (h *handler) deleteJob(c echo.Context) error {
	rec, err := h.authorizeJob(c)
	if err != nil {
		return err
	}
	if err := h.jobs.Delete(c.Request().Context(), rec.ID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// jobID is the route's job id; anything that cannot be an id is simply a
// job that does not exist.
func jobID(c echo.Context) (string, error) {
	id := c.Param("id")
	if !validJobID(id) {
		return "", errNotFound("job %q not found", truncate(id, 64))
	}
	return id, nil
}

func validJobID(id string) bool {
	_, err := ulid.ParseStrict(id)
	return err == nil && len(id) == ulid.EncodedSize && id == upperASCII(id)
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// tokenName is the name of the token that authenticated the request, ""
// when anonymous.
func tokenName(c echo.Context) string {
	name, _ := c.Get(tokenNameKey).(string)
	return name
}
