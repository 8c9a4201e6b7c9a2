// Package camera defines what every still camera driver gives: a JPEG photo
// on request.
package camera

import (
	"context"
	"time"
)

// Photo is one still, JPEG-encoded.
type Photo struct {
	// JPEG is a complete JPEG file (SOI to EOI) any decoder reads.
	JPEG []byte
	// Width and Height are the photo's size in pixels.
	Width, Height int
	// At is when the frame was taken.
	At time.Time
}

// Camera takes stills. Still returns when ctx ends at the latest; a camera
// that is unplugged or not answering returns an error, and is looked for
// again by the driver's own goroutine.
type Camera interface {
	Still(ctx context.Context) (Photo, error)
}

// Status is what a camera driver reports about its device.
type Status struct {
	Device string
	// Connected is true while the device is open and answers.
	Connected bool
	// Detail names the device when connected ("UVC Camera (046d:0825)
	// 1280x720 MJPEG"), or why it is not.
	Detail string
	At     time.Time
}
