// Package label renders receiving labels as ZPL from a template. Every
// value taken from a scan is escaped before it reaches the template, so a
// barcode cannot inject printer commands.
package label

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
)

// Default is the built-in receiving label (4x6 in at 203 dpi): carrier and
// tracking number, recipient and location, date, station, weight, and the
// parcel's internal id as a barcode.
const Default = `^XA
^CI28
^FO40,30^A0N,44,44^FH^FD{{.Carrier}}{{if .Service}} {{.Service}}{{end}}^FS
^FO40,85^A0N,34,34^FH^FD{{.Tracking}}^FS
{{if .Recipient}}^FO40,135^A0N,34,34^FH^FD{{.Recipient}}^FS
{{end}}{{if .Location}}^FO40,180^A0N,34,34^FH^FD{{.Location}}^FS
{{end}}^FO40,230^A0N,26,26^FH^FD{{.Date}}  {{.Station}}{{if .Weight}}  {{.Weight}}{{end}}^FS
{{.IDCode}}
^XZ
`

// Fields are the facts printed on a label, as plain text.
type Fields struct {
	ID        string // the parcel's event id
	Carrier   string
	Service   string
	Tracking  string
	Recipient string
	Location  string
	Station   string
	Weight    string // e.g. "1.25 kg"; empty when unknown
	Time      time.Time
	// QR selects a QR code for the id instead of Code 128.
	QR bool
}

// data is what templates see: every value escaped for ^FH^FD.
type data struct {
	ID, Carrier, Service, Tracking, Recipient, Location, Station, Weight, Date string
	// IDCode is a complete field drawing the id as a barcode.
	IDCode string
}

// Template is a parsed label template.
type Template struct{ t *template.Template }

// Parse parses a ZPL template. Templates use text/template syntax with the
// fields .ID .Carrier .Service .Tracking .Recipient .Location .Station
// .Weight .Date and .IDCode; put ^FH before ^FD for every field.
func Parse(text string) (*Template, error) {
	t, err := template.New("label").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse label template: %w", err)
	}
	// Render once with sample data so that a template naming an unknown
	// field fails at load, not at the first parcel.
	if err := t.Execute(&bytes.Buffer{}, data{}); err != nil {
		return nil, fmt.Errorf("parse label template: %w", err)
	}
	if !strings.Contains(text, "^XA") || !strings.Contains(text, "^XZ") {
		return nil, fmt.Errorf("parse label template: a label starts with ^XA and ends with ^XZ")
	}
	return &Template{t: t}, nil
}

// MustDefault returns the built-in template.
func MustDefault() *Template {
	t, err := Parse(Default)
	if err != nil {
		panic(err)
	}
	return t
}

// Render returns the ZPL of one label.
func (t *Template) Render(f Fields) ([]byte, error) {
	d := data{
		ID: zpl.Escape(f.ID), Carrier: zpl.Escape(f.Carrier), Service: zpl.Escape(f.Service),
		Tracking: zpl.Escape(f.Tracking), Recipient: zpl.Escape(f.Recipient), Location: zpl.Escape(f.Location),
		Station: zpl.Escape(f.Station), Weight: zpl.Escape(f.Weight), Date: f.Time.Format("2006-01-02 15:04"),
	}
	if f.QR {
		d.IDCode = "^FO560,30^BQN,2,5^FH^FDQA," + d.ID + "^FS"
	} else {
		d.IDCode = zpl.Code128(40, 290, 100, f.ID)
	}
	var b bytes.Buffer
	if err := t.t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render label: %w", err)
	}
	return b.Bytes(), nil
}
