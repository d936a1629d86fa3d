package handler

import (
	"testing"

	"go.uber.org/goleak"
)

// The handler starts goroutines (keep-alives, event copies) and, through
// the registry and runner, one or more per job: none may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
