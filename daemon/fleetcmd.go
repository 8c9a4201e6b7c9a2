package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/durable"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/fleetop"
	"github.com/mailroomd/mailroomd/internal/remoteconfig"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

const fleetUsage = `usage: mailroomd fleet SUBCOMMAND [flags]

  keygen --out DIR [--id ID]                 a new fleet signing key pair (fleet.key, fleet.pub)
  status                                     a table of every appliance: online, version, pending, alerts, last seen
  cmd --target ID NAME [ARGS_JSON]           sign and send a command, wait for its result
  config push --target T --version N FILE    sign and publish a desired config (retained) to an appliance
  directory push --target T --version N FILE.csv
                                             sign and publish a recipient directory (retained, in parts)
  alerts                                     alert messages (retained and new) for --for
  blobs get --target ID --sha256 S --out F   reassemble a photo an appliance uploaded, check its SHA-256, write it to F
  events --follow                            print events; report seq gaps and duplicates per appliance and epoch

Connection flags (all but keygen): --broker mqtts://HOST:8883 --ca FILE --cert FILE --key FILE
  [--prefix mailroom/v1] [--client-id ID]; signing: --sign-key FILE --key-id ID
`

// fleetFlags are the flags each fleet subcommand takes.
var fleetFlags = func() map[string]map[string]bool {
	conn := []string{"broker", "ca", "cert", "key", "prefix", "client-id"}
	sign := []string{"sign-key", "key-id"}
	m := map[string][]string{
		"keygen":         {"out", "id"},
		"status":         append([]string{"for"}, conn...),
		"cmd":            append(append([]string{"target", "ttl", "wait"}, conn...), sign...),
		"config push":    append(append([]string{"target", "version", "wait"}, conn...), sign...),
		"directory push": append(append([]string{"target", "version", "wait", "part-size"}, conn...), sign...),
		"alerts":         append([]string{"for"}, conn...),
		"blobs get":      append([]string{"target", "sha256", "out", "wait"}, conn...),
		"events":         append([]string{"for", "follow", "from-start"}, conn...),
	}
	out := map[string]map[string]bool{}
	for sub, names := range m {
		out[sub] = map[string]bool{}
		for _, n := range names {
			out[sub][n] = true
		}
	}
	return out
}()

func fleetMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, fleetUsage)
		return 2
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, fleetUsage)
		return 0
	}
	// Subcommands of two words: the group alone (or with --help) says
	// which word follows.
	if verb, ok := map[string]string{"config": "push", "directory": "push", "blobs": "get"}[sub]; ok {
		switch {
		case len(rest) > 0 && rest[0] == verb:
			sub, rest = sub+" "+verb, rest[1:]
		case len(rest) > 0 && (rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help"):
			sub = sub + " " + verb // its flags, as `fleet SUB VERB --help` lists them
		default:
			fmt.Fprintf(stderr, "mailroomd fleet %s: the subcommand is \"%s %s\" (mailroomd fleet %s %s --help lists its flags)\n", sub, sub, verb, sub, verb)
			return 2
		}
	}
	fs := flag.NewFlagSet("fleet "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "", "broker URL, mqtts://host:8883")
	ca := fs.String("ca", "", "CA certificate of the broker")
	cert := fs.String("cert", "", "operator client certificate")
	key := fs.String("key", "", "operator client key")
	prefix := fs.String("prefix", "mailroom/v1", "topic prefix")
	clientID := fs.String("client-id", "", "MQTT client id (default: fleet-<pid>)")
	signKey := fs.String("sign-key", "", "fleet signing key (PEM)")
	keyID := fs.String("key-id", "", "id of the signing key, as the boxes know it")
	target := fs.String("target", "", "appliance id (cmd), or appliance id, site:NAME or * (config push)")
	ttl := fs.Duration("ttl", 5*time.Minute, "how long a command stays valid")
	wait := fs.Duration("wait", time.Minute, "how long to wait for a result (default 1m; cmd update: for its outcome, default 10m; config push and directory push: for each box's report, default 2m)")
	dur := fs.Duration("for", 3*time.Second, "how long to listen (status, alerts, events)")
	follow := fs.Bool("follow", false, "events: keep following until interrupted")
	fromStart := fs.Bool("from-start", false, "events: expect every epoch to start at seq 1 (default: at the first seq seen)")
	out := fs.String("out", "", "keygen: directory for the key pair; blobs get: the file to write, or - for standard output")
	id := fs.String("id", "fleet", "keygen: key id")
	cfgVersion := fs.Int64("version", 0, "config push, directory push: version, greater than the last one tried")
	partSize := fs.Int("part-size", fleetop.DefaultPartSize, "directory push: bytes of the file per signed part")
	blobSHA := fs.String("sha256", "", "blobs get: the blob's SHA-256")
	used, known := fleetFlags[sub]
	if !known {
		fmt.Fprintf(stderr, "mailroomd fleet: unknown subcommand %q\n%s", sub, fleetUsage)
		return 2
	}
	fs.Usage = func() { // the flags of this subcommand only
		fmt.Fprintf(stderr, "Usage of fleet %s:\n", sub)
		fs.VisitAll(func(f *flag.Flag) {
			if used[f.Name] {
				fmt.Fprintf(stderr, "  --%s\t%s\n", f.Name, f.Usage)
			}
		})
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0 // asked for: the flags are listed
		}
		return 2
	}
	bad := false
	fs.Visit(func(f *flag.Flag) {
		if !used[f.Name] {
			fmt.Fprintf(stderr, "mailroomd fleet %s: --%s is not a flag of this subcommand\n", sub, f.Name)
			bad = true
		}
	})
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"for", *dur}, {"wait", *wait}, {"ttl", *ttl}} {
		if used[d.name] && d.v <= 0 {
			fmt.Fprintf(stderr, "mailroomd fleet %s: --%s must be positive, not %s\n", sub, d.name, d.v)
			bad = true
		}
	}
	if bad {
		return 2
	}
	if sub == "keygen" {
		return fleetKeygen(*out, *id, stdout, stderr)
	}
	if sub == "blobs get" { // checked before connecting: a usage error needs no broker
		var problems []string
		for _, f := range []struct{ name, value string }{{"broker", *broker}, {"target", *target}, {"sha256", *blobSHA}, {"out", *out}} {
			if f.value == "" {
				problems = append(problems, "--"+f.name+" is required")
			}
		}
		if *blobSHA != "" && !isSHA256(*blobSHA) {
			problems = append(problems, fmt.Sprintf("--sha256 %q is not a SHA-256 (64 hex digits)", *blobSHA))
		}
		if *target != "" && !config.ValidApplianceID(*target) {
			problems = append(problems, fmt.Sprintf("--target %q is not one appliance id (1-64 letters, digits, '-', '_' or '.'; no site:NAME or *)", *target))
		}
		if fs.NArg() != 0 {
			problems = append(problems, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
		}
		if len(problems) > 0 {
			for _, p := range problems {
				fmt.Fprintf(stderr, "mailroomd fleet blobs get: %s\n", p)
			}
			fmt.Fprintln(stderr, "usage: mailroomd fleet blobs get --target APPLIANCE --sha256 S --out FILE|- [--wait D]")
			return 2
		}
	}
	if *broker == "" {
		fmt.Fprintln(stderr, "mailroomd fleet: --broker is required")
		return 2
	}
	if !config.ValidTopicPrefix(*prefix) {
		fmt.Fprintf(stderr, "mailroomd fleet: --prefix %q is not a valid topic prefix: %s\n", *prefix, config.TopicPrefixRule)
		return 2
	}
	opts := fleetop.Options{Broker: *broker, Prefix: *prefix, ClientID: *clientID, KeyID: *keyID}
	if opts.ClientID == "" {
		opts.ClientID = fmt.Sprintf("fleet-%d", os.Getpid())
	}
	if !strings.HasPrefix(*broker, "mqtt://") && !strings.HasPrefix(*broker, "tcp://") {
		t, err := uplink.LoadTLS(*ca, *cert, *key)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 2
		}
		opts.TLS = t
	}
	if *signKey != "" {
		b, err := os.ReadFile(*signKey)
		if err == nil {
			opts.Key, err = envelope.ParsePrivateKey(b)
		}
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: signing key: %v\n", err)
			return 2
		}
		if *keyID == "" {
			fmt.Fprintln(stderr, "mailroomd fleet: --key-id is required with --sign-key")
			return 2
		}
	}
	c, err := fleetop.Dial(opts)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
		return 1
	}
	defer c.Close()
	switch sub {
	case "cmd":
		if *target == "" || fs.NArg() < 1 || fs.NArg() > 2 || opts.Key == nil {
			fmt.Fprintln(stderr, "usage: mailroomd fleet cmd --sign-key F --key-id ID --target APPLIANCE NAME [ARGS_JSON]")
			return 2
		}
		var args any
		if fs.NArg() == 2 {
			var raw json.RawMessage
			if err := json.Unmarshal([]byte(fs.Arg(1)), &raw); err != nil {
				fmt.Fprintf(stderr, "mailroomd fleet: ARGS_JSON: %v\n", err)
				return 2
			}
			args = raw
		}
		var res fleet.Result
		var err error
		if fs.Arg(0) == "update" {
			// An update's outcome comes once the new version became
			// healthy or was rolled back: wait 10 minutes unless told
			// otherwise.
			updateWait := 10 * time.Minute
			fs.Visit(func(f *flag.Flag) {
				if f.Name == "wait" {
					updateWait = *wait
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), updateWait)
			defer cancel()
			res, err = c.Update(ctx, *target, args, *ttl, func(r fleet.Result) {
				b, _ := json.Marshal(r.Result)
				fmt.Fprintf(stderr, "mailroomd fleet: %s accepted the update (%s); waiting for its outcome\n", *target, b)
			})
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), *wait)
			defer cancel()
			res, err = c.Command(ctx, *target, fs.Arg(0), args, *ttl)
		}
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 1
		}
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(stdout, string(b))
		if !res.OK {
			return 1
		}
		return 0
	case "config push":
		if *target == "" || fs.NArg() != 1 || opts.Key == nil || *cfgVersion <= 0 {
			fmt.Fprintln(stderr, "usage: mailroomd fleet config push --sign-key F --key-id ID --target T --version N FILE")
			return 2
		}
		body, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 2
		}
		// A config's outcome can take its trial (config_trial, 1m by
		// default) and more: wait 2 minutes unless told otherwise.
		pushWait := 2 * time.Minute
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "wait" {
				pushWait = *wait
			}
		})
		outcomes, err := c.PushConfigAndWait(*target, *cfgVersion, string(body), 365*24*time.Hour, pushWait)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 1
		}
		ids := make([]string, len(outcomes))
		for i, o := range outcomes {
			ids[i] = o.Appliance
		}
		fmt.Fprintf(stdout, "config version %d published (retained) for %s: %s\n", *cfgVersion, *target, strings.Join(ids, ", "))
		code := 0
		for _, o := range outcomes {
			r := o.Report
			switch {
			case !o.Reported:
				fmt.Fprintf(stdout, "%s: no report within %s (offline? a box applies the retained config when it connects)\n", o.Appliance, pushWait)
				code = 1
			case r.Status == remoteconfig.StatusApplied || r.Status == remoteconfig.StatusCurrent:
				fmt.Fprintf(stdout, "%s: %s (version %d in use)\n", o.Appliance, r.Status, r.Applied)
			default:
				fmt.Fprintf(stdout, "%s: %s (version %d in use): %s\n", o.Appliance, r.Status, r.Applied, strings.Join(r.Errors, "; "))
				code = 1
			}
		}
		return code
	case "directory push":
		if *target == "" || fs.NArg() != 1 || opts.Key == nil || *cfgVersion <= 0 || *partSize < 1024 {
			fmt.Fprintln(stderr, "usage: mailroomd fleet directory push --sign-key F --key-id ID --target T --version N [--part-size BYTES (at least 1024)] FILE.csv")
			return 2
		}
		pushWait := 2 * time.Minute
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "wait" {
				pushWait = *wait
			}
		})
		return fleetDirectoryPush(c, *target, *cfgVersion, fs.Arg(0), *partSize, pushWait, stdout, stderr)
	case "blobs get":
		b, m, err := c.GetBlob(context.Background(), *target, *blobSHA, *wait)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 1
		}
		if *out == "-" {
			if _, err := stdout.Write(b); err != nil {
				fmt.Fprintf(stderr, "mailroomd fleet: write the photo: %v\n", err)
				return 1
			}
			fmt.Fprintf(stderr, "%d bytes, %s, kind %s, SHA-256 checked\n", len(b), m.ContentType, m.Kind)
			return 0
		}
		if err := writeNewFile(*out, b); err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: %d bytes, %s, kind %s, SHA-256 checked\n", *out, len(b), m.ContentType, m.Kind)
		return 0
	case "status":
		return fleetStatus(c, *dur, stdout, stderr)
	case "alerts":
		msgs, err := c.Collect("+/"+fleet.TopicAlerts, *dur)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
			return 1
		}
		for _, m := range msgs {
			fmt.Fprintf(stdout, "%s %s\n", c.Appliance(m.Topic), m.Payload)
		}
		return 0
	case "events":
		return fleetEvents(c, *follow, !*fromStart, *dur, stdout, stderr)
	}
	fmt.Fprintf(stderr, "mailroomd fleet: unknown subcommand %q\n\n%s", sub, fleetUsage)
	return 2
}

