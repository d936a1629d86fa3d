package main

import "testing"

func TestSchedulerProcs(t *testing.T) {
	for _, tc := range []struct {
		env       string
		def, want int
	}{
		{"", 1, 2},
		{"", 2, 4},
		{"", 64, 128},
		{"3", 3, 3}, // the operator's choice, which the runtime already applied
		{"1", 1, 1},
	} {
		if got := schedulerProcs(tc.env, tc.def); got != tc.want {
			t.Errorf("schedulerProcs(%q, %d) = %d, want %d", tc.env, tc.def, got, tc.want)
		}
	}
}
