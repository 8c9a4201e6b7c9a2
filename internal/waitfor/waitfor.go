// Package waitfor is the one wait-for-condition helper of the tests: it
// polls a condition until it holds or a deadline passes, so that a test
// waits exactly as long as the behaviour takes instead of sleeping for a
// guessed time.
package waitfor

import (
	"fmt"
	"time"
)

// T is the part of testing.TB the helpers use.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Poll is how often a condition is checked.
const Poll = 5 * time.Millisecond

// True waits until cond returns true, or fails the test after timeout with
// "timed out after …: what".
func True(t T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Until(timeout, cond); err != nil {
		t.Fatalf("%v: %s", err, what)
	}
}

// Until waits until cond returns true; it returns an error after timeout.
func Until(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(Poll)
	}
	return nil
}

// Value waits until get returns a value that ok accepts and returns it, or
// fails the test after timeout, printing the last value seen.
func Value[V any](t T, timeout time.Duration, what string, get func() V, ok func(V) bool) V {
	t.Helper()
	var last V
	if err := Until(timeout, func() bool { last = get(); return ok(last) }); err != nil {
		t.Fatalf("%v: %s (last: %v)", err, what, last)
	}
	return last
}
