package sim

import (
	"context"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/scanner"
)

func TestCheckDigitsAgainstPublishedExamples(t *testing.T) {
	if got := UPSCheck("999AA1012345678"); got != 4 { // 1Z999AA10123456784
		t.Errorf("UPS check = %d, want 4", got)
	}
	if got := S10Check("12345678"); got != 5 { // RB123456785GB
		t.Errorf("S10 check = %d, want 5", got)
	}
	if got := GS1Check("629104150021"); got != 3 { // GTIN-13 6291041500213
		t.Errorf("GS1 check = %d, want 3", got)
	}
	if got := FedExCheck("98765432109"); got != (9*3+8*1+7*7+6*3+5*1+4*7+3*3+2*1+1*7+0*3+9*1)%11%10 {
		t.Errorf("FedEx check = %d", got)
	}
}

func TestGeneratedCodesAreWellFormed(t *testing.T) {
	s := New("demo", time.Millisecond, 1, nil)
	shapes := regexp.MustCompile(`^(1Z[0-9A-Z]{16}|\d{12}|9400\d{18}|\d{10}|JJD\d{18}|[A-Z]{2}\d{9}[A-Z]{2}|TBA\d{12})$`)
	for i := 0; i < 500; i++ {
		if c := s.Next(); !shapes.MatchString(c) {
			t.Fatalf("unexpected code %q", c)
		}
	}
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 100; i++ {
		u := UPS(r)
		if UPSCheck(u[2:17]) != int(u[17]-'0') {
			t.Fatalf("bad UPS check digit in %s", u)
		}
	}
}

func TestRunEmitsAndStops(t *testing.T) {
	s := New("demo", 5*time.Millisecond, 1, nil)
	out := make(chan scanner.Reading)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, scanner.ToChannel(out)) }()
	for i := 0; i < 3; i++ {
		if r := <-out; r.Device != "demo" || len(r.Barcode) == 0 {
			t.Fatalf("reading %+v", r)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
