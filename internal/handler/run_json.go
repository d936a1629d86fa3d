package handler

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/jobs"
)

// runJSON answers with the job record and its output once the job ended.
func (h *handler) runJSON(c echo.Context, jr jobs.Request, body *bodyStdin) error {
	ctx := c.Request().Context()
	job, err := h.submitBound(ctx, jr, body)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerJobID, job.ID())
	awaitBound(ctx, job, nil)
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errSpool) {
			return cause // the gateway's failure, not the client's
		}
		// The client has left: nobody is there to answer, and with
		// nothing sent the request's log line says 499.
		return nil
	}
	rec := job.Record()
	if rec.Limit == "max_body" {
		return errTooLarge(h.cfg.MaxBody)
	}
	return h.answerWithOutput(c, rec)
}

// answerBuffer is the size of the buffer a JSON answer is written
// through: the most the answer holds in memory, whatever the output.
const answerBuffer = 32 << 10

// answerWithOutput writes the ended job's record with its stored stdout
// and stderr added, streamed from the store through one buffer: a bound
// run may print output_limit per stream, and its escaped JSON is larger
// still. The answer is what json.Marshal of the record with two more
// string fields would be.
//
// Once part of the answer is sent, a failure to read the store can only
// cut it short: the client then gets JSON that does not parse, and the
// log says why.
func (h *handler) answerWithOutput(c echo.Context, rec jobs.Record) error {
	head, err := json.Marshal(apiJob(rec, time.Now()))
	if err != nil {
		return err
	}
	res := c.Response()
	res.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	aw := &answerWriter{w: res, rc: http.NewResponseController(res)}
	bw := bufio.NewWriterSize(aw, answerBuffer)
	// Both are JSON objects: the record's closing brace makes way for
	// the output.
	_, _ = bw.Write(head[:len(head)-1])
	for _, s := range []jobs.Stream{jobs.Stdout, jobs.Stderr} {
		if s == jobs.Stdout {
			_, _ = bw.WriteString(`,"stdout":"`)
		} else {
			_, _ = bw.WriteString(`","stderr":"`)
		}
		js := &jsonString{w: bw}
		err := h.jobs.Copy(c.Request().Context(), rec.ID, s, js, false)
		if err == nil {
			err = js.end()
		}
		if err != nil {
			return aw.failed(err)
		}
	}
	_, _ = bw.WriteString(`"}`)
	if err := bw.Flush(); err != nil {
		return aw.failed(err)
	}
	aw.finish()
	return nil
}

// answerWriter writes a response under a deadline per write, so that a
// client that stops reading cannot hold the handler forever, and
// remembers whether a write failed.
type answerWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error // the first failed write
}

func (a *answerWriter) Write(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	if err := a.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
		a.err = err
		return 0, err
	}
	n, err := a.w.Write(p)
	a.err = err
	return n, err
}

// failed is what the handler returns after err stopped the answer: nil
// when the client stopped taking it (nothing more can be said to it), else
// err, which the error handler answers as a 500 if nothing was sent yet,
// and only logs otherwise.
func (a *answerWriter) failed(err error) error {
	if a.err != nil {
		return nil
	}
	return err
}

// finish lifts the write deadline of an answer sent whole, so that it
// does not linger on the keep-alive connection into the next response.
func (a *answerWriter) finish() {
	_ = a.rc.SetWriteDeadline(time.Time{})
}
