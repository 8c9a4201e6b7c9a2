//go:build linux && cgo

package mallocarenas

/*
#include <malloc.h>

// limit_arenas returns mallopt's answer (1: set), or -1 where the C
// library has no arenas to cap (musl, bionic).
static int limit_arenas(int n) {
#ifdef M_ARENA_MAX
	return mallopt(M_ARENA_MAX, n);
#else
	return -1;
#endif
}
*/
import "C"

import (
	"os"
	"strings"
)

// Limit caps the C allocator's arenas at n, unless MALLOC_ARENA_MAX or
// GLIBC_TUNABLES' glibc.malloc.arena_max is set in the environment (which
// the C library reads itself and which wins). It reports whether the cap
// was set. Call it before the first cgo call.
func Limit(n int) bool {
	if _, set := os.LookupEnv("MALLOC_ARENA_MAX"); set || n < 1 || strings.Contains(os.Getenv("GLIBC_TUNABLES"), "glibc.malloc.arena_max") {
		return false
	}
	return C.limit_arenas(C.int(n)) == 1
}

// supported reports whether this C library has arenas to cap.
func supported() bool { return C.limit_arenas(0) != -1 }
