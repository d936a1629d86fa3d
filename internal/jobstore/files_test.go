package jobstore

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/jobs/storetest"
)

func newFilesTest(t *testing.T) (*Files, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "output")
	f, err := NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f, dir
}

func TestNewFiles(t *testing.T) {
	_, dir := newFilesTest(t)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("NewFiles made %v, want a directory with mode 0700", fi.Mode())
	}
	// An existing directory is fine.
	if _, err := NewFiles(dir); err != nil {
		t.Errorf("NewFiles(existing) = %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFiles(file); err == nil {
		t.Error("NewFiles(a file) = nil error")
	}
}

func TestFilesCreateOpenRemove(t *testing.T) {
	f, dir := newFilesTest(t)
	id := storetest.ID(1)
	if got := storetest.ReadAll(t, f, id, jobs.Stdout); got != "" {
		t.Errorf("stream never created reads %q, want empty", got)
	}
	for s, text := range map[jobs.Stream]string{jobs.Stdout: "out\n", jobs.Stderr: "err\n"} {
		w, err := f.Create(id, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, text); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		fi, err := os.Stat(filepath.Join(dir, id+"."+string(s)))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s file mode %v, want 0600", s, fi.Mode())
		}
	}
	if got := storetest.ReadAll(t, f, id, jobs.Stdout); got != "out\n" {
		t.Errorf("stdout = %q, want %q", got, "out\n")
	}
	if got := storetest.ReadAll(t, f, id, jobs.Stderr); got != "err\n" {
		t.Errorf("stderr = %q, want %q", got, "err\n")
	}

	// A stream created but never written has no file and reads empty.
	silent := storetest.ID(3)
	w, err := f.Create(silent, jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, silent+".stdout")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stream never written: Stat = %v, want not exist", err)
	}
	if got := storetest.ReadAll(t, f, silent, jobs.Stdout); got != "" {
		t.Errorf("stream never written reads %q, want empty", got)
	}

	if err := f.Remove(id); err != nil {
		t.Fatalf("Remove = %v", err)
	}
	for _, s := range []jobs.Stream{jobs.Stdout, jobs.Stderr} {
		if _, err := os.Stat(filepath.Join(dir, id+"."+string(s))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after Remove: Stat = %v, want not exist", s, err)
		}
		if got := storetest.ReadAll(t, f, id, s); got != "" {
			t.Errorf("%s after Remove reads %q, want empty", s, got)
		}
	}
	if err := f.Remove(id); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
	// Only stderr exists.
	w, err = f.Create(storetest.ID(2), jobs.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := f.Remove(storetest.ID(2)); err != nil {
		t.Errorf("Remove(only stderr) = %v", err)
	}
}

func TestFilesBadID(t *testing.T) {
	f, dir := newFilesTest(t)
	// A file beside dir that a traversal would reach.
	victim := filepath.Join(filepath.Dir(dir), "victim.stdout")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{
		"", "../victim", "..", ".", "a/b", "/etc/passwd", "a.b", "a b", "a\x00b",
		"Ω", "01J-", "a\\b", strings.Repeat("a", maxIDLen+1),
	} {
		if _, err := f.Create(id, jobs.Stdout); !errors.Is(err, ErrBadID) {
			t.Errorf("Create(%q) = %v, want ErrBadID", id, err)
		}
		if _, err := f.Open(id, jobs.Stdout); !errors.Is(err, ErrBadID) {
			t.Errorf("Open(%q) = %v, want ErrBadID", id, err)
		}
		if err := f.Remove(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Remove(%q) = %v, want ErrBadID", id, err)
		}
	}
	for _, s := range []jobs.Stream{"", "stdin", "../x", "stdout/.."} {
		if _, err := f.Create(storetest.ID(1), s); err == nil {
			t.Errorf("Create(stream %q) = nil error", s)
		}
		if _, err := f.Open(storetest.ID(1), s); err == nil {
			t.Errorf("Open(stream %q) = nil error", s)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
		t.Errorf("file outside dir: %q, %v", b, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("dir holds %v, %v; want nothing", entries, err)
	}
	// The longest allowed id and every allowed character work.
	for _, id := range []string{storetest.ID(1), "azAZ09", strings.Repeat("a", maxIDLen)} {
		w, err := f.Create(id, jobs.Stderr)
		if err != nil {
			t.Errorf("Create(%q) = %v", id, err)
			continue
		}
		w.Close()
	}
}
