package handler

import (
	"context"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// The modes of a run live in files of their own: run_json.go (a bound run
// answered with its record), run_stream.go (raw stream and events),
// run_detached.go; run_stdin.go holds the request body as stdin.

const (
	headerJobID    = "Execgw-Job-Id"
	trailerExit    = "Execgw-Exit-Code"
	trailerState   = "Execgw-State"
	contentTypeSSE = "text/event-stream"
)

// run is POST /v1/commands/{name}/run: validate everything, then start a
// job in the mode the client asked for.
func (h *handler) run(c echo.Context) error {
	name := c.Param("name")
	cmd, ok := h.cfg.Commands[name]
	if !ok {
		return errNotFound("command %q is not configured", name)
	}
	if !mayRun(requestToken(c), name) {
		return errPermission("this token may not run command %q", name)
	}
	req := c.Request()
	if cmd.Stdin == config.StdinBody && req.ContentLength > h.cfg.MaxBody {
		return errTooLarge(h.cfg.MaxBody)
	}
	values, err := h.readParams(req, cmd)
	if err != nil {
		return err
	}
	inv, err := cmd.Bind(values)
	if err != nil {
		return err
	}
	jr := jobs.Request{Command: cmd, Invocation: inv, Values: values, Owner: tokenName(c)}

	if wantsAsync(req.Header) {
		return h.runDetached(c, jr)
	}
	var body *bodyStdin
	if cmd.Stdin == config.StdinBody {
		// A client that leaves while its body is being read cancels the
		// request's context, hence the job, whether or not the process
		// still reads its stdin, and whether or not it has started.
		ctx, cancel := context.WithCancelCause(req.Context())
		defer cancel(nil)
		req = req.WithContext(ctx)
		c.SetRequest(req)
		if body, err = newBodyStdin(c.Response(), req, h.cfg.MaxBody, h.spoolDir, cancel); err != nil {
			return err
		}
		// This handler owns the body's reader: submitBound starts it once
		// the job is admitted, and it is stopped here, since the body must
		// not be read once the handler has returned.
		defer body.stop()
		jr.Stdin = body
	}
	switch mediaType := negotiate(req.Header.Get("Accept")); mediaType {
	case "application/octet-stream", "text/plain":
		return h.runRaw(c, jr, body, mediaType)
	case contentTypeSSE:
		return h.runEvents(c, jr, body)
	default:
		return h.runJSON(c, jr, body)
	}
}

// submitBound submits a bound run. Once the job is admitted (started or
// queued), the body of a stdin: body run (body, nil otherwise) is taken
// off the connection, so that a client that leaves, even while its job
// waits in the queue, is noticed at once: Go sees a client leave only
// once the request body has been read to its end (golang/go#23262). A run
// refused leaves its body unread.
func (h *handler) submitBound(ctx context.Context, jr jobs.Request, body *bodyStdin) (*jobs.Job, error) {
	job, err := h.jobs.Submit(ctx, jr)
	if err != nil {
		return nil, err
	}
	if body != nil {
		body.start()
	}
	return job, nil
}

// awaitBound waits for a bound job to end, canceling it when the client
// goes away or stops taking the stream (streamFailed).
func awaitBound(ctx context.Context, job *jobs.Job, streamFailed <-chan struct{}) {
	select {
	case <-job.Done():
		return
	case <-ctx.Done():
	case <-streamFailed:
	}
	job.Cancel(jobs.ReasonClientDisconnected)
	<-job.Done()
}

// fullDuplex lets a streaming run of a stdin command go on reading its
// body after the response has begun. By default net/http, when it sends
// the headers, consumes what is left of the body (up to 256 KiB, which the
// process would then never see) or closes it.
func fullDuplex(c echo.Context, jr jobs.Request) {
	if jr.Stdin == nil {
		return
	}
	if err := http.NewResponseController(c.Response()).EnableFullDuplex(); err != nil {
		// Only HTTP/1 needs it; a server that cannot is one that does not.
		zerolog.Ctx(c.Request().Context()).Debug().Err(err).Msg("enable full duplex")
	}
}

// exitStatus is the shell's view of how a job ended: its exit code, or
// 128 + the signal number; -1 when no process ran.
func exitStatus(rec jobs.Record) int {
	if rec.ExitCode != nil {
		return *rec.ExitCode
	}
	if rec.Signal != "" {
		if sig := unix.SignalNum(rec.Signal); sig != 0 {
			return 128 + int(sig)
		}
	}
	return -1
}

// wantsAsync reports whether the client asked for a detached job
// (RFC 7240 "Prefer: respond-async").
func wantsAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			token, _, _ := strings.Cut(strings.TrimSpace(pref), ";")
			if strings.EqualFold(strings.TrimSpace(token), "respond-async") {
				return true
			}
		}
	}
	return false
}

// negotiate picks the response type from Accept: the first of the types
// execgw can send, in the client's order of preference; JSON by default.
func negotiate(accept string) string {
	best, bestQ := "application/json", 0.0
	for part := range strings.SplitSeq(accept, ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if v, err := strconv.ParseFloat(s, 64); err == nil {
				q = v
			}
		}
		switch mediaType {
		case "application/json", "application/octet-stream", "text/plain", contentTypeSSE:
			if q > bestQ {
				best, bestQ = mediaType, q
			}
		}
	}
	return best
}
