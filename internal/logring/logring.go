// Package logring keeps the last log lines in memory, so that IT can fetch
// them remotely, with secrets and personal data redacted.
package logring

import (
	"bytes"
	"regexp"
	"sync"
)

// Ring is an io.Writer that keeps the last lines written to it.
type Ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
	part  []byte
}

// New returns a ring that keeps n lines.
func New(n int) *Ring { return &Ring{lines: make([]string, n)} }

// Write splits p into lines and keeps them.
func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.part = append(r.part, p...)
	for {
		i := bytes.IndexByte(r.part, '\n')
		if i < 0 {
			break
		}
		r.lines[r.next] = string(r.part[:i])
		r.next = (r.next + 1) % len(r.lines)
		if r.next == 0 {
			r.full = true
		}
		r.part = r.part[i+1:]
	}
	if len(r.part) > 64<<10 {
		r.part = nil // a line without end: drop it
	}
	return len(p), nil
}

// Last returns up to n of the most recent lines, oldest first, redacted.
func (r *Ring) Last(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := r.next
	if r.full {
		size = len(r.lines)
	}
	n = min(n, size)
	out := make([]string, 0, n)
	for i := size - n; i < size; i++ {
		idx := i
		if r.full {
			idx = (r.next + i) % len(r.lines)
		}
		out = append(out, Redact(r.lines[idx]))
	}
	return out
}

var redactions = []struct {
	re   *regexp.Regexp
	with string
}{
	// Personal data: recipients and locations attached to parcels.
	{regexp.MustCompile(`\b(recipient|location|round|proxy|badge)=("(?:[^"\\]|\\.)*"|\S+)`), `$1=[redacted]`},
	{regexp.MustCompile(`"(recipient|location|round|proxy|badge)":"(?:[^"\\]|\\.)*"`), `"$1":"[redacted]"`},
	// Secrets that must never leave the box, should one reach a log.
	{regexp.MustCompile(`\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}`), `[redacted-hash]`},
	{regexp.MustCompile(`-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----`), `[redacted-pem]`},
	{regexp.MustCompile(`(?i)\b(password|passwd|secret|token)=("(?:[^"\\]|\\.)*"|\S+)`), `$1=[redacted]`},
}

// Redact removes personal data and secrets from a log line.
func Redact(line string) string {
	for _, r := range redactions {
		line = r.re.ReplaceAllString(line, r.with)
	}
	return line
}
