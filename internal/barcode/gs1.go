package barcode

import "strings"

// GS is the ASCII group separator a scanner sends for FNC1 after a
// variable-length GS1 field.
const GS = '\x1d'

// gs1Symbologies are the AIM symbology identifiers of GS1 data carriers.
var gs1Symbologies = map[string]bool{
	"]C1": true, // GS1-128
	"]d2": true, // GS1 DataMatrix
	"]Q3": true, // GS1 QR Code
	"]e0": true, // GS1 DataBar
	"]J1": true, // GS1 DotCode
}

// splitSymbology removes a leading AIM symbology identifier (']' + code
// character + modifier) and returns it.
func splitSymbology(s string) (id, rest string) {
	if len(s) >= 3 && s[0] == ']' && isAlpha(s[1]) && isAlnum(s[2]) {
		return s[:3], s[3:]
	}
	return "", s
}

// aiSpec is how long an application identifier's data is.
type aiSpec struct {
	fixed int // exact data length; 0 for variable
	max   int // maximum data length of a variable field
}

// aiTable holds the AIs the parser knows by exact code. Codes not here are
// looked up by their first two digits in aiPrefixFixed.
var aiTable = map[string]aiSpec{
	"00": {fixed: 18}, "01": {fixed: 14}, "02": {fixed: 14}, "03": {fixed: 14}, "04": {fixed: 16},
	"10": {max: 20}, "21": {max: 20}, "22": {max: 20}, "30": {max: 8}, "37": {max: 8},
	"400": {max: 30}, "401": {max: 30}, "402": {fixed: 17}, "403": {max: 30},
	"410": {fixed: 13}, "411": {fixed: 13}, "412": {fixed: 13}, "413": {fixed: 13},
	"414": {fixed: 13}, "415": {fixed: 13}, "416": {fixed: 13}, "417": {fixed: 13},
	"420": {max: 20}, "421": {max: 12}, "422": {fixed: 3}, "423": {max: 15},
	"424": {fixed: 3}, "425": {max: 15}, "426": {fixed: 3},
	// Ship-to name and address (GS1 General Specifications 21 and later).
	"4300": {max: 35}, "4301": {max: 35}, "4302": {max: 70}, "4303": {max: 70}, "4304": {max: 70},
	"4305": {max: 70}, "4306": {max: 70}, "4307": {fixed: 2}, "4308": {max: 30},
}

// aiPrefixFixed are the GS1 predefined-length prefixes (two digits) whose
// AIs are four digits long: 31nn–36nn carry 6 digits.
var aiPrefixFixed = map[string]int{"31": 6, "32": 6, "33": 6, "34": 6, "35": 6, "36": 6}

// lookupAI finds the AI at the start of s.
func lookupAI(s string) (ai string, spec aiSpec, ok bool) {
	for _, n := range []int{2, 3, 4} {
		if len(s) >= n {
			if sp, found := aiTable[s[:n]]; found {
				return s[:n], sp, true
			}
		}
	}
	if len(s) >= 4 {
		if n, found := aiPrefixFixed[s[:2]]; found && isDigits(s[:4]) {
			return s[:4], aiSpec{fixed: n}, true
		}
		if s[:2] >= "11" && s[:2] <= "17" { // dates
			return s[:2], aiSpec{fixed: 6}, true
		}
		if s[0] == '9' && isDigit(s[1]) { // 90–99: company internal, variable
			return s[:2], aiSpec{max: 90}, true
		}
	}
	return "", aiSpec{}, false
}

// parseGS1 parses GS1 element strings. It stops at the first AI it does
// not know; fields parsed so far are returned with the unparsed rest.
func parseGS1(s string) (fields []Field, rest string) {
	n := len(s)
	s = strings.TrimLeft(s, string(GS))
	for s != "" {
		off := n - len(s) // where s starts in the string parsed
		ai, spec, ok := lookupAI(s)
		if !ok {
			return fields, s
		}
		data := s[len(ai):]
		var value string
		switch {
		case spec.fixed > 0:
			if len(data) < spec.fixed {
				return fields, s
			}
			value, data = data[:spec.fixed], data[spec.fixed:]
		default:
			end := strings.IndexByte(data, GS)
			if end < 0 {
				end = len(data)
			}
			if end > spec.max || end == 0 {
				return fields, s
			}
			value, data = data[:end], data[end:]
		}
		fields = append(fields, Field{AI: ai, Value: value, start: off + len(ai), end: off + len(ai) + len(value)})
		s = strings.TrimLeft(data, string(GS))
	}
	return fields, ""
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func isUpperAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}
