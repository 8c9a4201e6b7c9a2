package store

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/seal"
)

// The recipient directory lives in the buffer database, so that it is
// sealed like the events and kept with them. The command line writes it
// through a connection of its own, while the daemon may be running: each
// change is one transaction, and meta's directory_version tells readers
// that it changed.

// personSealID binds a sealed directory entry to its id.
func personSealID(id string) string { return "person/" + id }

// openDirectory opens the buffer database for the directory, bringing its
// schema up to date (a no-op while a daemon of this version runs).
// Deleted entries are overwritten on disk (secure_delete), so that a
// person removed is gone from the file, not only from its index.
func openDirectory(ctx context.Context, path string) (*sql.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	db, err := sql.Open("sqlite3", dsn(path)+"&_secure_delete=on")
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "PRAGMA journal_mode=WAL"); err != nil {
		db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	if _, err := migrate(ctx, db, slog.New(slog.DiscardHandler)); err != nil {
		db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	return db, nil
}

// ReplaceDirectory replaces the whole directory in the buffer at path with
// entries, in one transaction, and returns its new version.
func ReplaceDirectory(ctx context.Context, path string, keys *seal.Keys, entries []directory.Entry) (int64, error) {
	db, err := openDirectory(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	// An import replaces a pushed directory: no pushed version is in use
	// any more (the versions tried stay tried).
	return replaceDirectory(ctx, db, keys, entries, map[string]string{metaPushApplied: "0"})
}

// replaceDirectory replaces the directory and sets the meta values given,
// in one transaction.
func replaceDirectory(ctx context.Context, db *sql.DB, keys *seal.Keys, entries []directory.Entry, meta map[string]string) (int64, error) {
	if err := checkKeyIDs(ctx, db, keys); err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "DELETE FROM directory"); err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO directory(id, entry, key_id) VALUES (?,?,?)")
	if err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	defer stmt.Close()
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return 0, fmt.Errorf("import directory: %w", err)
		}
		var keyID driver.Value
		if keys != nil {
			b, keyID = keys.Seal(personSealID(e.ID), b), keys.Current()
		}
		if _, err := stmt.ExecContext(ctx, e.ID, b, keyID); err != nil {
			return 0, fmt.Errorf("import directory: %s: %w", e.ID, err)
		}
	}
	v, err := bumpDirectoryVersion(ctx, tx)
	if err != nil {
		return 0, err
	}
	if err := setMeta(ctx, tx, meta); err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	return v, nil
}

func setMeta(ctx context.Context, tx *sql.Tx, meta map[string]string) error {
	for k, v := range meta {
		if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", k, v); err != nil {
			return err
		}
	}
	return nil
}

// DirectoryPush is what a box keeps of the directories IT pushed to it.
type DirectoryPush struct {
	// Applied is the version of the pushed directory in use (0: none;
	// an import on the box does not change it).
	Applied int64
	// Highest is the highest version tried: older or equal versions are
	// not tried again.
	Highest int64
	// Report is the last report, published retained at every connection.
	Report []byte
}

// Meta keys of directory pushes.
const (
	metaPushApplied = "directory_push_applied"
	metaPushHighest = "directory_push_highest"
	metaPushReport  = "directory_push_report"
)

// DirectoryPush reads what the box keeps of directory pushes.
func (o *Outbox) DirectoryPush(ctx context.Context) (DirectoryPush, error) {
	var d DirectoryPush
	rows, err := o.rdb.QueryContext(ctx, "SELECT key, value FROM meta WHERE key IN (?, ?, ?)", metaPushApplied, metaPushHighest, metaPushReport)
	if err != nil {
		return d, fmt.Errorf("read directory push state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return d, fmt.Errorf("read directory push state: %w", err)
		}
		switch k {
		case metaPushApplied:
			d.Applied, _ = strconv.ParseInt(v, 10, 64)
		case metaPushHighest:
			d.Highest, _ = strconv.ParseInt(v, 10, 64)
		case metaPushReport:
			d.Report = []byte(v)
		}
	}
	return d, rows.Err()
}

