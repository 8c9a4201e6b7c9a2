package directory

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Match is a person found by a search, with how well the name fits: 1 is
// an exact match of every word.
type Match struct {
	Entry
	Score float64 `json:"score"`
}

// Index searches the active people of a directory.
type Index struct {
	entries []Entry
	words   [][]word           // folded words of each entry's name
	grams   map[string][]int32 // trigram -> entries whose name has it
	counts  sync.Pool          // of *[]uint8, one counter per entry
	badges  map[string]int     // upper-cased badge code -> entry
	byID    map[string]int
}

// NewIndex indexes the active entries.
func NewIndex(entries []Entry) *Index {
	x := &Index{grams: map[string][]int32{}, badges: map[string]int{}, byID: map[string]int{}}
	x.counts.New = func() any { c := make([]uint8, 0); return &c }
	for _, e := range entries {
		if !e.Active {
			continue
		}
		i := len(x.entries)
		x.entries = append(x.entries, e)
		ws := words(e.Name)
		x.words = append(x.words, ws)
		seen := map[string]bool{}
		for _, w := range ws {
			for _, g := range w.trigrams() {
				if !seen[g] {
					seen[g] = true
					x.grams[g] = append(x.grams[g], int32(i))
				}
			}
		}
		for _, b := range e.Badges {
			x.badges[strings.ToUpper(b)] = i
		}
		x.byID[strings.ToUpper(e.ID)] = i
	}
	return x
}

// Len is how many active people the index holds.
func (x *Index) Len() int { return len(x.entries) }

// ByBadge finds the person a badge code belongs to (any letter case).
func (x *Index) ByBadge(code string) (Entry, bool) {
	i, ok := x.badges[strings.ToUpper(strings.TrimSpace(code))]
	if !ok {
		return Entry{}, false
	}
	return x.entries[i], true
}

// ByID finds an active person by id, in any letter case (ids are unique
// without regard to it).
func (x *Index) ByID(id string) (Entry, bool) {
	i, ok := x.byID[strings.ToUpper(strings.TrimSpace(id))]
	if !ok {
		return Entry{}, false
	}
	return x.entries[i], true
}

// candidates is how many entries sharing the most trigrams with the query
// are scored exactly.
const candidates = 200

// MinScore is the lowest score Search returns.
const MinScore = 0.5

