// Package photo keeps photos of parcels: the bytes durably in the blob
// store first, then a parcel.updated event that names them. The status
// page's uploads and the box's own cameras go through the same Keeper, so a
// photo is refused, kept and announced the same way wherever it comes from.
package photo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // the formats of photos: their sizes are read
	_ "image/png"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Store keeps photos, durably, by the SHA-256 of their bytes.
type Store interface {
	Put(b []byte) (string, error)
	Remove(sha string) error
}

// Index tells what the photos kept take and whether an event names one.
type Index interface {
	BlobBytes(ctx context.Context) (int64, error)
	BlobKnown(ctx context.Context, sha string) (bool, error)
}

// Appender commits an event.
type Appender interface {
	Append(ctx context.Context, ev event.Event) (event.Event, error)
}

// ConditionFull is raised while new photos are refused because the photos
// kept take photos.max_total_mb, or the disk is full.
const ConditionFull = "photos.full"

// MaxEdge is the most pixels a photo may have on an edge.
const MaxEdge = 8192

// Kinds are the kinds of photo a parcel takes.
var Kinds = []string{"label", "damage", "proof"}

var types = map[string]bool{"image/jpeg": true, "image/png": true}

// Error codes of a refused photo; the status page answers them as its
// error codes.
const (
	CodeBadKind  = "bad_kind"
	CodeEmpty    = "photo_required"
	CodeTooLarge = "too_large"
	CodeBadType  = "bad_type"
	CodeBadSize  = "bad_size"
	CodeFull     = "photos_full"
	CodeDiskFull = "disk_full"
)

// Error is a photo refused before anything of it was kept.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return "photo refused: " + e.Msg }

// DiskFullMessage is what a clerk reads when the box's disk has no room
// for a photo.
const DiskFullMessage = "the box's disk is full: the photo was not kept; everything recorded before is safe"

// Photo is a photo to keep.
type Photo struct {
	ParcelID string
	// Kind is label, damage or proof.
	Kind string
	// By is who took it: a page user, or "camera:<device>".
	By string
	// Station and Device name the station and the camera that took it;
	// empty for a photo from the page.
	Station, Device string
	Body            []byte
}

// Kept is a photo kept and the event that names it.
type Kept struct {
	SHA256      string
	Size        int64
	ContentType string
	Event       event.Event
}

// Keeper keeps photos. Its fields are set before use and not changed.
type Keeper struct {
	Store   Store
	Index   Index
	Custody Appender
	// Alerts raises ConditionFull; nil raises nothing.
	Alerts            health.Reporter
	MaxSize, MaxTotal int64
	Appliance, Site   string
	Now               func() time.Time
	Log               *slog.Logger
	// OnLabel is told of every label photo committed, to read it; nil
	// reads none. It must not block.
	OnLabel func(parcelID, sha string)
	// Locks serialise the keeping of the same bytes; every Keeper of a
	// blob store must share one. Nil: the Keeper's own.
	Locks *Locks
	own   Locks
	// Free reports the free bytes on the volume of the buffer and its
	// photos; nil checks nothing. A new photo that would leave less than
	// ReserveBytes free is refused as for a full disk: that room is the
	// scans'.
	Free func() (uint64, error)
}

// ReserveBytes is the free space on the buffer's volume that photos never
// take: left to the scans when photos fill a disk, while the alerts say
// so and uploads and pruning make room.
const ReserveBytes = 16 << 20

// Locks hold the photos being kept, by hash: the same bytes kept twice at
// once (two cameras, a camera and the page) are kept one after the other,
// so that a photo removed because its event was refused (or pruned after
// its upload) is never one another event is about to name.
type Locks struct {
	mu   sync.Mutex
	held map[string]*heldPhoto
	// writing is the bytes of new photos being kept now, by every
	// Keeper sharing these Locks: each leaves ReserveBytes free after
	// the others' too.
	writing int64
}

// claim counts n bytes as being written until release is called, and
// returns how many the other photos being kept are writing.
func (l *Locks) claim(n int64) (others int64, release func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	others = l.writing
	l.writing += n
	return others, func() {
		l.mu.Lock()
		l.writing -= n
		l.mu.Unlock()
	}
}

type heldPhoto struct {
	mu    sync.Mutex
	users int
}

// Lock holds sha until the returned func is called: the uploader's pruning
// takes it too, so that a photo is never removed while the same bytes are
// being kept for a new event.
func (l *Locks) Lock(sha string) (unlock func()) { return l.lock(sha) }

// lock holds sha until the returned func is called.
func (l *Locks) lock(sha string) func() {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*heldPhoto{}
	}
	h := l.held[sha]
	if h == nil {
		h = &heldPhoto{}
		l.held[sha] = h
	}
	h.users++
	l.mu.Unlock()
	h.mu.Lock()
	return func() {
		h.mu.Unlock()
		l.mu.Lock()
		if h.users--; h.users == 0 {
			delete(l.held, sha)
		}
		l.mu.Unlock()
	}
}

// CheckKind refuses a kind of photo other than Kinds.
func CheckKind(kind string) error {
	if !slices.Contains(Kinds, kind) {
		return &Error{CodeBadKind, "kind must be label, damage or proof"}
	}
	return nil
}

// limit is the most bytes one photo may have: MaxSize, or MaxTotal when
// that is less (such a photo could never be kept).
func (k *Keeper) limit() int64 { return min(k.MaxSize, k.MaxTotal) }

