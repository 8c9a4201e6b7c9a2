package v4l2

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
)

// JPEG markers the repair looks at.
const (
	markerSOI = 0xd8
	markerEOI = 0xd9
	markerSOS = 0xda
	markerDHT = 0xc4
	markerTEM = 0x01
	markerRST = 0xd0 // RST0..RST7 are 0xd0..0xd7
)

// standardDHT is a DHT segment with the four Huffman tables of ITU T.81
// Annex K.3 (K.3.3.1 DC, K.3.3.2 AC; luminance as tables 0, chrominance as
// tables 1), the tables a UVC camera's MJPEG frames are coded with when
// they leave the DHT segment out (the AVI1 convention); ffmpeg's mjpeg2jpeg
// and libjpeg insert the same ones. Length 0x01a2 = 2 + 4*17 + 12+162+12+162.
const standardDHT = "" +
	"\xff\xc4\x01\xa2" +
	// DC luminance (Tc/Th 0x00): BITS, then HUFFVAL.
	"\x00" +
	"\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b" +
	// AC luminance (Tc/Th 0x10): BITS, then HUFFVAL.
	"\x10" +
	"\x00\x02\x01\x03\x03\x02\x04\x03\x05\x05\x04\x04\x00\x00\x01\x7d" +
	"\x01\x02\x03\x00\x04\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61\x07" +
	"\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1\xc1\x15\x52\xd1\xf0" +
	"\x24\x33\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28" +
	"\x29\x2a\x34\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49" +
	"\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69" +
	"\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x83\x84\x85\x86\x87\x88\x89" +
	"\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7" +
	"\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4\xc5" +
	"\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2" +
	"\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8" +
	"\xf9\xfa" +
	// DC chrominance (Tc/Th 0x01): BITS, then HUFFVAL.
	"\x01" +
	"\x00\x03\x01\x01\x01\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00" +
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b" +
	// AC chrominance (Tc/Th 0x11): BITS, then HUFFVAL.
	"\x11" +
	"\x00\x02\x01\x02\x04\x04\x03\x04\x07\x05\x04\x04\x00\x01\x02\x77" +
	"\x00\x01\x02\x03\x11\x04\x05\x21\x31\x06\x12\x41\x51\x07\x61\x71" +
	"\x13\x22\x32\x81\x08\x14\x42\x91\xa1\xb1\xc1\x09\x23\x33\x52\xf0" +
	"\x15\x62\x72\xd1\x0a\x16\x24\x34\xe1\x25\xf1\x17\x18\x19\x1a\x26" +
	"\x27\x28\x29\x2a\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48" +
	"\x49\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68" +
	"\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x82\x83\x84\x85\x86\x87" +
	"\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5" +
	"\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3" +
	"\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda" +
	"\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf2\xf3\xf4\xf5\xf6\xf7\xf8" +
	"\xf9\xfa"

