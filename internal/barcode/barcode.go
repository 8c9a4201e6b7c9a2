package barcode

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Carrier names who issued a code. The values are part of the public MQTT
// API: lowercase and stable.
type Carrier string

// Carriers.
const (
	UPS          Carrier = "ups"
	FedEx        Carrier = "fedex"
	USPS         Carrier = "usps"
	DHL          Carrier = "dhl"
	DeutschePost Carrier = "deutschepost"
	Amazon       Carrier = "amazon"
	CanadaPost   Carrier = "canadapost"
	OnTrac       Carrier = "ontrac"
	RoyalMail    Carrier = "royalmail"
	UPU          Carrier = "upu"
	SSCC         Carrier = "sscc"
	Internal     Carrier = "internal"
	Unknown      Carrier = "unknown"
)

// Check is the outcome of check-digit validation.
type Check string

// Check outcomes.
const (
	CheckValid   Check = "valid"
	CheckInvalid Check = "invalid"
	CheckNone    Check = "none" // the format has no check digit
)

// Kind is what an internal code stands for.
type Kind string

// Kinds of internal codes.
const (
	KindRecipient Kind = "recipient" // a recipient's badge
	KindLocation  Kind = "location"  // a mail stop, shelf or room
	KindParcel    Kind = "parcel"    // the mailroom's own parcel id
	KindRound     Kind = "round"     // a delivery round, trolley or route
	KindAction    Kind = "action"    // switches a station's scan mode
)

// Actions an action code may carry: the scan modes of a station.
var Actions = []string{"receive", "move", "out_for_delivery", "deliver", "return"}

// Field is one GS1 element string.
type Field struct {
	AI    string
	Value string
	// start and end are where Value lies in the string parsed.
	start, end int
}

// Result is what a code was recognised as.
type Result struct {
	// Raw is the code exactly as read.
	Raw string `json:"raw"`
	// Symbology is the AIM symbology identifier the scanner sent, if any.
	Symbology string  `json:"symbology,omitempty"`
	Carrier   Carrier `json:"carrier"`
	Service   string  `json:"service,omitempty"`
	// Tracking is the number as the carrier tracks it: spaces, symbology
	// identifier and GS1 framing removed.
	Tracking string `json:"tracking"`
	Check    Check  `json:"check"`
	// Country is the ISO 3166 country of a UPU S10 number.
	Country string `json:"country,omitempty"`
	// Kind is set for internal codes.
	Kind Kind `json:"kind,omitempty"`
	// Action is the scan mode an action code switches to.
	Action string `json:"action,omitempty"`
	// GS1 holds the element strings found, by AI.
	GS1 map[string]string `json:"gs1,omitempty"`
	// Label is the structured data of a 2D shipping label (an ISO/IEC
	// 15434 message), when the code is one.
	Label *Label `json:"label,omitempty"`
	// Ambiguous is true when several carriers' formats fit equally well;
	// Candidates names them and Carrier is "unknown".
	Ambiguous  bool      `json:"ambiguous,omitempty"`
	Candidates []Carrier `json:"candidates,omitempty"`
}

// IsParcel reports whether the code identifies a parcel (as opposed to a
// recipient or location code).
func (r Result) IsParcel() bool {
	return r.Carrier != Internal || r.Kind == KindParcel
}

// Rule recognises one family of the mailroom's own codes, by prefix or by
// regular expression (matched against the code without symbology id).
type Rule struct {
	Kind    Kind
	Prefix  string
	Pattern string
	// Action is the scan mode of a KindAction rule (one of Actions).
	Action string
}

// Classifier recognises codes. The zero value knows the carriers but no
// internal codes.
type Classifier struct {
	rules []compiledRule
}

type compiledRule struct {
	kind   Kind
	prefix string
	re     *regexp.Regexp
	action string
}