// TooLarge is the refusal of a photo over the most one may have.
func (k *Keeper) TooLarge() *Error {
	return &Error{CodeTooLarge, fmt.Sprintf("a photo may be %d KiB at most", k.limit()>>10)}
}

// Check refuses a photo that is not one: of an unknown kind, empty, too
// large, not JPEG or PNG, or of a size no camera takes. It returns the
// photo's content type.
func (k *Keeper) Check(p Photo) (string, error) {
	if err := CheckKind(p.Kind); err != nil {
		return "", err
	}
	if len(p.Body) == 0 {
		return "", &Error{CodeEmpty, "the body must be the photo (JPEG or PNG)"}
	}
	if int64(len(p.Body)) > k.limit() {
		return "", k.TooLarge()
	}
	ctype := http.DetectContentType(p.Body)
	if !types[ctype] {
		return "", &Error{CodeBadType, "a photo must be JPEG or PNG, not " + ctype}
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(p.Body))
	if err != nil {
		return "", &Error{CodeBadType, "the photo cannot be read: " + err.Error()}
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > MaxEdge || cfg.Height > MaxEdge {
		return "", &Error{CodeBadSize, fmt.Sprintf("a photo is 1 to %d pixels on each edge, not %d×%d", MaxEdge, cfg.Width, cfg.Height)}
	}
	return ctype, nil
}

// Keep checks the photo, keeps it durably, then commits a parcel.updated
// naming it. A photo refused returns an *Error; a refused event returns
// the store's *store.RefusedError. A photo whose event was not committed is
// removed again unless another event names the same bytes: nothing kept is
// named by no event for long, and no event names a photo not kept.
func (k *Keeper) Keep(ctx context.Context, p Photo) (Kept, error) {
	ctype, err := k.Check(p)
	if err != nil {
		return Kept{}, err
	}
	locks := k.Locks
	if locks == nil {
		locks = &k.own
	}
	sum := blobstore.Sum(p.Body)
	defer locks.lock(sum)()
	// The same bytes kept already take no more room.
	known, err := k.Index.BlobKnown(ctx, sum)
	if err != nil {
		return Kept{}, fmt.Errorf("not kept: %w", err)
	}
	used, err := k.Index.BlobBytes(ctx)
	if err != nil {
		return Kept{}, fmt.Errorf("not kept: %w", err)
	}
	if !known && used+int64(len(p.Body)) > k.MaxTotal {
		msg := fmt.Sprintf("photos take %.1f of %d MiB: new photos are refused until uploaded ones are pruned", float64(used)/(1<<20), k.MaxTotal>>20)
		k.raise(msg)
		k.Log.Error("photo refused: the photo store is full", "parcel", p.ParcelID, "used", used, "max", k.MaxTotal)
		return Kept{}, &Error{CodeFull, msg}
	}
	if !known && k.Free != nil {
		others, release := locks.claim(int64(len(p.Body)))
		defer release()
		free, err := k.Free()
		switch {
		case err != nil:
			k.Log.Warn("free space on the buffer's volume unknown: the photo is kept without the scans' reserve checked", "err", err)
		case free < uint64(others)+uint64(len(p.Body))+ReserveBytes:
			k.raise(DiskFullMessage)
			k.Log.Error("photo refused: it would take the room kept for scans", "parcel", p.ParcelID, "free", free, "bytes", len(p.Body),
				"being_written", others, "reserve", ReserveBytes)
			return Kept{}, &Error{CodeDiskFull, DiskFullMessage}
		}
	}
	sha, err := k.Store.Put(p.Body)
	if err != nil {
		k.Log.Error("photo not kept", "parcel", p.ParcelID, "err", err)
		if store.IsDiskFull(err) {
			k.raise(DiskFullMessage)
			return Kept{}, &Error{CodeDiskFull, DiskFullMessage}
		}
		return Kept{}, fmt.Errorf("not kept: %w", err)
	}
	size := int64(len(p.Body))
	ev := event.Event{Appliance: k.Appliance, Site: k.Site, Type: event.TypeParcelUpdated, Time: k.Now(),
		ParcelID: p.ParcelID, By: p.By, Station: p.Station, Device: p.Device,
		Photos: []event.Photo{{SHA256: sha, Size: size, ContentType: ctype, Kind: p.Kind}}}
	committed, err := k.Custody.Append(ctx, ev)
	if err != nil {
		// Not named by an event: the photo goes again, unless another
		// event names the same bytes.
		if known, kerr := k.Index.BlobKnown(context.WithoutCancel(ctx), sha); kerr == nil && !known {
			k.Store.Remove(sha)
		}
		if store.IsDiskFull(err) {
			k.raise(DiskFullMessage)
			return Kept{}, &Error{CodeDiskFull, DiskFullMessage}
		}
		return Kept{}, fmt.Errorf("not recorded: %w", err)
	}
	if k.Alerts != nil && !known {
		k.Alerts.Clear(ConditionFull) // there was room for a new photo
	}
	k.Log.Info("photo taken", "parcel", p.ParcelID, "kind", p.Kind, "sha256", sha, "bytes", size, "by", p.By)
	if p.Kind == "label" && k.OnLabel != nil {
		k.OnLabel(p.ParcelID, sha)
	}
	return Kept{SHA256: sha, Size: size, ContentType: ctype, Event: committed}, nil
}

func (k *Keeper) raise(msg string) {
	if k.Alerts != nil {
		k.Alerts.Set(ConditionFull, health.Warning, msg)
	}
}

// IsRefused reports whether err is a photo refused before it was kept,
// and returns it.
func IsRefused(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
