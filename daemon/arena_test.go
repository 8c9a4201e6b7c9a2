package main

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestArenaCapIsLogged checks what docs/installation.md promises: on
// Linux with glibc, `mailroomd run` caps the C allocator at two arenas and
// says so at start, and leaves the number to the C library when
// MALLOC_ARENA_MAX or GLIBC_TUNABLES' glibc.malloc.arena_max is set.
func TestArenaCapIsLogged(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the cap is glibc's (Linux)")
	}
	// The daemon inherits the test's environment: the first case needs
	// neither variable set (t.Setenv restores them afterwards).
	for _, name := range []string{"MALLOC_ARENA_MAX", "GLIBC_TUNABLES"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
	s := newSetup(t, "mr-arena")
	cfg := s.config(t, s.broker.URL(), "")
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, `msg="C allocator capped at two arenas"`},
		{[]string{"MALLOC_ARENA_MAX=4"}, `msg="C allocator arenas left to the C library" MALLOC_ARENA_MAX=4`},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.arena_max=3"}, `msg="C allocator arenas left to the C library" GLIBC_TUNABLES="glibc.malloc.arena_max=3"`},
		// glibc takes the tunable over the variable, and ignores an empty
		// value: the cap then applies.
		{[]string{"MALLOC_ARENA_MAX=4", "GLIBC_TUNABLES=glibc.malloc.arena_max=3"}, `msg="C allocator arenas left to the C library" GLIBC_TUNABLES="glibc.malloc.arena_max=3"`},
		{[]string{"MALLOC_ARENA_MAX="}, `msg="C allocator capped at two arenas"`},
	} {
		name := strings.Join(tc.env, ",")
		if name == "" {
			name = "no variable set"
		}
		t.Run(name, func(t *testing.T) {
			p := startDaemon(t, cfg, tc.env...)
			p.waitLog(t, tc.want, 10*time.Second)
			if first, _, _ := strings.Cut(p.log.String(), "\n"); !strings.Contains(first, tc.want) {
				t.Fatalf("the first line of the log is %q, want %q", first, tc.want)
			}
			if strings.Count(p.log.String(), "C allocator") != 1 {
				t.Fatalf("log:\n%s", p.log.String())
			}
			p.stop(t)
		})
	}
}
