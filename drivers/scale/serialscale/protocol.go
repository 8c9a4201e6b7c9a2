package serialscale

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
func ParseUnit(s string) (scale.Unit, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "g":
		return scale.Gram, true
	case "kg":
		return scale.Kilogram, true
	case "lb", "lbs":
		return scale.Pound, true
	case "oz":
		return scale.Ounce, true
	case "mg":
		return scale.Milligram, true
	}
	return scale.Unknown, false
}

// splitWeight splits "  -12.50 kg" into value and unit text.
func splitWeight(s string) (float64, string, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] == '+' || s[i] == '-' || s[i] == '.' || s[i] == ' ' || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	num := strings.ReplaceAll(s[:i], " ", "")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, "", fmt.Errorf("bad weight %q", s)
	}
	return v, strings.TrimSpace(s[i:]), nil
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
	var fields []string
	for _, f := range bytes.FieldsFunc(buf[:end], func(r rune) bool { return r == '\r' || r == '\n' }) {
		if printable(f) {
			fields = append(fields, string(f)) // line noise between frames is dropped
		}
	}
	if len(fields) == 1 && strings.TrimSpace(fields[0]) == "?" {
		return n, scale.Reading{}, false, ErrUnknownCommand
	}
	var weight, status string
	switch len(fields) {
	case 2:
		weight, status = fields[0], fields[1]
	case 1:
		// Status glued to the weight line: "0002.50LB00" or "0002.50LBS00".
		f := fields[0]
		if len(f) < 3 {
			return n, scale.Reading{}, false, fmt.Errorf("short NCI reply %q", f)
		}
		weight, status = f[:len(f)-2], f[len(f)-2:]
	default:
		return n, scale.Reading{}, false, fmt.Errorf("unexpected NCI reply %q", buf[:end])
	}
	status = strings.TrimPrefix(strings.TrimSpace(status), "S")
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
		v, unitText, err := splitWeight(strings.TrimSuffix(strings.TrimSpace(weight), "S"))
		if err != nil {
			return n, scale.Reading{}, false, err
		}
		u, ok := ParseUnit(unitText)
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
	f := strings.Fields(line)
	if len(f) == 0 {
		return n, scale.Reading{}, false, nil
	}
	switch f[0] {
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
	switch f[1] {
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
	v, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return n, scale.Reading{}, false, fmt.Errorf("bad MT-SICS weight %q", f[2])
	}
	u, ok := ParseUnit(f[3])
	if !ok {
		return n, scale.Reading{}, false, fmt.Errorf("unknown unit %q", f[3])
	}
	r := scale.Reading{Value: v, Unit: u, Status: scale.StatusMotion}
	if f[1] == "S" {
		r.Status, r.Stable = scale.StatusStable, true
		if v == 0 {
			r.Status = scale.StatusZero
		}
	}
	return n, r, true, nil
}

// cutLine returns the first line ending in CR, LF or CR LF, and how many
// bytes it took (0 if no line end yet). Overlong input is consumed.
func cutLine(buf []byte) (string, int) {
	i := bytes.IndexAny(buf, "\r\n")
	if i < 0 {
		if len(buf) > 256 {
			return "", len(buf)
		}
		return "", 0
	}
	n := i + 1
	if buf[i] == '\r' && n < len(buf) && buf[n] == '\n' {
		n++
	}
	return string(buf[:i]), n
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
	body := string(buf[1:e])
	n := e + 1
	if strings.HasPrefix(body, "?") {
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
	if rest != "" {
		if pu, ok := ParseUnit(rest); ok {
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
	line = strings.Trim(line, "\x02\x03 ")
	if line == "" {
		return n, scale.Reading{}, false, nil
	}
	parts := strings.Split(line, ",")
	head := ""
	if len(parts) >= 2 {
		head = strings.TrimSpace(parts[0])
	}
	if head == "OL" {
		return n, scale.Reading{Status: scale.StatusOverload}, true, nil
	}
	v, unitText, err := splitWeight(parts[len(parts)-1])
	if err != nil {
		return n, scale.Reading{}, false, err
	}
	u, ok := ParseUnit(unitText)
	if !ok {
		return n, scale.Reading{}, false, fmt.Errorf("unknown unit %q", unitText)
	}
	r := scale.Reading{Value: v, Unit: u, Status: scale.StatusStable, Stable: true}
	switch {
	case head == "US":
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
