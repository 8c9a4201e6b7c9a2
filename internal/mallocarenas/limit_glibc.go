//go:build linux && cgo

package mallocarenas

/*
#include <malloc.h>

static int limit_arenas(int n) {
#ifdef M_ARENA_MAX
	return mallopt(M_ARENA_MAX, n);
#else
	return 0;
#endif
}
*/
import "C"

import "os"

// Limit caps the C allocator's arenas at n, unless MALLOC_ARENA_MAX is set
// in the environment (which the C library reads itself and which wins). It
// reports whether the cap was set. Call it before the first cgo call.
func Limit(n int) bool {
	if _, set := os.LookupEnv("MALLOC_ARENA_MAX"); set || n < 1 {
		return false
	}
	return C.limit_arenas(C.int(n)) == 1
}
