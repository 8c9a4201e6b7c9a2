//go:build !linux || !cgo

package mallocarenas

// Capped reports false: the C allocator of this system has no arenas to
// cap.
func Capped() bool { return false }

// SetBy returns "": nothing here sets a number of arenas.
func SetBy() string { return "" }