// fleetDirectoryPush checks a directory file as the box will, signs it in
// parts and publishes them to each appliance of target, then prints each
// one's report.
func fleetDirectoryPush(c *fleetop.Client, target string, version int64, file string, partSize int, wait time.Duration, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
		return 2
	}
	entries, err := directory.ParseCSV(bytes.NewReader(b))
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet: %s: not pushed:\n%v\n", file, err)
		return 1
	}
	parts, err := c.SignDirectory(target, version, b, partSize, 365*24*time.Hour)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
		return 1
	}
	ids, err := c.Appliances(target)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "directory version %d (%d people) in %d parts for %s\n", version, len(entries), len(parts), strings.Join(ids, ", "))
	code := 0
	for _, id := range ids {
		o, err := c.PushDirectory(id, version, parts, wait)
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "%s: %v\n", id, err)
			code = 1
		case !o.Reported:
			fmt.Fprintf(stdout, "%s: no report within %s (offline? a box applies the retained parts when it connects)\n", id, wait)
			code = 1
		case o.Report.Status == fleet.DirectoryApplied || o.Report.Status == fleet.DirectoryCurrent:
			fmt.Fprintf(stdout, "%s: %s (version %d in use, %d people)\n", id, o.Report.Status, o.Report.Applied, o.Report.People)
		default:
			fmt.Fprintf(stdout, "%s: %s (version %d in use): %s\n", id, o.Report.Status, o.Report.Applied, strings.Join(o.Report.Errors, "; "))
			code = 1
		}
	}
	return code
}

