package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mailroomd/mailroomd/drivers/camera"
	"github.com/mailroomd/mailroomd/drivers/printer"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/drivers/serialport"
	"github.com/mailroomd/mailroomd/drivers/usbhid"
	"github.com/mailroomd/mailroomd/internal/app"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/health"
)

// listDevices prints the serial ports and USB devices of this machine, with
// a guess of what each is and a config snippet.
func listDevices(stdout, stderr io.Writer) int {
	ports, err := serialport.List()
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
	}
	byID := serialByID()
	fmt.Fprintln(stdout, "Serial ports:")
	if len(ports) == 0 {
		fmt.Fprintln(stdout, "  (none)")
	}
	for _, p := range ports {
		name := p.Name
		fmt.Fprintf(stdout, "  %s", name)
		if p.IsUSB {
			fmt.Fprintf(stdout, "  usb %04x:%04x", p.VendorID, p.ProductID)
			if p.Serial != "" {
				fmt.Fprintf(stdout, " serial %s", p.Serial)
			}
			if p.Product != "" {
				fmt.Fprintf(stdout, " (%s)", p.Product)
			}
		}
		fmt.Fprintln(stdout)
		if link := byID[name]; link != "" {
			fmt.Fprintf(stdout, "    by-id: %s\n", link)
			name = link
		}
		fmt.Fprintf(stdout, "    scanner: {name: scanner-1, kind: scanner, driver: serial-line, port: %s, baud: 9600, terminator: cr}\n", name)
		fmt.Fprintf(stdout, "    scale:   {name: scale-1, kind: scale, driver: nci, port: %s}\n", name)
	}
	fmt.Fprintln(stdout, "Cameras (V4L2):")
	cams, _ := filepath.Glob("/dev/v4l/by-id/*-video-index0")
	if len(cams) == 0 {
		fmt.Fprintln(stdout, "  (none)")
	}
	for _, c := range cams {
		fmt.Fprintf(stdout, "  %s\n", c)
		if target, err := filepath.EvalSymlinks(c); err == nil {
			fmt.Fprintf(stdout, "    device: %s\n", target)
		}
		fmt.Fprintf(stdout, "    camera: {name: camera-1, kind: camera, driver: v4l2, path: %s}\n", c)
	}
	devs, err := usbhid.List()
	fmt.Fprintln(stdout, "USB devices:")
	if err != nil {
		fmt.Fprintf(stdout, "  (cannot list: %v)\n", err)
		return 0
	}
	if len(devs) == 0 {
		fmt.Fprintln(stdout, "  (none)")
	}
	for _, d := range devs {
		id := fmt.Sprintf("%04x:%04x", d.VendorID, d.ProductID)
		if d.Serial != "" {
			id += "/" + d.Serial
		}
		fmt.Fprintf(stdout, "  %s  %s %s (interface %d)\n", id, d.Manufacturer, d.Product, d.Interface)
		guess := usbhid.Known[[2]uint16{d.VendorID, d.ProductID}]
		if guess == "" {
			continue
		}
		fmt.Fprintf(stdout, "    looks like: %s\n", guess)
		switch {
		case strings.Contains(guess, "hid-pos scale"):
			fmt.Fprintf(stdout, "    config: {name: scale-1, kind: scale, driver: hid-pos, usb: \"%s\"}\n", id)
		case strings.Contains(guess, "hid-pos scanner"):
			fmt.Fprintf(stdout, "    config: {name: scanner-1, kind: scanner, driver: hid-pos, usb: \"%s\"}\n", id)
		case strings.Contains(guess, "hid-keyboard"):
			fmt.Fprintf(stdout, "    config: {name: scanner-1, kind: scanner, driver: hid-keyboard, usb: \"%s\", layout: us}\n", id)
		}
	}
	return 0
}

// serialByID maps tty paths to their /dev/serial/by-id links.
func serialByID() map[string]string {
	out := map[string]string{}
	links, _ := filepath.Glob("/dev/serial/by-id/*")
	for _, l := range links {
		if target, err := filepath.EvalSymlinks(l); err == nil {
			out[target] = l
		}
	}
	return out
}

