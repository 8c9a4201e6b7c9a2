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
	"strconv"
	"strings"

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
	return replaceDirectory(ctx, db, keys, entries, nil)
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

// ForgetPerson removes one person from the directory at once (an erasure
// request). First the person's name is taken out of every event in the
// buffer that names them by id (recipient_name, the name a 2D label
// printed, also in the label's raw bytes and in its scan), a page of
// events per transaction; then the entry is deleted, overwritten in the
// database file, and the WAL is checkpointed so that no copy stays there.
// It returns how many events it changed. Interrupted, it can be run again.
func ForgetPerson(ctx context.Context, path string, keys *seal.Keys, id string) (int64, error) {
	db, err := openDirectory(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var entry []byte
	var keyID sql.NullString
	err = db.QueryRowContext(ctx, "SELECT entry, key_id FROM directory WHERE id = ?", id).Scan(&entry, &keyID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("forget %s: %w", id, ErrNoPerson)
	}
	if err != nil {
		return 0, fmt.Errorf("forget %s: %w", id, err)
	}
	if keyID.Valid {
		if keys == nil {
			return 0, fmt.Errorf("forget %s: the entry is sealed and no storage.encryption_key_file is configured", id)
		}
		if entry, err = keys.Open(keyID.String, personSealID(id), entry); err != nil {
			return 0, fmt.Errorf("forget %s: %w", id, err)
		}
	}
	var e directory.Entry
	if err := json.Unmarshal(entry, &e); err != nil {
		return 0, fmt.Errorf("forget %s: %w", id, err)
	}
	changed, err := scrubEvents(ctx, db, keys, e)
	if err != nil {
		return changed, fmt.Errorf("forget %s: %w", id, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return changed, fmt.Errorf("forget %s: %w", id, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "DELETE FROM directory WHERE id = ?", id); err != nil {
		return changed, fmt.Errorf("forget %s: %w", id, err)
	}
	if _, err := bumpDirectoryVersion(ctx, tx); err != nil {
		return changed, err
	}
	if err := tx.Commit(); err != nil {
		return changed, fmt.Errorf("forget %s: %w", id, err)
	}
	// Copies of the name can stay in pages SQLite freed earlier (a row
	// rewritten when it was marked sent leaves its old bytes behind):
	// VACUUM writes the live rows into a new file, and the checkpoint
	// lets the WAL start over. A running daemon's readers may hold the WAL
	// back until its own next checkpoint.
	if _, err := db.ExecContext(ctx, "VACUUM"); err != nil {
		return changed, fmt.Errorf("forget %s: vacuum: %w", id, err)
	}
	var busy, logPages, done int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil {
		return changed, fmt.Errorf("forget %s: checkpoint: %w", id, err)
	}
	if found, err := fileHolds(path, e.Name); err != nil {
		return changed, fmt.Errorf("forget %s: check the buffer: %w", id, err)
	} else if found {
		return changed, fmt.Errorf("forget %s: %w", id, ErrNameRemains)
	}
	return changed, nil
}

// ErrNameRemains is ForgetPerson's answer when the person's name is still
// in the buffer file after the entry and the names in events naming them
// by id are gone: text typed in by a clerk (a manual entry's recipient)
// holds it. The person is forgotten all the same.
var ErrNameRemains = errors.New("the name still appears in the buffer, in text typed in at the page (events that do not name the person by id)")

// fileHolds reports whether the file at path holds text, reading it in
// blocks.
func fileHolds(path, text string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	needle := []byte(text)
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

// scrubPage is how many events scrubEvents reads and rewrites at a time.
const scrubPage = 500

type storedPayload struct {
	pos     int64
	id, typ string
	payload []byte
	keyID   sql.NullString
}

// scrubEvents takes a person's name out of the events naming them by id,
// and out of the scans of their 2D labels. Payloads are decoded and
// encoded again with the name left out; everything else stays as it was.
func scrubEvents(ctx context.Context, db *sql.DB, keys *seal.Keys, person directory.Entry) (int64, error) {
	idField, _ := json.Marshal(person.ID)
	needle := append([]byte(`"recipient_id":`), idField...)
	labelNames := map[string]string{} // scan id -> the name its label printed
	var changed int64
	for pass := 0; pass < 2; pass++ {
		after := int64(0)
		for {
			page, err := readPage(ctx, db, after, pass == 1)
			if err != nil {
				return changed, err
			}
			var edits []storedPayload
			for _, r := range page {
				after = r.pos
				b := r.payload
				if r.keyID.Valid {
					if keys == nil {
						return changed, fmt.Errorf("event %s is sealed and no storage.encryption_key_file is configured", r.id)
					}
					if b, err = keys.Open(r.keyID.String, r.id, b); err != nil {
						return changed, fmt.Errorf("event %s: %w", r.id, err)
					}
				}
				var out []byte
				if pass == 0 {
					out = scrubNamed(b, needle, person.ID, labelNames)
				} else if name, ok := labelNames[r.id]; ok {
					out = scrubScan(b, name)
				}
				if out == nil {
					continue
				}
				if r.keyID.Valid {
					out = keys.Seal(r.id, out)
					r.keyID = sql.NullString{String: keys.Current(), Valid: true}
				}
				r.payload = out
				edits = append(edits, r)
			}
			if len(edits) > 0 {
				if err := writePage(ctx, db, edits); err != nil {
					return changed, err
				}
				changed += int64(len(edits))
			}
			if len(page) < scrubPage {
				break
			}
		}
		if len(labelNames) == 0 {
			break
		}
	}
	return changed, nil
}

func readPage(ctx context.Context, db *sql.DB, after int64, scans bool) ([]storedPayload, error) {
	q := "SELECT pos, id, type, payload, key_id FROM events WHERE pos > ? ORDER BY pos LIMIT ?"
	if scans {
		q = "SELECT pos, id, type, payload, key_id FROM events WHERE pos > ? AND type = 'scan' ORDER BY pos LIMIT ?"
	}
	rows, err := db.QueryContext(ctx, q, after, scrubPage)
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
	}
	return tx.Commit()
}

// scrubNamed returns an event naming the person by id without their name,
// or nil when it does not name them. The name a 2D label printed is
// remembered by the id of the label's scan.
func scrubNamed(payload, needle []byte, id string, labelNames map[string]string) []byte {
	if !bytes.Contains(payload, needle) {
		return nil
	}
	ev, err := event.Decode(payload)
	if err != nil || ev.RecipientID != id {
		return nil
	}
	ev.RecipientName = ""
	if p := ev.Parcel; p != nil && p.Label != nil {
		l := *p.Label
		if l.ShipTo != nil {
			st := *l.ShipTo
			if st.Name != "" {
				if ev.ScanID != "" {
					labelNames[ev.ScanID] = st.Name
				}
				p.Raw = strings.ReplaceAll(p.Raw, st.Name, redacted(st.Name))
				if p.RawB64 != "" {
					if raw, err := base64.StdEncoding.DecodeString(p.RawB64); err == nil {
						p.RawB64 = base64.StdEncoding.EncodeToString(bytes.ReplaceAll(raw, []byte(st.Name), []byte(redacted(st.Name))))
					}
				}
			}
			st.Name = ""
			l.ShipTo = &st
		}
		if l.GS1["4301"] != "" || l.GS1["4308"] != "" {
			gs1 := make(map[string]string, len(l.GS1))
			for k, v := range l.GS1 {
				if k != "4301" && k != "4308" { // the name and the phone
					gs1[k] = v
				}
			}
			l.GS1 = gs1
		}
		p.Label = &l
	}
	out, err := ev.AppendJSON(nil)
	if err != nil || bytes.Equal(out, payload) {
		return nil
	}
	return out
}

// scrubScan returns a scan with the name its 2D label printed replaced by
// asterisks, or nil when the scan does not hold it.
func scrubScan(payload []byte, name string) []byte {
	ev, err := event.Decode(payload)
	if err != nil || !bytes.Contains(ev.Barcode, []byte(name)) {
		return nil
	}
	ev.Barcode = bytes.ReplaceAll(ev.Barcode, []byte(name), []byte(redacted(name)))
	out, err := ev.AppendJSON(nil)
	if err != nil {
		return nil
	}
	return out
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
	var s string
	err := o.rdb.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'directory_version'").Scan(&s)
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
