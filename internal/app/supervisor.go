package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/remoteconfig"
	"github.com/mailroomd/mailroomd/internal/update"
)

// ErrStopped is returned by Start on a Supervisor that was stopped.
var ErrStopped = errors.New("supervisor stopped")

// Supervisor owns the daemon's life. One goroutine, its loop, handles one
// message at a time: stop, apply a desired config, and the periodic check
// that confirms or rolls back a config in trial and records that the
// running version is healthy. So a stop that arrives during a config
// switch waits for it and then stops cleanly; at most one trial runs, and
// a newer desired config replaces an older one that has not started yet.
//
// Nothing else starts, stops or swaps an App. The fleet link hands desired
// configs over without waiting for the loop (the loop waits for the fleet
// link when it stops an App).
type Supervisor struct {
	opts   Options
	local  *config.Config
	remote *remoteconfig.Manager
	log    *slog.Logger

	mu      sync.Mutex
	pending *desired      // the newest desired config the loop has not taken
	wake    chan struct{} // a desired config is pending
	stopReq chan chan error
	calls   chan func()   // run on the loop, for inspection
	done    chan struct{} // closed when the loop has returned
	failed  chan struct{} // closed when no config could be kept running
	failErr error         // set before failed is closed
	started bool

	// Owned by the loop (and by Start before the loop runs).
	app     *App
	running bool // app is started and not stopped
	cfg     *config.Config
	version int64 // the remote config version running; 0: the local file
	trial   *trial
	healthy bool // the running App's health record was written
	// handedOff is set when an App stopped with a hand-over and no App has
	// connected since: the retained status still says online.
	handedOff bool
}

// desired is a verified desired config waiting for the loop.
type desired struct {
	version int64
	keyID   string
	yaml    []byte
	cfg     *config.Config
	// superseded are older desired configs this one replaced before the
	// loop took them: audited as ignored, never tried.
	superseded []desired
}

// trial is the config being proved: kept when the uplink connects with it
// before deadline, rolled back otherwise.
type trial struct {
	version  int64
	within   time.Duration
	deadline time.Time // monotonic: a wall clock jump does not end a trial
}

// NewSupervisor returns the supervisor of a daemon whose own config file is
// local. The remote config state lives beside the buffer.
func NewSupervisor(local *config.Config, opts Options) (*Supervisor, error) {
	opts.defaults()
	remote, err := remoteconfig.Open(filepath.Dir(local.Storage.Path), local, opts.Clock.Now)
	if err != nil {
		return nil, err
	}
	return &Supervisor{opts: opts, local: local, remote: remote, log: opts.Log,
		wake: make(chan struct{}, 1), stopReq: make(chan chan error), calls: make(chan func()), done: make(chan struct{}), failed: make(chan struct{})}, nil
}

// Start builds and starts the App of the config in effect (the remote one
// in use, or the local file), falling back to the previous config when the
// remote one does not start, then runs the loop. It returns once the App
// runs.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrStopped
	}
	s.started = true
	s.mu.Unlock()

	cfg, inTrial, err := s.remote.Effective()
	s.version = s.remote.InUse()
	if err != nil {
		s.log.Error("remote config unreadable; running the local config", "err", err)
		cfg, inTrial, s.version = s.local, false, 0
	}
	app, err := newApp(ctx, cfg, s.opts, s.hooks())
	if err != nil && cfg != s.local {
		s.log.Error("remote config does not start; rolling back", "err", err)
		var rerr error
		if cfg, _, rerr = s.remote.Rollback("the config did not start: " + err.Error()); rerr != nil {
			s.log.Error("rollback not recorded", "err", rerr)
		}
		inTrial, s.version = false, s.remote.InUse()
		app, err = newApp(ctx, cfg, s.opts, s.hooks())
	}
	if err != nil {
		close(s.done)
		return err
	}
	s.app, s.cfg, s.running = app, cfg, true
	app.Start()
	if inTrial {
		s.beginTrial(cfg)
	}
	go s.loop()
	return nil
}

// Stop stops the running App (after a config switch under way has
// finished) and the loop. It returns the App's stop error, or why the
// supervisor failed. It may be called more than once.
func (s *Supervisor) Stop() error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case s.stopReq <- reply:
		return <-reply
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.failErr
	}
}

// call runs fn on the loop, between two messages, and returns when it
// has run; false when the loop has stopped.
func (s *Supervisor) call(fn func()) bool {
	ran := make(chan struct{})
	select {
	case s.calls <- func() { fn(); close(ran) }:
		<-ran
		return true
	case <-s.done:
		return false
	}
}

// Failed is closed when the supervisor could not keep any config running:
// the daemon should stop and let its service manager start it again.
func (s *Supervisor) Failed() <-chan struct{} { return s.failed }

