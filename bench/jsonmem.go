package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/execgw/execgw/internal/gatewaytest"
)

// Memory of bound JSON runs (issue 13): N clients at once each ask for a
// bound JSON run that prints output_limit (16 MiB), text or zero bytes, and the
// gateway's peak resident memory (VmHWM of /proc/PID/status) is read when
// every answer has arrived. Each level runs on a fresh gateway, so that its
// VmHWM is its own. The gateway's RSS is watched meanwhile: past
// jsonMemCap it is killed and the level reported as over the cap, so that
// a gateway that holds every answer whole cannot take the machine down.

var jsonMemLevels = []int{1, 8, 64}

const (
	jsonMemOutput = 16 << 20 // bytes each run prints: output_limit
	jsonMemCap    = 6 << 30  // VmRSS at which the gateway is stopped
)

// jsonMemCommands are added to the benchmark's configuration: text that
// needs no escaping (the answer is as large as the output), and zero bytes,
// each escaped as \u0000 (the answer six times as large).
var jsonMemCommands = fmt.Sprintf(`  print16m:
    description: prints output_limit of text, for the memory of bound JSON runs
    argv: ["sh", "-c", "head -c %[1]d /dev/zero | tr '\\000' a"]
  zeros16m:
    description: prints output_limit of zero bytes, for the memory of bound JSON runs
    argv: ["head", "-c", "%[1]d", "/dev/zero"]
`, jsonMemOutput)

// jsonMemVariant is one kind of output.
type jsonMemVariant struct {
	command, what string
}

var jsonMemVariants = []jsonMemVariant{
	{"print16m", "text (`head -c 16777216 /dev/zero | tr '\\000' a`: nothing to escape, the answer as large as the output)"},
	{"zeros16m", "zero bytes (`head -c 16777216 /dev/zero`: each escaped as `\\u0000`, the answer six times as large)"},
}

type jsonMemResult struct {
	variant                    jsonMemVariant
	runs                       int
	baseRSS, peakHWM, afterRSS int64 // bytes
	overCap                    bool
	elapsed                    time.Duration
}

func benchJSONMemory(ctx context.Context, r *report, bin, dir string) error {
	var results []jsonMemResult
	for _, v := range jsonMemVariants {
		for _, n := range jsonMemLevels {
			res, err := jsonMemLevel(ctx, bin, filepath.Join(dir, "jsonmem-"+v.command+"-"+strconv.Itoa(n)), v, n)
			if err != nil {
				return fmt.Errorf("%s, %d runs: %w", v.command, n, err)
			}
			results = append(results, res)
			if res.overCap {
				break // larger levels would only be over it sooner
			}
		}
	}

	r.section("7. Memory of bound JSON runs (issue 13)")
	r.printf("N clients at once each POST a bound JSON run (`Accept: application/json`) of a command printing %d MiB "+
		"(`output_limit` 16 MiB, so all of it is stored and answered) and read the answer to its end, checking its "+
		"status, size and end. A fresh gateway per level; its VmRSS is read after one small warm-up run, VmHWM (the peak) "+
		"and VmRSS once every answer has arrived. A gateway past %d GiB of VmRSS is killed and the level not finished. "+
		"The output is\n\n", jsonMemOutput>>20, jsonMemCap>>30)
	for _, v := range jsonMemVariants {
		r.printf("- `%s`: %s\n", v.command, v.what)
	}
	r.printf("\n")
	rows := [][]string{}
	worst := results[0]
	var worstPerRun int64
	for _, res := range results {
		if res.overCap {
			rows = append(rows, []string{res.variant.command, strconv.Itoa(res.runs), mibs(res.baseRSS), fmt.Sprintf("over %d GiB: stopped", jsonMemCap>>30), "", "", ""})
			worst = res
			worstPerRun = jsonMemCap
			continue
		}
		perRun := (res.peakHWM - res.baseRSS) / int64(res.runs)
		if res.runs == jsonMemLevels[len(jsonMemLevels)-1] && !worst.overCap && perRun >= worstPerRun {
			worst, worstPerRun = res, perRun
		}
		rows = append(rows, []string{res.variant.command, strconv.Itoa(res.runs), mibs(res.baseRSS), mibs(res.peakHWM), mibs(res.afterRSS),
			mibs(perRun), res.elapsed.Round(10 * time.Millisecond).String()})
	}
	r.table([]string{"output", "runs at once", "VmRSS before", "VmHWM (peak)", "VmRSS after", "peak over idle, per run", "all answered in"}, rows)
	measured := fmt.Sprintf("%s per run (%s: peak %s with %d runs)", mibs(worstPerRun), worst.variant.command, mibs(worst.peakHWM), worst.runs)
	if worst.overCap {
		measured = fmt.Sprintf("over %d GiB (%s, %d runs)", jsonMemCap>>30, worst.variant.command, worst.runs)
	}
	r.target(target{issue: "13", figure: "gateway peak memory over idle per bound JSON run printing 16 MiB",
		measured: measured, goal: "< 1 MiB per run, whatever the output", met: !worst.overCap && worstPerRun < 1<<20})
	return nil
}

