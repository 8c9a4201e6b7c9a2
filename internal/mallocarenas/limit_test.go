//go:build linux && cgo

package mallocarenas

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestCapAtLoad runs this test binary again as a child, with "run" as its
// first argument as `mailroomd run` has: there the cap is set before any
// thread starts, and sixteen threads allocating at once share the main
// arena and one more. Without "run", and with MALLOC_ARENA_MAX or
// glibc.malloc.arena_max in GLIBC_TUNABLES set, the cap is not set and
// the same threads make arenas of their own.
func TestCapAtLoad(t *testing.T) {
	if os.Getenv("MALLOCARENAS_CHILD") != "" {
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // sixteen threads, not goroutines
				for range 50 {
					churn(20000)
				}
			}()
		}
		wg.Wait()
		fmt.Printf("set-by=%q capped=%v arenas=%d\n", SetBy(), Capped(), arenas())
		os.Exit(0)
	}
	if arenas() < 0 {
		t.Skip("this C library (not glibc) has no arenas to cap")
	}
	// The child's environment is this one's without the settings that
	// would make the C library follow them instead.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MALLOC_ARENA_MAX=") && !strings.HasPrefix(kv, "GLIBC_TUNABLES=") {
			env = append(env, kv)
		}
	}
	for _, c := range []struct {
		name, first, want string
		env               []string
	}{
		{"mailroomd run", "run", `set-by="" capped=true arenas=2` + "\n", nil},
		{"another subcommand", "version", `set-by="" capped=false`, nil},
		{"MALLOC_ARENA_MAX set", "run", `set-by="MALLOC_ARENA_MAX" capped=false`, []string{"MALLOC_ARENA_MAX=4"}},
		{"GLIBC_TUNABLES set", "run", `set-by="GLIBC_TUNABLES" capped=false`, []string{"GLIBC_TUNABLES=glibc.malloc.check=0:glibc.malloc.arena_max=3"}},
		{"GLIBC_TUNABLES over MALLOC_ARENA_MAX", "run", `set-by="GLIBC_TUNABLES" capped=false`,
			[]string{"MALLOC_ARENA_MAX=4", "GLIBC_TUNABLES=glibc.malloc.arena_max=3"}},
		// Values glibc ignores leave the cap on.
		{"MALLOC_ARENA_MAX empty", "run", `set-by="" capped=true arenas=2` + "\n", []string{"MALLOC_ARENA_MAX="}},
		{"MALLOC_ARENA_MAX 0", "run", `set-by="" capped=true arenas=2` + "\n", []string{"MALLOC_ARENA_MAX=0"}},
		{"MALLOC_ARENA_MAX not a number", "run", `set-by="" capped=true arenas=2` + "\n", []string{"MALLOC_ARENA_MAX=abc"}},
		{"MALLOC_ARENA_MAX overflowing", "run", `set-by="" capped=true arenas=2` + "\n", []string{"MALLOC_ARENA_MAX=99999999999999999999999"}},
		// glibc 2.36 reads a number as strtoul does, blanks and '+' first
		// and trailing characters ignored: these set the number.
		{"MALLOC_ARENA_MAX with a tail", "run", `set-by="MALLOC_ARENA_MAX" capped=false`, []string{"MALLOC_ARENA_MAX=4abc"}},
		{"MALLOC_ARENA_MAX with a blank and a sign", "run", `set-by="MALLOC_ARENA_MAX" capped=false`, []string{"MALLOC_ARENA_MAX= +4"}},
		{"GLIBC_TUNABLES in hex", "run", `set-by="GLIBC_TUNABLES" capped=false`, []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=0x3"}},
		{"GLIBC_TUNABLES of other things", "run", `set-by="" capped=true arenas=2` + "\n", []string{"GLIBC_TUNABLES=glibc.malloc.tcache_count=0"}},
		{"GLIBC_TUNABLES misspelt", "run", `set-by="" capped=true arenas=2` + "\n", []string{"GLIBC_TUNABLES=glibc.malloc.arena_maxx=3"}},
		{"GLIBC_TUNABLES empty value", "run", `set-by="" capped=true arenas=2` + "\n", []string{"GLIBC_TUNABLES=glibc.malloc.arena_max="}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Flag parsing stops at the first argument, which is no
			// flag: the child runs every test of the package, this one.
			cmd := exec.Command(os.Args[0], c.first)
			cmd.Env = append(slices.Clone(env), "MALLOCARENAS_CHILD=1")
			cmd.Env = append(cmd.Env, c.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("child said %q, want %q", out, c.want)
			}
			if strings.Contains(c.want, "capped=false") && strings.Contains(string(out), "arenas=2\n") {
				t.Fatalf("child said %q: sixteen threads without a cap made only two arenas, so the test cannot tell the cap", out)
			}
		})
	}
}
