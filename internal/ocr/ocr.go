// Package ocr reads the recipient off a photographed shipping label. It
// runs Tesseract's command line (Debian's tesseract-ocr with the English
// and German data), one image at a time, at a low priority and within a
// time limit, so that reading never slows the scans; then it picks the
// lines of the "ship to" block, or failing that the lines that look like a
// name, for the directory to match.
package ocr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/mailroomd/mailroomd/internal/directory"
)

// Reader runs Tesseract.
type Reader struct {
	bin     string
	langs   string
	timeout time.Duration
	one     chan struct{} // one reading at a time
}

// New returns a reader that runs bin (a path, or a name looked up in
// PATH) for at most timeout per image.
func New(bin string, timeout time.Duration) *Reader {
	return &Reader{bin: bin, langs: "deu+eng", timeout: timeout, one: make(chan struct{}, 1)}
}

// Check says whether Tesseract can be run, with the languages it needs.
func (r *Reader) Check() error {
	out, err := exec.Command(r.bin, "--list-langs").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ocr: %s cannot be run: %v (install tesseract-ocr, tesseract-ocr-deu, tesseract-ocr-eng)", r.bin, err)
	}
	for _, l := range strings.Split(r.langs, "+") {
		if !regexp.MustCompile(`(?m)^` + l + `$`).Match(out) {
			return fmt.Errorf("ocr: tesseract lacks the %q data (install tesseract-ocr-%s)", l, l)
		}
	}
	return nil
}

// Text reads the text off an image (PNG or JPEG bytes). It waits for any
// reading under way first.
func (r *Reader) Text(ctx context.Context, img []byte) (string, error) {
	select {
	case r.one <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-r.one }()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	// The image goes in on stdin: a decrypted photo is never written to
	// disk.
	args := []string{"stdin", "stdout", "-l", r.langs, "--psm", "6"}
	name := r.bin
	if nice, err := exec.LookPath("nice"); err == nil { // below the scans
		name, args = nice, append([]string{"-n", "10", r.bin}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1") // one core
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(img), &out, &errOut
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", fmt.Errorf("ocr: no text within %s", r.timeout)
		}
		return "", fmt.Errorf("ocr: tesseract: %v: %s", err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// shipTo finds the words that open a label's recipient block.
var shipTo = regexp.MustCompile(`(?i)^\s*(ship\s*to|deliver\s*to|to|an|empf[äa]nger|zustellen\s+an|recipient|attn|z\.\s*hd\.?)\b\s*:?\s*(.*)$`)

// sender finds the words that open a label's sender block.
var sender = regexp.MustCompile(`(?i)^\s*(from|ship\s*from|sender|absender|von|shipper)\b`)

// Candidates are the lines of an OCR text that may be the recipient's
// name, most likely first: those of the "ship to" block (the rest of its
// line and the two lines after it) when there is one; else every line
// that looks like a name (two to four words of letters) but those of the
// sender's block. Common misreadings of letters as
// digits are undone (0→o, 1→l, 5→s inside words).
func Candidates(text string) []string {
	lines := strings.Split(text, "\n")
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		s = clean(s)
		if s != "" && !seen[strings.ToLower(s)] && nameLike(s) {
			seen[strings.ToLower(s)] = true
			out = append(out, s)
		}
	}
	for i, l := range lines {
		if m := shipTo.FindStringSubmatch(l); m != nil {
			add(m[2])
			for j := i + 1; j < len(lines) && j <= i+2; j++ {
				add(lines[j])
			}
		}
	}
	if len(out) > 0 {
		return out // the ship-to block names the recipient: nothing else
	}
	from := -1 // the sender's block is no recipient's
	for i, l := range lines {
		if sender.MatchString(l) {
			from = i
		}
		if from >= 0 && i <= from+1 { // the sender line and the one after it
			continue
		}
		add(l)
	}
	return out
}

// clean undoes digit-for-letter misreadings inside words and drops what
// is neither letter nor blank.
func clean(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		letters := 0
		for _, r := range f {
			if unicode.IsLetter(r) {
				letters++
			}
		}
		if letters*2 >= len([]rune(f)) { // mostly letters: digits are misread letters
			f = strings.NewReplacer("0", "o", "1", "l", "5", "s", "|", "l").Replace(f)
		}
		fields[i] = strings.TrimFunc(f, func(r rune) bool { return !unicode.IsLetter(r) })
	}
	return strings.Join(strings.Fields(strings.Join(fields, " ")), " ")
}

// nameLike reports whether s could be a person's name: two to four words,
// each of at least two letters, nothing but letters, hyphens and
// apostrophes.
func nameLike(s string) bool {
	ws := strings.Fields(s)
	if len(ws) < 2 || len(ws) > 4 {
		return false
	}
	for _, w := range ws {
		if len([]rune(w)) < 2 {
			return false
		}
		for _, r := range w {
			if !unicode.IsLetter(r) && r != '-' && r != '\'' && r != '.' {
				return false
			}
		}
	}
	return true
}

// Match finds the one person of the directory the candidates name: the
// candidate that Resolve matches exactly or closely, and no other
// candidate matching someone else. The score is 1 for an exact match.
func Match(x *directory.Index, cands []string) (directory.Entry, float64, bool) {
	var best directory.Entry
	score := 0.0
	for _, c := range cands {
		for _, v := range variants(c) {
			e, how, s := x.Resolve(v)
			if how != directory.MatchExact && how != directory.MatchFuzzy {
				continue
			}
			if how == directory.MatchExact {
				s = 1
			}
			switch {
			case best.ID == "":
				best, score = e, s
			case best.ID != e.ID:
				return directory.Entry{}, 0, false // two people named on one label
			case s > score:
				score = s
			}
		}
	}
	return best, score, best.ID != ""
}

// variants of a candidate: as read, and with "rn" read as "m".
func variants(s string) []string {
	if strings.Contains(s, "rn") {
		return []string{s, strings.ReplaceAll(s, "rn", "m")}
	}
	return []string{s}
}
