package devcert

import (
	"strings"
	"testing"
	"time"
)

func TestWriteDirKeepsCertificatesOfTheSameApplianceOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteDir(dir, "mr-demo-01", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDir(dir, "mr-demo-01", time.Now()); err != nil {
		t.Fatalf("the same appliance again: %v", err)
	}
	if _, err := WriteDir(dir, "mr-other", time.Now()); err == nil || !strings.Contains(err.Error(), `for "mr-demo-01" exist`) {
		t.Fatalf("another appliance id: %v, want a refusal naming the existing one", err)
	}
}
