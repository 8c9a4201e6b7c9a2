package station

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCodeWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type add struct {
		code string
		s    int
	}
	for _, tc := range []struct {
		name   string
		window time.Duration
		adds   []add
		want   map[string]int // code → second it is remembered from; absent: forgotten
	}{
		{"within the window", 10 * time.Second, []add{{"a", 0}, {"b", 5}, {"c", 9}}, map[string]int{"a": 0, "b": 5, "c": 9}},
		{"a window old is forgotten", 10 * time.Second, []add{{"a", 0}, {"b", 5}, {"c", 10}}, map[string]int{"b": 5, "c": 10}},
		{"everything old at once", 10 * time.Second, []add{{"a", 0}, {"b", 1}, {"c", 2}, {"d", 100}}, map[string]int{"d": 100}},
		{"received again keeps the newer time", 10 * time.Second, []add{{"a", 0}, {"b", 1}, {"a", 8}, {"c", 12}}, map[string]int{"a": 8, "c": 12}},
		{"received again, then out of the window", 10 * time.Second, []add{{"a", 0}, {"a", 8}, {"c", 18}}, map[string]int{"c": 18}},
		{"an add a moment behind is put in its place", 10 * time.Second, []add{{"a", 0}, {"c", 5}, {"b", 3}, {"d", 13}}, map[string]int{"c": 5, "d": 13}},
		{"an older time does not replace a newer one", 10 * time.Second, []add{{"a", 8}, {"a", 2}, {"c", 15}}, map[string]int{"a": 8, "c": 15}},
		{"the same code twice at one time", 10 * time.Second, []add{{"a", 0}, {"a", 0}, {"b", 10}}, map[string]int{"b": 10}},
		{"an add older than the window is not kept", 10 * time.Second, []add{{"b", 20}, {"a", 5}}, map[string]int{"b": 20}},
		{"no window remembers nothing", 0, []add{{"a", 0}, {"b", 1}}, map[string]int{}},
		{"a negative window remembers nothing", -time.Second, []add{{"a", 0}, {"b", 1}}, map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newCodeWindow(tc.window)
			for _, a := range tc.adds {
				w.add(a.code, at(a.s))
			}
			if w.len() != len(tc.want) {
				t.Errorf("len = %d, want %d", w.len(), len(tc.want))
			}
			for _, code := range []string{"a", "b", "c", "d"} {
				got, ok := w.lookup(code)
				want, wantOK := tc.want[code]
				if ok != wantOK || ok && !got.Equal(at(want)) {
					t.Errorf("lookup(%q) = %v, %v; want %v, %v", code, got, ok, at(want), wantOK)
				}
			}
		})
	}
}

// TestCodeWindowStaysSmall: a station that runs for ten windows at a
// steady rate holds one window's codes, and its list of them at most twice
// that.
func TestCodeWindowStaysSmall(t *testing.T) {
	const window, perSecond = 30, 50
	w := newCodeWindow(window * time.Second)
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for i := range 10 * window * perSecond {
		w.add(fmt.Sprintf("PKG%09d", i), t0.Add(time.Duration(i)*time.Second/perSecond))
		if n := len(w.order) - w.head; n != w.len() {
			t.Fatalf("after %d codes: %d in order, %d remembered", i+1, n, w.len())
		}
		if len(w.order) > 2*window*perSecond+1 {
			t.Fatalf("after %d codes: order holds %d entries, want at most %d", i+1, len(w.order), 2*window*perSecond+1)
		}
	}
	if w.len() != window*perSecond {
		t.Fatalf("%d codes remembered, want %d", w.len(), window*perSecond)
	}
}

// TestOnClock: a replayed (wall-only) time becomes a time on the clock of
// now, with its monotonic reading and not ahead of now; a live one stays.
func TestOnClock(t *testing.T) {
	now := time.Now() // with a monotonic reading
	past := now.Add(-5 * time.Second).Round(0)
	future := now.Add(time.Hour).Round(0)
	for _, tc := range []struct {
		name string
		at   time.Time
		want time.Time
	}{
		{"replayed, in the past", past, past},
		{"replayed, ahead of the clock", future, now},
		{"live", now.Add(-time.Millisecond), now.Add(-time.Millisecond)},
		{"live, ahead of now", now.Add(time.Minute), now.Add(time.Minute)},
	} {
		got := onClock(now, tc.at)
		if !got.Equal(tc.want) {
			t.Errorf("%s: onClock = %v, want %v", tc.name, got, tc.want)
		}
		if !strings.Contains(got.String(), " m=") {
			t.Errorf("%s: %v has no monotonic reading", tc.name, got)
		}
	}
	// In the window, a live code after a replayed one from ahead of the
	// clock is kept, and so is the replayed one.
	w := newCodeWindow(30 * time.Second)
	w.add("replayed", onClock(now, future))
	w.add("live", onClock(now.Add(time.Second), now.Add(time.Second)))
	if _, ok := w.lookup("live"); !ok || w.len() != 2 {
		t.Fatalf("after a replayed code from ahead of the clock and a live one: %d remembered, live kept %v", w.len(), ok)
	}
}
