package main

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

func serialDevice(link string) string {
	return fmt.Sprintf("  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, baud: 9600, terminator: cr, reconnect_max: 200ms}", link)
}

func TestScansFromSerialScannerReachBroker(t *testing.T) {
	s := newSetup(t, "mr-e2e-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-e2e-01/#")
	fake := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	p := startDaemon(t, s.config(t, s.broker.URL(), serialDevice(fake.Link)))
	p.waitLog(t, "scanner connected", scaled(10*time.Second))
	p.waitLog(t, "uplink connected", scaled(10*time.Second))
	codes := []string{"1Z999AA10123456784", "9400111899223197428490", "RB123456785GB", "M\xfcller-\xff"}
	for _, c := range codes {
		if err := fake.Scan(c); err != nil {
			t.Fatal(err)
		}
	}
	msgs := sub.WaitFor(t, scaled(15*time.Second), "4 events", mqtttest.DistinctEvents(4))
	evs, _ := mqtttest.Delivered(t, msgs)
	for i, c := range codes {
		ev := evs[int64(i+1)]
		if string(ev.Barcode) != c || ev.Device != "dock-scanner" || ev.Appliance != "mr-e2e-01" || ev.Site != "test-site" || ev.Type != event.TypeScan {
			t.Fatalf("event %d = %+v, want barcode %q", i+1, ev, c)
		}
	}
	// The non-UTF-8 code travels as barcode_b64, unaltered.
	var raw string
	for _, m := range msgs {
		if strings.Contains(string(m.Payload), `"seq":4`) {
			raw = string(m.Payload)
		}
	}
	if !strings.Contains(raw, `"barcode_b64":`) {
		t.Fatalf("non-UTF-8 barcode not sent as barcode_b64: %s", raw)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	sub.WaitFor(t, scaled(5*time.Second), "retained offline status", func(ms []mqtttest.Message) bool {
		last := ms[len(ms)-1]
		return strings.HasSuffix(last.Topic, "/status") && strings.Contains(string(last.Payload), `"state":"offline"`)
	})
	if !strings.Contains(p.log.String(), "mailroomd stopped") {
		t.Fatalf("no clean stop logged:\n%s", p.log.String())
	}
}

func TestWrongCAKeepsBuffering(t *testing.T) {
	s := newSetup(t, "mr-badca-01")
	other := mqtttest.Start(t) // a second, unrelated CA
	s.ca = other.Files.CA
	p := startDaemon(t, s.config(t, s.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 20ms}"))
	p.waitLog(t, "the broker's certificate is not signed by uplink.ca_file", 10*time.Second)
	p.waitLog(t, "seq=3", 10*time.Second) // still committing scans
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestUnreachableBrokerKeepsBuffering(t *testing.T) {
	s := newSetup(t, "mr-nobroker")
	dead := fmt.Sprintf("mqtts://127.0.0.1:%d", mqtttest.FreePort(t))
	p := startDaemon(t, s.config(t, dead, "  - {name: sim, kind: scanner, driver: sim, interval: 20ms}"))
	p.waitLog(t, "nothing is listening at the broker address", 10*time.Second)
	p.waitLog(t, "seq=3", 10*time.Second)
	p.stop(t)
}

// TestCrashLosesNothingCommitted SIGKILLs the real daemon at random moments
// while it reads a PTY scanner and forwards to mosquitto, then lets it
// finish. Every committed event must reach the broker, seq must be gapless,
// no seq may carry two events, and the broker must hold every line the fake
// scanner sent, less at most the one line being read at each kill.
func TestCrashLosesNothingCommitted(t *testing.T) {
	const kills = 24
	s := newSetup(t, "mr-crash-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-crash-01/events")
	fake := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	cfg := s.config(t, s.broker.URL(), serialDevice(fake.Link))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	var sent []string
	n := 0
	for k := 0; k < kills; k++ {
		p := startDaemon(t, cfg)
		p.waitLog(t, "scanner connected", scaled(10*time.Second))
		lines := 1 + rng.IntN(30)
		for i := 0; i < lines; i++ {
			code := fmt.Sprintf("CRASH-%02d-%05d", k, n)
			n++
			if err := fake.Scan(code); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, code)
			time.Sleep(time.Duration(2+rng.IntN(4)) * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		p.kill()
	}
	// A final, undisturbed run drains everything.
	p := startDaemon(t, cfg)
	p.waitLog(t, "scanner connected", scaled(10*time.Second))

	db, err := sql.Open("sqlite3", "file:"+filepath.Join(s.dir, "buffer.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The final run first commits the lines still waiting in the tty: read
	// the buffer once its count has stopped moving for a second (times the
	// time scale: an emulated daemon commits more slowly).
	for stable, last := 0, -1; stable < 4*timeScale; time.Sleep(250 * time.Millisecond) {
		var n int
		db.QueryRow("SELECT count(*) FROM events").Scan(&n)
		if n == last {
			stable++
		} else {
			stable, last = 0, n
		}
	}
	committed := map[int64]string{}
	var epochs int
	db.QueryRow("SELECT count(DISTINCT epoch) FROM events").Scan(&epochs)
	rows, err := db.Query("SELECT seq, id FROM events ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var seq int64
		var id string
		rows.Scan(&seq, &id)
		committed[seq] = id
	}
	rows.Close()
	if epochs != 1 {
		t.Fatalf("%d epochs: a crash must not start a new one", epochs)
	}
	for seq := int64(1); seq <= int64(len(committed)); seq++ {
		if committed[seq] == "" {
			t.Fatalf("seq %d missing from the buffer: seq has a gap", seq)
		}
	}

	msgs := sub.WaitFor(t, scaled(60*time.Second), "every committed event", mqtttest.DistinctEvents(len(committed)))
	evs, dups := mqtttest.Delivered(t, msgs)
	if len(evs) != len(committed) {
		t.Fatalf("broker has %d distinct events, buffer committed %d", len(evs), len(committed))
	}
	got := map[string]bool{}
	for seq, id := range committed {
		ev, ok := evs[seq]
		if !ok || ev.ID != id {
			t.Fatalf("committed seq %d (%s) not at the broker (got %+v)", seq, id, ev)
		}
		if got[string(ev.Barcode)] {
			t.Fatalf("barcode %q committed twice", ev.Barcode)
		}
		got[string(ev.Barcode)] = true
	}
	// A line lost at a kill is the one the daemon had taken from the tty
	// but not yet committed: at most one per kill. Lines still unread stay
	// in the tty and are read after the restart.
	lost := 0
	sentSet := map[string]bool{}
	for _, c := range sent {
		sentSet[c] = true
		if !got[c] {
			lost++
			t.Logf("lost at a kill: %q", c)
		}
	}
	for c := range got {
		if !sentSet[c] {
			t.Errorf("broker received %q, which the scanner never sent (a split line?)", c)
		}
	}
	t.Logf("%d kills, %d lines sent, %d committed, %d lost at kills, %d duplicate deliveries (resends)", kills, len(sent), len(committed), lost, dups)
	if lost > kills {
		t.Fatalf("%d lines lost in %d kills", lost, kills)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d after the final SIGTERM", code)
	}
}

func TestEncryptedBufferEndToEnd(t *testing.T) {
	s := newSetup(t, "mr-sealed-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-sealed-01/events")
	keyFile := filepath.Join(s.dir, "buffer.key")
	var out strings.Builder
	Main([]string{"buffer-key", "--id", "k1"}, &out, &out)
	os.WriteFile(keyFile, []byte(out.String()), 0o600)
	base := s.configText(s.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 20ms, seed: 7}")
	sealed := strings.Replace(base, "storage: {path: ", "storage: {encryption_key_file: "+keyFile+", path: ", 1)
	cfg := filepath.Join(s.dir, "sealed.yaml")
	os.WriteFile(cfg, []byte(sealed), 0o644)
	p := startDaemon(t, cfg)
	p.waitLog(t, "seq=30 ", 15*time.Second)
	msgs := sub.WaitFor(t, 15*time.Second, "30 events in clear", mqtttest.DistinctEvents(30))
	evs, _ := mqtttest.Delivered(t, msgs)
	if len(evs[1].Barcode) == 0 {
		t.Fatalf("event 1 without its barcode: %+v", evs[1])
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	db, _ := os.ReadFile(filepath.Join(s.dir, "buffer.db"))
	if strings.Contains(string(db), string(evs[1].Barcode)) {
		t.Fatal("a barcode is in the buffer file in clear")
	}
	// A wrong key is a clear error at start; nothing is touched.
	var wrong strings.Builder
	Main([]string{"buffer-key", "--id", "k1"}, &wrong, &wrong)
	os.WriteFile(keyFile, []byte(wrong.String()), 0o600)
	p = startDaemon(t, cfg)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the daemon started with a wrong key")
	}
	if !strings.Contains(p.log.String(), `cannot be opened: sealed payload does not open with its key`) {
		t.Fatalf("no clear error:\n%s", p.log.String())
	}
	after, _ := os.ReadFile(filepath.Join(s.dir, "buffer.db"))
	if len(after) != len(db) {
		t.Fatal("the buffer changed when opened with a wrong key")
	}
}
