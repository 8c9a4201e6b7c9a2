package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/seal"
	"github.com/mailroomd/mailroomd/internal/store"
)

const directoryUsage = `usage:
  mailroomd directory import --config FILE PEOPLE.csv   replace the directory with the people of a CSV file
  mailroomd directory search --config FILE [--limit N] QUERY...
                                                        find people by name or badge (JSON lines, best first);
                                                        each argument is one query: quote a full name
  mailroomd directory forget --config FILE ID           remove one person at once (an erasure request)
`

// directoryCommand manages the recipient directory in the buffer the
// configuration names; the daemon may be running.
func directoryCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, directoryUsage)
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("directory "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file")
	limit := fs.Int("limit", 10, "search: at most this many people")
	if err := fs.Parse(args[1:]); err != nil || *path == "" || fs.NArg() == 0 || *limit < 1 {
		fmt.Fprint(stderr, directoryUsage)
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: invalid configuration:\n%v\n", err)
		return 2
	}
	var keys *seal.Keys
	if cfg.Storage.EncryptionKeyFile != "" {
		if keys, err = seal.Load(cfg.Storage.EncryptionKeyFile); err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
	}
	ctx := context.Background()
	switch sub {
	case "import":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, directoryUsage)
			return 2
		}
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
		defer f.Close()
		entries, err := directory.ParseCSV(f)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %s: nothing imported, the directory is unchanged:\n%v\n", fs.Arg(0), err)
			return 1
		}
		v, err := store.ReplaceDirectory(ctx, cfg.Storage.Path, keys, entries)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
		active := 0
		for _, e := range entries {
			if e.Active {
				active++
			}
		}
		fmt.Fprintf(stdout, "imported %d people (%d active), directory version %d\n", len(entries), active, v)
		return 0
	case "search":
		entries, _, err := store.LoadDirectory(ctx, cfg.Storage.Path, keys)
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
		x := directory.NewIndex(entries)
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		for _, q := range fs.Args() {
			for _, m := range x.Search(q, *limit) {
				enc.Encode(struct {
					Query    string  `json:"query"`
					ID       string  `json:"id"`
					Name     string  `json:"name"`
					Location string  `json:"location"`
					Score    float64 `json:"score"`
				}{q, m.ID, m.Name, m.Location, m.Score})
			}
		}
		return 0
	case "forget":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, directoryUsage)
			return 2
		}
		changed, err := store.ForgetPerson(ctx, cfg.Storage.Path, keys, fs.Arg(0))
		if errors.Is(err, store.ErrNameRemains) || errors.Is(err, store.ErrWALInUse) {
			fmt.Fprintf(stdout, "forgot %s (name taken out of %d events)\n", fs.Arg(0), changed)
			fmt.Fprintf(stderr, "mailroomd: warning: %v\n", err)
			return 0
		}
		if errors.Is(err, store.ErrNoPerson) {
			fmt.Fprintf(stderr, "mailroomd: no person with id %q in the directory\n", fs.Arg(0))
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "mailroomd: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "forgot %s (name taken out of %d events)\n", fs.Arg(0), changed)
		return 0
	}
	fmt.Fprint(stderr, directoryUsage)
	return 2
}
