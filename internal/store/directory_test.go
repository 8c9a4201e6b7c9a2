package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/seal"
)

func TestDirectoryImportAndErasure(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{}) // a running daemon
	defer o.Close()
	if v, err := o.DirectoryVersion(ctx); v != 0 || err != nil {
		t.Fatalf("version before any import: %d, %v; want 0", v, err)
	}
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
	// Asked before and after other connections' changes: the version is
	// read again each time, not the first one kept.
	if v, _ := o.DirectoryVersion(ctx); v != 1 {
		t.Fatalf("version after import %d, want 1", v)
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

// forgetRig is a buffer with three parcels of one person: one matched by
// the name its label prints (with privacy "id": the name is only in the
// raw bytes and the scan), one received for nobody and assigned later,
// one chosen at a manual entry whose typed text matched.
func forgetRig(t *testing.T, keys *seal.Keys) (path string, o *Outbox, ids []string) {
	ctx := context.Background()
	path = filepath.Join(t.TempDir(), "buffer.db")
	if _, err := ReplaceDirectory(ctx, path, keys, []directory.Entry{{ID: "E1", Name: "Zacharias Quellenberger", Email: "zq@example.com", Active: true},
		{ID: "E2", Name: "Anna Weiß", Active: true}}); err != nil {
		t.Fatal(err)
	}
	o, err := Open(ctx, Options{Path: path, Seal: keys})
	if err != nil {
		t.Fatal(err)
	}
	label := "[)>\x1e05\x1d00340123450000000017\x1d4301ZACHARIAS QUELLENBERGER\x1d4308+49 30 555 0101\x1e\x04"
	add := func(ev event.Event) event.Event {
		t.Helper()
		ev.Appliance, ev.Time = "mr-test", t0
		got, err := o.Append(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	scan := add(event.Event{Type: event.TypeScan, Station: "dock-1", Barcode: []byte(label)})
	first := add(event.Event{Type: event.TypeParcelReceived, Station: "dock-1", ScanID: scan.ID, RecipientID: "E1", RecipientMatch: "exact",
		Parcel: &event.Parcel{Carrier: "sscc", Tracking: "340123450000000017", Raw: label,
			Label: &barcode.Label{Format: "05", Tracking: "340123450000000017", ShipTo: &barcode.ShipTo{}}}})
	scan2 := add(event.Event{Type: event.TypeScan, Station: "dock-1", Manual: true, Barcode: []byte("T-2"), Recipient: "Herr Q."})
	second := add(event.Event{Type: event.TypeParcelReceived, Station: "dock-1", ScanID: scan2.ID, Recipient: "Herr Q.", RecipientMatch: "none",
		Parcel: &event.Parcel{Carrier: "unknown", Tracking: "T-2", Raw: "T-2"}})
	add(event.Event{Type: event.TypeParcelUpdated, ParcelID: second.ID, RecipientID: "E1", RecipientName: "Zacharias Quellenberger", RecipientMatch: "manual", By: "clara"})
	scan3 := add(event.Event{Type: event.TypeScan, Station: "dock-1", Manual: true, Barcode: []byte("T-3"), Recipient: "quellenberger zacharias"})
	third := add(event.Event{Type: event.TypeParcelReceived, Station: "dock-1", ScanID: scan3.ID, RecipientID: "E1", RecipientName: "Zacharias Quellenberger",
		RecipientMatch: "exact", Parcel: &event.Parcel{Carrier: "unknown", Tracking: "T-3", Raw: "T-3"}})
	other := add(event.Event{Type: event.TypeParcelReceived, Station: "dock-1", RecipientID: "E2", RecipientName: "Anna Weiß", RecipientMatch: "exact",
		Parcel: &event.Parcel{Carrier: "unknown", Tracking: "T-4", Raw: "T-4"}})
	return path, o, []string{first.ID, second.ID, third.ID, other.ID}
}

// After forget no trace of the person's name, e-mail or phone is in the
// buffer's files, in clear or (with encryption) in the events read back;
// the events still name the person by id, and another person's are as
// they were.
func TestForgetErasesThePersonEverywhere(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprint("sealed=", sealed), func(t *testing.T) {
			ctx := context.Background()
			var keys *seal.Keys
			if sealed {
				keys, _ = seal.Parse(seal.NewKeyLine("k1"))
			}
			path, o, ids := forgetRig(t, keys)
			before, _ := o.BySeq(ctx, 1, 100)
			o.Close()
			changed, err := ForgetPerson(ctx, path, keys, "e1") // any letter case
			if err != nil || changed != 7 {
				t.Fatalf("forget: %d events changed, %v", changed, err)
			}
			traces := []string{"QUELLENBERGER", "Quellenberger", "quellenberger", "zq@example.com", "+49 30 555 0101", "Herr Q."}
			for _, f := range []string{path, path + "-wal"} {
				b, _ := os.ReadFile(f)
				for _, s := range traces {
					if strings.Contains(string(b), s) {
						t.Errorf("%s still holds %q", f, s)
					}
				}
			}
			o, err = Open(ctx, Options{Path: path, Seal: keys})
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			after, _ := o.BySeq(ctx, 1, 100)
			if len(after) != len(before) {
				t.Fatalf("%d events after, %d before", len(after), len(before))
			}
			for i := range after {
				for _, s := range traces {
					if strings.Contains(string(after[i].Payload), s) {
						t.Errorf("event %d still holds %q: %s", after[i].Seq, s, after[i].Payload)
					}
				}
				ev, _ := event.Decode(after[i].Payload)
				was, _ := event.Decode(before[i].Payload)
				if ev.ID != was.ID || ev.Seq != was.Seq || ev.RecipientID != was.RecipientID || ev.Type != was.Type {
					t.Errorf("event %d changed beyond the name: %+v", ev.Seq, ev)
				}
				if ev.ID == ids[3] && string(after[i].Payload) != string(before[i].Payload) {
					t.Errorf("another person's event changed: %s", after[i].Payload)
				}
			}
			// Their open parcels wait for a clerk on the needs-recipient list.
			needs, n, err := o.NeedsRecipient(ctx, 10)
			if err != nil || n != 3 || len(needs) != 3 || needs[0].Person != "" || needs[0].Recipient != "" {
				t.Fatalf("needs-recipient after forget: %d %+v %v", n, needs, err)
			}
			if mine, _ := o.OpenParcelsOfPerson(ctx, "E1", 10); len(mine) != 0 {
				t.Fatalf("parcels still filed under the forgotten id: %+v", mine)
			}
			if _, err := ForgetPerson(ctx, path, keys, "E1"); !errors.Is(err, ErrNoPerson) {
				t.Fatalf("forgetting again: %v", err)
			}
		})
	}
}

// A parcel that named the person once and was assigned to someone else
// since keeps its new person, label and texts; forget also works while
// the buffer is open (a running daemon), saying when the WAL could not
// start over.
func TestForgetLeavesOthersParcelsAndWorksWhileOpen(t *testing.T) {
	ctx := context.Background()
	path, o, ids := forgetRig(t, nil)
	defer o.Close()
	// The label-matched parcel goes to Anna after all.
	if _, err := o.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: t0, ParcelID: ids[0],
		RecipientID: "E2", RecipientName: "Anna Weiß", RecipientMatch: "manual", By: "clara"}); err != nil {
		t.Fatal(err)
	}
	// A photo of one of his parcels, and one of Anna's.
	photos := blobstore.New(filepath.Join(filepath.Dir(path), "blobs"), nil)
	var shas []string
	for i, parcel := range []string{ids[1], ids[3]} {
		sha, err := photos.Put([]byte(fmt.Sprint("\xff\xd8\xff label photo ", i)))
		if err != nil {
			t.Fatal(err)
		}
		shas = append(shas, sha)
		if _, err := o.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: t0, ParcelID: parcel, By: "clara",
			Photos: []event.Photo{{SHA256: sha, Size: 10, ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
			t.Fatal(err)
		}
	}
	// A reader holds a snapshot, as the daemon's may.
	rows, err := o.rdb.QueryContext(ctx, "SELECT id FROM events")
	if err != nil {
		t.Fatal(err)
	}
	rows.Next()
	_, err = ForgetPerson(ctx, path, nil, "E1")
	rows.Close()
	if err != nil && !errors.Is(err, ErrWALInUse) {
		t.Fatalf("forget while open: %v", err)
	}
	if _, err := photos.Get(shas[0]); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("the photo of his parcel: %v", err)
	}
	if _, err := photos.Get(shas[1]); err != nil {
		t.Fatalf("the photo of Anna's parcel: %v", err)
	}
	if todo, _ := o.BlobsToSend(ctx, 10); len(todo) != 1 || todo[0].SHA256 != shas[1] {
		t.Fatalf("photos left to upload: %+v", todo)
	}
	if p, _ := o.ParcelByID(ctx, ids[0]); p.Person != "E2" || p.Match != "manual" {
		t.Fatalf("Anna's parcel after forgetting E1: %+v", p)
	}
	if p, _ := o.ParcelByID(ctx, ids[1]); p.Person != "" || p.Match != "none" {
		t.Fatalf("E1's open parcel after forget: %+v", p)
	}
	// Run again (the id is gone): the rewrite is done again, and with no
	// reader left nothing of the name is in the files.
	if _, err := ForgetPerson(ctx, path, nil, "E1"); !errors.Is(err, ErrNoPerson) {
		t.Fatalf("forget again: %v", err)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "Zacharias Quellenberger") || strings.Contains(string(b), "zq@example.com") {
		t.Fatal("the directory's name or e-mail is still in the file")
	}
}
