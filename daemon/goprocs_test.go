package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// TestGOMAXPROCS checks what docs/installation.md promises: `mailroomd
// run` lets Go code run on two threads more than the CPUs it may use
// (unless a CPU quota holds the runtime's default below them), and leaves
// the number to a GOMAXPROCS the Go runtime takes; the log's line after
// the C allocator's says which, and /metrics reports the number in force.
func TestGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS") // restored afterwards by t.Setenv
	saved := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(saved) })
	runtime.SetDefaultGOMAXPROCS()
	def, cpus := runtime.GOMAXPROCS(0), runtime.NumCPU() // the runtime's default here, as the daemon's

	s := newSetup(t, "mr-procs")
	port := mqtttest.FreePort(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	cfg := s.config(t, s.broker.URL(), fmt.Sprintf("web:\n  listen: 127.0.0.1:%d\n  users: [{name: clara, role: clerk, password_hash: %q}]", port, hash))
	// Where a CPU quota holds the default below the CPUs, it stays.
	raised, n := fmt.Sprintf(`msg="GOMAXPROCS raised above the CPUs for SQLite's blocking calls" GOMAXPROCS=%d cpus=%d`, def+2, cpus), def+2
	if def < cpus {
		raised, n = fmt.Sprintf(`msg="GOMAXPROCS left to the CPU quota" GOMAXPROCS=%d cpus=%d`, def, cpus), def
	}
	for _, tc := range []struct {
		env  []string
		want string
		n    int
	}{
		{nil, raised, n},
		{[]string{"GOMAXPROCS=3"}, `msg="GOMAXPROCS left to the environment" GOMAXPROCS=3`, 3},
		{[]string{"GOMAXPROCS=1"}, `msg="GOMAXPROCS left to the environment" GOMAXPROCS=1`, 1},
		{[]string{"GOMAXPROCS=+5"}, `msg="GOMAXPROCS left to the environment" GOMAXPROCS=5`, 5},
		// Values the Go runtime ignores.
		{[]string{"GOMAXPROCS=abc"}, raised, n},
		{[]string{"GOMAXPROCS=0"}, raised, n},
	} {
		name := strings.Join(tc.env, ",")
		if name == "" {
			name = "unset"
		}
		t.Run(name, func(t *testing.T) {
			p := startDaemon(t, cfg, tc.env...)
			p.waitLog(t, tc.want, 10*time.Second)
			// On Linux the line after the C allocator's, the log's second.
			if runtime.GOOS == "linux" {
				lines := strings.SplitN(p.log.String(), "\n", 3)
				if len(lines) < 3 || !strings.Contains(lines[0], "C allocator") || !strings.Contains(lines[1], tc.want) {
					t.Fatalf("the log's first two lines are not the C allocator's and %q:\n%s", tc.want, p.log.String())
				}
			}
			if strings.Count(p.log.String(), `msg="GOMAXPROCS`) != 1 {
				t.Fatalf("log:\n%s", p.log.String())
			}
			got := metricValue(t, port, "go_sched_gomaxprocs_threads")
			if n, _ := strconv.Atoi(got); n != tc.n {
				t.Fatalf("go_sched_gomaxprocs_threads %s, want %d", got, tc.n)
			}
			p.stop(t)
		})
	}
}

// TestGOGC checks what docs/installation.md promises: `mailroomd run`
// puts the Go collector's target at 50 unless GOGC holds a value the Go
// runtime takes; the log's line after the GOMAXPROCS one says which (a
// warning where the collector is off with no memory limit), and /metrics
// reports the target in force.
func TestGOGC(t *testing.T) {
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Setenv(k, "")
		os.Unsetenv(k) // restored afterwards by t.Setenv
	}
	s := newSetup(t, "mr-gogc")
	port := mqtttest.FreePort(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	cfg := s.config(t, s.broker.URL(), fmt.Sprintf("web:\n  listen: 127.0.0.1:%d\n  users: [{name: clara, role: clerk, password_hash: %q}]", port, hash))
	const (
		lowered = `level=INFO msg="GOGC lowered to hold down the heap's peak through a drain" GOGC=50`
		off     = `level=WARN msg="GOGC left to the environment: the collector is off and no GOMEMLIMIT is set, so the heap grows until memory runs out" GOGC=off`
		offOK   = `level=INFO msg="GOGC left to the environment" GOGC=off`
		offVal  = "1.8446744073709552e+19" // the runtime's -1 as an unsigned number
	)
	for _, tc := range []struct {
		env    []string
		want   string
		metric string // go_gc_gogc_percent
	}{
		{nil, lowered, "50"},
		{[]string{"GOGC=80"}, `level=INFO msg="GOGC left to the environment" GOGC=80`, "80"},
		{[]string{"GOGC=+80"}, `level=INFO msg="GOGC left to the environment" GOGC=80`, "80"},
		{[]string{"GOGC=off"}, off, offVal},
		{[]string{"GOGC=-20"}, off, offVal},
		{[]string{"GOGC=off", "GOMEMLIMIT=256MiB"}, offOK, offVal},
		{[]string{"GOGC=abc"}, lowered, "50"}, // the runtime ignores it
	} {
		t.Run(strings.Join(append([]string{"unset"}, tc.env...)[min(len(tc.env), 1):], ","), func(t *testing.T) {
			p := startDaemon(t, cfg, tc.env...)
			p.waitLog(t, tc.want, 10*time.Second)
			// The line right after the GOMAXPROCS one.
			var prev string
			for _, l := range strings.Split(p.log.String(), "\n") {
				if strings.Contains(l, tc.want) {
					break
				}
				prev = l
			}
			if !strings.Contains(prev, `msg="GOMAXPROCS`) {
				t.Fatalf("the line before %q is not the GOMAXPROCS one:\n%s", tc.want, p.log.String())
			}
			if strings.Count(p.log.String(), `msg="GOGC`) != 1 {
				t.Fatalf("log:\n%s", p.log.String())
			}
			if got := metricValue(t, port, "go_gc_gogc_percent"); got != tc.metric {
				t.Fatalf("go_gc_gogc_percent %s, want %s", got, tc.metric)
			}
			p.stop(t)
		})
	}
}

// metricValue waits until the daemon's /metrics on port reports the
// metric name without labels, and returns its value as written there.
func metricValue(t *testing.T, port int, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	return waitfor.Value(t, 10*time.Second, name+" in /metrics", func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if m := re.FindSubmatch(b); m != nil {
			return string(m[1])
		}
		return ""
	}, func(v string) bool { return v != "" })
}
