package handler

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/webui"
)

// page is the web page at /: commands, runs, jobs. Its script and style
// are files of their own (asset), so the policy allows nothing inline.
func (h *handler) page(c echo.Context) error {
	setPageHeaders(c.Response().Header())
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", webui.Index())
}

// asset is GET /ui/{file}: the page's script, style sheet and icon.
func (h *handler) asset(c echo.Context) error {
	body, contentType, ok := webui.Asset(c.Param("file"))
	if !ok {
		return errNotFound("no such file")
	}
	setPageHeaders(c.Response().Header())
	return c.Blob(http.StatusOK, contentType, body)
}

func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", webui.ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Embedded in the binary: a new gateway may serve new files under the
	// same names, so the browser asks each time (and gets them locally).
	h.Set("Cache-Control", "no-cache")
}
