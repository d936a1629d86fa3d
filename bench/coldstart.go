package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"
)

// Cold start (issue 5): the benchmark plays systemd. It holds a listening
// socket, starts a fresh gateway with it as fd 3 (LISTEN_FDS=1), and at once
// sends GET /healthz on it: the time from the process start and the first
// connection to the first response. The minimal server started the same way
// is the floor: a Go process that serves HTTP and does nothing else.

func benchColdStart(ctx context.Context, r *report, bin, dir string, starts int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	defer f.Close()
	url := "http://" + ln.Addr().String()

	var viaGateway, viaMinimal durations
	for i := range starts + 1 {
		g, err := newGateway(bin, filepath.Join(dir, "coldstart"), "coldstart", gatewayOptions{maxConcurrent: 64, maxQueued: 100, listener: f})
		if err != nil {
			return err
		}
		start := time.Now()
		if err := g.start(); err != nil {
			return err
		}
		err = firstResponse(ctx, url)
		d := time.Since(start)
		if stopErr := g.stop(); err == nil && stopErr != nil {
			err = fmt.Errorf("gateway exit: %w; log:\n%s", stopErr, tailOf(g.logPath))
		}
		if err != nil {
			return fmt.Errorf("cold start %d: %w", i, err)
		}

		start = time.Now()
		m, err := startMinimal(f)
		if err != nil {
			return err
		}
		err = firstResponse(ctx, url)
		md := time.Since(start)
		m.stop()
		if err != nil {
			return fmt.Errorf("minimal cold start %d: %w", i, err)
		}
		if i == 0 {
			continue // the first creates the database and warms the page cache
		}
		viaGateway = append(viaGateway, d)
		viaMinimal = append(viaMinimal, md)
	}

	r.section("5. Cold start under socket activation (issue 5)")
	r.printf("The benchmark holds a listening socket and, %d times after one warm-up start, starts a fresh gateway with it "+
		"as fd 3 (`sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"'`, as systemd would) and at once sends `GET /healthz` on "+
		"a new connection to it: the connection waits in the socket's backlog while the process starts. Measured from just "+
		"before the process is started until the response has been read. The state directory is the same at every start "+
		"(the database exists; the previous instance's jobs are there). Interleaved with the minimal net/http server "+
		"started the same way.\n\n", starts)
	r.table([]string{"", "starts", "p50", "min", "max"}, [][]string{
		{"**gateway**: process start + first connection → first response", fmt.Sprint(len(viaGateway)), ms(viaGateway.pct(50)), ms(viaGateway.pct(0)), ms(viaGateway.max())},
		{"minimal net/http server, same way", fmt.Sprint(len(viaMinimal)), ms(viaMinimal.pct(50)), ms(viaMinimal.pct(0)), ms(viaMinimal.max())},
	})
	r.printf("The gateway's start-up (config, bbolt open and recovery, metrics, Echo) costs %s at p50 over the minimal server's.\n\n",
		ms(viaGateway.pct(50)-viaMinimal.pct(50)))
	r.target(target{issue: "5", figure: "cold start, first connection → first response (p50)", measured: ms(viaGateway.pct(50)) + " (max " + ms(viaGateway.max()) + ")",
		goal: "< 50 ms", met: viaGateway.pct(50) < 50*time.Millisecond})
	return nil
}

// firstResponse sends GET /healthz on a new connection and reads the
// answer.
func firstResponse(ctx context.Context, url string) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
	_, err := exchange(ctx, client, http.MethodGet, url+"/healthz")
	return err
}
