package goprocs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestValidEnvAsTheRuntimeReadsIt runs this test binary with each value
// of GOMAXPROCS and compares what its runtime took with validEnv.
func TestValidEnvAsTheRuntimeReadsIt(t *testing.T) {
	if os.Getenv("GOPROCS_REPORT") != "" {
		fmt.Printf("gomaxprocs=%d\n", runtime.GOMAXPROCS(0))
		return
	}
	def := func() int {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
		runtime.SetDefaultGOMAXPROCS()
		return runtime.GOMAXPROCS(0)
	}()
	for _, v := range []string{"", "0", "-0", "+0", "1", "3", "+3", "-3", "0003", "64", " 3", "3 ", "3.0", "abc", "0x4", "3_0", "2147483648"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestValidEnvAsTheRuntimeReadsIt$")
		cmd.WaitDelay = time.Second
		cmd.Env = append(os.Environ(), "GOPROCS_REPORT=1", "GOMAXPROCS="+v)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOMAXPROCS=%q: %v\n%s", v, err, out)
		}
		_, after, ok := strings.Cut(string(out), "gomaxprocs=")
		if !ok {
			t.Fatalf("GOMAXPROCS=%q: no report in %q", v, out)
		}
		got, _ := strconv.Atoi(strings.Fields(after)[0])
		n, _ := strconv.ParseInt(v, 10, 64)
		if n == int64(def) {
			continue // taken or not, the same number
		}
		if taken := got != def; taken != validEnv(v) {
			t.Errorf("GOMAXPROCS=%q: the runtime runs with %d (default %d), validEnv says %v", v, got, def, validEnv(v))
		}
	}
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		def, cpus, want int
		why             Why
	}{
		{def: 2, cpus: 2, want: 4, why: Raised},
		{def: 1, cpus: 1, want: 3, why: Raised},
		{def: 8, cpus: 8, want: 10, why: Raised},
		{def: 2, cpus: 8, want: 2, why: Quota}, // CPUQuota=150% on eight CPUs
		{def: 3, cpus: 4, want: 3, why: Quota},
	} {
		if n, why := decide(tc.def, tc.cpus); n != tc.want || why != tc.why {
			t.Errorf("decide(%d, %d) = %d, %v; want %d, %v", tc.def, tc.cpus, n, why, tc.want, tc.why)
		}
	}
}

func TestSet(t *testing.T) {
	saved := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(saved) })
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	wantN, wantWhy := decide(def, runtime.NumCPU())
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
	// Unset or ignored by the runtime: decided from the default.
	for _, v := range []string{"", "0", "abc", " 3"} {
		runtime.SetDefaultGOMAXPROCS()
		n, cpus, why := Set(env(v))
		if n != wantN || why != wantWhy || cpus != runtime.NumCPU() || runtime.GOMAXPROCS(0) != wantN {
			t.Errorf("GOMAXPROCS=%q: Set = %d, %d, %v; in force %d; want %d, %d, %v", v, n, cpus, why, runtime.GOMAXPROCS(0), wantN, runtime.NumCPU(), wantWhy)
		}
	}
	// Set to a value the runtime takes: it used it at start (here, as if
	// it had); Set leaves what is in force.
	runtime.GOMAXPROCS(3)
	if n, _, why := Set(env("+3")); why != Environment || n != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("GOMAXPROCS=+3: Set = %d, %v; in force %d; want 3, Environment", n, why, runtime.GOMAXPROCS(0))
	}
}
