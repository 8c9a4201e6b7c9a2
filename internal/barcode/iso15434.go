package barcode

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ISO/IEC 15434 message framing, as scanners send the data of a MaxiCode
// or PDF417 on a shipping label: "[)>" RS, then one or more format blocks
// (two digits, GS, the data, RS), then EOT.
const (
	RS  = 0x1e
	EOT = 0x04
	// messageHeader opens every ISO/IEC 15434 message.
	messageHeader = "[)>\x1e"
)

// Label is the structured data of a 2D shipping label (an ISO/IEC 15434
// message). Fields the label does not carry are empty.
type Label struct {
	// Format is the first format block's number: "01" (transportation
	// data, ANSI MH10.8.3, as in UPS MaxiCode and carriers' PDF417), "05"
	// (GS1 application identifiers) or "06" (ANSI MH10.8.2 data
	// identifiers).
	Format string `json:"format"`
	// Tracking is the tracking number (format 01), the SSCC or consignment
	// number (05), or the license plate (06).
	Tracking string `json:"tracking,omitempty"`
	// SCAC is the carrier's Standard Carrier Alpha Code (UPSN, FDEG, …).
	SCAC         string   `json:"scac,omitempty"`
	ServiceClass string   `json:"service_class,omitempty"`
	ShipTo       *ShipTo  `json:"ship_to,omitempty"`
	Package      string   `json:"package,omitempty"` // "n/x": package n of x
	Weight       *Printed `json:"weight,omitempty"`
	// Shipper is the shipper's account number.
	Shipper string `json:"shipper,omitempty"`
	// PickupDay is the Julian day of pickup (001–366), as printed.
	PickupDay  string `json:"pickup_day,omitempty"`
	ShipmentID string `json:"shipment_id,omitempty"`
	// AddressValidated is the label's address validation flag (Y or N).
	AddressValidated string `json:"address_validated,omitempty"`
	// GS1 holds the element strings of a format 05 block, by AI.
	GS1 map[string]string `json:"gs1,omitempty"`
	// Identifiers holds the fields of a format 06 block, by data
	// identifier (J, 1J, K, …).
	Identifiers map[string]string `json:"identifiers,omitempty"`
	// Error says what is wrong with a message that is truncated or
	// malformed; the fields read before the fault are kept.
	Error string `json:"error,omitempty"`
}

// ShipTo is the label's destination.
type ShipTo struct {
	// Name is the person the parcel is for, and Company their company,
	// where the label carries them (GS1 AIs 4301 and 4300).
	Name       string `json:"name,omitempty"`
	Company    string `json:"company,omitempty"`
	PostalCode string `json:"postal_code,omitempty"`
	// Country is the ISO 3166 numeric country code, as printed (840: US).
	Country string `json:"country,omitempty"`
	Street  string `json:"street,omitempty"`
	City    string `json:"city,omitempty"`
	State   string `json:"state,omitempty"`
}

// Printed is a quantity as the label prints it.
type Printed struct {
	Value float64 `json:"value"`
	// Unit is as printed ("LB", "KG"), empty when the label gives none.
	Unit string `json:"unit,omitempty"`
}

// scacCarriers maps Standard Carrier Alpha Codes to carriers.
var scacCarriers = map[string]Carrier{
	"UPSN": UPS, "UPSS": UPS, "UPGF": UPS,
	"FDEG": FedEx, "FDEB": FedEx, "FDE": FedEx, "FDEN": FedEx, "FXFE": FedEx, "FXNL": FedEx,
	"USPS": USPS,
	"DHLC": DHL, "DHLG": DHL, "DHLE": DHL,
	"EMSY": OnTrac,
	"AMZL": Amazon, "AMZN": Amazon,
}

// CarrierOfSCAC returns the carrier of a SCAC, or Unknown.
func CarrierOfSCAC(scac string) Carrier {
	if c, ok := scacCarriers[strings.ToUpper(strings.TrimSpace(scac))]; ok {
		return c
	}
	return Unknown
}

// IsMessage reports whether a code (without symbology identifier) is an
// ISO/IEC 15434 message, or what is left of one whose control characters
// the scanner or the driver stripped.
func IsMessage(s string) bool { return strings.HasPrefix(s, "[)>") }

