package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// durations is a sample of latencies.
type durations []time.Duration

// pct returns the p-th percentile (0..100), nearest rank.
func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (d durations) mean() time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return sum / time.Duration(len(d))
}

func (d durations) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.3f ms", v)
}

// kib formats a number of bytes in KiB or MiB.
func kib(bytes float64) string {
	if math.Abs(bytes) >= 10<<20 {
		return fmt.Sprintf("%.1f MiB", bytes/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", bytes/1024)
}

// report is the Markdown document the benchmark prints.
type report struct {
	b       strings.Builder
	targets []target
}

// target is one figure with a target, for the summary.
type target struct {
	issue, figure, measured, goal string
	met                           bool
	// correctness marks a target that must hold on any machine (no
	// errors), unlike a speed target of this machine: -strict fails on it.
	correctness bool
}

func (r *report) printf(format string, args ...any) {
	fmt.Fprintf(&r.b, format, args...)
}

func (r *report) section(title string) {
	r.printf("\n## %s\n\n", title)
}

func (r *report) table(header []string, rows [][]string) {
	hdr := make([]string, len(header))
	for i, h := range header {
		hdr[i] = cell(h)
	}
	r.printf("| %s |\n|", strings.Join(hdr, " | "))
	for range header {
		r.printf("---|")
	}
	r.printf("\n")
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = cell(c)
		}
		r.printf("| %s |\n", strings.Join(cells, " | "))
	}
	r.printf("\n")
}

func (r *report) target(t target) {
	r.targets = append(r.targets, t)
	r.printf("**Target (issue %s): %s — measured %s: %s.**\n\n", t.issue, t.goal, t.measured, metWord(t.met))
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

func (r *report) summary() string {
	var b strings.Builder
	b.WriteString("| issue | figure | measured | target | |\n|---|---|---|---|---|\n")
	for _, t := range r.targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.issue, cell(t.figure), cell(t.measured), cell(t.goal), metWord(t.met))
	}
	return b.String()
}

// cell escapes the pipes of a table cell (inside code spans too, as
// GitHub's Markdown wants).
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
