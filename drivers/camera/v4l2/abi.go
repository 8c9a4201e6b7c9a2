package v4l2

import "unsafe"

// The kernel's V4L2 ABI as <linux/videodev2.h> defines it on 64-bit Linux
// (amd64 and arm64 share it). The structs spell out every padding the C
// compiler adds, so that their Go layout is the same on every GOARCH; the
// sizes and offsets are asserted in abi_test.go against the values the
// C compiler gives for the kernel header.

// Capability bits (struct v4l2_capability capabilities and device_caps).
const (
	capVideoCapture = 0x00000001 // V4L2_CAP_VIDEO_CAPTURE
	capMetaCapture  = 0x00800000 // V4L2_CAP_META_CAPTURE
	capStreaming    = 0x04000000 // V4L2_CAP_STREAMING
	capDeviceCaps   = 0x80000000 // V4L2_CAP_DEVICE_CAPS
)

// Buffer types, memory types, fields and buffer flags.
const (
	bufTypeVideoCapture = 1 // V4L2_BUF_TYPE_VIDEO_CAPTURE
	memoryMMAP          = 1 // V4L2_MEMORY_MMAP
	fieldAny            = 0 // V4L2_FIELD_ANY
	bufFlagError        = 0x00000040
)

// Pixel formats: v4l2_fourcc('M','J','P','G') and v4l2_fourcc('Y','U','Y','V').
const (
	pixFmtMJPEG = 'M' | 'J'<<8 | 'P'<<16 | 'G'<<24
	pixFmtYUYV  = 'Y' | 'U'<<8 | 'Y'<<16 | 'V'<<24
)

// capability is struct v4l2_capability (104 bytes).
type capability struct {
	Driver       [16]byte
	Card         [32]byte
	BusInfo      [32]byte
	Version      uint32
	Capabilities uint32
	DeviceCaps   uint32
	Reserved     [3]uint32
}

// fmtdesc is struct v4l2_fmtdesc (64 bytes).
type fmtdesc struct {
	Index       uint32
	Type        uint32
	Flags       uint32
	Description [32]byte
	PixelFormat uint32
	MbusCode    uint32
	Reserved    [3]uint32
}

// pixFormat is struct v4l2_pix_format (48 bytes).
type pixFormat struct {
	Width        uint32
	Height       uint32
	PixelFormat  uint32
	Field        uint32
	BytesPerLine uint32
	SizeImage    uint32
	Colorspace   uint32
	Priv         uint32
	Flags        uint32
	YCbCrEnc     uint32 // union with hsv_enc
	Quantization uint32
	XferFunc     uint32
}

// format is struct v4l2_format (208 bytes): the fmt union holds pointers
// (struct v4l2_window), so it is 8-byte aligned and starts at offset 8; it
// is 200 bytes (raw_data).
type format struct {
	_    [0]uint64
	Type uint32
	_    uint32
	Pix  pixFormat
	_    [200 - 48]byte
}

// requestBuffers is struct v4l2_requestbuffers (20 bytes).
type requestBuffers struct {
	Count        uint32
	Type         uint32
	Memory       uint32
	Capabilities uint32
	Flags        uint8
	Reserved     [3]uint8
}

// timeval is struct timeval with a 64-bit time_t and suseconds_t.
type timeval struct {
	Sec  int64
	Usec int64
}

// timecode is struct v4l2_timecode (16 bytes).
type timecode struct {
	Type     uint32
	Flags    uint32
	Frames   uint8
	Seconds  uint8
	Minutes  uint8
	Hours    uint8
	Userbits [4]uint8
}

// buffer is struct v4l2_buffer (88 bytes). The m union (offset, userptr,
// planes, fd) is 8 bytes at offset 64; for MMAP buffers only its first 4
// bytes, the __u32 offset, are used.
type buffer struct {
	Index     uint32
	Type      uint32
	BytesUsed uint32
	Flags     uint32
	Field     uint32
	_         uint32
	Timestamp timeval
	Timecode  timecode
	Sequence  uint32
	Memory    uint32
	Offset    uint32 // m.offset
	_         uint32 // the rest of the m union
	Length    uint32
	Reserved2 uint32
	RequestFD uint32 // union with reserved
	_         uint32
}

// The ioctl numbers, as the generic _IOC() of <asm-generic/ioctl.h>
// (amd64, arm64) computes them: direction in bits 30-31 (1 write, 2 read),
// the argument's size in bits 16-29, the type ('V') in bits 8-15 and the
// number in bits 0-7.
const (
	iocWrite     = 1 << 30
	iocRead      = 2 << 30
	iocSizeShift = 16
	iocTypeV     = 'V' << 8

	// _IOR('V', 0, struct v4l2_capability)
	vidiocQuerycap = iocRead | uint(unsafe.Sizeof(capability{}))<<iocSizeShift | iocTypeV // number 0
	// _IOWR('V', 2, struct v4l2_fmtdesc)
	vidiocEnumFmt = iocRead | iocWrite | uint(unsafe.Sizeof(fmtdesc{}))<<iocSizeShift | iocTypeV | 2
	// _IOWR('V', 4, struct v4l2_format)
	vidiocGFmt = iocRead | iocWrite | uint(unsafe.Sizeof(format{}))<<iocSizeShift | iocTypeV | 4
	// _IOWR('V', 5, struct v4l2_format)
	vidiocSFmt = iocRead | iocWrite | uint(unsafe.Sizeof(format{}))<<iocSizeShift | iocTypeV | 5
	// _IOWR('V', 8, struct v4l2_requestbuffers)
	vidiocReqbufs = iocRead | iocWrite | uint(unsafe.Sizeof(requestBuffers{}))<<iocSizeShift | iocTypeV | 8
	// _IOWR('V', 9, struct v4l2_buffer)
	vidiocQuerybuf = iocRead | iocWrite | uint(unsafe.Sizeof(buffer{}))<<iocSizeShift | iocTypeV | 9
	// _IOWR('V', 15, struct v4l2_buffer)
	vidiocQbuf = iocRead | iocWrite | uint(unsafe.Sizeof(buffer{}))<<iocSizeShift | iocTypeV | 15
	// _IOWR('V', 17, struct v4l2_buffer)
	vidiocDqbuf = iocRead | iocWrite | uint(unsafe.Sizeof(buffer{}))<<iocSizeShift | iocTypeV | 17
	// _IOW('V', 18, int)
	vidiocStreamon = iocWrite | uint(unsafe.Sizeof(int32(0)))<<iocSizeShift | iocTypeV | 18
	// _IOW('V', 19, int)
	vidiocStreamoff = iocWrite | uint(unsafe.Sizeof(int32(0)))<<iocSizeShift | iocTypeV | 19
)

// cString returns the NUL-terminated string at the start of b.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// fourcc spells a pixel format as its four characters ("MJPG").
func fourcc(f uint32) string {
	b := []byte{byte(f), byte(f >> 8), byte(f >> 16), byte(f >> 24)}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
