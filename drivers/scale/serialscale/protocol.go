package serialscale

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/mailroomd/mailroomd/drivers/scale"
)

// Protocol is one scale dialect: what to send to ask for a weight, and how
// to cut and parse the replies.
type Protocol interface {
	// Name is the config name of the protocol.
	Name() string
	// Request is sent once per poll; nil for scales that stream.
	Request() []byte
	// Parse looks for one complete frame at the start of buf (7-bit data).
	// It returns how many bytes it consumed (0: need more data), and either
	// a reading (ok) or an error describing the frame. Garbage before a
	// frame is consumed without a reading.
	Parse(buf []byte) (n int, r scale.Reading, ok bool, err error)
}

// ByName returns a protocol; unit is the unit of scales whose frames carry
// none (toledo).
func ByName(name string, unit scale.Unit) (Protocol, error) {
	switch name {
	case "nci":
		return NCI{}, nil
	case "mt-sics":
		return SICS{}, nil
	case "toledo":
		if unit == "" {
			unit = scale.Pound
		}
		return Toledo{Unit: unit}, nil
	case "continuous":
		return Continuous{}, nil
	}
	return nil, fmt.Errorf("unknown scale protocol %q (nci, mt-sics, toledo, continuous)", name)
}

// Mask7 clears the parity bit of every byte in place.
func Mask7(b []byte) {
	for i := range b {
		b[i] &= 0x7f
	}
}

const (
	stx = 0x02
	etx = 0x03
)

// ParseUnit maps a unit as scales print it to a scale.Unit.
func ParseUnit(s string) (scale.Unit, bool) { return unitOf([]byte(s)) }

// unitOf is ParseUnit on bytes, without allocating.
func unitOf(b []byte) (scale.Unit, bool) {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.EqualFold(b, []byte("g")):
		return scale.Gram, true
	case bytes.EqualFold(b, []byte("kg")):
		return scale.Kilogram, true
	case bytes.EqualFold(b, []byte("lb")), bytes.EqualFold(b, []byte("lbs")):
		return scale.Pound, true
	case bytes.EqualFold(b, []byte("oz")):
		return scale.Ounce, true
	case bytes.EqualFold(b, []byte("mg")):
		return scale.Milligram, true
	}
	return scale.Unknown, false
}

// parseFloat parses a number without allocating for short inputs.
func parseFloat(b []byte) (float64, error) {
	return strconv.ParseFloat(string(b), 64) // does not escape: no copy for short inputs
}

// fields splits b at runs of spaces into out and returns how many fields
// it found (at most len(out)); it does not allocate.
func fields(b []byte, out [][]byte) int {
	n := 0
	for i := 0; i < len(b) && n < len(out); {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		start := i
		for i < len(b) && b[i] != ' ' && b[i] != '\t' {
			i++
		}
		if i > start {
			out[n] = b[start:i]
			n++
		}
	}
	return n
}

// splitWeight splits "  -12.50 kg" into value and unit text.
func splitWeight(s []byte) (float64, []byte, error) {
	s = bytes.TrimSpace(s)
	i := 0
	var num [32]byte
	n := 0
	for i < len(s) && (s[i] == '+' || s[i] == '-' || s[i] == '.' || s[i] == ' ' || (s[i] >= '0' && s[i] <= '9')) {
		if s[i] != ' ' && n < len(num) {
			num[n] = s[i]
			n++
		}
		i++
	}
	v, err := parseFloat(num[:n])
	if err != nil {
		return 0, nil, fmt.Errorf("bad weight %q", s)
	}
	return v, bytes.TrimSpace(s[i:]), nil
}

// NCI is the NCI / Weigh-Tronix SCP-01 protocol.
type NCI struct{}

// Name returns "nci".
func (NCI) Name() string { return "nci" }

// Request returns "W\r".
func (NCI) Request() []byte { return []byte("W\r") }

// ErrUnknownCommand is a scale's answer to a command it does not know.
var ErrUnknownCommand = errors.New("scale answered '?': unknown command")

