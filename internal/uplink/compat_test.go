package uplink_test

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// compatBroker is a broker other than mosquitto.
type compatBroker interface {
	URL() string
	TLSConfig(t testing.TB, cn string) *tls.Config
}

// TestNATSCompatibility runs the uplink against nats-server's MQTT
// interface (mutual TLS, QoS 1, retained status).
func TestNATSCompatibility(t *testing.T) { checkCompatible(t, mqtttest.StartNATS(t)) }

// TestRabbitMQCompatibility runs the uplink against RabbitMQ's MQTT plugin.
func TestRabbitMQCompatibility(t *testing.T) { checkCompatible(t, mqtttest.StartRabbitMQ(t)) }

// checkCompatible: every event arrives once in order, is marked sent, and
// the retained status is there.
func checkCompatible(t *testing.T, n compatBroker) {
	var mu sync.Mutex
	var events []event.Event
	status := ""
	o := mqtt.NewClientOptions().AddBroker(n.URL()).SetClientID("cloud").SetTLSConfig(n.TLSConfig(t, "cloud")).
		SetCleanSession(true).SetOrderMatters(true)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Subscribe("mailroom/v1/"+appliance+"/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(m.Topic(), "/events"):
			ev, err := event.Decode(m.Payload())
			if err == nil {
				events = append(events, ev)
			}
		case strings.HasSuffix(m.Topic(), "/status"):
			status = string(m.Payload())
		}
	})
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	out := newOutbox(t)
	appendScans(t, out, 0, 300)
	r := start(t, out, uplink.Options{Brokers: []string{n.URL()}, TLS: n.TLSConfig(t, appliance), Window: 32})
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got, online := len(events), strings.Contains(status, `"state":"online"`)
		mu.Unlock()
		// The online status follows the events it counts: it may come a
		// moment after the last of them was acknowledged.
		if st, _ := out.Stats(context.Background()); st.Pending == 0 && got >= 300 && online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 300 events arrived through NATS (online status: %v)", got, online)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	seen := map[int64]bool{}
	var last int64
	for _, ev := range events {
		if !seen[ev.Seq] && ev.Seq < last {
			t.Fatalf("seq %d after %d", ev.Seq, last)
		}
		seen[ev.Seq] = true
		last = max(last, ev.Seq)
	}
	if len(seen) != 300 || !strings.Contains(status, `"state":"online"`) {
		t.Fatalf("%d distinct events, status %q", len(seen), status)
	}
	r.stop(t)
}