func mibs(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// jsonMemLevel runs n bound JSON runs at once on a fresh gateway.
func jsonMemLevel(ctx context.Context, bin, dir string, v jsonMemVariant, n int) (res jsonMemResult, err error) {
	res.variant, res.runs = v, n
	g, err := newGateway(bin, dir, "jsonmem", gatewayOptions{maxConcurrent: 2 * n, maxQueued: 100, commands: jsonMemCommands})
	if err != nil {
		return res, err
	}
	if err := g.start(); err != nil {
		return res, err
	}
	defer func() {
		if stopErr := g.stop(); err == nil && stopErr != nil && !res.overCap {
			err = fmt.Errorf("gateway exit: %w; log:\n%s", stopErr, tailOf(g.logPath))
		}
	}()
	if err := g.waitServing(ctx); err != nil {
		return res, err
	}
	if err := g.runTrue(ctx, g.client); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	st, err := gatewaytest.Status(g.pid())
	if err != nil {
		return res, err
	}
	res.baseRSS = st["VmRSS"] << 10

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var overCap atomic.Bool
	watchDone := make(chan struct{})
	go func() { // exits when the runs are over (cancel) or the cap is hit
		defer close(watchDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tick.C:
			}
			if st, err := gatewaytest.Status(g.pid()); err == nil && st["VmRSS"]<<10 > jsonMemCap {
				overCap.Store(true)
				_ = g.proc.Signal(syscall.SIGKILL)
				cancel()
				return
			}
		}
	}()

	client := newClient(n, nil)
	defer client.CloseIdleConnections()
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() { // exits when its answer has been read or runCtx ends
			defer wg.Done()
			errs[i] = jsonMemRun(runCtx, client, g.url+"/v1/commands/"+v.command+"/run")
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	cancel()
	<-watchDone
	if res.overCap = overCap.Load(); res.overCap {
		<-g.exited
		return res, nil
	}
	for i, err := range errs {
		if err != nil {
			return res, fmt.Errorf("run %d: %w", i, err)
		}
	}
	if st, err = gatewaytest.Status(g.pid()); err != nil {
		return res, err
	}
	res.peakHWM, res.afterRSS = st["VmHWM"]<<10, st["VmRSS"]<<10
	return res, nil
}

// jsonMemRun asks for one bound JSON run and reads the answer, holding
// only its ends.
func jsonMemRun(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return &statusError{code: resp.StatusCode, body: string(body)}
	}
	buf := make([]byte, 256<<10)
	var size int64
	var head, tail []byte
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if head == nil {
				head = bytes.Clone(buf[:min(k, 200)])
			}
			tail = append(tail, buf[:k]...)
			tail = tail[max(0, len(tail)-100):]
			size += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	const end = `","stderr":""}`
	if size < jsonMemOutput || !bytes.HasSuffix(tail, []byte(end)) || !bytes.Contains(head, []byte(`"state":"succeeded"`)) {
		return fmt.Errorf("answer of %d bytes, starting %q, ending %q; want a succeeded record and %d bytes of stdout", size, head, tail, jsonMemOutput)
	}
	return nil
}
