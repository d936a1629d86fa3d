package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

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
	jr := jobs.Request{Command: cmd, Invocation: inv, Owner: tokenName(c)}

	if wantsAsync(req.Header) {
		return h.runDetached(c, jr)
	}
	var stdin *bodyStdin
	if cmd.Stdin == config.StdinBody {
		stdin = newBodyStdin(c.Response(), req.Body, h.cfg.MaxBody)
		jr.Stdin = stdin
		// The body must not be read once the handler has returned.
		defer stdin.close()
	}
	switch mediaType := negotiate(req.Header.Get("Accept")); mediaType {
	case "application/octet-stream", "text/plain":
		return h.runRaw(c, jr, mediaType)
	case contentTypeSSE:
		return h.runEvents(c, jr)
	default:
		jr.KeepOutput = keepOutput
		return h.runJSON(c, jr)
	}
}

// runJSON answers with the job record and its output once the job ended.
func (h *handler) runJSON(c echo.Context, jr jobs.Request) error {
	ctx := c.Request().Context()
	job, err := h.jobs.Submit(ctx, jr)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerJobID, job.ID())
	awaitBound(ctx, job, nil)
	rec := job.Record()
	if rec.Limit == "max_body" {
		return errTooLarge(h.cfg.MaxBody)
	}
	stdout, err := h.storedOutput(ctx, job, jobs.Stdout)
	if err != nil {
		return err
	}
	stderr, err := h.storedOutput(ctx, job, jobs.Stderr)
	if err != nil {
		return err
	}
	body, err := withOutput(rec, string(stdout), string(stderr))
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, body)
}

// keepOutput is how much of each stream a bound JSON run keeps in memory
// besides storing it, to answer without reading the files back.
const keepOutput = 64 << 10

