package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/base64"
	"fmt"
	"image"
	"image/jpeg"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmModules are the kernel modules the vivid video driver needs, in the
// order they load (each after those it depends on).
var vmModules = []string{"mc", "videodev", "rc-core", "cec", "v4l2-dv-timings", "v4l2-tpg",
	"videobuf2-common", "videobuf2-v4l2", "videobuf2-memops", "videobuf2-vmalloc", "videobuf2-dma-contig", "vivid"}

// TestCameraOnLinuxKernel runs `mailroomd probe` of a `driver: v4l2`
// camera twice inside a QEMU machine that boots Debian's kernel (fetched
// by `make deps`, the package linux-image-amd64 depends on). Its
// /dev/video0 is the kernel's own test driver, vivid, a webcam of the
// kernel's V4L2 core and videobuf2: so the driver's ioctls, the
// structures' layout, the list of about 80 formats, the size the device
// chooses, memory-mapped streaming and YUYV frames are tested against the
// real kernel, not a fake. vivid draws 75 % colour bars: each of the eight
// must come out of the JPEG in its colour. The second probe opens the
// device again after the first closed it, as the daemon does after an
// unplug. Then the daemon runs a receiving station with that camera: a
// still of every parcel received, kept in the blob store, the device
// open from one still to the next.
func TestCameraOnLinuxKernel(t *testing.T) {
	if runtime.GOARCH != "amd64" || len(binaryExec) > 0 {
		t.Skip("the machine is an amd64 one, for an amd64 binary run by itself")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 is not installed: run `make deps` (Debian package qemu-system-x86)")
	}
	if !staticELF("/bin/busybox") {
		t.Fatal("/bin/busybox is missing or not statically linked: run `make deps` (Debian package busybox-static)")
	}
	kernels, _ := filepath.Glob("../var/vm/*/boot/vmlinuz-*")
	if len(kernels) == 0 {
		t.Fatal("no kernel in var/vm: run `make deps` (it fetches Debian's linux-image-amd64)")
	}
	kernel := kernels[len(kernels)-1]
	kdir := filepath.Dir(filepath.Dir(kernel))

	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, "/bin/busybox", filepath.Join(root, "bin/busybox"), 0o755)
	copyFile(t, binary, filepath.Join(root, "mailroomd"), 0o755)
	// The binary's C library and loader, where it looks for them.
	out, err := exec.Command("ldd", binary).CombinedOutput()
	if err != nil {
		t.Fatalf("ldd %s: %v\n%s", binary, err, out)
	}
	for _, m := range regexp.MustCompile(`(?m)(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		lib := m[1]
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(lib)), 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, lib, filepath.Join(root, lib), 0o755)
	}
	found := map[string]string{}
	filepath.WalkDir(kdir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			found[strings.TrimSuffix(d.Name(), ".ko")] = p
		}
		return nil
	})
	for _, m := range vmModules {
		if found[m] == "" {
			t.Fatalf("kernel %s lacks the module %s", kernel, m)
		}
		copyFile(t, found[m], filepath.Join(root, "lib/modules", m+".ko"), 0o644)
	}
	cfg := `version: 1
appliance: {id: mr-vm}
uplink: {brokers: ["mqtt://127.0.0.1:1"], insecure: true}
devices:
  - {name: dock-camera, kind: camera, driver: v4l2, path: /dev/video0, width: 1280, height: 720}
`
	if err := os.WriteFile(filepath.Join(root, "camera.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The daemon with a receiving station whose camera is vivid: a parcel
	// every 2 s from a simulated scanner, a still of each, the device
	// kept open between stills. The broker is unreachable: photos wait in
	// the buffer's blob store.
	station := `version: 1
appliance: {id: mr-vm}
storage: {path: /tmp/box/buffer.db}
uplink: {brokers: ["mqtt://127.0.0.1:1"], insecure: true}
devices:
  - {name: dock-scanner, kind: scanner, driver: sim, interval: 2s}
  - {name: dock-camera, kind: camera, driver: v4l2, path: /dev/video0, width: 640, height: 480, warmup: 2}
stations:
  - {name: dock-1, scanner: dock-scanner, camera: dock-camera}
`
	if err := os.WriteFile(filepath.Join(root, "station.yaml"), []byte(station), 0o644); err != nil {
		t.Fatal(err)
	}
	// vivid with one device that has one node, a video capture one.
	initScript := `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in ` + strings.Join(vmModules[:len(vmModules)-1], " ") + `; do insmod /lib/modules/$m.ko || echo "MODULE-FAILED $m"; done
insmod /lib/modules/vivid.ko n_devs=1 node_types=0x1 || echo "MODULE-FAILED vivid"
cd /tmp
for n in 1 2; do
  /mailroomd probe --config /camera.yaml --for 60s --out /tmp/still$n.jpg dock-camera
  echo "PROBE-$n-EXIT=$?"
  echo "STILL-$n-BEGIN"; base64 /tmp/still$n.jpg; echo "STILL-$n-END"
done
mkdir -p /tmp/box
/mailroomd run --config /station.yaml > /tmp/daemon.log 2>&1 &
sleep 14
kill -TERM $!; wait $!
echo "DAEMON-EXIT=$?"
echo "RECEIVED=$(grep -c 'msg="parcel received" ' /tmp/daemon.log)"
echo "PHOTOS=$(grep -c 'msg="photo taken" .* by=camera:dock-camera' /tmp/daemon.log)"
echo "LOG-BEGIN"; grep -i -E 'camera|photo|level=(WARN|ERROR)' /tmp/daemon.log; echo "LOG-END"
echo "BLOB-BEGIN"; base64 $(ls /tmp/box/blobs/*/* | tail -1); echo "BLOB-END"
poweroff -f
`
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	pack := exec.Command("/bin/busybox", "sh", "-c", "find . | /bin/busybox cpio -o -H newc > "+initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("pack the initramfs: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	vm := exec.CommandContext(ctx, qemu, "-machine", "accel=kvm:tcg", "-m", "512", "-smp", "1",
		"-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet")
	began := time.Now()
	console, err := vm.CombinedOutput()
	text := strings.ReplaceAll(string(console), "\r", "")
	// shown is the console for a failure's message, without the pictures.
	shown := regexp.MustCompile(`(?s)(STILL-\d-BEGIN|BLOB-BEGIN)\n.*?\n(STILL-\d-END|BLOB-END)`).ReplaceAllString(text, "$1 … $2")
	if err != nil {
		t.Fatalf("qemu: %v after %v; its console:\n%s", err, time.Since(began).Round(time.Second), shown)
	}
	t.Logf("the machine ran %v", time.Since(began).Round(100*time.Millisecond))
	if strings.Contains(text, "MODULE-FAILED") {
		t.Fatalf("a module did not load:\n%s", shown)
	}
	for n := 1; n <= 2; n++ {
		for _, want := range []string{fmt.Sprintf("PROBE-%d-EXIT=0", n), "state: connected: vivid 1280x720 YUYV", "still: 1280x720 JPEG"} {
			if !strings.Contains(text, want) {
				t.Fatalf("probe %d: the console lacks %q:\n%s", n, want, shown)
			}
		}
		m := regexp.MustCompile(fmt.Sprintf(`(?s)STILL-%d-BEGIN\n(.*)STILL-%d-END`, n, n)).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("probe %d: no still on the console:\n%s", n, shown)
		}
		b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(m[1], "\n", ""))
		if err != nil {
			t.Fatalf("probe %d: the still's base64: %v", n, err)
		}
		img, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("probe %d: the still is not a JPEG: %v", n, err)
		}
		if got := img.Bounds().Size(); got != image.Pt(1280, 720) {
			t.Fatalf("probe %d: the still is %v, want 1280x720", n, got)
		}
		checkColourBars(t, img)
		if n == 1 {
			os.MkdirAll("../var/test-artifacts", 0o755)
			os.WriteFile("../var/test-artifacts/vivid-still.jpg", b, 0o644)
		}
	}

	// The station: every parcel its still (identical frames are one blob,
	// so the log counts them), none failed.
	log := regexp.MustCompile(`(?s)LOG-BEGIN\n(.*)LOG-END`).FindStringSubmatch(text)
	num := func(name string) int {
		m := regexp.MustCompile(`(?m)^` + name + `=(\d+)$`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("the console lacks %s=:\n%s", name, shown)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	received, photos := num("RECEIVED"), num("PHOTOS")
	if log == nil || num("DAEMON-EXIT") != 0 || received < 4 || photos < received-1 || photos > received ||
		strings.Contains(log[1], "level=ERROR") || strings.Contains(log[1], "photo not kept") {
		t.Fatalf("the station's camera: %d parcels received, %d photos kept (every parcel but perhaps the last one, which the stop may cut short); its log:\n%s", received, photos, shown)
	}
	m := regexp.MustCompile(`(?s)BLOB-BEGIN\n(.*)BLOB-END`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no photo on the console:\n%s", shown)
	}
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(m[1], "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	// A blob file is a header line, then the photo's bytes (docs/photos.md).
	header, photo, _ := bytes.Cut(b, []byte("\n"))
	if string(header) != "MRBLOB1 -" {
		t.Fatalf("blob header %q", header)
	}
	img, err := jpeg.Decode(bytes.NewReader(photo))
	if err != nil {
		t.Fatalf("the station's photo is not a JPEG: %v", err)
	}
	if got := img.Bounds().Size(); got != image.Pt(640, 480) {
		t.Fatalf("the station's photo is %v, want 640x480", got)
	}
	checkColourBars(t, img)
	t.Logf("the station received %d parcels and kept %d photos", received, photos)
}

// checkColourBars checks the middle row of vivid's 75 % colour bars:
// white, yellow, cyan, green, magenta, red, blue, black, each 1/8 of the
// width, at 75 % of full scale (191) where a colour is on and near 0
// where it is off. Swapped chroma or luma bytes, a wrong stride or a
// frame from another format would change them.
func checkColourBars(t *testing.T, img image.Image) {
	t.Helper()
	bars := []struct {
		name    string
		r, g, b bool
	}{{"white", true, true, true}, {"yellow", true, true, false}, {"cyan", false, true, true}, {"green", false, true, false},
		{"magenta", true, false, true}, {"red", true, false, false}, {"blue", false, false, true}, {"black", false, false, false}}
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	for i, bar := range bars {
		r, g, b, _ := img.At(w*i/8+w/16, h*3/4).RGBA()
		for _, c := range []struct {
			name string
			on   bool
			v    uint32
		}{{"red", bar.r, r >> 8}, {"green", bar.g, g >> 8}, {"blue", bar.b, b >> 8}} {
			if c.on && (c.v < 160 || c.v > 215) || !c.on && c.v > 40 {
				t.Errorf("bar %d (%s): %s is %d, want %s", i, bar.name, c.name, c.v, map[bool]string{true: "about 191", false: "near 0"}[c.on])
			}
		}
	}
}

// staticELF says whether path is an ELF executable without an interpreter.
func staticELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
