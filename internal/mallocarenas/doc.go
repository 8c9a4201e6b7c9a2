// Package mallocarenas limits how many heaps the C library's allocator
// keeps. glibc gives each thread that allocates under contention an arena
// of its own, up to eight per core; SQLite allocates through it from
// whichever thread the Go runtime runs a cgo call on, so a busy daemon
// ends up with a dozen arenas of page cache and statement memory, each
// with its own free space. Two arenas are plenty for one writer and a few
// readers, and keep several MiB of resident memory that would otherwise
// sit free in the others.
package mallocarenas
