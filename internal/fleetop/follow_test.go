package fleetop

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// TestFollowFailsWhenTheConnectionIsLost: a follower whose broker goes
// away returns ErrConnectionLost instead of waiting silently for events it
// can no longer see.
func TestFollowFailsWhenTheConnectionIsLost(t *testing.T) {
	b := mqtttest.Start(t)
	c, err := Dial(Options{Broker: b.URL(), ClientID: "operator", TLS: b.TLSConfig(t, "operator")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Follow(context.Background(), "+/events/#", func(Message) {}) }()
	time.Sleep(200 * time.Millisecond) // subscribed
	b.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("Follow after the broker went away: %v, want ErrConnectionLost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Follow still waits 30 s after its broker went away")
	}
}
