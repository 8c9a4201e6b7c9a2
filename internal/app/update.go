package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mailroomd/mailroomd/internal/durable"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/release"
	"github.com/mailroomd/mailroomd/internal/update"
)

// stateDir is where the buffer and the daemon's own state live.
func (a *App) stateDir() string { return filepath.Dir(a.base.Storage.Path) }

// updateCommand is the fleet command `update`: {"path": "/srv/release/mailroomd"}
// or {"url": "https://…/mailroomd_1.2.0_arm64.deb"}; SHA256SUMS and
// SHA256SUMS.sig must sit beside the artifact.
func (a *App) updateCommand(ctx context.Context, args json.RawMessage) (any, error) {
	var r struct {
		Path string `json:"path"`
		URL  string `json:"url"`
	}
	if err := json.Unmarshal(args, &r); err != nil || (r.Path == "") == (r.URL == "") {
		return nil, errors.New(`update needs {"path": "..."} or {"url": "..."}`)
	}
	dir := filepath.Join(a.stateDir(), update.Dir)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	src := r.Path
	if r.URL != "" {
		var err error
		if src, err = download(ctx, r.URL, dir); err != nil {
			return nil, err
		}
	}
	// Copy the artifact and its signed sums into the state directory, then
	// verify there: the updater installs exactly what was verified.
	staged := filepath.Join(dir, "staged")
	os.RemoveAll(staged)
	os.MkdirAll(staged, 0o700)
	for _, f := range []string{src, filepath.Join(filepath.Dir(src), release.SumsFile), filepath.Join(filepath.Dir(src), release.SigFile)} {
		if err := copyTo(f, filepath.Join(staged, filepath.Base(f))); err != nil {
			return nil, fmt.Errorf("stage %s: %w", filepath.Base(f), err)
		}
	}
	artifact := filepath.Join(staged, filepath.Base(src))
	pubText, err := os.ReadFile(a.base.Fleet.ReleaseKeyFile)
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	pub, err := envelope.ParsePublicKey(string(pubText))
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	if err := release.VerifyFile(pub, artifact); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	deb := strings.HasSuffix(artifact, ".deb")
	if deb && update.PackagedUnit() != "" {
		// The hardened service cannot install packages: the package's
		// mailroomd-update.path unit sees the marker and runs the updater
		// as root, which verifies the artifact again.
		pending := filepath.Join(dir, "pending")
		if pending != update.PackagePending {
			return nil, fmt.Errorf("the package's update unit watches %s: a packaged box updates itself only with storage.path %s", update.PackagePending, filepath.Join(filepath.Dir(filepath.Dir(update.PackagePending)), "buffer.db"))
		}
		if !utf8.ValidString(artifact) {
			return nil, errors.New("the artifact's name is not UTF-8")
		}
		marker := update.Pending{Artifact: artifact, RequestID: fleet.RequestID(ctx), From: a.opts.Version, Timeout: a.base.Fleet.UpdateTimeout.D()}
		if err := durable.WriteFile(pending+".new", marker.Marshal(), 0o600); err != nil {
			return nil, err
		}
		// The marker starts the updater, which stops this daemon: it is put
		// in place once this answer is published.
		time.AfterFunc(500*time.Millisecond, func() {
			if err := durable.Rename(pending+".new", pending); err != nil {
				a.log.Error("update not handed over: cannot put the marker in place", "err", err)
			}
		})
		return map[string]any{"updating": true, "via": "mailroomd-update.service"}, nil
	}
	if deb {
		return nil, errors.New("a .deb updates a packaged install; this box runs a plain binary: send the binary")
	}
	if err := plainUpdateRefused(update.PackagedUnit(), systemdService()); err != nil {
		return nil, err
	}
	argv := []string{"update-apply", "--pub", a.base.Fleet.ReleaseKeyFile, "--artifact", artifact, "--state", a.stateDir(),
		"--buffer", a.base.Storage.Path, "--exe", exe, "--old-pid", fmt.Sprint(os.Getpid()), "--from", a.opts.Version,
		"--request", fleet.RequestID(ctx), "--timeout", a.base.Fleet.UpdateTimeout.D().String(), "--"}
	cmd := exec.Command(exe, append(argv, a.opts.Args...)...)
	logf, err := os.OpenFile(filepath.Join(dir, "update.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	update.Detach(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start the updater: %w", err)
	}
	logf.Close()
	cmd.Process.Release()
	a.log.Info("handing over to the updater", "artifact", filepath.Base(artifact), "updater_pid", cmd.Process.Pid)
	if a.opts.Handover != nil {
		time.AfterFunc(500*time.Millisecond, a.opts.Handover) // after the result is published
	}
	return map[string]any{"updating": true, "artifact": filepath.Base(artifact)}, nil
}