// storedOutput is the ended job's stored output of stream s: from memory
// when the job kept all of it there, else read back from the store.
func (h *handler) storedOutput(ctx context.Context, job *jobs.Job, s jobs.Stream) ([]byte, error) {
	if out, ok := job.Output(s); ok {
		return out, nil
	}
	var buf bytes.Buffer
	if err := h.jobs.Copy(ctx, job.ID(), s, &buf, false); err != nil && ctx.Err() == nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// runRaw streams stdout as produced and ends with the trailers.
func (h *handler) runRaw(c echo.Context, jr jobs.Request, mediaType string) error {
	ctx := c.Request().Context()
	w := newStreamWriter(c.Response())
	jr.Stdout = w
	job, err := h.jobs.Submit(ctx, jr)
	if err != nil {
		return err // no stream headers are set: the error is JSON
	}
	hdr := c.Response().Header()
	hdr.Set("Content-Type", mediaType)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Trailer", trailerExit+", "+trailerState)
	hdr.Set(headerJobID, job.ID())
	fullDuplex(c, jr)
	_ = w.commit() // a failure closes w.failed
	awaitBound(ctx, job, w.failed)
	rec := job.Record()
	hdr.Set(trailerExit, strconv.Itoa(exitStatus(rec)))
	hdr.Set(trailerState, string(rec.State))
	w.finish()
	return nil
}

// runEvents sends stdout and stderr lines as events, then the record.
func (h *handler) runEvents(c echo.Context, jr jobs.Request) error {
	ctx := c.Request().Context()
	sse := &sseWriter{streamWriter: newStreamWriter(c.Response())}
	stdout := &lineEvents{sse: sse, name: "stdout"}
	stderr := &lineEvents{sse: sse, name: "stderr"}
	jr.Stdout, jr.Stderr = stdout, stderr
	job, err := h.jobs.Submit(ctx, jr)
	if err != nil {
		return err // no stream headers are set: the error is JSON
	}
	setSSEHeaders(c.Response().Header())
	c.Response().Header().Set(headerJobID, job.ID())
	fullDuplex(c, jr)
	_ = sse.commit() // a failure closes sse.failed
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // exits when stop is closed, below
		defer wg.Done()
		sse.keepAlive(stop)
	}()
	awaitBound(ctx, job, sse.failed)
	close(stop)
	wg.Wait()
	// The job has ended, so no other writer touches the line buffers now.
	_ = stdout.flush()
	_ = stderr.flush()
	_ = sendExit(sse, job.Record())
	sse.finish()
	return nil
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

// runDetached starts a job that no longer depends on the connection and
// answers 202 at once.
func (h *handler) runDetached(c echo.Context, jr jobs.Request) error {
	jr.Detached = true
	if jr.Command.Stdin == config.StdinBody {
		f, err := h.spool(c.Request().Body)
		if err != nil {
			return err
		}
		jr.Stdin = f // the registry closes it when the job ends
	}
	job, err := h.jobs.Submit(context.WithoutCancel(c.Request().Context()), jr)
	if err != nil {
		if closer, ok := jr.Stdin.(io.Closer); ok {
			_ = closer.Close()
		}
		return err
	}
	hdr := c.Response().Header()
	hdr.Set(headerJobID, job.ID())
	hdr.Set("Location", "/v1/jobs/"+job.ID())
	hdr.Set("Preference-Applied", "respond-async")
	return c.JSON(http.StatusAccepted, job.Record())
}

// spool copies a detached job's input to an unlinked file in the state
// directory: the request ends before the process reads it, and a large
// upload must not be held in memory.
func (h *handler) spool(body io.ReadCloser) (*os.File, error) {
	f, err := os.CreateTemp(h.spoolDir, "stdin-*")
	if err != nil {
		return nil, fmt.Errorf("spool request body: %w", err)
	}
	_ = os.Remove(f.Name()) // the open descriptor keeps the data
	if _, err := io.Copy(f, http.MaxBytesReader(nil, body, h.cfg.MaxBody)); err != nil {
		_ = f.Close()
		return nil, bodyError(err, h.cfg.MaxBody)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("spool request body: %w", err)
	}
	return f, nil
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

// withOutput is the record's JSON with stdout and stderr added.
func withOutput(rec jobs.Record, stdout, stderr string) ([]byte, error) {
	body, err := rec.MarshalJSON() // json.Marshal would check and copy it
	if err != nil {
		return nil, err
	}
	extra, err := json.Marshal(struct {
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
	}{stdout, stderr})
	if err != nil {
		return nil, err
	}
	// Both are JSON objects: join them as one.
	out := append(body[:len(body)-1], ',')
	return append(out, extra[1:]...), nil
}

func sendExit(sse *sseWriter, rec jobs.Record) error {
	data, err := rec.MarshalJSON()
	if err != nil {
		return err
	}
	return sse.event("exit", string(data))
}

func setSSEHeaders(h http.Header) {
	h.Set("Content-Type", contentTypeSSE)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
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

// bodyStdin feeds the request body to a process as its stdin. close stops
// any read in progress (by moving the connection's read deadline) and every
// later one, because the body must not be touched once the handler has
// returned.
type bodyStdin struct {
	rc     *http.ResponseController
	mu     sync.Mutex // held during each Read
	body   io.Reader
	closed bool
	eof    atomic.Bool
}

func newBodyStdin(w http.ResponseWriter, body io.ReadCloser, limit int64) *bodyStdin {
	return &bodyStdin{rc: http.NewResponseController(w), body: http.MaxBytesReader(nil, body, limit)}
}

func (b *bodyStdin) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, os.ErrClosed
	}
	n, err := b.body.Read(p)
	var maxBytes *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		b.eof.Store(true)
	case errors.As(err, &maxBytes):
		err = jobs.ErrInputTooLarge
	}
	return n, err
}

func (b *bodyStdin) close() {
	// A Read may be blocked on a slow client while holding mu: the
	// deadline makes it return. A body read to its end needs none, and
	// must get none: the server is watching that connection for a close.
	cut := !b.eof.Load()
	if cut {
		_ = b.rc.SetReadDeadline(time.Now())
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	if cut {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}
