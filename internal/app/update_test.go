package app

import (
	"strings"
	"testing"
)

func TestPlainUpdateRefused(t *testing.T) {
	for _, tc := range []struct {
		unit, invocation, want string
	}{
		{"", "", ""},
		{"/usr/lib/systemd/system/mailroomd.service", "", "send the .deb"},
		{"/usr/lib/systemd/system/mailroomd.service", "0f3c", "send the .deb"},
		{"", "0f3c", "systemd service without the package"},
	} {
		err := plainUpdateRefused(tc.unit, tc.invocation)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("unit %q, INVOCATION_ID %q: %v, want %q", tc.unit, tc.invocation, err, tc.want)
		}
	}
}
