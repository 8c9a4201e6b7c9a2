package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
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
	// Highest is the highest version tried: a push must be newer.
	Highest int64 `json:"highest_tried"`
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
	last    time.Time // when the last part arrived
}

// claim is what an envelope says of itself before its signature is
// checked: only used to pass over parts of pushes that are done.
type claim struct {
	version     int64
	part, parts int
	sum         string
	ok          bool
}

// peek reads the version and part an envelope claims, unverified.
func peek(msg []byte) claim {
	var env envelope.Envelope
	if json.Unmarshal(msg, &env) != nil {
		return claim{}
	}
	b, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return claim{}
	}
	var p envelope.Payload
	if json.Unmarshal(b, &p) != nil || p.Kind != envelope.KindDirectory || p.Version <= 0 {
		return claim{}
	}
	return claim{version: p.Version, part: p.Part, parts: p.Parts, sum: p.SHA256, ok: true}
}

// staleParts is how long a push whose parts stopped arriving is kept.
const staleParts = 10 * time.Minute

// directoryPart takes one part of a pushed directory: verified alone,
// kept until every part of its version is there, then checked as a whole
// and applied in one transaction.
//
// Parts of a version already tried (applied, refused, or older) are
// passed over before they are verified: they are the retained parts of a
// push that is done. A part that fails verification spoils the push being
// collected when it belongs to it: nothing of it is applied, and IT pushes
// a new version. A part outside its validity window (the box's clock, or
// an expired push) is refused without spoiling anything, so that it is
// tried again at the next connection.
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
	cl := peek(msg)
	c := f.collecting
	if cl.ok && cl.version <= st.Highest {
		if retained || cl.part != 1 || n != 1 {
			return
		}
		// A push of a version tried already, just published: answered once.
		p, keyID, err := f.openPart(msg, n)
		if err != nil || p.Version != cl.version {
			return
		}
		r := DirectoryReport{Version: p.Version, SHA256: p.SHA256, Status: DirectoryIgnored, Applied: st.Applied,
			Errors: []string{fmt.Sprintf("version %d is not newer than version %d, the last one tried", p.Version, st.Highest)}}
		if p.Version == st.Applied {
			r.Status, r.Errors = DirectoryCurrent, nil
		}
		f.reportDirectory(ctx, st.Highest, r, keyID)
		return
	}
	if cl.ok && c != nil && cl.version < c.version {
		return // an older push, superseded by the one being collected
	}
	p, keyID, err := f.openPart(msg, n)
	if err != nil {
		version, sum := cl.version, cl.sum
		if errors.Is(err, envelope.ErrExpired) || errors.Is(err, envelope.ErrNotYetValid) {
			if version != 0 && version == f.outOfWindow {
				return // said once for this version
			}
			f.outOfWindow = version
			f.rejectDirectory(ctx, st, version, sum, keyID, []string{fmt.Sprintf("part %d: %v", n, err)}, 0)
			return
		}
		// A bad part of the push being collected spoils it. One that claims
		// another version spoils nothing: an unverified claim must not mark
		// a version (say, a far future one) as tried.
		tried := int64(0)
		if c != nil && (version == 0 || version == c.version) {
			version, sum, tried = c.version, c.sum, c.version
			f.collecting = nil
		}
		f.rejectDirectory(ctx, st, version, sum, keyID, []string{fmt.Sprintf("part %d: %v", n, err)}, tried)
		return
	}
	now := f.opts.Clock.Now()
	switch {
	case c == nil || p.Version > c.version:
		c = &dirPush{version: p.Version, parts: p.Parts, sum: p.SHA256, keyID: keyID, data: map[int]string{}}
		f.collecting = c
	case p.Version < c.version:
		return
	}
	c.last = now
	if p.Parts != c.parts || p.SHA256 != c.sum {
		f.collecting = nil
		f.rejectDirectory(ctx, st, c.version, c.sum, keyID, []string{fmt.Sprintf("part %d says %d parts and sha256 %s; the first part to arrive said %d and %s",
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
		f.log.Debug("directory push part received", "version", c.version, "part", p.Part, "parts", c.parts, "received", len(c.data))
		return
	}
	f.collecting = nil
	f.applyDirectory(ctx, st, c)
}

// openPart verifies a part's envelope and that it came on its own topic.
func (f *Fleet) openPart(msg []byte, n int) (envelope.Payload, string, error) {
	if len(f.opts.Keys) == 0 {
		return envelope.Payload{}, "", errors.New("remote instructions are disabled: no fleet.public_keys configured")
	}
	p, keyID, err := f.verifier.Open(msg, envelope.KindDirectory)
	if err == nil && p.Part != n {
		err = fmt.Errorf("part %d of the push arrived on the topic of part %d", p.Part, n)
	}
	return p, keyID, err
}

// dropStaleParts forgets a push whose parts stopped arriving.
func (f *Fleet) dropStaleParts() {
	if c := f.collecting; c != nil && f.opts.Clock.Now().Sub(c.last) > staleParts {
		f.log.Warn("pushed directory incomplete: its parts stopped arriving; dropped", "version", c.version, "received", len(c.data), "parts", c.parts)
		f.collecting = nil
	}
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
	r := DirectoryReport{V: 1, Version: c.version, SHA256: c.sum, Status: DirectoryApplied, Applied: c.version, Highest: c.version,
		People: len(entries), TS: f.opts.Clock.Now().UTC()}
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
	f.outOfWindow = 0
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
		Applied: st.Applied}, keyID)
}

// reportDirectory records, audits and publishes a report of a push not
// applied: the last report is the one published again at connections.
func (f *Fleet) reportDirectory(ctx context.Context, highest int64, r DirectoryReport, keyID string) {
	r.V, r.TS, r.Highest = 1, f.opts.Clock.Now().UTC(), highest
	b, _ := json.Marshal(r)
	if err := f.opts.Directories.RecordDirectoryPush(ctx, highest, b); err != nil {
		f.log.Error("directory push state not recorded", "err", err)
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
