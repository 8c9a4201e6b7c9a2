// Package event defines the events mailroomd commits to its buffer and
// publishes to the cloud, and their wire encoding (API version 1).
package event

import (
	"github.com/mailroomd/mailroomd/internal/barcode"

	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// APIVersion is the payload version carried in the "v" field of every event.
const APIVersion = 1

// Type names the kind of an event. Types are part of the public MQTT API.
type Type string

// Event types.
const (
	// TypeScan is a barcode read by a scanner (or typed in by a clerk).
	TypeScan Type = "scan"
	// TypeParcelReceived is a parcel taken in at a station.
	TypeParcelReceived Type = "parcel.received"
	// TypeParcelUpdated adds what was learnt after a parcel was received
	// (a recipient or location scanned right after it).
	TypeParcelUpdated Type = "parcel.updated"
	// TypeLabelPrinted is a receiving label handed to a printer.
	TypeLabelPrinted Type = "label.printed"
	// TypeAudit records a remote instruction or admin action and its
	// outcome.
	TypeAudit Type = "audit"

	// TypeParcelMoved is a parcel put at a location (shelf, bin, mail stop).
	TypeParcelMoved Type = "parcel.moved"
	// TypeParcelOutForDelivery is a parcel taken out on a delivery round.
	TypeParcelOutForDelivery Type = "parcel.out_for_delivery"
	// TypeParcelDelivered is a parcel handed to its recipient, with proof.
	TypeParcelDelivered Type = "parcel.delivered"
	// TypeParcelHeld is a parcel kept back (recipient away, on request).
	TypeParcelHeld Type = "parcel.held"
	// TypeParcelReturned is a parcel sent back to its sender.
	TypeParcelReturned Type = "parcel.returned"
	// TypeParcelForwarded is a parcel sent on to another address.
	TypeParcelForwarded Type = "parcel.forwarded"
)

// Custody reports whether t is one of the custody event types that change
// a received parcel's state.
func (t Type) Custody() bool {
	switch t {
	case TypeParcelMoved, TypeParcelOutForDelivery, TypeParcelDelivered,
		TypeParcelHeld, TypeParcelReturned, TypeParcelForwarded:
		return true
	}
	return false
}

// Proof methods of a delivery.
const (
	ProofBadge     = "badge"
	ProofSignature = "signature"
	ProofPIN       = "pin"
	ProofClerk     = "clerk"
)

// Proof is how a delivery was proven.
type Proof struct {
	// Method is badge, signature, pin or clerk.
	Method string `json:"method"`
	// Badge is the recipient code read from the badge (method badge).
	Badge string `json:"badge,omitempty"`
	// SHA256 and Size describe the signature (method signature): the
	// hex SHA-256 and the length in bytes of Signature.
	SHA256 string `json:"sha256,omitempty"`
	Size   int    `json:"size,omitempty"`
	// Signature is the signature as SVG path data in a 1000×400 box.
	Signature string `json:"signature,omitempty"`
}

// Audit is what an audit event records.
type Audit struct {
	// Action is "command" or "config".
	Action string `json:"action"`
	// Name is the command's name.
	Name      string `json:"name,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Version   int64  `json:"version,omitempty"`
	// KeyID names the fleet key that signed the instruction, if known.
	KeyID string `json:"key_id,omitempty"`
	// Outcome is applied, failed or rejected.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

// Weight is a scale reading attached to a parcel.
type Weight struct {
	// Value and Unit are as the scale reported them.
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Grams is Value converted to grams.
	Grams float64 `json:"grams"`
	// Stable is false when the scale had not settled within the window.
	Stable bool   `json:"stable"`
	Scale  string `json:"scale,omitempty"`
}

// Parcel is what a station recognised in a parcel scan.
type Parcel struct {
	Carrier  string `json:"carrier"`
	Service  string `json:"service,omitempty"`
	Tracking string `json:"tracking"`
	// Check is valid, invalid or none.
	Check string `json:"check"`
	// Raw is the code as read, as text: bytes that are not UTF-8 are
	// replaced by U+FFFD there, and RawB64 carries the exact bytes.
	Raw       string            `json:"raw"`
	RawB64    string            `json:"raw_b64,omitempty"`
	Symbology string            `json:"symbology,omitempty"`
	Country   string            `json:"country,omitempty"`
	GS1       map[string]string `json:"gs1,omitempty"`
	// Candidates names the carriers whose formats fit equally well when
	// the code is ambiguous (carrier is then "unknown").
	Candidates []string `json:"candidates,omitempty"`
	// Label is what a 2D shipping label's data says, when the code was one.
	Label *barcode.Label `json:"label,omitempty"`
	// Weight is nil when no weight was available.
	Weight *Weight `json:"weight"`
}

// ext holds the fields added to scan events at stations and the fields of
// the business events. They are encoded after the core fields.
type ext struct {
	Station  string `json:"station,omitempty"`
	Manual   bool   `json:"manual,omitempty"`
	ScanID   string `json:"scan_id,omitempty"`
	ParcelID string `json:"parcel_id,omitempty"`
	*Parcel
	Recipient string `json:"recipient,omitempty"`
	// RecipientID, RecipientName, RecipientMatch and RecipientScore are
	// the person of the directory the parcel is for.
	RecipientID    string  `json:"recipient_id,omitempty"`
	RecipientName  string  `json:"recipient_name,omitempty"`
	RecipientMatch string  `json:"recipient_match,omitempty"`
	RecipientScore float64 `json:"recipient_score,omitempty"`
	Location       string  `json:"location,omitempty"`
	Printer        string  `json:"printer,omitempty"`
	// EnteredWeight is a weight a clerk typed in with a manual entry.
	EnteredWeight *Weight `json:"entered_weight,omitempty"`
	Audit         *Audit  `json:"audit,omitempty"`
	By            string  `json:"by,omitempty"`
	Round         string  `json:"round,omitempty"`
	Proof         *Proof  `json:"proof,omitempty"`
	Proxy         string  `json:"proxy,omitempty"`
	Reason        string  `json:"reason,omitempty"`
	To            string  `json:"to,omitempty"`
	PickupPIN     string  `json:"pickup_pin,omitempty"`
	Photos        []Photo `json:"photos,omitempty"`
}

// Photo is a photo (or another blob) an event refers to: the box keeps
// it, content-addressed, and uploads it apart from the events.
type Photo struct {
	// SHA256 is the hex SHA-256 of the bytes, which name the blob.
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	// Kind is label, damage or proof.
	Kind string `json:"kind"`
}

// Event is one committed fact. ID, Epoch and Seq are assigned by the store
// when the event is committed; the rest is filled in by whoever creates it.
type Event struct {
	ID        string
	Epoch     string
	Seq       int64
	Appliance string
	Site      string
	Type      Type
	Time      time.Time
	Device    string
	// Barcode holds the bytes exactly as read from the device.
	Barcode []byte

	// Station is the receiving station the event belongs to.
	Station string
	// Manual marks a code typed in by a clerk instead of scanned.
	Manual bool
	// ScanID is the id of the scan event this event resolves.
	ScanID string
	// ParcelID is the id of the parcel.received event this event is about.
	ParcelID string
	// Parcel is set on parcel.received.
	Parcel *Parcel
	// Recipient and Location are internal codes attached to a parcel.
	Recipient string
	Location  string
	// RecipientID is the directory id of the person the parcel is for,
	// RecipientName their display name (empty when the site's privacy
	// setting keeps names out of events), RecipientMatch how they were
	// found (badge, exact, fuzzy, manual or none) and RecipientScore how
	// well a fuzzy name fit.
	RecipientID    string
	RecipientName  string
	RecipientMatch string
	RecipientScore float64
	// Printer is the device a label went to.
	Printer string
	// EnteredWeight is a weight typed in by a clerk with a manual entry.
	EnteredWeight *Weight
	// Audit is set on audit events.
	Audit *Audit
	// By is who did it: the signed-in user, or the device for a scan.
	By string
	// Round names the delivery round of parcel.out_for_delivery.
	Round string
	// Proof is set on parcel.delivered.
	Proof *Proof
	// Proxy is the recipient code of someone who collected for Recipient.
	Proxy string
	// Reason says why a parcel was held, returned or forwarded; To is
	// where a forwarded parcel went.
	Reason string
	To     string
	// PickupPIN is the PIN a recipient gives to collect the parcel, on
	// parcel.received when the site accepts PINs as proof.
	PickupPIN string
	// Photos are the photos taken of the parcel or at its hand-over.
	Photos []Photo

	// Resolves lists scan ids that this event completes at its station. The
	// store records them in the same transaction; they are not published.
	Resolves []string
}

func (e *Event) ext() *ext {
	if e.Station == "" && !e.Manual && e.ScanID == "" && e.ParcelID == "" && e.Parcel == nil &&
		e.Recipient == "" && e.RecipientID == "" && e.RecipientName == "" && e.RecipientMatch == "" && e.Location == "" && e.Printer == "" && e.EnteredWeight == nil && e.Audit == nil &&
		e.By == "" && e.Round == "" && e.Proof == nil && e.Proxy == "" && e.Reason == "" && e.To == "" && e.PickupPIN == "" && len(e.Photos) == 0 {
		return nil
	}
	return &ext{Station: e.Station, Manual: e.Manual, ScanID: e.ScanID, ParcelID: e.ParcelID, Parcel: e.Parcel,
		Recipient: e.Recipient, RecipientID: e.RecipientID, RecipientName: e.RecipientName, RecipientMatch: e.RecipientMatch,
		RecipientScore: e.RecipientScore, Location: e.Location, Printer: e.Printer, EnteredWeight: e.EnteredWeight, Audit: e.Audit,
		By: e.By, Round: e.Round, Proof: e.Proof, Proxy: e.Proxy, Reason: e.Reason, To: e.To, PickupPIN: e.PickupPIN, Photos: e.Photos}
}

// wire is the JSON shape of an event, version 1.
type wire struct {
	V         int    `json:"v"`
	ID        string `json:"id"`
	Epoch     string `json:"epoch"`
	Seq       int64  `json:"seq"`
	Appliance string `json:"appliance"`
	Site      string `json:"site,omitempty"`
	Type      Type   `json:"type"`
	TS        string `json:"ts"`
	Device    string `json:"device,omitempty"`
	Barcode   string `json:"barcode,omitempty"`
	BarcodeB4 string `json:"barcode_b64,omitempty"`
	ext
}

// TimeFormat is the layout of the "ts" field: RFC 3339, UTC, milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON encodes the event as its version 1 wire payload.
func (e Event) MarshalJSON() ([]byte, error) { return e.AppendJSON(nil) }

// AppendJSON appends the version 1 wire payload of the event to b. A barcode
// that is not valid UTF-8 is carried in barcode_b64 so that no byte is
// altered. The encoding is written by hand because it sits on the commit
// path of every scan; TestEventWireRoundTrip checks it against Decode.
func (e Event) AppendJSON(b []byte) ([]byte, error) {
	if e.ID == "" || e.Seq <= 0 || e.Epoch == "" {
		return nil, errors.New("encode event: id, epoch and seq must be set")
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, APIVersion, 10)
	b = appendField(b, "id", e.ID)
	b = appendField(b, "epoch", e.Epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = appendField(b, "appliance", e.Appliance)
	if e.Site != "" {
		b = appendField(b, "site", e.Site)
	}
	b = appendField(b, "type", string(e.Type))
	b = append(b, `,"ts":"`...)
	b = e.Time.UTC().AppendFormat(b, TimeFormat)
	b = append(b, '"')
	if e.Device != "" {
		b = appendField(b, "device", e.Device)
	}
	if e.Barcode != nil {
		if utf8.Valid(e.Barcode) {
			b = appendField(b, "barcode", string(e.Barcode))
		} else {
			b = append(b, `,"barcode_b64":"`...)
			b = base64.StdEncoding.AppendEncode(b, e.Barcode)
			b = append(b, '"')
		}
	}
	if x := e.ext(); x != nil {
		// Business events are few; encoding/json is fine for them.
		xb, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
		if len(xb) > 2 {
			b = append(b, ',')
			b = append(b, xb[1:len(xb)-1]...)
		}
	}
	return append(b, '}'), nil
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. s must be valid UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Decode parses a version 1 wire payload. It is what a consumer of the API
// does, and what tests use to check what reached the broker.
func Decode(b []byte) (Event, error) {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if w.V != APIVersion {
		return Event{}, fmt.Errorf("decode event: unsupported version %d", w.V)
	}
	ts, err := time.Parse(time.RFC3339Nano, w.TS)
	if err != nil {
		return Event{}, fmt.Errorf("decode event: ts: %w", err)
	}
	e := Event{ID: w.ID, Epoch: w.Epoch, Seq: w.Seq, Appliance: w.Appliance, Site: w.Site,
		Type: w.Type, Time: ts, Device: w.Device,
		Station: w.Station, Manual: w.Manual, ScanID: w.ScanID, ParcelID: w.ParcelID, Parcel: w.Parcel,
		Recipient: w.Recipient, RecipientID: w.RecipientID, RecipientName: w.RecipientName, RecipientMatch: w.RecipientMatch,
		RecipientScore: w.RecipientScore, Location: w.Location, Printer: w.Printer, EnteredWeight: w.EnteredWeight, Audit: w.Audit,
		By: w.By, Round: w.Round, Proof: w.Proof, Proxy: w.Proxy, Reason: w.Reason, To: w.To, PickupPIN: w.PickupPIN, Photos: w.Photos}
	switch {
	case w.BarcodeB4 != "":
		e.Barcode, err = base64.StdEncoding.DecodeString(w.BarcodeB4)
		if err != nil {
			return Event{}, fmt.Errorf("decode event: barcode_b64: %w", err)
		}
	case w.Barcode != "":
		e.Barcode = []byte(w.Barcode)
	}
	return e, nil
}
