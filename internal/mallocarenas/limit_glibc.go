//go:build linux && cgo

package mallocarenas

/*
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__) && defined(M_ARENA_MAX)

// mallocarenas_state is what happened when the program was loaded: 1 the
// cap was set; 2 MALLOC_ARENA_MAX, 3 GLIBC_TUNABLES' glibc.malloc.arena_max
// set the number instead; 0 nothing (not asked for, or refused).
static int mallocarenas_state;

// mallocarenas_count_ok reports whether the n bytes at s are a number of
// arenas glibc 2.36 (Debian 12) takes, read as its _dl_strtoul reads it:
// blanks (spaces, tabs) and a '+' skipped, then a number of 1 or more
// (decimal, 0x hex or 0 octal) that does not overflow; what follows the
// number is ignored. glibc ignores any other value and applies its own
// default. (glibc 2.39 and later refuse trailing characters: there the
// cap stays off for a value such as "4abc" that glibc then ignores.)
static int mallocarenas_count_ok(const char *s, size_t n) {
	char buf[64];
	if (n >= sizeof buf) {
		return 0;
	}
	memcpy(buf, s, n);
	buf[n] = 0;
	const char *p = buf;
	while (*p == ' ' || *p == '\t') {
		p++;
	}
	if (*p == '+') {
		p++;
	}
	if (*p < '0' || *p > '9') {
		return 0;
	}
	errno = 0;
	unsigned long long v = strtoull(p, NULL, 0);
	return errno == 0 && v >= 1;
}

// mallocarenas_tunable reports whether GLIBC_TUNABLES (name=value items
// separated by colons) sets glibc.malloc.arena_max to a number glibc takes.
static int mallocarenas_tunable(const char *t) {
	static const char key[] = "glibc.malloc.arena_max=";
	const size_t kn = sizeof key - 1;
	while (t != NULL && *t != 0) {
		const char *end = strchr(t, ':');
		size_t n = end != NULL ? (size_t)(end - t) : strlen(t);
		if (n > kn && strncmp(t, key, kn) == 0 && mallocarenas_count_ok(t + kn, n - kn)) {
			return 1;
		}
		t = end != NULL ? end + 1 : NULL;
	}
	return 0;
}

// mallocarenas_cap runs when the program is loaded, before the Go runtime
// starts its first thread. glibc gives a thread an arena at its first
// allocation and shares every arena it made among the threads for good,
// so a cap set later, from main, leaves the arenas of the runtime's first
// threads in use. glibc passes a constructor the program's arguments. A
// number of arenas set in the environment wins (GLIBC_TUNABLES over
// MALLOC_ARENA_MAX, as in glibc); a value glibc would ignore does not.
__attribute__((constructor)) static void mallocarenas_cap(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strcmp(argv[1], "run") != 0) {
		return;
	}
	if (mallocarenas_tunable(getenv("GLIBC_TUNABLES"))) {
		mallocarenas_state = 3;
		return;
	}
	const char *m = getenv("MALLOC_ARENA_MAX");
	if (m != NULL && mallocarenas_count_ok(m, strlen(m))) {
		mallocarenas_state = 2;
		return;
	}
	mallocarenas_state = mallopt(M_ARENA_MAX, 2) == 1 ? 1 : 0;
}

static int mallocarenas_decided(void) { return mallocarenas_state; }

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
static int mallocarenas_decided(void) { return 0; }
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
// glibc.malloc.arena_max sets a number of arenas glibc takes (1 or more),
// which then wins. An empty or invalid value, which glibc ignores, does
// not keep the cap off.
func Capped() bool { return C.mallocarenas_decided() == 1 }

// SetBy names the environment variable that set the number of arenas
// instead of the cap ("MALLOC_ARENA_MAX" or "GLIBC_TUNABLES"), or "".
func SetBy() string {
	switch C.mallocarenas_decided() {
	case 2:
		return "MALLOC_ARENA_MAX"
	case 3:
		return "GLIBC_TUNABLES"
	}
	return ""
}

// arenas is how many arenas the C allocator has made, or -1 where it is
// not glibc.
func arenas() int { return int(C.mallocarenas_count()) }

// churn allocates and frees n blocks of C memory from the calling thread.
func churn(n int) { C.mallocarenas_churn(C.int(n)) }
