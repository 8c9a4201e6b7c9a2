package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/clock"
)

// Scanner emits a generated barcode every Interval.
type Scanner struct {
	Name     string
	Interval time.Duration
	clock    clock.Clock
	rng      *rand.Rand
}

var _ scanner.Driver = (*Scanner)(nil)

// New returns a simulated scanner; the same seed yields the same codes.
func New(name string, interval time.Duration, seed int64, c clock.Clock) *Scanner {
	if c == nil {
		c = clock.Real{}
	}
	return &Scanner{Name: name, Interval: interval, clock: c, rng: rand.New(rand.NewPCG(uint64(seed), 0x6d61696c))}
}

// Run emits readings until ctx is cancelled.
func (s *Scanner) Run(ctx context.Context, sink scanner.Sink) error {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r := scanner.Reading{Device: s.Name, Barcode: []byte(s.Next()), At: s.clock.Now()}
		if err := sink(ctx, r); err != nil && ctx.Err() != nil {
			return nil
		}
	}
}

// Next returns the next generated tracking number.
func (s *Scanner) Next() string {
	switch s.rng.IntN(7) {
	case 0:
		return UPS(s.rng)
	case 1:
		return FedExExpress(s.rng)
	case 2:
		return USPS(s.rng)
	case 3:
		return DHLExpress(s.rng)
	case 4:
		return "JJD" + digits(s.rng, 18)
	case 5:
		return S10(s.rng, []string{"RB", "CP", "EE", "LX"}[s.rng.IntN(4)], []string{"DE", "GB", "FR", "NL", "CH"}[s.rng.IntN(5)])
	default:
		return "TBA" + digits(s.rng, 12)
	}
}

func digits(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteByte(byte('0' + r.IntN(10)))
	}
	return b.String()
}

// upsValue maps a character to its UPS check-digit value.
func upsValue(c byte) int {
	if c >= '0' && c <= '9' {
		return int(c - '0')
	}
	return (int(c) - 3) % 10
}

// UPSCheck computes the UPS-style mod 10 check digit over s.
func UPSCheck(s string) int {
	sum := 0
	for i := 0; i < len(s); i++ {
		v := upsValue(s[i])
		if i%2 == 1 {
			v *= 2
		}
		sum += v
	}
	return (10 - sum%10) % 10
}

// UPS returns a 1Z tracking number with a valid check digit.
func UPS(r *rand.Rand) string {
	const alnum = "0123456789ABCDEFGHJKLMNPRSTVWXYZ"
	var b strings.Builder
	for i := 0; i < 6; i++ {
		b.WriteByte(alnum[r.IntN(len(alnum))])
	}
	body := b.String() + []string{"01", "02", "03", "12", "13"}[r.IntN(5)] + digits(r, 7)
	return fmt.Sprintf("1Z%s%d", body, UPSCheck(body))
}

// FedExCheck computes the FedEx Express check digit over 11 digits.
func FedExCheck(s string) int {
	w := []int{3, 1, 7}
	sum := 0
	for i := 0; i < len(s); i++ {
		sum += int(s[i]-'0') * w[i%3]
	}
	return sum % 11 % 10
}

// FedExExpress returns a 12-digit FedEx Express number.
func FedExExpress(r *rand.Rand) string {
	body := digits(r, 11)
	return fmt.Sprintf("%s%d", body, FedExCheck(body))
}

// GS1Check computes the GS1 mod 10 check digit over s.
func GS1Check(s string) int {
	sum := 0
	for i := len(s) - 1; i >= 0; i-- {
		v := int(s[i] - '0')
		if (len(s)-1-i)%2 == 0 {
			v *= 3
		}
		sum += v
	}
	return (10 - sum%10) % 10
}

// USPS returns a 22-digit IMpb tracking number (9400...).
func USPS(r *rand.Rand) string {
	body := "9400" + digits(r, 17)
	return fmt.Sprintf("%s%d", body, GS1Check(body))
}

// DHLExpress returns a 10-digit DHL Express waybill (mod 7).
func DHLExpress(r *rand.Rand) string {
	body := digits(r, 9)
	var n int
	fmt.Sscan(body, &n)
	return fmt.Sprintf("%s%d", body, n%7)
}

// S10Check computes the UPU S10 check digit over 8 serial digits.
func S10Check(serial string) int {
	w := []int{8, 6, 4, 2, 3, 5, 9, 7}
	sum := 0
	for i := 0; i < 8; i++ {
		sum += int(serial[i]-'0') * w[i]
	}
	c := 11 - sum%11
	switch c {
	case 10:
		return 0
	case 11:
		return 5
	}
	return c
}

// S10 returns a UPU S10 item id such as RB123456785DE.
func S10(r *rand.Rand, service, country string) string {
	serial := digits(r, 8)
	return fmt.Sprintf("%s%s%d%s", service, serial, S10Check(serial), country)
}
