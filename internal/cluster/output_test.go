package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/execgw/execgw/internal/jobs"
	"github.com/execgw/execgw/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newOutput returns an Output on srv, closed with its clients when the
// test ends.
func newOutput(t *testing.T, srv *redistest.Server) *Output {
	t.Helper()
	opt := &redis.Options{Addr: srv.Addr, MaxRetries: -1}
	rdb, follow := redis.NewClient(opt), redis.NewClient(opt)
	o, err := NewOutput(OutputOptions{
		Client: rdb, Follow: follow, Prefix: "test-" + t.Name(), SpoolDir: filepath.Join(t.TempDir(), "spool"),
		Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		o.Close()
		rdb.Close()
		follow.Close()
	})
	return o
}

func readStream(t *testing.T, o *Output, id string, s jobs.Stream) []byte {
	t.Helper()
	rd, err := o.Open(id, s)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("read %s of %s: %v", s, id, err)
	}
	return b
}

func TestOutputRoundTrip(t *testing.T) {
	o := newOutput(t, redistest.Start(t))
	want := make([]byte, 3*chunkSize+123) // several entries, binary
	_, _ = rand.Read(want)
	w, err := o.Create("JOB1", jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	for rest := want; len(rest) > 0; {
		n := min(len(rest), 1000)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readStream(t, o, "JOB1", jobs.Stdout); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(want))
	}
	if got := readStream(t, o, "JOB1", jobs.Stderr); len(got) != 0 {
		t.Fatalf("stderr never written reads %q, want empty", got)
	}
	if got := readStream(t, o, "NOSUCHJOB", jobs.Stdout); len(got) != 0 {
		t.Fatalf("unknown job reads %q, want empty", got)
	}
	entries, _ := os.ReadDir(o.spool)
	if len(entries) != 0 {
		t.Fatalf("spool holds %d files after Close, want none", len(entries))
	}
	if err := o.Remove("JOB1"); err != nil {
		t.Fatal(err)
	}
	if got := readStream(t, o, "JOB1", jobs.Stdout); len(got) != 0 {
		t.Fatalf("removed stream reads %d bytes", len(got))
	}
}

// A follower on another connection sees each write as it is shipped, and
// waits for the next one on a blocking read.
func TestOutputFollow(t *testing.T) {
	srv := redistest.Start(t)
	writer, follower := newOutput(t, srv), newOutput(t, srv)
	w, err := writer.Create("JOB2", jobs.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := follower.Open("JOB2", jobs.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	sr := rd.(*streamReader)
	ctx := context.Background()
	buf := make([]byte, 64)
	for i, line := range []string{"one\n", "two\n", "three"} {
		if n, err := sr.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("line %d: read before the write = %d, %v; want 0, EOF", i, n, err)
		}
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		more, err := sr.Wait(ctx, 10*time.Second)
		if err != nil || !more {
			t.Fatalf("line %d: Wait = %v, %v; want true", i, more, err)
		}
		n, err := sr.Read(buf)
		if err != nil || string(buf[:n]) != line {
			t.Fatalf("line %d: Read = %q, %v; want %q", i, buf[:n], err, line)
		}
	}
	if more, err := sr.Wait(ctx, 50*time.Millisecond); more || err != nil {
		t.Fatalf("Wait with nothing new = %v, %v; want false after the timeout", more, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// Output written while Redis is away reaches it, whole and in order, once
// Redis is back; the process writing it never waits.
func TestOutputSurvivesRedisAway(t *testing.T) {
	srv := redistest.Start(t)
	o := newOutput(t, srv)
	w, err := o.Create("JOB3", jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	write := func(s string) {
		t.Helper()
		start := time.Now()
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("a write took %v: the writer waited for Redis", d)
		}
		want.WriteString(s)
	}
	write("before\n")
	srv.Stop()
	for range 50 {
		write("while redis is away\n")
	}
	srv.Start()
	write("after\n")
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close still waiting 30 s after Redis came back")
	}
	if got := readStream(t, o, "JOB3", jobs.Stdout); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("stored %q\nwant %q", got, want.Bytes())
	}
}

// A chunk sent again after its reply was lost is not stored twice.
func TestOutputDuplicateChunk(t *testing.T) {
	o := newOutput(t, redistest.Start(t))
	w := &streamWriter{o: o, key: o.keys.output("JOB4", jobs.Stdout), ctx: context.Background()}
	for _, c := range []struct {
		off   int64
		chunk string
	}{{0, "abc"}, {0, "abc"}, {3, "def"}, {3, "def"}} {
		if err := w.send(c.off, []byte(c.chunk)); err != nil {
			t.Fatalf("send(%d, %q): %v", c.off, c.chunk, err)
		}
	}
	if got := readStream(t, o, "JOB4", jobs.Stdout); string(got) != "abcdef" {
		t.Fatalf("stored %q, want %q", got, "abcdef")
	}
}

// Closing a stream while Redis stays away gives up after GiveUp, keeping
// the spool file: a job's end is not held up for ever.
func TestOutputGiveUp(t *testing.T) {
	srv := redistest.Start(t)
	o := newOutput(t, srv)
	o.giveUp = 300 * time.Millisecond
	w, err := o.Create("JOB5", jobs.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := w.Write([]byte("lost to redis\n")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("Close = nil while Redis is away, want an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close still waiting 30 s after GiveUp")
	}
	if _, err := os.Stat(filepath.Join(o.spool, "JOB5.stdout")); err != nil {
		t.Errorf("spool file: %v, want it kept", err)
	}
}
