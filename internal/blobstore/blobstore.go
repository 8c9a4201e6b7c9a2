// Package blobstore keeps photos (and other blobs) as files next to the
// buffer, each named by the SHA-256 of its bytes. A blob is written
// durably (write a temporary file, fsync, rename, fsync the directory)
// before the event that refers to it is committed, so a committed event
// never names a blob that a power cut lost. With encryption at rest the
// file holds the bytes sealed like event payloads.
//
// File layout: a header line "MRBLOB1 <key id>\n" ("-" when not sealed),
// then the bytes, sealed or not.
package blobstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"
	"github.com/mailroomd/mailroomd/internal/seal"
)

// Store keeps blobs in one directory.
type Store struct {
	dir  string
	keys *seal.Keys
}

// New returns the store of dir; keys, when set, seal what it writes.
func New(dir string, keys *seal.Keys) *Store { return &Store{dir: dir, keys: keys} }

// ErrNotFound is Get's answer for a blob the store does not have.
var ErrNotFound = errors.New("no such blob")

const magic = "MRBLOB1 "

// Sum is the hex SHA-256 of b: a blob's name.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// valid reports whether s is a blob's name: 64 lower-case hex digits.
func valid(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// Path is where the blob named sha is kept.
func (s *Store) Path(sha string) string { return filepath.Join(s.dir, sha[:2], sha) }

// Put keeps b durably and returns its name. A blob kept already is not
// written again.
func (s *Store) Put(b []byte) (string, error) {
	sha := Sum(b)
	path := s.Path(sha)
	if _, err := os.Stat(path); err == nil {
		// Kept already: it is young again, so that the sweep of photos no
		// event names leaves it to the event about to name it.
		now := time.Now()
		os.Chtimes(path, now, now)
		return sha, nil
	}
	dir := filepath.Dir(path)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("keep blob: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("keep blob: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("keep blob %s: %w", sha, err)
	}
	keyID, body := "-", b
	if s.keys != nil {
		keyID, body = s.keys.Current(), s.keys.Seal(sealID(sha), b)
	}
	w := bufio.NewWriter(f)
	w.WriteString(magic + keyID + "\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("keep blob %s: %w", sha, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("keep blob %s: %w", sha, err)
	}
	if err := durable.SyncDir(dir); err != nil {
		return "", fmt.Errorf("keep blob %s: %w", sha, err)
	}
	if err := durable.SyncDir(s.dir); err != nil { // a new fan-out directory
		return "", fmt.Errorf("keep blob %s: %w", sha, err)
	}
	return sha, nil
}

// Get reads a blob and checks that its bytes are the ones its name says.
func (s *Store) Get(sha string) ([]byte, error) {
	body, _, err := s.GetInto(sha, nil)
	return body, err
}

// GetInto is Get reading the file into buf, grown when it is too small,
// so that an uploader of many blobs need not allocate (and clear) each
// one's bytes anew. It returns the blob's bytes and the buffer the file
// was read into, for the caller to pass to GetInto again once it no
// longer uses the bytes (a sealed blob's bytes are a buffer of their own).
func (s *Store) GetInto(sha string, buf []byte) (body, backing []byte, err error) {
	if !valid(sha) {
		return nil, buf, fmt.Errorf("read blob %q: %w", sha, ErrNotFound)
	}
	raw, err := readInto(s.Path(sha), buf)
	if errors.Is(err, os.ErrNotExist) {
		return nil, buf, fmt.Errorf("read blob %s: %w", sha, ErrNotFound)
	}
	if err != nil {
		return nil, buf, fmt.Errorf("read blob %s: %w", sha, err)
	}
	nl := bytes.IndexByte(raw, '\n')
	if nl < 0 || !bytes.HasPrefix(raw, []byte(magic)) {
		return nil, raw, fmt.Errorf("read blob %s: not a blob file", sha)
	}
	keyID, body := string(raw[len(magic):nl]), raw[nl+1:]
	if keyID != "-" {
		if s.keys == nil {
			return nil, raw, fmt.Errorf("read blob %s: sealed with key %q and no storage.encryption_key_file is configured", sha, keyID)
		}
		if body, err = s.keys.Open(keyID, sealID(sha), body); err != nil {
			return nil, raw, fmt.Errorf("read blob %s: %w", sha, err)
		}
	}
	if Sum(body) != sha {
		return nil, raw, fmt.Errorf("read blob %s: its bytes do not have that SHA-256 (damaged)", sha)
	}
	return body, raw, nil
}

// readInto reads the file at path whole into buf, grown when too small.
func readInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := int(fi.Size())
	if cap(buf) < size+1 {
		buf = make([]byte, 0, size+512)
	}
	// One byte more than the size, to see the end: a file written by
	// Put does not change, but a damaged store is no reason to read short.
	n, err := io.ReadFull(f, buf[:size+1])
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return buf[:n], nil
	case err != nil:
		return nil, err
	}
	return nil, fmt.Errorf("the file grew while it was read")
}

// Remove deletes a blob; one already gone is no error.
func (s *Store) Remove(sha string) error {
	if !valid(sha) {
		return nil
	}
	if err := os.Remove(s.Path(sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", sha, err)
	}
	return nil
}

// sealID binds a sealed blob to its name.
func sealID(sha string) string { return "blob/" + sha }

// Each calls fn with the name and modification time of every blob file,
// and of every temporary file a write left behind (name "" then, path
// given), until fn returns false.
func (s *Store) Each(fn func(sha, path string, mod time.Time) bool) error {
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		name := d.Name()
		if !valid(name) {
			name = ""
			if !strings.HasPrefix(d.Name(), ".tmp-") {
				return nil
			}
		}
		if !fn(name, path, info.ModTime()) {
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	return nil
}
