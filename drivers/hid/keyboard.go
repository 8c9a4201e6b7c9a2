package hid

import "fmt"

// Modifier bits of a boot keyboard report.
const (
	modLCtrl  = 1 << 0
	modLShift = 1 << 1
	modRCtrl  = 1 << 4
	modRShift = 1 << 5
	modAltGr  = 1 << 6
)

const (
	keyEnter = 0x28
	keyTab   = 0x2B
	// keyRBracketUS is the position of ']' on a US keyboard.
	keyRBracketUS = 0x30
	gs            = 0x1d
)

// Layout maps key positions to characters.
type Layout struct {
	Name    string
	plain   map[byte]rune
	shifted map[byte]rune
	altGr   map[byte]rune
}

func baseLayout(name string) *Layout {
	l := &Layout{Name: name, plain: map[byte]rune{}, shifted: map[byte]rune{}, altGr: map[byte]rune{}}
	for i := byte(0); i < 26; i++ {
		l.plain[0x04+i] = rune('a' + i)
		l.shifted[0x04+i] = rune('A' + i)
	}
	for i := byte(0); i < 9; i++ {
		l.plain[0x1E+i] = rune('1' + i)
	}
	l.plain[0x27] = '0'
	l.plain[0x2C], l.shifted[0x2C] = ' ', ' '
	return l
}

func (l *Layout) set(keys []byte, plain, shifted string) {
	p, s := []rune(plain), []rune(shifted)
	for i, k := range keys {
		l.plain[k], l.shifted[k] = p[i], s[i]
	}
}

var punctKeys = []byte{0x2D, 0x2E, 0x2F, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x64}
var digitKeys = []byte{0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27}

// US is the US English layout.
var US = func() *Layout {
	l := baseLayout("us")
	l.set(digitKeys, "1234567890", "!@#$%^&*()")
	l.set(punctKeys, "-=[]\\#;'`,./\\", "_+{}|~:\"~<>?|")
	return l
}()

// DE is the German QWERTZ layout, with AltGr.
var DE = func() *Layout {
	l := baseLayout("de")
	l.plain[0x1C], l.shifted[0x1C] = 'z', 'Z' // y and z swap places
	l.plain[0x1D], l.shifted[0x1D] = 'y', 'Y'
	l.set(digitKeys, "1234567890", "!\"§$%&/()=")
	l.set(punctKeys, "ß´ü+##öä^,.-<", "?`Ü*''ÖÄ°;:_>")
	for k, r := range map[byte]rune{0x14: '@', 0x24: '{', 0x25: '[', 0x26: ']', 0x27: '}', 0x2D: '\\', 0x30: '~', 0x64: '|', 0x08: '€', 0x1F: '²', 0x20: '³', 0x10: 'µ'} {
		l.altGr[k] = r
	}
	return l
}()

// LayoutByName returns the layout called name ("us" or "de").
func LayoutByName(name string) (*Layout, error) {
	switch name {
	case "", "us":
		return US, nil
	case "de":
		return DE, nil
	}
	return nil, fmt.Errorf("unknown keyboard layout %q (us, de)", name)
}

// KeyboardDecoder turns boot keyboard reports into codes.
type KeyboardDecoder struct {
	layout  *Layout
	max     int
	prev    [6]byte
	line    []byte
	over    bool
	Ignored int // key positions with no meaning in the layout
}

// NewKeyboardDecoder returns a decoder for layout; codes longer than max
// bytes are discarded.
func NewKeyboardDecoder(layout *Layout, max int) *KeyboardDecoder {
	if max <= 0 {
		max = 256
	}
	return &KeyboardDecoder{layout: layout, max: max}
}

// Feed consumes one report and returns a completed code, if Enter or Tab
// ended one, or an error for a code that was too long. Reports shorter than
// 8 bytes are rejected.
func (d *KeyboardDecoder) Feed(report []byte) (code []byte, err error) {
	if len(report) < 8 {
		return nil, fmt.Errorf("keyboard report of %d bytes, want 8", len(report))
	}
	mods := report[0]
	var keys [6]byte
	copy(keys[:], report[2:8])
	defer func() { d.prev = keys }()
	for _, k := range keys {
		if k == 0 || k == 1 || d.wasDown(k) { // 1 = rollover error
			continue
		}
		if k == keyEnter || k == keyTab {
			line, over := d.line, d.over
			d.line, d.over = nil, false
			if over {
				return nil, fmt.Errorf("discarded a code longer than %d bytes", d.max)
			}
			if len(line) == 0 {
				continue
			}
			return line, nil
		}
		var r rune
		var ok bool
		switch {
		case mods&(modLCtrl|modRCtrl) != 0:
			if k == keyRBracketUS {
				r, ok = gs, true
			}
		case mods&modAltGr != 0:
			r, ok = d.layout.altGr[k]
		case mods&(modLShift|modRShift) != 0:
			r, ok = d.layout.shifted[k]
		default:
			r, ok = d.layout.plain[k]
		}
		if !ok {
			d.Ignored++
			continue
		}
		if len(d.line)+4 > d.max {
			d.over = true
			continue
		}
		d.line = append(d.line, string(r)...)
	}
	return nil, nil
}

func (d *KeyboardDecoder) wasDown(k byte) bool {
	for _, p := range d.prev {
		if p == k {
			return true
		}
	}
	return false
}

// KeyReports encodes text as the press and release reports a scanner in
// keyboard mode would send with layout, ending with Enter. Tests and the
// simulator use it; runes the layout cannot type return an error.
func KeyReports(layout *Layout, text string) ([][]byte, error) {
	var out [][]byte
	for _, r := range text {
		k, mod, ok := layout.find(r)
		if !ok {
			return nil, fmt.Errorf("layout %s cannot type %q", layout.Name, r)
		}
		out = append(out, []byte{mod, 0, k, 0, 0, 0, 0, 0}, make([]byte, 8))
	}
	out = append(out, []byte{0, 0, keyEnter, 0, 0, 0, 0, 0}, make([]byte, 8))
	return out, nil
}

func (l *Layout) find(r rune) (key, mod byte, ok bool) {
	if r == gs {
		return keyRBracketUS, modLCtrl, true
	}
	for k := byte(0); k < 0xE0; k++ {
		if l.plain[k] == r {
			return k, 0, true
		}
	}
	for k := byte(0); k < 0xE0; k++ {
		if l.shifted[k] == r {
			return k, modLShift, true
		}
	}
	for k := byte(0); k < 0xE0; k++ {
		if l.altGr[k] == r {
			return k, modAltGr, true
		}
	}
	return 0, 0, false
}
