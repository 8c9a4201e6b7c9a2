package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
)

// LabelJob is a label waiting for its printer.
type LabelJob struct {
	ID       int64
	Station  string
	ParcelID string
	// Data is the label as sent to the printer.
	Data   []byte
	Queued time.Time
	// Err is set, and Data nil, when the job cannot be read (its sealing
	// key is gone): the caller drops it.
	Err error

	keyID driver.Value
}

// errNoLabelJob is LabelPrinted's answer for a job that is not queued
// (any more): its label was recorded already.
var errNoLabelJob = errors.New("no such label job: recorded already")

// MaxLabelJobs is how many labels may wait for the printers of a box;
// beyond it QueueLabel refuses and AppendWithLabel queues none (the parcel is recorded all the same; its
// label is reprinted from the page).
const MaxLabelJobs = 1000

// sealID binds a sealed label to its job, as an event id binds a payload.
func sealID(station, parcelID string, queued time.Time) string {
	return fmt.Sprintf("label/%s/%s/%d", station, parcelID, queued.UnixMilli())
}

// QueueLabel keeps a label for a station's printer until LabelPrinted or
// DropLabel, and returns its job id.
func (o *Outbox) QueueLabel(ctx context.Context, station, parcelID string, data []byte, queued time.Time) (int64, error) {
	var n int
	if err := o.rdb.QueryRowContext(ctx, "SELECT count(*) FROM print_jobs").Scan(&n); err == nil && n >= MaxLabelJobs {
		return 0, fmt.Errorf("queue label: %d labels already wait for their printers", n)
	}
	j := LabelJob{Station: station, ParcelID: parcelID, Data: data, Queued: queued}
	if o.opts.Seal != nil {
		j.Data, j.keyID = o.opts.Seal.Seal(sealID(station, parcelID, queued), data), o.opts.Seal.Current()
	}
	res, err := o.submit(ctx, request{kind: opLabelQueue, job: j})
	if err != nil {
		return 0, fmt.Errorf("queue label: %w", err)
	}
	return res.n, nil
}

// labelRequest is the label of an event appended with AppendWithLabel.
type labelRequest struct {
	station string
	queued  time.Time
	render  func(id string) ([]byte, error)
}

// AppendWithLabel commits ev, as Append does, and in the same transaction
// queues the label render draws for it, given the event's id: the event
// and its label are recorded together or not at all, and one synced
// commit does for both. A label that cannot be drawn, or that finds MaxLabelJobs
// labels waiting, is not queued; the event is committed all the same,
// and returned with a *LabelError: a caller must not take that error for
// a failed commit (and append the event again). The job returned has the
// label as drawn, not sealed.
//
// render runs on the buffer's writer, inside its transaction: it must be
// quick, must not call the Outbox (the writer would wait for itself), and
// a panic in it is reported as the label's error.
func (o *Outbox) AppendWithLabel(ctx context.Context, ev event.Event, station string, queued time.Time, render func(id string) ([]byte, error)) (event.Event, LabelJob, error) {
	res, err := o.submit(ctx, request{kind: opAppend, ev: ev, label: &labelRequest{station: station, queued: queued, render: render}})
	if err != nil {
		if errors.Is(err, ErrFull) || isRefusal(err) {
			o.refused.Add(1)
		}
		return event.Event{}, LabelJob{}, fmt.Errorf("commit %s event: %w", ev.Type, err)
	}
	if res.jobErr != nil {
		return res.ev, LabelJob{}, &LabelError{Err: res.jobErr}
	}
	return res.ev, res.job, nil
}

// LabelError is a label AppendWithLabel did not queue, although its event
// was committed.
type LabelError struct{ Err error }

func (e *LabelError) Error() string { return "label not queued: " + e.Err.Error() }

// Unwrap returns why the label was not queued.
func (e *LabelError) Unwrap() error { return e.Err }

