// Package v4l2 drives a USB (UVC) camera through Video4Linux2 for still
// photos: Still returns one JPEG, and the camera streams only for the time
// of that still.
//
// # Finding the device
//
// A UVC camera appears as two nodes, /dev/videoN and /dev/videoN+1: the
// first captures video, the second carries the UVC metadata and cannot
// capture frames. The numbers depend on the order devices were found and
// change when the camera is plugged into another port or replugged while a
// program holds the old node, so configure the stable link instead:
// /dev/v4l/by-id/usb-<vendor>_<product>_<serial>-video-index0 (index0 is
// the capture node; `v4l2-ctl --list-devices` lists them). A node whose
// device capabilities lack V4L2_CAP_VIDEO_CAPTURE, the metadata node in
// particular, is refused with an error naming that capability.
//
// # Protocol
//
// Run owns the device in one goroutine. It opens the node read-write,
// non-blocking, close-on-exec, and sets it up:
//
//   - VIDIOC_QUERYCAP: the node must have V4L2_CAP_VIDEO_CAPTURE and
//     V4L2_CAP_STREAMING. When V4L2_CAP_DEVICE_CAPS is set the node's own
//     device_caps are checked, not the capabilities of the whole device
//     (which has VIDEO_CAPTURE also on the metadata node).
//   - VIDIOC_ENUM_FMT, from index 0 until EINVAL (at most 1,024 formats;
//     the kernel's vivid lists about 80): V4L2_PIX_FMT_MJPEG is
//     preferred (the camera compresses, the USB bus carries little, the
//     frame is a JPEG already), else V4L2_PIX_FMT_YUYV; a camera with
//     neither is refused.
//   - VIDIOC_S_FMT with the configured size (1280x720 by default): the
//     device answers with the size it offers nearest, and the driver uses
//     what it answered (width, height, bytesperline).
//
// It then reports the camera connected ("<card> 1280x720 MJPEG") and waits
// for stills. For each still:
//
//  1. VIDIOC_REQBUFS for 4 MMAP buffers (the device may give another
//     count), VIDIOC_QUERYBUF and mmap of each, VIDIOC_QBUF of each;
//  2. VIDIOC_STREAMON;
//  3. VIDIOC_DQBUF; while it answers EAGAIN, poll(2) for readable, in
//     slices of 50ms so that a cancelled still stops waiting at once, for
//     at most FrameTimeout (2s by default) per frame;
//  4. the first Warmup frames (5 by default) are queued again unread, so
//     that auto exposure and white balance settle; the next is copied
//     (bytesused bytes) and checked; an unusable frame (see below, or one
//     the driver flagged V4L2_BUF_FLAG_ERROR) is queued again and the next
//     one taken, up to 3 frames in a row;
//  5. VIDIOC_STREAMOFF, munmap of each buffer, VIDIOC_REQBUFS with count
//     0, whatever happened before.
//
// A camera left streaming keeps its isochronous bandwidth on the USB bus
// and the box's CPU busy; between stills it streams nothing. While idle
// the driver sends VIDIOC_QUERYCAP every Probe (3s by default), so that an
// unplug is reported without waiting for a still.
//
// When the device fails (an ioctl, mmap or poll error: ENODEV after an
// unplug, EIO, or a stream that cannot be stopped) or cannot be opened or
// set up, Run reports the camera disconnected with the reason, closes the
// node and opens it again after 250ms, doubling the wait up to
// ReconnectMax (30s by default); a successful connection starts again at
// 250ms. A value on Config.Wake (hotplug: a device appeared) ends the
// wait at once. A still that gets no frame in time or only bad frames fails, but
// the device stays open. Still fails at once, saying why, while the camera
// is not connected or Run is not running. When Run's context ends it stops
// a still in progress (the stream is stopped and the buffers freed), closes
// the device and returns nil.
//
// Errors start with "camera <name>: " and name the operation and the node:
// "camera dock-cam: no frame within 2s", "camera dock-cam: not connected:
// open /dev/video0: no such file or directory", "camera dock-cam:
// VIDIOC_DQBUF /dev/video0: no such device".
//
// # Frames
//
// An MJPEG frame from a UVC camera is a JPEG image without its Huffman
// tables: the UVC (and AVI1) convention is that the decoder uses the
// standard ones, and many cameras leave the DHT segment out. When no DHT
// segment comes before the first SOS, the driver inserts one right before
// the SOS, after every DQT and SOF, with the four tables of ITU T.81 Annex
// K.3, as ffmpeg's mjpeg2jpeg and libjpeg do. The frame must start with
// SOI (FFD8); whatever follows its EOI is cut off; a frame without EOI is
// truncated and refused. The repaired frame must then be read by Go's
// image/jpeg, header (DecodeConfig, with a plausible size) and all, so that
// a damaged frame, which UVC cameras deliver now and then as the first
// one, is skipped rather than handed on; the photo's width and height are
// those of the decoded header.
//
// A YUYV frame (YUV 4:2:2: Y0 U Y1 V, two bytes per pixel, lines
// bytesperline bytes apart, which may be more than twice the width) is
// copied into an image.YCbCr with 4:2:2 subsampling and encoded with
// image/jpeg at quality 90.
//
// # Platforms
//
// The V4L2 structs are written out in Go with the layout of the 64-bit
// Linux ABI (amd64 and arm64 share it); OpenDevice works on linux/amd64
// and linux/arm64 and fails elsewhere with "v4l2 cameras are supported on
// Linux only (amd64, arm64)". The ioctls go through
// golang.org/x/sys/unix (retried on EINTR), as do mmap and poll.
//
// # Testing
//
// The driver is tested against package v4l2test, a fake camera that speaks
// the ioctl protocol byte for byte (it reads and writes the kernel's structs
// at the offsets of <linux/videodev2.h>, independently of this package's
// Go structs) and enforces it as uvcvideo and videobuf2 do, not against a
// real camera. The struct sizes, offsets and ioctl numbers are asserted
// against the values gcc computes from the kernel's videodev2.h (Linux 6.1
// headers, amd64); the real syscalls are run against /dev/null and a
// missing node. The frame repair is fuzzed (FuzzFrameToJPEG).
package v4l2
