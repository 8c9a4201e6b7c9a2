package main

import (
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/waitfor"
	"golang.org/x/crypto/bcrypt"
)

// TestChaos streams scans while the daemon is SIGKILLed, the broker killed
// and restarted, the link cut without a TCP close (half-open) and cut
// between PUBLISH and PUBACK, through a fault-injecting proxy that counts
// what it forwards. At the end every committed event must have reached the
// broker, seqs gapless, ids unique, duplicates only resends.
// MAILROOMD_CHAOS_ROUNDS sets the number of faults (make chaos runs many).
func TestChaos(t *testing.T) {
	rounds := 8
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_CHAOS_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	const window = 16
	s := newSetup(t, "mr-chaos-01")
	px := s.broker.StartFaultProxy(t, "mr-chaos-01")
	devices := fmt.Sprintf("  - {name: sim, kind: scanner, driver: sim, interval: 5ms, seed: 3}\nX-WINDOW %d", window)
	cfgText := strings.Replace(s.configText(px.URL(), devices), fmt.Sprintf("X-WINDOW %d", window), "", 1)
	cfgText = strings.Replace(cfgText, "  keepalive: 2s", fmt.Sprintf("  keepalive: 1s\n  inflight_window: %d", window), 1)
	cfg := filepath.Join(s.dir, "chaos.yaml")
	os.WriteFile(cfg, []byte(cfgText), 0o644)

	counts := map[string]int{}
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	for i := 0; i < rounds; i++ {
		time.Sleep(700 * time.Millisecond)
		switch i % 4 {
		case 0:
			p.kill()
			counts["SIGKILL daemon"]++
			p = startDaemon(t, cfg)
		case 1:
			s.broker.Kill()
			time.Sleep(300 * time.Millisecond)
			s.broker.Start()
			counts["broker killed and restarted"]++
		case 2:
			px.SetFault(mqtttest.Blackhole)
			time.Sleep(3 * time.Second) // longer than keepalive: half-open must be detected
			px.SetFault(mqtttest.Pass)
			counts["link cut without TCP close"]++
		case 3:
			px.SetFault(mqtttest.DropPubacks)
			time.Sleep(500 * time.Millisecond)
			px.CutAll()
			px.SetFault(mqtttest.Pass)
			counts["cut between PUBLISH and PUBACK"]++
		}
	}
	// Stop scanning, then let a daemon without devices drain the backlog.
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	drain := strings.Replace(cfgText, "  - {name: sim, kind: scanner, driver: sim, interval: 5ms, seed: 3}\n", "", 1)
	os.WriteFile(cfg, []byte(drain), 0o644)
	p = startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 15*time.Second)
	db := waitDrained(t, filepath.Join(s.dir, "buffer.db"))
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}

	var committed int64
	// The newest row carries the epoch's last seq (pruning never removes it).
	db.QueryRow("SELECT max(seq) FROM events WHERE epoch = (SELECT value FROM meta WHERE key = 'epoch')").Scan(&committed)
	ids := map[int64]string{}
	dups := 0
	for _, b := range px.Published() {
		ev, err := event.Decode(b)
		if err != nil {
			t.Fatalf("undecodable event: %v", err)
		}
		if id, seen := ids[ev.Seq]; seen {
			if id != ev.ID {
				t.Fatalf("seq %d carried two ids: %s and %s", ev.Seq, id, ev.ID)
			}
			dups++
			continue
		}
		ids[ev.Seq] = ev.ID
	}
	lost := int64(0)
	for seq := int64(1); seq <= committed; seq++ {
		if _, ok := ids[seq]; !ok {
			lost++
		}
	}
	unique := map[string]bool{}
	for _, id := range ids {
		unique[id] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-34s %8s\n", "scenario", "faults")
	for _, name := range []string{"SIGKILL daemon", "broker killed and restarted", "link cut without TCP close", "cut between PUBLISH and PUBACK"} {
		fmt.Fprintf(&b, "%-34s %8d\n", name, counts[name])
	}
	fmt.Fprintf(&b, "events committed %d, forwarded to the broker %d (%d resends), lost %d, in-flight window reached %d of %d\n",
		committed, len(px.Published()), dups, lost, px.MaxInflight(), window)
	t.Log(b.String())
	if committed < 100 {
		t.Fatalf("only %d events committed: the scanner did not run", committed)
	}
	if lost != 0 {
		t.Fatalf("%d committed events never reached the broker", lost)
	}
	if len(unique) != len(ids) {
		t.Fatal("two seqs carried the same id")
	}
	if px.MaxInflight() != window {
		t.Fatalf("the in-flight window reached %d, configured %d", px.MaxInflight(), window)
	}
}

