package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // the formats of photos: their sizes are read
	_ "image/png"
	"io"
	"net/http"
	"slices"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// PhotoStore keeps photos, durably, by the SHA-256 of their bytes.
type PhotoStore interface {
	Put(b []byte) (string, error)
	Remove(sha string) error
}

// Photos are the photo settings and where photos go; a nil Store serves
// no photo endpoint.
type Photos struct {
	Store PhotoStore
	// Blobs counts the bytes the photos kept take.
	Blobs interface {
		BlobBytes(ctx context.Context) (int64, error)
		BlobKnown(ctx context.Context, sha string) (bool, error)
	}
	// Alerts raises the condition of a full photo store; nil raises none.
	Alerts interface {
		Set(key string, sev health.Severity, msg string)
		Clear(key string)
	}
	MaxSize, MaxTotal int64
	// LongEdge is the long edge, in pixels, the page scales photos to.
	LongEdge int
	// OnLabel is told of every label photo committed, to read it; nil
	// reads none. It must not block.
	OnLabel func(parcelID, sha string)
}

// ConditionPhotosFull is raised while new photos are refused because the
// photos kept take photos.max_total_mb.
const ConditionPhotosFull = "photos.full"

// MaxPhotoEdge is the most pixels a photo may have on an edge.
const MaxPhotoEdge = 8192

// PhotoKinds are the kinds of photo a parcel takes.
var PhotoKinds = []string{"label", "damage", "proof"}

var photoTypes = map[string]bool{"image/jpeg": true, "image/png": true}

// PhotoResult answers a photo upload.
type PhotoResult struct {
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	EventID  string `json:"event_id"`
	Seq      int64  `json:"seq"`
	ParcelID string `json:"parcel_id"`
}

// photo takes a photo of a parcel: it is kept durably first, then a
// parcel.updated that names it is committed.
func (s *Server) photo(w http.ResponseWriter, r *http.Request, sess *session) {
	ph := s.opts.Photos
	kind := r.URL.Query().Get("kind")
	if !slices.Contains(PhotoKinds, kind) {
		jsonErrorCode(w, http.StatusBadRequest, "bad_kind", "kind must be label, damage or proof")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, ph.MaxSize))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		jsonErrorCode(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("a photo may be %d KiB at most", ph.MaxSize>>10))
		return
	case err != nil:
		jsonErrorCode(w, http.StatusBadRequest, "malformed", "photo not read: "+err.Error())
		return
	case len(body) == 0:
		jsonErrorCode(w, http.StatusBadRequest, "photo_required", "the body must be the photo (JPEG or PNG)")
		return
	}
	ctype := http.DetectContentType(body)
	if !photoTypes[ctype] {
		jsonErrorCode(w, http.StatusUnsupportedMediaType, "bad_type", "a photo must be JPEG or PNG, not "+ctype)
		return
	}
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(body)); err != nil {
		jsonErrorCode(w, http.StatusUnsupportedMediaType, "bad_type", "the photo cannot be read: "+err.Error())
		return
	} else if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > MaxPhotoEdge || cfg.Height > MaxPhotoEdge {
		jsonErrorCode(w, http.StatusBadRequest, "bad_size", fmt.Sprintf("a photo is 1 to %d pixels on each edge, not %d×%d", MaxPhotoEdge, cfg.Width, cfg.Height))
		return
	}
	p, err := s.lookup(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNoParcel) {
		jsonErrorCode(w, http.StatusNotFound, store.RefusedUnknownParcel, "no parcel with that code on this box")
		return
	}
	if err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
		return
	}
	if p.State.Closed() { // refused before anything is kept
		jsonErrorCode(w, http.StatusConflict, store.RefusedClosed, (&store.RefusedError{Code: store.RefusedClosed, ParcelID: p.ID, State: p.State}).Error())
		return
	}
	used, err := ph.Blobs.BlobBytes(r.Context())
	if err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
		return
	}
	if used+int64(len(body)) > ph.MaxTotal {
		msg := fmt.Sprintf("photos take %.1f of %d MiB: new photos are refused until uploaded ones are pruned", float64(used)/(1<<20), ph.MaxTotal>>20)
		if ph.Alerts != nil {
			ph.Alerts.Set(ConditionPhotosFull, health.Warning, msg)
		}
		s.opts.Log.Error("photo refused: the photo store is full", "parcel", p.ID, "used", used, "max", ph.MaxTotal)
		jsonErrorCode(w, http.StatusInsufficientStorage, "photos_full", msg)
		return
	}
	sha, err := ph.Store.Put(body)
	if err != nil {
		s.opts.Log.Error("photo not kept", "parcel", p.ID, "err", err)
		if store.IsDiskFull(err) {
			s.diskFull(w, ph)
			return
		}
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", "not kept: "+err.Error())
		return
	}
	ev := event.Event{Appliance: s.opts.Appliance, Site: s.opts.Site, Type: event.TypeParcelUpdated, Time: s.opts.Now(),
		ParcelID: p.ID, By: sess.user,
		Photos: []event.Photo{{SHA256: sha, Size: int64(len(body)), ContentType: ctype, Kind: kind}}}
	committed, err := s.opts.Custody.Append(r.Context(), ev)
	if err != nil {
		// Not named by an event: the photo goes again, unless another
		// event names the same bytes.
		if known, kerr := ph.Blobs.BlobKnown(r.Context(), sha); kerr == nil && !known {
			ph.Store.Remove(sha)
		}
	}
	var refused *store.RefusedError
	if errors.As(err, &refused) {
		jsonErrorCode(w, http.StatusConflict, refused.Code, refused.Error())
		return
	}
	if err != nil && store.IsDiskFull(err) {
		s.diskFull(w, ph)
		return
	}
	if err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", "not recorded: "+err.Error())
		return
	}
	if ph.Alerts != nil {
		ph.Alerts.Clear(ConditionPhotosFull)
	}
	s.opts.Log.Info("photo taken", "parcel", p.ID, "kind", kind, "sha256", sha, "bytes", len(body), "user", sess.user)
	if kind == "label" && ph.OnLabel != nil {
		ph.OnLabel(p.ID, sha)
	}
	writeJSON(w, PhotoResult{SHA256: sha, Size: int64(len(body)), EventID: committed.ID, Seq: committed.Seq, ParcelID: p.ID})
}

// diskFullMessage is what the clerk reads when the box's disk has no room
// for a photo.
const diskFullMessage = "the box's disk is full: the photo was not kept; everything recorded before is safe"

// diskFull answers a photo the disk had no room for: 507 disk_full, and the
// photos.full condition (an alert) until a photo is kept again.
func (s *Server) diskFull(w http.ResponseWriter, ph Photos) {
	if ph.Alerts != nil {
		ph.Alerts.Set(ConditionPhotosFull, health.Warning, diskFullMessage)
	}
	jsonErrorCode(w, http.StatusInsufficientStorage, "disk_full", diskFullMessage)
}
