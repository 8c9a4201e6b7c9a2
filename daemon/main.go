// Command mailroomd is the mailroom edge daemon: it reads barcode scanners,
// commits every scan to a local SQLite buffer, and forwards the events to the
// parcel-tracking cloud over mutual-TLS MQTT.
//
// This package holds only the command line and the wiring of subsystems.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/devcert"
	"github.com/mailroomd/mailroomd/internal/seal"
	"github.com/mailroomd/mailroomd/internal/web"
)

// Stamped at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

const usage = `mailroomd: mailroom edge daemon

Usage:
  mailroomd run --config FILE            run in the foreground (also as an OS service)
  mailroomd check-config --config FILE   validate a configuration file
  mailroomd version                      print version and commit
  mailroomd install --config FILE        install as an OS service (systemd, Windows, launchd)
  mailroomd uninstall | start | stop | restart | status
                                         control the installed service
  mailroomd devices                      list serial ports and USB devices, with config snippets
  mailroomd probe --config FILE [--for D] [--out FILE] DEVICE
                                         print what one configured device reads (a camera: one still)
  mailroomd decode [--config FILE] BARCODE...
                                         print what each code is recognised as, one JSON object per line
  mailroomd directory import|search|forget --config FILE ...
                                         the recipient directory: import a CSV, search it, forget a person
  mailroomd fleet SUBCOMMAND ...         IT's fleet tools: keygen, status, cmd, config push, directory push, blobs get, alerts, events
  mailroomd release sign|verify ...      sign release artifacts (SHA256SUMS + Ed25519 signature), or verify one
  mailroomd udev-rules                   print the udev rules that give the service its devices
  mailroomd buffer-key [--id ID]         print a new key line for storage.encryption_key_file
  mailroomd passwd [--role clerk|admin] NAME
                                         read a password without echo and print the user line for web.users
  mailroomd dev-certs --dir DIR [--client-id ID]
                                         write throwaway development certificates

Exit status: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
`

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		path, ok := configFlag("run", rest, stderr)
		if !ok {
			return 2
		}
		cfg, err := config.Load(path)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: invalid configuration:\n%v\n", err)
			return 2
		}
		return runService(cfg, stderr)
	case "check-config":
		path, ok := configFlag("check-config", rest, stderr)
		if !ok {
			return 2
		}
		if _, err := config.Load(path); err != nil {
			var errs config.Errors
			if errors.As(err, &errs) {
				fmt.Fprintln(stderr, errs.Error())
			} else {
				fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			}
			return 2
		}
		fmt.Fprintf(stdout, "%s: OK\n", path)
		return 0
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "mailroomd %s (commit %s)\n", version, commit)
		return 0
	case "dev-certs":
		fs := flag.NewFlagSet("dev-certs", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dir := fs.String("dir", "", "directory to write ca.pem, server.pem/key, client.pem/key, watcher.pem/key and operator.pem/key into")
		id := fs.String("client-id", "mr-demo-01", "common name of the client certificate (the appliance id)")
		if err := fs.Parse(rest); err != nil || *dir == "" {
			fmt.Fprintln(stderr, "usage: mailroomd dev-certs --dir DIR [--client-id ID]")
			return 2
		}
		f, err := devcert.WriteDir(*dir, *id, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
		if f.Renewed {
			fmt.Fprintf(stdout, "the certificates in %s were from before the operator pair and are made anew, CA included: restart a broker that uses them\n", filepath.Dir(f.CA))
		}
		fmt.Fprintf(stdout, "development certificates in %s (CA %s)\n", filepath.Dir(f.CA), f.CA)
		return 0
	case "devices":
		return listDevices(stdout, stderr)
	case "probe":
		fs := flag.NewFlagSet("probe", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "", "configuration file")
		dur := fs.Duration("for", 0, "stop after this long (0 or left out: until interrupted)")
		out := fs.String("out", "", "a camera: write its still to this file")
		if err := fs.Parse(rest); err != nil || *path == "" || fs.NArg() != 1 || *dur < 0 {
			fmt.Fprintln(stderr, "usage: mailroomd probe --config FILE [--for DURATION] [--out FILE] DEVICE (DURATION: 0 or left out: until interrupted; --out: where a camera's still goes)")
			return 2
		}
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: invalid configuration:\n%v\n", err)
			return 2
		}
		for _, d := range cfg.Devices {
			if d.Name == fs.Arg(0) && *out != "" && d.Kind != "camera" {
				fmt.Fprintf(stderr, "mailroomd: --out is for a camera's still; %s is a %s\n", d.Name, d.Kind)
				return 2
			}
		}
		return probe(cfg, fs.Arg(0), *dur, *out, stdout, stderr)
	case "decode":
		return decode(rest, stdout, stderr)
	case "directory":
		return directoryCommand(rest, stdout, stderr)
	case "install", "uninstall", "start", "stop", "restart", "status":
		return control(cmd, rest, stdout, stderr)
	case "buffer-key":
		id := "k1"
		if len(rest) == 2 && rest[0] == "--id" {
			id = rest[1]
		}
		fmt.Fprintln(stdout, seal.NewKeyLine(id))
		return 0
	case "udev-rules":
		fmt.Fprint(stdout, udevRules())
		return 0
	case "fleet":
		return fleetMain(rest, stdout, stderr)
	case "release":
		return releaseMain(rest, stdout, stderr)
	case "update-apply":
		return updateApply(rest, stdout, stderr)
	case "passwd":
		return passwd(rest, os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mailroomd: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if *path == "" {
		fmt.Fprintf(stderr, "usage: mailroomd %s --config FILE\n", name)
		return "", false
	}
	return *path, true
}

// decode prints the classification of each argument as one JSON object per
// line. With --config, the configured internal code rules apply too.
func decode(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file whose barcodes.internal rules apply")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: mailroomd decode [--config FILE] BARCODE...")
		return 2
	}
	var rules []barcode.Rule
	if *path != "" {
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: invalid configuration:\n%v\n", err)
			return 2
		}
		rules = cfg.Barcodes.Rules()
	}
	cls, err := barcode.NewClassifier(rules)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, code := range fs.Args() {
		if err := enc.Encode(cls.Classify([]byte(code))); err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
	}
	return 0
}

