package deadline

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// stuck is a device whose writes block until released.
type stuck struct {
	release chan struct{}
	mu      sync.Mutex
	got     bytes.Buffer
}

func (s *stuck) Write(p []byte) (int, error) {
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.Write(p)
}

func TestWriteReturnsAtTheDeadlineAndRefusesWhileBlocked(t *testing.T) {
	dev := &stuck{release: make(chan struct{})}
	timedOut := 0
	w := &Writer{W: dev, OnTimeout: func() { timedOut++ }}
	began := time.Now()
	if err := w.Write(context.Background(), []byte("W\r"), 50*time.Millisecond); err == nil {
		t.Fatal("a blocked write returned no error")
	}
	if d := time.Since(began); d > time.Second {
		t.Fatalf("a blocked write returned after %s", d)
	}
	if timedOut != 1 {
		t.Fatalf("OnTimeout called %d times, want 1", timedOut)
	}
	if err := w.Write(context.Background(), []byte("W\r"), 50*time.Millisecond); !errors.Is(err, ErrBlocked) {
		t.Fatalf("a write while the first is blocked: %v, want ErrBlocked", err)
	}
	close(dev.release) // the device takes the first write
	deadline := time.Now().Add(5 * time.Second)
	for w.Write(context.Background(), []byte("S\r"), time.Second) != nil {
		if time.Now().After(deadline) {
			t.Fatal("writes still refused after the device took the blocked one")
		}
		time.Sleep(time.Millisecond)
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if got := dev.got.String(); got != "W\rS\r" {
		t.Fatalf("device got %q, want the first write then the next", got)
	}
}
