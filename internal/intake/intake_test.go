package intake

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

func TestCommitAndRefusal(t *testing.T) {
	ctx := context.Background()
	o, err := store.Open(ctx, store.Options{Path: filepath.Join(t.TempDir(), "b.db"), MaxPending: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	h := health.NewTracker(clock.Real{}, nil)
	in := New(o, "mr-1", "hq", nil, nil, h)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, code := range []string{"A", "B"} {
		ev, err := in.Commit(ctx, scanner.Reading{Device: "dock", Barcode: []byte(code), At: at})
		if err != nil || ev.Seq != int64(i+1) || ev.Appliance != "mr-1" || ev.Site != "hq" || !ev.Time.Equal(at) {
			t.Fatalf("commit %s: %+v %v", code, ev, err)
		}
	}
	if _, err := in.Commit(ctx, scanner.Reading{Device: "dock", Barcode: []byte("C"), At: at}); !errors.Is(err, store.ErrFull) {
		t.Fatalf("third scan: %v, want ErrFull", err)
	}
	act := h.Active()
	if len(act) != 1 || act[0].Key != ConditionRefusing || act[0].Severity != health.Critical {
		t.Fatalf("health = %+v", act)
	}
	if c, r := in.Counts(); c != 2 || r != 1 {
		t.Fatalf("counts = %d, %d", c, r)
	}
}
