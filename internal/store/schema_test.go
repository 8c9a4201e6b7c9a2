package store

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// releasedMigrations are the first 8 bytes of the SHA-256 of every
// migration released. A migration that ran on a box must never change: a
// buffer that ran the old text would never run the new one (schema 8 once
// gained the directory table that way, and the buffers of the builds
// before it did not open; schema 11 repairs them). A new migration is
// appended here with its hash; an edit of a released one fails this test.
var releasedMigrations = []string{
	1: "0632e2910aca8ccd", 2: "818b339ef14e4471", 3: "bc6cdc0d6cf014dc", 4: "fbf57078810203d7",
	5: "152d1dc49af4246e", 6: "b2249f21c72d2b6e", 7: "e740564fbc21873d", 8: "4e3ae292467df027",
	9: "aafc9be30a432092", 10: "de70c77c511269f0", 11: "3cafe20ac3f4a06b",
	12: "f251c426cf168810", 13: "0bf2aeb4704f6735",
}

func TestReleasedMigrationsNeverChange(t *testing.T) {
	if len(migrations) != len(releasedMigrations)-1 {
		t.Fatalf("%d migrations, %d recorded: record the hash of a new one in releasedMigrations", len(migrations), len(releasedMigrations)-1)
	}
	for i, m := range migrations {
		h := sha256.Sum256([]byte(m))
		if got := hex.EncodeToString(h[:8]); got != releasedMigrations[i+1] {
			t.Errorf("migration %d changed (%s, released as %s): append a new migration instead", i+1, got, releasedMigrations[i+1])
		}
	}
}
