//go:build linux && cgo

package mallocarenas

/*
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__) && defined(M_ARENA_MAX)

// mallocarenas_state is what happened when the program was loaded: 1 the
// cap was set, 0 it was not (not asked for, or refused).
static int mallocarenas_state;

// mallocarenas_cap runs when the program is loaded, before the Go runtime
// starts its first thread. glibc gives a thread an arena at its first
// allocation and shares every arena it made among the threads for good,
// so a cap set later, from main, leaves the arenas of the runtime's first
// threads in use. glibc passes a constructor the program's arguments.
__attribute__((constructor)) static void mallocarenas_cap(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strcmp(argv[1], "run") != 0 || getenv("MALLOC_ARENA_MAX") != NULL) {
		return;
	}
	const char *t = getenv("GLIBC_TUNABLES");
	if (t != NULL && strstr(t, "glibc.malloc.arena_max") != NULL) {
		return;
	}
	mallocarenas_state = mallopt(M_ARENA_MAX, 2) == 1 ? 1 : 0;
}

static int mallocarenas_capped(void) { return mallocarenas_state; }

// mallocarenas_count is the number of arenas glibc has made, from
// malloc_info's report (one <heap> element per arena), or -1.
static int mallocarenas_count(void) {
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL) {
		return -1;
	}
	int rc = malloc_info(0, f);
	fclose(f);
	if (rc != 0) {
		free(buf);
		return -1;
	}
	int n = 0;
	for (char *p = buf; (p = strstr(p, "<heap nr=")) != NULL; p++) {
		n++;
	}
	free(buf);
	return n;
}

#else
// Another C library (musl, bionic): no arenas to cap, and constructors
// are not given the program's arguments.
static int mallocarenas_capped(void) { return -1; }
static int mallocarenas_count(void) { return -1; }
#endif

// mallocarenas_churn allocates and frees from the calling thread.
static void mallocarenas_churn(int n) {
	for (int i = 0; i < n; i++) {
		void *p = malloc(64 + i % 4096);
		if (p != NULL) {
			memset(p, 1, 64);
		}
		free(p);
	}
}
*/
import "C"

// Capped reports whether the C allocator was capped at two arenas when
// the program was loaded: only for `mailroomd run` (its first argument is
// "run"), and not when MALLOC_ARENA_MAX or GLIBC_TUNABLES'
// glibc.malloc.arena_max is set in the environment, which the C library
// reads itself and which then wins.
func Capped() bool { return C.mallocarenas_capped() == 1 }

// arenas is how many arenas the C allocator has made, or -1 where it is
// not glibc.
func arenas() int { return int(C.mallocarenas_count()) }

// churn allocates and frees n blocks of C memory from the calling thread.
func churn(n int) { C.mallocarenas_churn(C.int(n)) }