// Search finds the people whose names fit the query best, best first, at
// most limit. A badge code finds its owner alone, with score 1.
func (x *Index) Search(query string, limit int) []Match {
	if e, ok := x.ByBadge(query); ok {
		return []Match{{Entry: e, Score: 1}}
	}
	q := words(query)
	if len(q) == 0 || limit <= 0 {
		return nil
	}
	var out []Match
	for _, i := range x.candidates(q) {
		if s := score(q, x.words[i], true); s >= MinScore {
			out = append(out, Match{Entry: x.entries[i], Score: float64(int(s*1000+0.5)) / 1000})
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		return out[a].Score > out[b].Score || out[a].Score == out[b].Score && out[a].Name < out[b].Name
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// candidates returns the entries sharing the most trigrams with the
// query's words, at most candidates of them.
func (x *Index) candidates(q []word) []int32 {
	// Count the trigrams each name shares with the query, in an array
	// (a map is ten times slower at 100,000 people), then take the names
	// with the most, by counting sort.
	countsp := x.counts.Get().(*[]uint8)
	counts := *countsp
	if len(counts) < len(x.entries) {
		counts = make([]uint8, len(x.entries))
	}
	var touched []int32
	top := 0
	for _, w := range q {
		for _, g := range w.trigrams() {
			for _, i := range x.grams[g] {
				if counts[i] == 0 {
					touched = append(touched, i)
				}
				if counts[i] < 255 {
					counts[i]++
					top = max(top, int(counts[i]))
				}
			}
		}
	}
	byCount := make([][]int32, top+1)
	for _, i := range touched {
		byCount[counts[i]] = append(byCount[counts[i]], i)
		counts[i] = 0
	}
	*countsp = counts
	x.counts.Put(countsp)
	var cs []int32
	for n := top; n > 0 && len(cs) < candidates; n-- {
		cs = append(cs, byCount[n]...)
	}
	if len(cs) > candidates {
		cs = cs[:candidates]
	}
	return cs
}

// score is how well the query's words fit a name's words, in any order:
// each query word counts with its best fit, a word typed so far (a
// prefix of a name's word) fully; a name's words the query leaves out
// cost a little.
func score(q, name []word, prefix bool) float64 {
	if len(name) == 0 {
		return 0
	}
	used := make([]bool, len(name))
	total := 0.0
	for _, w := range q {
		best, at := 0.0, -1
		for j, n := range name {
			if used[j] {
				continue
			}
			s := similarity(w, n, prefix)
			if s > best {
				best, at = s, j
			}
		}
		if at >= 0 {
			used[at] = true
		}
		total += best
	}
	s := total / float64(len(q))
	if missing := len(name) - len(q); missing > 0 {
		s -= 0.02 * float64(missing)
	}
	return s
}

// similarity of two folded words: 1 when they are the same word in one of
// their spellings (see word), or (with prefix) when a, of at least two
// letters, is how b starts; else 1 - edit distance / longer length. The
// distance is the smaller of the two spellings', the length always that
// of the spelling without the dots, so that the longer two-letter forms
// do not make a word with an umlaut fit more loosely (Jürg is as far
// from Jürgen as Jurg).
func similarity(a, b word, prefix bool) float64 {
	if a.same(b) {
		return 1
	}
	umlauts := a.base != a.pair || b.base != b.pair
	if prefix && utf8.RuneCountInString(a.base) >= 2 && (strings.HasPrefix(b.pair, a.pair) || umlauts && strings.HasPrefix(b.base, a.base)) {
		return 0.98
	}
	ra, rb := []rune(a.base), []rune(b.base)
	d := distance(ra, rb)
	if umlauts {
		d = min(d, distance([]rune(a.pair), []rune(b.pair)))
	}
	return 1 - float64(d)/float64(max(len(ra), len(rb)))
}

// distance is the Damerau-Levenshtein distance (optimal string
// alignment): insertions, deletions, substitutions and transpositions of
// neighbours.
func distance(a, b []rune) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// folds turn letters into what they are written as without diacritics.
// German umlauts become marks of their own (umlautA, umlautO, umlautU),
// which a word's two spellings resolve (see word).
var folds = strings.NewReplacer(
	"ä", string(umlautA), "ö", string(umlautO), "ü", string(umlautU), "ß", "ss", "ẞ", "ss",
	"à", "a", "á", "a", "â", "a", "ã", "a", "å", "a", "ā", "a", "ą", "a", "æ", "ae",
	"ç", "c", "ć", "c", "č", "c",
	"è", "e", "é", "e", "ê", "e", "ë", "e", "ē", "e", "ę", "e", "ě", "e",
	"ì", "i", "í", "i", "î", "i", "ï", "i", "ı", "i",
	"ł", "l", "ñ", "n", "ń", "n", "ň", "n",
	"ò", "o", "ó", "o", "ô", "o", "õ", "o", "ø", "o", "ō", "o", "œ", "oe",
	"ř", "r", "ś", "s", "š", "s", "ş", "s", "ť", "t", "ţ", "t",
	"ù", "u", "ú", "u", "û", "u", "ū", "u", "ů", "u",
	"ý", "y", "ÿ", "y", "ź", "z", "ż", "z", "ž", "z", "đ", "d", "ð", "d", "þ", "th",
)

// An umlaut stands in a folded word as a rune of Unicode's private use
// area, which no name has and which the folding of other accents keeps.
const (
	umlautA = '\ue000'
	umlautO = '\ue001'
	umlautU = '\ue002'
)

var (
	// pairForms and baseForms spell umlauts out as their two-letter
	// forms (Mueller) and as their base letters (Muller).
	pairForms = strings.NewReplacer(string(umlautA), "ae", string(umlautO), "oe", string(umlautU), "ue")
	baseForms = strings.NewReplacer(string(umlautA), "a", string(umlautO), "o", string(umlautU), "u")
)

// word is a folded word in its two spellings. A word with an umlaut is
// the same word as its two-letter spelling and as its spelling without
// the dots: Müller is Mueller and Muller. Words without one are only
// themselves: Mueller and Muller are one letter apart, and so are
// Michael and Michal, which reading "ae" as "a" in every word would make
// one name.
type word struct {
	pair, base string // equal when the word has no umlaut
}

// same reports whether w and o are one word: the same letters, or one
// with an umlaut and the other one of its spellings.
func (w word) same(o word) bool {
	return w.pair == o.pair || (w.base != w.pair || o.base != o.pair) && w.base == o.base
}

// trigrams of both spellings.
func (w word) trigrams() []string {
	g := trigrams(w.pair)
	if w.base != w.pair {
		for _, b := range trigrams(w.base) {
			if !slices.Contains(g, b) {
				g = append(g, b)
			}
		}
	}
	return g
}

// stripMarks removes what is left of Latin diacritics after folds: the
// letters the table does not name (ğ, ă, ș, ő, …) are decomposed and
// their accents (U+0300–U+036F) dropped. Other scripts' marks (the voicing
// of kana, Hebrew points) are part of their letters and stay. It is safe
// for concurrent use: norm's forms keep no state.
func stripMarks(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return s
	}
	d := strings.Map(func(r rune) rune {
		if r >= 0x300 && r <= 0x36f {
			return -1
		}
		return r
	}, norm.NFD.String(s))
	return norm.NFC.String(d)
}

// words splits a name or query into folded words. Text is composed first
// (NFC), so a name written with combining marks folds as its letters do.
func words(s string) []word {
	// The marks of umlauts are folding's own: in the text they are no
	// letters.
	s = strings.Map(func(r rune) rune {
		if r >= umlautA && r <= umlautU {
			return ' '
		}
		return r
	}, s)
	s = stripMarks(folds.Replace(strings.ToLower(norm.NFC.String(s))))
	fs := strings.FieldsFunc(s, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && (r < umlautA || r > umlautU)
	})
	var out []word
	for _, f := range fs {
		w := word{pair: pairForms.Replace(f), base: baseForms.Replace(f)}
		if !slices.ContainsFunc(out, w.same) {
			out = append(out, w) // a word again, in any spelling, counts once
		}
	}
	return out
}

// trigrams of a folded word, padded at both ends so that short words and
// word starts count.
func trigrams(w string) []string {
	r := []rune("  " + w + " ")
	out := make([]string, 0, len(r)-2)
	for i := 0; i+3 <= len(r); i++ {
		out = append(out, string(r[i:i+3]))
	}
	return out
}

// How a parcel's recipient was found in the directory (recipient_match).
const (
	MatchBadge  = "badge"  // a badge code of the person
	MatchExact  = "exact"  // a name that is the person's, letter case, accents and word order aside
	MatchFuzzy  = "fuzzy"  // a name close to the person's and to nobody else's
	MatchManual = "manual" // a clerk chose the person
	MatchOCR    = "ocr"    // the name read off a photo of the label
	MatchNone   = "none"   // no one, or more than one person fits
)

// Automatic matching is stricter than a search a person reads: a name
// must have at least two words, fit at FuzzyAccept or better with whole
// words (no prefixes), and fit the next best person by FuzzyMargin less.
const (
	FuzzyAccept = 0.85
	FuzzyMargin = 0.1
)

// Resolve finds the one person a code or a name stands for, for matching a
// parcel without a person's help: a badge code, or a name that fits
// exactly one active person with high confidence. It
// returns MatchNone when nobody fits, or more than one person does.
func (x *Index) Resolve(text string) (Entry, string, float64) {
	text = strings.TrimSpace(text)
	if text == "" {
		return Entry{}, MatchNone, 0
	}
	if e, ok := x.ByBadge(text); ok {
		return e, MatchBadge, 1
	}
	q := words(text)
	if len(q) < 2 {
		return Entry{}, MatchNone, 0
	}
	best, second, at := 0.0, 0.0, int32(-1)
	exact := 0
	for _, i := range x.candidates(q) {
		s := score(q, x.words[i], false)
		if s == 1 && len(q) == len(x.words[i]) {
			exact++
		}
		switch {
		case s > best:
			best, second, at = s, best, i
		case s > second:
			second = s
		}
	}
	switch {
	case at < 0 || exact > 1:
		return Entry{}, MatchNone, 0
	case exact == 1 && best == 1 && len(x.words[at]) == len(q):
		return x.entries[at], MatchExact, 1
	case fuzzyWinner(best, second):
		return x.entries[at], MatchFuzzy, float64(int(best*1000+0.5)) / 1000
	}
	return Entry{}, MatchNone, 0
}

// MayCollect reports whether collector may take person's parcels: it is
// the person, or one of the person's delegates.
func MayCollect(person, collector Entry) bool {
	if strings.EqualFold(person.ID, collector.ID) {
		return true
	}
	for _, d := range person.Delegates {
		if strings.EqualFold(d, collector.ID) {
			return true
		}
	}
	return false
}

// fuzzyWinner reports whether a best score is a fuzzy match: good enough,
// and at least FuzzyMargin ahead of the next person's (up to rounding:
// 0.95 - 0.85 is 0.0999… in floating point).
func fuzzyWinner(best, second float64) bool {
	const rounding = 1e-9
	return best >= FuzzyAccept-rounding && best-second >= FuzzyMargin-rounding
}