// ParseMessage reads an ISO/IEC 15434 message. It never fails: a message
// that is truncated or malformed gives a Label with Error set and what
// could be read before the fault.
func ParseMessage(s string) *Label {
	l := &Label{}
	if !strings.HasPrefix(s, messageHeader) {
		l.Error = `not an ISO/IEC 15434 message: it must start with "[)>" and RS (0x1E); were control characters stripped? ` +
			`Set the scanner to transmit them and the device to control_chars: keep`
		return l
	}
	body := s[len(messageHeader):]
	end := strings.IndexByte(body, EOT)
	if end < 0 {
		l.Error = "truncated: the message has no EOT (0x04) at its end"
		// The field being read when the message broke off is not read:
		// half a tracking number is no tracking number.
		if lastRS, lastGS := strings.LastIndexByte(body, RS), strings.LastIndexByte(body, GS); lastGS > lastRS {
			body = body[:lastGS]
		} else if lastRS >= 0 {
			body = body[:lastRS+1]
		} else {
			body = ""
		}
	} else {
		if rest := strings.TrimRight(body[end+1:], "\r\n"); rest != "" {
			l.Error = fmt.Sprintf("%d byte(s) after the EOT that ends the message", len(rest))
		}
		body = body[:end]
	}
	blocks := strings.Split(body, string(rune(RS)))
	if blocks[len(blocks)-1] == "" {
		blocks = blocks[:len(blocks)-1] // the RS before EOT
	} else if end >= 0 && l.Error == "" {
		l.Error = "the last format block does not end with RS (0x1E)"
	}
	if len(blocks) == 0 {
		l.setError("the message has no format block")
		return l
	}
	seen01 := false
	for i, b := range blocks {
		fmtNo, data, ok := strings.Cut(b, string(rune(GS)))
		if !ok || len(fmtNo) != 2 || !isDigits(fmtNo) {
			l.setError(fmt.Sprintf("format block %d does not start with a two-digit format and GS (0x1D)", i+1))
			return l
		}
		if i == 0 {
			l.Format = fmtNo
		}
		switch fmtNo {
		case "01":
			if seen01 {
				l.setError(fmt.Sprintf("format block %d is a second format 01 block: it is not read", i+1))
				continue
			}
			seen01 = true
			l.format01(data)
		case "05":
			l.format05(data)
		case "06":
			l.format06(data)
		default:
			if i == 0 {
				l.setError("format " + fmtNo + " is not one this box reads (01, 05, 06)")
			}
		}
	}
	return l
}

// setError keeps the first fault found.
func (l *Label) setError(msg string) {
	if l.Error == "" {
		l.Error = msg
	}
}

func (l *Label) shipTo() *ShipTo {
	if l.ShipTo == nil {
		l.ShipTo = &ShipTo{}
	}
	return l.ShipTo
}

// format01 reads transportation data: a two-digit version, then postal
// code, country, class of service, tracking number, SCAC, shipper, Julian
// pickup day, shipment id, package n/x, weight, address validation,
// street, city, state, each separated by GS; a field may be empty.
// Carriers' further fields after these are ignored.
func (l *Label) format01(data string) {
	if len(data) < 2 || !isDigits(data[:2]) {
		l.setError("format 01 must start with its two-digit version (96)")
		return
	}
	if data[:2] != "96" {
		l.setError("format 01 version " + data[:2] + " is not 96, the layout this box reads: fields may be misread")
	}
	if len(data) > 2 && data[2] == GS {
		l.setError("format 01 has a GS between its version and the postal code: every field would be misread, none is taken")
		return
	}
	f := strings.Split(data[2:], string(rune(GS)))
	get := func(i int) string {
		if i < len(f) {
			return strings.TrimSpace(f[i])
		}
		return ""
	}
	if len(f) < 5 {
		l.setError(fmt.Sprintf("format 01 has %d fields; postal code, country, class of service, tracking number and SCAC are required", len(f)))
	}
	if v := get(0); v != "" {
		l.shipTo().PostalCode = v
	}
	if v := get(1); v != "" {
		if !isDigits(v) || len(v) != 3 {
			l.setError(fmt.Sprintf("format 01: country %q is not a three-digit ISO 3166 code", v))
		}
		l.shipTo().Country = v
	}
	l.ServiceClass, l.Tracking, l.SCAC = get(2), strings.ToUpper(get(3)), strings.ToUpper(get(4))
	if l.Tracking == "" && len(f) >= 5 {
		l.setError("format 01 has no tracking number")
	}
	l.Shipper, l.PickupDay, l.ShipmentID, l.Package = get(5), get(6), get(7), get(8)
	if v := get(9); v != "" {
		w, err := parsePrinted(v)
		if err != nil {
			l.setError("format 01: weight " + strconv.Quote(v) + " is not a number")
		} else {
			l.Weight = w
		}
	}
	l.AddressValidated = get(10)
	if v := get(11); v != "" {
		l.shipTo().Street = v
	}
	if v := get(12); v != "" {
		l.shipTo().City = v
	}
	if v := get(13); v != "" {
		l.shipTo().State = v
	}
}

