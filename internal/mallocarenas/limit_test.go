//go:build linux && cgo

package mallocarenas

import (
	"os"
	"os/exec"
	"testing"
)

// TestLimit sets the cap, and leaves it to the environment when
// MALLOC_ARENA_MAX is set there. A child process checks the second case,
// so that this test's own allocator is not touched twice.
func TestLimit(t *testing.T) {
	if os.Getenv("MALLOCARENAS_CHILD") != "" {
		if Limit(2) {
			os.Exit(3) // set although the environment had it
		}
		os.Exit(0)
	}
	if Limit(0) {
		t.Fatal("a cap of 0 arenas was set")
	}
	if !Limit(2) {
		t.Fatal("the cap was not set")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLimit$")
	cmd.Env = append(os.Environ(), "MALLOCARENAS_CHILD=1", "MALLOC_ARENA_MAX=4")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("with MALLOC_ARENA_MAX in the environment: %v\n%s", err, out)
	}
}
