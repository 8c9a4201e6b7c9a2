package goprocs

import (
	"runtime"
	"testing"
)

func TestValidEnvAsTheRuntimeReadsIt(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "0": false, "1": true, "4": true, "0004": true, "1024": true, "5000": true,
		"2147483647": true, "2147483648": false, "-3": false, "+3": false, " 3": false, "3 ": false,
		"3.0": false, "abc": false, "0x4": false,
	} {
		if got := validEnv(v); got != want {
			t.Errorf("validEnv(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestSet(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(def + 5) // as if an earlier call had changed it

	env := func(v string) func(string) string {
		return func(name string) string {
			if name == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
	// Unset or ignored by the runtime: the default plus Extra.
	for _, v := range []string{"", "0", "abc", " 3"} {
		n, byEnv := Set(env(v))
		if byEnv || n != def+Extra || runtime.GOMAXPROCS(0) != def+Extra {
			t.Errorf("GOMAXPROCS=%q: Set = %d, %v; in force %d; want %d, false", v, n, byEnv, runtime.GOMAXPROCS(0), def+Extra)
		}
	}
	// Set to a valid value: the runtime used it at start; Set leaves what
	// is in force.
	runtime.GOMAXPROCS(3)
	n, byEnv := Set(env("3"))
	if !byEnv || n != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("GOMAXPROCS=3: Set = %d, %v; in force %d; want 3, true", n, byEnv, runtime.GOMAXPROCS(0))
	}
}
