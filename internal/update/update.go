// Package update installs a signed release on a running box and rolls it
// back when the new version does not become healthy.
//
// The daemon verifies a release artifact against the release key and
// hands it to a separate updater process (`mailroomd update-apply`): the
// daemon's own binary may be replaced, and a hardened service cannot write
// /usr/bin, so the step that installs runs outside it (detached for a plain
// binary install, or as root through the package's mailroomd-update
// units). The updater backs up the buffer, installs, starts the new
// version, waits for it to report itself healthy (store open, uplink
// connected), and otherwise puts the previous binary and buffer back.
package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"
)

// Files below the state directory.
const (
	Dir        = "update"
	HealthFile = "health.json" // written by the daemon when healthy
	ResultFile = "result.json" // written by the updater
)

// Health is what a healthy daemon writes into the state directory.
type Health struct {
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	TS      time.Time `json:"ts"`
}

// Result is the outcome of an update.
type Result struct {
	RequestID string    `json:"request_id,omitempty"`
	Artifact  string    `json:"artifact"`
	From      string    `json:"from"`
	To        string    `json:"to,omitempty"`
	Status    string    `json:"status"` // applied, rolled_back, failed
	Error     string    `json:"error,omitempty"`
	TS        time.Time `json:"ts"`
	Reported  bool      `json:"reported,omitempty"`
}

// RecordFailure records an update that failed before the updater could
// plan it (its marker unreadable), for the daemon to publish at its next
// start.
func RecordFailure(stateDir string, err error) error {
	return writeResult(stateDir, Result{Status: "failed", Error: err.Error(), TS: time.Now().UTC()})
}

// WriteHealth records that this daemon is healthy.
func WriteHealth(stateDir, version string, now time.Time) error {
	b, _ := json.Marshal(Health{PID: os.Getpid(), Version: version, TS: now.UTC()})
	return writeAtomic(filepath.Join(stateDir, HealthFile), b)
}

// ReadHealth reads the last health record.
func ReadHealth(stateDir string) (Health, error) {
	var h Health
	b, err := os.ReadFile(filepath.Join(stateDir, HealthFile))
	if err != nil {
		return h, err
	}
	return h, json.Unmarshal(b, &h)
}

// ReadResult returns the last update's result, if there is one.
func ReadResult(stateDir string) (Result, bool) {
	var r Result
	b, err := os.ReadFile(filepath.Join(stateDir, Dir, ResultFile))
	if err != nil || json.Unmarshal(b, &r) != nil {
		return r, false
	}
	return r, true
}

// MarkReported records that the result was published.
func MarkReported(stateDir string, r Result) error {
	r.Reported = true
	b, _ := json.Marshal(r)
	return writeAtomic(filepath.Join(stateDir, Dir, ResultFile), b)
}

// writeResult records the outcome for the daemon, which reads it at its
// next start: the updater of a package runs as root, so the file is given
// to the owner of the directory it is in (the daemon's user).
func writeResult(stateDir string, r Result) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	path := filepath.Join(stateDir, Dir, ResultFile)
	if err := writeAtomic(path, b); err != nil {
		return err
	}
	return ownLike(path, filepath.Dir(path))
}

func writeAtomic(path string, b []byte) error { return durable.WriteFile(path, b, 0o600) }

// copyFile copies src to dst with mode.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// backupBuffer copies the buffer database and its WAL, while no daemon has
// it open, so that a rollback can put back what the old version can read.
func backupBuffer(db, dir string) ([]string, error) {
	var saved []string
	for _, suffix := range []string{"", "-wal", "-shm"} {
		src := db + suffix
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			continue
		}
		dst := filepath.Join(dir, "buffer-backup.db"+suffix)
		if err := copyFile(src, dst, 0o600); err != nil {
			return saved, fmt.Errorf("back up %s: %w", src, err)
		}
		saved = append(saved, suffix)
	}
	return saved, durable.SyncDir(dir)
}

func restoreBuffer(db, dir string, saved []string) error {
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(db + suffix)
	}
	for _, suffix := range saved {
		if err := copyFile(filepath.Join(dir, "buffer-backup.db"+suffix), db+suffix, 0o600); err != nil {
			return err
		}
	}
	return durable.SyncDir(filepath.Dir(db))
}
