package hid

import (
	"fmt"
	"math"

	"github.com/mailroomd/mailroomd/drivers/scale"
)

// POS scanner report layout (Honeywell-style, 64 bytes).
const (
	posReportLen = 64
	posDataLen   = 56
	posAIMAt     = 2
	posDataAt    = 5
	posMoreAt    = 63
)

// POSScanner reassembles multi-report HID POS scans.
type POSScanner struct {
	max  int
	aim  string
	data []byte
	over bool
	busy bool
}

// NewPOSScanner returns a reassembler; codes longer than max are discarded.
func NewPOSScanner(max int) *POSScanner {
	if max <= 0 {
		max = 4096
	}
	return &POSScanner{max: max}
}

// Feed consumes one input report and returns a completed code with its AIM
// symbology id ("" when the scanner sent none) once the last report of a
// scan arrived.
func (p *POSScanner) Feed(report []byte) (code []byte, aim string, err error) {
	if len(report) < posReportLen {
		return nil, "", fmt.Errorf("HID POS report of %d bytes, want %d", len(report), posReportLen)
	}
	n := int(report[1])
	if n > posDataLen {
		p.reset()
		return nil, "", fmt.Errorf("HID POS report claims %d data bytes, at most %d fit", n, posDataLen)
	}
	if !p.busy {
		p.busy = true
		if a := report[posAIMAt : posAIMAt+3]; a[0] == ']' {
			p.aim = string(a)
		}
	}
	if len(p.data)+n > p.max {
		p.over = true
	} else {
		p.data = append(p.data, report[posDataAt:posDataAt+n]...)
	}
	if report[posMoreAt] != 0 {
		return nil, "", nil
	}
	code, aim, over := p.data, p.aim, p.over
	p.reset()
	if over {
		return nil, "", fmt.Errorf("discarded a code longer than %d bytes", p.max)
	}
	if len(code) == 0 {
		return nil, "", nil
	}
	return code, aim, nil
}

func (p *POSScanner) reset() { p.data, p.aim, p.over, p.busy = nil, "", false, false }

// ScaleDecoder decodes HID POS scale reports.
type ScaleDecoder struct {
	seen bool
}

var scaleUnits = map[byte]scale.Unit{1: scale.Milligram, 2: scale.Gram, 3: scale.Kilogram, 4: scale.Carat, 7: scale.TroyOunce, 11: scale.Ounce, 12: scale.Pound}

var scaleStatus = map[byte]scale.Status{1: scale.StatusFault, 2: scale.StatusZero, 3: scale.StatusMotion, 4: scale.StatusStable,
	5: scale.StatusUnderZero, 6: scale.StatusOverload, 7: scale.StatusCalibration, 8: scale.StatusRezero}

// Feed decodes one report. ok is false for the first report after opening
// (it may be stale) and for reports that are not weight reports.
func (d *ScaleDecoder) Feed(report []byte) (r scale.Reading, ok bool, err error) {
	if len(report) < 6 {
		return r, false, fmt.Errorf("scale report of %d bytes, want 6", len(report))
	}
	if report[0] != 3 {
		return r, false, nil // other report ids (e.g. scale attributes) carry no weight
	}
	if !d.seen {
		d.seen = true
		return r, false, nil
	}
	st, known := scaleStatus[report[1]]
	if !known {
		return r, false, fmt.Errorf("unknown scale status %d", report[1])
	}
	unit, known := scaleUnits[report[2]]
	if !known {
		return r, false, fmt.Errorf("unknown scale unit %d", report[2])
	}
	raw := uint16(report[4]) | uint16(report[5])<<8
	exp := int8(report[3])
	r = scale.Reading{Unit: unit, Status: st}
	switch st {
	case scale.StatusStable, scale.StatusMotion:
		// Round to the resolution the exponent gives, so 300 × 10^-1 is 30, not 30.000000000000004.
		v := float64(raw) * math.Pow10(int(exp))
		if exp < 0 {
			f := math.Pow10(int(-exp))
			v = math.Round(v*f) / f
		}
		r.Value = v
	}
	r.Stable = st == scale.StatusStable || st == scale.StatusZero
	return r, true, nil
}
