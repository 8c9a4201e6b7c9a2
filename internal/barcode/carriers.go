package barcode

import "strings"

// candidate is one carrier format that fits a code's shape.
type candidate struct {
	carrier  Carrier
	service  string
	tracking string
	country  string
	check    Check
	gs1      []Field
}

func checked(ok bool) Check {
	if ok {
		return CheckValid
	}
	return CheckInvalid
}

// upsServices names the service codes of 1Z numbers that are widely
// documented; others leave the service empty.
var upsServices = map[string]string{
	"01": "next-day-air", "02": "2nd-day-air", "03": "ground", "12": "3-day-select",
	"13": "next-day-air-saver", "14": "next-day-air-early", "59": "2nd-day-air-am",
}

// s10Countries are the UPU S10 countries whose post has a carrier code of
// its own here.
var s10Countries = map[string]Carrier{"GB": RoyalMail, "US": USPS, "DE": DeutschePost, "CA": CanadaPost}

// uspsPrefix reports whether an IMpb serial starts with a USPS channel
// application identifier (91–95).
func uspsPrefix(s string) bool { return len(s) >= 2 && s[0] == '9' && s[1] >= '1' && s[1] <= '5' }

// candidates lists every carrier format whose shape s has, each with the
// outcome of its check digit. s is upper case without spaces.
func candidates(s string) []candidate {
	n := len(s)
	var out []candidate
	add := func(c candidate) {
		if c.tracking == "" {
			c.tracking = s
		}
		out = append(out, c)
	}
	if n < 8 || n > 40 || !isUpperAlnum(s) {
		return nil
	}
	last := s[n-1]

	switch {
	case n == 18 && strings.HasPrefix(s, "1Z"):
		add(candidate{carrier: UPS, service: upsServices[s[8:10]], check: checked(holds(upsMod10, s[2:17], last))})
	case n == 11 && strings.IndexByte("AHJKTV", s[0]) >= 0 && isDigits(s[1:]):
		// The letter names the service; the check covers the nine digits.
		add(candidate{carrier: UPS, service: "waybill", check: checked(holds(upsMod10, s[1:10], last))})
	case n == 15 && (s[0] == 'C' || s[0] == 'D') && isDigits(s[1:]):
		add(candidate{carrier: OnTrac, check: checked(holds(upsMod10, s[:14], last))})
	case n == 15 && (strings.HasPrefix(s, "TBA") || strings.HasPrefix(s, "TBC") || strings.HasPrefix(s, "TBM")) && isDigits(s[3:]):
		add(candidate{carrier: Amazon, check: CheckNone})
	case strings.HasPrefix(s, "JJD") && n >= 12 && isDigits(s[3:]),
		strings.HasPrefix(s, "JVGL") && n >= 12 && isDigits(s[4:]):
		add(candidate{carrier: DHL, service: "paket", check: CheckNone})
	case n == 13 && isAlpha(s[0]) && isAlpha(s[1]) && isDigits(s[2:11]) && isAlpha(s[11]) && isAlpha(s[12]):
		country := s[11:13]
		carrier, ok := s10Countries[country]
		if !ok {
			carrier = UPU
		}
		add(candidate{carrier: carrier, service: "international", country: country, check: checked(holds(s10, s[2:10], s[10]))})
	}
	if !isDigits(s) {
		return out
	}

	switch n {
	case 9, 10, 11:
		add(candidate{carrier: DHL, service: "express", check: checked(holds(mod7, s[:n-1], last))})
	case 12:
		add(candidate{carrier: FedEx, service: "express", check: checked(holds(fedexWeighted, s[:11], last))})
		add(candidate{carrier: DeutschePost, service: "identcode", check: checked(holds(deutschePost, s[:11], last))})
	case 14:
		add(candidate{carrier: DeutschePost, service: "leitcode", check: checked(holds(deutschePost, s[:13], last))})
	case 15:
		add(candidate{carrier: FedEx, service: "ground", check: checked(holds(gs1Mod10, s[:14], last))})
	case 16:
		add(candidate{carrier: CanadaPost, check: checked(holds(gs1Mod10, s[:15], last))})
	case 18:
		add(candidate{carrier: SSCC, check: checked(holds(gs1Mod10, s[:17], last))})
	case 20:
		if strings.HasPrefix(s, "00") {
			add(candidate{carrier: SSCC, tracking: s[2:], check: checked(holds(gs1Mod10, s[2:19], last)),
				gs1: []Field{{AI: "00", Value: s[2:]}}})
		}
	case 22:
		if strings.HasPrefix(s, "96") {
			add(candidate{carrier: FedEx, service: "ground-96", check: checked(holds(gs1Mod10, s[7:21], last))})
		}
	case 34:
		if strings.HasPrefix(s, "420") {
			break // a USPS IMpb with ZIP+4 (below)
		}
		add(candidate{carrier: FedEx, service: "34-digit", tracking: s[22:], check: checked(holds(fedexWeighted, s[22:33], last))})
	}
	switch {
	case n == 20 && !uspsPrefix(s) && !strings.HasPrefix(s, "00"):
		// A 20-digit USPS number printed without its channel identifier:
		// the check covers the 19 digits as printed, or with the "91" of
		// the IMpb's implied application identifier in front.
		// Only a number whose check digit holds is taken for USPS: the
		// shape alone (any 20 digits) says nothing.
		if holds(gs1Mod10, s[:19], last) || holds(gs1Mod10, "91"+s[:19], last) {
			add(candidate{carrier: USPS, service: "20-digit", check: CheckValid})
		}
	case (n == 20 || n == 22 || n == 26) && uspsPrefix(s):
		service := "impb"
		if n == 22 && strings.HasPrefix(s, "91") {
			service = "legacy-91"
		}
		add(candidate{carrier: USPS, service: service, check: checked(holds(gs1Mod10, s[:n-1], last))})
	case (n == 30 || n == 34) && strings.HasPrefix(s, "420"):
		zip := s[3 : n-22]
		serial := s[n-22:]
		add(candidate{carrier: USPS, service: "impb", tracking: serial,
			check: checked(uspsPrefix(serial) && holds(gs1Mod10, serial[:21], last)),
			gs1:   []Field{{AI: "420", Value: zip}}})
	}
	return out
}
