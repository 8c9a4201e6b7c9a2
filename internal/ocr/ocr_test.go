package ocr

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/ocr/ocrtest"
)

// The test directory: names from several languages, some alike.
var staff = []directory.Entry{
	{ID: "E01", Name: "Jürgen Müller"}, {ID: "E02", Name: "Anna Weiß"}, {ID: "E03", Name: "Konstantin Papadopoulos"},
	{ID: "E04", Name: "Siobhán O'Neill"}, {ID: "E05", Name: "Łukasz Wójcik"}, {ID: "E06", Name: "Ayşe Yılmaz"},
	{ID: "E07", Name: "Dagmar Straßburger"}, {ID: "E08", Name: "José García"}, {ID: "E09", Name: "Björn Åkesson"},
	{ID: "E10", Name: "Friederike Hoffmann"}, {ID: "E11", Name: "Maximilian Schröder"}, {ID: "E12", Name: "Elena Rossi"},
	{ID: "E13", Name: "Thomas Becker"}, {ID: "E14", Name: "Sabine Wagner"}, {ID: "E15", Name: "Marco Bianchi"},
	{ID: "E16", Name: "Karin Zimmermann"}, {ID: "E17", Name: "Peter Schmidt"}, {ID: "E18", Name: "Petra Schmitt"},
	{ID: "E19", Name: "Hannelore Vogel"}, {ID: "E20", Name: "Matthias Krüger"},
}

func label(t *testing.T, f ocrtest.Font, lines []string, deg float64, noise int, seed uint64) []byte {
	t.Helper()
	b, err := ocrtest.Label(f, lines, deg, noise, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// OCR on labels rendered in several fonts, rotated a few degrees, with
// noise: the right person for at least 90 % of them, and nobody wrongly.
func TestRecipientReadOffGeneratedLabels(t *testing.T) {
	bin, err := exec.LookPath("tesseract")
	if err != nil {
		t.Fatal("tesseract is not installed (make deps installs tesseract-ocr, tesseract-ocr-deu, tesseract-ocr-eng)")
	}
	r := New(bin, 30*time.Second)
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	for i := range staff {
		staff[i].Active = true
	}
	x := directory.NewIndex(staff)
	fonts := ocrtest.Fonts
	right, wrong, total := 0, 0, 0
	for i, p := range staff {
		f := fonts[i%len(fonts)]
		deg := []float64{-3, -1.5, 0, 2, 3.5}[i%5]
		header := []string{"UPS GROUND", "SHIP TO:", "An:", "DELIVER TO"}[i%4]
		lines := []string{"FROM: ACME Versand GmbH, Lagerstr. 7", "12345 Musterstadt", "", header, p.Name,
			"Example Corp, Mail Stop 2.14", "Hauptstrasse 5", "10115 Berlin", "TRACKING 1Z999AA10123456784"}
		img := label(t, f, lines, deg, 3000, uint64(i))
		t0 := time.Now()
		text, err := r.Text(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		e, score, ok := Match(x, Candidates(text))
		total++
		switch {
		case ok && e.ID == p.ID:
			right++
		case ok:
			wrong++
			t.Errorf("%s (%s, %.1f°): read as %s (%v)\n%s", p.Name, f.Name, deg, e.Name, score, text)
		default:
			t.Logf("%s (%s, %.1f°): nobody found in %.0f ms\n%s", p.Name, f.Name, deg, float64(time.Since(t0).Milliseconds()), text)
		}
	}
	// Labels for people the directory does not have: nobody is assigned.
	for i, name := range []string{"Gustav Unbekannt", "Olga Nirgendwo"} {
		img := label(t, ocrtest.Fonts[0], []string{"SHIP TO:", name, "Hauptstrasse 5", "10115 Berlin"}, 1.5, 3000, uint64(100+i))
		text, err := r.Text(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		if e, score, ok := Match(x, Candidates(text)); ok {
			t.Errorf("%s, who is not in the directory, read as %s (%v)", name, e.Name, score)
		}
	}
	if right*10 < total*9 {
		t.Errorf("the right person for %d of %d labels; at least 90 %% are needed", right, total)
	}
	t.Logf("right %d, wrong %d, none %d of %d", right, wrong, total-right-wrong, total)
}

func TestCandidates(t *testing.T) {
	// The sender (in the directory too, for internal mail) is no candidate.
	if got := Candidates("FROM: Anna Weiss\nExample Corp\nSHIP TO:\nJurgen Muller\n10115 Berlin\n"); len(got) != 1 || got[0] != "Jurgen Muller" {
		t.Fatalf("with a ship-to block: %q", got)
	}
	if got := Candidates("Absender: Anna Weiss\nLager 3\nJurgen Muller\n10115 Berlin\n"); len(got) != 1 || got[0] != "Jurgen Muller" {
		t.Fatalf("without one: %q", got)
	}

	text := "UPS GROUND\nSHIP TO: Jürgen Mü1ler\nExample Corp\n10115 Berlin\nTRACKING 1Z999\n"
	got := Candidates(text)
	if len(got) == 0 || got[0] != "Jürgen Müller" {
		t.Fatalf("candidates %q", got)
	}
	for _, c := range got {
		if c == "10115 Berlin" || c == "TRACKING 1Z999" {
			t.Fatalf("%q is no name", c)
		}
	}
}

// BenchmarkReadLabel reads rendered labels: the time per label, and the
// CPU Tesseract takes as a share of one core while it reads.
func BenchmarkReadLabel(b *testing.B) {
	bin, err := exec.LookPath("tesseract")
	if err != nil {
		b.Fatal("tesseract is not installed")
	}
	r := New(bin, time.Minute)
	var imgs [][]byte
	for i, f := range ocrtest.Fonts {
		img, err := ocrtest.Label(f, []string{"UPS GROUND", "SHIP TO:", staff[i].Name, "Example Corp", "10115 Berlin"}, 2, 3000, uint64(i))
		if err != nil {
			b.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &before)
	start := time.Now()
	n := 0
	for range b.N {
		for _, img := range imgs {
			if _, err := r.Text(context.Background(), img); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(wall.Milliseconds())/float64(n), "ms/label")
	b.ReportMetric(cpu.Seconds()/wall.Seconds()*100, "cpu-%-of-one-core")
}
