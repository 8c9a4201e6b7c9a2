package mqtttest

import (
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// TestShippedACLConfinesEachBox runs mosquitto with configs/mosquitto-acl.conf:
// a box publishes under its own id only, cannot read another box's
// commands, and the cloud reads what the boxes publish.
func TestShippedACLConfinesEachBox(t *testing.T) {
	acl, err := os.ReadFile("../../configs/mosquitto-acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	b := StartWithACL(t, string(acl))
	connect := func(cn string) mqtt.Client {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(cn).SetTLSConfig(b.TLSConfig(t, cn)))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s connect: %v", cn, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		return c
	}
	var mu sync.Mutex
	got := map[string][]string{}
	listen := func(c mqtt.Client, name, filter string) {
		tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			got[name] = append(got[name], m.Topic()+" "+string(m.Payload()))
			mu.Unlock()
		})
		tok.WaitTimeout(10 * time.Second)
	}
	cloud, boxA, boxB := connect("cloud-ingest"), connect("mr-a"), connect("mr-b")
	listen(cloud, "cloud", "mailroom/v1/+/events")
	listen(boxB, "b-cmd", "mailroom/v1/mr-b/cmd/+")
	listen(boxB, "b-dir", "mailroom/v1/mr-b/directory/desired/+")
	listen(boxA, "a-spy", "mailroom/v1/mr-b/cmd/+") // not allowed: receives nothing
	pub := func(c mqtt.Client, topic, payload string) {
		c.Publish(topic, 1, false, payload).WaitTimeout(5 * time.Second)
	}
	pub(boxA, "mailroom/v1/mr-a/events", "a-own")
	pub(boxA, "mailroom/v1/mr-b/events", "a-forged") // another box's topic: dropped
	operator := connect("fleet-operator")
	pub(operator, "mailroom/v1/mr-b/cmd/ping", "cmd-for-b")
	pub(boxA, "mailroom/v1/mr-b/cmd/ping", "a-sends-cmd") // boxes cannot command boxes
	pub(operator, "mailroom/v1/mr-b/directory/desired/1", "dir-for-b")
	pub(boxA, "mailroom/v1/mr-b/directory/desired/2", "a-sends-dir") // nor push them a directory
	// The broker handles one client's publishes in order: once box a's
	// marker has arrived, its refused publishes were handled too.
	pub(boxA, "mailroom/v1/mr-a/events", "a-marker")
	if err := waitfor.Until(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(strings.Join(got["cloud"], "\n"), "a-marker")
	}); err != nil {
		t.Fatalf("%v: box a's marker did not arrive", err)
	}
	mu.Lock()
	defer mu.Unlock()
	cloudGot := strings.Join(got["cloud"], "\n")
	if !strings.Contains(cloudGot, "a-own") || strings.Contains(cloudGot, "a-forged") {
		t.Fatalf("cloud received %q", cloudGot)
	}
	if bGot := strings.Join(got["b-cmd"], "\n"); !strings.Contains(bGot, "cmd-for-b") || strings.Contains(bGot, "a-sends-cmd") {
		t.Fatalf("box b's commands: %q", bGot)
	}
	if dGot := strings.Join(got["b-dir"], "\n"); !strings.Contains(dGot, "dir-for-b") || strings.Contains(dGot, "a-sends-dir") {
		t.Fatalf("box b's directory parts: %q", dGot)
	}
	if len(got["a-spy"]) != 0 {
		t.Fatalf("box a read box b's commands: %q", got["a-spy"])
	}
}
