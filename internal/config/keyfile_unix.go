//go:build !windows

package config

import (
	"fmt"
	"os"
)

// keyFileProblem explains why a private key file must not be used, or
// returns "" when only its owner can read it.
func keyFileProblem(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Sprintf("%s is readable by group or others (mode %04o): a private key must be readable by its owner only; run chmod 600 %s", path, perm, path)
	}
	return ""
}
