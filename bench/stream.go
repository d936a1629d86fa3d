package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"time"
)

// Stream throughput (issue 4): a raw stream of dd's zeros through the
// gateway against `dd | cat > /dev/null` on the same machine, interleaved;
// the minimal server streaming the same dd (Cmd.Stdout = ResponseWriter)
// shows what HTTP over loopback costs by itself.

type streamResult struct {
	name  string
	data  []float64 // MiB/s to the last byte of output
	total []float64 // MiB/s to the end of the response (trailers)
}

func benchStream(ctx context.Context, r *report, g *gateway, m *minimal, mib, reps int) error {
	local := &streamResult{name: "`dd if=/dev/zero bs=1M count=N | cat > /dev/null`, local"}
	viaMinimal := &streamResult{name: "minimal net/http server, `Cmd.Stdout = ResponseWriter`"}
	viaGateway := &streamResult{name: "**gateway**, raw stream (`Accept: application/octet-stream`)"}
	client := newClient(1, nil)
	defer client.CloseIdleConnections()
	size := float64(mib)
	for i := range reps + 1 {
		start := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("dd if=/dev/zero bs=1M count=%d status=none | cat > /dev/null", mib))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("dd | cat: %v: %s", err, out)
		}
		d := time.Since(start)

		gd, gt, err := streamOnce(ctx, client, g.url+"/v1/commands/zeros/run?count="+strconv.Itoa(mib), int64(mib)<<20, true)
		if err != nil {
			return fmt.Errorf("gateway stream: %w", err)
		}
		md, mt, err := streamOnce(ctx, client, m.url+"/stream?count="+strconv.Itoa(mib), int64(mib)<<20, false)
		if err != nil {
			return fmt.Errorf("minimal server stream: %w", err)
		}
		if i == 0 {
			continue // warm-up
		}
		local.data = append(local.data, size/d.Seconds())
		local.total = append(local.total, size/d.Seconds())
		viaGateway.data = append(viaGateway.data, size/gd.Seconds())
		viaGateway.total = append(viaGateway.total, size/gt.Seconds())
		viaMinimal.data = append(viaMinimal.data, size/md.Seconds())
		viaMinimal.total = append(viaMinimal.total, size/mt.Seconds())
	}

	r.section("4. Stream throughput (issue 4)")
	r.printf("%d MiB of zeros from `dd bs=1M`, %d repetitions after a warm-up, interleaved; the HTTP client reads with a "+
		"256 KiB buffer and checks the byte count (and, from the gateway, the trailers `Execgw-Exit-Code: 0`, "+
		"`Execgw-State: succeeded`). The gateway also stores the first 16 MiB (`output_limit`) in the job's stdout "+
		"file and fsyncs it when the job ends, before the trailers. Medians:\n\n", mib, reps)
	rows := [][]string{}
	base := median(local.data)
	for _, s := range []*streamResult{local, viaMinimal, viaGateway} {
		rows = append(rows, []string{s.name, fmt.Sprintf("%.0f MiB/s", median(s.data)), fmt.Sprintf("%.0f MiB/s", median(s.total)),
			fmt.Sprintf("%.0f–%.0f MiB/s", slices.Min(s.total), slices.Max(s.total)), fmt.Sprintf("%.2f", median(s.total)/base)})
	}
	r.table([]string{"", "to the last byte", "to the end (trailers)", "range over the repetitions (to the end)", "ratio to dd | cat"}, rows)
	ratio := median(viaGateway.total) / base
	r.printf("Gateway / minimal server: %.2f.\n\n", median(viaGateway.total)/median(viaMinimal.total))
	r.target(target{issue: "4", figure: "stream throughput, gateway / `dd | cat`", measured: fmt.Sprintf("%.2f (minimal server: %.2f)", ratio, median(viaMinimal.total)/base),
		goal: "≥ 0.8", met: ratio >= 0.8})
	return nil
}

// streamOnce POSTs url and reads the body to its end; it returns the time
// to the last data byte and to the end of the response.
func streamOnce(ctx context.Context, client *http.Client, url string, want int64, trailers bool) (data, total time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Accept", "application/octet-stream")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return 0, 0, &statusError{code: resp.StatusCode, body: string(body)}
	}
	buf := make([]byte, 256<<10)
	var n int64
	var last time.Time
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			n += int64(k)
			last = time.Now()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	end := time.Now()
	if n != want {
		return 0, 0, fmt.Errorf("read %d bytes, want %d", n, want)
	}
	if trailers {
		if c, s := resp.Trailer.Get("Execgw-Exit-Code"), resp.Trailer.Get("Execgw-State"); c != "0" || s != "succeeded" {
			return 0, 0, fmt.Errorf("trailers: exit code %q, state %q", c, s)
		}
	}
	return last.Sub(start), end.Sub(start), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
