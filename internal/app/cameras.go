package app

import (
	"context"
	"fmt"
	"image"
	_ "image/jpeg" // a sim-camera's picture
	_ "image/png"
	"os"
	"path/filepath"
	"time"

	"github.com/shirou/gopsutil/v4/disk"

	"github.com/mailroomd/mailroomd/drivers/camera"
	"github.com/mailroomd/mailroomd/drivers/camera/sim"
	"github.com/mailroomd/mailroomd/drivers/camera/v4l2"
	"github.com/mailroomd/mailroomd/drivers/reopen"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/photo"
)

// cameraDriver is a camera and the goroutine that owns its device.
type cameraDriver interface {
	camera.Camera
	Run(ctx context.Context, status chan<- camera.Status) error
}

// cameraStillTimeout bounds one still: the camera's warm-up frames and its
// frame timeout fit well inside it.
const cameraStillTimeout = 20 * time.Second

// cameraStillGrace is how long after a job's latest moment its still may
// still be taken (the camera's warm-up frames).
const cameraStillGrace = 2 * time.Second

// cameraQueue is how many parcels may wait for their photo from one
// camera; a parcel beyond it is received without one, with a warning.
const cameraQueue = 16

// photoKeeper keeps the photos of cfg's settings: the page's and the
// cameras'.
func (a *App) photoKeeper(cfg *config.Config) *photo.Keeper {
	return &photo.Keeper{Store: a.blobs, Index: a.store, Custody: a.store, Alerts: a.health,
		MaxSize: cfg.Photos.MaxSizeKB << 10, MaxTotal: cfg.Photos.MaxTotalMB << 20,
		Appliance: cfg.Appliance.ID, Site: cfg.Appliance.Site, Now: a.clock.Now,
		Log: a.log.With("subsystem", "photos"), OnLabel: a.readLabel, Locks: a.photoLocks,
		Free: func() (uint64, error) {
			du, err := disk.Usage(filepath.Dir(cfg.Storage.Path))
			if err != nil {
				return 0, err
			}
			return du.Free, nil
		}}
}

// newV4L2Device is a USB (UVC) camera through Linux's V4L2.
func newV4L2Device(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	warmup := d.Warmup
	if warmup == 0 {
		warmup = -1 // the driver's zero is its default; the config's is none
	}
	dev.Camera = v4l2.New(v4l2.Config{Name: d.Name, Path: d.Path, Width: d.Width, Height: d.Height, Warmup: warmup,
		FrameTimeout: d.ReadTimeout.D(), ReconnectMax: d.ReconnectMax.D(), Wake: env.wake, Now: env.clock.Now, Log: env.log})
	return dev, nil
}

// newSimCameraDevice is the simulated camera of the demo and the tests:
// it returns the configured picture, or a generated one.
func newSimCameraDevice(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	var render func(int) image.Image
	if d.Image != "" {
		f, err := os.Open(d.Image)
		if err != nil {
			return dev, fmt.Errorf("read picture: %w", err)
		}
		img, _, err := image.Decode(f)
		f.Close()
		if err != nil {
			return dev, fmt.Errorf("read picture %s: %w", d.Image, err)
		}
		render = func(int) image.Image { return img }
	}
	dev.Camera = sim.New(d.Name, render)
	return dev, nil
}

// cameraMaxAge is how long after its scan a parcel is photographed at
// most, beyond the station's weight window: later, another parcel is
// likely under the camera.
const cameraMaxAge = 5 * time.Second

// cameraJob is a parcel whose label a camera photographs.
type cameraJob struct {
	parcel  string
	station string
	// scanned is when the parcel's code was scanned; by is when its photo
	// must be taken at the latest.
	scanned, by time.Time
}

// startCamera runs a camera: its status goes to the health model, and it
// photographs the parcels its station receives, one at a time, off the
// scan path: a parcel is committed and confirmed before its photo is
// taken, and a camera that is slow or gone delays no scan.
func (g *generation) startCamera(d Device, jobs <-chan cameraJob) {
	status := make(chan camera.Status, 4)
	g.wg.Add(3)
	go func() {
		defer g.wg.Done()
		defer close(status)
		if err := d.Camera.Run(g.ctx, status); err != nil {
			g.log.Error("device stopped", "device", d.Name, "err", err)
		}
	}()
	go func() {
		defer g.wg.Done()
		key := reopen.DisconnectedKey(d.Name)
		for s := range status {
			if s.Connected {
				g.a.health.Clear(key)
				g.a.health.Seen(d.Name, s.Detail)
			} else {
				g.a.health.Set(key, health.Warning, s.Detail)
			}
		}
	}()
	go func() {
		defer g.wg.Done()
		keeper := g.a.photoKeeper(g.cfg)
		for {
			select {
			case <-g.ctx.Done():
				return // the parcels still queued are logged at the end of the shutdown
			case j := <-jobs:
				g.photograph(d, keeper, j)
			}
		}
	}()
}

// logUnphotographed logs the parcels still queued for a camera when the
// generation stopped: called after every goroutine that queues them ended.
func (g *generation) logUnphotographed() {
	for name, jobs := range g.cameraJobs {
		for {
			select {
			case j := <-jobs:
				g.log.Warn("parcel received without a label photo: the devices are stopping", "parcel", j.parcel, "station", j.station, "camera", name)
				continue
			default:
			}
			break
		}
	}
}

// photograph takes the label photo of a parcel just received and keeps it.
func (g *generation) photograph(d Device, keeper *photo.Keeper, j cameraJob) {
	if now := g.a.clock.Now(); now.After(j.by) {
		g.log.Warn("parcel received without a label photo: the camera is behind, another parcel may be under it", "parcel", j.parcel,
			"station", j.station, "camera", d.Name, "scanned_ago", now.Sub(j.scanned).Round(time.Millisecond))
		return
	}
	// The still must be taken by then too: a slow camera must not
	// photograph the next parcel for this one.
	deadline := j.by.Add(cameraStillGrace)
	if limit := g.a.clock.Now().Add(cameraStillTimeout); limit.Before(deadline) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadline(g.ctx, deadline)
	defer cancel()
	still, err := d.Camera.Still(ctx)
	if err == nil && still.At.After(j.by.Add(cameraStillGrace)) {
		err = fmt.Errorf("the still came %s after the parcel's scan: another parcel may be under the camera", still.At.Sub(j.scanned).Round(time.Millisecond))
	}
	if err != nil {
		reason := err.Error()
		if g.ctx.Err() != nil {
			reason = "the devices are stopping"
		}
		g.log.Warn("parcel received without a label photo", "parcel", j.parcel, "station", j.station, "camera", d.Name, "err", reason)
		return
	}
	// The photo is kept even when the generation stops meanwhile: it was
	// taken, and its parcel is committed.
	if _, err := keeper.Keep(context.WithoutCancel(ctx), photo.Photo{ParcelID: j.parcel, Kind: "label", By: "camera:" + d.Name,
		Station: j.station, Device: d.Name, Body: still.JPEG}); err != nil {
		g.log.Error("label photo not kept", "parcel", j.parcel, "station", j.station, "camera", d.Name, "err", err)
	}
}