// Parse parses one ETX-terminated reply.
func (NCI) Parse(buf []byte) (int, scale.Reading, bool, error) {
	end := bytes.IndexByte(buf, etx)
	if end < 0 {
		if len(buf) > 256 { // no ETX in sight: drop the noise
			return len(buf), scale.Reading{}, false, errors.New("discarded 256 bytes without a frame end")
		}
		return 0, scale.Reading{}, false, nil
	}
	n := end + 1
	var lines [3][]byte
	count := 0
	rest := buf[:end]
	for len(rest) > 0 {
		i := bytes.IndexAny(rest, "\r\n")
		var f []byte
		if i < 0 {
			f, rest = rest, nil
		} else {
			f, rest = rest[:i], rest[i+1:]
		}
		if len(f) == 0 || !printable(f) {
			continue // line noise between frames is dropped
		}
		if count == len(lines) {
			return n, scale.Reading{}, false, fmt.Errorf("unexpected NCI reply %q", buf[:end])
		}
		lines[count] = f
		count++
	}
	if count == 1 && bytes.Equal(bytes.TrimSpace(lines[0]), []byte("?")) {
		return n, scale.Reading{}, false, ErrUnknownCommand
	}
	var weight, status []byte
	switch count {
	case 2:
		weight, status = lines[0], lines[1]
	case 1:
		// Status glued to the weight line: "0002.50LB00" or "0002.50LBS00".
		f := lines[0]
		if len(f) < 3 {
			return n, scale.Reading{}, false, fmt.Errorf("short NCI reply %q", f)
		}
		weight, status = f[:len(f)-2], f[len(f)-2:]
	default:
		return n, scale.Reading{}, false, fmt.Errorf("unexpected NCI reply %q", buf[:end])
	}
	status = bytes.TrimPrefix(bytes.TrimSpace(status), []byte("S"))
	if len(status) != 2 || status[0] < '0' || status[0] > '?' || status[1] < '0' || status[1] > '?' {
		return n, scale.Reading{}, false, fmt.Errorf("bad NCI status %q", status)
	}
	s1, s2 := status[0]&0x0f, status[1]&0x0f
	r := scale.Reading{}
	switch {
	case s1&0x0c != 0 || s2&0x0c != 0:
		r.Status = scale.StatusFault
		if s2&0x08 != 0 {
			r.Status = scale.StatusCalibration
		}
	case s2&0x02 != 0:
		r.Status = scale.StatusOverload
	case s2&0x01 != 0:
		r.Status = scale.StatusUnderZero
	case s1&0x01 != 0:
		r.Status = scale.StatusMotion
	case s1&0x02 != 0:
		r.Status = scale.StatusZero
	default:
		r.Status = scale.StatusStable
	}
	if r.Status == scale.StatusStable || r.Status == scale.StatusMotion || r.Status == scale.StatusZero {
		v, unitText, err := splitWeight(bytes.TrimSuffix(bytes.TrimSpace(weight), []byte("S")))
		if err != nil {
			return n, scale.Reading{}, false, err
		}
		u, ok := unitOf(unitText)
		if !ok {
			return n, scale.Reading{}, false, fmt.Errorf("unknown unit %q", unitText)
		}
		r.Value, r.Unit = v, u
	}
	r.Stable = r.Status == scale.StatusStable || r.Status == scale.StatusZero
	return n, r, true, nil
}

// SICS is Mettler Toledo MT-SICS.
type SICS struct{}

// Name returns "mt-sics".
func (SICS) Name() string { return "mt-sics" }

// Request returns "SI\r\n" (immediate weight).
func (SICS) Request() []byte { return []byte("SI\r\n") }

// Parse parses one CR LF terminated line.
func (SICS) Parse(buf []byte) (int, scale.Reading, bool, error) {
	line, n := cutLine(buf)
	if n == 0 {
		return 0, scale.Reading{}, false, nil
	}
	var fa [4][]byte
	nf := fields(line, fa[:])
	f := fa[:nf]
	if nf == 0 {
		return n, scale.Reading{}, false, nil
	}
	switch string(f[0]) {
	case "ES":
		return n, scale.Reading{}, false, errors.New("MT-SICS syntax error (ES)")
	case "ET":
		return n, scale.Reading{}, false, errors.New("MT-SICS transmission error (ET)")
	case "EL":
		return n, scale.Reading{}, false, errors.New("MT-SICS logical error (EL)")
	case "S", "SI":
	case "Z":
		return n, scale.Reading{}, false, nil // zero acknowledgement
	default:
		return n, scale.Reading{}, false, fmt.Errorf("unexpected MT-SICS reply %q", line)
	}
	if len(f) < 2 {
		return n, scale.Reading{}, false, fmt.Errorf("short MT-SICS reply %q", line)
	}
	switch string(f[1]) {
	case "I":
		return n, scale.Reading{}, false, errors.New("MT-SICS scale busy (S I)")
	case "+":
		return n, scale.Reading{Status: scale.StatusOverload}, true, nil
	case "-":
		return n, scale.Reading{Status: scale.StatusUnderZero}, true, nil
	case "S", "D":
	default:
		return n, scale.Reading{}, false, fmt.Errorf("unexpected MT-SICS status %q", f[1])
	}
	if len(f) < 4 {
		return n, scale.Reading{}, false, fmt.Errorf("short MT-SICS weight %q", line)
	}
	v, err := parseFloat(f[2])
	if err != nil {
		return n, scale.Reading{}, false, fmt.Errorf("bad MT-SICS weight %q", f[2])
	}
	u, ok := unitOf(f[3])
	if !ok {
		return n, scale.Reading{}, false, fmt.Errorf("unknown unit %q", f[3])
	}
	r := scale.Reading{Value: v, Unit: u, Status: scale.StatusMotion}
	if f[1][0] == 'S' {
		r.Status, r.Stable = scale.StatusStable, true
		if v == 0 {
			r.Status = scale.StatusZero
		}
	}
	return n, r, true, nil
}

