package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kardianos/service"

	"github.com/mailroomd/mailroomd/internal/app"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/gcpercent"
	"github.com/mailroomd/mailroomd/internal/goprocs"
	"github.com/mailroomd/mailroomd/internal/logring"
	"github.com/mailroomd/mailroomd/internal/mallocarenas"
	"github.com/mailroomd/mailroomd/internal/sdnotify"
)

// program adapts the Supervisor to kardianos/service, so that the same
// code path runs in a terminal, under systemd and as a Windows service.
type program struct {
	sup *app.Supervisor
}

func (p *program) Start(service.Service) error {
	if err := p.sup.Start(context.Background()); err != nil {
		return err
	}
	sdnotify.Notify("READY=1")
	return nil
}

func (p *program) Stop(service.Service) error {
	sdnotify.Notify("STOPPING=1")
	return p.sup.Stop()
}

// systemLogWriter hands log lines to the service manager's log (the
// Windows event log). Under systemd stderr already goes to the journal.
// Lines written before that log is known (the settings logged at start)
// are kept, up to maxEarlyLines, and handed over when it is.
type systemLogWriter struct {
	mu    sync.Mutex
	l     service.Logger
	early []string
}

// maxEarlyLines is how many lines a systemLogWriter keeps until the
// service manager's log is known; later ones are only in the ring.
const maxEarlyLines = 100

func (w *systemLogWriter) set(l service.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.l = l
	for _, line := range w.early {
		systemLog(l, line)
	}
	w.early = nil
}

func (w *systemLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.l == nil {
		if len(w.early) < maxEarlyLines {
			w.early = append(w.early, line)
		}
		return len(p), nil
	}
	systemLog(w.l, line)
	return len(p), nil
}

// systemLog writes line to l at the level the line names.
func systemLog(l service.Logger, line string) {
	switch {
	case strings.Contains(line, "level=ERROR") || strings.Contains(line, `"level":"ERROR"`):
		l.Error(line)
	case strings.Contains(line, "level=WARN") || strings.Contains(line, `"level":"WARN"`):
		l.Warning(line)
	default:
		l.Info(line)
	}
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
			case "recipient", "location", "barcode", "code", "typed_user", "round", "proxy", "badge":
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

// logArenaCap says whether the C allocator was capped at two arenas as
// the program was loaded (see internal/mallocarenas), so that a box's log
// shows which memory settings it runs with.
func logArenaCap(log *slog.Logger) {
	switch by := mallocarenas.SetBy(); {
	case mallocarenas.Capped():
		log.Info("C allocator capped at two arenas")
	case by != "":
		log.Info("C allocator arenas left to the C library", by, os.Getenv(by))
	case runtime.GOOS == "linux":
		log.Info("C allocator arenas left to the C library", "why", "not glibc, or glibc refused the cap")
	}
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
	logArenaCap(log)
	switch n, cpus, why := goprocs.Set(os.Getenv); why {
	case goprocs.Environment:
		log.Info("GOMAXPROCS left to the environment", "GOMAXPROCS", n)
	case goprocs.Quota:
		log.Info("GOMAXPROCS left to the CPU quota", "GOMAXPROCS", n, "cpus", cpus)
	default:
		log.Info("GOMAXPROCS raised above the CPUs for SQLite's blocking calls", "GOMAXPROCS", n, "cpus", cpus)
	}
	switch p, fromEnv := gcpercent.Set(os.Getenv); {
	case !fromEnv:
		log.Info("GOGC lowered to hold down the heap's peak through a drain", "GOGC", gogcValue(p))
	case p < 0 && debug.SetMemoryLimit(-1) == math.MaxInt64:
		log.Warn("GOGC left to the environment: the collector is off and no GOMEMLIMIT is set, so the heap grows until memory runs out", "GOGC", gogcValue(p))
	default:
		log.Info("GOGC left to the environment", "GOGC", gogcValue(p))
	}
	restart, handover := make(chan struct{}, 1), make(chan struct{}, 1)
	signalOnce := func(ch chan struct{}) func() {
		return func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	sup, err := app.NewSupervisor(cfg, app.Options{Version: version, Log: log, Logs: ring,
		Clock:   testClock(os.Getenv("MAILROOMD_TEST_CLOCK_OFFSET_FILE"), log),
		Restart: signalOnce(restart), Handover: signalOnce(handover), Args: os.Args[1:]})
	if err != nil {
		fmt.Fprintf(stderr, "mailroomd: %v\n", err)
		return 1
	}
	prg := &program{sup: sup}
	restarting, failed := false, false
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
				case <-restart:
					restarting = true
					log.Info("restarting on a remote command")
				case <-handover:
					log.Info("stopping for an update; the updater starts the new version")
				case <-sup.Failed():
					failed = true
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
	if err := svc.Run(); err != nil || failed {
		log.Error("mailroomd failed", "err", err)
		return 1
	}
	if failed {
		return 1
	}
	if restarting {
		return reexec(log)
	}
	return 0
}

// gogcValue is a GOGC percent as the log shows it: "off" for -1.
func gogcValue(p int) string {
	if p < 0 {
		return "off"
	}
	return strconv.Itoa(p)
}
