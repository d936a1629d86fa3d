package handler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// TestErrorMapping: every kind of error the handler meets, wrapped as the
// packages below wrap them, leaves with the contract's status and code;
// anything unknown is a 500 that tells the client nothing of it.
func TestErrorMapping(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("job 01ABC: %w", err) }
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter int
	}{
		{"invalid", errInvalid("bad %s", "x"), 400, codeInvalidArgument, 0},
		{"param", wrap(&config.ParamError{Name: "count", Reason: "must be an integer"}), 400, codeInvalidArgument, 0},
		{"unauthenticated", newError(codeUnauthenticated, "no token"), 401, codeUnauthenticated, 0},
		{"permission", errPermission("no"), 403, codePermissionDenied, 0},
		{"cross-site", errCrossSite("Origin"), 403, codePermissionDenied, 0},
		{"not found", errNotFound("job"), 404, codeNotFound, 0},
		{"job not found", wrap(jobs.ErrNotFound), 404, codeNotFound, 0},
		{"running", wrap(jobs.ErrRunning), 409, codeConflict, 0},
		{"max_body", wrap(&http.MaxBytesError{Limit: 10}), 413, codePayloadTooLarge, 0},
		{"too large", errTooLarge(10), 413, codePayloadTooLarge, 0},
		{"queue full", wrap(jobs.ErrQueueFull), 429, codeResourceExhausted, 1},
		{"rate", errLimited(codeResourceExhausted, "slow down", 7), 429, codeResourceExhausted, 7},
		{"draining", wrap(jobs.ErrDraining), 503, codeUnavailable, 1},
		{"client gone", errClientGone, statusClientClosedRequest, codeClientGone, 0},
		{"echo 404", echo.ErrNotFound, 404, codeNotFound, 0},
		{"echo 405", echo.ErrMethodNotAllowed, 405, codeMethodNotAllowed, 0},
		{"echo 413", echo.ErrStatusRequestEntityTooLarge, 413, codePayloadTooLarge, 0},
		{"echo 429", echo.ErrTooManyRequests, 429, codeResourceExhausted, 1},
		{"echo other 4xx", echo.ErrUnsupportedMediaType, 415, codeInvalidArgument, 0},
		{"echo 5xx", echo.ErrInternalServerError, 500, codeInternal, 0},
		{"unknown", errors.New("open /var/secret: permission denied"), 500, codeInternal, 0},
		{"bare context error", context.Canceled, 500, codeInternal, 0},
		{"unknown code", newError("no_such_code", "detail"), 500, codeInternal, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := toAPIError(tc.err)
			if got.status != tc.status || got.code != tc.code || got.retryAfter != tc.retryAfter {
				t.Errorf("toAPIError(%v) = %d %s retry %d, want %d %s retry %d",
					tc.err, got.status, got.code, got.retryAfter, tc.status, tc.code, tc.retryAfter)
			}
			if got.status == 500 && got.message != internalMessage {
				t.Errorf("toAPIError(%v) message %q tells the client about an internal error", tc.err, got.message)
			}
		})
	}
	for code := range statusOf {
		if newError(code, "m").code != code {
			t.Errorf("newError(%q) lost its code", code)
		}
	}
}
