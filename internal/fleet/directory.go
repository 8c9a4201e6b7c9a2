package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// TopicDirectoryDesired and TopicDirectoryReported carry the recipient
// directory IT pushes: part n of a push is retained on
// directory/desired/{n}.
const (
	TopicDirectoryDesired  = "directory/desired"
	TopicDirectoryReported = "directory/reported"
)

// Directories is the buffer as a directory push uses it.
type Directories interface {
	DirectoryPush(ctx context.Context) (store.DirectoryPush, error)
	ApplyDirectoryPush(ctx context.Context, version int64, entries []directory.Entry, report []byte) error
	RecordDirectoryPush(ctx context.Context, highest int64, report []byte) error
}

var _ Directories = (*store.Outbox)(nil)

// DirectoryReport is published, retained, on directory/reported.
type DirectoryReport struct {
	V       int    `json:"v"`
	Version int64  `json:"version"`
	SHA256  string `json:"sha256,omitempty"`
	// Status is applied, current, ignored or rejected.
	Status string   `json:"status"`
	Errors []string `json:"errors,omitempty"`
	// Applied is the pushed version in use afterwards (0: none).
	Applied int64 `json:"applied_version"`
	// People and Active count the entries of an applied directory.
	People int       `json:"people,omitempty"`
	Active int       `json:"active,omitempty"`
	TS     time.Time `json:"ts"`
}

// Statuses of a directory report.
const (
	DirectoryApplied  = "applied"
	DirectoryCurrent  = "current"
	DirectoryIgnored  = "ignored"
	DirectoryRejected = "rejected"
)

// dirPush is a pushed directory whose parts are arriving.
type dirPush struct {
	version int64
	parts   int
	sum     string
	keyID   string
	size    int
	data    map[int]string
}

// directoryPart takes one part of a pushed directory: verified alone,
// kept until every part of its version is there, then checked as a whole
// and applied in one transaction. A part that fails verification spoils
// the version being collected: nothing of it is applied, and IT pushes a
// new version.
func (f *Fleet) directoryPart(ctx context.Context, topic string, msg []byte, retained bool) {
	if len(msg) == 0 || f.opts.Directories == nil {
		return // a retained part deleted, or no directory on this box
	}
	n, _ := strconv.Atoi(topic[strings.LastIndexByte(topic, '/')+1:])
	st, err := f.opts.Directories.DirectoryPush(ctx)
	if err != nil {
		f.log.Error("directory push state cannot be read", "err", err)
		return
	}
	p, keyID, err := envelope.Payload{}, "", error(nil)
	if len(f.opts.Keys) == 0 {
		err = errors.New("remote instructions are disabled: no fleet.public_keys configured")
	} else {
		p, keyID, err = f.verifier.Open(msg, envelope.KindDirectory)
	}
	if err == nil && p.Part != n {
		err = fmt.Errorf("part %d of the push arrived on the topic of part %d", p.Part, n)
	}
	if err != nil {
		version := int64(0)
		if c := f.collecting; c != nil {
			version = c.version // the push being collected is spoilt
			f.collecting = nil
		}
		f.rejectDirectory(ctx, st, version, "", keyID, []string{fmt.Sprintf("part %d: %v", n, err)}, version)
		return
	}
	// A push that is no news is answered once, at its first part, when it
	// was just published; the parts of a version that was refused are
	// passed over (that was reported).
	answer := !retained && p.Part == 1
	switch {
	case p.Version == st.Applied && st.Applied > 0:
		if answer {
			f.reportDirectory(ctx, st.Highest, DirectoryReport{Version: p.Version, SHA256: p.SHA256, Status: DirectoryCurrent, Applied: st.Applied}, keyID, false)
		}
		return
	case p.Version <= st.Highest:
		if answer && p.Version < st.Highest {
			f.reportDirectory(ctx, st.Highest, DirectoryReport{Version: p.Version, SHA256: p.SHA256, Status: DirectoryIgnored, Applied: st.Applied,
				Errors: []string{fmt.Sprintf("version %d is not newer than version %d, the last one tried", p.Version, st.Highest)}}, keyID, false)
		}
		return
	}
	c := f.collecting
	switch {
	case c == nil || p.Version > c.version:
		c = &dirPush{version: p.Version, parts: p.Parts, sum: p.SHA256, keyID: keyID, data: map[int]string{}}
		f.collecting = c
	case p.Version < c.version:
		return // an older push, superseded by the one being collected
	}
	if p.Parts != c.parts || p.SHA256 != c.sum {
		f.collecting = nil
		f.rejectDirectory(ctx, st, c.version, c.sum, keyID, []string{fmt.Sprintf("part %d says %d parts and sha256 %s; part 1 to arrive said %d and %s",
			p.Part, p.Parts, p.SHA256, c.parts, c.sum)}, c.version)
		return
	}
	if _, dup := c.data[p.Part]; !dup {
		c.size += len(p.Directory)
		c.data[p.Part] = p.Directory
	}
	if c.size > envelope.MaxDirectorySize {
		f.collecting = nil
		f.rejectDirectory(ctx, st, c.version, c.sum, keyID, []string{fmt.Sprintf("the directory is larger than %d bytes", envelope.MaxDirectorySize)}, c.version)
		return
	}
	if len(c.data) < c.parts {
		f.log.Info("directory push part received", "version", c.version, "part", p.Part, "parts", c.parts, "received", len(c.data))
		return
	}
	f.collecting = nil
	f.applyDirectory(ctx, st, c)
}