// cutLine returns the first line ending in CR, LF or CR LF, and how many
// bytes it took (0 if no line end yet). Overlong input is consumed.
func cutLine(buf []byte) ([]byte, int) {
	i := bytes.IndexAny(buf, "\r\n")
	if i < 0 {
		if len(buf) > 256 {
			return nil, len(buf)
		}
		return nil, 0
	}
	n := i + 1
	if buf[i] == '\r' && n < len(buf) && buf[n] == '\n' {
		n++
	}
	return buf[:i], n
}

// Toledo is the 8217-style protocol.
type Toledo struct{ Unit scale.Unit }

// Name returns "toledo".
func (Toledo) Name() string { return "toledo" }

// Request returns "W".
func (Toledo) Request() []byte { return []byte("W") }

// Parse parses one STX … CR frame.
func (t Toledo) Parse(buf []byte) (int, scale.Reading, bool, error) {
	s := bytes.IndexByte(buf, stx)
	if s < 0 {
		return len(buf), scale.Reading{}, false, nil // noise
	}
	if s > 0 {
		return s, scale.Reading{}, false, nil
	}
	e := bytes.IndexByte(buf, '\r')
	if e < 0 {
		if len(buf) > 64 {
			return len(buf), scale.Reading{}, false, errors.New("discarded an unterminated frame")
		}
		return 0, scale.Reading{}, false, nil
	}
	body := buf[1:e]
	n := e + 1
	if len(body) > 0 && body[0] == '?' {
		if len(body) < 2 {
			return n, scale.Reading{}, false, errors.New("toledo status frame without status")
		}
		st := body[1]
		r := scale.Reading{Unit: t.Unit}
		switch {
		case st&0x02 != 0:
			r.Status = scale.StatusOverload
		case st&0x04 != 0:
			r.Status = scale.StatusUnderZero
		case st&0x01 != 0:
			r.Status = scale.StatusMotion
		default:
			return n, scale.Reading{}, false, fmt.Errorf("toledo status 0x%02x", st)
		}
		return n, r, true, nil
	}
	v, rest, err := splitWeight(body)
	if err != nil {
		return n, scale.Reading{}, false, err
	}
	u := t.Unit
	if len(rest) > 0 {
		if pu, ok := unitOf(rest); ok {
			u = pu
		}
	}
	r := scale.Reading{Value: v, Unit: u, Status: scale.StatusStable, Stable: true}
	if v == 0 {
		r.Status = scale.StatusZero
	}
	return n, r, true, nil
}

// Continuous parses streamed "ST,GS,+  1.234 kg" frames.
type Continuous struct{}

// Name returns "continuous".
func (Continuous) Name() string { return "continuous" }

// Request returns nil: the scale streams by itself.
func (Continuous) Request() []byte { return nil }

// Parse parses one line.
func (Continuous) Parse(buf []byte) (int, scale.Reading, bool, error) {
	line, n := cutLine(buf)
	if n == 0 {
		return 0, scale.Reading{}, false, nil
	}
	line = bytes.Trim(line, "\x02\x03 ")
	if len(line) == 0 {
		return n, scale.Reading{}, false, nil
	}
	var head []byte
	last := line
	if i := bytes.IndexByte(line, ','); i >= 0 {
		head = bytes.TrimSpace(line[:i])
		last = line[bytes.LastIndexByte(line, ',')+1:]
	}
	if string(head) == "OL" {
		return n, scale.Reading{Status: scale.StatusOverload}, true, nil
	}
	v, unitText, err := splitWeight(last)
	if err != nil {
		return n, scale.Reading{}, false, err
	}
	u, ok := unitOf(unitText)
	if !ok {
		return n, scale.Reading{}, false, fmt.Errorf("unknown unit %q", unitText)
	}
	r := scale.Reading{Value: v, Unit: u, Status: scale.StatusStable, Stable: true}
	switch {
	case string(head) == "US":
		r.Status, r.Stable = scale.StatusMotion, false
	case v < 0:
		r.Status, r.Stable, r.Value = scale.StatusUnderZero, false, 0
	case v == 0:
		r.Status = scale.StatusZero
	}
	return n, r, true, nil
}

// printable reports whether b holds at least one visible character.
func printable(b []byte) bool {
	for _, c := range b {
		if c > 0x20 && c < 0x7f {
			return true
		}
	}
	return false
}
