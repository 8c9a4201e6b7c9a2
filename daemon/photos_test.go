package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleetop"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/ocr/ocrtest"
	"github.com/mailroomd/mailroomd/internal/store"
)

// pageClient is a signed-in clerk's HTTP client and CSRF token.
type pageClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func signIn(t *testing.T, base, user, pw string) *pageClient {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := c.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("login form without CSRF field:\n%s", body)
	}
	if resp, err = c.PostForm(base+"/login", url.Values{"user": {user}, "password": {pw}, "csrf": {string(m[1])}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Get(base + "/api/session")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct{ CSRF string }
	json.NewDecoder(resp.Body).Decode(&s)
	if s.CSRF == "" {
		t.Fatal("not signed in")
	}
	return &pageClient{t: t, base: base, c: c, csrf: s.CSRF}
}

func (p *pageClient) post(path, ctype string, body []byte) (int, string) {
	p.t.Helper()
	req, _ := http.NewRequest("POST", p.base+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("X-CSRF-Token", p.csrf)
	resp, err := p.c.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pageStatus is the status page's /api/status, as the page reads it.
func pageStatus(t *testing.T, p *pageClient) string {
	t.Helper()
	resp, err := p.c.Get(p.base + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// fakeJPEG is a small JPEG followed by random bytes, n in all: a photo
// whose header reads, of the size a test needs.
func fakeJPEG(n int) []byte {
	var b bytes.Buffer
	jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, 32, 24)), nil)
	pad := make([]byte, n-b.Len())
	rand.Read(pad)
	return append(b.Bytes(), pad...)
}

// TestPhotoUploadSurvivesKillAndLinkCut: a photo taken of a parcel is
// kept before its event, which names it by hash; its upload over a slow
// link is cut (the connection closed) and then killed (SIGKILL) between
// chunks, resumes where the broker's acknowledgements left it, and the
// photo reassembled from the broker is byte-identical.
func TestPhotoUploadSurvivesKillAndLinkCut(t *testing.T) {
	s := newSetup(t, "mr-photo-01")
	px := s.broker.StartFaultProxy(t, "mr-photo-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-photo-01/events")
	chunks := s.broker.Subscribe(t, "chunks", "mailroom/v1/mr-photo-01/blobs/#")
	scanDev, webPort, devices := pageConfig(t, s, "")
	cfg := s.config(t, px.URL(), devices)
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scanner connected", 10*time.Second)
	if err := scanDev.Scan("1Z999AA10123456784"); err != nil {
		t.Fatal(err)
	}
	parcels := func(ms []mqtttest.Message) (out []event.Event) {
		for _, m := range ms {
			if ev, err := event.Decode(m.Payload); err == nil && (ev.Type == event.TypeParcelReceived || ev.Type == event.TypeParcelUpdated) {
				out = append(out, ev)
			}
		}
		return out
	}
	msgs := sub.WaitFor(t, 15*time.Second, "the parcel", func(ms []mqtttest.Message) bool { return len(parcels(ms)) >= 1 })
	parcel := parcels(msgs)[0]
	page := signIn(t, fmt.Sprintf("http://127.0.0.1:%d", webPort), "clara", "clerk-password")

	px.SetFault(mqtttest.SlowBlobs)
	photo := fakeJPEG(3<<20 + 12345) // 49 chunks of 64 KiB
	sum := sha256.Sum256(photo)
	want := hex.EncodeToString(sum[:])
	code, body := page.post("/api/parcels/"+parcel.ID+"/photos?kind=damage", "image/jpeg", photo)
	if code != 200 || !strings.Contains(body, want) {
		t.Fatalf("photo upload: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "blobs", want[:2], want)); err != nil {
		t.Fatalf("the photo's file: %v", err)
	}
	msgs = sub.WaitFor(t, 15*time.Second, "the photo's event", func(ms []mqtttest.Message) bool { return len(parcels(ms)) >= 2 })
	upd := parcels(msgs)[1]
	if upd.Type != event.TypeParcelUpdated || upd.ParcelID != parcel.ID || len(upd.Photos) != 1 || upd.Photos[0].SHA256 != want ||
		upd.Photos[0].Size != int64(len(photo)) || upd.Photos[0].ContentType != "image/jpeg" || upd.Photos[0].Kind != "damage" || upd.By != "clara" {
		t.Fatalf("the photo's event: %+v", upd)
	}

	prefix := "mailroom/v1/mr-photo-01/blobs/" + want + "/"
	chunkMsgs := func(ms []mqtttest.Message) int {
		n := 0
		for _, m := range ms {
			if strings.HasPrefix(m.Topic, prefix) {
				n++
			}
		}
		return n
	}
	chunks.WaitFor(t, 20*time.Second, "some chunks", func(ms []mqtttest.Message) bool { return chunkMsgs(ms) >= 6 })
	px.CutAll() // the link drops between chunks
	chunks.WaitFor(t, 20*time.Second, "more chunks after the reconnect", func(ms []mqtttest.Message) bool { return chunkMsgs(ms) >= 20 })
	p.kill()
	px.SetFault(mqtttest.Pass)
	p = startDaemon(t, cfg)
	p.waitLog(t, "blob uploaded", 60*time.Second)

	got, m, err := operator(t, s.broker, "operator-photo").GetBlob(context.Background(), "mr-photo-01", want, 20*time.Second)
	if err != nil || !bytes.Equal(got, photo) || m.ContentType != "image/jpeg" || m.Kind != "damage" || m.Chunks != 49 {
		t.Fatalf("the photo from the broker: %d bytes, %+v, %v", len(got), m, err)
	}
	// It resumed rather than started over: the chunks acknowledged before
	// the cut were recorded when the link dropped.
	m2 := regexp.MustCompile(`photo upload resumed".*from_chunk=(\d+)`).FindStringSubmatch(p.log.String())
	if m2 == nil {
		t.Fatalf("the upload did not resume after the restart:\n%s", p.log.String())
	}
	if from, _ := strconv.Atoi(m2[1]); from < 6 {
		t.Fatalf("resumed from chunk %d; at least 6 had been acknowledged before the cut", from)
	}
}

// TestLabelPhotoNamesTheRecipient: a parcel received without a name waits
// for a recipient; a photo of its label is read off the scan path and the
// person it names is recorded (recipient_match "ocr").
func TestLabelPhotoNamesTheRecipient(t *testing.T) {
	s := newSetup(t, "mr-ocr-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-ocr-01/events")
	scanDev, webPort, devices := pageConfig(t, s, "")
	// Tesseract through a script that counts its runs.
	runs := filepath.Join(s.dir, "ocr-runs")
	tesseract := filepath.Join(s.dir, "tesseract")
	if err := os.WriteFile(tesseract, []byte("#!/bin/sh\necho run >> "+runs+"\nexec tesseract \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := s.config(t, s.broker.URL(), devices+"\nphotos: {ocr_command: "+tesseract+"}")
	importTwoPeople(t, s, cfg)
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scanner connected", 10*time.Second)
	if err := scanDev.Scan("1Z999AA10123456784"); err != nil {
		t.Fatal(err)
	}
	byType := eventsOfType
	msgs := sub.WaitFor(t, 15*time.Second, "the parcel", func(ms []mqtttest.Message) bool { return len(byType(event.TypeParcelReceived)(ms)) >= 1 })
	parcel := byType(event.TypeParcelReceived)(msgs)[0]
	if parcel.RecipientMatch != "none" {
		t.Fatalf("a parcel without a name: %+v", parcel)
	}
	img, err := ocrtest.Label(ocrtest.Fonts[0], []string{"UPS GROUND", "SHIP TO:", "Jürgen Müller", "Example Corp", "10115 Berlin"}, 2, 2000, 1)
	if err != nil {
		t.Fatal(err)
	}
	page := signIn(t, fmt.Sprintf("http://127.0.0.1:%d", webPort), "clara", "clerk-password")
	if code, body := page.post("/api/parcels/"+parcel.ID+"/photos?kind=label", "image/png", img); code != 200 {
		t.Fatalf("label photo: %d %s", code, body)
	}
	updated := byType(event.TypeParcelUpdated)
	msgs = sub.WaitFor(t, 60*time.Second, "the recipient read off the label", func(ms []mqtttest.Message) bool {
		for _, ev := range updated(ms) {
			if ev.RecipientMatch == "ocr" {
				return true
			}
		}
		return false
	})
	for _, ev := range updated(msgs) {
		if ev.RecipientMatch == "ocr" && (ev.ParcelID != parcel.ID || ev.RecipientID != "E1" || ev.RecipientName != "Jürgen Müller" ||
			ev.RecipientScore != 1 || ev.By != "ocr") {
			t.Fatalf("the label's recipient: %+v", ev)
		}
	}
	// Another label photo of the parcel, whose person is known now, is
	// kept but not read.
	countRuns := func() int { b, _ := os.ReadFile(runs); return strings.Count(string(b), "run") }
	first := countRuns()
	if first == 0 {
		t.Fatal("the label was read without the ocr_command")
	}
	img2, err := ocrtest.Label(ocrtest.Fonts[1], []string{"SHIP TO:", "Jürgen Müller"}, 0, 2001, 1)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := page.post("/api/parcels/"+parcel.ID+"/photos?kind=label", "image/png", img2); code != 200 {
		t.Fatalf("second label photo: %d %s", code, body)
	}
	p.waitLog(t, "label photo not read: the parcel's person is known", 20*time.Second)
	if n := countRuns(); n != first {
		t.Fatalf("Tesseract ran %d times for the first label and %d for the second: a label of a parcel with a known person was read", first, n-first)
	}
}

// TestPhotoFromThePageCamera: the clerk photographs a parcel's label with
// the camera of the device the page runs on (Chromium's fake camera); the
// photo, scaled and compressed on the page, is named by its event and
// arrives at the broker byte for byte.
func TestPhotoFromThePageCamera(t *testing.T) {
	chrome := chromiumPath(t)
	s := newSetup(t, "mr-camera-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-camera-01/events")
	scanDev, webPort, devices := pageConfig(t, s, "")
	cfg := s.config(t, s.broker.URL(), devices)
	p := startDaemon(t, cfg)
	p.waitLog(t, "status page", 10*time.Second)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scanner connected", 10*time.Second)
	if err := scanDev.Scan("1Z999AA10123456784"); err != nil {
		t.Fatal(err)
	}
	byType := eventsOfType
	msgs := sub.WaitFor(t, 15*time.Second, "the parcel", func(ms []mqtttest.Message) bool { return len(byType(event.TypeParcelReceived)(ms)) >= 1 })
	parcel := byType(event.TypeParcelReceived)(msgs)[0]

	base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
	b := newBrowser(t, chrome, p, "camera-failure.png", 1024, 800,
		chromedp.Flag("use-fake-device-for-media-stream", true), chromedp.Flag("use-fake-ui-for-media-stream", true))
	button := `button.photo[data-parcel="` + parcel.ID + `"]`
	b.run("log in", b.login(base))
	b.run("photograph the label",
		chromedp.Navigate(base+"/#status"),
		chromedp.WaitVisible(chromedp.CSS(button)),
		chromedp.Click(chromedp.CSS(button)),
		b.waitJS("the camera is on", `!document.querySelector('#photo-take').disabled`),
		chromedp.Click(chromedp.CSS("#photo-take")),
		b.waitJS("the photo is saved", `!!document.querySelector('#photo-dialog').dataset.sha256`))
	sha, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('#photo-dialog').dataset.sha256`))
	if err != nil || len(sha) != 64 {
		t.Fatalf("sha256 on the page: %q %v", sha, err)
	}
	msgs = sub.WaitFor(t, 15*time.Second, "the photo's event", func(ms []mqtttest.Message) bool { return len(byType(event.TypeParcelUpdated)(ms)) >= 1 })
	upd := byType(event.TypeParcelUpdated)(msgs)[0]
	if upd.ParcelID != parcel.ID || len(upd.Photos) != 1 || upd.Photos[0].SHA256 != sha || upd.Photos[0].Kind != "label" ||
		upd.Photos[0].ContentType != "image/jpeg" {
		t.Fatalf("the photo's event: %+v", upd)
	}
	p.waitLog(t, "blob uploaded", 30*time.Second)
	got, _, err := operator(t, s.broker, "operator-camera").GetBlob(context.Background(), "mr-camera-01", sha, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(got)
	if hex.EncodeToString(sum[:]) != sha || int64(len(got)) != upd.Photos[0].Size {
		t.Fatalf("the photo from the broker is not the one taken")
	}
	img, err := jpeg.DecodeConfig(bytes.NewReader(got))
	if err != nil || max(img.Width, img.Height) > 1600 || img.Width == 0 {
		t.Fatalf("the photo: %+v %v", img, err)
	}
}

// importTwoPeople imports the directory of the label tests into the box
// of cfg: E1 Jürgen Müller and E2 Anna Weiß.
func importTwoPeople(t *testing.T, s *setup, cfg string) {
	t.Helper()
	people := filepath.Join(s.dir, "people.csv")
	os.WriteFile(people, []byte("id,name,email,location,badges,delegates,active\n"+
		"E1,Jürgen Müller,,MS-2.14,EMP-0042,,true\nE2,Anna Weiß,,MS-3.01,EMP-0077,,true\n"), 0o644)
	var out, errOut strings.Builder
	if code := Main([]string{"directory", "import", "--config", cfg, people}, &out, &errOut); code != 0 {
		t.Fatalf("directory import: %s", errOut.String())
	}
}

// eventsOfType returns a function picking the events of a type out of
// messages received on the events topic, in the order received.
func eventsOfType(typ event.Type) func([]mqtttest.Message) []event.Event {
	return func(ms []mqtttest.Message) (out []event.Event) {
		for _, m := range ms {
			if ev, err := event.Decode(m.Payload); err == nil && ev.Type == typ {
				out = append(out, ev)
			}
		}
		return out
	}
}

// operator is an operator's fleet client on the broker, closed when the
// test ends.
func operator(t *testing.T, b *mqtttest.Broker, cn string) *fleetop.Client {
	t.Helper()
	op, err := fleetop.Dial(fleetop.Options{Broker: b.URL(), TLS: b.TLSConfig(t, cn), ClientID: cn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	return op
}

// TestPhotosFillTheDisk puts the buffer and its photo store on a small
// tmpfs while the cloud is unreachable, and uploads photos, smaller and
// smaller, until not even one of 4 KiB fits (photos leave 16 MiB free for
// the scans, which are then still taken): every refused upload fails
// with a 507 disk_full naming the full disk and raises photos.full; every photo a committed event names is
// kept whole (its bytes have its SHA-256); a refused one is named by no
// event and left no file behind, not even a temporary one. Once space
// returns, the refused photos are taken again, and every committed photo
// arrives at the broker byte for byte.
func TestPhotosFillTheDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the photo disk-full test mounts a tmpfs and needs root")
		}
		t.Skip("mounting a tmpfs needs root")
	}
	s := newSetup(t, "mr-photofull-01")
	px := s.broker.StartFaultProxy(t, "mr-photofull-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-photofull-01/events")
	vol := filepath.Join(s.dir, "vol")
	if err := os.MkdirAll(vol, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := execCommand("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", vol); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { execCommand("umount", "-l", vol) })
	scanDev, webPort, devices := pageConfig(t, s, "")
	buffer := filepath.Join(vol, "buffer.db")
	cfg := filepath.Join(s.dir, "photofull.yaml")
	cfgText := strings.Replace(s.configText(px.URL(), devices), filepath.Join(s.dir, "buffer.db"), buffer, 1)
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scanner connected", 10*time.Second)
	if err := scanDev.Scan("1Z999AA10123456784"); err != nil {
		t.Fatal(err)
	}
	msgs := sub.WaitFor(t, 15*time.Second, "the parcel", func(ms []mqtttest.Message) bool {
		return len(eventsOfType(event.TypeParcelReceived)(ms)) >= 1
	})
	parcel := eventsOfType(event.TypeParcelReceived)(msgs)[0]
	page := signIn(t, fmt.Sprintf("http://127.0.0.1:%d", webPort), "clara", "clerk-password")

	// Nothing drains: the photos stay on the volume until it is full.
	// Photos of 600 KiB go first, then smaller ones fill what is left, down
	// to photos of 4 KiB: every one refused must say the disk is full.
	px.SetFault(mqtttest.Blackhole)
	taken := map[string][]byte{} // by SHA-256, every photo the box accepted
	var refused [][]byte
	for _, size := range []int{600 << 10, 64 << 10, 16 << 10, 4 << 10} {
		for i := 0; ; i++ {
			if i == 200 {
				t.Fatalf("200 photos of %d KiB fit on a 24 MiB volume", size>>10)
			}
			photo := fakeJPEG(size)
			code, body := page.post("/api/parcels/"+parcel.ID+"/photos?kind=damage", "image/jpeg", photo)
			if code == http.StatusOK {
				var res struct{ SHA256 string }
				if err := json.Unmarshal([]byte(body), &res); err != nil || res.SHA256 != blobSum(photo) {
					t.Fatalf("a photo of %d KiB: %s (%v)", size>>10, body, err)
				}
				taken[res.SHA256] = photo
				continue
			}
			var answer struct{ Code, Error string }
			json.Unmarshal([]byte(body), &answer)
			if code != http.StatusInsufficientStorage || answer.Code != "disk_full" ||
				answer.Error != "the box's disk is full: the photo was not kept; everything recorded before is safe" {
				t.Fatalf("a photo of %d KiB that did not fit: %d %s; want 507, code disk_full, naming the full disk", size>>10, code, body)
			}
			if st := pageStatus(t, page); !strings.Contains(st, `"key":"photos.full"`) {
				t.Fatalf("after a photo refused for a full disk, the status has no photos.full alert: %s", st)
			}
			t.Logf("%d photos taken; one of %d KiB refused: %d %s", len(taken), size>>10, code, body)
			refused = append(refused, photo)
			break
		}
	}
	if len(taken) == 0 {
		t.Fatal("not one photo fit on the volume")
	}
	// The room left is the scans': a scan is still committed.
	if err := scanDev.Scan("1Z12345E0305271684"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); strings.Count(p.log.String(), `msg="parcel received"`) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || strings.Contains(p.log.String(), "NOT recorded") {
			t.Fatalf("a scan after the photos filled the disk was not received:\n%s", p.log.String())
		}
	}
	if strings.Contains(p.log.String(), "NOT recorded") {
		t.Fatalf("a scan was refused after the photos filled the disk:\n%s", p.log.String())
	}

	// Every photo a committed event names is kept whole; the refused one
	// is named by none and left no file, not even a temporary one.
	named := committedPhotos(t, buffer)
	if len(named) != len(taken) {
		t.Fatalf("committed events name %d photos, the box accepted %d", len(named), len(taken))
	}
	blobs := blobstore.New(store.BlobDir(buffer), nil)
	for sha := range named {
		if taken[sha] == nil {
			t.Fatalf("a committed event names photo %s, which the box did not accept", sha)
		}
		got, err := blobs.Get(sha)
		if err != nil || !bytes.Equal(got, taken[sha]) {
			t.Fatalf("photo %s named by a committed event is not kept whole: %d bytes, %v", sha, len(got), err)
		}
	}
	for _, photo := range refused {
		if named[blobSum(photo)] {
			t.Fatalf("a committed event names photo %s, which did not fit", blobSum(photo))
		}
	}
	blobs.Each(func(sha, path string, _ time.Time) bool {
		if taken[sha] == nil {
			t.Errorf("%s is kept, but no photo accepted has that name", path)
		}
		return true
	})

	// Space returns: the refused photos are taken now, and everything
	// drains.
	if out, err := execCommand("mount", "-o", "remount,size=96m", vol); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	for _, photo := range refused {
		if code, body := page.post("/api/parcels/"+parcel.ID+"/photos?kind=damage", "image/jpeg", photo); code != http.StatusOK {
			t.Fatalf("a refused photo again, with space: %d %s", code, body)
		}
		taken[blobSum(photo)] = photo
	}
	px.SetFault(mqtttest.Pass)
	px.CutAll()
	op := operator(t, s.broker, "operator-photofull")
	for sha, photo := range taken {
		got, m, err := op.GetBlob(context.Background(), "mr-photofull-01", sha, 60*time.Second)
		if err != nil || !bytes.Equal(got, photo) || m.Size != int64(len(photo)) || m.ContentType != "image/jpeg" || m.Kind != "damage" {
			t.Fatalf("photo %s from the broker: %d bytes, %+v, %v", sha, len(got), m, err)
		}
	}
	msgs = sub.WaitFor(t, 30*time.Second, "an event for every photo", func(ms []mqtttest.Message) bool {
		n := map[string]bool{}
		for _, ev := range eventsOfType(event.TypeParcelUpdated)(ms) {
			for _, ph := range ev.Photos {
				n[ph.SHA256] = true
			}
		}
		return len(n) >= len(taken)
	})
	for _, ev := range eventsOfType(event.TypeParcelUpdated)(msgs) {
		for _, ph := range ev.Photos {
			if taken[ph.SHA256] == nil {
				t.Fatalf("the broker has an event naming photo %s, which the box did not accept", ph.SHA256)
			}
		}
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// committedPhotos reads the buffer at path and returns the SHA-256 of
// every photo its committed events name.
func committedPhotos(t *testing.T, path string) map[string]bool {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT payload FROM events")
	if err != nil {
		t.Fatalf("read the buffer: %v", err)
	}
	defer rows.Close()
	named := map[string]bool{}
	for rows.Next() {
		var payload []byte
		if err := rows.Scan(&payload); err != nil {
			t.Fatal(err)
		}
		ev, err := event.Decode(payload)
		if err != nil {
			t.Fatalf("an event in the buffer does not decode: %v", err)
		}
		for _, ph := range ev.Photos {
			named[ph.SHA256] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the buffer: %v", err)
	}
	return named
}

// blobSum is the hex SHA-256 of b, a photo's name.
func blobSum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
