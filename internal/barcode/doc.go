// Package barcode recognises what a scanned code is: which carrier's
// tracking number, which service, whether its check digit holds, which GS1
// element strings it carries, or which of the mailroom's own codes
// (recipient badges, mail stops, shelves) it is. It does no I/O.
//
// Classification never rejects a code: the raw value is always kept, and a
// code that matches nothing is carrier "unknown". When more than one
// carrier's format fits, the check digit decides; when it cannot decide,
// the result says so (Candidates) instead of guessing.
package barcode
