package handler

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// Error codes of the contract.
const (
	codeInvalidArgument   = "invalid_argument"
	codeUnauthenticated   = "unauthenticated"
	codePermissionDenied  = "permission_denied"
	codeNotFound          = "not_found"
	codeMethodNotAllowed  = "method_not_allowed"
	codeConflict          = "conflict"
	codePayloadTooLarge   = "payload_too_large"
	codeResourceExhausted = "resource_exhausted"
	codeUnavailable       = "unavailable"
	codeInternal          = "internal"
	// codeClientGone is never sent: the client it would go to has left.
	codeClientGone = "client_gone"
)

// statusClientClosedRequest is nginx's 499: the request log's status of a
// request whose client went away before its answer.
const statusClientClosedRequest = 499

// statusOf is the one table of error statuses: every error the handler
// answers with has a code, and its code alone decides its status.
var statusOf = map[string]int{
	codeInvalidArgument:   http.StatusBadRequest,
	codeUnauthenticated:   http.StatusUnauthorized,
	codePermissionDenied:  http.StatusForbidden,
	codeNotFound:          http.StatusNotFound,
	codeMethodNotAllowed:  http.StatusMethodNotAllowed,
	codeConflict:          http.StatusConflict,
	codePayloadTooLarge:   http.StatusRequestEntityTooLarge,
	codeResourceExhausted: http.StatusTooManyRequests,
	codeClientGone:        statusClientClosedRequest,
	codeUnavailable:       http.StatusServiceUnavailable,
	codeInternal:          http.StatusInternalServerError,
}

// errClientGone stands for the context error of a request whose client
// went away (disconnected, gave up waiting): nobody to answer, no fault of
// the gateway's.
var errClientGone = errors.New("client went away")

// sentinels maps the errors of the packages below to what the client is
// told; the first that matches (errors.Is) wins.
var sentinels = []struct {
	err        error
	code       string
	message    string
	retryAfter int // seconds
}{
	{errClientGone, codeClientGone, "client closed the request", 0},
	{jobs.ErrNotFound, codeNotFound, "job not found", 0},
	{jobs.ErrRunning, codeConflict, "job is still running; cancel it first", 0},
	{jobs.ErrQueueFull, codeResourceExhausted, "max_concurrent processes are running and max_queued jobs are waiting", 1},
	{jobs.ErrDraining, codeUnavailable, "the gateway is shutting down", 1},
	{jobs.ErrUnavailable, codeUnavailable, "the cluster's Redis cannot be reached now; try again shortly", 1},
	{jobs.ErrNotStored, codeUnavailable, "the gateway cannot record new jobs now (its state directory is full or failing); see its log", 5},
}

// fromEcho maps the statuses Echo's router and middleware decide (no
// route, wrong method, its body limit) to codes.
var fromEcho = map[int]string{
	http.StatusNotFound:              codeNotFound,
	http.StatusMethodNotAllowed:      codeMethodNotAllowed,
	http.StatusRequestEntityTooLarge: codePayloadTooLarge,
	http.StatusUnauthorized:          codeUnauthenticated,
	http.StatusForbidden:             codePermissionDenied,
	http.StatusTooManyRequests:       codeResourceExhausted,
}

// internalMessage is all a client learns of a failure of the gateway's
// own; the log has the error, with the request id.
const internalMessage = "internal error; see the gateway's log"

// apiError is an error the handler decided on itself, with its code (so
// its status) and a message safe to show the client.
type apiError struct {
	status     int // statusOf[code], set by newError
	code       string
	message    string
	retryAfter int // seconds, for 429 and 503
}

func (e *apiError) Error() string { return e.message }

// newError is how every apiError is made: its status comes from the table.
func newError(code, message string) *apiError {
	status, ok := statusOf[code]
	if !ok {
		code, status, message = codeInternal, http.StatusInternalServerError, internalMessage
	}
	return &apiError{status: status, code: code, message: message}
}

func errInvalid(format string, args ...any) error {
	return newError(codeInvalidArgument, fmt.Sprintf(format, args...))
}

func errNotFound(format string, args ...any) error {
	return newError(codeNotFound, fmt.Sprintf(format, args...))
}

func errPermission(format string, args ...any) error {
	return newError(codePermissionDenied, fmt.Sprintf(format, args...))
}

func errTooLarge(limit int64) error {
	return newError(codePayloadTooLarge, fmt.Sprintf("request body exceeds max_body (%d bytes)", limit))
}

// errCrossSite refuses a request a foreign web page may have sent; the
// message says which header gave it away.
func errCrossSite(message string) error {
	return newError(codePermissionDenied, message)
}

// errLimited is a 429 or 503 with the seconds to wait before a retry.
func errLimited(code, message string, retryAfter int) error {
	e := newError(code, message)
	e.retryAfter = retryAfter
	return e
}

// errorBody is the JSON every error answers with.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// toAPIError is the one place that maps errors to statuses and codes.
// Anything it does not know is a 500 whose details stay in the log.
func toAPIError(err error) *apiError {
	var (
		api      *apiError
		param    *config.ParamError
		maxBytes *http.MaxBytesError
		he       *echo.HTTPError
	)
	switch {
	case errors.As(err, &api):
		return api
	case errors.As(err, &param):
		return newError(codeInvalidArgument, param.Error())
	case errors.As(err, &maxBytes):
		return errTooLarge(maxBytes.Limit).(*apiError)
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return errLimited(s.code, s.message, s.retryAfter).(*apiError)
		}
	}
	if errors.As(err, &he) {
		return fromEchoError(he)
	}
	return newError(codeInternal, internalMessage)
}

func fromEchoError(he *echo.HTTPError) *apiError {
	msg := http.StatusText(he.Code)
	if m, ok := he.Message.(string); ok {
		msg = m
	}
	code, ok := fromEcho[he.Code]
	switch {
	case code == codeNotFound:
		msg = "no such endpoint"
	case code == codeMethodNotAllowed:
		msg = "method not allowed on this endpoint"
	case !ok && he.Code >= 400 && he.Code < 500:
		code = codeInvalidArgument
	case !ok:
		code, msg = codeInternal, internalMessage
	}
	e := newError(code, msg)
	if code == codeResourceExhausted {
		e.retryAfter = 1
	}
	if code == codeInvalidArgument {
		e.status = he.Code // a 4xx of Echo's keeps its own status
	}
	return e
}

// handleError is Echo's HTTPErrorHandler: every error leaves as the
// contract's JSON, unless the response has begun, when only the log learns.
func handleError(err error, c echo.Context) {
	ctx := c.Request().Context()
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = errClientGone
	}
	api := toAPIError(err)
	if api.code == codeClientGone {
		return // nobody to answer; the request log says 499
	}
	log := zerolog.Ctx(ctx)
	if api.status >= 500 {
		log.Error().Err(err).Msg("request failed")
	}
	if c.Response().Committed {
		return
	}
	if api.retryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(api.retryAfter))
	}
	var body errorBody
	body.Error.Code = api.code
	body.Error.Message = api.message
	if err := c.JSON(api.status, body); err != nil {
		log.Debug().Err(err).Msg("write error response")
	}
}
