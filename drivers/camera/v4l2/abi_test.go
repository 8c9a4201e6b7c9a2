package v4l2

import (
	"testing"
	"unsafe"
)

// TestABI asserts the structs' layout and the ioctl numbers against the
// values of <linux/videodev2.h> on 64-bit Linux (sizeof, offsetof and the
// VIDIOC_* macros as gcc computes them on amd64; arm64 is the same).
func TestABI(t *testing.T) {
	sizes := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct v4l2_capability)", unsafe.Sizeof(capability{}), 104},
		{"sizeof(struct v4l2_fmtdesc)", unsafe.Sizeof(fmtdesc{}), 64},
		{"sizeof(struct v4l2_pix_format)", unsafe.Sizeof(pixFormat{}), 48},
		{"sizeof(struct v4l2_format)", unsafe.Sizeof(format{}), 208},
		{"sizeof(struct v4l2_requestbuffers)", unsafe.Sizeof(requestBuffers{}), 20},
		{"sizeof(struct v4l2_timecode)", unsafe.Sizeof(timecode{}), 16},
		{"sizeof(struct timeval)", unsafe.Sizeof(timeval{}), 16},
		{"sizeof(struct v4l2_buffer)", unsafe.Sizeof(buffer{}), 88},

		{"offsetof(v4l2_capability, card)", unsafe.Offsetof(capability{}.Card), 16},
		{"offsetof(v4l2_capability, bus_info)", unsafe.Offsetof(capability{}.BusInfo), 48},
		{"offsetof(v4l2_capability, version)", unsafe.Offsetof(capability{}.Version), 80},
		{"offsetof(v4l2_capability, capabilities)", unsafe.Offsetof(capability{}.Capabilities), 84},
		{"offsetof(v4l2_capability, device_caps)", unsafe.Offsetof(capability{}.DeviceCaps), 88},
		{"offsetof(v4l2_fmtdesc, description)", unsafe.Offsetof(fmtdesc{}.Description), 12},
		{"offsetof(v4l2_fmtdesc, pixelformat)", unsafe.Offsetof(fmtdesc{}.PixelFormat), 44},
		{"offsetof(v4l2_format, fmt)", unsafe.Offsetof(format{}.Pix), 8},
		{"offsetof(v4l2_pix_format, bytesperline)", unsafe.Offsetof(pixFormat{}.BytesPerLine), 16},
		{"offsetof(v4l2_pix_format, sizeimage)", unsafe.Offsetof(pixFormat{}.SizeImage), 20},
		{"offsetof(v4l2_pix_format, xfer_func)", unsafe.Offsetof(pixFormat{}.XferFunc), 44},
		{"offsetof(v4l2_requestbuffers, capabilities)", unsafe.Offsetof(requestBuffers{}.Capabilities), 12},
		{"offsetof(v4l2_requestbuffers, flags)", unsafe.Offsetof(requestBuffers{}.Flags), 16},
		{"offsetof(v4l2_buffer, field)", unsafe.Offsetof(buffer{}.Field), 16},
		{"offsetof(v4l2_buffer, timestamp)", unsafe.Offsetof(buffer{}.Timestamp), 24},
		{"offsetof(v4l2_buffer, timecode)", unsafe.Offsetof(buffer{}.Timecode), 40},
		{"offsetof(v4l2_buffer, sequence)", unsafe.Offsetof(buffer{}.Sequence), 56},
		{"offsetof(v4l2_buffer, memory)", unsafe.Offsetof(buffer{}.Memory), 60},
		{"offsetof(v4l2_buffer, m)", unsafe.Offsetof(buffer{}.Offset), 64},
		{"offsetof(v4l2_buffer, length)", unsafe.Offsetof(buffer{}.Length), 72},
		{"offsetof(v4l2_buffer, reserved2)", unsafe.Offsetof(buffer{}.Reserved2), 76},
		{"offsetof(v4l2_buffer, request_fd)", unsafe.Offsetof(buffer{}.RequestFD), 80},
	}
	for _, s := range sizes {
		if s.got != s.want {
			t.Errorf("%s = %d, want %d", s.name, s.got, s.want)
		}
	}
	ioctls := []struct {
		name      string
		got, want uint
	}{
		{"VIDIOC_QUERYCAP", vidiocQuerycap, 0x80685600},
		{"VIDIOC_ENUM_FMT", vidiocEnumFmt, 0xc0405602},
		{"VIDIOC_G_FMT", vidiocGFmt, 0xc0d05604},
		{"VIDIOC_S_FMT", vidiocSFmt, 0xc0d05605},
		{"VIDIOC_REQBUFS", vidiocReqbufs, 0xc0145608},
		{"VIDIOC_QUERYBUF", vidiocQuerybuf, 0xc0585609},
		{"VIDIOC_QBUF", vidiocQbuf, 0xc058560f},
		{"VIDIOC_DQBUF", vidiocDqbuf, 0xc0585611},
		{"VIDIOC_STREAMON", vidiocStreamon, 0x40045612},
		{"VIDIOC_STREAMOFF", vidiocStreamoff, 0x40045613},
	}
	for _, c := range ioctls {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	consts := []struct {
		name      string
		got, want uint32
	}{
		{"V4L2_PIX_FMT_MJPEG", pixFmtMJPEG, 0x47504a4d},
		{"V4L2_PIX_FMT_YUYV", pixFmtYUYV, 0x56595559},
		{"V4L2_CAP_VIDEO_CAPTURE", capVideoCapture, 0x1},
		{"V4L2_CAP_META_CAPTURE", capMetaCapture, 0x800000},
		{"V4L2_CAP_STREAMING", capStreaming, 0x4000000},
		{"V4L2_CAP_DEVICE_CAPS", capDeviceCaps, 0x80000000},
		{"V4L2_BUF_FLAG_ERROR", bufFlagError, 0x40},
	}
	for _, c := range consts {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}
