// Package directory is the recipient directory on the box: the company's
// people, read from a CSV file, and a fuzzy search over their names that
// tolerates typos, missing or extra letters, swapped first and last names,
// letter case and German spellings (Müller = Mueller, Müller = Muller,
// ß = ss; Mueller and Muller, written without the umlaut, are a letter
// apart).
package directory

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Entry is one person.
type Entry struct {
	// ID is stable: events name the person by it.
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email,omitempty"`
	// Location is the person's mail stop, floor or building.
	Location string `json:"location,omitempty"`
	// Badges are the codes of the person's badges; Delegates the ids of
	// the people who may collect for them.
	Badges    []string `json:"badges,omitempty"`
	Delegates []string `json:"delegates,omitempty"`
	// Active is false for someone who has left: not shown, not matched.
	Active bool `json:"active"`
}

// Columns are the CSV header's columns, in this order.
var Columns = []string{"id", "name", "email", "location", "badges", "delegates", "active"}

// Limits of a directory file.
const (
	MaxEntries = 100_000
	// MaxID is the longest id, in characters: the page takes ids of at
	// most this length.
	MaxID = 128
	// MaxLine is the longest line accepted, in bytes.
	MaxLine = 64 << 10
	// maxErrors is how many problems one import reports at most.
	maxErrors = 20
)

