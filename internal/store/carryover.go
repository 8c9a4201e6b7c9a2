package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"
	"github.com/mailroomd/mailroomd/internal/event"
)

// A rolled-back update puts the buffer backed up before it back in place.
// The version on trial may have committed events meanwhile (scans go on
// while it fails to connect): SetAside keeps its buffer, and the next Open
// carries those events into the buffer put back, with their ids, seqs and
// bytes, so that nothing committed is lost and the seqs stay gapless.

// carryMarker is the file that names, one a line, the buffers set aside
// whose events are still to be carried over.
func carryMarker(path string) string { return path + ".carryover" }

// CarryOverMarker is the file that names the buffers SetAside kept for
// the buffer at path, until Open has carried their events over.
func CarryOverMarker(path string) string { return carryMarker(path) }

// carriedKey is the meta key that records a buffer set aside as carried;
// carriedUpTo the one that records how far into it a start got.
func carriedKey(from string) string  { return "carried:" + filepath.Base(from) }
func carriedUpTo(from string) string { return "carrying:" + filepath.Base(from) }

// SetAside moves the buffer at path, with its WAL and shared memory, to
// path.trial-<UTC time>, durably, and names it in path.carryover, so that
// the next Open of a buffer at path carries over the events it holds that
// the buffer then in place lacks. It returns the new name. The updater
// calls it before it puts the backup of a rolled-back update back.
func SetAside(path string, now time.Time) (string, error) {
	dst := path + ".trial-" + now.UTC().Format("20060102T150405.000Z")
	listed, err := readSalvageMarker(carryMarker(path))
	if err != nil {
		return "", fmt.Errorf("set aside buffer %s: %w", path, err)
	}
	listed = append(listed, dst)
	if err := durable.WriteFile(carryMarker(path), []byte(strings.Join(listed, "\n")+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("set aside buffer %s: %w", path, err)
	}
	if err := moveAside(path, dst); err != nil {
		return "", fmt.Errorf("set aside buffer %s: %w", path, err)
	}
	return dst, nil
}

// carried is an event read from a buffer set aside, as it was stored.
type carried struct {
	epoch, id, typ string
	seq, ts        int64
	payload        []byte
	keyID          sql.NullString
}

// carryChunk is how many events one transaction carries over.
const carryChunk = 1000

// carryOver carries the events of the buffers named in the carry-over
// marker into this one (Open, with the writer running). Per epoch, the
// events with a seq above the highest this buffer has are carried, in
// their order: a start cut in the middle carries the rest. A buffer set
// aside that cannot be read, or holds an event this version cannot open,
// is reported and left (its events from there on are not carried): the
// daemon starts without them rather than not at all.
func (o *Outbox) carryOver(ctx context.Context) (int, error) {
	marker := carryMarker(o.opts.Path)
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	froms, err := readSalvageMarker(marker) // those still there
	if err != nil {
		return 0, err
	}
	total := 0
	for _, from := range froms {
		var v string
		if o.rdb.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = ?", carriedKey(from)).Scan(&v) == nil {
			continue
		}
		n, err := o.carryFrom(ctx, from)
		total += n
		switch {
		case ctx.Err() != nil:
			return total, ctx.Err()
		case err != nil:
			o.log.Error("events of a version rolled back cannot be carried over; the buffer set aside is kept",
				"from", from, "carried", n, "err", err)
			if _, err := o.submit(ctx, request{kind: opCarry, text: carriedKey(from)}); err != nil {
				return total, err
			}
		case n > 0:
			o.log.Warn("events committed by a version rolled back carried over", "from", from, "events", n)
		default:
			o.log.Info("buffer of a version rolled back holds no event this one lacks", "from", from)
		}
	}
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		return total, err
	}
	return total, durable.SyncDir(filepath.Dir(marker))
}

