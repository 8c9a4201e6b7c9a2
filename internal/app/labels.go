package app

import (
	"context"
	"errors"
	"log/slog"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/ocr"
	"github.com/mailroomd/mailroomd/internal/store"
)

// ConditionOCRUnavailable is raised when label photos should be read but
// Tesseract cannot be run.
const ConditionOCRUnavailable = "ocr.unavailable"

// labelJob is a label photo to read.
type labelJob struct{ parcel, sha string }

// labelReader reads the recipient off label photos, one at a time, off
// the scan path: a photo's upload never waits for it, nor a scan.
type labelReader struct {
	jobs      chan labelJob
	reader    *ocr.Reader
	blobs     *blobstore.Store
	store     *store.Outbox
	people    *people
	privacyID bool
	appliance string
	site      string
	clock     clock.Clock
	log       *slog.Logger
}

// add queues a label photo; a full queue drops it, with a warning.
func (l *labelReader) add(parcel, sha string) {
	select {
	case l.jobs <- labelJob{parcel: parcel, sha: sha}:
	default:
		l.log.Warn("label photo not read: too many waiting", "parcel", parcel, "sha256", sha)
	}
}

// Run reads label photos until ctx ends.
func (l *labelReader) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-l.jobs:
			if err := l.read(ctx, j); err != nil && ctx.Err() == nil {
				l.log.Warn("label photo not read", "parcel", j.parcel, "sha256", j.sha, "err", err)
			}
		}
	}
}

// read reads one label photo and records the recipient it names, for a
// parcel that has none yet.
func (l *labelReader) read(ctx context.Context, j labelJob) error {
	x, err := l.people.Index(ctx)
	if err != nil || x.Len() == 0 {
		return err // no directory: nobody to find
	}
	known := func() (store.Parcel, bool, error) {
		p, err := l.store.ParcelByID(ctx, j.parcel)
		return p, err == nil && p.Person != "" && p.Match != directory.MatchNone, err
	}
	// A parcel whose person is known is not read (the label says nothing
	// new); it is asked again after the reading, which takes a while.
	if _, ok, err := known(); ok || err != nil {
		if ok {
			l.log.Info("label photo not read: the parcel's person is known", "parcel", j.parcel, "sha256", j.sha)
		}
		return err
	}
	img, err := l.blobs.Get(j.sha)
	if err != nil {
		return err
	}
	text, err := l.reader.Text(ctx, img)
	if err != nil {
		return err
	}
	p, ok, err := known()
	if ok || err != nil {
		return err
	}
	ev := event.Event{Appliance: l.appliance, Site: l.site, Type: event.TypeParcelUpdated, Time: l.clock.Now(), ParcelID: p.ID, By: "ocr"}
	e, score, ok := ocr.Match(x, ocr.Candidates(text))
	switch {
	case ok:
		ev.RecipientID, ev.RecipientMatch, ev.RecipientScore = e.ID, directory.MatchOCR, score
		if !l.privacyID {
			ev.RecipientName = e.Name
		}
	case p.Match == directory.MatchNone:
		l.log.Info("label photo read: nobody of the directory found", "parcel", p.ID)
		return nil // on the needs-recipient list already
	default:
		ev.RecipientMatch = directory.MatchNone
	}
	// Committed only if nobody chose the parcel's person since it was read.
	committed, err := l.store.AppendUnassigned(ctx, ev)
	var refused *store.RefusedError
	if errors.As(err, &refused) && refused.Code == store.RefusedAssigned {
		l.log.Info("label photo read: the parcel's recipient was chosen meanwhile; the reading is not recorded", "parcel", p.ID)
		return nil
	}
	if err != nil {
		return err
	}
	l.log.Info("label photo read", "parcel", p.ID, "match", ev.RecipientMatch, "score", score, "id", committed.ID)
	return nil
}

// readLabel queues a label photo for reading, when labels are read.
func (a *App) readLabel(parcel, sha string) {
	if a.labels != nil {
		a.labels.add(parcel, sha)
	}
}
