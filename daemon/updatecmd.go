package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/update"
)

// updateApply is `mailroomd update-apply`, the updater process.
func updateApply(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("update-apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pubFile := fs.String("pub", "/usr/share/mailroomd/release.pub", "release public key")
	artifact := fs.String("artifact", "", "the verified artifact")
	state := fs.String("state", "/var/lib/mailroomd", "state directory")
	buffer := fs.String("buffer", "", "buffer database")
	exe := fs.String("exe", "", "binary to replace (plain installs)")
	deb := fs.Bool("deb", false, "install a package with dpkg and control the systemd service")
	oldPID := fs.Int("old-pid", 0, "the daemon that handed over")
	from := fs.String("from", "", "version being replaced")
	reqID := fs.String("request", "", "request id to report")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long the new version has to become healthy")
	pending := fs.String("pending", "", "a file naming the artifact (written by the daemon for the update unit); removed when read")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pending != "" {
		// A marker that cannot be read ends the update: its failure is
		// recorded, and a packaged daemon, which is still running, is
		// restarted to publish it (the marker is gone, so the path unit
		// does not start this again).
		unreadable := func(err error, removed bool) int {
			fmt.Fprintf(stderr, "update-apply: %v\n", err)
			if rerr := update.RecordFailure(*state, fmt.Errorf("the update's marker: %w", err)); rerr != nil {
				fmt.Fprintf(stderr, "update-apply: record the failure: %v\n", rerr)
			} else if *deb && removed {
				// A running daemon publishes the outcome when it starts
				// again; one an admin stopped stays stopped. Without the
				// marker gone the path unit would start this again, and
				// the daemon with it, until systemd's start limit.
				if out, err := exec.Command("systemctl", "try-restart", "mailroomd.service").CombinedOutput(); err != nil {
					fmt.Fprintf(stderr, "update-apply: systemctl try-restart: %v %s\n", err, out)
				}
			}
			return 2
		}
		b, err := readMarker(*pending)
		if errors.Is(err, iofs.ErrNotExist) {
			fmt.Fprintf(stderr, "update-apply: %v: no update waits\n", err)
			return 2
		}
		removed := os.Remove(*pending) == nil
		if err != nil {
			return unreadable(err, removed)
		}
		m, err := update.ParsePending(b)
		if err != nil {
			return unreadable(err, removed)
		}
		*artifact = m.Artifact
		if m.RequestID != "" {
			*reqID = m.RequestID
		}
		if m.From != "" {
			*from = m.From
		}
		if m.Timeout > 0 {
			*timeout = m.Timeout
		}
	}
	if *deb && *exe == "" {
		*exe = "/usr/bin/mailroomd"
	}
	if *artifact == "" || (*exe == "" && !*deb) {
		fmt.Fprintln(stderr, "usage: mailroomd update-apply --artifact FILE --state DIR --buffer DB (--exe BINARY | --deb) -- DAEMON ARGS")
		return 2
	}
	daemonArgs := fs.Args()
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, time.Now().UTC().Format(time.RFC3339)+" "+format+"\n", a...)
	}
	p := update.Plan{PubFile: *pubFile, Artifact: *artifact, StateDir: *state, Buffer: *buffer, Exe: *exe, Deb: *deb,
		Args: daemonArgs, OldPID: *oldPID, From: *from, RequestID: *reqID, HealthTimeout: *timeout, Log: logf}
	if *deb {
		p.Start = func() (int, error) {
			if out, err := exec.Command("systemctl", "start", "mailroomd.service").CombinedOutput(); err != nil {
				return 0, fmt.Errorf("systemctl start: %v %s", err, out)
			}
			out, _ := exec.Command("systemctl", "show", "-p", "MainPID", "--value", "mailroomd.service").Output()
			var pid int
			fmt.Sscan(strings.TrimSpace(string(out)), &pid)
			return pid, nil
		}
		p.Stop = func(int) { exec.Command("systemctl", "stop", "mailroomd.service").Run() }
		exec.Command("systemctl", "stop", "mailroomd.service").Run()
	} else {
		p.Start = func() (int, error) {
			cmd := exec.Command(*exe, daemonArgs...)
			out, err := os.OpenFile(filepath.Join(*state, update.Dir, "daemon.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return 0, err
			}
			cmd.Stdout, cmd.Stderr = out, out
			update.Detach(cmd)
			if err := cmd.Start(); err != nil {
				out.Close()
				return 0, err
			}
			out.Close()
			pid := cmd.Process.Pid
			go cmd.Wait() // reap it if it dies while we watch
			return pid, nil
		}
		p.Stop = func(pid int) { update.StopProcess(pid, 10*time.Second) }
	}
	r := update.Apply(p)
	fmt.Fprintf(stdout, "update %s\n", r.Status)
	if r.Status != "applied" {
		return 1
	}
	return 0
}
