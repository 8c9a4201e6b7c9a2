package station

import "time"

// codeWindow remembers the parcel codes a station received within the
// duplicate window, and forgets each as soon as it falls out, so that
// the number of codes it holds follows the scan rate, never the station's
// age: at most the codes of one window (its list of them up to twice
// that, between two compactions).
//
// Times keep their monotonic clock reading, as time.Now gives them, so
// that a step of the wall clock neither makes a rescan a new parcel nor
// keeps codes longer; codes replayed from the store at start carry wall
// times only, and Go compares those by the wall clock.
//
// Not safe for concurrent use: the goroutine that resolves scans owns it.
type codeWindow struct {
	window time.Duration
	last   map[string]time.Time // code → when it was last received
	// order holds every add still within the window, from head on,
	// sorted by time: adds come in time order (a station resolves its
	// scans one after the other), and one that does not (a manual entry
	// a moment behind a scan, replayed codes after the clock stepped
	// back) is put in its place.
	order []seenCode
	head  int
}

type seenCode struct {
	code string
	at   time.Time
}

func newCodeWindow(window time.Duration) *codeWindow {
	return &codeWindow{window: window, last: map[string]time.Time{}}
}

// lookup returns when code was last received, if it is remembered.
func (w *codeWindow) lookup(code string) (time.Time, bool) {
	at, ok := w.last[code]
	return at, ok
}

// add records code as received at at and forgets the codes received a
// window or more before at. A window of 0 or less remembers nothing.
func (w *codeWindow) add(code string, at time.Time) {
	if w.window <= 0 {
		return
	}
	if prev, ok := w.last[code]; !ok || !at.Before(prev) {
		w.last[code] = at
	}
	i := len(w.order)
	for i > w.head && at.Before(w.order[i-1].at) {
		i--
	}
	w.order = append(w.order, seenCode{})
	copy(w.order[i+1:], w.order[i:])
	w.order[i] = seenCode{code, at}

	newest := w.order[len(w.order)-1].at
	for w.head < len(w.order) {
		e := w.order[w.head]
		if newest.Sub(e.at) < w.window {
			break // this one and every later one are within the window
		}
		if w.last[e.code].Equal(e.at) { // not received again since
			delete(w.last, e.code)
		}
		w.order[w.head] = seenCode{}
		w.head++
	}
	// Move what is left to the front once the head has passed half of
	// it: amortised O(1) an add.
	if w.head > len(w.order)/2 {
		n := copy(w.order, w.order[w.head:])
		clear(w.order[n:])
		w.order, w.head = w.order[:n], 0
	}
}

// len is the number of codes remembered.
func (w *codeWindow) len() int { return len(w.last) }
