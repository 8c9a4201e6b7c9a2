package mqtttest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// FakeBroker is a minimal plaintext MQTT 3.1.1 broker on loopback for the
// edge cases real brokers do not produce on demand: it accepts every
// connection, acknowledges publishes (PUBACK) and answers subscriptions
// with return code 0x80 (refused) while Refuse is set. It records the
// protocol level of every CONNECT and the topics published.
type FakeBroker struct {
	l net.Listener
	// Refuse makes SUBACKs refuse every subscription (0x80).
	Refuse atomic.Bool
	// RefuseConnect answers every CONNECT with return code 5 (not
	// authorised) and closes the connection.
	RefuseConnect atomic.Bool
	// DropAfterConnack accepts every CONNECT and closes the connection
	// right after its CONNACK, as a broker does that takes a client id
	// over for another connection, or kicks a client its access list
	// refuses.
	DropAfterConnack atomic.Bool

	mu        sync.Mutex
	levels    []byte
	published []string
	conns     []net.Conn
	wg        sync.WaitGroup
}

// StartFake starts a FakeBroker that stops at the end of the test.
func StartFake(t testing.TB) *FakeBroker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &FakeBroker{l: l}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.serve(c) }()
		}
	}()
	t.Cleanup(f.Close)
	return f
}

// URL is the fake's mqtt:// address.
func (f *FakeBroker) URL() string { return "mqtt://" + f.l.Addr().String() }

// Close stops the fake and drops its connections.
func (f *FakeBroker) Close() {
	f.l.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Levels returns the protocol level of each CONNECT received (4: MQTT
// 3.1.1, 3: MQTT 3.1).
func (f *FakeBroker) Levels() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.levels...)
}

// Published returns the topics of the publishes received.
func (f *FakeBroker) Published() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.published...)
}

func (f *FakeBroker) serve(c net.Conn) {
	defer c.Close()
	for {
		p, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		var reply packets.ControlPacket
		switch p := p.(type) {
		case *packets.ConnectPacket:
			f.mu.Lock()
			f.levels = append(f.levels, p.ProtocolVersion)
			f.mu.Unlock()
			ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
			if f.RefuseConnect.Load() {
				ack.ReturnCode = packets.ErrRefusedNotAuthorised
				ack.Write(c)
				return
			}
			if f.DropAfterConnack.Load() {
				ack.Write(c)
				return
			}
			reply = ack
		case *packets.SubscribePacket:
			ack := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
			ack.MessageID = p.MessageID
			for range p.Topics {
				code := byte(1)
				if f.Refuse.Load() {
					code = 0x80
				}
				ack.ReturnCodes = append(ack.ReturnCodes, code)
			}
			reply = ack
		case *packets.PublishPacket:
			f.mu.Lock()
			f.published = append(f.published, p.TopicName)
			f.mu.Unlock()
			if p.Qos == 1 {
				ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
				ack.MessageID = p.MessageID
				reply = ack
			}
		case *packets.PingreqPacket:
			reply = packets.NewControlPacket(packets.Pingresp)
		case *packets.DisconnectPacket:
			return
		}
		if reply != nil {
			if err := reply.Write(c); err != nil {
				return
			}
		}
	}
}
