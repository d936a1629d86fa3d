package jobstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/execgw/execgw/internal/jobs"
)

// ErrBadID is returned by Files for a job id that is not a plain
// alphanumeric name, before any file is touched.
var ErrBadID = errors.New("invalid job id")

// maxIDLen bounds ids well below any file name limit (ULIDs have 26 chars).
const maxIDLen = 128

// Files is a jobs.OutputStore keeping each stream of a job in a file of its
// own, dir/<id>.stdout and dir/<id>.stderr. Readers see bytes as soon as
// they are written, which following a live job relies on.
type Files struct {
	dir string
}

var _ jobs.OutputStore = (*Files)(nil)

// NewFiles returns a Files keeping output under dir, creating dir with mode
// 0700 if need be.
func NewFiles(dir string) (*Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("output store: %w", err)
	}
	return &Files{dir: dir}, nil
}

// Create creates the stream's file empty (mode 0600), truncating an
// existing one. Closing the writer makes what was written durable.
func (f *Files) Create(id string, s jobs.Stream) (io.WriteCloser, error) {
	name, err := f.path(id, s)
	if err != nil {
		return nil, err
	}
	file, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	return &syncFile{File: file, dir: f.dir}, nil
}

// Open reads the stream from its start; a stream never created reads
// empty.
func (f *Files) Open(id string, s jobs.Stream) (io.ReadCloser, error) {
	name, err := f.path(id, s)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err != nil {
		return nil, fmt.Errorf("open output: %w", err)
	}
	return file, nil
}

// Remove deletes both streams of the job; absent ones are no error.
func (f *Files) Remove(id string) error {
	var errs []error
	for _, s := range []jobs.Stream{jobs.Stdout, jobs.Stderr} {
		name, err := f.path(id, s)
		if err != nil {
			return err
		}
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove output: %w", err))
		}
	}
	return errors.Join(errs...)
}

// path is the file of the stream, refusing anything that could name a file
// outside dir.
func (f *Files) path(id string, s jobs.Stream) (string, error) {
	if !validID(id) {
		return "", fmt.Errorf("output of job %q: %w", id, ErrBadID)
	}
	if s != jobs.Stdout && s != jobs.Stderr {
		return "", fmt.Errorf("output of job %s: invalid stream %q", id, s)
	}
	return filepath.Join(f.dir, id+"."+string(s)), nil
}

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// syncFile is the writer Create returns: Close flushes the file, and the
// directory entry naming it, to disk before closing.
type syncFile struct {
	*os.File
	dir string
}

func (f *syncFile) Close() error {
	syncErr := f.Sync()
	closeErr := f.File.Close()
	if syncErr != nil {
		return fmt.Errorf("sync output: %w", syncErr)
	}
	if closeErr != nil {
		return fmt.Errorf("close output: %w", closeErr)
	}
	if err := syncDir(f.dir); err != nil {
		return fmt.Errorf("sync output directory: %w", err)
	}
	return nil
}

// syncDir makes the creation of files in dir durable: fsync of a new file
// alone does not guarantee its directory entry is on disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
