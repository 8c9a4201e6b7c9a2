// Package remoteconfig keeps the configuration IT pushes to a box: it
// checks a desired config (version, schema, local-only settings), keeps it
// under the state directory (never in /etc), tracks the trial after which
// it is either kept or rolled back, and produces the report the box
// publishes on config/reported.
package remoteconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"

	"github.com/mailroomd/mailroomd/internal/config"
)

// Statuses of a report.
const (
	StatusApplying   = "applying"    // accepted; the box is switching to it
	StatusApplied    = "applied"     // running, and the uplink reconnected with it
	StatusRejected   = "rejected"    // invalid or not allowed; Errors say why
	StatusRolledBack = "rolled_back" // applied, but the box went back to the previous config
	StatusCurrent    = "current"     // this version is already the one in use
	StatusIgnored    = "ignored"     // older than the version in use
)

// Report is published, retained, on {prefix}/{id}/config/reported.
type Report struct {
	V       int       `json:"v"`
	Version int64     `json:"version"`
	Hash    string    `json:"hash,omitempty"`
	Status  string    `json:"status"`
	Errors  []string  `json:"errors,omitempty"`
	Applied int64     `json:"applied_version"`
	TS      time.Time `json:"ts"`
}

// state is kept in remote-state.json.
type state struct {
	// InUse is the version of the remote config running; 0 means the local
	// config file.
	InUse     int64  `json:"in_use"`
	InUseHash string `json:"in_use_hash,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
	// Highest is the highest version tried: older or equal versions are
	// ignored, so a config that was rolled back is not tried again.
	Highest int64 `json:"highest"`
	// Trial is true between switching to a config and confirming it.
	Trial bool `json:"trial,omitempty"`
	// PrevInUse is what a rollback returns to, PrevHash its hash.
	PrevInUse int64  `json:"prev_in_use,omitempty"`
	PrevHash  string `json:"prev_hash,omitempty"`
	Report    Report `json:"report"`
}

// Manager keeps the remote config of one box.
type Manager struct {
	dir   string
	local *config.Config
	// AllowLocalOnly lets a remote config change local-only settings.
	allowLocalOnly bool
	now            func() time.Time

	mu sync.Mutex
	st state
}

// Each version is kept in a file of its own, written durably before the
// state names it: the state file is the one commit point, so a power cut
// or a failed write leaves the previous state and its file intact.
const (
	stateFile = "remote-state.json"
	// legacyCurrent and legacyPrevious are the files of builds before
	// versioned files; Open moves them to their versioned names.
	legacyCurrent  = "remote-config.yaml"
	legacyPrevious = "remote-config.prev.yaml"
)

// fileOf is the file that keeps a version.
func fileOf(version int64) string { return fmt.Sprintf("remote-config-%d.yaml", version) }

// Open reads the state kept in dir. local is the box's own config file.
func Open(dir string, local *config.Config, now func() time.Time) (*Manager, error) {
	m := &Manager{dir: dir, local: local, allowLocalOnly: local.Fleet.RemoteLocalSettings, now: now}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("remote config state: %w", err)
	default:
		if err := json.Unmarshal(b, &m.st); err != nil {
			return nil, fmt.Errorf("remote config state %s: %w", filepath.Join(dir, stateFile), err)
		}
	}
	for _, legacy := range []struct {
		name    string
		version int64
	}{{legacyCurrent, m.st.InUse}, {legacyPrevious, m.st.PrevInUse}} {
		from := filepath.Join(dir, legacy.name)
		if _, err := os.Stat(from); err != nil {
			continue
		}
		if legacy.version > 0 {
			if err := os.Rename(from, filepath.Join(dir, fileOf(legacy.version))); err != nil {
				return nil, fmt.Errorf("remote config: %w", err)
			}
		} else {
			os.Remove(from)
		}
		syncDir(dir)
	}
	return m, nil
}

// Effective returns the config to run: the remote one in use, or the local
// one. trial is true when the remote one still has to prove itself.
func (m *Manager) Effective() (cfg *config.Config, trial bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.InUse == 0 {
		return m.local, false, nil
	}
	cfg, err = m.load(m.st.InUse, m.st.InUseHash)
	if err != nil {
		return nil, false, fmt.Errorf("remote config version %d: %w", m.st.InUse, err)
	}
	return cfg, m.st.Trial, nil
}

// load reads and checks the file of a version; hash, when known, must
// match its bytes.
func (m *Manager) load(version int64, hash string) (*config.Config, error) {
	path := filepath.Join(m.dir, fileOf(version))
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if hash != "" && Hash(b) != hash {
		return nil, fmt.Errorf("%s: its content is not the version that was applied (hash mismatch)", path)
	}
	return m.check(path, b)
}

// check validates a remote config and its local-only settings.
func (m *Manager) check(path string, b []byte) (*config.Config, error) {
	cfg, err := config.Parse(path, b)
	if err != nil {
		return nil, err
	}
	if m.allowLocalOnly {
		return cfg, nil
	}
	var errs []string
	same := func(field, remote, local string) {
		if remote != local {
			errs = append(errs, fmt.Sprintf("%s: a local-only setting, it cannot be changed remotely (it is %q on this box)", field, local))
		}
	}
	l := m.local
	same("storage.path", cfg.Storage.Path, l.Storage.Path)
	same("uplink.ca_file", cfg.Uplink.CAFile, l.Uplink.CAFile)
	same("uplink.cert_file", cfg.Uplink.CertFile, l.Uplink.CertFile)
	same("uplink.key_file", cfg.Uplink.KeyFile, l.Uplink.KeyFile)
	same("web.cert_file", cfg.Web.CertFile, l.Web.CertFile)
	same("web.key_file", cfg.Web.KeyFile, l.Web.KeyFile)
	same("photos.ocr_command", cfg.Photos.OCRCommand, l.Photos.OCRCommand) // a program the box runs
	// The release key is the second key of an update, beside the fleet
	// key that signs the command: a config signed with the fleet key
	// alone cannot choose it.
	same("fleet.release_key_file", cfg.Fleet.ReleaseKeyFile, l.Fleet.ReleaseKeyFile)
	// A simulated camera's picture is a file of the box that goes to the
	// cloud as every photo: only the box's own config names one.
	for i, d := range cfg.Devices {
		if d.Image == "" {
			continue
		}
		if !slices.ContainsFunc(l.Devices, func(ld config.Device) bool {
			return ld.Name == d.Name && ld.Image != "" && filepath.Clean(ld.Image) == filepath.Clean(d.Image)
		}) {
			errs = append(errs, fmt.Sprintf("devices[%d].image: a local-only setting, only the box's own config names a picture file for device %q", i, d.Name))
		}
	}
	if cfg.Appliance.ID != l.Appliance.ID {
		errs = append(errs, fmt.Sprintf("appliance.id: a local-only setting, it cannot be changed remotely (it is %q on this box)", l.Appliance.ID))
	}
	if cfg.Fleet.RemoteLocalSettings != l.Fleet.RemoteLocalSettings {
		errs = append(errs, "fleet.remote_local_settings: a local-only setting")
	}
	if !slices.Equal(cfg.Fleet.PublicKeys, l.Fleet.PublicKeys) {
		errs = append(errs, "fleet.public_keys: a local-only setting, the fleet keys cannot be changed remotely")
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return cfg, nil
}

// Hash is the SHA-256 of a config's bytes.
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Consider checks a desired config. It returns the config to switch to,
// or nil and the report to publish when there is nothing to switch to.
func (m *Manager) Consider(version int64, keyID string, yaml []byte) (*config.Config, Report) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := Report{V: 1, Version: version, Hash: Hash(yaml), Applied: m.st.InUse, TS: m.now().UTC()}
	switch {
	case version == m.st.InUse && r.Hash == m.st.InUseHash:
		r.Status = StatusCurrent
		return nil, r
	case version <= m.st.Highest:
		r.Status = StatusIgnored
		r.Errors = []string{fmt.Sprintf("version %d is not newer than version %d, the last one tried", version, m.st.Highest)}
		return nil, r
	}
	cfg, err := m.check(filepath.Join(m.dir, fileOf(version)), yaml)
	if err != nil {
		r.Status = StatusRejected
		r.Errors = strings.Split(err.Error(), "\n")
		m.st.Highest = version
		m.st.Report = r
		m.save()
		return nil, r
	}
	r.Status = StatusApplying
	return cfg, r
}

// Begin switches to a checked config: it is kept, and in trial, until
// Confirm or Rollback. A config that replaces one still in trial rolls
// back, if it must, to the config before that one: the last that proved
// itself. The version's file is written durably first; the state that
// names it is the commit point. On error nothing changed.
func (m *Manager) Begin(version int64, keyID string, yaml []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	path := filepath.Join(m.dir, fileOf(version))
	if err := writeFile(path, yaml); err != nil {
		return fmt.Errorf("keep remote config version %d: %w", version, err)
	}
	prev, prevHash := m.st.InUse, m.st.InUseHash
	if m.st.Trial {
		prev, prevHash = m.st.PrevInUse, m.st.PrevHash // the unproven config in trial is not kept
	}
	next := state{InUse: version, InUseHash: Hash(yaml), KeyID: keyID, Highest: max(version, m.st.Highest), Trial: true,
		PrevInUse: prev, PrevHash: prevHash,
		Report: Report{V: 1, Version: version, Hash: Hash(yaml), Status: StatusApplying, Applied: version, TS: m.now().UTC()}}
	if err := m.saveState(next); err != nil {
		if version != m.st.InUse && version != m.st.PrevInUse {
			os.Remove(path)
		}
		return err
	}
	m.st = next
	m.removeUnused()
	return nil
}

// removeUnused removes the files of versions the state no longer names.
func (m *Manager) removeUnused() {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	keep := map[string]bool{fileOf(m.st.InUse): true, fileOf(m.st.PrevInUse): true}
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, "remote-config-") && strings.HasSuffix(n, ".yaml") && !keep[n] {
			os.Remove(filepath.Join(m.dir, n))
		}
	}
	syncDir(m.dir)
}

// Superseded is the report of a desired config that a newer one replaced
// before it was applied: it is not tried.
func (m *Manager) Superseded(version int64, yaml []byte, by int64) Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Report{V: 1, Version: version, Hash: Hash(yaml), Status: StatusIgnored, Applied: m.st.InUse, TS: m.now().UTC(),
		Errors: []string{fmt.Sprintf("superseded by version %d before it was applied", by)}}
}

// Refuse records a config refused before its YAML was read although its
// signature held (it had expired): its version counts as tried, so the
// retained message is passed over at the next connections, and the report
// is the one published at each. It returns the report.
func (m *Manager) Refuse(version int64, reason string) Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := Report{V: 1, Version: version, Status: StatusRejected, Errors: []string{reason}, Applied: m.st.InUse, TS: m.now().UTC()}
	if version > m.st.Highest {
		m.st.Highest = version
	}
	m.st.Report = r
	m.save()
	return r
}

// Tried reports whether a version was considered before: it is the one in
// use, or not newer than the last one tried.
func (m *Manager) Tried(version int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return version == m.st.InUse || version <= m.st.Highest
}

// InUse is the version of the remote config in use; 0 means the box's own
// config file.
func (m *Manager) InUse() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.InUse
}

// InTrial reports whether the config in use still has to prove itself.
func (m *Manager) InTrial() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Trial
}

// Confirm keeps the config in trial. The error says that the state could
// not be recorded: the config runs, but a restart would still find it in
// trial.
func (m *Manager) Confirm() (Report, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.st
	next.Trial = false
	next.Report = Report{V: 1, Version: m.st.InUse, Hash: m.st.InUseHash, Status: StatusApplied, Applied: m.st.InUse, TS: m.now().UTC()}
	if err := m.saveState(next); err != nil {
		return next.Report, err
	}
	m.st = next
	return m.st.Report, nil
}

// Rollback returns to the config in use before the trial (the local file
// when that one cannot be read) and says why. The error says that the new
// state could not be recorded.
func (m *Manager) Rollback(reason string) (*config.Config, Report, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg := m.local
	back, hash := m.st.PrevInUse, m.st.PrevHash
	if back > 0 {
		c, err := m.load(back, hash)
		if err == nil {
			cfg = c
		} else {
			back, hash = 0, "" // unreadable: back to the local config
		}
	}
	failed := Report{V: 1, Version: m.st.InUse, Hash: m.st.InUseHash, Status: StatusRolledBack, Errors: []string{reason},
		Applied: back, TS: m.now().UTC()}
	next := state{InUse: back, InUseHash: hash, Highest: m.st.Highest, Report: failed}
	err := m.saveState(next)
	m.st = next // the config runs even when the state could not be recorded
	if err == nil {
		m.removeUnused()
	}
	return cfg, failed, err
}

// LastReport is the report to publish (retained) on every connection.
func (m *Manager) LastReport() ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.Report.Status == "" {
		return nil, false
	}
	b, _ := json.Marshal(m.st.Report)
	return b, true
}

func (m *Manager) save() error { return m.saveState(m.st) }

// saveState writes st durably as the state file.
func (m *Manager) saveState(st state) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFile(filepath.Join(m.dir, stateFile), b); err != nil {
		return fmt.Errorf("record remote config state: %w", err)
	}
	return nil
}

// writeFile replaces a file durably: a power cut leaves the old or the new
// content, never a mix.
func writeFile(path string, b []byte) error { return durable.WriteFile(path, b, 0o600) }

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error { return durable.SyncDir(dir) }
