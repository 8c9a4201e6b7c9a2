package main

import (
	"flag"
	"fmt"
	"io"
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
		b, err := os.ReadFile(*pending)
		if err != nil {
			fmt.Fprintf(stderr, "update-apply: %v\n", err)
			return 2
		}
		os.Remove(*pending)
		m, err := update.ParsePending(b)
		if err != nil {
			fmt.Fprintf(stderr, "update-apply: %v\n", err)
			return 2
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