// NewClassifier returns a classifier that also knows the given internal
// codes. Rules are tried in order, before any carrier format.
func NewClassifier(rules []Rule) (*Classifier, error) {
	c := &Classifier{}
	for i, r := range rules {
		switch r.Kind {
		case KindRecipient, KindLocation, KindParcel, KindRound:
			if r.Action != "" {
				return nil, fmt.Errorf("barcode rule %d: action is only for kind action", i+1)
			}
		case KindAction:
			if !slices.Contains(Actions, r.Action) {
				return nil, fmt.Errorf("barcode rule %d: action %q is not one of %s", i+1, r.Action, strings.Join(Actions, ", "))
			}
		default:
			return nil, fmt.Errorf("barcode rule %d: kind %q is not recipient, location, parcel, round or action", i+1, r.Kind)
		}
		cr := compiledRule{kind: r.Kind, prefix: strings.ToUpper(r.Prefix), action: r.Action}
		switch {
		case r.Pattern != "" && r.Prefix != "":
			return nil, fmt.Errorf("barcode rule %d: give a prefix or a pattern, not both", i+1)
		case r.Pattern != "":
			re, err := regexp.Compile(r.Pattern)
			if err != nil {
				return nil, fmt.Errorf("barcode rule %d: pattern: %w", i+1, err)
			}
			cr.re = re
		case r.Prefix == "":
			return nil, fmt.Errorf("barcode rule %d: a prefix or a pattern is required", i+1)
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

// Classify recognises one code as read from a scanner.
func Classify(raw []byte) Result { return (*Classifier)(nil).Classify(raw) }

// Classify recognises one code. It never fails: what it cannot recognise is
// carrier "unknown" with the raw value kept.
func (c *Classifier) Classify(raw []byte) Result {
	r := Result{Raw: string(raw), Carrier: Unknown, Check: CheckNone}
	s := strings.TrimRight(r.Raw, "\r\n\t ")
	s = strings.TrimLeft(s, " \t")
	r.Symbology, s = splitSymbology(s)

	if IsMessage(s) {
		return r.fromLabel(ParseMessage(s))
	}
	if c != nil {
		for _, rule := range c.rules {
			if rule.matches(s) {
				r.Carrier, r.Kind, r.Tracking, r.Action = Internal, rule.kind, s, rule.action
				return r
			}
		}
	}

	compact := compactUpper(s)
	r.Tracking = strings.ReplaceAll(compact, string(GS), "")
	target := r.Tracking
	if gs1Symbologies[r.Symbology] || strings.IndexByte(compact, GS) >= 0 ||
		(len(compact) == 20 && strings.HasPrefix(compact, "00") && isDigits(compact)) {
		fields, rest := parseGS1(compact)
		if len(fields) > 0 {
			r.GS1 = make(map[string]string, len(fields))
			for _, f := range fields {
				r.GS1[f.AI] = f.Value
			}
			// Names and addresses (AIs 4300-4308) as printed, letter case
			// and blanks kept: the same bytes of the code as read.
			var at []int
			for _, f := range fields {
				if len(f.AI) == 4 && strings.HasPrefix(f.AI, "43") && f.end > f.start {
					if at == nil {
						at = compactOffsets(s)
					}
					r.GS1[f.AI] = s[at[f.start] : at[f.end-1]+1]
				}
			}
			target = strings.ReplaceAll(rest, string(GS), "")
			for _, f := range fields {
				switch {
				case f.AI == "00":
					target = f.Value
				case target == "" && len(f.AI) == 2 && f.AI[0] == '9':
					target = f.AI + f.Value // USPS IMpb after 420 ZIP
				}
			}
			if target == "" {
				if v, ok := r.GS1["401"]; ok {
					r.Tracking = v
				}
				return r
			}
		}
	}

	cands := candidates(target)
	var valid []candidate
	for _, cd := range cands {
		if cd.check == CheckValid {
			valid = append(valid, cd)
		}
	}
	switch {
	case len(valid) == 1:
		r.apply(valid[0])
	case len(valid) > 1:
		r.Ambiguous, r.Check, r.Tracking = true, CheckValid, target
		for _, cd := range valid {
			r.Candidates = append(r.Candidates, cd.carrier)
		}
	case len(cands) == 1:
		r.apply(cands[0])
	case len(cands) > 1:
		r.Check, r.Tracking = CheckInvalid, target
		for _, cd := range cands {
			r.Candidates = append(r.Candidates, cd.carrier)
		}
	}
	return r
}

// fromLabel takes carrier and tracking number from a 2D label: the
// carrier from its SCAC, the tracking number's format and check digit as
// for a scanned tracking number.
func (r Result) fromLabel(l *Label) Result {
	r.Label, r.Tracking = l, l.Tracking
	if l.Tracking != "" {
		sub := (*Classifier)(nil).Classify([]byte(l.Tracking))
		if byScac := CarrierOfSCAC(l.SCAC); byScac == Unknown || sub.Carrier == byScac {
			r.Carrier, r.Service, r.Check, r.Tracking, r.Country = sub.Carrier, sub.Service, sub.Check, sub.Tracking, sub.Country
			r.Ambiguous, r.Candidates = sub.Ambiguous, sub.Candidates
		}
	}
	if c := CarrierOfSCAC(l.SCAC); c != Unknown {
		r.Carrier = c
	}
	return r
}

func (r *Result) apply(cd candidate) {
	r.Carrier, r.Service, r.Tracking, r.Check, r.Country = cd.carrier, cd.service, cd.tracking, cd.check, cd.country
	for _, f := range cd.gs1 {
		if r.GS1 == nil {
			r.GS1 = map[string]string{}
		}
		r.GS1[f.AI] = f.Value
	}
}

func (cr compiledRule) matches(s string) bool {
	if cr.re != nil {
		return cr.re.MatchString(s)
	}
	return len(s) >= len(cr.prefix) && strings.EqualFold(s[:len(cr.prefix)], cr.prefix)
}

// compactUpper removes spaces and upper-cases ASCII letters.
// compactOffsets maps each byte of compactUpper(s) to its offset in s.
func compactOffsets(s string) []int {
	at := make([]int, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			at = append(at, i)
		}
	}
	return at
}

func compactUpper(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c >= 'a' && c <= 'z' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			continue
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b)
}
