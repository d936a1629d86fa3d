package handler

import (
	"crypto/sha256"
	"crypto/subtle"
	"path"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// Keys of what identify leaves in the request's context. tokenNameKey, the
// token's name for the request log, is in middleware.go.
const (
	tokenKey        = "execgw.token.config"  // *config.Token
	authProblemKey  = "execgw.token.problem" // authProblem, when no token matched
	authResolvedKey = "execgw.token.resolved"
)

// authProblem says why a request carries no valid token.
type authProblem int

const (
	authOK      authProblem = iota
	authMissing             // no "Authorization: Bearer" header
	authInvalid             // a bearer token that matches none configured
)

// identify resolves the bearer token of every request, whatever its route,
// so that the rate limiter keys on the token and the request log names it.
// It rejects nothing: authenticate does, on the routes that need a token.
func (h *handler) identify(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h.resolveToken(c)
		return next(c)
	}
}

// resolveToken finds the request's token once and remembers it in the
// context, with its name for the log. With no tokens configured every
// request is anonymous and resolves to nil, authOK.
func (h *handler) resolveToken(c echo.Context) (*config.Token, authProblem) {
	if c.Get(authResolvedKey) != nil {
		p, _ := c.Get(authProblemKey).(authProblem)
		return requestToken(c), p
	}
	c.Set(authResolvedKey, true)
	if len(h.cfg.Auth.Tokens) == 0 {
		return nil, authOK
	}
	scheme, value, _ := strings.Cut(c.Request().Header.Get("Authorization"), " ")
	value = strings.TrimSpace(value)
	if !strings.EqualFold(scheme, "Bearer") || value == "" {
		c.Set(authProblemKey, authMissing)
		return nil, authMissing
	}
	tok := h.matchToken(value)
	if tok == nil {
		c.Set(authProblemKey, authInvalid)
		return nil, authInvalid
	}
	c.Set(tokenKey, tok)
	c.Set(tokenNameKey, tok.Name) // the name, never the value, goes to the log
	return tok, authOK
}

// authenticate rejects a request to an API route that has no valid token
// while tokens are configured. With none configured the API is open: the
// server refuses that on anything but loopback unless the operator allowed
// it (cmd/execgw checkExposure).
func (h *handler) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch _, problem := h.resolveToken(c); problem {
		case authMissing:
			return unauthenticated(c, "", "missing bearer token (Authorization: Bearer <token>)")
		case authInvalid:
			// The message names no part of what was sent: it is a secret,
			// even when wrong (a token of another gateway, say).
			return unauthenticated(c, "invalid_token", "unknown token")
		}
		return next(c)
	}
}

// unauthenticated is the 401 of RFC 6750: a challenge saying which scheme
// to use and, when a token was sent, that it was not accepted.
func unauthenticated(c echo.Context, rfcError, msg string) error {
	challenge := `Bearer realm="execgw"`
	if rfcError != "" {
		challenge += `, error="` + rfcError + `"`
	}
	c.Response().Header().Set("WWW-Authenticate", challenge)
	return newError(codeUnauthenticated, msg)
}

// matchToken compares the token's hash with every configured one in
// constant time, and always with all of them, so timing tells nothing
// about which one, if any, matched. Only hashes are compared, so the
// configuration holds no secret.
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

// requestToken is the token that authenticated the request; nil when the
// gateway is open (no tokens configured) or the request had none.
func requestToken(c echo.Context) *config.Token {
	t, _ := c.Get(tokenKey).(*config.Token)
	return t
}

// mayRun reports whether the request's token may run the command. A nil
// token passed authenticate only because no tokens are configured.
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