// repairMJPEG turns one MJPEG frame into a complete JPEG file: the frame
// must start with SOI; the bytes after its EOI (the rest of a buffer, or
// garbage) are cut off; when no DHT segment comes before the first SOS the
// standard tables are inserted right before it. It checks the structure
// only: a frame that passes may still not decode (see frameToJPEG). The
// result shares no memory with frame when a DHT was inserted, and is a
// prefix of frame otherwise.
func repairMJPEG(frame []byte) ([]byte, error) {
	if len(frame) < 2 || frame[0] != 0xff || frame[1] != markerSOI {
		return nil, errors.New("no SOI marker (FFD8) at the start")
	}
	sos := -1       // where the first SOS marker starts
	dht := false    // a DHT segment came before the first SOS
	end := -1       // just past EOI
	inScan := false // reading entropy-coded data
	i := 2
	for end < 0 {
		if inScan {
			// Entropy-coded data: 0xFF is followed by 0x00 (a stuffed
			// byte), RSTn, or fill bytes before a marker.
			j := bytes.IndexByte(frame[i:], 0xff)
			if j < 0 {
				return nil, errors.New("no EOI marker (FFD9): frame truncated")
			}
			i += j
			for i+1 < len(frame) && frame[i+1] == 0xff {
				i++
			}
			if i+1 >= len(frame) {
				return nil, errors.New("no EOI marker (FFD9): frame truncated")
			}
			m := frame[i+1]
			if m == 0x00 || (m >= markerRST && m <= markerRST+7) {
				i += 2
				continue
			}
			inScan = false
			continue // i is at the marker's 0xFF
		}
		// Between segments: a marker, possibly after fill bytes.
		if i >= len(frame) || frame[i] != 0xff {
			if i >= len(frame) {
				return nil, errors.New("no EOI marker (FFD9): frame truncated")
			}
			return nil, fmt.Errorf("no marker at byte %d (found %#02x)", i, frame[i])
		}
		for i+1 < len(frame) && frame[i+1] == 0xff {
			i++
		}
		if i+1 >= len(frame) {
			return nil, errors.New("no EOI marker (FFD9): frame truncated")
		}
		start := i
		m := frame[i+1]
		i += 2
		switch {
		case m == markerEOI:
			if sos < 0 {
				return nil, errors.New("EOI before any SOS: no image data")
			}
			end = i
			continue
		case m == markerSOI || m == 0x00:
			return nil, fmt.Errorf("unexpected marker FF%02X at byte %d", m, start)
		case m == markerTEM || (m >= markerRST && m <= markerRST+7):
			continue // no length
		}
		if i+2 > len(frame) {
			return nil, errors.New("no EOI marker (FFD9): frame truncated")
		}
		n := int(frame[i])<<8 | int(frame[i+1])
		if n < 2 {
			return nil, fmt.Errorf("marker FF%02X at byte %d: bad length %d", m, start, n)
		}
		if i+n > len(frame) {
			return nil, errors.New("no EOI marker (FFD9): frame truncated")
		}
		i += n
		switch m {
		case markerDHT:
			if sos < 0 {
				dht = true
			}
		case markerSOS:
			if sos < 0 {
				sos = start
			}
			inScan = true
		}
	}
	if dht {
		return frame[:end], nil
	}
	out := make([]byte, 0, end+len(standardDHT))
	out = append(out, frame[:sos]...)
	out = append(out, standardDHT...)
	return append(out, frame[sos:end]...), nil
}

// frameToJPEG repairs an MJPEG frame (repairMJPEG) and checks that Go's
// image/jpeg reads it: its header (DecodeConfig), a size of at most
// maxPixels, then the whole image, so that a frame with a damaged scan is
// refused rather than handed on.
func frameToJPEG(frame []byte, maxPixels int) ([]byte, image.Config, error) {
	out, err := repairMJPEG(frame)
	if err != nil {
		return nil, image.Config{}, err
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(out))
	if err != nil {
		return nil, image.Config{}, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxPixels/cfg.Height {
		return nil, image.Config{}, fmt.Errorf("implausible size %dx%d", cfg.Width, cfg.Height)
	}
	if _, err := jpeg.Decode(bytes.NewReader(out)); err != nil {
		return nil, image.Config{}, err
	}
	return out, cfg, nil
}

// yuyvToYCbCr copies a YUYV (YUV 4:2:2, Y0 U Y1 V) frame of w×h pixels
// whose lines are bpl bytes apart into an image.
func yuyvToYCbCr(frame []byte, w, h, bpl int) (*image.YCbCr, error) {
	if w <= 0 || h <= 0 || w%2 != 0 {
		return nil, fmt.Errorf("bad YUYV size %dx%d (the width must be even)", w, h)
	}
	if bpl < 2*w {
		return nil, fmt.Errorf("bad YUYV line length %d bytes for width %d", bpl, w)
	}
	if need := bpl*(h-1) + 2*w; len(frame) < need {
		return nil, fmt.Errorf("short YUYV frame: %d bytes, want %d", len(frame), need)
	}
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio422)
	for y := range h {
		line := frame[y*bpl : y*bpl+2*w]
		ys := img.Y[y*img.YStride : y*img.YStride+w]
		cb := img.Cb[y*img.CStride : y*img.CStride+w/2]
		cr := img.Cr[y*img.CStride : y*img.CStride+w/2]
		for x := range w / 2 {
			p := line[4*x : 4*x+4]
			ys[2*x] = p[0]
			cb[x] = p[1]
			ys[2*x+1] = p[2]
			cr[x] = p[3]
		}
	}
	return img, nil
}

// encodeJPEG encodes img with image/jpeg at quality 90.
func encodeJPEG(img image.Image) ([]byte, error) {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
