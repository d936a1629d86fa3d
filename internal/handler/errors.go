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
)

// apiError is an error the handler decided on itself, with its status,
// code and a message safe to show the client.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds, for 429 and 503
}

func (e *apiError) Error() string { return e.message }

func errInvalid(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidArgument, message: fmt.Sprintf(format, args...)}
}

func errNotFound(format string, args ...any) error {
	return &apiError{status: http.StatusNotFound, code: codeNotFound, message: fmt.Sprintf(format, args...)}
}

func errTooLarge(limit int64) error {
	return &apiError{
		status:  http.StatusRequestEntityTooLarge,
		code:    codePayloadTooLarge,
		message: fmt.Sprintf("request body exceeds max_body (%d bytes)", limit),
	}
}

// errCrossSite refuses a request a foreign web page may have sent; the
// message says which header gave it away.
func errCrossSite(message string) error {
	return &apiError{status: http.StatusForbidden, code: codePermissionDenied, message: message}
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
		return &apiError{status: http.StatusBadRequest, code: codeInvalidArgument, message: param.Error()}
	case errors.As(err, &maxBytes):
		return errTooLarge(maxBytes.Limit).(*apiError)
	case errors.Is(err, jobs.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: codeNotFound, message: "job not found"}
	case errors.Is(err, jobs.ErrRunning):
		return &apiError{status: http.StatusConflict, code: codeConflict, message: "job is still running; cancel it first"}
	case errors.Is(err, jobs.ErrQueueFull):
		return &apiError{
			status:     http.StatusTooManyRequests,
			code:       codeResourceExhausted,
			message:    "max_concurrent processes are running and max_queued jobs are waiting",
			retryAfter: 1,
		}
	case errors.Is(err, jobs.ErrDraining):
		return &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: "the gateway is shutting down", retryAfter: 1}
	case errors.As(err, &he):
		return fromEchoError(he)
	}
	return &apiError{status: http.StatusInternalServerError, code: codeInternal, message: "internal error; see the gateway's log"}
}

func fromEchoError(he *echo.HTTPError) *apiError {
	msg := http.StatusText(he.Code)
	if m, ok := he.Message.(string); ok {
		msg = m
	}
	switch he.Code {
	case http.StatusNotFound:
		return &apiError{status: he.Code, code: codeNotFound, message: "no such endpoint"}
	case http.StatusMethodNotAllowed:
		return &apiError{status: he.Code, code: codeMethodNotAllowed, message: "method not allowed on this endpoint"}
	case http.StatusRequestEntityTooLarge:
		return &apiError{status: he.Code, code: codePayloadTooLarge, message: msg}
	case http.StatusUnauthorized:
		return &apiError{status: he.Code, code: codeUnauthenticated, message: msg}
	case http.StatusForbidden:
		return &apiError{status: he.Code, code: codePermissionDenied, message: msg}
	case http.StatusTooManyRequests:
		return &apiError{status: he.Code, code: codeResourceExhausted, message: msg, retryAfter: 1}
	}
	if he.Code >= 400 && he.Code < 500 {
		return &apiError{status: he.Code, code: codeInvalidArgument, message: msg}
	}
	return &apiError{status: http.StatusInternalServerError, code: codeInternal, message: "internal error; see the gateway's log"}
}

// handleError is Echo's HTTPErrorHandler: every error leaves as the
// contract's JSON, unless the response has begun, when only the log learns.
func handleError(err error, c echo.Context) {
	api := toAPIError(err)
	log := zerolog.Ctx(c.Request().Context())
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
