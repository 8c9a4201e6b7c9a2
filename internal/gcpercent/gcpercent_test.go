package gcpercent

import (
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

func TestEnvPercent(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want int
		ok   bool
	}{
		{"", 0, false},
		{"100", 100, true},
		{"50", 50, true},
		{"0", 0, true},
		{"+80", 80, true},
		{"050", 50, true},
		{"off", -1, true},
		{"-1", -1, true},
		{"-20", -1, true},
		{"OFF", 0, false},
		{"abc", 0, false},
		{"50%", 0, false},
		{"2147483647", 2147483647, true},
		{"2147483648", 0, false}, // not a signed 32-bit number
	} {
		got, ok := envPercent(tc.v)
		if got != tc.want || ok != tc.ok {
			t.Errorf("envPercent(%q) = %d, %v; want %d, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

// TestEnvPercentAsRuntime runs this test binary again with each GOGC and
// compares what the Go runtime put in force with what envPercent reads.
func TestEnvPercentAsRuntime(t *testing.T) {
	if os.Getenv("GCPERCENT_CHILD") == "TestEnvPercentAsRuntime" {
		// The runtime's setting, read without changing it for long.
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		os.Stdout.WriteString("percent=" + strconv.Itoa(p) + "\n")
		return
	}
	for _, v := range []string{"", "100", "50", "0", "+80", "050", "off", "-1", "-20", "OFF", "abc", "50%", "2147483647", "2147483648", " 50"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnvPercentAsRuntime$")
		cmd.Env = append(os.Environ(), "GCPERCENT_CHILD=TestEnvPercentAsRuntime", "GOGC="+v)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOGC=%q: %v", v, err)
		}
		_, after, found := strings.Cut(string(out), "percent=")
		if !found {
			t.Fatalf("GOGC=%q: no percent in %q", v, out)
		}
		runtimeP, _ := strconv.Atoi(strings.Fields(after)[0])
		want := 100 // the runtime's default
		if p, ok := envPercent(v); ok {
			want = p
		}
		if runtimeP != want {
			t.Errorf("GOGC=%q: the runtime put %d in force; envPercent says %d", v, runtimeP, want)
		}
	}
}

func TestSet(t *testing.T) {
	saved := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(saved) })
	for _, tc := range []struct {
		env     string
		want    int
		fromEnv bool
	}{
		{"", Target, false},
		{"abc", Target, false},
		{"80", 80, true},
		{"off", -1, true},
	} {
		debug.SetGCPercent(100)
		p, fromEnv := Set(func(k string) string {
			if k == "GOGC" {
				return tc.env
			}
			return ""
		})
		if p != tc.want || fromEnv != tc.fromEnv {
			t.Errorf("GOGC=%q: Set = %d, %v; want %d, %v", tc.env, p, fromEnv, tc.want, tc.fromEnv)
		}
		// Where the environment decides, Set leaves the runtime's setting
		// (here the 100 put before).
		inForce := debug.SetGCPercent(100)
		if want := map[bool]int{false: Target, true: 100}[tc.fromEnv]; inForce != want {
			t.Errorf("GOGC=%q: %d in force after Set, want %d", tc.env, inForce, want)
		}
	}
}
