package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleetop"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/powercut"
	"github.com/mailroomd/mailroomd/internal/remoteconfig"
	"github.com/mailroomd/mailroomd/internal/seal"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/waitfor"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// The moments at which TestPowerCut cuts the power, in the order it
// cycles through them. The Makefile's chaos target reads the names from
// the test's summary: lower-case letters and spaces only.
const (
	cutRandom     = "random moment"
	cutCheckpoint = "during a checkpoint"
	cutSalvage    = "during a salvage"
	cutRotation   = "during a key rotation"
	cutMigration  = "during a schema migration"
	cutPhoto      = "during a photo write"
	cutRemote     = "during a remote config apply"
)

// salvageLog is logged when a corrupt buffer was moved aside and salvaged.
const salvageLog = "buffer database was unreadable: moved aside and replaced"

// powerID is the appliance TestPowerCut runs.
const powerID = "mr-power-01"

var cutMoments = []string{cutRandom, cutCheckpoint, cutSalvage, cutRotation, cutMigration, cutPhoto, cutRemote}

// TestPowerCut runs the real binary with its buffer, its photos, its
// remote config state and the fleet's key on a power-cut file system
// (internal/powercut: what was not fsynced is lost at a cut), feeds scans
// through a PTY scanner, and cuts the power (SIGKILL, then Cut) at a
// random moment, during a checkpoint, during the salvage of a corrupt
// buffer, during the start after a key rotation, during the start that
// migrates a buffer of schema 4, while a photo is written and committed,
// and while a remote config is applied. After every cut the daemon starts
// on what survived, and every code it had acknowledged to the scanner (it
// read the next line from the tty, which it does only after the commit)
// reaches the broker; seqs are gapless per epoch, ids unique, a resend
// carries the same bytes. Each of the last three moments checks its own
// promise too (see checkMigrated, checkPhotos, checkRemoteConfig).
// MAILROOMD_POWERCUT_ROUNDS sets the number of cuts (make chaos runs
// many), MAILROOMD_POWERCUT_SEED the seed of the random choices.
func TestPowerCut(t *testing.T) {
	if err := powercut.Check(); err != nil {
		t.Fatal(err) // CI has FUSE: a missing one is a failure, not a skip
	}
	rounds := len(cutMoments)
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_POWERCUT_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	if n, err := strconv.ParseUint(os.Getenv("MAILROOMD_POWERCUT_SEED"), 10, 64); err == nil {
		seed = n // the same random choices as the run that logged it
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	id := powerID
	s := newSetup(t, id)
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/"+id+"/events")
	statuses := s.broker.Subscribe(t, "status", "mailroom/v1/"+id+"/status")
	reports := s.broker.Subscribe(t, "reports", "mailroom/v1/"+id+"/config/reported")
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
	// The fleet's public key, which every start reads, lives on the
	// power-cut disk, written durably as an installer would.
	fleetPub, fleetKey, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(fleetPub)
	fleetKeyFile := filepath.Join(mnt, "fleet.pub")
	writeDurably(t, fleetKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	fake := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	clerkHash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	webPort := mqtttest.FreePort(t)
	devices := serialDevice(fake.Link) + fmt.Sprintf(`
stations:
  - {name: dock-1, scanner: dock-scanner}
web:
  listen: 127.0.0.1:%d
  users:
    - {name: clara, role: clerk, password_hash: "%s"}
fleet:
  public_keys: [{id: it, key_file: %s}]`, webPort, clerkHash, fleetKeyFile)
	// The buffer, and so the photos (blobs/), the remote config state and
	// health.json next to it, are on the power-cut disk.
	cfgText := strings.Replace(s.configText(s.broker.URL(), devices),
		"storage: {path: "+filepath.Join(s.dir, "buffer.db"), "storage: {encryption_key_file: "+keyFile+", path: "+dbPath, 1)
	cfg := filepath.Join(s.dir, "power.yaml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	// A remote config differs from the local file in the site, which the
	// retained status message reports with the config version.
	remoteConfig := func(version int64) string {
		return strings.Replace(cfgText, "site: test-site", "site: "+siteOf(version), 1)
	}
	var inUse int64 // the remote config version in use; 0: the local file

	tty := &ttyFeed{t: t, fake: fake, thaw: func() { pfs.Cut(powercut.DropAll) }}
	start := func() *proc {
		p := startDaemon(t, cfg)
		// A start after a cut first resolves the scans the station had
		// not resolved, one commit each: slow on a busy machine.
		p.waitLog(t, "scanner connected", scaled(60*time.Second))
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
		kills = append(kills, stopMark{lines: tty.consumedAtStop()})
		counts[moment]++
		modes[mode]++
	}
	// cleanStop stops the daemon with the broker down, after a few scans,
	// so that the buffer holds unsent events.
	cleanStop := func(p *proc, round int) {
		t.Helper()
		// Stopped, not killed: mosquitto saves its persistence only every
		// second, so a SIGKILL loses events it had acknowledged to the box
		// and not yet handed to the cloud's subscriber, which is not the
		// box's loss.
		s.broker.Stop()
		tty.feed(time.Duration(200+rng.IntN(600))*time.Millisecond, nil)
		if code := p.stop(t); code != 0 {
			t.Fatalf("round %d: exit %d", round, code)
		}
		kills = append(kills, stopMark{lines: tty.consumedAtStop(), clean: true})
	}
	// nthOp freezes the file system after the n-th write, fsync or rename.
	nthOp := func(n int) <-chan struct{} {
		return pfs.FreezeWhen(func(op powercut.Op) bool {
			if op.Kind == "write" || op.Kind == "fsync" || op.Kind == "rename" {
				n--
			}
			return n == 0
		})
	}
	// startCut starts the daemon and waits until the armed trigger fired.
	startCut := func(round int, moment string, fired <-chan struct{}) *proc {
		t.Helper()
		p := startDaemon(t, cfg)
		select {
		case <-fired:
		case <-p.done:
			t.Fatalf("round %d: the daemon exited on the start %s:\n%s", round, moment, p.log.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the start %s wrote nothing", round, moment)
		}
		return p
	}
	photos := &photoStats{}
	began := time.Now()
	p := start()
	for round := 0; round < rounds; round++ {
		moment := cutMoments[round%len(cutMoments)]
		var after func(p *proc) // the moment's own checks after the restart
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
			cleanStop(p, round)
			if moment == cutSalvage {
				corruptIndex(t, dbPath)
			} else {
				keys = append([]string{newBufferKey(t, fmt.Sprintf("k%d", round+2))}, keys...)
				writeKeys()
			}
			p = startCut(round, moment, nthOp(1+rng.IntN(40)))
			salvaged := strings.Contains(p.log.String(), salvageLog)
			kill(p, moment)
			if moment == cutSalvage && salvaged {
				counts["salvage finished before the cut"]++
			}
			s.broker.Start()
		case cutMigration:
			// A clean stop with unsent events, the buffer taken back to
			// schema 4, and the start that migrates it (schema 5
			// rebuilds the events table) cut at its n-th write, fsync
			// or rename.
			cleanStop(p, round)
			old := toSchema4(t, dbPath)
			// Each migration is a commit of its own (one sync of the
			// WAL), and the parcel states are rebuilt after the last:
			// the cut comes at the m-th write, fsync or rename after
			// the start's j-th sync of the WAL, so that it falls into
			// any of the migrations from schema 5 on or the rebuild.
			commits, m := rng.IntN(store.SchemaVersion-4+1), 1+rng.IntN(30)
			fired := pfs.FreezeWhen(func(op powercut.Op) bool {
				if commits > 0 {
					if op.Kind == "fsync" && op.Path == "buffer.db-wal" {
						commits--
					}
					return false
				}
				if op.Kind == "write" || op.Kind == "fsync" || op.Kind == "rename" {
					m--
				}
				return m == 0
			})
			p = startCut(round, moment, fired)
			finished := strings.Contains(p.log.String(), fmt.Sprintf(`msg="buffer schema migrated" from=%d to=%d`, store.SchemaVersion-1, store.SchemaVersion))
			kill(p, moment)
			if finished {
				counts["migration finished before the cut"]++
			}
			s.broker.Start()
			after = func(p *proc) { checkMigrated(t, round, p, sub, dbPath, old) }
		case cutPhoto:
			// A clerk uploads photos of a parcel, one after the other;
			// once the first was answered, the cut comes at the n-th
			// step: an operation under blobs/
			// (creating a photo's file or directory, writing the file,
			// all its writes one step, syncing, renaming it into place)
			// or a write or sync of the WAL between a photo's rename and
			// the upload's answer (committing its event).
			tries := startPhotos(t, fmt.Sprintf("http://127.0.0.1:%d", webPort), newestParcel(t, sub), seed+uint64(round))
			n, wrote := 1+rng.IntN(30), false
			fired := pfs.FreezeWhen(func(op powercut.Op) bool {
				if tries.answered.Load() == 0 {
					return false // the first photo is kept, so that one answered 200 is checked
				}
				switch {
				case strings.HasPrefix(op.Path, "blobs"):
					switch op.Kind {
					case "create":
						wrote = false
					case "write":
						if wrote {
							return false // a photo's writes are one step, however many there are
						}
						wrote = true
					case "rename":
						tries.committing.Store(true) // the photo is in place: its event comes next
					}
				case tries.committing.Load() && op.Path == "buffer.db-wal" && (op.Kind == "write" || op.Kind == "fsync"):
				default:
					return false
				}
				n--
				return n == 0
			})
			select {
			case <-fired:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: no photo written within 30 s", round)
			}
			kill(p, moment)
			done := tries.stop()
			after = func(p *proc) {
				checkPhotos(t, round, p, sub, operator(t, s.broker, fmt.Sprintf("operator-photo-%d", round)), filepath.Join(mnt, "blobs"), keyFile, done, photos)
			}
		case cutRemote:
			// IT pushes a signed config that changes the site (every
			// subsystem restarts in the process); the cut comes at the
			// n-th write, fsync or rename of the remote config files and
			// state: keeping the version's file, recording the state that
			// names it, or confirming it once the uplink reconnected.
			version, prev := inUse+1, inUse
			n := 1 + rng.IntN(9)
			fired := pfs.FreezeWhen(func(op powercut.Op) bool {
				if strings.HasPrefix(op.Path, "remote-") && (op.Kind == "write" || op.Kind == "fsync" || op.Kind == "rename") {
					n--
				}
				return n == 0
			})
			pushConfig(t, s.broker, fleetKey, id, version, remoteConfig(version))
			if !tty.feed(30*time.Second, fired) {
				t.Fatalf("round %d: the remote config version %d was not applied within 30 s", round, version)
			}
			kill(p, moment)
			inUse = version
			restarted := time.Now()
			from := len(reports.Messages())
			after = func(p *proc) {
				if checkRemoteConfig(t, round, p, statuses, reports, restarted, from, prev, version) == version {
					counts["remote config new at the start"]++
				}
			}
		}
		p = start()
		if strings.Contains(p.log.String(), salvageLog) {
			counts["salvaged at the start after the cut"]++
			if !strings.Contains(p.log.String(), "unreadable_unsent=0") {
				t.Fatalf("round %d: the salvage found unreadable events; only an index was damaged", round)
			}
		}
		checkDelivered(t, sub, tty, kills, false)
		if after != nil {
			after(p)
		}
		t.Logf("round %d, cut %s: checked at %s", round, moment, time.Since(began).Round(100*time.Millisecond))
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
	fmt.Fprintf(&b, "\n%-40s %8s\n", "scenario", "faults")
	for _, m := range cutMoments {
		fmt.Fprintf(&b, "%-40s %8d\n", "power cut "+m, counts[m])
	}
	fmt.Fprintf(&b, "power cuts by mode: drop-all %d, torn %d, pages %d; %d files and %d directories lost unsynced changes; %d writes, %d fsyncs\n",
		modes[powercut.DropAll], modes[powercut.Torn], modes[powercut.Pages], st.FilesReverted, st.DirsReverted, st.Writes, st.Fsyncs)
	fmt.Fprintf(&b, "salvage cuts: %d after the salvage had finished, %d before; salvaged at the start after a cut: %d\n",
		counts["salvage finished before the cut"], counts[cutSalvage]-counts["salvage finished before the cut"], counts["salvaged at the start after the cut"])
	fmt.Fprintf(&b, "migration cuts: %d after the migration to schema %d had finished, %d before\n",
		counts["migration finished before the cut"], store.SchemaVersion, counts[cutMigration]-counts["migration finished before the cut"])
	fmt.Fprintf(&b, "photo cuts: %d photos answered 200, all kept whole, named and delivered; %d not answered, %d of them named by an event (whole and delivered)\n",
		photos.answered, photos.unanswered, photos.unansweredNamed)
	fmt.Fprintf(&b, "remote config cuts: the restarted daemon ran the new version at its start %d times, the old one %d times; the new version applied after each\n",
		counts["remote config new at the start"], counts[cutRemote]-counts["remote config new at the start"])
	fmt.Fprintf(&b, "power cuts: events committed %d (epochs %d), codes acknowledged %d, lost %d, gaps %d, lines lost at kills %d of %d kills, %s\n",
		res.committed, res.epochs, res.acked, res.lost, res.gaps, res.maybe, rounds, time.Since(began).Round(time.Second))
	t.Log(b.String())
}

// siteOf is the site a remote config version sets (0: the local file's).
func siteOf(version int64) string {
	if version == 0 {
		return "test-site"
	}
	return fmt.Sprintf("site-v%d", version)
}

// writeDurably writes a file and syncs it and its directory.
func writeDurably(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// oldEvent is an unsent event of a buffer taken back to an older schema.
type oldEvent struct {
	epoch string
	seq   int64
	id    string
}

// toSchema4 takes the buffer at path back to schema 4, durably: the
// events table with AUTOINCREMENT (its sqlite_sequence row carries the
// position high-water mark), no tables of later schemas, no meta keys of
// later schemas. It returns the unsent events.
func toSchema4(t *testing.T, path string) []oldEvent {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_synchronous=FULL")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var unsent []oldEvent
	rows, err := db.Query("SELECT epoch, seq, id FROM events WHERE pos > (SELECT coalesce(max(pos), 0) FROM sent_marks) ORDER BY pos")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var e oldEvent
		if err := rows.Scan(&e.epoch, &e.seq, &e.id); err != nil {
			t.Fatal(err)
		}
		unsent = append(unsent, e)
	}
	rows.Close()
	if len(unsent) == 0 {
		t.Fatal("the buffer to take back to schema 4 holds no unsent event")
	}
	for _, q := range []string{
		`BEGIN`,
		`CREATE TABLE events_v4 (
			pos     INTEGER PRIMARY KEY AUTOINCREMENT,
			epoch   TEXT    NOT NULL,
			seq     INTEGER NOT NULL,
			id      TEXT    NOT NULL,
			type    TEXT    NOT NULL,
			ts      INTEGER NOT NULL,
			payload BLOB    NOT NULL,
			sent_at INTEGER,
			key_id  TEXT)`,
		`INSERT INTO events_v4 SELECT pos, epoch, seq, id, type, ts, payload,
			CASE WHEN pos <= (SELECT coalesce(max(pos), 0) FROM sent_marks) THEN coalesce(sent_at, 1) END, key_id FROM events`,
		`DROP TABLE events`,
		`ALTER TABLE events_v4 RENAME TO events`,
		`CREATE INDEX events_pending ON events(pos) WHERE sent_at IS NULL`,
		`CREATE INDEX events_sent ON events(sent_at) WHERE sent_at IS NOT NULL`,
		`UPDATE sqlite_sequence SET seq = max(seq, (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_pos')) WHERE name = 'events'`,
		`DELETE FROM meta WHERE key IN ('last_pos', 'parcel_key', 'directory_version') OR key LIKE 'salvaged:%'`,
		`DROP TABLE alerts`, `DROP TABLE print_jobs`, `DROP TABLE parcels`, `DROP TABLE action_keys`,
		`DROP TABLE station_modes`, `DROP TABLE directory`, `DROP TABLE blobs`, `DROP TABLE sent_marks`,
		`PRAGMA user_version = 4`,
		`COMMIT`,
		`PRAGMA wal_checkpoint(TRUNCATE)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("take the buffer back to schema 4: %s: %v", strings.Fields(q)[0]+" "+strings.Fields(q)[1], err)
		}
	}
	return unsent
}

// checkMigrated checks the buffer after the restart that follows a cut
// during its migration: it is at the current schema, every event that was
// unsent in the schema-4 buffer reaches the broker with its epoch, seq and
// id, and every parcel received in the buffer has its state (a buffer
// from before schema 8 gets its parcel states rebuilt from its events).
func checkMigrated(t *testing.T, round int, p *proc, sub *mqtttest.Subscriber, dbPath string, old []oldEvent) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != store.SchemaVersion {
		t.Fatalf("round %d: the buffer is at schema %d (%v) after the restart; want %d", round, v, err, store.SchemaVersion)
	}
	var missing []string
	rows, err := db.Query("SELECT e.id FROM events e WHERE e.type = ? AND NOT EXISTS (SELECT 1 FROM parcels p WHERE p.id = e.id)", string(event.TypeParcelReceived))
	if err != nil {
		t.Fatalf("round %d: read the parcel states: %v", round, err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		missing = append(missing, id)
	}
	rows.Close()
	if len(missing) > 0 {
		t.Fatalf("round %d: %d parcels received in the migrated buffer have no parcel state (the first: %s); the start after the cut logged:\n%s",
			round, len(missing), missing[0], p.log.String())
	}
	want := map[string]oldEvent{}
	for _, e := range old {
		want[e.id] = e
	}
	sub.WaitFor(t, 60*time.Second, "every event unsent in the schema-4 buffer", func(msgs []mqtttest.Message) bool {
		got := 0
		seen := map[string]bool{}
		for _, m := range msgs {
			ev, err := event.Decode(m.Payload)
			if err != nil || seen[ev.ID] {
				continue
			}
			e, ok := want[ev.ID]
			if !ok {
				continue
			}
			if ev.Epoch != e.epoch || ev.Seq != e.seq {
				t.Fatalf("round %d: event %s was epoch %s seq %d in the schema-4 buffer, epoch %s seq %d at the broker", round, ev.ID, e.epoch, e.seq, ev.Epoch, ev.Seq)
			}
			seen[ev.ID] = true
			got++
		}
		return got == len(want)
	})
}

// photoTries uploads photos of one parcel, one after the other, as a
// clerk on the page, until stopped or an upload fails.
type photoTries struct {
	// committing is set once an upload's photo was renamed into place,
	// until the upload is answered: its event is being committed.
	committing atomic.Bool
	answered   atomic.Int32 // uploads answered 200
	quit       chan struct{}
	done       chan struct{}
	tries      []photoTry
}

// photoTry is one upload and its answer (code 0: none).
type photoTry struct {
	photo  []byte
	sha    string
	code   int
	answer struct {
		SHA256  string `json:"sha256"`
		EventID string `json:"event_id"`
		Seq     int64  `json:"seq"`
	}
	err error
}

func startPhotos(t *testing.T, base, parcelID string, seed uint64) *photoTries {
	page := signIn(t, base, "clara", "clerk-password")
	rng := rand.New(rand.NewPCG(seed, 3))
	pt := &photoTries{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pt.done)
		for {
			select {
			case <-pt.quit:
				return
			default:
			}
			try := photoTry{photo: fakeJPEG(16<<10 + rng.IntN(300<<10))}
			try.sha = blobSum(try.photo)
			req, _ := http.NewRequest("POST", page.base+"/api/parcels/"+parcelID+"/photos?kind=label", bytes.NewReader(try.photo))
			req.Header.Set("Content-Type", "image/jpeg")
			req.Header.Set("X-CSRF-Token", page.csrf)
			resp, err := page.c.Do(req)
			if err == nil {
				var body []byte
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					try.code = resp.StatusCode
					if json.Unmarshal(body, &try.answer); try.code != 200 {
						err = fmt.Errorf("answer %d: %s", try.code, body)
					} else {
						pt.answered.Add(1)
					}
				}
			}
			pt.committing.Store(false)
			try.err = err
			pt.tries = append(pt.tries, try)
			if err != nil {
				return
			}
		}
	}()
	return pt
}

// stop waits for the uploads to end and returns them.
func (pt *photoTries) stop() []photoTry {
	close(pt.quit)
	<-pt.done
	return pt.tries
}

// photoStats counts the photos of the photo cuts.
type photoStats struct {
	answered, unanswered, unansweredNamed int
}

// newestParcel is the id of the newest parcel the broker got.
func newestParcel(t *testing.T, sub *mqtttest.Subscriber) string {
	t.Helper()
	msgs := sub.Messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if ev, err := event.Decode(msgs[i].Payload); err == nil && ev.Type == event.TypeParcelReceived {
			return ev.ID
		}
	}
	t.Fatal("no parcel received at the broker to photograph")
	return ""
}

// startingRe reads where the buffer left off from the start's log line.
var startingRe = regexp.MustCompile(`msg="mailroomd starting".* epoch=(\S+) last_seq=(\d+)`)

// deliveredThrough waits until the broker has every event the buffer had
// committed when the daemon of p started (its epoch's seqs up to the
// last_seq it logged), and returns the messages.
func deliveredThrough(t *testing.T, round int, p *proc, sub *mqtttest.Subscriber) []mqtttest.Message {
	t.Helper()
	m := startingRe.FindStringSubmatch(p.log.String())
	if m == nil {
		t.Fatalf("round %d: no start line with the epoch and last seq:\n%s", round, p.log.String())
	}
	last, _ := strconv.ParseInt(m[2], 10, 64)
	return sub.WaitFor(t, 60*time.Second, fmt.Sprintf("epoch %s seq %d, the last committed before the cut", m[1], last), func(msgs []mqtttest.Message) bool {
		for _, msg := range msgs {
			if ev, err := event.Decode(msg.Payload); err == nil && ev.Epoch == m[1] && ev.Seq == last {
				return true
			}
		}
		return last == 0
	})
}

// checkPhotos checks the photos after the restart that follows a cut
// during a photo write: every photo file in the blob store that bears a
// photo's name holds that photo whole; every photo whose upload was
// answered 200 is there, named by its committed event (at the broker, with
// the seq the answer gave) and arrives at the broker byte for byte; a
// photo whose upload was not answered that an event names is whole in the
// store and at the broker too.
func checkPhotos(t *testing.T, round int, p *proc, sub *mqtttest.Subscriber, op *fleetop.Client, blobDir, keyFile string, tries []photoTry, st *photoStats) {
	t.Helper()
	keys, err := seal.Load(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	bs := blobstore.New(blobDir, keys)
	if err := bs.Each(func(sha, path string, _ time.Time) bool {
		if sha != "" {
			if _, err := bs.Get(sha); err != nil {
				t.Fatalf("round %d: a photo file in the blob store is not whole: %v", round, err)
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	named := map[string]event.Event{}
	for _, m := range deliveredThrough(t, round, p, sub) {
		if ev, err := event.Decode(m.Payload); err == nil && ev.Type == event.TypeParcelUpdated {
			for _, ph := range ev.Photos {
				named[ph.SHA256] = ev
			}
		}
	}
	if len(tries) == 0 {
		t.Fatalf("round %d: no photo upload was tried", round)
	}
	for _, try := range tries {
		if try.code != 0 && try.code != 200 {
			t.Fatalf("round %d: the upload of photo %s was refused: %v", round, try.sha, try.err)
		}
		ev, isNamed := named[try.sha]
		switch {
		case try.code == 200:
			st.answered++
			if try.answer.SHA256 != try.sha {
				t.Fatalf("round %d: the upload of photo %s answered sha256 %s", round, try.sha, try.answer.SHA256)
			}
			if !isNamed || ev.ID != try.answer.EventID || ev.Seq != try.answer.Seq {
				t.Fatalf("round %d: photo %s was answered 200 with event %s seq %d; the broker has no such event naming it (%+v)",
					round, try.sha, try.answer.EventID, try.answer.Seq, ev)
			}
		case isNamed:
			st.unanswered++
			st.unansweredNamed++
		default:
			st.unanswered++
			continue // lost with the cut before it was acknowledged: allowed
		}
		if got, err := bs.Get(try.sha); err != nil || !bytes.Equal(got, try.photo) {
			t.Fatalf("round %d: photo %s (answer %d) is named by event %s but not whole in the blob store: %v", round, try.sha, try.code, ev.ID, err)
		}
		got, _, err := op.GetBlob(context.Background(), powerID, try.sha, 60*time.Second)
		if err != nil || !bytes.Equal(got, try.photo) {
			t.Fatalf("round %d: photo %s from the broker: %d bytes, %v; want %d bytes", round, try.sha, len(got), err, len(try.photo))
		}
	}
}

// pushConfig publishes a signed remote config, retained, as IT does.
func pushConfig(t *testing.T, b *mqtttest.Broker, key ed25519.PrivateKey, target string, version int64, yaml string) {
	t.Helper()
	op, err := fleetop.Dial(fleetop.Options{Broker: b.URL(), TLS: b.TLSConfig(t, "operator-config"), ClientID: "operator-config", Key: key, KeyID: "it"})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if _, err := op.PushConfig(target, version, yaml, time.Hour); err != nil {
		t.Fatal(err)
	}
}

// checkRemoteConfig checks the restart that follows a cut during the
// apply of remote config version: the daemon started with the config of
// prev or of version, whole (no unreadable or failing remote config),
// reported it in its first online status (config version and site
// agree), and then reported version applied. It returns the version it
// started with.
func checkRemoteConfig(t *testing.T, round int, p *proc, statuses, reports *mqtttest.Subscriber, restarted time.Time, from int, prev, version int64) int64 {
	t.Helper()
	for _, bad := range []string{"remote config unreadable", "remote config does not start"} {
		if strings.Contains(p.log.String(), bad) {
			t.Fatalf("round %d: the start after the cut logged %q:\n%s", round, bad, p.log.String())
		}
	}
	type status struct {
		State   string `json:"state"`
		Site    string `json:"site"`
		Config  int64  `json:"config_version"`
		Started string `json:"started"`
	}
	var first status
	statuses.WaitFor(t, 30*time.Second, "the restarted daemon's online status", func(msgs []mqtttest.Message) bool {
		for _, m := range msgs {
			var st status
			json.Unmarshal(m.Payload, &st)
			started, err := time.Parse(time.RFC3339Nano, st.Started)
			if st.State == "online" && err == nil && !started.Before(restarted.Add(-time.Millisecond)) {
				first = st
				return true
			}
		}
		return false
	})
	if (first.Config != prev && first.Config != version) || first.Site != siteOf(first.Config) {
		t.Fatalf("round %d: the daemon started after a cut while applying version %d (the one before: %d) reports config version %d with site %q",
			round, version, prev, first.Config, first.Site)
	}
	reports.WaitFor(t, 60*time.Second, fmt.Sprintf("remote config version %d applied", version), func(msgs []mqtttest.Message) bool {
		for _, m := range msgs[min(from, len(msgs)):] {
			var r remoteconfig.Report
			if json.Unmarshal(m.Payload, &r) == nil && r.Version == version && r.Status == remoteconfig.StatusApplied && r.Applied == version {
				return true
			}
		}
		return false
	})
	return first.Config
}

// newBufferKey makes a buffer key line with the daemon's own command.
func newBufferKey(t *testing.T, id string) string {
	var out, errb strings.Builder
	if code := Main([]string{"buffer-key", "--id", id}, &out, &errb); code != 0 {
		t.Fatalf("buffer-key: exit %d: %s", code, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// corruptIndex overwrites the root page of the parcels_received index with
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
	if err := db.QueryRow("SELECT rootpage FROM sqlite_master WHERE name = 'parcels_received'").Scan(&root); err != nil {
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
	thaw  func() // before a failure: lets a daemon waiting in a frozen file system die
	// samples are the last readings of the tty's input queue, logged
	// when a write into it blocks: what the daemon had read, and when.
	samples []string
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
	sample := fmt.Sprintf("%s written %d, queued %d bytes", time.Now().Format("15:04:05.000000"), len(f.codes), n)
	if tm, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		sample += fmt.Sprintf(", icanon %v veol %d icrnl %v", tm.Lflag&unix.ICANON != 0, tm.Cc[unix.VEOL], tm.Iflag&unix.ICRNL != 0)
	}
	if f.samples = append(f.samples, sample); len(f.samples) > 400 {
		f.samples = f.samples[200:]
	}
	return n
}

// consumed is the number of lines the daemon has read.
func (f *ttyFeed) consumed() int {
	return len(f.codes) - (f.pending()+codeLen)/(codeLen+1)
}

// The pty hands what is written to a kernel worker, which moves it into
// the tty's line buffer, where TIOCINQ counts it; under load the worker
// runs late, and until then a line written looks read. (A feeder that
// trusted the count at once wrote hundreds of lines ahead of the daemon.)

// landed waits, after a write, until the tty's line buffer holds a line,
// or 50 ms: the daemon may also have read every line meanwhile.
func (f *ttyFeed) landed() {
	for deadline := time.Now().Add(50 * time.Millisecond); f.pending() == 0 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Microsecond)
	}
}

// consumedAtStop is consumed once the daemon is gone: when two readings
// 5 ms apart agree, nothing written is on its way into the line buffer.
func (f *ttyFeed) consumedAtStop() int {
	prev := f.pending()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		n := f.pending()
		if n == prev {
			break
		}
		prev = n
	}
	return f.consumed()
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
			// With at most four lines waiting a write cannot fill the
			// tty; one that blocks anyway fails the test rather than
			// hanging it.
			written := make(chan error, 1)
			go func() { written <- f.fake.Scan(code) }()
			select {
			case err := <-written:
				if err != nil {
					f.t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				if f.thaw != nil {
					f.thaw() // so that the daemon, waiting in a frozen file system, can be killed
				}
				f.t.Logf("the tty's input queue before:\n%s", strings.Join(f.samples, "\n"))
				f.t.Fatalf("writing %s into the scanner's tty blocked for 10 s: %d bytes in the tty's input queue, %d lines written, %d read",
					code, f.pending(), len(f.codes), f.consumed())
			}
			f.codes = append(f.codes, code)
			f.landed()
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
	defer func() {
		if t.Failed() {
			slices.Sort(missing)
			t.Logf("codes acknowledged but not at the broker: %v; lines read at each stop: %+v; %d lines written", missing, stops, len(tty.codes))
		}
	}()
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