// passwd reads a password twice (without echo on a terminal; one line each
// from a pipe) and prints the web.users line with its bcrypt hash. The
// password itself is never printed or logged.
func passwd(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "clerk", "clerk or admin")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || (*role != "clerk" && *role != "admin") {
		fmt.Fprintln(stderr, "usage: mailroomd passwd [--role clerk|admin] NAME")
		return 2
	}
	read, done, err := lineReader(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	defer done()
	pw, err := read("Password: ")
	if err == nil && len(pw) < 8 {
		err = errors.New("a password needs at least 8 characters")
	}
	var again string
	if err == nil {
		again, err = read("Again: ")
	}
	if err == nil && again != pw {
		err = errors.New("the passwords differ")
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	hash, err := web.HashPassword(pw)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "    - {name: %s, role: %s, password_hash: \"%s\"}\n", fs.Arg(0), *role, hash)
	return 0
}

// lineReader reads secrets from a terminal without echo, or lines from a
// pipe. On a terminal, echo is off before the first prompt is shown, so
// that nothing typed after the prompt appeared is ever echoed; done turns
// it back on.
func lineReader(f *os.File, prompt io.Writer) (read func(string) (string, error), done func(), err error) {
	sc := bufio.NewScanner(f)
	next := func() (string, error) {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return "", err
			}
			return "", errors.New("no password given on standard input")
		}
		return strings.TrimRight(sc.Text(), "\r"), nil
	}
	if !term.IsTerminal(int(f.Fd())) {
		return func(string) (string, error) { return next() }, func() {}, nil
	}
	restore, err := echoOff(int(f.Fd()))
	if err != nil {
		return nil, nil, fmt.Errorf("turn off the terminal's echo: %w", err)
	}
	return func(p string) (string, error) {
		fmt.Fprint(prompt, p)
		return next()
	}, restore, nil
}
