package jobstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

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

// Create returns the writer of a new job's stream. Its file (mode 0600)
// is created at the first write; a stream never written has none. Closing
// the writer makes what was written durable.
func (f *Files) Create(id string, s jobs.Stream) (io.WriteCloser, error) {
	name, err := f.path(id, s)
	if err != nil {
		return nil, err
	}
	// The file itself comes with the first byte. Ids are never reused, so
	// no file can be there yet: not even checking saves a path lookup per
	// stream of every job.
	return &lazyFile{name: name, dir: f.dir}, nil
}

// Open reads the stream from its start; a stream never created reads
// empty.
func (f *Files) Open(id string, s jobs.Stream) (io.ReadCloser, error) {
	name, err := f.path(id, s)
	if err != nil {
		return nil, err
	}
	r := &lazyReader{name: name}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// Size is the length of the stream's file; a stream never written has
// none and holds nothing.
func (f *Files) Size(id string, s jobs.Stream) (int64, error) {
	name, err := f.path(id, s)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("size of output: %w", err)
	}
	return fi.Size(), nil
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

// lazyFile creates its file at the first write: most jobs write nothing
// to one of their streams or both, and a file never created costs neither
// an inode nor the syncs that make it durable.
type lazyFile struct {
	name, dir string
	file      *os.File
}

func (f *lazyFile) Write(p []byte) (int, error) {
	if f.file == nil {
		file, err := os.OpenFile(f.name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return 0, fmt.Errorf("create output: %w", err)
		}
		f.file = file
	}
	return f.file.Write(p)
}

// Close makes what was written durable: the file's data, then its entry
// in the directory.
func (f *lazyFile) Close() error {
	if f.file == nil {
		return nil
	}
	syncErr := f.file.Sync()
	closeErr := f.file.Close()
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

// lazyReader reads a stream that may not exist yet: until its file is
// created it reads empty, and a follower's next read finds it.
type lazyReader struct {
	name string
	file *os.File
}

func (r *lazyReader) open() error {
	file, err := os.Open(r.name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("open output: %w", err)
	}
	r.file = file
	return nil
}

func (r *lazyReader) Read(p []byte) (int, error) {
	if r.file == nil {
		if err := r.open(); err != nil {
			return 0, err
		}
		if r.file == nil {
			return 0, io.EOF
		}
	}
	return r.file.Read(p)
}

func (r *lazyReader) Close() error {
	if r.file == nil {
		return nil
	}
	return r.file.Close()
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
