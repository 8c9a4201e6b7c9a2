// Package goprocs sets how many threads may run Go code at once
// (GOMAXPROCS) in the daemon.
//
// The runtime's default is one per CPU the process may use. The daemon's
// SQLite calls are C calls, and a C call keeps its thread's place until
// it returns or the runtime's monitor takes the place back, which takes
// from 20 µs up to 10 ms. A commit that waits for fsync is such a call. On
// a box of two CPUs that left the rest of the daemon (the uplink's
// publishes, the status page) half the places for the length of each
// fsync: under full load the drain ran at 0.80–0.89 of its idle rate in
// one hour's rounds, and with two places more (four on two CPUs) at
// 0.95–0.97 in the next (docs/benchmarks.md, "Full load").
package goprocs

import (
	"runtime"
	"strconv"
)

// Extra is how many places Set adds to the runtime's default: one for
// the store's writer, one for a reader, each of which may wait in a C
// call.
const Extra = 2

// Why says what decided the number Set left in force.
type Why int

const (
	// Raised: the runtime's default (the CPUs) plus Extra.
	Raised Why = iota
	// Environment: the GOMAXPROCS environment variable, which the runtime
	// read at start.
	Environment
	// Quota: the runtime's default, which is below the CPUs because a CPU
	// quota (a cgroup's) limits the process. More threads than the quota
	// would only use it up sooner and be stopped until its next period.
	// The runtime's default is never below two (or the CPUs, if fewer), so
	// a quota under two CPUs is not seen here: the number is raised then.
	// The runtime goes on following the quota as it changes.
	Quota
)

// Set raises GOMAXPROCS to the runtime's default plus Extra, unless the
// GOMAXPROCS environment variable (read through getenv) holds a value the
// runtime takes, or a CPU quota holds the default below the CPUs the
// process may use; then it leaves the number as it is. It returns the
// number in force, the CPUs the process may use (runtime.NumCPU) and why.
//
// Raising GOMAXPROCS stops the runtime from following later changes of
// the process's CPU limit (a cgroup's quota or the CPUs it may use,
// changed while it runs): the number is decided once, at start.
func Set(getenv func(string) string) (n, cpus int, why Why) {
	cpus = runtime.NumCPU()
	if validEnv(getenv("GOMAXPROCS")) {
		return runtime.GOMAXPROCS(0), cpus, Environment
	}
	runtime.SetDefaultGOMAXPROCS() // the variable is unset or ignored
	def := runtime.GOMAXPROCS(0)
	n, why = decide(def, cpus)
	if n != def {
		runtime.GOMAXPROCS(n)
	}
	return n, cpus, why
}

// decide is the number for a runtime default of def threads on a process
// that may use cpus CPUs.
func decide(def, cpus int) (int, Why) {
	if def < cpus {
		return def, Quota
	}
	return def + Extra, Raised
}

// validEnv says whether the Go runtime takes v as GOMAXPROCS. It reads it
// as the runtime does (Go 1.26 and later: runtime/proc.go), a base-10
// number that fits 32 bits, sign allowed, above 0.
func validEnv(v string) bool {
	n, err := strconv.ParseInt(v, 10, 32)
	return err == nil && n > 0
}
