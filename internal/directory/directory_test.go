package directory

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const header = "id,name,email,location,badges,delegates,active\n"

func TestParseCSV(t *testing.T) {
	in := "\ufeff" + header +
		`E1,Jürgen Müller,jm@example.com,"Bldg 2, Floor 3",EMP-0001;EMP-1001,E2,true` + "\n" +
		"E2,\"O'Neill, Siobhán\",,MS-4.12,,,false\n" +
		"\n" +
		"E3,Ayşe Yılmaz,,,emp-0003;;EMP-0003;,,TRUE\n"
	got, err := ParseCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Location != "Bldg 2, Floor 3" || len(got[0].Badges) != 2 || got[0].Delegates[0] != "E2" ||
		!got[0].Active || got[1].Active || got[1].Name != "O'Neill, Siobhán" || !got[2].Active ||
		len(got[2].Badges) != 1 || got[2].Badges[0] != "emp-0003" {
		t.Fatalf("entries %+v", got)
	}
}

func TestParseCSVRefusesWithLineNumbers(t *testing.T) {
	long := strings.Repeat("x", 10<<20)
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"empty", "", []string{"the file is empty"}},
		{"missing column", "id,name,email,location,badges,active\nE1,A,,,,true\n", []string{`line 1: column "delegates" missing`}},
		{"unknown column", header[:len(header)-1] + ",phone\n", []string{`line 1: unknown column "phone"`}},
		{"bad UTF-8", header + "E1,Ok,,,,,true\nE2,M\xfcller,,,,,true\n", []string{"line 3: not UTF-8"}},
		{"duplicate id", header + "E1,A,,,,,true\nE2,B,,,,,true\nE1,C,,,,,true\n", []string{`line 4: id "E1" again (first on line 2)`}},
		{"10 MB line", header + "E1," + long + ",,,,,true\n", []string{"line 2: longer than 65536 bytes"}},
		{"bad active and empty name", header + "E1,,,,,,yes\n", []string{`line 2: active is "yes"`, "line 2: name is empty"}},
		{"shared badge", header + "E1,A,,,B-1,,true\nE2,B,,,b-1,,true\n", []string{`line 3: badge "b-1" also belongs to "E1"`}},
		{"unknown delegate", header + "E1,A,,,,E9,true\n", []string{`line 2: delegate "E9" is no id in the file`}},
		{"fields", header + "E1,A,true\n", []string{"line 2: 3 fields, the header has 7"}},
		{"quote", header + "E1,\"A,,,,,true\n", []string{"line 2"}},
		{"only a header", header, []string{"the file has no people"}},
		{"only a byte order mark", "\ufeff", []string{"the file is empty"}},
		{"ids differ in case only", header + "E1,A,,,,,true\ne1,B,,,,,true\n", []string{`line 3: id "e1" again (first on line 2)`}},
		{"own delegate", header + "E1,A,,,,e1,true\n", []string{"line 2: a person cannot be their own delegate"}},
		{"control character", header + "E1,A\x00B,,,,,true\n", []string{"line 2: name holds a control character"}},
		{"C1 control character", header + "E1,A,,MS\u0085,,,true\n", []string{"line 2: location holds a control character"}},
		{"id too long", header + strings.Repeat("X", 129) + ",A,,,,,true\n", []string{"line 2: id is longer than 128 characters"}},
		{"id with a semicolon", header + "E;1,A,,,,,true\n", []string{`line 2: id "E;1" holds a ';'`}},
		{"more than 20", header + strings.Repeat("E1,,,,,,x\n", 30), []string{"the check stopped after 20 problems"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCSV(strings.NewReader(tc.in))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The people the search test looks for, among 100,000 others.
var targets = []Entry{
	{ID: "T1", Name: "Jürgen Müller"},
	{ID: "T2", Name: "Łukasz Wójcik"},
	{ID: "T3", Name: "José García"},
	{ID: "T4", Name: "Ayşe Yılmaz"},
	{ID: "T5", Name: "Siobhán O'Neill"},
	{ID: "T6", Name: "Dagmar Straßburger"},
	{ID: "T7", Name: "Nguyễn Thị Lan"},
	{ID: "T8", Name: "Björn Åkesson"},
	// Directories written without umlauts, found by names with them.
	{ID: "T9", Name: "Guenther Schroeder"},
	{ID: "T10", Name: "Baerbel Kuehn"},
	{ID: "T11", Name: "Gunter Hofler"},
}

var misspellings = []struct{ query, id string }{
	{"Jürgen Müller", "T1"}, {"jurgen muller", "T1"}, {"Juergen Mueller", "T1"}, {"Mueller Juergen", "T1"},
	{"Jrgen Müler", "T1"}, {"muller jurgen", "T1"}, {"Mülelr", "T1"},
	{"Lukasz Wojcik", "T2"}, {"wojcik lukas", "T2"}, {"Lucasz Wojcick", "T2"},
	{"Jose Garcia", "T3"}, {"Garcai Jose", "T3"}, {"garcia", "T3"},
	{"ayse yilmaz", "T4"}, {"Yilmas Ayse", "T4"},
	{"Siobhan ONeill", "T5"}, {"oneill siobhan", "T5"},
	{"Dagmar Strassburger", "T6"}, {"Strasburger", "T6"},
	{"nguyen thi lan", "T7"}, {"Bjorn Akesson", "T8"}, {"Björn Akeson", "T8"}, {"bjoern aakesson", "T8"},
	{"Günther Schröder", "T9"}, {"Schröder", "T9"}, {"Günter Schröder", "T9"}, {"Bärbel Kühn", "T10"}, {"Kühn Bärbel", "T10"}, {"Günter Höfler", "T11"}, {"Hoefler Guenter", "T11"},
}

// people makes n people with names from several languages: first names
// from lists, last names made of syllables so that no one else has a
// target's name.
func people(n int) []Entry {
	rng := rand.New(rand.NewPCG(1, 2))
	first := []string{"Anna", "Thomas", "Fatma", "Mehmet", "Olga", "Piotr", "Marie", "Lars", "Giulia", "Carlos", "Ingrid", "Yuki",
		"Amir", "Chloé", "Sören", "Zoë", "Ángel", "Ewa", "Liam", "Aiko", "Hans", "Grete", "Pål", "Dorota"}
	syl := []string{"ka", "ber", "son", "ler", "man", "dot", "vic", "ski", "ro", "lin", "ga", "tz", "mi", "ne", "ho", "fer", "ta", "ri"}
	out := make([]Entry, 0, n)
	for i := range n {
		last := ""
		for range 2 + rng.IntN(2) {
			last += syl[rng.IntN(len(syl))]
		}
		out = append(out, Entry{ID: fmt.Sprint("P", i), Name: first[rng.IntN(len(first))] + " " + strings.ToUpper(last[:1]) + last[1:],
			Badges: []string{fmt.Sprintf("EMP-%06d", i)}, Active: true})
	}
	return out
}

func TestSearchFindsTheIntendedPersonInTheTop3(t *testing.T) {
	es := people(100_000)
	for _, e := range targets {
		e.Active = true
		es = append(es, e)
	}
	es = append(es, Entry{ID: "GONE", Name: "Jürgen Müller-Alt", Active: false})
	x := NewIndex(es)
	for _, m := range misspellings {
		got := x.Search(m.query, 3)
		ids := make([]string, len(got))
		for i, g := range got {
			ids[i] = g.ID
		}
		found := false
		for _, id := range ids {
			found = found || id == m.id
		}
		if !found {
			t.Errorf("%q: top 3 are %v %v, want %s", m.query, ids, got, m.id)
		}
		for _, id := range ids {
			if id == "GONE" {
				t.Errorf("%q found someone who left", m.query)
			}
		}
	}
	if e, ok := x.ByBadge("emp-000042"); !ok || e.ID != "P42" {
		t.Fatalf("badge lookup: %+v %v", e, ok)
	}
	if got := x.Search("EMP-000042", 3); len(got) != 1 || got[0].ID != "P42" || got[0].Score != 1 {
		t.Fatalf("a badge code searched: %+v", got)
	}
	if got := x.Search("zzzzqqqq", 3); len(got) != 0 {
		t.Fatalf("nonsense found %+v", got)
	}
}

// Resolve matches without a person's help: only when exactly one person
// fits with high confidence; a near miss, a tie or a single word is no
// match.
func TestResolveMatchesOnlyWhenOnePersonFits(t *testing.T) {
	es := people(100_000)
	for _, e := range targets {
		e.Active = true
		es = append(es, e)
	}
	es = append(es, Entry{ID: "W1", Name: "Anna Weiß", Active: true}, Entry{ID: "W2", Name: "Anna Weis", Active: true},
		Entry{ID: "B1", Name: "Bea Beispiel", Badges: []string{"EMP-B1"}, Active: true},
		Entry{ID: "TWIN1", Name: "Karl Zwilling", Active: true}, Entry{ID: "TWIN2", Name: "Karl Zwilling", Active: true})
	x := NewIndex(es)
	for _, tc := range []struct {
		text, id, how string
	}{
		{"emp-b1", "B1", MatchBadge},
		{"Jürgen Müller", "T1", MatchExact},
		{"MUELLER, JUERGEN", "T1", MatchExact},
		{"Juergen Mueler", "T1", MatchFuzzy},
		{"Lukasz Wojcik", "T2", MatchExact},
		{"Dagmar Strasburger", "T6", MatchFuzzy},
		{"Anna Weiss", "W1", MatchExact}, // ß = ss: Weiß, not Weis
		{"Anna Weihs", "", MatchNone},    // as close to Weiß as to Weis
		{"Karl Zwilling", "", MatchNone}, // two people of that name
		{"Müller", "", MatchNone},        // one word is not enough
		{"Jü Mü", "", MatchNone},         // prefixes are not names
		{"Hans Unbekannt", "", MatchNone},
		{"", "", MatchNone},
	} {
		e, how, score := x.Resolve(tc.text)
		if e.ID != tc.id || how != tc.how {
			t.Errorf("%q: %s %s (%v), want %s %s", tc.text, e.ID, how, score, tc.id, tc.how)
		}
		if how == MatchFuzzy && (score < FuzzyAccept || score >= 1) {
			t.Errorf("%q: fuzzy score %v", tc.text, score)
		}
	}
}

func TestFoldingMakesGermanSpellingsOneWord(t *testing.T) {
	for _, names := range [][]string{{"Müller", "Mueller", "Muller", "MÜLLER", "Mu\u0308ller"}, {"Straße", "Strasse"}, {"Gößmann", "Goessmann", "Gossmann"},
		// Accents the table does not name are dropped too, and a name
		// written with combining marks (NFD) folds as its letters do.
		{"Erdoğan Yılmaz", "Erdogan Yilmaz"}, {"Dănuț Popescu", "Danut Popescu"}, {"Győző Kovács", "Gyozo Kovacs"},
		{"José", "Jose", "Jose\u0301"}} {
		for _, n := range names[1:] {
			for _, pair := range [][2]string{{names[0], n}, {n, names[0]}} {
				if s := score(words(pair[0]), words(pair[1]), false); s != 1 {
					t.Errorf("%s against %s: score %v, want 1 (one name)", pair[0], pair[1], s)
				}
			}
		}
	}
}

// Only a word with an umlaut is the same as both its spellings without
// one. Words written without umlauts are only themselves: "ae" is not
// read as "a" (Michael is not Michal, Rafael not Rafał), and Mueller and
// Muller are one letter apart.
func TestFoldingKeepsLettersWithoutUmlauts(t *testing.T) {
	for _, pair := range [][2]string{{"Michael", "Michal"}, {"Rafael", "Rafał"}, {"Joel", "Jol"}, {"Mueller", "Muller"}, {"Samuel", "Samul"}} {
		if s := score(words(pair[0]), words(pair[1]), false); s >= 1 {
			t.Errorf("%s against %s: score %v, want below 1", pair[0], pair[1], s)
		}
	}
	// A word with an umlaut is as far from another as without the dots:
	// its two-letter spelling is longer, but no looser.
	for _, pair := range [][2]string{{"Jürg", "Jürgen"}, {"Müler", "Müller"}, {"Jürg Müller", "Jürgen Müller"}} {
		if a, b := score(words(pair[0]), words(pair[1]), false), score(words(baseForms.Replace(folds.Replace(strings.ToLower(pair[0])))), words(baseForms.Replace(folds.Replace(strings.ToLower(pair[1])))), false); a != b {
			t.Errorf("%s against %s: score %v, without the dots %v", pair[0], pair[1], a, b)
		}
	}
	// The runes that stand for umlauts inside are no letters in a name.
	if s := score(words("M\ue002ller"), words("Müller"), false); s >= 1 {
		t.Errorf("a private-use character was read as an umlaut: score %v", s)
	}
	x := NewIndex([]Entry{{ID: "M1", Name: "Michael Novak", Active: true}, {ID: "M2", Name: "Michal Novak", Active: true},
		{ID: "R1", Name: "Rafał Nowak", Active: true}, {ID: "J1", Name: "Jurgen Muller", Active: true}})
	for _, tc := range []struct {
		text, id, how string
	}{
		// Both are in the directory: each name is its own person.
		{"Michael Novak", "M1", MatchExact},
		{"Michal Novak", "M2", MatchExact},
		{"Michał Novák", "M2", MatchExact},
		// Only Rafał: Rafael is a near name, not his.
		{"Rafael Nowak", "R1", MatchFuzzy},
		// A word again, in its other spelling, counts once.
		{"Rafał Nowak Nowak", "R1", MatchExact},
		{"Jurgen Müller Mueller", "J1", MatchExact},
		// Two letters short is too far, with the dots or without.
		{"Jürg Müller", "", MatchNone},
		{"Jurg Muller", "", MatchNone},
	} {
		e, how, score := x.Resolve(tc.text)
		if e.ID != tc.id || how != tc.how {
			t.Errorf("%q: %s %s (%v), want %s %s", tc.text, e.ID, how, score, tc.id, tc.how)
		}
	}
}

func csvOf(es []Entry) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, e := range es {
		fmt.Fprintf(&b, "%s,%s,,,%s,,true\n", e.ID, e.Name, strings.Join(e.Badges, ";"))
	}
	return b.Bytes()
}

// BenchmarkDirectory imports 100,000 people from CSV (parse and index)
// and searches them with misspelt names.
func BenchmarkDirectory(b *testing.B) {
	file := csvOf(append(people(100_000-len(targets)), targets...))
	for range b.N {
		t0 := time.Now()
		es, err := ParseCSV(bytes.NewReader(file))
		if err != nil {
			b.Fatal(err)
		}
		x := NewIndex(es)
		b.ReportMetric(time.Since(t0).Seconds(), "import-s")
		var lat []time.Duration
		for range 50 {
			for _, m := range misspellings {
				t1 := time.Now()
				x.Search(m.query, 10)
				lat = append(lat, time.Since(t1))
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "search-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "search-p99-ms")
		// Resolve runs on the scan path, for every parcel with a name.
		lat = lat[:0]
		for range 50 {
			for _, m := range misspellings {
				t1 := time.Now()
				x.Resolve(m.query)
				lat = append(lat, time.Since(t1))
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "resolve-p99-ms")
	}
}

func FuzzParseCSV(f *testing.F) {
	f.Add([]byte(header + "E1,Jürgen Müller,,\"a,b\",EMP-1;EMP-2,,true\n"))
	f.Add([]byte(header + "E1,\"x\"\"y\",,,,,false\r\n"))
	f.Add([]byte("id,name\n1,2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseCSV(bytes.NewReader(b))
		if err != nil {
			return
		}
		ids := map[string]bool{}
		for _, e := range es {
			if e.ID == "" || e.Name == "" || ids[e.ID] {
				t.Fatalf("accepted %+v", e)
			}
			ids[e.ID] = true
		}
		NewIndex(es).Search("a", 3)
	})
}

// A margin of exactly FuzzyMargin to the next person is enough, although
// 0.95 - 0.85 is a little less than 0.1 in floating point.
func TestFuzzyMarginBoundary(t *testing.T) {
	for _, tc := range []struct {
		best, second float64
		want         bool
	}{{0.95, 0.85, true}, {0.95, 0.86, false}, {0.9, 0.8, true}, {1, 0.9, true}, {0.85, 0.75, true}, {0.84, 0.5, false}} {
		if got := fuzzyWinner(tc.best, tc.second); got != tc.want {
			t.Errorf("best %v, next %v: %v, want %v", tc.best, tc.second, got, tc.want)
		}
	}
}

// The import lists at most 20 problems, and says it stopped exactly when
// something after them was left unchecked.
func TestParseCSVSaysWhenItStopped(t *testing.T) {
	lines := func(n int, line string) string {
		var b strings.Builder
		b.WriteString(header)
		for i := range n {
			fmt.Fprintf(&b, line, i)
		}
		return b.String()
	}
	for _, tc := range []struct {
		name    string
		csv     string
		stopped bool
	}{
		{"20 bad values, the last line among them", lines(20, "E%d,Name,,,,,maybe\n"), false},
		{"21 bad values", lines(21, "E%d,Name,,,,,maybe\n"), true},
		{"20 lines of the wrong width, then empty lines", lines(20, "E%d,Name\n") + "\n\n", false},
		{"25 lines of the wrong width", lines(25, "E%d,Name\n"), true},
	} {
		_, err := ParseCSV(strings.NewReader(tc.csv))
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		if n := strings.Count(err.Error(), "line "); n != 20 {
			t.Errorf("%s: %d problems listed, want 20:\n%v", tc.name, n, err)
		}
		if got := strings.Contains(err.Error(), "stopped after 20 problems"); got != tc.stopped {
			t.Errorf("%s: says it stopped: %v, want %v:\n%v", tc.name, got, tc.stopped, err)
		}
	}
}

// Only Latin accents are dropped: the marks of other scripts are part of
// their letters (ゴ is not コ).
func TestFoldingKeepsOtherScriptsMarks(t *testing.T) {
	if s := score(words("ゴトウ ケンジ"), words("コトウ ケンシ"), false); s >= 1 {
		t.Fatalf("ゴトウ ケンジ and コトウ ケンシ are one name: score %v", s)
	}
}

// Names are folded from many goroutines at once (the page, the stations,
// the label reader): folding keeps no shared state.
func TestFoldingIsSafeForConcurrentUse(t *testing.T) {
	names := []string{"Erdoğan Yılmaz", "Jürgen Müller", "Dănuț Popescu", "José García", "ゴトウ ケンジ", "Plain Name"}
	want := make([]string, len(names))
	for i, n := range names {
		want[i] = fmt.Sprint(words(n))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := (g + i) % len(names)
				if got := fmt.Sprint(words(names[k])); got != want[k] {
					t.Errorf("%s folded to %q, want %q", names[k], got, want[k])
					return
				}
			}
		}()
	}
	wg.Wait()
}