// queueLabelOf draws and inserts the label of the event id within the
// writer's transaction. A label that cannot be drawn, or finds the queue
// full, is returned with its Err set and nothing inserted; an error is the
// transaction's.
func (o *Outbox) queueLabelOf(l *labelRequest, id string) (LabelJob, error) {
	var n int64
	if _, err := o.wc.queryRow("SELECT count(*) FROM print_jobs", nil, &n); err != nil {
		return LabelJob{}, err
	}
	if n >= MaxLabelJobs {
		return LabelJob{Err: fmt.Errorf("%d labels already wait for their printers", n)}, nil
	}
	data, err := drawLabel(l.render, id)
	if err != nil {
		return LabelJob{Err: fmt.Errorf("draw label: %w", err)}, nil
	}
	j := LabelJob{Station: l.station, ParcelID: id, Data: data, Queued: l.queued}
	stored := data
	if o.opts.Seal != nil {
		stored, j.keyID = o.opts.Seal.Seal(sealID(j.Station, j.ParcelID, j.Queued), data), o.opts.Seal.Current()
	}
	res, err := o.wc.exec("INSERT INTO print_jobs(station, parcel_id, data, key_id, queued_at) VALUES (?,?,?,?,?)",
		j.Station, j.ParcelID, stored, j.keyID, j.Queued.UnixMilli())
	if err != nil {
		return LabelJob{}, err
	}
	j.ID, _ = res.LastInsertId()
	j.keyID = nil
	return j, nil
}

// drawLabel calls render, turning a panic into an error: the writer must
// not stop for a label.
func drawLabel(render func(id string) ([]byte, error), id string) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			data, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	return render(id)
}

// LabelPrinted commits a label.printed event and removes the job in the
// same transaction: a label is recorded as printed exactly once.
func (o *Outbox) LabelPrinted(ctx context.Context, jobID int64, ev event.Event) (event.Event, error) {
	res, err := o.submit(ctx, request{kind: opLabelPrinted, ev: ev, alert: AlertState{Version: jobID}})
	if err != nil {
		return event.Event{}, fmt.Errorf("commit %s event: %w", ev.Type, err)
	}
	return res.ev, nil
}

// DropLabel removes a job that will not be printed.
func (o *Outbox) DropLabel(ctx context.Context, jobID int64) error {
	if _, err := o.submit(ctx, request{kind: opLabelDrop, alert: AlertState{Version: jobID}}); err != nil {
		return fmt.Errorf("drop label: %w", err)
	}
	return nil
}

// LabelJobs returns the labels waiting for a station's printer, oldest
// first.
func (o *Outbox) LabelJobs(ctx context.Context, station string) ([]LabelJob, error) {
	rows, err := o.rdb.QueryContext(ctx, "SELECT id, parcel_id, data, key_id, queued_at FROM print_jobs WHERE station = ? ORDER BY id", station)
	if err != nil {
		return nil, fmt.Errorf("read label jobs: %w", err)
	}
	defer rows.Close()
	var out []LabelJob
	for rows.Next() {
		j := LabelJob{Station: station}
		var keyID sql.NullString
		var ms int64
		if err := rows.Scan(&j.ID, &j.ParcelID, &j.Data, &keyID, &ms); err != nil {
			return nil, fmt.Errorf("read label jobs: %w", err)
		}
		j.Queued = time.UnixMilli(ms)
		if keyID.Valid {
			if o.opts.Seal == nil {
				j.Data, j.Err = nil, fmt.Errorf("label job %d is sealed and no key is configured", j.ID)
				out = append(out, j)
				continue
			}
			if j.Data, err = o.opts.Seal.Open(keyID.String, sealID(station, j.ParcelID, j.Queued), j.Data); err != nil {
				j.Data, j.Err = nil, fmt.Errorf("label job %d: %w", j.ID, err)
			}
		}
		out = append(out, j)
	}
	return out, rows.Err()
}
