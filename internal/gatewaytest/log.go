package gatewaytest

import (
	"bytes"
	"strings"
	"sync"
)

// Log collects a gateway's log lines, safe for use across goroutines.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Find returns the first complete line containing substr, or "".
func (l *Log) Find(substr string) string {
	if lines := l.Lines(substr); len(lines) > 0 {
		return lines[0]
	}
	return ""
}

// Lines returns every complete line containing all of substrs.
func (l *Log) Lines(substrs ...string) []string {
	text := l.String()
	// A line still being written is not a line yet.
	text = text[:strings.LastIndexByte(text, '\n')+1]
	var out []string
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		ok := line != ""
		for _, s := range substrs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}
