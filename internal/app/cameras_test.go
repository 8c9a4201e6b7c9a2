package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// A station's camera photographs the parcel just scanned, after its
// parcel.received; a parcel whose scan is long past (a scan resolved by
// the station's recovery after a restart, or one the camera fell behind
// on) is not photographed: another parcel is under the camera by then.
func TestStationCameraSkipsAParcelLongOffTheTable(t *testing.T) {
	r := newRig(t, 1)
	text := strings.Replace(r.yaml(0, "1m", "test"), "stations:\n", "  - {name: cam, kind: camera, driver: sim-camera}\nstations:\n", 1)
	text = strings.Replace(text, "printer: dock-printer, duplicate_window: 0s}", "printer: dock-printer, camera: cam, duplicate_window: 0s, weight_window: 0s}", 1)
	s := r.supervisor(r.config(text))
	defer s.Stop()
	t.Cleanup(func() {
		if t.Failed() {
			for _, rec := range r.logs.all() {
				t.Log(rec)
			}
		}
	})
	r.waitLog(t, "tty line mode", 1) // the scanner's port is set up: a code is read whole
	if err := r.scanner.Scan("1Z999AA10123456784"); err != nil {
		t.Fatal(err)
	}
	photos := func() []event.Event {
		var out []event.Event
		recent, _ := s.app.store.Recent(context.Background(), 100, event.TypeParcelUpdated)
		for _, st := range recent {
			if len(st.Event.Photos) > 0 {
				out = append(out, st.Event)
			}
		}
		return out
	}
	waitfor.True(t, 10*time.Second, "the scanned parcel's photo", func() bool { return len(photos()) == 1 })
	received, _ := s.app.store.Recent(context.Background(), 10, event.TypeParcelReceived)
	if len(received) != 1 || photos()[0].ParcelID != received[0].Event.ID || photos()[0].By != "camera:cam" ||
		photos()[0].Station != "dock-1" || photos()[0].Device != "cam" || photos()[0].Seq <= received[0].Event.Seq {
		t.Fatalf("the photo %+v of the parcel %+v", photos()[0], received)
	}

	g := s.front()
	stale := event.Event{ID: "01a2265a-0000-7000-8000-000000000001", Type: event.TypeParcelReceived, Time: time.Now().Add(-time.Minute)}
	g.photographReceived("dock-1", "cam", 0, g.cameraJobs["cam"])(stale)
	waitfor.True(t, 10*time.Second, "the stale parcel passed over", func() bool {
		for _, rec := range r.logs.all() {
			if strings.Contains(rec.String(), "another parcel may be under it") && strings.Contains(rec.String(), stale.ID) {
				return true
			}
		}
		return false
	})
	if n := len(photos()); n != 1 {
		t.Fatalf("%d photos: the parcel long off the table was photographed", n)
	}
}
