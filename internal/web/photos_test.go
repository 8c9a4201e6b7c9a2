package web

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	stdjpeg "image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/photo"
	"github.com/mailroomd/mailroomd/internal/store"
)

func postPhoto(t *testing.T, r *rig, c *http.Client, token, path string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", r.base+path, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "image/jpeg")
	req.Header.Set("X-CSRF-Token", token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// A photo is kept, then named by a parcel.updated; what is not a photo,
// too big, for an unknown parcel, or beyond the total is refused, the
// last loudly (507 and the photos.full condition), and nothing kept is
// dropped.
func TestPhotoEndpoint(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Path: filepath.Join(t.TempDir(), "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs := blobstore.New(filepath.Join(t.TempDir(), "blobs"), nil)
	tracker := health.NewTracker(clock.Real{}, nil)
	r := startWith(t, func(o *Options) {
		o.Custody = st
		o.Photos = Photos{LongEdge: 1600, Keeper: &photo.Keeper{Store: blobs, Index: st, Custody: st, Alerts: tracker,
			MaxSize: 64 << 10, MaxTotal: 100 << 10, Appliance: "mr-test", Now: time.Now, Log: slog.New(slog.DiscardHandler)}}
	})
	c := r.client()
	r.login(c, "clara", "clerk-password")
	token := r.csrf(c)
	rcv, err := st.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: time.Now(),
		Parcel: &event.Parcel{Carrier: "ups", Tracking: "1Z999AA10123456784"}})
	if err != nil {
		t.Fatal(err)
	}
	// A real JPEG (its header is read), padded to n bytes.
	jpeg := func(n int, fill byte) []byte {
		var b bytes.Buffer
		img := image.NewGray(image.Rect(0, 0, 16, 8))
		img.Pix[0] = fill
		stdjpeg.Encode(&b, img, nil)
		return append(b.Bytes(), bytes.Repeat([]byte{fill}, max(0, n-b.Len()))...)
	}
	code, m := postPhoto(t, r, c, token, "/api/parcels/1z999aa10123456784/photos?kind=label", jpeg(40<<10, 'a'))
	if code != 200 || m["parcel_id"] != rcv.ID || m["size"] != float64(40<<10) {
		t.Fatalf("photo: %d %v", code, m)
	}
	sha := m["sha256"].(string)
	if got, err := blobs.Get(sha); err != nil || len(got) != 40<<10 {
		t.Fatalf("kept photo: %d %v", len(got), err)
	}
	ups, _ := st.Recent(ctx, 1, event.TypeParcelUpdated)
	if len(ups) != 1 || len(ups[0].Photos) != 1 || ups[0].Photos[0].SHA256 != sha || ups[0].Photos[0].Kind != "label" || ups[0].By != "clara" {
		t.Fatalf("the photo's event: %+v", ups)
	}
	if todo, _ := st.BlobsToSend(ctx, 10); len(todo) != 1 || todo[0].SHA256 != sha || todo[0].Acked != 0 {
		t.Fatalf("blobs to send: %+v", todo)
	}
	for _, tc := range []struct {
		path string
		body []byte
		code int
		want string
	}{
		{"/api/parcels/" + rcv.ID + "/photos?kind=selfie", jpeg(100, 'b'), 400, "bad_kind"},
		{"/api/parcels/" + rcv.ID + "/photos?kind=damage", []byte("GIF89a not a photo we take"), 415, "bad_type"},
		{"/api/parcels/" + rcv.ID + "/photos?kind=damage", jpeg(65<<10, 'c'), 413, "too_large"},
		{"/api/parcels/NOPE/photos?kind=damage", jpeg(100, 'd'), 404, "unknown_parcel"},
		{"/api/parcels/" + rcv.ID + "/photos?kind=damage", nil, 400, "photo_required"},
		{"/api/parcels/" + rcv.ID + "/photos?kind=damage", []byte("\xff\xd8\xff\xe0 sniffed as JPEG, but no JPEG"), 415, "bad_type"},
		{"/api/parcels/" + rcv.ID + "/photos?kind=damage", hugePNG(), 400, "bad_size"},
		{"/api/parcels/" + rcv.ID + "/photos?kind=damage", jpeg(61<<10, 'e'), 507, "photos_full"}, // 40 + 61 > 100 KiB
	} {
		if code, m := postPhoto(t, r, c, token, tc.path, tc.body); code != tc.code || m["code"] != tc.want {
			t.Errorf("%s: %d %v, want %d %s", tc.path, code, m, tc.code, tc.want)
		}
	}
	if active := tracker.Active(); len(active) != 1 || active[0].Key != ConditionPhotosFull {
		t.Fatalf("conditions after a refusal for a full store: %+v", active)
	}
	if todo, _ := st.BlobsToSend(ctx, 10); len(todo) != 1 {
		t.Fatalf("a refused photo left a blob: %+v", todo)
	}
	// Room again: taken, and the condition clears.
	if code, m := postPhoto(t, r, c, token, "/api/parcels/"+rcv.ID+"/photos?kind=damage", jpeg(10<<10, 'f')); code != 200 {
		t.Fatalf("a photo that fits: %d %v", code, m)
	}
	if active := tracker.Active(); len(active) != 0 {
		t.Fatalf("conditions after room came back: %+v", active)
	}
}

// hugePNG is a PNG header claiming 30000×30000 pixels: read, it would take
// gigabytes.
func hugePNG() []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], 30000)
	binary.BigEndian.PutUint32(ihdr[4:], 30000)
	ihdr[8], ihdr[9] = 8, 2 // 8 bits, RGB
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}
