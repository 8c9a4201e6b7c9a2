// Package release signs and verifies release artifacts: a SHA256SUMS file
// listing every artifact, and SHA256SUMS.sig, the base64 Ed25519 signature
// of that file's exact bytes made with the release key. The public key
// ships in the package (/usr/share/mailroomd/release.pub); self-update
// accepts nothing that it does not verify.
package release

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Names of the checksum file and its signature.
const (
	SumsFile = "SHA256SUMS"
	SigFile  = "SHA256SUMS.sig"
)

// FileSum returns the SHA-256 of a file, hex.
func FileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Sign writes SHA256SUMS (in sha256sum's format) for files into dir, and
// its signature.
func Sign(key ed25519.PrivateKey, dir string, files []string) error {
	sort.Strings(files)
	var b bytes.Buffer
	for _, f := range files {
		sum, err := FileSum(f)
		if err != nil {
			return fmt.Errorf("sign release: %w", err)
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, filepath.Base(f))
	}
	if err := os.WriteFile(filepath.Join(dir, SumsFile), b.Bytes(), 0o644); err != nil {
		return err
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, b.Bytes())) + "\n"
	return os.WriteFile(filepath.Join(dir, SigFile), []byte(sig), 0o644)
}

// ErrBadSignature means the checksum file was not signed by the release key.
var ErrBadSignature = errors.New("release checksums are not signed by the release key")

// Verify checks the signature of the checksum file in dir and returns the
// sums it lists, by file name.
func Verify(pub ed25519.PublicKey, dir string) (map[string]string, error) {
	sums, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		return nil, fmt.Errorf("verify release: %w", err)
	}
	sigText, err := os.ReadFile(filepath.Join(dir, SigFile))
	if err != nil {
		return nil, fmt.Errorf("verify release: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigText)))
	if err != nil || !ed25519.Verify(pub, sums, sig) {
		return nil, ErrBadSignature
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			return nil, fmt.Errorf("verify release: malformed line %q", sc.Text())
		}
		out[name] = sum
	}
	return out, nil
}

// VerifyFile checks one artifact against the signed sums in its directory.
func VerifyFile(pub ed25519.PublicKey, path string) error {
	sums, err := Verify(pub, filepath.Dir(path))
	if err != nil {
		return err
	}
	want, ok := sums[filepath.Base(path)]
	if !ok {
		return fmt.Errorf("verify release: %s is not listed in %s", filepath.Base(path), SumsFile)
	}
	got, err := FileSum(path)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("verify release: %s does not match its signed checksum", filepath.Base(path))
	}
	return nil
}