// ApplyDirectoryPush replaces the directory with a pushed version and
// records it with its report, in one transaction: a power cut leaves the
// old directory and state, or the new ones.
func (o *Outbox) ApplyDirectoryPush(ctx context.Context, version int64, entries []directory.Entry, report []byte) error {
	db, err := openDirectory(ctx, o.opts.Path)
	if err != nil {
		return err
	}
	defer db.Close()
	v := strconv.FormatInt(version, 10)
	_, err = replaceDirectory(ctx, db, o.opts.Seal, entries, map[string]string{metaPushApplied: v, metaPushHighest: v, metaPushReport: string(report)})
	return err
}

// RecordDirectoryPush records a version tried and not applied, and its
// report.
func (o *Outbox) RecordDirectoryPush(ctx context.Context, highest int64, report []byte) error {
	db, err := openDirectory(ctx, o.opts.Path)
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record directory push: %w", err)
	}
	defer tx.Rollback()
	meta := map[string]string{metaPushReport: string(report)}
	if highest > 0 {
		meta[metaPushHighest] = strconv.FormatInt(highest, 10)
	}
	if err := setMeta(ctx, tx, meta); err != nil {
		return fmt.Errorf("record directory push: %w", err)
	}
	return tx.Commit()
}

// ErrNoPerson is ForgetPerson's answer for an id the directory lacks.
var ErrNoPerson = errors.New("no person with that id in the directory")

