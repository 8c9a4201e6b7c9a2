//go:build !linux || !cgo

package mallocarenas

// Limit does nothing here: the C allocator of this system has no arenas to
// cap. It reports false.
func Limit(n int) bool { return false }
