package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kardianos/service"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/logring"
)

// program adapts App to kardianos/service, so that the same code path runs
// in a terminal, under systemd and as a Windows service.
type program struct {
	cfg     *config.Config
	log     *slog.Logger
	logs    *logring.Ring
	restart chan struct{}
	app     *App
}

func (p *program) Start(service.Service) error {
	app, err := NewApp(context.Background(), p.cfg, p.log, clock.Real{}, Hooks{Logs: p.logs, Restart: func() {
		select {
		case p.restart <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		return err
	}
	p.app = app
	app.Start()
	return nil
}

func (p *program) Stop(service.Service) error {
	if p.app == nil {
		return nil
	}
	return p.app.Stop()
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runService runs the daemon until SIGINT or SIGTERM. A second signal while
// shutting down aborts the shutdown at once.
func runService(cfg *config.Config, stderr io.Writer) int {
	ring := logring.New(1000)
	log := newLogger(cfg.Log, io.MultiWriter(stderr, ring))
	prg := &program{cfg: cfg, log: log, logs: ring, restart: make(chan struct{}, 1)}
	restarting := false
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	svc, err := service.New(prg, &service.Config{
		Name:        "mailroomd",
		DisplayName: "mailroomd",
		Description: "Mailroom edge daemon: scanners to the parcel-tracking cloud",
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
	if err := svc.Run(); err != nil {
		log.Error("mailroomd failed", "err", err)
		return 1
	}
	if restarting {
		return reexec(log)
	}
	return 0
}
