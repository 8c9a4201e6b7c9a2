package event

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// IDGenerator makes UUIDv7 identifiers (RFC 9562) that never go backwards,
// even when the wall clock does: the 48-bit millisecond field never drops
// below the last one issued, and the 12-bit rand_a field is used as a
// counter within one millisecond (method 1 of RFC 9562 section 6.2).
type IDGenerator struct {
	mu      sync.Mutex
	lastMs  int64
	counter uint16
}

// NewIDGenerator returns a generator that will only issue ids greater than
// after, which may be empty.
func NewIDGenerator(after string) (*IDGenerator, error) {
	g := &IDGenerator{}
	if after == "" {
		return g, nil
	}
	ms, ctr, err := parseV7(after)
	if err != nil {
		return nil, fmt.Errorf("seed id generator: %w", err)
	}
	g.lastMs, g.counter = ms, ctr
	return g, nil
}

// New returns the next id for wall-clock time now.
func (g *IDGenerator) New(now time.Time) string {
	g.mu.Lock()
	ms := now.UnixMilli()
	if ms > g.lastMs {
		g.lastMs = ms
		g.counter = 0
	} else {
		g.counter++
		if g.counter > 0xfff {
			g.lastMs++
			g.counter = 0
		}
	}
	ms, ctr := g.lastMs, g.counter
	g.mu.Unlock()

	var u [16]byte
	binary.BigEndian.PutUint64(u[0:8], uint64(ms)<<16)
	u[6] = 0x70 | byte(ctr>>8)
	u[7] = byte(ctr)
	if _, err := rand.Read(u[8:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on supported systems
	}
	u[8] = u[8]&0x3f | 0x80
	return format(u)
}

func format(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

func parseV7(s string) (ms int64, ctr uint16, err error) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return 0, 0, errors.New("malformed uuid " + s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	var u [16]byte
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return 0, 0, fmt.Errorf("malformed uuid %s: %w", s, err)
	}
	if u[6]>>4 != 7 {
		return 0, 0, errors.New("not a version 7 uuid: " + s)
	}
	ms = int64(binary.BigEndian.Uint64(u[0:8]) >> 16)
	ctr = uint16(u[6]&0x0f)<<8 | uint16(u[7])
	return ms, ctr, nil
}

// IDTime returns the millisecond timestamp embedded in a UUIDv7.
func IDTime(id string) (time.Time, error) {
	ms, _, err := parseV7(id)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}
