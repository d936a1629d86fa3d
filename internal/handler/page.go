package handler

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

//go:embed page.html
var pageHTML []byte

// page is the small web page at /: commands, a run form, recent jobs.
func (h *handler) page(c echo.Context) error {
	c.Response().Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", pageHTML)
}
