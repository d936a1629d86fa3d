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
	if cmd.Stdin == config.StdinBody {
		// A client that leaves while its body is being read cancels the
		// request's context, hence the job, whether or not the process
		// still reads its stdin.
		ctx, cancel := context.WithCancelCause(req.Context())
		defer cancel(nil)
		req = req.WithContext(ctx)
		c.SetRequest(req)
		stdin, err := newBodyStdin(c.Response(), req, h.cfg.MaxBody, h.spoolDir, cancel)
		if err != nil {
			return err
		}
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

// bodyStdin feeds the request body to a process as its stdin. It takes
// the body off the connection as fast as the client sends it, into an
// unlinked spool file that the process reads at its own pace: Go sees a
// client leave only once the body has been read to its end
// (golang/go#23262), so a process that stops reading its stdin must not
// stop the body from being read. The spool is bounded by max_body.
//
// Reading starts with the process (the runner's first Read), not before:
// a run refused or waiting in the queue leaves the body alone, and only
// running jobs hold a spool.
type bodyStdin struct {
	rc    *http.ResponseController
	body  io.Reader // limited to max_body
	spool *os.File
	gone  func(error) // told once if reading the body fails: the client left
	log   *zerolog.Logger
	start sync.Once // starts fill
	done  chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the fields below change
	spooled int64
	read    int64
	end     error // once the body has ended: io.EOF, jobs.ErrInputTooLarge, or the read error
	closed  bool
}

// newBodyStdin prepares a spool file in dir for the body of req.
func newBodyStdin(w http.ResponseWriter, req *http.Request, limit int64, dir string, gone func(error)) (*bodyStdin, error) {
	f, err := os.CreateTemp(dir, "stdin-*")
	if err != nil {
		return nil, fmt.Errorf("spool request body: %w", err)
	}
	_ = os.Remove(f.Name()) // the open descriptor keeps the data
	b := &bodyStdin{
		rc:      http.NewResponseController(w),
		body:    http.MaxBytesReader(nil, req.Body, limit),
		spool:   f,
		gone:    gone,
		log:     zerolog.Ctx(req.Context()),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	return b, nil
}

// fill copies the body into the spool.
func (b *bodyStdin) fill() {
	defer close(b.done)
	buf := make([]byte, 32<<10)
	var off int64
	for {
		n, err := b.body.Read(buf)
		if n > 0 {
			if _, werr := b.spool.WriteAt(buf[:n], off); werr != nil {
				// The job cannot get its input: it ends as if its
				// client had left, and the log says why.
				b.log.Error().Err(werr).Msg("spool request body")
				err = fmt.Errorf("spool request body: %w", werr)
			} else {
				off += int64(n)
			}
		}
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			err = jobs.ErrInputTooLarge
		}
		b.mu.Lock()
		b.spooled = off
		b.end = err
		closed := b.closed
		b.notifyLocked()
		b.mu.Unlock()
		if err == nil {
			continue
		}
		if err != io.EOF && err != jobs.ErrInputTooLarge && !closed {
			b.gone(err)
		}
		return
	}
}

func (b *bodyStdin) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Read returns spooled bytes, waiting for more until the body has ended;
// then it returns how it ended.
func (b *bodyStdin) Read(p []byte) (int, error) {
	b.start.Do(func() {
		go b.fill() // exits at the body's end, or when close cuts its read
	})
	b.mu.Lock()
	for !b.closed && b.read == b.spooled && b.end == nil {
		changed := b.changed
		b.mu.Unlock()
		<-changed
		b.mu.Lock()
	}
	off, avail, end, closed := b.read, b.spooled-b.read, b.end, b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return 0, os.ErrClosed
	case avail == 0:
		return 0, end
	}
	n, err := b.spool.ReadAt(p[:min(int64(len(p)), avail)], off)
	b.mu.Lock()
	b.read += int64(n)
	b.mu.Unlock()
	if n > 0 {
		err = nil // ReadAt's io.EOF at the end of what is spooled so far
	}
	return n, err
}

// close ends reading: the body must not be touched once the handler has
// returned. It waits for fill and releases the spool.
func (b *bodyStdin) close() {
	b.mu.Lock()
	b.closed = true
	b.notifyLocked()
	b.mu.Unlock()
	b.start.Do(func() { close(b.done) }) // never started: nor will it be
	select {
	case <-b.done:
		// A body read to its end must get no read deadline: the server
		// is watching that connection for a close.
	default:
		// fill may be blocked on a slow client: the deadline makes its
		// read return.
		_ = b.rc.SetReadDeadline(time.Now())
		<-b.done
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	_ = b.spool.Close()
}
