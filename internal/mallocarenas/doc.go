// Package mallocarenas limits how many heaps the C library's allocator
// keeps. glibc gives each thread an arena of its own at its first
// allocation, up to eight per core on 64-bit systems; SQLite allocates through it from
// whichever thread the Go runtime runs a cgo call on, so a busy daemon
// ends up with a handful of arenas of page cache and statement memory,
// each with its own free space. Two arenas (the main one and one more)
// are plenty for one writer and a few readers, and keep a MiB or more of
// resident memory that would otherwise sit free in the others.
//
// The cap has to be set before the Go runtime starts its first thread:
// glibc keeps every arena it made and shares them all among the threads,
// so a cap set from main leaves the arenas of the runtime's first threads
// in use. A C constructor sets it as the program is loaded, when the
// program's first argument is "run" (`mailroomd run`) and neither
// MALLOC_ARENA_MAX nor GLIBC_TUNABLES' glibc.malloc.arena_max is set in
// the environment (the C library then follows those). Importing the
// package is all it takes. Capped says whether the cap was set; the
// daemon logs it at start.
package mallocarenas
