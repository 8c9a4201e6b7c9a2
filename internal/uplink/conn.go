package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// maxBuffered is how many bytes a coalescingConn holds before Write waits
// for the flusher. A window of 64 events of a few hundred bytes fits many
// times over; a single larger packet is still taken whole.
const maxBuffered = 256 << 10

// coalescingConn gathers what paho writes, one packet per Write, and sends
// it in as few TLS records and system calls as the connection allows. A
// single flusher goroutine writes whatever has gathered since its last
// write; when the link is idle a packet goes out at once, and under load
// (a backlog draining with 64 publishes in flight) each write carries many
// packets instead of one TLS record and one syscall each.
//
// Write returns before the bytes are on the wire, which is safe for MQTT
// QoS 1: an event counts as delivered only on its PUBACK. A failed write
// closes the connection, so paho's reader fails and reports the loss, and
// every later Write returns the error.
type coalescingConn struct {
	net.Conn
	writeTimeout time.Duration

	mu      sync.Mutex
	cond    *sync.Cond // signalled when the buffer is taken or on failure
	buf     []byte
	err     error
	closing bool
	wake    chan struct{} // cap 1: there is something to write
	done    chan struct{} // closed when the flusher has stopped
}

var _ net.Conn = (*coalescingConn)(nil)

// newCoalescingConn wraps c; writeTimeout bounds each write to the network
// (0: none).
func newCoalescingConn(c net.Conn, writeTimeout time.Duration) *coalescingConn {
	cc := &coalescingConn{Conn: c, writeTimeout: writeTimeout, wake: make(chan struct{}, 1), done: make(chan struct{})}
	cc.cond = sync.NewCond(&cc.mu)
	go cc.flusher()
	return cc
}

// Write queues p for the flusher.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closing && len(c.buf) > 0 && len(c.buf)+len(p) > maxBuffered {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.closing {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// flusher writes what has gathered until the connection closes or fails.
func (c *coalescingConn) flusher() {
	defer close(c.done)
	var out []byte
	for {
		<-c.wake
		// Let the goroutine that woke this one (paho's writer, handing
		// over a burst of publishes) run on: on a box of two cores a
		// flusher that takes the buffer at once sends three packets a
		// write during a drain, one that yields first about seven (nine
		// with GOMAXPROCS 2), and the broker reads far less often.
		runtime.Gosched()
		c.mu.Lock()
		out, c.buf = c.buf, out[:0]
		closing := c.closing
		c.cond.Broadcast()
		c.mu.Unlock()
		if len(out) > 0 {
			if c.writeTimeout > 0 {
				c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
			}
			if _, err := c.Conn.Write(out); err != nil {
				c.mu.Lock()
				c.err = fmt.Errorf("write to broker: %w", err)
				c.cond.Broadcast()
				c.mu.Unlock()
				c.Conn.Close()
				return
			}
		}
		if closing {
			c.mu.Lock()
			empty := len(c.buf) == 0
			c.mu.Unlock()
			if empty {
				return
			}
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Close sends what is still gathered (paho's DISCONNECT, for one), waiting
// at most the write timeout (5 s without one) for a stalled peer, and closes
// the connection.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.closing = true
	c.cond.Broadcast()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	limit := c.writeTimeout
	if limit <= 0 {
		limit = 5 * time.Second
	}
	t := time.NewTimer(limit)
	select {
	case <-c.done:
	case <-t.C:
	}
	t.Stop()
	err := c.Conn.Close() // also ends a write the peer does not take
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// SetDeadline sets the read deadline only: writes are bounded by the
// flusher's write timeout.
func (c *coalescingConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is a no-op for the same reason.
func (c *coalescingConn) SetWriteDeadline(time.Time) error { return nil }

// WithDefaultPort returns a broker URL with its port: 8883 for mqtts://
// (ssl://, tls://), 1883 for mqtt:// (tcp://) when it names none. Anything
// it cannot read is returned as it is, for the caller's error.
func WithDefaultPort(broker string) string {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" || u.Port() != "" {
		return broker
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls":
		u.Host = net.JoinHostPort(u.Hostname(), "8883")
	case "mqtt", "tcp":
		u.Host = net.JoinHostPort(u.Hostname(), "1883")
	default:
		return broker
	}
	return u.String()
}

// dialer returns paho's connection function: TLS (or, with insecure
// brokers, plain TCP) within the connect timeout, acknowledging what it
// reads at once (withQuickAck), wrapped so that concurrent publishes share
// TLS records and system calls.
func dialer(connectTimeout, writeTimeout time.Duration) mqtt.OpenConnectionFunc {
	return func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		d := &net.Dialer{}
		var (
			c   net.Conn
			err error
		)
		// The dial and the TLS handshake together within the timeout.
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		switch u.Scheme {
		case "mqtts", "ssl", "tls":
			var tc net.Conn
			if tc, err = d.DialContext(ctx, "tcp", u.Host); err == nil {
				conn := tls.Client(withQuickAck(tc), tlsFor(o.TLSConfig, u.Hostname()))
				if err = conn.HandshakeContext(ctx); err != nil {
					tc.Close()
				}
				c = conn
			}
		case "mqtt", "tcp":
			if c, err = d.DialContext(ctx, "tcp", u.Host); err == nil {
				c = withQuickAck(c)
			}
		default:
			return nil, fmt.Errorf("unsupported broker scheme %q", u.Scheme)
		}
		if err != nil {
			return nil, err
		}
		return newCoalescingConn(c, writeTimeout), nil
	}
}

// tlsFor is cfg for a connection to host: the server name to verify is the
// host's unless cfg names one.
func tlsFor(cfg *tls.Config, host string) *tls.Config {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName != "" {
		return cfg
	}
	c := cfg.Clone()
	c.ServerName = host
	return c
}
