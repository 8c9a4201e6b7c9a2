package main

import (
	"bytes"
	"fmt"
	"image/jpeg"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
)

func TestProbeScaleAndScanner(t *testing.T) {
	dir := t.TempDir()
	scaleDev := serialtest.New(t, filepath.Join(dir, "ttyScale"))
	scanDev := serialtest.New(t, filepath.Join(dir, "ttyScan"))
	stop := make(chan struct{})
	defer close(stop)
	go scaleDev.Answer(stop, func(req []byte) []byte {
		if bytes.Contains(req, []byte("W\r")) {
			return []byte("\n0002.50LB\r\n00\r\x03")
		}
		return nil
	})
	cfg := filepath.Join(dir, "probe.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
appliance: {id: mr-probe}
uplink: {brokers: ["mqtt://127.0.0.1:1"], insecure: true}
devices:
  - {name: ship, kind: scale, driver: nci, port: %s, poll_interval: 50ms}
  - {name: dock, kind: scanner, driver: serial-line, port: %s}
`, scaleDev.Link, scanDev.Link)), 0o644)

	var out, errOut bytes.Buffer
	if code := Main([]string{"probe", "--config", cfg, "--for", "700ms", "ship"}, &out, &errOut); code != 0 {
		t.Fatalf("probe exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "weight: 2.5 lb stable") {
		t.Fatalf("probe output lacks the weight:\n%s\n%s", out.String(), errOut.String())
	}

	go func() {
		time.Sleep(300 * time.Millisecond)
		scanDev.Scan("1Z999AA10123456784")
	}()
	out.Reset()
	if code := Main([]string{"probe", "--config", cfg, "--for", "900ms", "dock"}, &out, &errOut); code != 0 {
		t.Fatalf("probe exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `scan: "1Z999AA10123456784"`) {
		t.Fatalf("probe output lacks the scan:\n%s", out.String())
	}
	if code := Main([]string{"probe", "--config", cfg, "nope"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `no device "nope"`) {
		t.Fatalf("unknown device: %d %s", code, errOut.String())
	}
}

func TestDevicesListsSerialPorts(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main([]string{"devices"}, &out, &errOut); code != 0 {
		t.Fatalf("devices exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "Serial ports:") || !strings.Contains(out.String(), "USB devices:") {
		t.Fatalf("devices output:\n%s", out.String())
	}
}

func TestProbePrinter(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if bytes.Contains(buf[:n], []byte("~HS")) { // paper out, head open
				c.Write([]byte("\x02030,1,0,1245,000,0,0,0,000,0,0,0\x03\r\n\x02000,0,1,0,0,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n"))
			}
		}
	}()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "probe.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
appliance: {id: mr-probe}
uplink: {brokers: ["mqtt://127.0.0.1:1"], insecure: true}
devices:
  - {name: dock-printer, kind: printer, driver: zpl, address: "tcp://%s"}
`, l.Addr())), 0o644)
	var out, errOut bytes.Buffer
	if code := Main([]string{"probe", "--config", cfg, "--for", "700ms", "dock-printer"}, &out, &errOut); code != 0 {
		t.Fatalf("probe exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "printer: paper out, head open") {
		t.Fatalf("probe output:\n%s\n%s", out.String(), errOut.String())
	}
}

// TestProbeCamera: probing a camera prints its state, takes one still and
// writes it where --out says.
func TestProbeCamera(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "probe.yaml")
	os.WriteFile(cfg, []byte(`version: 1
appliance: {id: mr-probe}
uplink: {brokers: ["mqtt://127.0.0.1:1"], insecure: true}
devices:
  - {name: cam, kind: camera, driver: sim-camera}
  - {name: gone, kind: camera, driver: v4l2, path: `+filepath.Join(dir, "video9")+`}
`), 0o644)
	still := filepath.Join(dir, "still.jpg")
	var out, errOut bytes.Buffer
	began := time.Now()
	if code := Main([]string{"probe", "--config", cfg, "--for", "30s", "--out", still, "cam"}, &out, &errOut); code != 0 {
		t.Fatalf("probe exit %d: %s", code, errOut.String())
	}
	if took := time.Since(began); took > 15*time.Second {
		t.Fatalf("probe of a camera ran %v: it ends once its one still is taken, not at --for", took)
	}
	for _, want := range []string{"state: connected", "still: ", "JPEG", "still written to " + still} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("probe output lacks %q:\n%s\n%s", want, out.String(), errOut.String())
		}
	}
	b, err := os.ReadFile(still)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := jpeg.DecodeConfig(bytes.NewReader(b)); err != nil || c.Width == 0 {
		t.Fatalf("the still is not a JPEG: %v", err)
	}
	// A camera that is not there: its state, no still, exit 1.
	out.Reset()
	errOut.Reset()
	if code := Main([]string{"probe", "--config", cfg, "--for", "1s", "--out", filepath.Join(dir, "none.jpg"), "gone"}, &out, &errOut); code != 1 ||
		!strings.Contains(out.String(), "state: disconnected: ") || !strings.Contains(out.String(), "video9") ||
		!strings.Contains(errOut.String(), "no still taken") {
		t.Fatalf("a missing camera: exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "none.jpg")); err == nil {
		t.Fatal("a still file was written without a still")
	}
}
