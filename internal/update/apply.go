package update

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/release"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Plan is what the updater process does.
type Plan struct {
	// PubFile is the release public key's file (envelope.ParsePublicKey's
	// form), read by Apply: a key that cannot be read fails the update
	// like a bad signature, reported and with the previous version started.
	PubFile  string
	Artifact string // verified against SHA256SUMS in its directory
	StateDir string
	Buffer   string // the buffer database file
	// Exe is the binary to replace (binary installs); Deb selects dpkg.
	Exe  string
	Deb  bool
	Args []string // the daemon's arguments, to start it again
	// OldPID is the daemon that handed over; the updater waits for it to exit.
	OldPID        int
	From          string
	RequestID     string
	HealthTimeout time.Duration
	// Start starts the daemon and returns its PID (nil: as a detached
	// process for binary installs, systemctl for packages).
	Start func() (int, error)
	// Stop stops the daemon started by Start.
	Stop func(pid int)
	Log  func(format string, args ...any)
}

// Apply installs the artifact, starts it, and keeps it only if it becomes
// healthy. It always writes a Result.
func Apply(p Plan) Result {
	r := Result{RequestID: p.RequestID, Artifact: filepath.Base(p.Artifact), From: p.From, TS: time.Now().UTC()}
	fail := func(status string, err error) Result {
		r.Status, r.Error, r.TS = status, err.Error(), time.Now().UTC()
		p.Log("update %s: %v", status, err)
		writeResult(p.StateDir, r)
		return r
	}
	// notInstalled ends an update that changed nothing: the daemon, which
	// handed over (or was stopped), runs again and reports the failure.
	notInstalled := func(err error) Result {
		res := fail("failed", err)
		if _, serr := p.Start(); serr != nil {
			p.Log("start the previous version again: %v", serr)
		}
		return res
	}
	verr := verify(p.PubFile, p.Artifact)
	waitExit(p.OldPID, 30*time.Second)
	if verr != nil {
		return notInstalled(verr)
	}
	dir := filepath.Join(p.StateDir, Dir)
	saved, err := backupBuffer(p.Buffer, dir)
	if err != nil {
		return notInstalled(err)
	}
	prev := p.Exe + ".prev"
	if p.Deb {
		// dpkg keeps no previous package: keep the previous binary, so that
		// a rollback can put it back.
		prev = filepath.Join(dir, "mailroomd.prev")
		if err := copyFile(p.Exe, prev, 0o755); err != nil {
			return notInstalled(fmt.Errorf("keep the previous binary: %w", err))
		}
	}
	install := func() error {
		if p.Deb {
			out, err := exec.Command("dpkg", "-i", p.Artifact).CombinedOutput()
			if err != nil {
				return fmt.Errorf("dpkg -i: %v: %s", err, out)
			}
			return nil
		}
		if err := copyFile(p.Artifact, p.Exe+".new", 0o755); err != nil {
			return err
		}
		if err := durable.Rename(p.Exe, prev); err != nil {
			return err
		}
		return durable.Rename(p.Exe+".new", p.Exe)
	}
	started := false // the new version was started: it may have committed events
	rollback := func(pid int, cause error) Result {
		if pid > 0 {
			p.Stop(pid)
		}
		r.Status = "installing"
		writeResult(p.StateDir, r)
		if p.Deb {
			copyFile(prev, p.Exe+".rollback", 0o755)
			if err := durable.Rename(p.Exe+".rollback", p.Exe); err != nil {
				p.Log("put back the previous binary: %v", err)
			}
		} else if err := durable.Rename(prev, p.Exe); err != nil {
			p.Log("put back the previous binary: %v", err)
		}
		if started {
			// The version on trial may have committed events: its buffer
			// is kept, and the previous version carries them over when
			// it opens the backup.
			if aside, err := store.SetAside(p.Buffer, time.Now()); err != nil {
				p.Log("keep the buffer of the version on trial: %v", err)
			} else {
				p.Log("buffer of the version on trial kept as %s; its events are carried over at the next start", aside)
			}
		}
		if err := restoreBuffer(p.Buffer, dir, saved); err != nil {
			p.Log("restore buffer: %v", err)
		}
		for _, f := range []string{p.Buffer, p.Buffer + "-wal", p.Buffer + "-shm", store.CarryOverMarker(p.Buffer)} {
			if err := ownLike(f, filepath.Dir(p.Buffer)); err != nil {
				p.Log("give %s to the daemon's user: %v", f, err)
			}
		}
		if _, err := p.Start(); err != nil {
			p.Log("start the previous version: %v", err)
		}
		return fail("rolled_back", cause)
	}
	if err := install(); err != nil {
		return rollback(0, fmt.Errorf("install: %w", err))
	}
	os.Remove(filepath.Join(p.StateDir, HealthFile))
	r.Status = "installing" // the new daemon waits for the outcome
	writeResult(p.StateDir, r)
	began := time.Now()
	started = true
	pid, err := p.Start()
	if err != nil {
		return rollback(0, fmt.Errorf("start the new version: %w", err))
	}
	deadline := began.Add(p.HealthTimeout)
	for time.Now().Before(deadline) {
		if h, err := ReadHealth(p.StateDir); err == nil && h.PID == pid && h.TS.After(began.Add(-time.Second)) {
			r.Status, r.To, r.TS = "applied", h.Version, time.Now().UTC()
			p.Log("update applied: %s -> %s", p.From, h.Version)
			writeResult(p.StateDir, r)
			return r
		}
		time.Sleep(200 * time.Millisecond)
	}
	return rollback(pid, fmt.Errorf("the new version did not become healthy (buffer open, uplink connected) within %s", p.HealthTimeout))
}

// verify checks artifact against its signed sums and the release key in
// pubFile.
func verify(pubFile, artifact string) error {
	b, err := os.ReadFile(pubFile)
	if err != nil {
		return fmt.Errorf("release key: %w", err)
	}
	pub, err := envelope.ParsePublicKey(string(b))
	if err != nil {
		return fmt.Errorf("release key %s: %w", pubFile, err)
	}
	return release.VerifyFile(pub, artifact)
}
