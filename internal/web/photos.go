package web

import (
	"errors"
	"io"
	"net/http"

	"github.com/mailroomd/mailroomd/internal/photo"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Photos are the photo settings of the page.
type Photos struct {
	// Keeper keeps the photos taken; nil takes no photos.
	Keeper *photo.Keeper
	// LongEdge is the long edge, in pixels, the page scales photos to.
	LongEdge int
}

// ConditionPhotosFull is raised while new photos are refused because the
// photos kept take photos.max_total_mb, or the disk is full.
const ConditionPhotosFull = photo.ConditionFull

// PhotoResult answers a photo upload.
type PhotoResult struct {
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	EventID  string `json:"event_id"`
	Seq      int64  `json:"seq"`
	ParcelID string `json:"parcel_id"`
}

// photoStatus is the HTTP status of each refusal of a photo.
var photoStatus = map[string]int{
	photo.CodeBadKind: http.StatusBadRequest, photo.CodeEmpty: http.StatusBadRequest,
	photo.CodeTooLarge: http.StatusRequestEntityTooLarge, photo.CodeBadType: http.StatusUnsupportedMediaType,
	photo.CodeBadSize: http.StatusBadRequest, photo.CodeFull: http.StatusInsufficientStorage,
	photo.CodeDiskFull: http.StatusInsufficientStorage,
}

// photo takes a photo of a parcel: it is kept durably first, then a
// parcel.updated that names it is committed.
func (s *Server) photo(w http.ResponseWriter, r *http.Request, sess *session) {
	k := s.opts.Photos.Keeper
	p := photo.Photo{Kind: r.URL.Query().Get("kind"), By: sess.user}
	if err := photo.CheckKind(p.Kind); err != nil {
		s.photoRefused(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, k.MaxSize))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.photoRefused(w, k.TooLarge())
		return
	case err != nil:
		jsonErrorCode(w, http.StatusBadRequest, "malformed", "photo not read: "+err.Error())
		return
	}
	p.Body = body
	if _, err := k.Check(p); err != nil {
		s.photoRefused(w, err)
		return
	}
	parcel, err := s.lookup(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNoParcel) {
		jsonErrorCode(w, http.StatusNotFound, store.RefusedUnknownParcel, "no parcel with that code on this box")
		return
	}
	if err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
		return
	}
	if parcel.State.Closed() { // refused before anything is kept
		jsonErrorCode(w, http.StatusConflict, store.RefusedClosed, (&store.RefusedError{Code: store.RefusedClosed, ParcelID: parcel.ID, State: parcel.State}).Error())
		return
	}
	p.ParcelID = parcel.ID
	kept, err := k.Keep(r.Context(), p)
	if err != nil {
		s.photoRefused(w, err)
		return
	}
	writeJSON(w, PhotoResult{SHA256: kept.SHA256, Size: kept.Size, EventID: kept.Event.ID, Seq: kept.Event.Seq, ParcelID: parcel.ID})
}

// photoRefused answers a photo that was not kept, or whose event was not
// recorded.
func (s *Server) photoRefused(w http.ResponseWriter, err error) {
	if e, ok := photo.IsRefused(err); ok {
		status, known := photoStatus[e.Code]
		if !known {
			status = http.StatusBadRequest
		}
		jsonErrorCode(w, status, e.Code, e.Msg)
		return
	}
	var refused *store.RefusedError
	if errors.As(err, &refused) {
		jsonErrorCode(w, http.StatusConflict, refused.Code, refused.Error())
		return
	}
	jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error()) // "not kept: …" or "not recorded: …"
}
