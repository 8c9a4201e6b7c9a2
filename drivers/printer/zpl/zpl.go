package zpl

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mailroomd/mailroomd/drivers/printer"
)

// Escape returns field data for use after ^FH^FD: every byte that could end
// the field or start a command is hex-escaped, and a byte that is not part
// of valid UTF-8 (labels are printed as UTF-8) is printed as '?'.
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b.WriteByte('?')
			} else {
				b.WriteString(s[i : i+size])
			}
			i += size
			continue
		}
		if c == '^' || c == '~' || c == '_' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "_%02X", c)
		} else {
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
}

// Field returns a text field at x, y with the given font height.
func Field(x, y, height int, text string) string {
	return fmt.Sprintf("^FO%d,%d^A0N,%d,%d^FH^FD%s^FS", x, y, height, height, Escape(text))
}

// Code128 returns a Code 128 barcode at x, y.
func Code128(x, y, height int, data string) string {
	return fmt.Sprintf("^FO%d,%d^BY2^BCN,%d,Y,N,N^FH^FD%s^FS", x, y, height, Escape(data))
}

// Label wraps fields into one format.
func Label(fields ...string) []byte {
	return []byte("^XA" + strings.Join(fields, "") + "^XZ\n")
}

const (
	stx = 0x02
	etx = 0x03
)

// HostStatusQuery is the ~HS command.
var HostStatusQuery = []byte("~HS")

// ParseHostStatus parses a complete ~HS answer. complete is false while
// fewer than three strings have arrived.
func ParseHostStatus(b []byte) (s printer.Status, complete bool, err error) {
	var parts [][]byte
	for len(parts) < 3 {
		i := bytes.IndexByte(b, stx)
		if i < 0 {
			return s, false, nil
		}
		j := bytes.IndexByte(b[i:], etx)
		if j < 0 {
			return s, false, nil
		}
		parts = append(parts, b[i+1:i+j])
		b = b[i+j+1:]
	}
	one := strings.Split(string(parts[0]), ",")
	two := strings.Split(string(parts[1]), ",")
	if len(one) < 6 || len(two) < 4 {
		return s, true, errors.New("malformed ~HS answer")
	}
	flag := func(f string) bool { return strings.TrimSpace(f) == "1" }
	s.PaperOut, s.Paused, s.BufferFull = flag(one[1]), flag(one[2]), flag(one[5])
	s.HeadOpen, s.RibbonOut = flag(two[2]), flag(two[3])
	return s, true, nil
}
