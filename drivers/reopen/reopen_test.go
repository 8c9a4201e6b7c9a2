package reopen

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type dev struct{}

func (dev) Close() error { return nil }

// TestWakeCutsBackoffShort: with a long backoff, a hot-plug wake makes the
// loop try again at once.
func TestWakeCutsBackoffShort(t *testing.T) {
	var opens atomic.Int32
	wake := make(chan struct{}, 1)
	served := make(chan struct{})
	l := Loop[dev]{Name: "d", Kind: "scanner", Where: "/dev/ttyACM0", Min: time.Hour, Max: time.Hour, Wake: wake,
		Open: func() (dev, error) {
			if opens.Add(1) == 1 {
				return dev{}, errors.New("no such device")
			}
			return dev{}, nil
		},
		Serve: func(ctx context.Context, _ dev) error { close(served); <-ctx.Done(); return nil },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	wake <- struct{}{}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the wake did not cut the hour-long backoff short")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
