package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Pending is what the daemon hands the packaged updater in the marker file
// whose appearance starts mailroomd-update.service: the verified artifact,
// and what the daemon's own updater would get as flags. The unit's flags
// are the defaults for what the marker leaves out.
type Pending struct {
	Artifact  string `json:"artifact"`
	RequestID string `json:"request_id,omitempty"`
	From      string `json:"from,omitempty"`
	// Timeout is how long the new version has to become healthy
	// (fleet.update_timeout); zero leaves the unit's --timeout.
	Timeout time.Duration `json:"timeout_ns,omitempty"`
}

// Marshal encodes the marker.
func (p Pending) Marshal() []byte {
	b, _ := json.Marshal(p)
	return append(b, '\n')
}

// ParsePending reads a marker: a JSON object, or (as builds before it
// wrote) the artifact's path alone on a line.
func ParsePending(b []byte) (Pending, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return Pending{}, errors.New("read update marker: empty")
	}
	if !utf8.Valid(b) {
		return Pending{}, errors.New("read update marker: not UTF-8")
	}
	if b[0] != '{' {
		if bytes.ContainsAny(b, "\r\n") {
			return Pending{}, errors.New("read update marker: more than one line and not JSON")
		}
		return Pending{Artifact: string(b)}, nil
	}
	var p Pending
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&p); err != nil {
		return Pending{}, fmt.Errorf("read update marker: %w", err)
	}
	if d.More() {
		return Pending{}, errors.New("read update marker: data after the JSON object")
	}
	switch {
	case p.Artifact == "":
		return Pending{}, errors.New("read update marker: no artifact")
	case p.Timeout < 0:
		return Pending{}, fmt.Errorf("read update marker: negative timeout %v", p.Timeout)
	}
	return p, nil
}
