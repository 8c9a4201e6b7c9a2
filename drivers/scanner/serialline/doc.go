// Package serialline drives barcode scanners that send each code as a line
// of bytes over a serial port (RS-232, or USB CDC-ACM such as /dev/ttyACM0).
//
// # Protocol
//
// The scanner sends the code followed by a terminator: CR by default, or LF,
// CR LF, TAB, ETX or any single byte, as configured. Many scanners can be
// set to add a fixed prefix or suffix (a store code, an AIM symbology
// identifier such as "]C1"); configured prefixes and suffixes are removed
// when present. Nothing is sent to the scanner.
//
// Bytes are handled explicitly: a line longer than max_length is discarded
// up to its terminator with a warning, never truncated and never buffered
// without bound; control characters are stripped (the default), kept, or
// cause the line to be rejected, except ASCII GS (0x1D), which GS1 barcodes
// use as a field separator and which is always kept. Bytes above 0x7F are
// kept unchanged; a code that is not valid UTF-8 is still delivered byte for
// byte.
//
// # Lifecycle
//
// The driver owns its port in one goroutine. When the port vanishes (the
// scanner is unplugged) it reports the device disconnected and reopens the
// configured path with capped exponential backoff, so a scanner plugged back
// in, or a /dev/serial/by-id link that now points at another tty, is picked
// up again without a restart. Cancelling the context closes the port, which
// unblocks a pending read.
package serialline
