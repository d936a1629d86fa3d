package cgroup

// DetectWith is detect with its inputs injected, for the external tests.
var DetectWith = detect

// ErrNotDelegated is detect's refusal.
var ErrNotDelegated = errNotDelegated
