package handler

import (
	"strconv"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/jobs"
)

// runRaw streams stdout as produced and ends with the trailers.
func (h *handler) runRaw(c echo.Context, jr jobs.Request, body *bodyStdin, mediaType string) error {
	ctx := c.Request().Context()
	w := newStreamWriter(c.Response())
	jr.Stdout = w
	job, err := h.submitBound(ctx, jr, body)
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
func (h *handler) runEvents(c echo.Context, jr jobs.Request, body *bodyStdin) error {
	ctx := c.Request().Context()
	sse := &sseWriter{streamWriter: newStreamWriter(c.Response())}
	stdout := &lineEvents{sse: sse, name: "stdout"}
	stderr := &lineEvents{sse: sse, name: "stderr"}
	jr.Stdout, jr.Stderr = stdout, stderr
	job, err := h.submitBound(ctx, jr, body)
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
