package handler

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

const tokenKey = "execgw.token.config"

// authenticate resolves the bearer token of every /v1 request. With no
// tokens configured the API is open (the server refuses that on anything
// but loopback unless the operator allowed it).
func (h *handler) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(h.cfg.Auth.Tokens) == 0 {
			return next(c)
		}
		scheme, value, _ := strings.Cut(c.Request().Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || value == "" {
			return h.unauthenticated(c, "missing bearer token (Authorization: Bearer <token>)")
		}
		tok := h.matchToken(strings.TrimSpace(value))
		if tok == nil {
			return h.unauthenticated(c, "unknown token")
		}
		c.Set(tokenNameKey, tok.Name)
		c.Set(tokenKey, tok)
		return next(c)
	}
}

func (h *handler) unauthenticated(c echo.Context, msg string) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="execgw"`)
	return &apiError{status: http.StatusUnauthorized, code: codeUnauthenticated, message: msg}
}

// matchToken compares the token's hash with every configured one in
// constant time, and always with all of them, so timing tells nothing.
func (h *handler) matchToken(value string) *config.Token {
	sum := sha256.Sum256([]byte(value))
	var found *config.Token
	for i := range h.cfg.Auth.Tokens {
		t := &h.cfg.Auth.Tokens[i]
		if subtle.ConstantTimeCompare(sum[:], t.SHA256[:]) == 1 {
			found = t
		}
	}
	return found
}

func requestToken(c echo.Context) *config.Token {
	t, _ := c.Get(tokenKey).(*config.Token)
	return t
}

// mayRun reports whether the request's token may run the command.
func mayRun(tok *config.Token, command string) bool {
	if tok == nil {
		return true
	}
	for _, pattern := range tok.Commands {
		if ok, _ := path.Match(pattern, command); ok {
			return true
		}
	}
	return false
}

func errPermission(format string, args ...any) error {
	e := errInvalid(format, args...).(*apiError)
	e.status, e.code = http.StatusForbidden, codePermissionDenied
	return e
}

// authorizeJob fetches the job the route names and checks that the token
// may see it: its own jobs, or any with all_jobs.
func (h *handler) authorizeJob(c echo.Context) (jobs.Record, error) {
	id, err := jobID(c)
	if err != nil {
		return jobs.Record{}, err
	}
	rec, err := h.jobs.Get(c.Request().Context(), id)
	if err != nil {
		return jobs.Record{}, err
	}
	if tok := requestToken(c); tok != nil && !tok.AllJobs && rec.Owner != tok.Name {
		return jobs.Record{}, errPermission("job %s belongs to another token", id)
	}
	return rec, nil
}

// ownerFilter limits a listing to the token's own jobs unless it may see all.
func ownerFilter(c echo.Context) string {
	if tok := requestToken(c); tok != nil && !tok.AllJobs {
		return tok.Name
	}
	return ""
}