// format05 reads GS1 element strings, one per GS-separated field.
func (l *Label) format05(data string) {
	if l.GS1 == nil {
		l.GS1 = map[string]string{}
	}
	for _, f := range strings.Split(data, string(rune(GS))) {
		if f == "" {
			continue
		}
		fields, rest := parseGS1(f)
		if rest != "" || len(fields) == 0 {
			l.setError(fmt.Sprintf("format 05: %q is no GS1 element string", f))
			continue
		}
		for _, e := range fields {
			l.GS1[e.AI] = e.Value
		}
	}
	if v := l.GS1["00"]; v != "" && l.Tracking == "" {
		l.Tracking = v
	} else if v := l.GS1["401"]; v != "" && l.Tracking == "" {
		l.Tracking = v
	}
	if v := l.GS1["420"]; v != "" {
		l.shipTo().PostalCode = v
	}
	if v := l.GS1["421"]; len(v) > 3 {
		l.shipTo().Country, l.shipTo().PostalCode = v[:3], v[3:]
	}
	// The ship-to block of GS1 General Specifications 21: name, company,
	// address line, locality, region.
	for _, f := range []struct {
		ai  string
		set func(*ShipTo, string)
	}{{"4301", func(t *ShipTo, v string) { t.Name = v }}, {"4300", func(t *ShipTo, v string) { t.Company = v }},
		{"4302", func(t *ShipTo, v string) { t.Street = v }}, {"4305", func(t *ShipTo, v string) { t.City = v }},
		{"4306", func(t *ShipTo, v string) { t.State = v }}} {
		if v := l.GS1[f.ai]; v != "" {
			f.set(l.shipTo(), v)
		}
	}
	// Weights with implied decimals: 330n gross kg, 310n net kg, 340n gross
	// lb, 320n net lb (n decimals).
	for _, w := range []struct{ prefix, unit string }{{"330", "KG"}, {"310", "KG"}, {"340", "LB"}, {"320", "LB"}} {
		for n := byte('0'); n <= '5'; n++ {
			if v, ok := l.GS1[w.prefix+string(n)]; ok && l.Weight == nil {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil || !isDigits(v) {
					l.setError(fmt.Sprintf("format 05: weight %s%c %q is not a number", w.prefix, n, v))
					continue
				}
				for range int(n - '0') {
					x /= 10
				}
				l.Weight = &Printed{Value: x, Unit: w.unit}
			}
		}
	}
}

// dataIdentifier is an ANSI MH10.8.2 data identifier: up to three digits
// and a letter, followed by the data.
var dataIdentifier = regexp.MustCompile(`^([0-9]{0,3}[A-Z])(.*)$`)

// format06 reads ANSI MH10.8.2 data identifier fields.
func (l *Label) format06(data string) {
	if l.Identifiers == nil {
		l.Identifiers = map[string]string{}
	}
	for _, f := range strings.Split(data, string(rune(GS))) {
		if f == "" {
			continue
		}
		m := dataIdentifier.FindStringSubmatch(f)
		if m == nil {
			l.setError(fmt.Sprintf("format 06: %q does not start with a data identifier", f))
			continue
		}
		l.Identifiers[m[1]] = m[2]
	}
	// The license plate (J and 1J–6J) is the parcel's tracking number.
	for _, di := range []string{"J", "1J", "2J", "3J", "4J", "5J", "6J"} {
		if v := l.Identifiers[di]; v != "" && l.Tracking == "" {
			l.Tracking = v
		}
	}
}

// parsePrinted reads a quantity as printed: a number with an optional
// unit after it ("10.1", "4.5KG", "12 LB").
func parsePrinted(s string) (*Printed, error) {
	i := 0
	for i < len(s) && (isDigit(s[i]) || s[i] == '.') {
		i++
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return nil, err
	}
	unit := strings.TrimSpace(s[i:])
	for _, c := range strings.ToUpper(unit) {
		if c < 'A' || c > 'Z' {
			return nil, fmt.Errorf("unit %q", unit)
		}
	}
	return &Printed{Value: v, Unit: unit}, nil
}