// TestDiskFull puts the buffer on a small tmpfs while the cloud is
// unreachable: when the volume fills, new scans are refused with an alert
// and nothing committed is lost; when space returns, scans are committed
// again and everything drains.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the disk-full test mounts a tmpfs and needs root")
		}
		t.Skip("mounting a tmpfs needs root")
	}
	s := newSetup(t, "mr-full-01")
	px := s.broker.StartFaultProxy(t, "mr-full-01")
	vol := filepath.Join(s.dir, "vol")
	os.MkdirAll(vol, 0o700)
	if out, err := execCommand("mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", vol); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { execCommand("umount", "-l", vol) })
	px.SetFault(mqtttest.Blackhole) // nothing drains: the buffer grows
	webPort := mqtttest.FreePort(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("admin-password"), bcrypt.MinCost)
	cfgText := strings.Replace(s.configText(px.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 1ms}\n"+fmt.Sprintf("\nweb: {listen: \"127.0.0.1:%d\", users: [{name: it, role: admin, password_hash: \"%s\"}]}", webPort, hash)),
		filepath.Join(s.dir, "buffer.db"), filepath.Join(vol, "buffer.db"), 1)
	cfg := filepath.Join(s.dir, "full.yaml")
	os.WriteFile(cfg, []byte(cfgText), 0o644)
	p := startDaemon(t, cfg)
	p.waitLog(t, "status page", 10*time.Second)
	readyz := func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", webPort))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := readyz(); c != http.StatusOK {
		t.Fatalf("/readyz %d before the volume filled, want 200", c)
	}
	p.waitLog(t, "scan NOT recorded", 60*time.Second)
	p.waitLog(t, "key=store.refusing", 5*time.Second)
	// While scans are refused the box is not ready, every time it is asked.
	for i := 0; i < 20; i++ {
		if c := readyz(); c != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d on a full buffer (sample %d), want 503", c, i)
		}
	}
	if out, err := execCommand("mount", "-o", "remount,size=64m", vol); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	p.waitLog(t, "condition cleared\" key=store.refusing", 30*time.Second)
	waitfor.True(t, 10*time.Second, "/readyz 200 once space returned", func() bool { return readyz() == http.StatusOK })
	px.SetFault(mqtttest.Pass)
	px.CutAll()
	time.Sleep(time.Second)
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	refusals := strings.Count(p.log.String(), "scan NOT recorded")
	drain := strings.Replace(cfgText, "  - {name: sim, kind: scanner, driver: sim, interval: 1ms}\n", "", 1)
	os.WriteFile(cfg, []byte(drain), 0o644)
	p = startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 15*time.Second)
	db := waitDrained(t, filepath.Join(vol, "buffer.db"))
	p.stop(t)
	var committed int64
	// The newest row carries the epoch's last seq (pruning never removes it).
	db.QueryRow("SELECT max(seq) FROM events WHERE epoch = (SELECT value FROM meta WHERE key = 'epoch')").Scan(&committed)
	seen := map[int64]bool{}
	for _, b := range px.Published() {
		if ev, err := event.Decode(b); err == nil {
			seen[ev.Seq] = true
		}
	}
	for seq := int64(1); seq <= committed; seq++ {
		if !seen[seq] {
			t.Fatalf("seq %d of %d committed but never delivered", seq, committed)
		}
	}
	if refusals == 0 {
		t.Fatal("no scan was refused while the volume was full")
	}
	t.Logf("disk full: %d events committed, all delivered; %d scans refused while the volume was full", committed, refusals)
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// TestClockJumps shifts the daemon's wall clock back and forth while scans
// stream in: ids never go backwards, seqs stay gapless, and the event
// times follow the clock honestly.
func TestClockJumps(t *testing.T) {
	s := newSetup(t, "mr-clock-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-clock-01/events")
	offsetFile := filepath.Join(s.dir, "offset")
	os.WriteFile(offsetFile, []byte("0s"), 0o644)
	cfg := s.config(t, s.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 10ms}")
	p := startDaemon(t, cfg, "MAILROOMD_TEST_CLOCK_OFFSET_FILE="+offsetFile)
	p.waitLog(t, "uplink connected", 10*time.Second)
	for _, off := range []string{"-2h", "3h", "-30m", "0s"} {
		time.Sleep(400 * time.Millisecond)
		os.WriteFile(offsetFile, []byte(off), 0o644)
	}
	time.Sleep(400 * time.Millisecond)
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	msgs := sub.WaitFor(t, 10*time.Second, "events", mqtttest.DistinctEvents(100))
	evs, _ := mqtttest.Delivered(t, msgs)
	var last int64
	for seq := range evs {
		last = max(last, seq)
	}
	backwards, forwards := 0, 0
	for seq := int64(2); seq <= last; seq++ {
		prev, cur := evs[seq-1], evs[seq]
		if cur.ID == "" || prev.ID == "" {
			t.Fatalf("seq %d or %d missing of %d", seq-1, seq, last)
		}
		if cur.ID <= prev.ID {
			t.Fatalf("id went backwards at seq %d: %s <= %s", seq, cur.ID, prev.ID)
		}
		switch d := cur.Time.Sub(prev.Time); {
		case d < -time.Hour:
			backwards++
		case d > time.Hour:
			forwards++
		}
	}
	if backwards == 0 || forwards == 0 {
		t.Fatalf("event times did not follow the clock jumps (back %d, forward %d)", backwards, forwards)
	}
	t.Logf("clock jumps: %d events, ts jumped back %d and forward %d times, ids and seqs monotonic", last, backwards, forwards)
}

// waitDrained opens a daemon's buffer read-only and waits until nothing in
// it is pending.
func waitDrained(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		var pending int
		db.QueryRow("SELECT count(*) FROM events WHERE pos > (SELECT coalesce(max(pos), 0) FROM sent_marks)").Scan(&pending)
		if pending == 0 {
			return db
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still pending after the drain", pending)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
