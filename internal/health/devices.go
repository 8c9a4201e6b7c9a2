package health

import (
	"sort"
	"strings"
	"time"
)

// Device states as the status page and telemetry show them.
const (
	DeviceConnected    = "connected"
	DeviceDisconnected = "disconnected"
	DeviceError        = "error"
)

// DeviceStatus is the state of one configured device, derived from its
// conditions ("device.<name>.<what>") and its last reading.
type DeviceStatus struct {
	Name, Kind, Driver string
	State              string
	Reason             string
	LastSeen           time.Time
	LastReading        string
}

type deviceInfo struct {
	kind, driver string
	lastSeen     time.Time
	lastReading  string
}

// AddDevice registers a configured device.
func (t *Tracker) AddDevice(name, kind, driver string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.devices == nil {
		t.devices = map[string]*deviceInfo{}
	}
	t.devices[name] = &deviceInfo{kind: kind, driver: driver}
}

// Seen records a reading from a device.
func (t *Tracker) Seen(name, reading string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.devices[name]; ok {
		d.lastSeen, d.lastReading = t.clock.Now(), reading
	}
}

// Devices returns every registered device with its state, sorted by name.
func (t *Tracker) Devices() []DeviceStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]DeviceStatus, 0, len(t.devices))
	for name, d := range t.devices {
		s := DeviceStatus{Name: name, Kind: d.kind, Driver: d.driver, State: DeviceConnected, LastSeen: d.lastSeen, LastReading: d.lastReading}
		prefix := "device." + name + "."
		for key, c := range t.active {
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			if strings.HasSuffix(key, ".disconnected") {
				s.State, s.Reason = DeviceDisconnected, c.Message
				break
			}
			s.State, s.Reason = DeviceError, c.Message
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeviceConnectedNow reports whether a registered device has no active
// condition, i.e. is connected and working.
func (t *Tracker) DeviceConnectedNow(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	prefix := "device." + name + "."
	for key := range t.active {
		if strings.HasPrefix(key, prefix) {
			return false
		}
	}
	_, ok := t.devices[name]
	return ok
}

// DropDevice forgets a device and clears its conditions, when a config
// change removes or replaces it.
func (t *Tracker) DropDevice(name string) {
	t.mu.Lock()
	delete(t.devices, name)
	var keys []string
	for key := range t.active {
		if strings.HasPrefix(key, "device."+name+".") {
			keys = append(keys, key)
		}
	}
	t.mu.Unlock()
	for _, k := range keys {
		t.Clear(k)
	}
}