func (s *Supervisor) hooks() hooks {
	return hooks{onConfig: s.onConfig, reported: s.remote.LastReport, configTried: s.remote.Tried, configInUse: s.remote.InUse,
		configRefused: func(version int64, reason string) []byte {
			b, _ := json.Marshal(s.remote.Refuse(version, reason))
			return b
		}, configVersion: s.version}
}

// loop handles one message at a time until Stop.
func (s *Supervisor) loop() {
	t := time.NewTicker(s.opts.TrialPoll)
	defer t.Stop()
	for {
		select {
		case reply := <-s.stopReq:
			var err error
			s.trial = nil
			if s.running {
				err = s.app.Stop(false)
				s.running = false
				if s.handedOff && !s.app.uplink.Connected() {
					s.sayOffline("shutdown")
				}
			} else {
				s.mu.Lock()
				err = s.failErr
				s.mu.Unlock()
			}
			close(s.done)
			reply <- err
			return
		case <-s.wake:
			s.applyPending()
		case fn := <-s.calls:
			fn()
		case <-t.C:
			s.check()
		}
	}
}

// onConfig runs on the fleet link's goroutine with a verified desired
// config. It checks the config and leaves it for the loop; it never waits
// for the loop, which may itself be waiting for the fleet link to stop.
func (s *Supervisor) onConfig(_ context.Context, p envelope.Payload, keyID string) fleet.ConfigOutcome {
	yaml := []byte(p.Config)
	cfg, r := s.remote.Consider(p.Version, keyID, yaml)
	out := fleet.ConfigOutcome{Status: r.Status, Errors: r.Errors, Report: mustJSON(r)}
	if cfg == nil {
		return out
	}
	d := &desired{version: p.Version, keyID: keyID, yaml: yaml, cfg: cfg}
	s.mu.Lock()
	if old := s.pending; old != nil {
		switch {
		case old.version > d.version:
			s.mu.Unlock()
			r := s.remote.Superseded(d.version, yaml, old.version)
			return fleet.ConfigOutcome{Status: r.Status, Errors: r.Errors, Report: mustJSON(r)}
		case old.version < d.version:
			d.superseded = append(old.superseded, desired{version: old.version, keyID: old.keyID, yaml: old.yaml})
		default:
			d.superseded = old.superseded // the same version delivered again
		}
	}
	s.pending = d
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.log.Info("remote config accepted; switching", "version", p.Version, "key_id", keyID)
	return out
}

// applyPending switches to the newest desired config.
func (s *Supervisor) applyPending() {
	s.mu.Lock()
	d := s.pending
	s.pending = nil
	s.mu.Unlock()
	if d == nil {
		return
	}
	ctx := context.Background()
	for _, old := range d.superseded {
		r := s.remote.Superseded(old.version, old.yaml, d.version)
		s.log.Info("remote config superseded before it was applied", "version", old.version, "by", d.version)
		if s.running {
			s.app.Fleet().Audit(ctx, &event.Audit{Action: "config", Version: old.version, KeyID: old.keyID,
				Outcome: r.Status, Reason: r.Errors[0]})
		}
	}
	if !s.running {
		return // failed earlier: nothing to switch
	}
	if t := s.trial; t != nil {
		reason := fmt.Sprintf("replaced by version %d while in trial", d.version)
		s.log.Info("remote config in trial replaced", "version", t.version, "by", d.version)
		s.app.Fleet().Audit(ctx, &event.Audit{Action: "config", Version: t.version, Outcome: "superseded", Reason: reason})
	}
	if err := s.remote.Begin(d.version, d.keyID, d.yaml); err != nil {
		reason := "cannot keep the config: " + err.Error()
		s.log.Error("remote config not applied", "version", d.version, "err", err)
		r := remoteconfig.Report{V: 1, Version: d.version, Hash: remoteconfig.Hash(d.yaml), Status: remoteconfig.StatusRejected,
			Errors: []string{reason}, Applied: s.remote.InUse(), TS: s.opts.Clock.Now().UTC()}
		s.app.Fleet().Audit(ctx, &event.Audit{Action: "config", Version: d.version, KeyID: d.keyID, Outcome: r.Status, Reason: reason})
		s.app.Fleet().PublishReport(ctx, mustJSON(r))
		return
	}
	s.log.Info("switching to remote config", "version", d.version, "key_id", d.keyID)
	if err := s.switchTo(d.cfg); err != nil {
		s.rollback("the config did not start: " + err.Error())
		return
	}
	s.beginTrial(d.cfg)
}

