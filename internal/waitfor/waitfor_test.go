package waitfor

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

type recorder struct{ failed string }

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			time.Sleep(time.Millisecond)
			n.Add(1)
		}
	}()
	r := &recorder{}
	True(r, 5*time.Second, "three", func() bool { return n.Load() == 3 })
	if r.failed != "" {
		t.Fatalf("failed although the condition came true: %s", r.failed)
	}
}

func TestTrueFailsAfterTheTimeout(t *testing.T) {
	r := &recorder{}
	began := time.Now()
	True(r, 30*time.Millisecond, "never", func() bool { return false })
	if r.failed == "" || time.Since(began) < 30*time.Millisecond {
		t.Fatalf("failed = %q after %s; want a failure after the timeout", r.failed, time.Since(began))
	}
}

func TestValueReportsTheLastValue(t *testing.T) {
	r := &recorder{}
	Value(r, 20*time.Millisecond, "seven", func() int { return 6 }, func(v int) bool { return v == 7 })
	if want := "(last: 6)"; len(r.failed) < len(want) || r.failed[len(r.failed)-len(want):] != want {
		t.Fatalf("failure %q does not show the last value", r.failed)
	}
}