// ForgetPerson erases one person from the buffer at path at once (an
// erasure request):
//
//  1. the entry is marked as left, so that a running daemon stops showing
//     and matching the person;
//  2. their name leaves every event of every parcel that names them by id
//     (recipient_name; the name and phone a 2D label prints, in the
//     label's fields, its raw bytes and its scan; a name typed in for
//     them), a page of events per transaction;
//  3. the entry is deleted, the events committed meanwhile are scrubbed
//     too, and the print jobs of their parcels are dropped;
//  4. the file is rewritten (VACUUM), so that no page freed earlier keeps a
//     copy, and the WAL is checkpointed (TRUNCATE);
//  5. the database file and its WAL are searched for the names: found, it
//     returns ErrNameRemains; a WAL the daemon keeps open returns
//     ErrWALInUse.
//
// It returns how many events it changed. Interrupted, it can be run again.
func ForgetPerson(ctx context.Context, path string, keys *seal.Keys, id string) (int64, error) {
	db, err := openDirectory(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	e, err := readEntry(ctx, db, keys, id)
	if errors.Is(err, ErrNoPerson) {
		// No such person, or an erasure interrupted after the entry was
		// deleted: the rewrite is done all the same, which finishes it.
		rewrite(ctx, db)
		return 0, err
	}
	if err != nil {
		return 0, err
	}
	id = e.ID
	if e.Active {
		left := e
		left.Active = false
		if err := writeEntry(ctx, db, keys, left); err != nil {
			return 0, fmt.Errorf("forget %s: %w", id, err)
		}
	}
	sc := &scrubber{db: db, keys: keys, person: e, parcels: map[string]bool{}, scans: map[string]bool{},
		names: map[string]bool{e.Name: true}, rewritten: map[int64]bool{}, photos: map[string]bool{}}
	if e.Email != "" {
		sc.names[e.Email] = true
	}
	// The second pass takes what a running daemon committed while the
	// first ran (the person is marked as left, so nothing new names them).
	for range 2 {
		if err := sc.run(ctx); err != nil {
			return sc.changed, fmt.Errorf("forget %s: %w", id, err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return sc.changed, fmt.Errorf("forget %s: %w", id, err)
	}
	defer tx.Rollback()
	for sha := range sc.photos {
		// Not uploaded any more: the photo is gone from the box.
		if _, err := tx.ExecContext(ctx, "DELETE FROM blobs WHERE sha256 = ?", sha); err != nil {
			return sc.changed, fmt.Errorf("forget %s: %w", id, err)
		}
	}
	for parcel := range sc.parcels {
		if _, err := tx.ExecContext(ctx, "DELETE FROM print_jobs WHERE parcel_id = ?", parcel); err != nil {
			return sc.changed, fmt.Errorf("forget %s: %w", id, err)
		}
		if err := forgetInParcel(ctx, tx, keys, parcel, id); err != nil {
			return sc.changed, fmt.Errorf("forget %s: parcel %s: %w", id, parcel, err)
		}
	}
	// The entry goes last: until then, forget can be run again.
	if _, err := tx.ExecContext(ctx, "DELETE FROM directory WHERE id = ?", id); err != nil {
		return sc.changed, fmt.Errorf("forget %s: %w", id, err)
	}
	if _, err := bumpDirectoryVersion(ctx, tx); err != nil {
		return sc.changed, err
	}
	if err := tx.Commit(); err != nil {
		return sc.changed, fmt.Errorf("forget %s: %w", id, err)
	}
	photos := blobstore.New(BlobDir(path), nil)
	for sha := range sc.photos {
		if err := photos.Remove(sha); err != nil {
			return sc.changed, fmt.Errorf("forget %s: %w", id, err)
		}
	}
	busy, err := rewrite(ctx, db)
	if err != nil {
		return sc.changed, fmt.Errorf("forget %s: %w", id, err)
	}
	if busy {
		return sc.changed, fmt.Errorf("forget %s: %w", id, ErrWALInUse)
	}
	for _, f := range []string{path, path + "-wal"} {
		for name := range sc.names {
			found, err := fileHolds(f, name)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return sc.changed, fmt.Errorf("forget %s: check the buffer: %w", id, err)
			}
			if found {
				return sc.changed, fmt.Errorf("forget %s: %w", id, ErrNameRemains)
			}
		}
	}
	return sc.changed, nil
}

// rewrite writes the buffer's live rows into a new file (VACUUM), so that
// no page freed earlier keeps an old copy (a row rewritten when it was
// marked sent leaves its old bytes behind), and checkpoints the WAL so
// that it starts over. busy is true when a reader (a running daemon) kept
// the checkpoint from finishing: old pages may stay in the WAL.
func rewrite(ctx context.Context, db *sql.DB) (busy bool, err error) {
	if _, err := db.ExecContext(ctx, "VACUUM"); err != nil {
		return false, fmt.Errorf("vacuum: %w", err)
	}
	var b, logPages, done int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&b, &logPages, &done); err != nil {
		return false, fmt.Errorf("checkpoint: %w", err)
	}
	return b != 0 || logPages != done, nil
}

// forgetInParcel takes the recipient text and the label's name out of a
// parcel's state; the person's id stays.
func forgetInParcel(ctx context.Context, tx *sql.Tx, keys *seal.Keys, id, person string) error {
	var detail []byte
	var keyID sql.NullString
	err := tx.QueryRowContext(ctx, "SELECT detail, key_id FROM parcels WHERE id = ?", id).Scan(&detail, &keyID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // pruned
	}
	if err != nil {
		return err
	}
	if keyID.Valid {
		if keys == nil {
			return errors.New("sealed, and no storage.encryption_key_file is configured")
		}
		if detail, err = keys.Open(keyID.String, parcelSealID(id), detail); err != nil {
			return err
		}
	}
	var p Parcel
	if err := json.Unmarshal(detail, &p); err != nil {
		return err
	}
	if !strings.EqualFold(p.Person, person) {
		return nil // assigned to someone else since: theirs to keep
	}
	p.Recipient, p.Hint = "", ""
	needs := int64(0)
	if !p.State.Closed() {
		// Still in the mailroom, for nobody the box knows any more: on the
		// needs-recipient list, for a clerk to assign or send back.
		p.Person, p.Match, needs = "", directory.MatchNone, 1
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	var kid driver.Value
	if keys != nil {
		b, kid = keys.Seal(parcelSealID(id), b), keys.Current()
	}
	_, err = tx.ExecContext(ctx, "UPDATE parcels SET detail = ?, key_id = ?, recipient_tag = '', person_tag = CASE WHEN ? = 1 THEN '' ELSE person_tag END, needs_recipient = ? WHERE id = ?",
		b, kid, needs, needs, id)
	return err
}

// ErrNameRemains is ForgetPerson's answer when the person's name is still
// in the buffer after everything that names them was erased: text typed
// in by a clerk that the box cannot tie to the person (a manual entry's
// recipient that matched nobody). The person is forgotten all the same.
var ErrNameRemains = errors.New("the name still appears in the buffer, in text typed in at the page (events that do not name the person by id)")

// ErrWALInUse is ForgetPerson's answer when a running daemon keeps the
// WAL, which still holds old copies, from starting over.
var ErrWALInUse = errors.New("the daemon keeps the WAL open, which still holds old copies of the name until the daemon's own writes cover them: stop the daemon and run forget again to leave no trace at once")

// readEntry reads one directory entry.
func readEntry(ctx context.Context, db *sql.DB, keys *seal.Keys, id string) (directory.Entry, error) {
	var b []byte
	var keyID sql.NullString
	// Ids are unique without regard to letter case; the id as stored is
	// the one its entry is sealed for.
	err := db.QueryRowContext(ctx, "SELECT id, entry, key_id FROM directory WHERE id = ? COLLATE NOCASE", id).Scan(&id, &b, &keyID)
	if errors.Is(err, sql.ErrNoRows) {
		return directory.Entry{}, fmt.Errorf("forget %s: %w", id, ErrNoPerson)
	}
	if err != nil {
		return directory.Entry{}, fmt.Errorf("forget %s: %w", id, err)
	}
	if keyID.Valid {
		if keys == nil {
			return directory.Entry{}, fmt.Errorf("forget %s: the entry is sealed and no storage.encryption_key_file is configured", id)
		}
		if b, err = keys.Open(keyID.String, personSealID(id), b); err != nil {
			return directory.Entry{}, fmt.Errorf("forget %s: %w", id, err)
		}
	}
	var e directory.Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return directory.Entry{}, fmt.Errorf("forget %s: %w", id, err)
	}
	return e, nil
}

// writeEntry replaces one directory entry and bumps the version.
func writeEntry(ctx context.Context, db *sql.DB, keys *seal.Keys, e directory.Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	var keyID driver.Value
	if keys != nil {
		b, keyID = keys.Seal(personSealID(e.ID), b), keys.Current()
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "UPDATE directory SET entry = ?, key_id = ? WHERE id = ?", b, keyID, e.ID); err != nil {
		return err
	}
	if _, err := bumpDirectoryVersion(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

// fileHolds reports whether the file at path holds text, reading it in
// blocks.
func fileHolds(path, text string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	needle := []byte(text)
	if len(needle) == 0 {
		return false, nil
	}
	buf := make([]byte, 1<<20+len(needle))
	keep := 0
	for {
		n, err := f.Read(buf[keep:])
		if bytes.Contains(buf[:keep+n], needle) {
			return true, nil
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		// Keep the tail, for a name across two blocks.
		tail := min(len(needle)-1, keep+n)
		copy(buf, buf[keep+n-tail:keep+n])
		keep = tail
	}
}

// scrubPage is how many events a scrub reads and rewrites at a time.
const scrubPage = 500

type storedPayload struct {
	pos     int64
	id, typ string
	payload []byte
	keyID   sql.NullString
}

// scrubber takes one person's name out of the events in a buffer.
type scrubber struct {
	db     *sql.DB
	keys   *seal.Keys
	person directory.Entry
	// parcels are the ids of the parcels the person is named on, scans the
	// ids of those parcels' scans, names what was found to erase (the
	// directory's name and e-mail, names and phones labels print).
	parcels, scans, names map[string]bool
	photos                map[string]bool // of the person's parcels
	changed               int64
	rewritten             map[int64]bool // positions of the events changed
}

// run scrubs the events: first those that name the person by id (their
// parcels are noted), then the receipts of those parcels that are still
// the person's, then their scans.
func (sc *scrubber) run(ctx context.Context) error {
	needle, _ := json.Marshal(sc.person.ID)
	needle = bytes.ToLower(append([]byte(`"recipient_id":`), needle...))
	steps := []func(ev *event.Event, raw []byte) bool{
		func(ev *event.Event, raw []byte) bool {
			if !bytes.Contains(bytes.ToLower(raw), needle) || !strings.EqualFold(ev.RecipientID, sc.person.ID) {
				return false
			}
			switch {
			case ev.Type == event.TypeParcelReceived:
				sc.parcels[ev.ID] = true
			case ev.ParcelID != "":
				sc.parcels[ev.ParcelID] = true
			}
			changed := ev.RecipientName != ""
			ev.RecipientName = ""
			return sc.scrubTyped(ev) || changed
		},
		func(ev *event.Event, _ []byte) bool {
			if ev.Type != event.TypeParcelReceived || !sc.parcels[ev.ID] {
				return false
			}
			if ev.ScanID != "" {
				sc.scans[ev.ScanID] = true
			}
			// The recipient typed or scanned for the parcel stood for the
			// person, whatever it says.
			changed := sc.dropRecipient(ev)
			return sc.scrubParcel(ev) || changed
		},
		func(ev *event.Event, _ []byte) bool {
			// The photos of the person's parcels (their labels print the
			// name; a hand-over photo may show the person) are removed.
			if p := ev.ParcelID; p != "" && sc.parcels[p] || ev.Type == event.TypeParcelReceived && sc.parcels[ev.ID] {
				for _, ph := range ev.Photos {
					sc.photos[ph.SHA256] = true
				}
			}
			if ev.Type != event.TypeScan || !sc.scans[ev.ID] {
				return false
			}
			changed := sc.dropRecipient(ev)
			values := personalValues(barcode.Classify(ev.Barcode))
			for _, v := range values {
				sc.names[v] = true
				if bytes.Contains(ev.Barcode, []byte(v)) {
					ev.Barcode, changed = bytes.ReplaceAll(ev.Barcode, []byte(v), []byte(redacted(v))), true
				}
			}
			return changed
		},
	}
	for i, step := range steps {
		if i == 1 {
			if err := sc.keepOwnParcels(ctx); err != nil {
				return err
			}
		}
		after := int64(0)
		for {
			page, err := readPage(ctx, sc.db, after)
			if err != nil {
				return err
			}
			var edits []storedPayload
			for _, r := range page {
				after = r.pos
				b := r.payload
				if r.keyID.Valid {
					if sc.keys == nil {
						return fmt.Errorf("event %s is sealed and no storage.encryption_key_file is configured", r.id)
					}
					if b, err = sc.keys.Open(r.keyID.String, r.id, b); err != nil {
						return fmt.Errorf("event %s: %w", r.id, err)
					}
				}
				ev, err := event.Decode(b)
				if err != nil || !step(&ev, b) {
					continue
				}
				out, err := ev.AppendJSON(nil)
				if err != nil || bytes.Equal(out, b) {
					continue
				}
				if r.keyID.Valid {
					out = sc.keys.Seal(r.id, out)
					r.keyID = sql.NullString{String: sc.keys.Current(), Valid: true}
				}
				r.payload = out
				edits = append(edits, r)
			}
			if len(edits) > 0 {
				if err := writePage(ctx, sc.db, edits); err != nil {
					return err
				}
				for _, e := range edits {
					if !sc.rewritten[e.pos] {
						sc.rewritten[e.pos] = true
						sc.changed++
					}
				}
			}
			if len(page) < scrubPage {
				break
			}
		}
	}
	return nil
}

// keepOwnParcels drops from the parcels noted those assigned to someone
// else since (their labels and texts are the other person's); a parcel
// whose state was pruned stays.
func (sc *scrubber) keepOwnParcels(ctx context.Context) error {
	for id := range sc.parcels {
		var detail []byte
		var keyID sql.NullString
		err := sc.db.QueryRowContext(ctx, "SELECT detail, key_id FROM parcels WHERE id = ?", id).Scan(&detail, &keyID)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return err
		}
		if keyID.Valid {
			if sc.keys == nil {
				return fmt.Errorf("parcel %s is sealed and no storage.encryption_key_file is configured", id)
			}
			if detail, err = sc.keys.Open(keyID.String, parcelSealID(id), detail); err != nil {
				return fmt.Errorf("parcel %s: %w", id, err)
			}
		}
		var p Parcel
		if err := json.Unmarshal(detail, &p); err != nil {
			return fmt.Errorf("parcel %s: %w", id, err)
		}
		if p.Person != "" && !strings.EqualFold(p.Person, sc.person.ID) {
			delete(sc.parcels, id)
		}
	}
	return nil
}

// scrubParcel takes the person's name and phone out of a parcel's label
// (its fields and its raw bytes) and a name typed in for them.
func (sc *scrubber) scrubParcel(ev *event.Event) bool {
	changed := sc.scrubTyped(ev)
	p := ev.Parcel
	if p == nil {
		return changed
	}
	raw := []byte(p.Raw)
	if p.RawB64 != "" {
		if b, err := base64.StdEncoding.DecodeString(p.RawB64); err == nil {
			raw = b
		}
	}
	// The raw bytes say what the label printed even where the event's
	// fields left it out (directory.privacy id).
	values := personalValues(barcode.Classify(raw))
	if p.Label != nil {
		l := *p.Label
		if l.ShipTo != nil && l.ShipTo.Name != "" {
			values = append(values, l.ShipTo.Name)
			st := *l.ShipTo
			st.Name = ""
			l.ShipTo, changed = &st, true
		}
		l.GS1, changed = withoutPersonal(l.GS1, changed)
		p.Label = &l
	}
	p.GS1, changed = withoutPersonal(p.GS1, changed)
	for _, v := range values {
		sc.names[v] = true
		if strings.Contains(p.Raw, v) {
			p.Raw, changed = strings.ReplaceAll(p.Raw, v, redacted(v)), true
		}
		if bytes.Contains(raw, []byte(v)) && p.RawB64 != "" {
			raw = bytes.ReplaceAll(raw, []byte(v), []byte(redacted(v)))
			p.RawB64, changed = base64.StdEncoding.EncodeToString(raw), true
		}
	}
	return changed
}

// dropRecipient takes the recipient text out of an event of the person's
// parcel.
func (sc *scrubber) dropRecipient(ev *event.Event) bool {
	if ev.Recipient == "" {
		return false
	}
	sc.names[ev.Recipient] = true
	ev.Recipient = ""
	return true
}

// scrubTyped takes a name typed in for the person (a manual entry's
// recipient) out of an event: text the person alone fits.
func (sc *scrubber) scrubTyped(ev *event.Event) bool {
	if ev.Recipient == "" {
		return false
	}
	if _, how, _ := directory.NewIndex([]directory.Entry{{ID: sc.person.ID, Name: sc.person.Name, Active: true}}).Resolve(ev.Recipient); how == directory.MatchExact || how == directory.MatchFuzzy {
		sc.names[ev.Recipient] = true
		ev.Recipient = ""
		return true
	}
	return false
}

// personalAIs are the GS1 AIs that name or reach a person: the ship-to
// contact name and phone.
var personalAIs = []string{"4301", "4308"}

// personalValues are the person's name and phone a code carries.
func personalValues(r barcode.Result) []string {
	var out []string
	for _, m := range []map[string]string{r.GS1, labelGS1(r.Label)} {
		for _, ai := range personalAIs {
			if v := m[ai]; strings.Trim(v, "*") != "" { // "***": erased already
				out = append(out, v)
			}
		}
	}
	return out
}

func labelGS1(l *barcode.Label) map[string]string {
	if l == nil {
		return nil
	}
	return l.GS1
}

// withoutPersonal returns m without the personal AIs (a copy when it had
// any), and whether it had any.
func withoutPersonal(m map[string]string, changed bool) (map[string]string, bool) {
	had := false
	for _, ai := range personalAIs {
		_, ok := m[ai]
		had = had || ok
	}
	if !had {
		return m, changed
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !slices.Contains(personalAIs, k) {
			out[k] = v
		}
	}
	return out, true
}

func readPage(ctx context.Context, db *sql.DB, after int64) ([]storedPayload, error) {
	rows, err := db.QueryContext(ctx, "SELECT pos, id, type, payload, key_id FROM events WHERE pos > ? ORDER BY pos LIMIT ?", after, scrubPage)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []storedPayload
	for rows.Next() {
		var r storedPayload
		if err := rows.Scan(&r.pos, &r.id, &r.typ, &r.payload, &r.keyID); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func writePage(ctx context.Context, db *sql.DB, edits []storedPayload) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("rewrite events: %w", err)
	}
	defer tx.Rollback()
	for _, r := range edits {
		var keyID driver.Value
		if r.keyID.Valid {
			keyID = r.keyID.String
		}
		if _, err := tx.ExecContext(ctx, "UPDATE events SET payload = ?, key_id = ? WHERE pos = ?", r.payload, keyID, r.pos); err != nil {
			return fmt.Errorf("rewrite event %s: %w", r.id, err)
		}
		if r.typ == string(event.TypeScan) { // a scan not resolved yet keeps its copy there
			if _, err := tx.ExecContext(ctx, "UPDATE unresolved SET payload = ?, key_id = ? WHERE scan_id = ?", r.payload, keyID, r.id); err != nil {
				return fmt.Errorf("rewrite scan %s: %w", r.id, err)
			}
		}
	}
	return tx.Commit()
}

// redacted is as many asterisks as name has bytes, so that fixed-length
// fields of a label keep their length.
func redacted(name string) string { return strings.Repeat("*", len(name)) }

func bumpDirectoryVersion(ctx context.Context, tx *sql.Tx) (int64, error) {
	var v int64
	var s string
	err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'directory_version'").Scan(&s)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("directory version: %w", err)
	}
	if s != "" {
		v, _ = strconv.ParseInt(s, 10, 64)
	}
	v++
	if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO meta(key, value) VALUES ('directory_version', ?)", strconv.FormatInt(v, 10)); err != nil {
		return 0, fmt.Errorf("directory version: %w", err)
	}
	return v, nil
}

// LoadDirectory reads the directory of the buffer at path.
func LoadDirectory(ctx context.Context, path string, keys *seal.Keys) ([]directory.Entry, int64, error) {
	db, err := openDirectory(ctx, path)
	if err != nil {
		return nil, 0, err
	}
	defer db.Close()
	return readDirectory(ctx, db, keys)
}

// DirectoryVersion is the version of the directory in the buffer: it
// changes with every import and erasure.
func (o *Outbox) DirectoryVersion(ctx context.Context) (int64, error) {
	const q = "SELECT value FROM meta WHERE key = 'directory_version'"
	o.dirVersionOnce.Do(func() {
		// Prepared once, not per call; where that fails, each call
		// prepares its own.
		var err error
		if o.dirVersion, err = o.rdb.PrepareContext(context.Background(), q); err != nil {
			o.log.Warn("prepare the directory version's query; each read prepares its own", "err", err)
		}
	})
	var s string
	var err error
	if o.dirVersion != nil {
		err = o.dirVersion.QueryRowContext(ctx).Scan(&s)
	} else {
		err = o.rdb.QueryRowContext(ctx, q).Scan(&s)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("directory version: %w", err)
	}
	return strconv.ParseInt(s, 10, 64)
}

// Directory reads the directory and its version.
func (o *Outbox) Directory(ctx context.Context) ([]directory.Entry, int64, error) {
	return readDirectory(ctx, o.rdb, o.opts.Seal)
}

// checkKeyIDs refuses keys that do not hold every key the buffer's rows
// are sealed with: a directory sealed with another key would be one the
// daemon cannot read.
func checkKeyIDs(ctx context.Context, db *sql.DB, keys *seal.Keys) error {
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT key_id FROM events WHERE key_id IS NOT NULL
		UNION SELECT DISTINCT key_id FROM parcels WHERE key_id IS NOT NULL
		UNION SELECT DISTINCT key_id FROM directory WHERE key_id IS NOT NULL`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		if keys == nil {
			return fmt.Errorf("the buffer is sealed with key %q and the configuration sets no storage.encryption_key_file", id)
		}
		if !keys.Has(id) {
			return fmt.Errorf("the buffer is sealed with key %q, which storage.encryption_key_file lacks", id)
		}
	}
	return rows.Err()
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func readDirectory(ctx context.Context, db querier, keys *seal.Keys) ([]directory.Entry, int64, error) {
	var version int64
	var s string
	if err := db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'directory_version'").Scan(&s); err == nil {
		version, _ = strconv.ParseInt(s, 10, 64)
	}
	rows, err := db.QueryContext(ctx, "SELECT id, entry, key_id FROM directory ORDER BY id")
	if err != nil {
		return nil, 0, fmt.Errorf("read directory: %w", err)
	}
	defer rows.Close()
	var out []directory.Entry
	for rows.Next() {
		var id string
		var b []byte
		var keyID sql.NullString
		if err := rows.Scan(&id, &b, &keyID); err != nil {
			return nil, 0, fmt.Errorf("read directory: %w", err)
		}
		if keyID.Valid {
			if keys == nil {
				return nil, 0, fmt.Errorf("read directory: entry %s is sealed and no storage.encryption_key_file is configured", id)
			}
			if b, err = keys.Open(keyID.String, personSealID(id), b); err != nil {
				return nil, 0, fmt.Errorf("read directory: entry %s: %w", id, err)
			}
		}
		var e directory.Entry
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, 0, fmt.Errorf("read directory: entry %s: %w", id, err)
		}
		out = append(out, e)
	}
	return out, version, rows.Err()
}
