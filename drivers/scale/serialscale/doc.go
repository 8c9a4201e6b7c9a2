// Package serialscale drives parcel scales on a serial port.
//
// # Protocols
//
// nci (NCI / Weigh-Tronix SCP-01, many shipping scales; usually 9600 7E1):
// the host sends "W\r" and the scale answers "\n0002.50LB\r\n" followed by a
// two-character status "hh\r" and ETX (0x03). Variants leave out the CR/LF
// around the status or put an "S" before it; all are accepted. Status
// character 1: bit 0 motion, bit 1 at zero, bit 2 RAM error, bit 3 EEPROM
// error; character 2: bit 0 under capacity, bit 1 over capacity, bit 2 ROM
// error, bit 3 calibration error (bits 4 and 5 are always set, so the
// characters are '0'…'?'). An unknown command is answered "\n?\r\x03".
//
// mt-sics (Mettler Toledo MT-SICS level 0): lines end in CR LF. "SI" asks
// for the immediate weight: "S S     100.00 g" (stable) or "S D …"
// (dynamic); "S I" busy, "S +" overload, "S -" underload; "ES", "ET", "EL"
// are command errors.
//
// toledo (8217 style): the host sends "W" without terminator; the scale
// answers "\x02  1.234\r" in the configured unit, or "\x02?<status>\r" with
// status bits 0 motion, 1 over capacity, 2 under zero.
//
// continuous: the scale streams frames by itself, such as
// "ST,GS,+  1.234 kg" (ST stable, US unstable, OL overload), one per line;
// the newest frame wins. Nothing is sent to the scale.
//
// Every parser masks bytes to 7 bits itself, because not every port applies
// parity (a PTY, some USB adapters hand the parity bit through). A scale
// that does not answer within the read timeout is reported as not
// answering, not waited on; noise between frames is skipped.
package serialscale