// carryFrom carries the events of one buffer set aside. The version on
// trial went on from the positions of the buffer it was given, so its new
// events lie above this buffer's last position; one that started a new
// epoch (a salvage) starts its positions again, and is read whole.
func (o *Outbox) carryFrom(ctx context.Context, from string) (int, error) {
	src, err := sql.Open("sqlite3", "file:"+from+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return 0, err
	}
	defer src.Close()
	src.SetMaxOpenConns(1)
	var epoch string
	if err := src.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'epoch'").Scan(&epoch); err != nil {
		return 0, fmt.Errorf("read its epoch: %w", err)
	}
	var after int64
	var upTo string
	if o.rdb.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = ?", carriedUpTo(from)).Scan(&upTo) == nil {
		after, _ = strconv.ParseInt(upTo, 10, 64) // a start cut in the middle
	} else if epoch == o.epoch {
		after = o.lastPos
	}
	above := map[string]int64{o.epoch: o.lastSeq.Load()} // per epoch, the highest seq here
	n := 0
	for {
		chunk, last, err := readCarried(ctx, src, after)
		if err != nil {
			return n, err
		}
		if last == 0 {
			break
		}
		after = last
		keep := chunk[:0]
		for _, c := range chunk {
			h, known := above[c.epoch]
			if !known {
				if err := o.rdb.QueryRowContext(ctx, "SELECT coalesce(max(seq), 0) FROM events WHERE epoch = ?", c.epoch).Scan(&h); err != nil {
					return n, err
				}
				above[c.epoch] = h
			}
			if c.seq <= h {
				continue // this buffer has it
			}
			if _, err := o.open(c.keyID, c.id, c.payload); err != nil {
				// Stored, it would hold up every event after it.
				if len(keep) > 0 {
					if _, err := o.submit(ctx, request{kind: opCarry, carry: keep}); err != nil {
						return n, err
					}
					n += len(keep)
				}
				return n, fmt.Errorf("event %s (seq %d) cannot be opened: %w", c.id, c.seq, err)
			}
			above[c.epoch] = c.seq
			keep = append(keep, c)
		}
		if len(keep) > 0 {
			if _, err := o.submit(ctx, request{kind: opCarry, carry: keep, text: carriedUpTo(from), n: last}); err != nil {
				return n, err
			}
			n += len(keep)
		}
	}
	if _, err := o.submit(ctx, request{kind: opCarry, text: carriedKey(from)}); err != nil {
		return n, err
	}
	return n, nil
}

// readCarried reads the next events after a position, in order, and the
// last position read (0: none).
func readCarried(ctx context.Context, src *sql.DB, after int64) ([]carried, int64, error) {
	rows, err := src.QueryContext(ctx, "SELECT pos, epoch, seq, id, type, ts, payload, key_id FROM events WHERE pos > ? ORDER BY pos LIMIT ?",
		after, carryChunk)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []carried
	var last int64
	for rows.Next() {
		var c carried
		if err := rows.Scan(&last, &c.epoch, &c.seq, &c.id, &c.typ, &c.ts, &c.payload, &c.keyID); err != nil {
			return nil, 0, err
		}
		out = append(out, c)
	}
	return out, last, rows.Err()
}

// carryInWriter stores carried events in the writer's transaction as an
// append would, but with their own epoch, seq, id and bytes, and applies
// them to the parcel states and the scans left unresolved. It returns the
// last position and the newest id. An event that cannot be decoded is
// stored all the same (it is sent as it is, and opens: carryFrom checked
// that); only the states miss it.
func (o *Outbox) carryInWriter(chunk []carried, pos int64, lastID string) (int64, string, error) {
	for _, c := range chunk {
		pos++
		var keyID any
		if c.keyID.Valid {
			keyID = c.keyID.String
		}
		if _, err := o.wc.exec(insertEvent, pos, c.epoch, c.seq, c.id, c.typ, c.ts, c.payload, keyID); err != nil {
			return pos, lastID, err
		}
		lastID = max(lastID, c.id)
		plain, err := o.open(c.keyID, c.id, c.payload)
		if err != nil {
			o.log.Warn("carried event cannot be read; its parcel state is not updated", "id", c.id, "err", err)
			continue
		}
		ev, err := event.Decode(plain)
		if err != nil {
			o.log.Warn("carried event cannot be read; its parcel state is not updated", "id", c.id, "err", err)
			continue
		}
		if ev.Station != "" {
			if err := o.trackResolution(ev, pos, c.payload, keyID); err != nil {
				return pos, lastID, err
			}
		}
		for _, ph := range ev.Photos {
			if _, err := o.wc.exec("INSERT OR IGNORE INTO blobs(sha256, size, content_type, kind, stored_at) VALUES (?,?,?,?,?)",
				ph.SHA256, ph.Size, ph.ContentType, ph.Kind, c.ts); err != nil {
				return pos, lastID, err
			}
		}
		if parcelEvent(ev.Type) {
			state, err := o.checkParcel(&ev)
			var refused *RefusedError
			if errors.As(err, &refused) {
				continue
			}
			if err != nil {
				return pos, lastID, err
			}
			if err := o.applyParcel(&ev, state); err != nil {
				return pos, lastID, err
			}
		}
	}
	return pos, lastID, nil
}
