package handler

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

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
	rec, err := h.jobs.Detach(context.WithoutCancel(c.Request().Context()), jr)
	if err != nil {
		if closer, ok := jr.Stdin.(io.Closer); ok {
			_ = closer.Close()
		}
		return err
	}
	hdr := c.Response().Header()
	hdr.Set(headerJobID, rec.ID)
	hdr.Set("Location", "/v1/jobs/"+rec.ID)
	hdr.Set("Preference-Applied", "respond-async")
	return c.JSON(http.StatusAccepted, apiJob(rec, time.Now()))
}
