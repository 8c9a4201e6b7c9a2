package main

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/powercut"
	"github.com/mailroomd/mailroomd/internal/waitfor"
	"golang.org/x/sys/unix"
)

// The moments at which TestPowerCut cuts the power, in the order it
// cycles through them.
const (
	cutRandom     = "random moment"
	cutCheckpoint = "during a checkpoint"
	cutSalvage    = "during a salvage"
	cutRotation   = "during a key rotation"
)

// salvageLog is logged when a corrupt buffer was moved aside and salvaged.
const salvageLog = "buffer database was unreadable: moved aside and replaced"

var cutMoments = []string{cutRandom, cutCheckpoint, cutSalvage, cutRotation}

// TestPowerCut runs the real binary with its buffer on a power-cut file
// system (internal/powercut: what was not fsynced is lost at a cut), feeds
// scans through a PTY scanner, and cuts the power (SIGKILL, then Cut) at a
// random moment, during a checkpoint, during the salvage of a corrupt
// buffer and during the start after a key rotation. After every cut the
// daemon starts on what survived, and every code it had acknowledged to
// the scanner (it read the next line from the tty, which it does only
// after the commit) reaches the broker; seqs are gapless per epoch, ids
// unique, a resend carries the same bytes. MAILROOMD_POWERCUT_ROUNDS sets
// the number of cuts (make chaos runs many).
func TestPowerCut(t *testing.T) {
	if err := powercut.Check(); err != nil {
		t.Fatal(err) // CI has FUSE: a missing one is a failure, not a skip
	}
	rounds := 6
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_POWERCUT_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	s := newSetup(t, "mr-power-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-power-01/events")
	mnt := filepath.Join(s.dir, "disk")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	pfs, err := powercut.Mount(mnt, powercut.Options{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pfs.Close() })
	dbPath := filepath.Join(mnt, "buffer.db")

	// The buffer is sealed, so that a key rotation can be cut; the key
	// file is the operator's and lives off the power-cut disk.
	keyFile := filepath.Join(s.dir, "buffer.key")
	keys := []string{newBufferKey(t, "k1")}
	writeKeys := func() {
		if err := os.WriteFile(keyFile, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys()
	fake := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	cfgText := strings.Replace(s.configText(s.broker.URL(), serialDevice(fake.Link)+"\nstations:\n  - {name: dock-1, scanner: dock-scanner}"),
		"storage: {path: "+filepath.Join(s.dir, "buffer.db"), "storage: {encryption_key_file: "+keyFile+", path: "+dbPath, 1)
	cfg := filepath.Join(s.dir, "power.yaml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}

	tty := &ttyFeed{t: t, fake: fake}
	start := func() *proc {
		p := startDaemon(t, cfg)
		p.waitLog(t, "scanner connected", 20*time.Second)
		return p
	}
	counts := map[string]int{}
	modes := map[powercut.Mode]int{}
	var kills []stopMark // lines the tty had given out at each stop
	// kill SIGKILLs the daemon and cuts the power at the same moment: a
	// daemon waiting in the frozen file system dies once the cut fails
	// its operation.
	kill := func(p *proc, moment string) {
		t.Helper()
		p.cmd.Process.Signal(syscall.SIGKILL)
		mode := powercut.Modes[rng.IntN(len(powercut.Modes))]
		if err := pfs.Cut(mode); err != nil {
			t.Fatal(err)
		}
		<-p.done
		kills = append(kills, stopMark{lines: tty.consumed()})
		counts[moment]++
		modes[mode]++
	}
	began := time.Now()
	p := start()
	for round := 0; round < rounds; round++ {
		moment := cutMoments[round%len(cutMoments)]
		switch moment {
		case cutRandom:
			tty.feed(time.Duration(100+rng.IntN(1200))*time.Millisecond, nil)
			kill(p, moment)
		case cutCheckpoint:
			// In WAL mode only a checkpoint writes the database file.
			skip := rng.IntN(4)
			fired := pfs.FreezeWhen(func(op powercut.Op) bool {
				if op.Kind != "write" || op.Path != "buffer.db" {
					return false
				}
				skip--
				return skip < 0
			})
			if !tty.feed(30*time.Second, fired) {
				t.Fatalf("round %d: no checkpoint within 30 s", round)
			}
			kill(p, moment)
		case cutSalvage, cutRotation:
			// A clean stop, then a start that salvages a corrupted
			// buffer or seals with a new key, cut after its n-th write.
			// With the broker down, the buffer holds unsent events,
			// which a salvage must carry over.
			s.broker.Kill()
			tty.feed(time.Duration(200+rng.IntN(600))*time.Millisecond, nil)
			if code := p.stop(t); code != 0 {
				t.Fatalf("round %d: exit %d", round, code)
			}
			kills = append(kills, stopMark{lines: tty.consumed(), clean: true})
			if moment == cutSalvage {
				corruptIndex(t, dbPath)
			} else {
				keys = append([]string{newBufferKey(t, fmt.Sprintf("k%d", round+2))}, keys...)
				writeKeys()
			}
			n := 1 + rng.IntN(40)
			fired := pfs.FreezeWhen(func(op powercut.Op) bool {
				if op.Kind == "write" || op.Kind == "fsync" || op.Kind == "rename" {
					n--
				}
				return n == 0
			})
			p = startDaemon(t, cfg)
			select {
			case <-fired:
			case <-p.done:
				t.Fatalf("round %d: the daemon exited on the %s start:\n%s", round, moment, p.log.String())
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: the %s start wrote nothing", round, moment)
			}
			salvaged := strings.Contains(p.log.String(), salvageLog)
			kill(p, moment)
			if moment == cutSalvage && salvaged {
				counts["salvage finished before the cut"]++
			}
			s.broker.Start()
		}
		p = start()
		if strings.Contains(p.log.String(), salvageLog) {
			counts["salvaged at the start after the cut"]++
			if !strings.Contains(p.log.String(), "unreadable_unsent=0") {
				t.Fatalf("round %d: the salvage found unreadable events; only an index was damaged", round)
			}
		}
		checkDelivered(t, sub, tty, kills, false)
	}
	// The last run takes every line left in the tty and drains.
	tty.drain(30 * time.Second)
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p = start()
	res := checkDelivered(t, sub, tty, kills, true)
	p.stop(t)

	st := pfs.Stats()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-34s %8s\n", "scenario", "faults")
	for _, m := range cutMoments {
		fmt.Fprintf(&b, "%-34s %8d\n", "power cut "+m, counts[m])
	}
	fmt.Fprintf(&b, "power cuts by mode: drop-all %d, torn %d, pages %d; %d files and %d directories lost unsynced changes; %d writes, %d fsyncs\n",
		modes[powercut.DropAll], modes[powercut.Torn], modes[powercut.Pages], st.FilesReverted, st.DirsReverted, st.Writes, st.Fsyncs)
	fmt.Fprintf(&b, "salvage cuts: %d after the salvage had finished, %d before; salvaged at the start after a cut: %d\n",
		counts["salvage finished before the cut"], counts[cutSalvage]-counts["salvage finished before the cut"], counts["salvaged at the start after the cut"])
	fmt.Fprintf(&b, "power cuts: events committed %d (epochs %d), codes acknowledged %d, lost %d, gaps %d, lines lost at kills %d of %d kills, %s\n",
		res.committed, res.epochs, res.acked, res.lost, res.gaps, res.maybe, rounds, time.Since(began).Round(time.Second))
	t.Log(b.String())
}

// newBufferKey makes a buffer key line with the daemon's own command.
func newBufferKey(t *testing.T, id string) string {
	var out, errb strings.Builder
	if code := Main([]string{"buffer-key", "--id", id}, &out, &errb); code != 0 {
		t.Fatalf("buffer-key: exit %d: %s", code, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// corruptIndex overwrites the root page of the events_sent index with
// garbage (through the power-cut file system, fsynced), after a checkpoint
// that leaves no WAL: the buffer fails quick_check and is moved aside and
// salvaged at the next start, while every event row stays readable.
func corruptIndex(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	var root, pageSize int64
	if err := db.QueryRow("SELECT rootpage FROM sqlite_master WHERE name = 'events_sent'").Scan(&root); err != nil {
		t.Fatal(err)
	}
	db.QueryRow("PRAGMA page_size").Scan(&pageSize)
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, pageSize)
	for i := range garbage {
		garbage[i] = byte(i*7 + 13)
	}
	if _, err := f.WriteAt(garbage, (root-1)*pageSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// ttyFeed writes codes of one length into the scanner's tty and tells how
// many lines the daemon has taken: the driver reads a line only after it
// committed the one before.
type ttyFeed struct {
	t     *testing.T
	fake  *serialtest.Scanner
	codes []string
}

const codeLen = len("PC-000000")

// pending is the number of bytes written and not yet read from the tty.
func (f *ttyFeed) pending() int {
	fd, err := unix.Open(f.fake.Link, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		f.t.Fatalf("open the scanner's tty: %v", err)
	}
	defer unix.Close(fd)
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	if err != nil {
		f.t.Fatalf("TIOCINQ: %v", err)
	}
	return n
}

// consumed is the number of lines the daemon has read.
func (f *ttyFeed) consumed() int {
	return len(f.codes) - (f.pending()+codeLen)/(codeLen+1)
}

// feed writes codes, keeping a few lines waiting, for d or until stop is
// closed; it reports whether stop was closed.
func (f *ttyFeed) feed(d time.Duration, stop <-chan struct{}) bool {
	deadline := time.After(d)
	for {
		select {
		case <-stop:
			return true
		case <-deadline:
			return false
		default:
		}
		if len(f.codes)-f.consumed() < 4 {
			code := fmt.Sprintf("PC-%06d", len(f.codes))
			if err := f.fake.Scan(code); err != nil {
				f.t.Fatal(err)
			}
			f.codes = append(f.codes, code)
			continue
		}
		time.Sleep(time.Millisecond)
	}
}

// drain waits until the daemon has read every line written.
func (f *ttyFeed) drain(timeout time.Duration) {
	waitfor.True(f.t, timeout, "the daemon reads every line in the tty", func() bool { return f.consumed() == len(f.codes) })
}

// stopMark is how many lines the daemon had read from the tty when it was
// killed, or stopped cleanly (then the last line read was committed too).
type stopMark struct {
	lines int
	clean bool
}

type powerResult struct {
	committed, acked, lost, gaps, maybe, epochs int
}

// checkDelivered waits until every code acknowledged before a kill (a
// later line of the same run was read) is at the broker, and checks the
// broker's events: one id and one payload per epoch and seq, every id
// once, seqs gapless per epoch. At the end every line written must be
// there but the last line read by each killed run, which may have died
// with it.
func checkDelivered(t *testing.T, sub *mqtttest.Subscriber, tty *ttyFeed, stops []stopMark, final bool) powerResult {
	t.Helper()
	acked := map[string]bool{}
	maybe := map[string]bool{}
	from := 0
	for _, s := range stops {
		for i := from; i < s.lines; i++ {
			if i < s.lines-1 || s.clean {
				acked[tty.codes[i]] = true
			} else {
				maybe[tty.codes[i]] = true
			}
		}
		from = s.lines
	}
	if final {
		for _, c := range tty.codes[from:] {
			acked[c] = true
		}
	}
	seen := func(msgs []mqtttest.Message) map[string]bool {
		got := map[string]bool{}
		for _, m := range msgs {
			if ev, err := event.Decode(m.Payload); err == nil && ev.Type == "scan" {
				got[string(ev.Barcode)] = true
			}
		}
		return got
	}
	var missing []string
	msgs := sub.WaitFor(t, 60*time.Second, "every acknowledged code", func(msgs []mqtttest.Message) bool {
		got := seen(msgs)
		missing = missing[:0]
		for c := range acked {
			if !got[c] {
				missing = append(missing, c)
			}
		}
		return len(missing) == 0
	})
	got := seen(msgs)
	type key struct {
		epoch string
		seq   int64
	}
	payloads := map[key]string{}
	ids := map[string]key{}
	last := map[string]int64{}
	for _, m := range msgs {
		ev, err := event.Decode(m.Payload)
		if err != nil {
			t.Fatalf("undecodable event %q: %v", m.Payload, err)
		}
		k := key{ev.Epoch, ev.Seq}
		if prev, ok := payloads[k]; ok {
			if prev != string(m.Payload) {
				t.Fatalf("epoch %s seq %d resent with another payload:\n%s\n%s", ev.Epoch, ev.Seq, prev, m.Payload)
			}
			continue
		}
		payloads[k] = string(m.Payload)
		if other, ok := ids[ev.ID]; ok && other != k {
			t.Fatalf("id %s at epoch %s seq %d and at epoch %s seq %d", ev.ID, other.epoch, other.seq, ev.Epoch, ev.Seq)
		}
		ids[ev.ID] = k
		last[ev.Epoch] = max(last[ev.Epoch], ev.Seq)
	}
	res := powerResult{committed: len(payloads), acked: len(acked), epochs: len(last)}
	for epoch, n := range last {
		for seq := int64(1); seq <= n; seq++ {
			if _, ok := payloads[key{epoch, seq}]; !ok {
				res.gaps++
				t.Errorf("epoch %s: seq %d of %d never reached the broker", epoch, seq, n)
			}
		}
	}
	for c := range maybe {
		if !got[c] {
			res.maybe++
		}
	}
	if final {
		sort.Strings(missing)
		res.lost = len(missing)
		var extra []string
		written := map[string]bool{}
		for _, c := range tty.codes {
			written[c] = true
		}
		for c := range got {
			if !written[c] {
				extra = append(extra, c)
			}
		}
		if len(extra) > 0 {
			t.Fatalf("the broker got codes never written (split lines?): %v", extra)
		}
	}
	return res
}
