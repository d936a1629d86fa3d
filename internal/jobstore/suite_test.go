package jobstore

import (
	"path/filepath"
	"testing"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
)

func TestBoltSuite(t *testing.T) {
	storetest.Store(t, func(t *testing.T) jobs.Store { return openTest(t) })
}

func TestFilesSuite(t *testing.T) {
	storetest.Output(t, func(t *testing.T) jobs.OutputStore {
		f, err := NewFiles(filepath.Join(t.TempDir(), "output"))
		if err != nil {
			t.Fatal(err)
		}
		return f
	})
}
