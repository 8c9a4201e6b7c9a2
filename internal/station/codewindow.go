package station

import "time"

// codeWindow remembers the parcel codes a station received within the
// duplicate window, and forgets each as soon as it falls out: it holds
// exactly one window's worth of codes, so its size follows the scan rate
// and never the station's age.
//
// Codes are added in time order (a station resolves its scans one after
// the other), so the oldest are at the head of order and expire from it.
// Not safe for concurrent use: the goroutine that resolves scans owns it.
type codeWindow struct {
	window time.Duration
	last   map[string]int64 // code → when it was last received, Unix ns
	order  []seenCode       // every add within the window, oldest first, from head
	head   int
}

type seenCode struct {
	code string
	at   int64 // Unix ns
}

func newCodeWindow(window time.Duration) *codeWindow {
	return &codeWindow{window: window, last: map[string]int64{}}
}

// lookup returns when code was last received, if it is remembered.
func (w *codeWindow) lookup(code string) (time.Time, bool) {
	at, ok := w.last[code]
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, at), true
}

// add records code as received at at and forgets the codes received a
// window or more before at. A window of 0 or less remembers nothing.
func (w *codeWindow) add(code string, at time.Time) {
	if w.window <= 0 {
		return
	}
	ns := at.UnixNano()
	w.last[code] = ns
	w.order = append(w.order, seenCode{code, ns})
	for w.head < len(w.order) {
		e := w.order[w.head]
		if ns-e.at < int64(w.window) {
			break // this one and every later one are within the window
		}
		if w.last[e.code] == e.at { // not received again since
			delete(w.last, e.code)
		}
		w.order[w.head] = seenCode{}
		w.head++
	}
	// Move what is left to the front once the head has passed half of
	// it: amortised O(1) an add, and order never holds more than twice
	// the window's codes.
	if w.head > len(w.order)/2 {
		n := copy(w.order, w.order[w.head:])
		clear(w.order[n:])
		w.order, w.head = w.order[:n], 0
	}
}

// len is the number of codes remembered.
func (w *codeWindow) len() int { return len(w.last) }
