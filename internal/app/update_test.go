package app

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestPlainUpdateRefused(t *testing.T) {
	for _, tc := range []struct {
		unit    string
		service bool
		want    string
	}{
		{"", false, ""},
		{"/usr/lib/systemd/system/mailroomd.service", false, "send the .deb"},
		{"/usr/lib/systemd/system/mailroomd.service", true, "send the .deb"},
		{"", true, "systemd service without the package"},
	} {
		err := plainUpdateRefused(tc.unit, tc.service)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("unit %q, service %v: %v, want %q", tc.unit, tc.service, err, tc.want)
		}
	}
}

// Only the main process of a service counts as one: a process that
// inherited systemd's variables (a supervisor's child, a shell) does not.
func TestSystemdService(t *testing.T) {
	for _, tc := range []struct {
		execPID, invocation string
		want                bool
	}{
		{"", "", false},
		{strconv.Itoa(os.Getpid()), "0f3c", true},
		{strconv.Itoa(os.Getpid() + 1), "0f3c", false},
		{"", "0f3c", os.Getppid() == 1},
	} {
		t.Setenv("SYSTEMD_EXEC_PID", tc.execPID)
		t.Setenv("INVOCATION_ID", tc.invocation)
		if got := systemdService(); got != tc.want {
			t.Errorf("SYSTEMD_EXEC_PID %q, INVOCATION_ID %q: %v, want %v", tc.execPID, tc.invocation, got, tc.want)
		}
	}
}