// isSHA256 reports whether s is 64 hex digits.
func isSHA256(s string) bool {
	return len(s) == 64 && strings.Trim(strings.ToLower(s), "0123456789abcdef") == ""
}

func fleetKeygen(dir, id string, stdout, stderr io.Writer) int {
	if dir == "" {
		fmt.Fprintln(stderr, "usage: mailroomd fleet keygen --out DIR [--id ID]")
		return 2
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	var der []byte
	if err == nil {
		der, err = x509.MarshalPKCS8PrivateKey(priv)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "fleet.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	}
	var pubDER []byte
	if err == nil {
		pubDER, err = x509.MarshalPKIXPublicKey(pub)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "fleet.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "signing key: %s (keep it off the boxes)\nfor each box's config:\nfleet:\n  public_keys:\n    - {id: %s, key: %s}\n",
		filepath.Join(dir, "fleet.key"), id, base64.StdEncoding.EncodeToString(pub))
	return 0
}

func fleetStatus(c *fleetop.Client, d time.Duration, stdout, stderr io.Writer) int {
	msgs, err := c.Collect("+/+", d)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet: %v\n", err)
		return 1
	}
	type row struct {
		state, version, lastSeen string
		pending                  int64
		alerts                   int
	}
	rows := map[string]*row{}
	get := func(id string) *row {
		if rows[id] == nil {
			rows[id] = &row{state: "?", version: "?"}
		}
		return rows[id]
	}
	for _, m := range msgs {
		id := c.Appliance(m.Topic)
		switch {
		case strings.HasSuffix(m.Topic, "/"+uplink.TopicStatus):
			var s struct {
				State   string    `json:"state"`
				Version string    `json:"version"`
				TS      time.Time `json:"ts"`
			}
			if json.Unmarshal(m.Payload, &s) == nil {
				r := get(id)
				r.state, r.version = s.State, s.Version
				if r.lastSeen == "" {
					r.lastSeen = s.TS.Local().Format(time.DateTime)
				}
			}
		case strings.HasSuffix(m.Topic, "/"+fleet.TopicTelemetry):
			var t fleet.Telemetry
			if json.Unmarshal(m.Payload, &t) == nil {
				r := get(id)
				r.version, r.pending, r.alerts = t.Version, t.Pending, len(t.Alerts)
				r.lastSeen = t.TS.Local().Format(time.DateTime)
			}
		}
	}
	ids := make([]string, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APPLIANCE\tSTATE\tVERSION\tPENDING\tALERTS\tLAST SEEN")
	for _, id := range ids {
		r := rows[id]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", id, r.state, r.version, r.pending, r.alerts, r.lastSeen)
	}
	tw.Flush()
	return 0
}

func fleetEvents(c *fleetop.Client, follow, fromFirstSeen bool, d time.Duration, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if follow {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		go func() { <-sig; cancel() }()
	} else {
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	g := fleetop.NewGapDetector()
	g.FromFirstSeen = fromFirstSeen
	conflicts := 0
	show := func(ev event.Event) {
		f := g.Add(ev)
		note := ""
		switch {
		case f.Conflict:
			conflicts++
			note = "  CONFLICT: seq already seen with another id"
		case f.Duplicate:
			note = "  duplicate (resend)"
		case f.NewGap[0] > 0:
			note = fmt.Sprintf("  GAP: seq %d-%d missing", f.NewGap[0], f.NewGap[1])
		case f.Filled:
			note = "  fills a gap"
		}
		fmt.Fprintf(stdout, "%s %s seq=%d %s %s%s\n", ev.Appliance, ev.Epoch, ev.Seq, ev.Type, ev.ID, note)
	}
	// events/# also takes batches (events/batch, a JSON array).
	err := c.Follow(ctx, "+/"+uplink.TopicEvents+"/#", func(m fleetop.Message) {
		payloads := [][]byte{m.Payload}
		if strings.HasSuffix(m.Topic, "/"+uplink.TopicEventBatch) {
			var arr []json.RawMessage
			if err := json.Unmarshal(m.Payload, &arr); err != nil {
				fmt.Fprintf(stdout, "UNDECODABLE batch %s: %v\n", m.Topic, err)
				return
			}
			payloads = payloads[:0]
			for _, raw := range arr {
				payloads = append(payloads, raw)
			}
		}
		for _, b := range payloads {
			ev, err := event.Decode(b)
			if err != nil {
				fmt.Fprintf(stdout, "UNDECODABLE %s: %v\n", m.Topic, err)
				continue
			}
			show(ev)
		}
	})
	for _, line := range g.Summary() {
		fmt.Fprintln(stdout, "summary:", line)
	}
	if conflicts > 0 {
		fmt.Fprintf(stdout, "summary: %d seqs seen with two different ids\n", conflicts)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd fleet events: %v; the summary covers only what arrived before\n", err)
		return 1
	}
	if len(g.Gaps()) > 0 || conflicts > 0 {
		return 3
	}
	return 0
}

// writeNewFile writes b to path. A regular file (or none) is replaced by a
// new one readable by its owner only, written durably (durable.WriteFile);
// anything else that is there (a device such as
// /dev/stdout, a pipe) is written into as it is.
func writeNewFile(path string, b []byte) error {
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target // a link stays a link: what it names is written
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		if fi.IsDir() {
			return fmt.Errorf("write %s: it is a directory", path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write(b)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write %s: %w", path, err) // a directory is not made for it
	}
	return durable.WriteFile(path, b, 0o600)
}
