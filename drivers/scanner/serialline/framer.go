package serialline

import (
	"bytes"
	"fmt"
)

// ControlPolicy says what to do with control characters inside a line.
type ControlPolicy int

// Control character policies.
const (
	// StripControl removes control characters except GS.
	StripControl ControlPolicy = iota
	// KeepControl keeps every byte.
	KeepControl
	// RejectControl discards a line that holds a control character other
	// than GS, with a warning.
	RejectControl
)

// ParseControlPolicy parses "strip", "keep" or "reject".
func ParseControlPolicy(s string) (ControlPolicy, error) {
	switch s {
	case "", "strip":
		return StripControl, nil
	case "keep":
		return KeepControl, nil
	case "reject":
		return RejectControl, nil
	}
	return 0, fmt.Errorf("unknown control character policy %q", s)
}

const gs = 0x1d

// Framer cuts a byte stream into barcode lines. It holds at most MaxLength
// bytes of an unfinished line. The zero value is not usable; use NewFramer.
type Framer struct {
	term      []byte
	prefix    []byte
	suffix    []byte
	max       int
	control   ControlPolicy
	buf       []byte
	overflow  bool
	discarded int
}

// NewFramer returns a framer for lines ending in term, at most max bytes
// long (terminator excluded).
func NewFramer(term, prefix, suffix []byte, max int, control ControlPolicy) *Framer {
	if len(term) == 0 {
		term = []byte{'\r'}
	}
	if max <= 0 {
		max = 256
	}
	return &Framer{term: term, prefix: prefix, suffix: suffix, max: max, control: control, buf: make([]byte, 0, max+len(term))}
}

// Line is one framed line, or a warning about discarded input.
type Line struct {
	// Data is the barcode; nil when Warning is set.
	Data []byte
	// Warning says why input was discarded.
	Warning error
}

// Feed consumes bytes and returns the lines they completed, in order. The
// returned slices are freshly allocated and owned by the caller.
func (f *Framer) Feed(p []byte) []Line {
	var out []Line
	for _, c := range p {
		if f.overflow {
			f.discarded++
			// Discard until the terminator's last byte is seen after its
			// earlier bytes; for one-byte terminators that is just the byte.
			f.buf = append(f.buf, c)
			if len(f.buf) > len(f.term) {
				f.buf = f.buf[len(f.buf)-len(f.term):]
			}
			if bytes.Equal(f.buf, f.term) {
				out = append(out, Line{Warning: fmt.Errorf("discarded a line of %d bytes: longer than max_length %d", f.discarded-len(f.term), f.max)})
				f.overflow, f.discarded, f.buf = false, 0, f.buf[:0]
			}
			continue
		}
		f.buf = append(f.buf, c)
		if bytes.HasSuffix(f.buf, f.term) {
			line := f.buf[:len(f.buf)-len(f.term)]
			if l, ok := f.finish(line); ok {
				out = append(out, l)
			}
			f.buf = f.buf[:0]
			continue
		}
		if len(f.buf) > f.max+len(f.term)-1 {
			// Keep what could be the start of a multi-byte terminator.
			f.overflow = true
			f.discarded = len(f.buf)
			keep := f.buf[len(f.buf)-(len(f.term)-1):]
			f.buf = append(f.buf[:0], keep...)
		}
	}
	return out
}

// Pending reports how many bytes of an unfinished line are buffered.
func (f *Framer) Pending() int { return len(f.buf) }

// Reset drops any unfinished line, e.g. after the port was reopened.
func (f *Framer) Reset() { f.buf, f.overflow, f.discarded = f.buf[:0], false, 0 }

func isControl(c byte) bool { return (c < 0x20 || c == 0x7f) && c != gs }

func (f *Framer) finish(line []byte) (Line, bool) {
	if len(f.prefix) > 0 {
		line = bytes.TrimPrefix(line, f.prefix)
	}
	if len(f.suffix) > 0 {
		line = bytes.TrimSuffix(line, f.suffix)
	}
	switch f.control {
	case StripControl:
		clean := make([]byte, 0, len(line))
		for _, c := range line {
			if !isControl(c) {
				clean = append(clean, c)
			}
		}
		line = clean
	case RejectControl:
		for _, c := range line {
			if isControl(c) {
				return Line{Warning: fmt.Errorf("rejected a line holding control character 0x%02x", c)}, true
			}
		}
		line = bytes.Clone(line)
	default:
		line = bytes.Clone(line)
	}
	if len(line) == 0 {
		return Line{}, false
	}
	return Line{Data: line}, true
}
