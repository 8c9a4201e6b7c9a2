package web

import (
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestUnknownUserCostsAsMuchAsAWrongPassword: the decoy an unknown name is
// checked against has the configured users' algorithm and cost, and the
// times of the two failures overlap.
func TestUnknownUserCostsAsMuchAsAWrongPassword(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("right"), 11)
	if err != nil {
		t.Fatal(err)
	}
	low, _ := bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost)
	users := []User{{Name: "clara", PasswordHash: string(low)}, {Name: "adam", PasswordHash: string(h)}}
	d := newDecoy(users)
	if c, err := bcrypt.Cost(d.get()); err != nil || c != 11 {
		t.Fatalf("decoy cost %d (%v), want 11, the highest configured", c, err)
	}
	adam := &users[1]
	const n = 7
	var wrong, unknown []time.Duration
	for range n {
		began := time.Now()
		if d.check(adam, "wrong") {
			t.Fatal("a wrong password matched")
		}
		wrong = append(wrong, time.Since(began))
		began = time.Now()
		if d.check(nil, "wrong") {
			t.Fatal("an unknown user matched")
		}
		unknown = append(unknown, time.Since(began))
	}
	slices.Sort(wrong)
	slices.Sort(unknown)
	// The middle halves overlap: neither failure is told from the other by
	// its time.
	if wrong[n/4] > unknown[3*n/4] || unknown[n/4] > wrong[3*n/4] {
		t.Fatalf("timings do not overlap: wrong password %v, unknown user %v", wrong, unknown)
	}
	if !d.check(adam, "right") {
		t.Fatal("the right password did not match")
	}
}
