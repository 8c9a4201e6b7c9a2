package mqtttest

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Fault is what a FaultProxy does to the traffic.
type Fault int

// Faults.
const (
	// Pass forwards everything.
	Pass Fault = iota
	// Blackhole forwards nothing in either direction and keeps the
	// connections open: a link cut without a TCP close (half-open).
	Blackhole
	// DropPubacks forwards PUBLISH to the broker but drops the broker's
	// PUBACKs: the box must resend after it reconnects.
	DropPubacks
	// SlowBlobs holds each blob chunk the box publishes for 50 ms: a slow
	// uplink, so that an upload can be cut in the middle.
	SlowBlobs
)

// FaultProxy is a TLS-terminating MQTT proxy in front of a Broker. It
// parses every packet, counts the event PUBLISHes it forwards (this is
// where "delivered" is counted: a SIGKILLed broker may lose what it had
// acknowledged), tracks the in-flight window, and injects faults.
type FaultProxy struct {
	t        testing.TB
	ln       net.Listener
	upstream string
	upTLS    *tls.Config

	mu        sync.Mutex
	fault     Fault
	conns     []net.Conn
	published [][]byte // event payloads forwarded upstream, in order
	inflight  map[uint16]bool
	maxFlight int
	faults    int
}

// StartFaultProxy listens on loopback with a server certificate from the
// broker's CA and connects upstream as cn.
func (b *Broker) StartFaultProxy(t testing.TB, cn string) *FaultProxy {
	t.Helper()
	srv, err := b.CA.IssueServer(time.Now(), 24*time.Hour)
	must(t, err)
	cert, err := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	must(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
	must(t, err)
	up := b.TLSConfig(t, cn)
	up.ServerName = "127.0.0.1"
	p := &FaultProxy{t: t, ln: ln, upstream: fmt.Sprintf("127.0.0.1:%d", b.Port), upTLS: up, inflight: map[uint16]bool{}}
	t.Cleanup(func() { ln.Close(); p.CutAll() })
	go p.accept()
	return p
}

// URL is the proxy's broker URL.
func (p *FaultProxy) URL() string { return "mqtts://" + p.ln.Addr().String() }

// SetFault changes what the proxy does from now on.
func (p *FaultProxy) SetFault(f Fault) {
	p.mu.Lock()
	if f != Pass {
		p.faults++
	}
	p.fault = f
	p.mu.Unlock()
}

// CutAll closes every connection (a clean TCP close).
func (p *FaultProxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Published returns the event payloads forwarded to the broker.
func (p *FaultProxy) Published() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.published...)
}

// MaxInflight is the largest number of unacknowledged event PUBLISHes seen
// on one connection.
func (p *FaultProxy) MaxInflight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxFlight
}

// Faults counts the faults injected.
func (p *FaultProxy) Faults() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

func (p *FaultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *FaultProxy) currentFault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

func (p *FaultProxy) serve(down net.Conn) {
	up, err := tls.Dial("tcp", p.upstream, p.upTLS)
	if err != nil {
		down.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, down, up)
	inflight := map[uint16]bool{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	// box -> broker
	go func() {
		defer func() { up.Close(); down.Close(); done <- struct{}{} }()
		for {
			pk, err := packets.ReadPacket(down)
			if err != nil {
				return
			}
			for p.currentFault() == Blackhole {
				time.Sleep(20 * time.Millisecond) // hold it: nothing moves
			}
			if pub, ok := pk.(*packets.PublishPacket); ok && p.currentFault() == SlowBlobs && strings.Contains(pub.TopicName, "/blobs/") {
				time.Sleep(50 * time.Millisecond)
			}
			if pub, ok := pk.(*packets.PublishPacket); ok && strings.HasSuffix(pub.TopicName, "/events") {
				p.mu.Lock()
				p.published = append(p.published, append([]byte(nil), pub.Payload...))
				inflight[pub.MessageID] = true
				p.maxFlight = max(p.maxFlight, len(inflight))
				p.mu.Unlock()
			}
			if err := pk.Write(up); err != nil {
				return
			}
		}
	}()
	// broker -> box
	go func() {
		defer func() { up.Close(); down.Close(); done <- struct{}{} }()
		for {
			pk, err := packets.ReadPacket(up)
			if err != nil {
				return
			}
			for p.currentFault() == Blackhole {
				time.Sleep(20 * time.Millisecond)
			}
			if ack, ok := pk.(*packets.PubackPacket); ok {
				p.mu.Lock()
				delete(inflight, ack.MessageID)
				p.mu.Unlock()
				if p.currentFault() == DropPubacks {
					continue
				}
			}
			if err := pk.Write(down); err != nil {
				return
			}
		}
	}()
	<-done
	<-done
}
