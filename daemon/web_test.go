package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func TestMetricsAndHealthEndpoints(t *testing.T) {
	s := newSetup(t, "mr-metrics-01")
	hash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	port := mqtttest.FreePort(t)
	devices := fmt.Sprintf(`  - {name: sim, kind: scanner, driver: sim, interval: 20ms}
web:
  listen: 127.0.0.1:%d
  users: [{name: clara, role: clerk, password_hash: "%s"}]`, port, hash)
	p := startDaemon(t, s.config(t, s.broker.URL(), devices))
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "seq=20 ", 10*time.Second)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("readyz: %d %q", code, body)
	}
	sentRE := regexp.MustCompile(`(?m)^mailroomd_events_sent_total (\d+)`)
	metrics := waitfor.Value(t, 10*time.Second, "events_sent_total at 20", func() string { _, m := get("/metrics"); return m },
		func(m string) bool {
			got := sentRE.FindStringSubmatch(m)
			n := 0
			if got != nil {
				n, _ = strconv.Atoi(got[1])
			}
			return n >= 20
		})
	for _, want := range []string{
		"mailroomd_events_ingested_total ", "mailroomd_events_refused_total 0", "mailroomd_events_pending ",
		"mailroomd_oldest_pending_age_seconds ", "mailroomd_publish_latency_seconds_bucket{le=\"0.01\"}",
		`mailroomd_device_up{device="sim",kind="scanner"} 1`, "mailroomd_uplink_connected 1",
		"mailroomd_uplink_reconnects_total 0", "mailroomd_login_failures_total 0",
		`mailroomd_buffer_commit_seconds_bucket{le="0.002"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Every scan was a commit: the histogram counted them.
	if m := regexp.MustCompile(`(?m)^mailroomd_buffer_commit_seconds_count (\d+)`).FindStringSubmatch(metrics); m == nil {
		t.Error("metrics lack the buffer commit histogram's count")
	} else if n, _ := strconv.Atoi(m[1]); n < 20 {
		t.Errorf("buffer commits counted: %d; want at least the 20 events sent", n)
	}
	if code, _ := get("/api/status"); code != http.StatusUnauthorized {
		t.Fatalf("status without login: %d", code)
	}
}

func TestPasswd(t *testing.T) {
	run := func(input string, args ...string) (int, string, string) {
		cmd := exec.Command(binary, append([]string{"passwd"}, args...)...)
		cmd.Stdin = strings.NewReader(input)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Run()
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	code, out, errOut := run("correct horse\ncorrect horse\n", "--role", "admin", "adam")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	m := regexp.MustCompile(`^    - \{name: adam, role: admin, password_hash: "(\$2a\$12\$[^"]+)"\}\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output %q", out)
	}
	if bcrypt.CompareHashAndPassword([]byte(m[1]), []byte("correct horse")) != nil {
		t.Fatal("the printed hash does not match the password")
	}
	if strings.Contains(out+errOut, "correct horse") {
		t.Fatal("the password was printed")
	}
	if code, _, errOut := run("correct horse\nother horse\n", "clara"); code != 1 || !strings.Contains(errOut, "differ") {
		t.Fatalf("mismatch: %d %s", code, errOut)
	}
	if code, _, errOut := run("short\nshort\n", "clara"); code != 1 || !strings.Contains(errOut, "at least 8") {
		t.Fatalf("short: %d %s", code, errOut)
	}
}