// LineError is a problem on one line of a CSV file.
type LineError struct {
	Line int
	Msg  string
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseCSV reads a directory file: UTF-8, comma-separated, RFC 4180
// quoting, the header row id,name,email,location,badges,delegates,active,
// badges and delegates as ;-separated lists, active true or false. Every
// problem is reported with its line (up to 20); nothing is returned unless
// the whole file is good.
func ParseCSV(r io.Reader) ([]Entry, error) {
	lines, err := checkLines(r)
	if err != nil {
		return nil, err
	}
	cr := csv.NewReader(bytes.NewReader(lines))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err == io.EOF || (err == nil && len(header) == 1 && strings.TrimSpace(strings.TrimPrefix(header[0], "\ufeff")) == "") {
		return nil, errors.New("the file is empty: the header row id,name,email,location,badges,delegates,active is required")
	}
	if err != nil {
		return nil, csvError(err)
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff") // a byte order mark
	}
	var errs []error
	more := false
	add := func(e error) bool {
		if len(errs) == maxErrors {
			more = true
			return false
		}
		errs = append(errs, e)
		return len(errs) < maxErrors
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case !slices.Contains(Columns, h):
			add(LineError{1, fmt.Sprintf("unknown column %q (the columns are %s)", h, strings.Join(Columns, ","))})
		case col[h] != 0:
			add(LineError{1, fmt.Sprintf("column %q twice", h)})
		}
		col[h] = i + 1
	}
	for _, c := range Columns {
		if col[c] == 0 {
			add(LineError{1, fmt.Sprintf("column %q missing (the columns are %s)", c, strings.Join(Columns, ","))})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var out []Entry
	ids := map[string]int{}
	badges := map[string]string{}
	// rest reports whether the check stops before the end of the file:
	// a line after the one it stopped at is not checked.
	rest := func() bool {
		for {
			rec, err := cr.Read()
			switch {
			case err == io.EOF:
				return false
			case err == nil && len(rec) == 1 && strings.TrimSpace(rec[0]) == "":
				continue // an empty line
			}
			return true
		}
	}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			if !add(csvError(err)) {
				more = more || rest()
				break
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // an empty line
		}
		if len(rec) != len(header) {
			if !add(LineError{line, fmt.Sprintf("%d fields, the header has %d", len(rec), len(header))}) {
				more = more || rest()
				break
			}
			continue
		}
		get := func(c string) string { return strings.TrimSpace(rec[col[c]-1]) }
		e := Entry{ID: get("id"), Name: get("name"), Email: get("email"), Location: get("location"),
			Badges: list(get("badges")), Delegates: list(get("delegates"))}
		switch strings.ToLower(get("active")) {
		case "true":
			e.Active = true
		case "false":
		default:
			add(LineError{line, fmt.Sprintf("active is %q: true or false", get("active"))})
		}
		idKey := strings.ToUpper(e.ID)
		switch {
		case e.ID == "":
			add(LineError{line, "id is empty"})
		case utf8.RuneCountInString(e.ID) > MaxID:
			add(LineError{line, fmt.Sprintf("id is longer than %d characters", MaxID)})
		case strings.ContainsRune(e.ID, ';'):
			add(LineError{line, fmt.Sprintf("id %q holds a ';', which separates the delegates", e.ID)})
		case ids[idKey] != 0:
			add(LineError{line, fmt.Sprintf("id %q again (first on line %d); ids are compared without letter case", e.ID, ids[idKey])})
		}
		if e.Name == "" {
			add(LineError{line, "name is empty"})
		}
		for i, f := range rec {
			if strings.ContainsFunc(f, func(r rune) bool { return unicode.IsControl(r) || r == '\ufeff' }) {
				add(LineError{line, fmt.Sprintf("%s holds a control character", strings.ToLower(strings.TrimSpace(header[i])))})
				break
			}
		}
		for _, d := range e.Delegates {
			if strings.EqualFold(d, e.ID) {
				add(LineError{line, "a person cannot be their own delegate"})
			}
		}
		for _, b := range e.Badges {
			k := strings.ToUpper(b)
			if other, ok := badges[k]; ok && other != e.ID {
				add(LineError{line, fmt.Sprintf("badge %q also belongs to %q", b, other)})
			}
			badges[k] = e.ID
		}
		e.Badges, e.Delegates = unique(e.Badges), unique(e.Delegates)
		ids[idKey] = line
		out = append(out, e)
		if len(errs) >= maxErrors {
			more = more || rest()
			break
		}
		if len(out) > MaxEntries {
			add(LineError{line, fmt.Sprintf("more than %d people", MaxEntries)})
			break
		}
	}
	for _, e := range out {
		for _, d := range e.Delegates {
			if ids[strings.ToUpper(d)] == 0 {
				add(LineError{ids[strings.ToUpper(e.ID)], fmt.Sprintf("delegate %q is no id in the file", d)})
			}
		}
	}
	if len(errs) == 0 && len(out) == 0 {
		return nil, errors.New("the file has no people: nothing imported (a directory is never emptied by an import)")
	}
	if more {
		errs = append(errs, fmt.Errorf("the check stopped after %d problems: fix these and import again", maxErrors))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// checkLines reads the whole file, refusing bytes that are not UTF-8 and
// lines longer than MaxLine, with their line numbers.
func checkLines(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var all bytes.Buffer
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		long := 0
		for errors.Is(err, bufio.ErrBufferFull) {
			long += len(line)
			if long > MaxLine {
				return nil, LineError{n, fmt.Sprintf("longer than %d bytes", MaxLine)}
			}
			all.Write(line)
			line, err = br.ReadSlice('\n')
		}
		if long+len(line) > MaxLine {
			return nil, LineError{n, fmt.Sprintf("longer than %d bytes", MaxLine)}
		}
		all.Write(line)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read directory file: %w", err)
		}
		if all.Len() > MaxEntries*2*1024 {
			return nil, LineError{n, fmt.Sprintf("the file is larger than %d bytes", MaxEntries*2*1024)}
		}
	}
	b := all.Bytes()
	if !utf8.Valid(b) {
		line := 1 + bytes.Count(b[:firstInvalid(b)], []byte{'\n'})
		return nil, LineError{line, "not UTF-8: save the file as UTF-8"}
	}
	return b, nil
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return LineError{pe.StartLine, pe.Err.Error()}
	}
	return err
}

// unique drops repeats (letter case aside), keeping the first.
func unique(l []string) []string {
	var out []string
	for _, v := range l {
		if !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, v) }) {
			out = append(out, v)
		}
	}
	return out
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(s, ";") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
