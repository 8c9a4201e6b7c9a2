// Package event defines the events mailroomd commits to its buffer and
// publishes to the cloud, and their wire encoding (API version 1).
package event

import (
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
	// TypeScan is a barcode read by a scanner.
	TypeScan Type = "scan"
)

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
		Type: w.Type, Time: ts, Device: w.Device}
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