// applyDirectory checks a complete push and applies it.
func (f *Fleet) applyDirectory(ctx context.Context, st store.DirectoryPush, c *dirPush) {
	var buf bytes.Buffer
	buf.Grow(c.size)
	for i := 1; i <= c.parts; i++ {
		buf.WriteString(c.data[i])
	}
	sum := sha256.Sum256(buf.Bytes())
	if hex.EncodeToString(sum[:]) != c.sum {
		f.rejectDirectory(ctx, st, c.version, c.sum, c.keyID, []string{"the parts put together do not have the sha256 the push names"}, c.version)
		return
	}
	entries, err := directory.ParseCSV(&buf)
	if err != nil {
		f.rejectDirectory(ctx, st, c.version, c.sum, c.keyID, strings.Split(err.Error(), "\n"), c.version)
		return
	}
	r := DirectoryReport{V: 1, Version: c.version, SHA256: c.sum, Status: DirectoryApplied, Applied: c.version, People: len(entries),
		TS: f.opts.Clock.Now().UTC()}
	for _, e := range entries {
		if e.Active {
			r.Active++
		}
	}
	b, _ := json.Marshal(r)
	if err := f.opts.Directories.ApplyDirectoryPush(ctx, c.version, entries, b); err != nil {
		f.log.Error("pushed directory not applied", "version", c.version, "err", err)
		f.rejectDirectory(ctx, st, c.version, c.sum, c.keyID, []string{"not applied: " + err.Error()}, 0)
		return
	}
	f.log.Info("pushed directory applied", "version", c.version, "people", r.People, "active", r.Active, "key_id", c.keyID)
	f.audit(ctx, &event.Audit{Action: "directory", KeyID: c.keyID, Version: c.version, Outcome: DirectoryApplied})
	f.publishDirectoryReport(ctx, b)
}

// rejectDirectory reports a push refused; tried (when not 0) is recorded
// as tried, so that it is not applied later.
func (f *Fleet) rejectDirectory(ctx context.Context, st store.DirectoryPush, version int64, sum, keyID string, errs []string, tried int64) {
	f.log.Warn("pushed directory rejected", "version", version, "key_id", keyID, "reason", strings.Join(errs, "; "))
	f.mu.Lock()
	f.rejected = f.opts.Clock.Now()
	f.mu.Unlock()
	f.opts.Health.Set(ConditionRejected, health.Warning, "rejected pushed directory: "+strings.Join(errs, "; "))
	f.reportDirectory(ctx, max(st.Highest, tried), DirectoryReport{Version: version, SHA256: sum, Status: DirectoryRejected, Errors: errs,
		Applied: st.Applied}, keyID, true)
}

// reportDirectory records, audits and publishes a report of a push not
// applied.
func (f *Fleet) reportDirectory(ctx context.Context, highest int64, r DirectoryReport, keyID string, record bool) {
	r.V, r.TS = 1, f.opts.Clock.Now().UTC()
	b, _ := json.Marshal(r)
	if record {
		if err := f.opts.Directories.RecordDirectoryPush(ctx, highest, b); err != nil {
			f.log.Error("directory push state not recorded", "err", err)
		}
	}
	f.audit(ctx, &event.Audit{Action: "directory", KeyID: keyID, Version: r.Version, Outcome: r.Status, Reason: strings.Join(r.Errors, "; ")})
	f.publishDirectoryReport(ctx, b)
}

func (f *Fleet) publishDirectoryReport(ctx context.Context, b []byte) {
	if err := f.opts.Link.Publish(ctx, TopicDirectoryReported, b, true); err != nil {
		f.log.Debug("directory report not published", "err", err)
	}
}

// publishLastDirectoryReport publishes the last report again, retained, at
// a connection.
func (f *Fleet) publishLastDirectoryReport(ctx context.Context) {
	if f.opts.Directories == nil {
		return
	}
	st, err := f.opts.Directories.DirectoryPush(ctx)
	if err != nil || len(st.Report) == 0 {
		return
	}
	f.publishDirectoryReport(ctx, st.Report)
}
