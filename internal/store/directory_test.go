package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/seal"
)

func TestDirectoryImportAndErasure(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{}) // a running daemon
	defer o.Close()
	people := []directory.Entry{
		{ID: "E1", Name: "Zacharias Quellenberger", Badges: []string{"EMP-1"}, Active: true},
		{ID: "E2", Name: "Anna Weiß", Active: true},
	}
	v, err := ReplaceDirectory(ctx, path, nil, people)
	if err != nil || v != 1 {
		t.Fatalf("import: %d %v", v, err)
	}
	got, version, err := o.Directory(ctx)
	if err != nil || version != 1 || len(got) != 2 || got[0].Name != "Zacharias Quellenberger" {
		t.Fatalf("the daemon reads %+v %d %v", got, version, err)
	}
	if _, err := ForgetPerson(ctx, path, nil, "E1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ForgetPerson(ctx, path, nil, "E1"); !errors.Is(err, ErrNoPerson) {
		t.Fatalf("forgetting twice: %v", err)
	}
	// Marked as left, then deleted: two versions.
	if v, _ := o.DirectoryVersion(ctx); v != 3 {
		t.Fatalf("version after forget %d, want 3", v)
	}
	o.Close()
	for _, f := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "Quellenberger") {
			t.Fatalf("%s still holds the forgotten name", f)
		}
	}
}

func TestDirectorySealedAtRest(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	k, _ := seal.Parse(seal.NewKeyLine("k1"))
	if _, err := ReplaceDirectory(ctx, path, k, []directory.Entry{{ID: "E1", Name: "Zacharias Quellenberger", Active: true}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := LoadDirectory(ctx, path, k)
	if err != nil || len(got) != 1 || got[0].Name != "Zacharias Quellenberger" {
		t.Fatalf("load %+v %v", got, err)
	}
	if _, _, err := LoadDirectory(ctx, path, nil); err == nil {
		t.Fatal("a sealed directory read without a key")
	}
	for _, f := range []string{path, path + "-wal"} {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "Quellenberger") {
			t.Fatalf("%s holds a name in clear", f)
		}
	}
}

func TestDirectoryKeysChecked(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "buffer.db") // a directory not made yet
	people := []directory.Entry{{ID: "E1", Name: "Zacharias Quellenberger", Active: true}}
	if _, err := ReplaceDirectory(ctx, path, nil, people); err != nil {
		t.Fatal(err)
	}
	// Encryption turned on: the next start seals the directory too.
	k1, _ := seal.Parse(seal.NewKeyLine("k1"))
	o := open(t, path, Options{Seal: k1})
	got, _, err := o.Directory(ctx)
	o.Close()
	if err != nil || len(got) != 1 {
		t.Fatalf("directory after sealing: %+v %v", got, err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), "Quellenberger") {
		t.Fatal("the directory stayed in clear after encryption was turned on")
	}
	// An import with a key file that lacks the buffer's key is refused.
	k2, _ := seal.Parse(seal.NewKeyLine("k2"))
	if _, err := ReplaceDirectory(ctx, path, k2, people); err == nil || !strings.Contains(err.Error(), `sealed with key "k1"`) {
		t.Fatalf("import with another key: %v", err)
	}
	// A start without the key is refused with the reason.
	if _, err := Open(ctx, Options{Path: path}); err == nil || !strings.Contains(err.Error(), "no storage.encryption_key_file") {
		t.Fatalf("start without the key: %v", err)
	}
}
