// Package zpl drives Zebra (ZPL II) label printers.
//
// # Protocol
//
// A label is one ^XA … ^XZ format, sent whole. Field data is written with
// ^FH (hex escapes, indicator "_") so that no byte of a barcode or a name can
// end the field or start a command: "^", "~", "_" and control bytes are sent
// as _5E, _7E, _5F and _XX.
//
// "~HS" asks for the host status. The printer answers three strings, each
// framed <STX> … <ETX><CR><LF>:
//
//	string 1: aaa,b,c,dddd,eee,f,g,h,iii,j,k,l  (b paper out, c paused, f buffer full)
//	string 2: mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www  (o head up, p ribbon out)
//	string 3: xxxx,y
//
// A printer may stay silent while media is out or the head is open, so no
// answer within the timeout is itself a status.
//
// # Transports
//
// Raw TCP (port 9100) is implemented here; anything that gives an
// io.ReadWriteCloser (a serial port, a USB printer-class bulk endpoint) fits
// the same Dial function.
//
// # Jobs
//
// Jobs are queued per printer and sent whole. A job leaves the queue only
// once every byte of it was written; after a failed write the printer is
// reconnected and the job is sent again from its start. A format cut short
// before its ^XZ does not print, so a label is never printed twice because
// of a retry.
package zpl
