package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image/jpeg"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/ocr/ocrtest"
)

// TestStationCameraPhotographsEveryParcel: a station with a camera
// photographs the label of every parcel it receives, after the parcel is
// committed: the parcel.received comes first, then a parcel.updated naming
// the photo (kind label, by camera:<name>); the photo reaches the cloud
// byte for byte, and its label names the recipient.
func TestStationCameraPhotographsEveryParcel(t *testing.T) {
	s := newSetup(t, "mr-stcam-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-stcam-01/events")
	picture := filepath.Join(s.dir, "label.png")
	img, err := ocrtest.Label(ocrtest.Fonts[0], []string{"UPS GROUND", "SHIP TO:", "Anna Weiß", "Example Corp", "10115 Berlin"}, 1, 1000, 7)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(picture, img, 0o644)
	scanDev := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	devices := fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
  - {name: dock-camera, kind: camera, driver: sim-camera, image: %s}
stations:
  - {name: dock-1, scanner: dock-scanner, camera: dock-camera}`, scanDev.Link, picture)
	cfg := s.config(t, s.broker.URL(), devices)
	importTwoPeople(t, s, cfg)
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scanner connected", 10*time.Second)
	codes := []string{"1Z999AA10123456784", "1Z12345E0305271684"}
	for _, c := range codes {
		if err := scanDev.Scan(c); err != nil {
			t.Fatal(err)
		}
	}
	byType := eventsOfType
	photographed := func(ms []mqtttest.Message) map[string]event.Event {
		out := map[string]event.Event{}
		for _, ev := range byType(event.TypeParcelUpdated)(ms) {
			if len(ev.Photos) == 1 {
				out[ev.ParcelID] = ev
			}
		}
		return out
	}
	msgs := sub.WaitFor(t, 30*time.Second, "a photo of each parcel", func(ms []mqtttest.Message) bool {
		return len(byType(event.TypeParcelReceived)(ms)) == len(codes) && len(photographed(ms)) == len(codes)
	})
	photos := photographed(msgs)
	seqOf := map[string]int64{}
	for _, rcv := range byType(event.TypeParcelReceived)(msgs) {
		seqOf[rcv.ID] = rcv.Seq
		ph, ok := photos[rcv.ID]
		if !ok {
			t.Fatalf("parcel %s has no photo: %+v", rcv.ID, photos)
		}
		if ph.Seq <= rcv.Seq || ph.By != "camera:dock-camera" || ph.Photos[0].Kind != "label" || ph.Photos[0].ContentType != "image/jpeg" {
			t.Fatalf("the camera's photo of %s (received at seq %d): %+v", rcv.ID, rcv.Seq, ph)
		}
	}
	one := photos[byType(event.TypeParcelReceived)(msgs)[0].ID].Photos[0]
	p.waitLog(t, "blob uploaded", 30*time.Second)
	got, _, err := operator(t, s.broker, "operator-stcam").GetBlob(context.Background(), "mr-stcam-01", one.SHA256, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(got)
	if hex.EncodeToString(sum[:]) != one.SHA256 || int64(len(got)) != one.Size {
		t.Fatalf("the photo from the broker is not the one taken")
	}
	if c, err := jpeg.DecodeConfig(bytes.NewReader(got)); err != nil || c.Width < 100 {
		t.Fatalf("the camera's photo is not a JPEG of the label: %+v %v", c, err)
	}
	sub.WaitFor(t, 90*time.Second, "the recipient read off the camera's photo", func(ms []mqtttest.Message) bool {
		n := 0
		for _, ev := range byType(event.TypeParcelUpdated)(ms) {
			if ev.RecipientMatch == "ocr" {
				if ev.RecipientID != "E2" || ev.By != "ocr" || seqOf[ev.ParcelID] == 0 {
					t.Fatalf("the label's recipient: %+v", ev)
				}
				n++
			}
		}
		return n == len(codes)
	})
}
