// Package goprocs sets how many threads may run Go code at once
// (GOMAXPROCS) in the daemon.
//
// The runtime's default is one per CPU the process may use. The daemon's
// SQLite calls are C calls, and a C call keeps its thread's place until
// it returns or the runtime's monitor takes the place back, which takes
// from 20 µs up to 10 ms. A commit that waits for fsync is such a call. On
// a box of two CPUs that left the rest of the daemon (the uplink's
// publishes, the status page) half the places for the length of each
// fsync: under full load the drain ran at 0.78–0.89 of its idle rate.
// With two places more (four on two CPUs) it runs at 0.95–0.97, and a
// scan's commit p99 drops from 5–6 ms to 4–5 ms (docs/benchmarks.md).
package goprocs

import (
	"math"
	"runtime"
)

// Extra is how many places Set adds to the runtime's default: one for
// the store's writer, one for a reader, each of which may wait in a C
// call.
const Extra = 2

// Set raises GOMAXPROCS to the runtime's default plus Extra, unless the
// GOMAXPROCS environment variable (read through getenv) is set to a
// value the runtime takes, in which case the runtime already used it and
// Set leaves it. It returns the number in force and whether the variable
// decided it.
//
// Setting GOMAXPROCS stops the runtime from following later changes of
// the process's CPU limit (a cgroup's quota changed while running); the
// daemon reads it once at start.
func Set(getenv func(string) string) (n int, byEnv bool) {
	if validEnv(getenv("GOMAXPROCS")) {
		return runtime.GOMAXPROCS(0), true
	}
	runtime.SetDefaultGOMAXPROCS()
	n = runtime.GOMAXPROCS(0) + Extra
	runtime.GOMAXPROCS(n)
	return n, false
}

// validEnv says whether the runtime takes v as GOMAXPROCS, as Go's
// runtime reads it: digits only (no sign, no blanks), a value from 1 to
// 2^31-1 (more than 1024 counts as 1024). It ignores anything else.
func validEnv(v string) bool {
	if v == "" {
		return false
	}
	var n int64
	for _, c := range []byte(v) {
		if c < '0' || c > '9' {
			return false
		}
		if n = n*10 + int64(c-'0'); n > math.MaxInt32 {
			return false
		}
	}
	return n > 0
}
