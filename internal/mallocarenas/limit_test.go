//go:build linux && cgo

package mallocarenas

import (
	"os"
	"os/exec"
	"testing"
)

// TestLimit sets the cap, and leaves it to the environment when
// MALLOC_ARENA_MAX or glibc.malloc.arena_max in GLIBC_TUNABLES is set
// there. Child processes check those cases, so that this test's own
// allocator is not touched twice.
func TestLimit(t *testing.T) {
	if os.Getenv("MALLOCARENAS_CHILD") != "" {
		if Limit(2) {
			os.Exit(3) // set although the environment had it
		}
		os.Exit(0)
	}
	if !supported() {
		t.Skip("this C library (not glibc) has no arenas to cap; Limit does nothing here")
	}
	if Limit(0) {
		t.Fatal("a cap of 0 arenas was set")
	}
	if !Limit(2) {
		t.Fatal("the cap was not set")
	}
	for _, env := range []string{"MALLOC_ARENA_MAX=4", "GLIBC_TUNABLES=glibc.malloc.arena_max=4"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLimit$")
		cmd.Env = append(os.Environ(), "MALLOCARENAS_CHILD=1", env)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("with %s in the environment: %v\n%s", env, err, out)
		}
	}
}
