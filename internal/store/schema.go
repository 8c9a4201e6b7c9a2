package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// migrations are applied in order; PRAGMA user_version records how many ran.
// Never edit a released migration: append a new one.
var migrations = []string{
	// 1: events and meta.
	`CREATE TABLE events (
		pos     INTEGER PRIMARY KEY AUTOINCREMENT, -- publish order, never reused
		epoch   TEXT    NOT NULL,
		seq     INTEGER NOT NULL,
		id      TEXT    NOT NULL,                  -- UUIDv7, unique by construction
		type    TEXT    NOT NULL,
		ts      INTEGER NOT NULL,                  -- event time, unix ms
		payload BLOB    NOT NULL,                  -- the exact bytes published
		sent_at INTEGER                            -- unix ms of the PUBACK; NULL while pending
	);
	CREATE INDEX events_pending ON events(pos) WHERE sent_at IS NULL;
	CREATE INDEX events_sent ON events(sent_at) WHERE sent_at IS NOT NULL;
	CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;`,
	// 2: scans at a station that no business event has resolved yet. A row
	// is written with its scan and deleted in the transaction of the event
	// that resolves it, so a restart finds exactly the unfinished work.
	`CREATE TABLE unresolved (
		scan_id TEXT    PRIMARY KEY,
		station TEXT    NOT NULL,
		pos     INTEGER NOT NULL,
		payload BLOB    NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX unresolved_station ON unresolved(station, pos);`,
	// 3: nonces of remote commands already run, kept until they expire, so
	// a replay is refused even after a restart.
	`CREATE TABLE nonces (
		nonce   TEXT    PRIMARY KEY,
		expires INTEGER NOT NULL
	) WITHOUT ROWID;`,
	// 4: payloads sealed at rest name their key (NULL: plaintext).
	`ALTER TABLE events ADD COLUMN key_id TEXT;
	ALTER TABLE unresolved ADD COLUMN key_id TEXT;`,
	// 5: events without AUTOINCREMENT, whose sqlite_sequence row was one
	// more page written by every commit. The writer hands out positions
	// itself; the high-water mark AUTOINCREMENT kept moves to meta
	// last_pos. Pruning always keeps the newest row, which carries the
	// last position, the epoch's last seq and the last id (see loadLast),
	// so the meta table no longer changes with every commit.
	`CREATE TABLE events_v5 (
		pos     INTEGER PRIMARY KEY,               -- publish order, never reused
		epoch   TEXT    NOT NULL,
		seq     INTEGER NOT NULL,
		id      TEXT    NOT NULL,                  -- UUIDv7, unique by construction
		type    TEXT    NOT NULL,
		ts      INTEGER NOT NULL,                  -- event time, unix ms
		payload BLOB    NOT NULL,                  -- the exact bytes published
		sent_at INTEGER,                           -- unix ms of the PUBACK; NULL while pending
		key_id  TEXT                               -- sealing key; NULL: plaintext
	);
	INSERT INTO events_v5 SELECT pos, epoch, seq, id, type, ts, payload, sent_at, key_id FROM events;
	INSERT OR REPLACE INTO meta(key, value)
		SELECT 'last_pos', seq FROM sqlite_sequence WHERE name = 'events';
	DROP TABLE events;
	ALTER TABLE events_v5 RENAME TO events;
	CREATE INDEX events_pending ON events(pos) WHERE sent_at IS NULL;
	CREATE INDEX events_sent ON events(sent_at) WHERE sent_at IS NOT NULL;`,
	// 6: the fleet's alerts, so that a restart or a config switch neither
	// raises an active alert again nor forgets to clear one. A row is the
	// latest state of its key: active (raised) or cleared, and whether that
	// state still waits for the link. A cleared row goes once its clear
	// was published.
	`CREATE TABLE alerts (
		key     TEXT    PRIMARY KEY,
		body    BLOB    NOT NULL,                  -- the alert message, as published
		active  INTEGER NOT NULL,                  -- 1 raised, 0 cleared
		unsent  INTEGER NOT NULL,                  -- 1 while this state waits for the link
		version INTEGER NOT NULL                   -- order of changes; a publish marks only the state it carried
	) WITHOUT ROWID;`,
	// 7: labels waiting for their printer, so that a label queued while
	// the printer cannot print survives a restart. A job is deleted in the
	// transaction of its label.printed event.
	`CREATE TABLE print_jobs (
		id        INTEGER PRIMARY KEY,
		station   TEXT    NOT NULL,
		parcel_id TEXT    NOT NULL,
		data      BLOB    NOT NULL,                -- the ZPL, sealed like payloads when encryption is on
		key_id    TEXT,                            -- sealing key; NULL: plaintext
		queued_at INTEGER NOT NULL                 -- unix ms
	);
	CREATE INDEX print_jobs_station ON print_jobs(station, id);`,
	// 8: every parcel's state, written in the transaction of each event
	// that changes it, and the action keys of the page, so that an action
	// sent again is committed once. The lookup columns hold the values in
	// clear, or their keyed hash when payloads are sealed; detail is the
	// whole state (JSON), sealed like payloads.
	`CREATE TABLE parcels (
		id            TEXT    PRIMARY KEY,         -- the parcel.received event id
		state         TEXT    NOT NULL,
		code_tag      TEXT    NOT NULL,            -- tracking number
		recipient_tag TEXT    NOT NULL,
		location_tag  TEXT    NOT NULL,
		received_at   INTEGER NOT NULL,            -- unix ms
		updated_at    INTEGER NOT NULL,
		closed_at     INTEGER,                     -- delivered, returned or forwarded; NULL while open
		detail        BLOB    NOT NULL,
		key_id        TEXT
	);
	CREATE INDEX parcels_code ON parcels(code_tag);
	CREATE INDEX parcels_received ON parcels(received_at);
	CREATE INDEX parcels_open_recipient ON parcels(recipient_tag, received_at) WHERE closed_at IS NULL;
	CREATE INDEX parcels_open_location ON parcels(location_tag, received_at) WHERE closed_at IS NULL;
	CREATE INDEX parcels_open ON parcels(received_at) WHERE closed_at IS NULL;
	CREATE INDEX parcels_closed ON parcels(closed_at) WHERE closed_at IS NOT NULL;
	CREATE TABLE action_keys (
		key       TEXT    PRIMARY KEY,
		event_id  TEXT    NOT NULL,                -- the event committed: the action's, or the audit of its refusal
		epoch     TEXT    NOT NULL,
		seq       INTEGER NOT NULL,
		at        INTEGER NOT NULL,                -- unix ms of the commit
		request   TEXT    NOT NULL,                -- hash of the request, to tell a retry from a reuse
		type      TEXT    NOT NULL,                -- the action's event type
		parcel_id TEXT    NOT NULL,
		status    INTEGER NOT NULL,                -- the answer: 200, or the refusal's HTTP status
		code      TEXT    NOT NULL,                -- the refusal's code, '' for 200
		state     TEXT    NOT NULL                 -- the parcel's state of a refusal
	) WITHOUT ROWID;
	CREATE INDEX action_keys_at ON action_keys(at);
	CREATE TABLE station_modes (
		station TEXT    PRIMARY KEY,               -- a scan mode set on the page, until it ends
		mode    TEXT    NOT NULL,
		at      INTEGER NOT NULL,                  -- unix ms when it was set
		seq     INTEGER NOT NULL                   -- the last seq committed then: later scans are in the mode
	) WITHOUT ROWID;
	CREATE TABLE directory (
		id      TEXT    PRIMARY KEY,               -- the person's directory id
		entry   BLOB    NOT NULL,                  -- the entry (JSON), sealed like payloads when encryption is on
		key_id  TEXT
	) WITHOUT ROWID;`,
	// 9: the directory person each parcel is for, and the parcels that
	// need one.
	`ALTER TABLE parcels ADD COLUMN person_tag TEXT NOT NULL DEFAULT '';
	ALTER TABLE parcels ADD COLUMN needs_recipient INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX parcels_open_person ON parcels(person_tag, received_at) WHERE closed_at IS NULL;
	CREATE INDEX parcels_needs_recipient ON parcels(received_at) WHERE needs_recipient = 1 AND closed_at IS NULL;`,
	// 10: photos and other blobs events refer to: the file is written
	// before the event, the row in the event's transaction; acked counts
	// the chunks the broker acknowledged, so an upload resumes there.
	`CREATE TABLE blobs (
		sha256       TEXT    PRIMARY KEY,
		size         INTEGER NOT NULL,
		content_type TEXT    NOT NULL,
		kind         TEXT    NOT NULL,
		stored_at    INTEGER NOT NULL,             -- unix ms of the event's commit
		acked        INTEGER NOT NULL DEFAULT 0,   -- chunks acknowledged by the broker
		sent_at      INTEGER                       -- all chunks acknowledged; NULL until then
	) WITHOUT ROWID;
	CREATE INDEX blobs_pending ON blobs(stored_at) WHERE sent_at IS NULL;
	CREATE INDEX blobs_sent ON blobs(sent_at) WHERE sent_at IS NOT NULL;`,
	// 11: the directory table for buffers at schema 8 to 10 that lack it:
	// builds of schema 8 made before the directory existed created schema
	// 8 without it, and such a buffer did not open ("no such table:
	// directory").
	`CREATE TABLE IF NOT EXISTS directory (
		id      TEXT    PRIMARY KEY,               -- the person's directory id
		entry   BLOB    NOT NULL,                  -- the entry (JSON), sealed like payloads when encryption is on
		key_id  TEXT
	) WITHOUT ROWID;`,
	// 12: what was sent moves out of the event rows. Marking events sent
	// rewrote every page holding them and their index entries: during a
	// drain some 5,000 pages of WAL a second, which the scans' fsyncs
	// waited behind. A row of sent_marks says that every event at or
	// below pos was acknowledged by at; the newest row's pos is the
	// watermark, and one row is written per minute of acknowledgements.
	// Acknowledgements above the watermark (out of order) are held in
	// memory until it passes them, and are sent again after a restart.
	// The watermark starts below the first unsent event, so events sent
	// out of order before the upgrade are sent again once. The rows
	// carry the latest sent_at at or below their pos, a row per minute,
	// so retention goes on as before. events.sent_at is no longer written.
	`CREATE TABLE sent_marks (
		pos INTEGER PRIMARY KEY,                   -- every event at or below was acknowledged
		at  INTEGER NOT NULL                       -- unix ms by which they were
	);
	INSERT INTO sent_marks(pos, at)
		SELECT max(pos), max(at) FROM (
			SELECT pos, max(coalesce(sent_at, 0)) OVER (ORDER BY pos) AS at FROM events
			WHERE pos < coalesce((SELECT min(pos) FROM events WHERE sent_at IS NULL), 9223372036854775807)
		) GROUP BY at / 60000;
	INSERT OR IGNORE INTO sent_marks(pos, at)
		SELECT coalesce((SELECT min(pos) FROM events WHERE sent_at IS NULL) - 1,
			max(coalesce((SELECT max(pos) FROM events), 0), coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_pos'), 0))),
			coalesce((SELECT max(at) FROM sent_marks), 0)
		WHERE (SELECT coalesce(max(pos), 0) FROM sent_marks) < coalesce((SELECT min(pos) FROM events WHERE sent_at IS NULL) - 1,
			max(coalesce((SELECT max(pos) FROM events), 0), coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_pos'), 0)));
	DELETE FROM sent_marks WHERE pos <= 0;
	DROP INDEX IF EXISTS events_pending;
	DROP INDEX IF EXISTS events_sent;`,
	// 13: the waiting summary groups the open parcels of no directory
	// person by recipient: along this index, without reading each row.
	`CREATE INDEX IF NOT EXISTS parcels_open_waiting ON parcels(person_tag, recipient_tag, received_at) WHERE closed_at IS NULL;`,
}

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(migrations)

// migrate brings the schema up to date, logging each migration it runs:
// one that rebuilds a table takes seconds on a large backlog.
// It returns the version the database had (0: it was new).
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) (from int, err error) {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return v, fmt.Errorf("database schema version %d is newer than this build understands (%d): refusing to touch it", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		began := time.Now()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return v, fmt.Errorf("migrate to schema %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return v, fmt.Errorf("migrate to schema %d: %w", i+1, err)
		}
		if i+1 == 8 && v > 0 {
			// A buffer from before schema 8 has events but no parcel
			// states: the marker, committed with the schema that brings
			// the table, stays until the states are rebuilt, so that a
			// power cut between the two does not leave them empty.
			if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO meta(key, value) VALUES ('parcels_rebuild', '1')"); err != nil {
				tx.Rollback()
				return v, fmt.Errorf("migrate to schema %d: %w", i+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return v, fmt.Errorf("migrate to schema %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return v, fmt.Errorf("migrate to schema %d: %w", i+1, err)
		}
		if v > 0 {
			log.Info("buffer schema migrated", "from", i, "to", i+1, "took", time.Since(began).Round(time.Millisecond))
		}
	}
	return v, nil
}
