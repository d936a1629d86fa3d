package main

// End-to-end tests of live output (issue 4): raw streams with trailers,
// Server-Sent Events, and stdin from the request body, measured against
// the real gateway process, its memory included.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const streamConfig = `
max_body: 80MiB
commands:
  zeros:
    argv: ["dd", "if=/dev/zero", "bs=1M", "count={count}", "status=none"]
    params:
      count: {type: int, min: 1, max: 1000000, required: true}
  exit:
    argv: ["sh", "-c", 'echo out; echo err >&2; exit "$1"', "exit", "{code}"]
    params:
      code: {type: int, min: 0, max: 255, required: true}
  selfkill:
    argv: ["sh", "-c", 'echo before; kill -KILL $$']
  slowprint:
    argv: ["sh", "-c", 'echo first; while [ ! -e "$0" ]; do sleep 0.02; done; echo second', "{flag}"]
    params:
      flag: {required: true}
  slow:
    argv: ["sleep", "300"]
    timeout: 300ms
  wc:
    argv: ["wc", "-c"]
    stdin: body
  lines:
    argv: ["sh", "-c", 'printf "one\ntwo\n"; printf "err\n" >&2; printf last']
`

// streamRequest sends a request with the shared client and returns the
// response with its body unread (closed at the end of the test). A body
// that is not a bytes or strings reader is sent chunked.
func streamRequest(t *testing.T, ctx context.Context, g *gateway, method, path string, body io.Reader, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, g.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// streamJob fetches a job's record.
func streamJob(t *testing.T, g *gateway, id string) record {
	t.Helper()
	resp, body := g.do("GET", "/v1/jobs/"+id, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET job %s: %d %s", id, resp.StatusCode, body)
	}
	return decode[record](t, body)
}

// streamWaitEnded polls the job until it has ended.
func streamWaitEnded(t *testing.T, g *gateway, id string) record {
	t.Helper()
	var rec record
	waitFor(t, 20*time.Second, "job "+id+" to end", func() bool {
		rec = streamJob(t, g, id)
		return rec.State != "running" && rec.State != "queued"
	})
	return rec
}

// streamRSS is the resident memory of a process, in bytes.
func streamRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// streamPeakRSS samples the gateway's memory every 50 ms from now until
// stop is called, which returns the peak.
func streamPeakRSS(t *testing.T, g *gateway) (stop func() int64) {
	t.Helper()
	pid := g.cmd.Process.Pid
	peak := streamRSS(t, pid)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // exits when stop closes done
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue // never t.Fatal in a goroutine; the gateway's end shows elsewhere
			}
			for line := range strings.SplitSeq(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					peak = max(peak, kb<<10)
				}
			}
		}
	}()
	return func() int64 {
		close(done)
		wg.Wait()
		return max(peak, streamRSS(t, pid))
	}
}

// streamPattern produces n bytes (forever when n < 0) of a fixed pattern,
// generated as read, never held whole. With gate set, it blocks once it
// has produced gateAt bytes, until gate is closed or ctx is done.
type streamPattern struct {
	n, read int64
	ctx     context.Context
	gate    chan struct{}
	gateAt  int64
	total   atomic.Int64 // read, for other goroutines
}

func (r *streamPattern) readBytes() int64 { return r.total.Load() }

func (r *streamPattern) Read(p []byte) (int, error) {
	if r.gate != nil && r.read >= r.gateAt {
		select {
		case <-r.gate:
			r.gate = nil
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	if r.n >= 0 && r.read >= r.n {
		return 0, io.EOF
	}
	if r.n >= 0 {
		p = p[:min(int64(len(p)), r.n-r.read)]
	}
	if r.gate != nil {
		p = p[:min(int64(len(p)), r.gateAt-r.read)]
	}
	for i := range p {
		p[i] = byte('a' + (r.read+int64(i))%26)
	}
	r.read += int64(len(p))
	r.total.Store(r.read)
	return len(p), nil
}

const mib = 1 << 20

// TestStreamRawIsByteExact streams 256 MiB of dd through the gateway:
// every byte arrives, in order, then the trailers.
func TestStreamRawIsByteExact(t *testing.T) {
	g := startGateway(t, streamConfig)
	const count = 256
	start := time.Now()
	resp := streamRequest(t, context.Background(), g, "POST", fmt.Sprintf("/v1/commands/zeros/run?count=%d", count), nil,
		"Accept", "application/octet-stream")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	id := resp.Header.Get("Execgw-Job-Id")
	if id == "" {
		t.Errorf("no Execgw-Job-Id")
	}
	for _, k := range []string{"Execgw-Exit-Code", "Execgw-State"} {
		if _, ok := resp.Trailer[k]; !ok {
			t.Errorf("trailer %s not announced (Trailer: %v)", k, resp.Trailer)
		}
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	took := time.Since(start)
	want := sha256.New()
	zeros := make([]byte, mib)
	for range count {
		want.Write(zeros)
	}
	if n != count*mib || string(h.Sum(nil)) != string(want.Sum(nil)) {
		t.Errorf("got %d bytes (sha256 %x), want %d zero bytes", n, h.Sum(nil), count*mib)
	}
	if code, state := resp.Trailer.Get("Execgw-Exit-Code"), resp.Trailer.Get("Execgw-State"); code != "0" || state != "succeeded" {
		t.Errorf("trailers exit code %q state %q, want 0 succeeded", code, state)
	}
	t.Logf("%d MiB in %v (%.0f MiB/s)", count, took, float64(count)/took.Seconds())

	// What was streamed was also stored, up to output_limit (16 MiB).
	rec := streamJob(t, g, id)
	if rec.State != "succeeded" || rec.StdoutBytes != count*mib || !rec.StdoutTruncated {
		t.Errorf("record %s stdout_bytes %d truncated %v, want succeeded %d true", rec.State, rec.StdoutBytes, rec.StdoutTruncated, count*mib)
	}
	_, stored := g.do("GET", "/v1/jobs/"+id+"/stdout", nil)
	if len(stored) != 16*mib {
		t.Errorf("stored stdout %d bytes, want 16 MiB", len(stored))
	}
	g.stop()
}

// TestStreamRawTrailers: the trailers say how the job ended, whatever the
// end; text/plain streams the same way.
func TestStreamRawTrailers(t *testing.T) {
	g := startGateway(t, streamConfig)
	tests := []struct {
		name, path, accept string
		body, code, state  string
	}{
		{"text/plain succeeded", "/v1/commands/exit/run?code=0", "text/plain", "out\n", "0", "succeeded"},
		{"exit 3", "/v1/commands/exit/run?code=3", "application/octet-stream", "out\n", "3", "failed"},
		{"killed by its own SIGKILL", "/v1/commands/selfkill/run", "application/octet-stream", "before\n", "137", "failed"},
		{"timed out by SIGTERM", "/v1/commands/slow/run", "text/plain", "", "143", "timed_out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := streamRequest(t, context.Background(), g, "POST", tc.path, nil, "Accept", tc.accept)
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.accept {
				t.Errorf("status %d Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if string(body) != tc.body {
				t.Errorf("body %q, want %q (stderr is not streamed)", body, tc.body)
			}
			code, state := resp.Trailer.Get("Execgw-Exit-Code"), resp.Trailer.Get("Execgw-State")
			if code != tc.code || state != tc.state {
				t.Errorf("trailers exit code %q state %q, want %s %s", code, state, tc.code, tc.state)
			}
			if rec := streamJob(t, g, resp.Header.Get("Execgw-Job-Id")); rec.State != tc.state {
				t.Errorf("record state %s, trailer %s", rec.State, tc.state)
			}
		})
	}
	g.stop()
}

// TestStreamRawFlushesPromptly: a line the process printed reaches the
// client while the process goes on running.
func TestStreamRawFlushesPromptly(t *testing.T) {
	g := startGateway(t, streamConfig)
	flag := filepath.Join(t.TempDir(), "flag")
	resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/slowprint/run?flag="+flag, nil, "Accept", "text/plain")
	r := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() { // exits when the first line or the end of the body arrives
		line, _ := r.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "first\n" {
			t.Errorf("first line %q", line)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the first line did not arrive while the process ran")
		_ = os.WriteFile(flag, nil, 0o600)
		<-first
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest %q %v", rest, err)
	}
	if resp.Trailer.Get("Execgw-State") != "succeeded" {
		t.Errorf("trailers %v", resp.Trailer)
	}
	g.stop()
}

// TestStreamSlowReaderHasBackpressure: a client reading slowly slows the
// process down instead of making the gateway buffer, and closing the
// stream cancels the job and kills its tree.
func TestStreamSlowReaderHasBackpressure(t *testing.T) {
	g := startGateway(t, streamConfig)
	// Warm up: buffers, pools and the race detector's shadow memory for a
	// stream exist before the baseline is taken.
	warm := streamRequest(t, context.Background(), g, "POST", "/v1/commands/zeros/run?count=32", nil, "Accept", "application/octet-stream")
	if _, err := io.Copy(io.Discard, warm.Body); err != nil {
		t.Fatal(err)
	}
	pid := g.cmd.Process.Pid
	base := streamRSS(t, pid)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := streamRequest(t, ctx, g, "POST", "/v1/commands/zeros/run?count=1000000", nil, "Accept", "application/octet-stream")
	id := resp.Header.Get("Execgw-Job-Id")
	stopRSS := streamPeakRSS(t, g)
	buf := make([]byte, 32<<10)
	var read int64
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		n, err := io.ReadFull(resp.Body, buf)
		read += int64(n)
		if err != nil {
			t.Fatalf("after %d bytes: %v", read, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	peak := stopRSS()
	produced := streamJob(t, g, id).StdoutBytes
	t.Logf("read %d MiB slowly; the process produced %d MiB; gateway RSS %d MiB, peak %d MiB",
		read/mib, produced/mib, base/mib, peak/mib)
	// Between the process and the client: a pipe, a copy buffer, socket
	// buffers (a few MiB on loopback). Nothing else may hold output.
	if ahead := produced - read; ahead > 32*mib {
		t.Errorf("the process is %d MiB ahead of the client: no backpressure", ahead/mib)
	}
	if grew := peak - base; grew > 64*mib {
		t.Errorf("gateway RSS grew by %d MiB while streaming to a slow reader", grew/mib)
	}

	// The client goes away: the job is canceled and its process killed.
	cancel()
	resp.Body.Close()
	rec := streamWaitEnded(t, g, id)
	if rec.State != "canceled" || rec.CancelReason == nil || *rec.CancelReason != "client_disconnected" {
		t.Errorf("job %s %v, want canceled client_disconnected", rec.State, rec.CancelReason)
	}
	waitFor(t, 5*time.Second, "the process to die", func() bool { return len(groupMembers(rec.Pid)) == 0 })
	g.stop()
}

// TestStreamEvents: Server-Sent Events through the real gateway: lines in
// order per stream, the final unterminated line, then the exit record.
func TestStreamEvents(t *testing.T) {
	g := startGateway(t, streamConfig)
	resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/lines/run", nil, "Accept", "text/event-stream")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var stdout, stderr, exits []string
	for ev, err := range streamEvents(resp.Body) {
		if err != nil {
			t.Fatal(err)
		}
		switch ev.name {
		case "stdout":
			stdout = append(stdout, ev.data)
		case "stderr":
			stderr = append(stderr, ev.data)
		case "exit":
			exits = append(exits, ev.data)
		default:
			t.Errorf("unexpected event %q", ev.name)
		}
		if len(exits) > 0 && ev.name != "exit" {
			t.Errorf("event %s after exit", ev.name)
		}
	}
	if strings.Join(stdout, "|") != "one|two|last" || strings.Join(stderr, "|") != "err" {
		t.Errorf("stdout %q stderr %q", stdout, stderr)
	}
	if len(exits) != 1 {
		t.Fatalf("%d exit events", len(exits))
	}
	rec := decode[record](t, []byte(exits[0]))
	if rec.ID != resp.Header.Get("Execgw-Job-Id") || rec.State != "succeeded" || rec.StdoutBytes != int64(len("one\ntwo\nlast")) {
		t.Errorf("exit record %s", exits[0])
	}
	g.stop()
}

type streamEvent struct{ name, data string }

// streamEvents parses a Server-Sent Events stream (comments skipped).
func streamEvents(r io.Reader) func(yield func(streamEvent, error) bool) {
	return func(yield func(streamEvent, error) bool) {
		br := bufio.NewReader(r)
		var ev streamEvent
		var data []string
		seen := false
		for {
			line, err := br.ReadString('\n')
			if err == io.EOF && line == "" && !seen {
				return
			}
			if err != nil {
				yield(streamEvent{}, fmt.Errorf("event stream: %w", err))
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if seen {
					ev.data = strings.Join(data, "\n")
					if !yield(ev, nil) {
						return
					}
				}
				ev, data, seen = streamEvent{}, nil, false
			case strings.HasPrefix(line, ":"):
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				seen = true
				switch field {
				case "event":
					ev.name = value
				case "data":
					data = append(data, value)
				}
			}
		}
	}
}

// TestStreamStdinLargeBody: a 64 MiB body, sent chunked as it is
// generated, reaches wc -c whole, in every mode, while the gateway's
// memory stays flat.
func TestStreamStdinLargeBody(t *testing.T) {
	g := startGateway(t, streamConfig)
	warm := streamRequest(t, context.Background(), g, "POST", "/v1/commands/wc/run", &streamPattern{n: 4 * mib}, "Accept", "text/plain")
	if _, err := io.Copy(io.Discard, warm.Body); err != nil {
		t.Fatal(err)
	}
	base := streamRSS(t, g.cmd.Process.Pid)
	const size = 64 * mib
	for _, accept := range []string{"application/json", "application/octet-stream", "text/event-stream"} {
		t.Run(accept, func(t *testing.T) {
			stopRSS := streamPeakRSS(t, g)
			resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/wc/run", &streamPattern{n: size}, "Accept", accept)
			body, err := io.ReadAll(resp.Body)
			peak := stopRSS()
			if err != nil {
				t.Fatal(err)
			}
			var out string
			switch accept {
			case "application/json":
				rec := decode[record](t, body)
				if rec.State != "succeeded" || rec.Stdout == nil {
					t.Fatalf("record %s", body)
				}
				out = *rec.Stdout
			case "application/octet-stream":
				out = string(body)
				if resp.Trailer.Get("Execgw-State") != "succeeded" {
					t.Errorf("trailers %v", resp.Trailer)
				}
			case "text/event-stream":
				for ev, err := range streamEvents(strings.NewReader(string(body))) {
					if err != nil {
						t.Fatal(err)
					}
					if ev.name == "stdout" {
						out = ev.data
					}
				}
			}
			if strings.TrimSpace(out) != strconv.Itoa(size) {
				t.Errorf("wc -c counted %q, want %d", out, size)
			}
			t.Logf("gateway RSS %d MiB before, peak %d MiB", base/mib, peak/mib)
			if grew := peak - base; grew > 48*mib {
				t.Errorf("gateway RSS grew by %d MiB while piping a %d MiB body", grew/mib, size/mib)
			}
		})
	}
	g.stop()
}

// TestStreamStdinOverMaxBody: a body announced larger than max_body is
// refused before anything starts; one that turns out larger (chunked) has
// already started a job, which ends failed with limit max_body.
func TestStreamStdinOverMaxBody(t *testing.T) {
	g := startGateway(t, strings.Replace(streamConfig, "max_body: 80MiB", "max_body: 1MiB", 1))

	t.Run("announced", func(t *testing.T) {
		// A raw connection: the headers alone, the body never sent, so
		// the answer cannot come from anything but the headers.
		conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/commands/wc/run HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n", 2*mib)
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || decode[apiErr](t, body).Error.Code != "payload_too_large" {
			t.Errorf("status %d %s, want 413 payload_too_large", resp.StatusCode, body)
		}
		if resp.Header.Get("Execgw-Job-Id") != "" {
			t.Errorf("a refused request has a job id")
		}
		if started := g.log.lines(`"message":"job started"`); len(started) != 0 {
			t.Errorf("a job started: %v", started)
		}
		if _, body := g.do("GET", "/v1/jobs", nil); !strings.Contains(string(body), `"jobs":[]`) {
			t.Errorf("jobs exist: %s", body)
		}
	})

	t.Run("chunked detached", func(t *testing.T) {
		resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/wc/run", &streamPattern{n: 4 * mib}, "Prefer", "respond-async")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Execgw-Job-Id") != "" {
			t.Errorf("status %d job id %q %s, want 413 and no job", resp.StatusCode, resp.Header.Get("Execgw-Job-Id"), body)
		}
	})

	for _, accept := range []string{"application/json", "application/octet-stream"} {
		t.Run("chunked "+accept, func(t *testing.T) {
			resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/wc/run", &streamPattern{n: 4 * mib}, "Accept", accept)
			body, _ := io.ReadAll(resp.Body)
			id := resp.Header.Get("Execgw-Job-Id")
			if id == "" {
				t.Fatalf("no Execgw-Job-Id: the job started, the answer must say which (status %d %s)", resp.StatusCode, body)
			}
			if accept == "application/json" {
				if resp.StatusCode != http.StatusRequestEntityTooLarge || decode[apiErr](t, body).Error.Code != "payload_too_large" {
					t.Errorf("status %d %s, want 413 payload_too_large", resp.StatusCode, body)
				}
			} else if resp.StatusCode != http.StatusOK || resp.Trailer.Get("Execgw-State") != "failed" {
				// The stream had begun: only the trailers can tell.
				t.Errorf("status %d trailers %v, want 200 and state failed", resp.StatusCode, resp.Trailer)
			}
			rec := streamWaitEnded(t, g, id)
			if rec.State != "failed" || rec.Limit == nil || *rec.Limit != "max_body" {
				t.Errorf("job %s limit %v, want failed max_body", rec.State, rec.Limit)
			}
		})
	}
	g.stop()
}

// TestStreamStdinClientDisconnects: a client that goes away while its
// body is still being piped to the process cancels the job.
func TestStreamStdinClientDisconnects(t *testing.T) {
	g := startGateway(t, streamConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := &streamPattern{n: -1, ctx: ctx, gate: make(chan struct{}), gateAt: mib}
	errc := g.doInBackground(ctx, "POST", "/v1/commands/wc/run", body) // until cancel below
	started := decode[jobLine](t, []byte(g.waitLog(`"message":"job started"`, 10*time.Second)))
	waitFor(t, 10*time.Second, "the first MiB to reach the gateway", func() bool {
		return body.readBytes() >= mib
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("request: %v, want canceled", err)
	}
	rec := streamWaitEnded(t, g, started.JobID)
	if rec.State != "canceled" || rec.CancelReason == nil || *rec.CancelReason != "client_disconnected" {
		t.Errorf("job %s %v, want canceled client_disconnected", rec.State, rec.CancelReason)
	}
	if alive(started.Pid) {
		t.Errorf("wc (pid %d) still runs", started.Pid)
	}
	g.stop()
}

// TestStreamDetachedStdin: a detached job's body is spooled to a file and
// read by the process later; the spool file is released when the job ends
// (GOGC=off: not by a finalizer, whenever the collector runs).
func TestStreamDetachedStdin(t *testing.T) {
	g := startGateway(t, streamConfig, gatewayOptions{env: []string{"GOGC=off"}})
	const size = 8 * mib
	var ids []string
	for range 3 {
		resp := streamRequest(t, context.Background(), g, "POST", "/v1/commands/wc/run", &streamPattern{n: size}, "Prefer", "respond-async")
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		ids = append(ids, resp.Header.Get("Execgw-Job-Id"))
	}
	for _, id := range ids {
		if rec := streamWaitEnded(t, g, id); rec.State != "succeeded" {
			t.Errorf("job %s %s", id, rec.State)
		}
		if _, out := g.do("GET", "/v1/jobs/"+id+"/stdout", nil); strings.TrimSpace(string(out)) != strconv.Itoa(size) {
			t.Errorf("wc -c counted %q, want %d", out, size)
		}
	}
	var held []string
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.cmd.Process.Pid))
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", g.cmd.Process.Pid, fd.Name()))
		if strings.Contains(target, "/spool/stdin-") {
			held = append(held, target)
		}
	}
	if len(held) != 0 {
		t.Errorf("the gateway still holds spool files of ended jobs: %v", held)
	}
	g.stop()
}

// TestStdinUnreadClientDisconnects: a process that never reads its stdin
// leaves the body unread, so Go never sees the client leave
// (golang/go#23262); the gateway watches the socket itself and cancels.
func TestStdinUnreadClientDisconnects(t *testing.T) {
	g := startGateway(t, streamConfig+`
  ignore:
    argv: ["sleep", "300"]
    stdin: body
`)
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Far more than the pipe holds, and less than announced: the client
	// is still sending when it leaves.
	if _, err := fmt.Fprintf(conn, "POST /v1/commands/ignore/run HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n", 64*mib); err != nil {
		t.Fatal(err)
	}
	started := decode[jobLine](t, []byte(g.waitLog(`"message":"job started"`, 10*time.Second)))
	conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(make([]byte, 8*mib)); err != nil {
		t.Fatalf("writing 8 MiB of the body (does the gateway stop reading it?): %v", err)
	}
	conn.Close()
	closed := time.Now()
	waitFor(t, 5*time.Second, "sleep to be killed", func() bool { return !alive(started.Pid) })
	t.Logf("process gone %v after the client closed", time.Since(closed))
	rec := streamWaitEnded(t, g, started.JobID)
	if rec.State != "canceled" || rec.CancelReason == nil || *rec.CancelReason != "client_disconnected" {
		t.Errorf("job %s %v, want canceled client_disconnected", rec.State, rec.CancelReason)
	}
	g.stop()
}
