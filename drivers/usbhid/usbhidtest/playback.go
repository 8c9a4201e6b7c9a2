// Package usbhidtest plays back recorded HID input reports as a device, for
// tests of USB HID drivers without hardware.
package usbhidtest

import (
	"errors"
	"sync"

	"github.com/mailroomd/mailroomd/drivers/usbhid"
)

// ErrUnplugged is returned by Read after the recording ends with an unplug.
var ErrUnplugged = errors.New("usbhidtest: device unplugged")

// Playback is a device that returns recorded reports in order, then fails
// as if unplugged (or blocks until closed, when Hold is set).
type Playback struct {
	Reports [][]byte
	Hold    bool

	mu     sync.Mutex
	next   int
	closed chan struct{}
}

var _ usbhid.Device = (*Playback)(nil)

// Read returns the next recorded report.
func (p *Playback) Read(b []byte) (int, error) {
	p.mu.Lock()
	if p.closed == nil {
		p.closed = make(chan struct{})
	}
	if p.next < len(p.Reports) {
		r := p.Reports[p.next]
		p.next++
		p.mu.Unlock()
		return copy(b, r), nil
	}
	closed := p.closed
	p.mu.Unlock()
	if p.Hold {
		<-closed
		return 0, errors.New("usbhidtest: closed")
	}
	return 0, ErrUnplugged
}

// Close ends a held Read.
func (p *Playback) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed == nil {
		p.closed = make(chan struct{})
	}
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	return nil
}
