package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kardianos/service"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/logring"
	"github.com/mailroomd/mailroomd/internal/remoteconfig"
	"github.com/mailroomd/mailroomd/internal/sdnotify"
	"github.com/mailroomd/mailroomd/internal/update"
)

// program adapts App to kardianos/service, so that the same code path runs
// in a terminal, under systemd and as a Windows service. It also switches
// the App to a remotely pushed config and back when that config fails.
type program struct {
	local    *config.Config
	log      *slog.Logger
	logs     *logring.Ring
	restart  chan struct{}
	handover chan struct{}
	remote   *remoteconfig.Manager

	// clk is the daemon's clock: the system clock, or for the chaos tests
	// one shifted by MAILROOMD_TEST_CLOCK_OFFSET_FILE.
	clk clock.Clock

	mu      sync.Mutex
	app     *App
	cfg     *config.Config
	stopped bool
}

func (p *program) hooks() Hooks {
	return Hooks{Logs: p.logs, Restart: func() {
		select {
		case p.restart <- struct{}{}:
		default:
		}
	}, Handover: func() {
		select {
		case p.handover <- struct{}{}:
		default:
		}
	}, OnConfig: p.onConfig, Reported: p.remote.LastReport}
}

// reportHealth records, once the uplink is connected, that this version is
// healthy (an updater waits for it), and publishes the last update's
// outcome.
func (p *program) reportHealth(app *App) {
	for {
		p.mu.Lock()
		gone := p.app != app || p.stopped
		p.mu.Unlock()
		if gone {
			return
		}
		if app.LinkUp() {
			if err := update.WriteHealth(app.stateDir(), version, time.Now()); err != nil {
				p.log.Warn("health record not written", "err", err)
			}
			app.reportUpdate(context.Background())
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (p *program) Start(service.Service) error {
	cfg, trial, err := p.remote.Effective()
	if err != nil {
		p.log.Error("remote config unreadable; running the local config", "err", err)
		cfg, trial = p.local, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	app, err := NewApp(context.Background(), cfg, p.log, p.clk, p.hooks())
	if err != nil && cfg != p.local {
		p.log.Error("remote config does not start; rolling back", "err", err)
		cfg, _ = p.remote.Rollback("the config did not start: " + err.Error())
		app, err = NewApp(context.Background(), cfg, p.log, p.clk, p.hooks())
		trial = false
	}
	if err != nil {
		return err
	}
	p.app, p.cfg = app, cfg
	app.Start()
	if trial {
		go p.watch(app, cfg.Fleet.ConfigTrial.D())
	}
	go p.reportHealth(app)
	if _, err := sdnotify.Notify("READY=1"); err != nil {
		p.log.Warn("systemd readiness not sent", "err", err)
	}
	return nil
}

func (p *program) Stop(service.Service) error {
	sdnotify.Notify("STOPPING=1")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.app == nil {
		return nil
	}
	return p.app.Stop()
}

// onConfig runs on the fleet's goroutine: it decides, and leaves the switch
// to another goroutine (stopping the App waits for that fleet goroutine).
func (p *program) onConfig(_ context.Context, pl envelope.Payload, keyID string) fleet.ConfigOutcome {
	cfg, r := p.remote.Consider(pl.Version, keyID, []byte(pl.Config))
	out := fleet.ConfigOutcome{Status: r.Status, Errors: r.Errors}
	if cfg != nil {
		if err := p.remote.Begin(pl.Version, keyID, []byte(pl.Config)); err != nil {
			out.Status, out.Errors = remoteconfig.StatusRejected, []string{"cannot keep the config: " + err.Error()}
		} else {
			p.log.Info("switching to remote config", "version", pl.Version, "key_id", keyID)
			p.mu.Lock()
			app := p.app
			p.mu.Unlock()
			if app.FrontOnly(cfg) {
				go p.reconfigure(app, cfg)
			} else {
				go p.swap(cfg, true)
			}
		}
	}
	out.Report, _ = p.remote.LastReport()
	if cfg == nil {
		out.Report = mustJSON(r)
	}
	return out
}

// swap stops the running App and starts one with cfg. The buffer is closed
// and reopened in between: nothing committed is lost, nothing is sent twice
// that was acknowledged.
func (p *program) swap(cfg *config.Config, trial bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if err := p.app.Stop(); err != nil {
		p.log.Error("stop for a config switch", "err", err)
	}
	app, err := NewApp(context.Background(), cfg, p.log, p.clk, p.hooks())
	if err != nil && trial {
		p.log.Error("remote config does not start; rolling back", "err", err)
		cfg, _ = p.remote.Rollback("the config did not start: " + err.Error())
		app, err = NewApp(context.Background(), cfg, p.log, p.clk, p.hooks())
		trial = false
	}
	if err != nil {
		p.log.Error("cannot start after a config switch; exiting for the service manager", "err", err)
		os.Exit(1)
	}
	p.app, p.cfg = app, cfg
	app.Start()
	go p.reportHealth(app)
	if trial {
		go p.watch(app, cfg.Fleet.ConfigTrial.D())
	}
}

// reconfigure applies a config that changes only devices, stations or the
// web server: the buffer, the uplink and the fleet link keep running.
func (p *program) reconfigure(app *App, cfg *config.Config) {
	if err := app.Reconfigure(cfg); err != nil {
		reason := "the config did not start: " + err.Error()
		p.log.Error("remote config rolled back", "reason", reason)
		prev, r := p.remote.Rollback(reason)
		if app.FrontOnly(prev) {
			app.Reconfigure(prev)
		} else {
			p.swap(prev, false)
		}
		p.mu.Lock()
		now := p.app
		p.mu.Unlock()
		now.Fleet().Audit(context.Background(), &event.Audit{Action: "config", Version: r.Version, Outcome: r.Status, Reason: reason})
		now.Fleet().PublishReport(context.Background(), mustJSON(r))
		return
	}
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
	p.watch(app, cfg.Fleet.ConfigTrial.D())
}

// watch keeps a config in trial when the uplink connects with it within d,
// and rolls back otherwise.
func (p *program) watch(app *App, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if app.LinkUp() {
			r := p.remote.Confirm()
			p.log.Info("remote config applied", "version", r.Version)
			app.Fleet().Audit(context.Background(), &event.Audit{Action: "config", Version: r.Version, Outcome: r.Status})
			app.Fleet().PublishReport(context.Background(), mustJSON(r))
			return
		}
		time.Sleep(100 * time.Millisecond)
		p.mu.Lock()
		gone := p.app != app || p.stopped
		p.mu.Unlock()
		if gone {
			return
		}
	}
	reason := fmt.Sprintf("the uplink did not reconnect within %s", d)
	p.log.Error("remote config rolled back", "reason", reason)
	cfg, r := p.remote.Rollback(reason)
	p.swap(cfg, false) // the report goes out when the uplink connects
	p.mu.Lock()
	now := p.app
	p.mu.Unlock()
	now.Fleet().Audit(context.Background(), &event.Audit{Action: "config", Version: r.Version, Outcome: r.Status, Reason: reason})
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// systemLogWriter hands log lines to the service manager's log (the
// Windows event log). Under systemd stderr already goes to the journal.
type systemLogWriter struct {
	mu sync.Mutex
	l  service.Logger
}

func (w *systemLogWriter) set(l service.Logger) { w.mu.Lock(); w.l = l; w.mu.Unlock() }

func (w *systemLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	l := w.l
	w.mu.Unlock()
	if l == nil {
		return len(p), nil
	}
	line := strings.TrimRight(string(p), "\n")
	switch {
	case strings.Contains(line, "level=ERROR") || strings.Contains(line, `"level":"ERROR"`):
		l.Error(line)
	case strings.Contains(line, "level=WARN") || strings.Contains(line, `"level":"WARN"`):
		l.Warning(line)
	default:
		l.Info(line)
	}
	return len(p), nil
}

// testClock returns the system clock, or, when a test names an offset file,
// a clock shifted by the duration written in it (re-read every 100 ms).
// Go reads the time without libc, so a test cannot fake it from outside;
// the chaos suite uses this to make the wall clock jump.
func testClock(offsetFile string, log *slog.Logger) clock.Clock {
	if offsetFile == "" {
		return clock.Real{}
	}
	off := clock.NewOffset(clock.Real{}, 0)
	log.Warn("test clock: the wall clock is shifted by the offset in the file", "file", offsetFile)
	go func() {
		for {
			if b, err := os.ReadFile(offsetFile); err == nil {
				if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
					off.Set(d)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return off
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if !cfg.PersonalData {
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case "recipient", "location", "barcode", "code":
			default:
				return a
			}
			if a.Value.String() != "" {
				a.Value = slog.StringValue("[redacted]")
			}
			return a
		}
	}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runService runs the daemon until SIGINT or SIGTERM. A second signal while
// shutting down aborts the shutdown at once.
func runService(cfg *config.Config, stderr io.Writer) int {
	ring := logring.New(1000)
	sysLog := &systemLogWriter{}
	out := io.Writer(stderr)
	if runtime.GOOS == "windows" && !service.Interactive() {
		out = sysLog // a Windows service has no console: the event log
	}
	log := newLogger(cfg.Log, io.MultiWriter(out, ring))
	remote, err := remoteconfig.Open(filepath.Dir(cfg.Storage.Path), cfg, time.Now)
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	prg := &program{local: cfg, log: log, logs: ring, restart: make(chan struct{}, 1), handover: make(chan struct{}, 1), remote: remote,
		clk: testClock(os.Getenv("MAILROOMD_TEST_CLOCK_OFFSET_FILE"), log)}
	restarting := false
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	svc, err := service.New(prg, &service.Config{
		Name:        serviceName,
		DisplayName: serviceName,
		Description: serviceDescription,
		Arguments:   []string{"run", "--config", cfg.File},
		Option: service.KeyValue{
			"RunWait": func() {
				var s os.Signal
				select {
				case s = <-sigs:
					log.Info("signal received, shutting down (send it again to abort)", "signal", s.String())
				case <-prg.restart:
					restarting = true
					log.Info("restarting on a remote command")
				case <-prg.handover:
					log.Info("stopping for an update; the updater starts the new version")
				}
				go func() {
					s := <-sigs
					log.Error("second signal: aborting shutdown", "signal", s.String())
					os.Exit(130)
				}()
			},
		},
	})
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	if l, err := svc.SystemLogger(nil); err == nil {
		sysLog.set(l)
	}
	if err := svc.Run(); err != nil {
		log.Error("mailroomd failed", "err", err)
		return 1
	}
	if restarting {
		return reexec(log)
	}
	return 0
}
