package main

import (
	"bytes"
	"cmp"
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
	"strings"
	"testing"
	"time"
)

// TestCameraOnLinuxKernel runs the `driver: v4l2` camera on the real
// Linux kernel: a QEMU machine boots Debian's kernel (fetched by `make
// deps` into var/vm, the package linux-image-amd64 depends on), whose
// /dev/video0 is the kernel's own test driver, vivid, a webcam of the
// kernel's V4L2 core and videobuf2. So the driver's ioctls, the
// structures' layout, the list of about 80 formats, the size the device
// chooses, memory-mapped streaming and YUYV frames are tested against the
// kernel, not a fake. vivid draws 75 % colour bars: each of the eight must
// come out of the JPEG in its colour.
//
// In the machine, `mailroomd probe` takes a still twice (two processes,
// the second opening the device the first closed). Then the daemon runs a
// receiving station with that camera: a still of every parcel received,
// kept in the blob store, the device open from one still to the next;
// while it runs, vivid is unbound from its device (as a USB camera
// unplugged: the node goes away) and bound again, and the daemon must
// report the camera disconnected, connect it again and photograph the
// parcels after that.
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
	current, err := os.ReadFile("../var/vm/current")
	if err != nil {
		t.Fatalf("no kernel in var/vm (%v): run `make deps` (it fetches Debian's linux-image-amd64)", err)
	}
	kdir := filepath.Join("../var/vm", strings.TrimSpace(string(current)))
	kernels, _ := filepath.Glob(filepath.Join(kdir, "boot/vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("var/vm/current names %s, which holds %d kernels: run `make deps`", kdir, len(kernels))
	}
	kernel := kernels[0]

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
	modules := loadOrder(t, kdir, "vivid")
	for _, m := range modules {
		copyFile(t, m.path, filepath.Join(root, "lib/modules", m.name+".ko"), 0o644)
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
	// every 2 s from a simulated scanner, a still of each. The broker is
	// unreachable: photos wait in the buffer's blob store.
	station := `version: 1
appliance: {id: mr-vm}
storage: {path: /tmp/box/buffer.db}
uplink: {brokers: ["mqtt://127.0.0.1:1"], insecure: true}
devices:
  - {name: dock-scanner, kind: scanner, driver: sim, interval: 2s}
  - {name: dock-camera, kind: camera, driver: v4l2, path: /dev/video0, width: 640, height: 480, warmup: 2, reconnect_max: 1s}
stations:
  - {name: dock-1, scanner: dock-scanner, camera: dock-camera}
`
	if err := os.WriteFile(filepath.Join(root, "station.yaml"), []byte(station), 0o644); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(modules))
	for _, m := range modules[:len(modules)-1] {
		names = append(names, m.name)
	}
	// vivid with one device that has one node, a video capture one.
	initScript := `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in ` + strings.Join(names, " ") + `; do insmod /lib/modules/$m.ko || echo "MODULE-FAILED $m"; done
insmod /lib/modules/vivid.ko n_devs=1 node_types=0x1 || echo "MODULE-FAILED vivid"
cd /tmp
for n in 1 2; do
  echo "PROBE-$n-BEGIN"
  /mailroomd probe --config /camera.yaml --for 20s --out /tmp/still$n.jpg dock-camera
  echo "PROBE-$n-EXIT=$?"
  echo "PROBE-$n-END"
  echo "STILL-$n-BEGIN"; [ -f /tmp/still$n.jpg ] && base64 /tmp/still$n.jpg; echo "STILL-$n-END"
done
mkdir -p /tmp/box
/mailroomd run --config /station.yaml >> /tmp/daemon.log 2>&1 &
sleep 9
echo "mark: UNPLUGGED" >> /tmp/daemon.log; echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind || echo "mark: UNBIND FAILED" >> /tmp/daemon.log
sleep 6
echo "mark: REPLUGGED" >> /tmp/daemon.log; echo vivid.0 > /sys/bus/platform/drivers/vivid/bind || echo "mark: BIND FAILED" >> /tmp/daemon.log
sleep 9
kill -TERM $!; wait $!
echo "DAEMON-EXIT=$?"
echo "LOG-BEGIN"; grep -E 'msg="(parcel received|photo taken|camera [a-z ,]+|label photo[^"]*)"|level=ERROR|^mark: ' /tmp/daemon.log; echo "LOG-END"
f=$(ls /tmp/box/blobs/*/* 2>/dev/null | tail -1)
echo "BLOB-BEGIN"; [ -n "$f" ] && base64 "$f"; echo "BLOB-END"
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

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Software emulation unless MAILROOMD_VM_ACCEL says otherwise (for
	// example "kvm:tcg"), also where /dev/kvm exists: a KVM nested in a
	// virtual machine may hang the guest's kernel right after it is
	// decompressed (seen on a 2-vCPU AMD EPYC test machine, whose KVM
	// lacked CPU features qemu asks for); emulated, the machine runs in
	// about 30 s.
	accel := cmp.Or(os.Getenv("MAILROOMD_VM_ACCEL"), "tcg")
	vm := exec.CommandContext(ctx, qemu, "-machine", "accel="+accel, "-m", "512", "-smp", "1", "-nic", "none",
		"-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=1")
	began := time.Now()
	console, err := vm.CombinedOutput()
	text := strings.ReplaceAll(string(console), "\r", "")
	// shown is the console for a failure's message, without the pictures.
	shown := regexp.MustCompile(`(?s)(STILL-\d-BEGIN|BLOB-BEGIN)\n.*?\n?(STILL-\d-END|BLOB-END)`).ReplaceAllString(text, "$1 … $2")
	if err != nil {
		t.Fatalf("qemu: %v after %v; its console:\n%s", err, time.Since(began).Round(time.Second), shown)
	}
	t.Logf("the machine ran %v", time.Since(began).Round(100*time.Millisecond))
	if strings.Contains(text, "MODULE-FAILED") {
		t.Fatalf("a module did not load:\n%s", shown)
	}
	section := func(name string) string {
		m := regexp.MustCompile(`(?s)` + name + `-BEGIN\n(.*?)` + name + `-END`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("the console lacks %s:\n%s", name, shown)
		}
		return m[1]
	}
	for n := 1; n <= 2; n++ {
		probe := section(fmt.Sprintf("PROBE-%d", n))
		for _, want := range []string{fmt.Sprintf("PROBE-%d-EXIT=0", n), "state: connected: vivid 1280x720 YUYV", "still: 1280x720 JPEG"} {
			if !strings.Contains(probe, want) {
				t.Fatalf("probe %d lacks %q:\n%s", n, want, shown)
			}
		}
		b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(section(fmt.Sprintf("STILL-%d", n)), "\n", ""))
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

	// The station, in three parts: before the unplug every parcel gets
	// its still (but perhaps the last, which the unplug may cut short);
	// the unplug is reported; after the camera is back, connected again,
	// parcels get their stills again. No error but the stills the unplug
	// failed.
	if !strings.Contains(text, "DAEMON-EXIT=0") {
		t.Fatalf("the daemon did not stop cleanly:\n%s", shown)
	}
	log := section("LOG")
	before, rest, ok1 := strings.Cut(log, "mark: UNPLUGGED")
	unplugged, after, ok2 := strings.Cut(rest, "mark: REPLUGGED")
	if !ok1 || !ok2 {
		t.Fatalf("the unplug or the replug did not happen:\n%s", shown)
	}
	count := func(s, msg string) int { return strings.Count(s, `msg="`+msg+`"`) }
	if r, p := count(before, "parcel received"), count(before, "photo taken"); r < 2 || p < r-1 || p > r {
		t.Fatalf("before the unplug %d parcels received and %d photos taken, want every parcel's:\n%s", r, p, shown)
	}
	// The unplug shows at the next still or at the idle probe, within 3 s:
	// before the replug, 6 s later (the marks are written just before
	// the device is unbound and bound).
	if strings.Contains(log, "FAILED") || !strings.Contains(unplugged, `msg="camera disconnected"`) {
		t.Fatalf("the unplug was not reported before the replug:\n%s", shown)
	}
	_, again, ok := strings.Cut(after, `msg="camera connected"`)
	if !ok || count(again, "photo taken") < 1 {
		t.Fatalf("after the replug the camera was not connected again, or took no still:\n%s", shown)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=ERROR") && !strings.Contains(line, `msg="label photo not kept"`) {
			t.Fatalf("an error: %s\n%s", line, shown)
		}
	}
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(section("BLOB"), "\n", ""))
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
	t.Logf("the station received %d parcels and took %d photos", count(log, "parcel received"), count(log, "photo taken"))
}

// kernelModule is a module file of the kernel in var/vm.
type kernelModule struct{ name, path string }

// loadOrder is the modules that module needs, from their .modinfo
// "depends=", each after those it depends on, module last.
func loadOrder(t *testing.T, kdir, module string) []kernelModule {
	t.Helper()
	paths := map[string]string{}
	filepath.WalkDir(kdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		switch name := d.Name(); {
		case strings.HasSuffix(name, ".ko"):
			paths[strings.TrimSuffix(name, ".ko")] = p
		case strings.Contains(name, ".ko."):
			paths[name[:strings.Index(name, ".ko.")]] = p
		}
		return nil
	})
	var order []kernelModule
	seen := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		path := paths[name]
		if path == "" {
			t.Fatalf("the kernel in %s lacks the module %s", kdir, name)
		}
		if !strings.HasSuffix(path, ".ko") {
			t.Fatalf("the module %s is compressed (%s): `make vm-kernel` unpacks the modules of a new kernel (xz, zstd, gzip); run it again", name, path)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("module %s: %v", name, err)
		}
		info, err := f.Section(".modinfo").Data()
		f.Close()
		if err != nil {
			t.Fatalf("module %s: .modinfo: %v", name, err)
		}
		for _, kv := range bytes.Split(info, []byte{0}) {
			if deps, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(deps) > 0 {
				for _, d := range strings.Split(string(deps), ",") {
					visit(d)
				}
			}
		}
		order = append(order, kernelModule{name, path})
	}
	visit(module)
	return order
}

// checkColourBars checks the row at three quarters of the height of
// vivid's 75 % colour bars: white, yellow, cyan, green, magenta, red,
// blue, black, each 1/8 of the width, at 75 % of full scale (191) where a
// colour is on and near 0 where it is off. Swapped chroma or luma bytes,
// or a frame from another format, would change them.
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
