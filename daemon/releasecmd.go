package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/release"
)

// releaseMain signs and verifies release artifacts:
//
//	mailroomd release sign --key release.key --out DIR FILE...
//	mailroomd release verify --pub release.pub FILE
func releaseMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: mailroomd release sign --key KEY --out DIR FILE... | verify --pub PUB FILE")
		return 2
	}
	fs := flag.NewFlagSet("release "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "release signing key (PEM, Ed25519)")
	pub := fs.String("pub", "/usr/share/mailroomd/release.pub", "release public key (PEM or base64)")
	out := fs.String("out", "", "directory for SHA256SUMS and SHA256SUMS.sig")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() == 0 {
		return 2
	}
	switch args[0] {
	case "sign":
		b, err := os.ReadFile(*key)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd release: %v\n", err)
			return 2
		}
		k, err := envelope.ParsePrivateKey(b)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd release: %v\n", err)
			return 2
		}
		dir := *out
		if dir == "" {
			dir = filepath.Dir(fs.Arg(0))
		}
		if err := release.Sign(k, dir, fs.Args()); err != nil {
			fmt.Fprintf(stderr, "mailroomd release: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "signed %d artifacts: %s\n", fs.NArg(), filepath.Join(dir, release.SumsFile))
		return 0
	case "verify":
		b, err := os.ReadFile(*pub)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd release: %v\n", err)
			return 2
		}
		p, err := envelope.ParsePublicKey(string(b))
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd release: %v\n", err)
			return 2
		}
		for _, f := range fs.Args() {
			if err := release.VerifyFile(p, f); err != nil {
				fmt.Fprintf(stderr, "mailroomd release: %s: %v\n", f, err)
				return 1
			}
			fmt.Fprintf(stdout, "%s: OK\n", f)
		}
		return 0
	}
	fmt.Fprintf(stderr, "mailroomd release: unknown subcommand %q\n", args[0])
	return 2
}