// systemdService reports whether this process is the main process of a
// systemd service: systemd (248 and later) names it in SYSTEMD_EXEC_PID;
// before that, a process systemd started itself has it (PID 1) as parent
// and INVOCATION_ID set. Processes further down (a supervisor's children,
// a shell) inherit the variables but are neither.
func systemdService() bool {
	if pid := os.Getenv("SYSTEMD_EXEC_PID"); pid != "" {
		return pid == strconv.Itoa(os.Getpid())
	}
	return os.Getenv("INVOCATION_ID") != "" && os.Getppid() == 1
}

// plainUpdateRefused says why a plain binary cannot update this box: the
// hardened service of the package cannot write /usr/bin, and as any other
// systemd service (mailroomd install) the updater would be stopped with
// the service it hands over from.
func plainUpdateRefused(packagedUnit string, systemdService bool) error {
	switch {
	case packagedUnit != "":
		return errors.New("this box runs the Debian package: send the .deb")
	case systemdService:
		return errors.New("this daemon runs as a systemd service without the package: a plain binary cannot replace it from there; install the new binary by hand, or install the package")
	}
	return nil
}

func copyTo(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return durable.WriteFile(dst, b, 0o600)
}

// download fetches an artifact and its signed sums from the same place.
func download(ctx context.Context, rawURL, dir string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("update: %q is not an http(s) URL", rawURL)
	}
	dl := filepath.Join(dir, "download")
	os.RemoveAll(dl)
	os.MkdirAll(dl, 0o700)
	name := path.Base(u.Path)
	for _, f := range []string{name, release.SumsFile, release.SigFile} {
		v := *u
		v.Path = path.Join(path.Dir(u.Path), f)
		req, _ := http.NewRequestWithContext(ctx, "GET", v.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", fmt.Errorf("download %s: %w", f, err)
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			return "", fmt.Errorf("download %s: %s", f, resp.Status)
		}
		out, err := os.Create(filepath.Join(dl, f))
		if err == nil {
			_, err = io.Copy(out, io.LimitReader(resp.Body, 512<<20))
			out.Close()
		}
		resp.Body.Close()
		if err != nil {
			return "", fmt.Errorf("download %s: %w", f, err)
		}
	}
	return filepath.Join(dl, name), nil
}

// reportUpdate publishes the outcome of the last update, once, after the
// uplink connected.
func (a *App) reportUpdate(ctx context.Context) {
	var r update.Result
	for wait := 0; ; wait++ {
		var ok bool
		r, ok = update.ReadResult(a.stateDir())
		if !ok || r.Reported {
			return
		}
		if r.Status != "installing" {
			break
		}
		if wait > 600 { // the updater died mid-way
			return
		}
		select { // the updater decides once it saw our health record
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	a.fleet.Audit(ctx, &event.Audit{Action: "update", Name: r.Artifact, RequestID: r.RequestID, Outcome: r.Status, Reason: r.Error})
	res := fleet.Result{V: 1, ID: r.RequestID, Name: "update", OK: r.Status == "applied", Error: r.Error, Result: r, TS: time.Now().UTC()}
	b, _ := json.Marshal(res)
	if err := a.uplink.Publish(ctx, fleet.TopicCommand+"/update/result", b, false); err == nil {
		update.MarkReported(a.stateDir(), r)
	}
	a.log.Info("update outcome", "status", r.Status, "from", r.From, "to", r.To, "err", r.Error)
}