// probe opens one configured device and prints what it reads until
// interrupted or until timeout (0: no timeout).
func probe(cfg *config.Config, name string, timeout time.Duration, out string, stdout, stderr io.Writer) int {
	var dc *config.Device
	for i := range cfg.Devices {
		if cfg.Devices[i].Name == name {
			dc = &cfg.Devices[i]
		}
	}
	if dc == nil {
		fmt.Fprintf(stderr, "mailroomd: no device %q in %s\n", name, cfg.File)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := health.NewTracker(clock.Real{}, func(c health.Condition, cleared bool) {
		if cleared {
			fmt.Fprintf(stdout, "%s  state: ok (%s cleared)\n", time.Now().Format("15:04:05.000"), c.Key)
		} else {
			fmt.Fprintf(stdout, "%s  state: %s: %s\n", time.Now().Format("15:04:05.000"), c.Severity, c.Message)
		}
	})
	dev, err := app.NewDevice(*dc, clock.Real{}, log, h, nil)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: device %s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	fmt.Fprintf(stdout, "probing %s (%s, driver %s); Ctrl-C to stop\n", name, dc.Kind, dc.Driver)
	done := make(chan error, 1)
	if dev.Camera != nil {
		return probeCamera(ctx, dev, out, stdout, stderr)
	}
	if dev.Printer != nil {
		ch := make(chan printer.Reading)
		go func() { done <- dev.Printer.Run(ctx, ch) }()
		for {
			select {
			case r := <-ch:
				fmt.Fprintf(stdout, "%s  printer: %s\n", r.At.Format("15:04:05.000"), r.Status)
			case err := <-done:
				return exitOf(err, stderr)
			}
		}
	}
	if dev.Scale != nil {
		ch := make(chan scale.Reading)
		go func() { done <- dev.Scale.Run(ctx, ch) }()
		for {
			select {
			case r := <-ch:
				fmt.Fprintf(stdout, "%s  weight: %s\n", r.At.Format("15:04:05.000"), r)
			case err := <-done:
				return exitOf(err, stderr)
			}
		}
	}
	ch := make(chan scanner.Reading)
	go func() { done <- dev.Scanner.Run(ctx, scanner.ToChannel(ch)) }()
	for {
		select {
		case r := <-ch:
			fmt.Fprintf(stdout, "%s  scan: %q", r.At.Format("15:04:05.000"), r.Barcode)
			if r.Symbology != "" {
				fmt.Fprintf(stdout, " symbology %s", r.Symbology)
			}
			fmt.Fprintf(stdout, " (% x)\n", r.Barcode)
		case err := <-done:
			return exitOf(err, stderr)
		}
	}
}

// probeCamera prints a camera's state changes, takes one still once it
// is connected, and writes that still to out when out is set.
func probeCamera(ctx context.Context, dev app.Device, out string, stdout, stderr io.Writer) int {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	status := make(chan camera.Status)
	done := make(chan error, 1)
	go func() { done <- dev.Camera.Run(ctx, status) }()
	type result struct {
		still camera.Photo
		err   error
	}
	stills := make(chan result, 1)
	taken, ok := false, false
	// handle prints a still and writes it; true when both went well.
	handle := func(r result) bool {
		if r.err != nil {
			fmt.Fprintf(stdout, "still: %v\n", r.err)
			return false
		}
		fmt.Fprintf(stdout, "%s  still: %dx%d JPEG, %d bytes\n", r.still.At.Format("15:04:05.000"), r.still.Width, r.still.Height, len(r.still.JPEG))
		if out != "" {
			if err := os.WriteFile(out, r.still.JPEG, 0o600); err != nil {
				fmt.Fprintf(stderr, "mailroomd: %v\n", err)
				return false
			}
			fmt.Fprintf(stdout, "still written to %s\n", out)
		}
		return true
	}
	for {
		select {
		case s := <-status:
			if !s.Connected {
				fmt.Fprintf(stdout, "%s  state: disconnected: %s\n", s.At.Format("15:04:05.000"), s.Detail)
				continue
			}
			fmt.Fprintf(stdout, "%s  state: connected: %s\n", s.At.Format("15:04:05.000"), s.Detail)
			if !taken {
				taken = true
				go func() { // Run keeps serving while the still is taken
					still, err := dev.Camera.Still(ctx)
					stills <- result{still, err}
				}()
			}
		case r := <-stills:
			// The one still is taken, or failed: the probe ends.
			ok = handle(r)
			stop()
			for {
				select {
				case <-status:
				case <-done:
					if ok {
						return 0
					}
					return 1
				}
			}
		case err := <-done:
			select {
			case r := <-stills: // taken just before the end
				ok = handle(r)
			default:
			}
			if code := exitOf(err, stderr); code != 0 || ok {
				return code
			}
			fmt.Fprintln(stderr, "mailroomd: no still taken")
			return 1
		}
	}
}

func exitOf(err error, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	return 0
}