// switchTo runs cfg: only the front is rebuilt when nothing else changed,
// otherwise the App is replaced (its uplink hands over without saying
// offline). On error the App of the previous config may be stopped
// (s.running false); rollback starts it again.
func (s *Supervisor) switchTo(cfg *config.Config) error {
	s.version = s.remote.InUse()
	if s.app.FrontOnly(cfg) {
		if err := s.app.Reconfigure(cfg); err != nil {
			return err
		}
		s.cfg = cfg
		s.app.uplink.SetConfigVersion(s.version)
		return nil
	}
	if err := s.app.Stop(true); err != nil {
		s.log.Error("stop for a config switch", "err", err)
	}
	s.running, s.handedOff = false, true
	app, err := newApp(context.Background(), cfg, s.opts, s.hooks())
	if err != nil {
		return err
	}
	s.app, s.cfg, s.running, s.healthy = app, cfg, true, false
	app.Start()
	return nil
}

// beginTrial starts the trial of the config just switched to; it replaces
// any trial under way.
func (s *Supervisor) beginTrial(cfg *config.Config) {
	d := cfg.Fleet.ConfigTrial.D()
	s.trial = &trial{version: s.remote.InUse(), within: d, deadline: time.Now().Add(d)}
}

// rollback returns to the config before the trial and says why.
func (s *Supervisor) rollback(reason string) {
	ctx := context.Background()
	s.trial = nil
	s.log.Error("remote config rolled back", "reason", reason)
	prev, r, err := s.remote.Rollback(reason)
	if err != nil {
		s.log.Error("rollback not recorded; a restart may try the failed config again", "err", err)
	}
	s.version = s.remote.InUse()
	switch {
	case s.running && s.app.FrontOnly(prev):
		if err := s.app.Reconfigure(prev); err != nil {
			s.log.Error("the previous devices do not start either", "err", err)
		}
		s.cfg = prev
		s.app.uplink.SetConfigVersion(s.version)
	default:
		if s.running {
			if err := s.app.Stop(true); err != nil {
				s.log.Error("stop for a rollback", "err", err)
			}
			s.running, s.handedOff = false, true
		}
		app, err := newApp(ctx, prev, s.opts, s.hooks())
		if err != nil {
			s.fail(fmt.Errorf("cannot start the previous config after a rollback: %w", err))
			return
		}
		s.app, s.cfg, s.running, s.healthy = app, prev, true, false
		app.Start()
	}
	// The report is retained: published now if the link is up, and on
	// every connection (Reported) otherwise.
	s.app.Fleet().Audit(ctx, &event.Audit{Action: "config", Version: r.Version, Outcome: r.Status, Reason: reason})
	s.app.Fleet().PublishReport(ctx, mustJSON(r))
}

// fail records that no config runs and tells the daemon.
func (s *Supervisor) fail(err error) {
	s.log.Error("no configuration can run; stopping for the service manager", "err", err)
	if s.handedOff {
		s.sayOffline("failed")
	}
	s.mu.Lock()
	if s.failErr == nil {
		s.failErr = err
		close(s.failed)
	}
	s.mu.Unlock()
}

// check confirms or rolls back the config in trial, and records once per
// App, when its uplink first connects, that this version is healthy (an
// updater waits for it) and reports the last update's outcome.
func (s *Supervisor) check() {
	if !s.running {
		return
	}
	up := s.app.LinkUp()
	if up {
		s.handedOff = false
	}
	if t := s.trial; t != nil {
		switch {
		case up && t.version == s.remote.InUse():
			s.trial = nil
			r, err := s.remote.Confirm()
			if err != nil {
				s.log.Error("remote config applied, but not recorded as such; a restart continues its trial", "err", err)
			}
			s.log.Info("remote config applied", "version", r.Version)
			ctx := context.Background()
			s.app.Fleet().Audit(ctx, &event.Audit{Action: "config", Version: r.Version, Outcome: r.Status})
			s.app.Fleet().PublishReport(ctx, mustJSON(r))
		case time.Now().After(t.deadline):
			s.rollback(fmt.Sprintf("the uplink did not reconnect within %s", t.within))
			return
		}
	}
	if !s.healthy && up {
		s.healthy = true
		if err := update.WriteHealth(s.app.stateDir(), s.opts.Version, s.opts.Clock.Now()); err != nil {
			s.log.Warn("health record not written", "err", err)
		}
		s.app.goBackground("update report", func(ctx context.Context) error { s.app.reportUpdate(ctx); return nil })
	}
}

// sayOffline publishes the offline status that a hand-over left unsaid, with
// the uplink settings of the last App.
func (s *Supervisor) sayOffline(reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.app.uplink.SayOffline(ctx, reason); err != nil {
		s.log.Warn("offline status not published; the broker still shows this box online", "err", err)
	}
	s.handedOff = false
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
