// Package gcpercent sets the Go collector's target (GOGC) in the daemon.
//
// The collector lets the heap grow to its live part plus GOGC percent of
// it before it collects again: twice the live heap at the runtime's
// default of 100. While the daemon drains a backlog it allocates about
// 270 MB/s and collects some 65 times a second, and the live heap it
// measures at each collection varies with what is in flight at that
// moment, so the heap's peak over a drain was the highest of many such
// moments: up to 10 MiB of heap in use from about 3–5 MiB live, and a
// peak RSS up to 38.8 MiB under full load, over the 40 MB the daemon is
// held to. At 50 the heap grows to about one and a half times its live
// part: the peak under the same load was 3–4 MiB lower, and the drain
// about a tenth slower for the collector's CPU (docs/benchmarks.md, "Full
// load").
package gcpercent

import (
	"runtime/debug"
	"strconv"
)

// Target is the percent Set puts in force.
const Target = 50

// Set puts the collector's target at Target, unless the GOGC environment
// variable (read through getenv) holds a value the runtime takes ("off",
// or a base-10 signed 32-bit number); then it leaves the runtime's
// setting. It returns the percent in force (-1: collection off) and
// whether the environment decided it.
func Set(getenv func(string) string) (percent int, fromEnv bool) {
	if p, ok := envPercent(getenv("GOGC")); ok {
		return p, true
	}
	debug.SetGCPercent(Target)
	return Target, false
}

// envPercent reads v as the Go runtime reads GOGC (runtime/mgcpacer.go):
// "off" is -1, a base-10 signed 32-bit number is that number (any
// negative one turns collection off too), and anything else is not taken.
func envPercent(v string) (int, bool) {
	if v == "off" {
		return -1, true
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, false
	}
	if n < 0 {
		return -1, true
	}
	return int(n), true
}
