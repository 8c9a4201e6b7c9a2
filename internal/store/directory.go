package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mailroomd/mailroomd/internal/directory"
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
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("import directory: %w", err)
	}
	return v, nil
}

// ErrNoPerson is ForgetPerson's answer for an id the directory lacks.
var ErrNoPerson = errors.New("no person with that id in the directory")

// ForgetPerson removes one person from the directory at once (an erasure
// request): the row is overwritten in the database file, and the WAL is
// checkpointed so that no copy stays there either.
func ForgetPerson(ctx context.Context, path, id string) error {
	db, err := openDirectory(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("forget %s: %w", id, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "DELETE FROM directory WHERE id = ?", id)
	if err != nil {
		return fmt.Errorf("forget %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("forget %s: %w", id, ErrNoPerson)
	}
	if _, err := bumpDirectoryVersion(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("forget %s: %w", id, err)
	}
	// A checkpoint copies the overwritten page into the file and lets the
	// WAL start over; a running daemon's readers may hold it back until
	// its own next checkpoint.
	var busy, logPages, done int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil {
		return fmt.Errorf("forget %s: checkpoint: %w", id, err)
	}
	return nil
}

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
