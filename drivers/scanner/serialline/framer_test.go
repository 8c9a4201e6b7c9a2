package serialline

import (
	"bytes"
	"strings"
	"testing"
)

func TestFramer(t *testing.T) {
	for _, tc := range []struct {
		name           string
		term           string
		prefix, suffix string
		max            int
		control        ControlPolicy
		in             []string // chunks as they arrive
		want           []string // lines; "!" + text for a warning containing text
	}{
		{"cr", "\r", "", "", 32, StripControl, []string{"1Z999AA10123456784\r"}, []string{"1Z999AA10123456784"}},
		{"split across reads", "\r", "", "", 32, StripControl, []string{"1Z999", "AA1012", "3456784\r9400", "1\r"}, []string{"1Z999AA10123456784", "94001"}},
		{"lf", "\n", "", "", 32, StripControl, []string{"abc\ndef\n"}, []string{"abc", "def"}},
		{"crlf", "\r\n", "", "", 32, StripControl, []string{"abc\r", "\ndef\r\n"}, []string{"abc", "def"}},
		{"etx byte", "\x03", "", "", 32, StripControl, []string{"\x02abc\x03"}, []string{"abc"}},
		{"prefix and suffix", "\r", "]C1", "#", 32, StripControl, []string{"]C100123#\r", "plain\r"}, []string{"00123", "plain"}},
		{"empty lines ignored", "\r", "", "", 32, StripControl, []string{"\r\r\rx\r"}, []string{"x"}},
		{"oversize discarded then recovers", "\r", "", "", 8, StripControl, []string{"123456789012", "345\rok\r"}, []string{"!longer than max_length 8", "ok"}},
		{"exactly max", "\r\n", "", "", 4, StripControl, []string{"1234\r\n12345\r\nab\r\n"}, []string{"1234", "!longer than max_length 4", "ab"}},
		{"strip keeps gs", "\r", "", "", 64, StripControl, []string{"]C1\x1d0101\x00\x07x\r"}, []string{"]C1\x1d0101x"}},
		{"keep", "\r", "", "", 64, KeepControl, []string{"a\x00b\r"}, []string{"a\x00b"}},
		{"reject", "\r", "", "", 64, RejectControl, []string{"a\x07b\rgood\x1d\r"}, []string{"!control character 0x07", "good\x1d"}},
		{"high bytes kept", "\r", "", "", 64, StripControl, []string{"M\xfcller\xff\r"}, []string{"M\xfcller\xff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFramer([]byte(tc.term), []byte(tc.prefix), []byte(tc.suffix), tc.max, tc.control)
			var got []string
			for _, chunk := range tc.in {
				for _, l := range f.Feed([]byte(chunk)) {
					if l.Warning != nil {
						got = append(got, "!"+l.Warning.Error())
					} else {
						got = append(got, string(l.Data))
					}
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				w := tc.want[i]
				if strings.HasPrefix(w, "!") {
					if !strings.HasPrefix(got[i], "!") || !strings.Contains(got[i], w[1:]) {
						t.Fatalf("line %d = %q, want warning with %q", i, got[i], w[1:])
					}
				} else if got[i] != w {
					t.Fatalf("line %d = %q, want %q", i, got[i], w)
				}
			}
		})
	}
}

func FuzzFramer(f *testing.F) {
	f.Add([]byte("1Z999AA10123456784\r"), byte(0), uint8(16))
	f.Add([]byte("\x00\xff\r\n\r\n\x1d"), byte(1), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, mode byte, max uint8) {
		term := [][]byte{{'\r'}, {'\r', '\n'}, {'\n'}, {0x03}}[int(mode)%4]
		m := int(max)%64 + 1
		fr := NewFramer(term, nil, nil, m, ControlPolicy(int(mode)%3))
		for _, l := range fr.Feed(in) {
			if l.Warning == nil && (len(l.Data) == 0 || len(l.Data) > m || bytes.Contains(l.Data, term)) {
				t.Fatalf("bad line %q (max %d, term %q)", l.Data, m, term)
			}
		}
		if fr.Pending() > m+len(term) {
			t.Fatalf("framer buffers %d bytes, more than max_length %d", fr.Pending(), m)
		}
	})
}
