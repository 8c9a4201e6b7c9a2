package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// recordingLink keeps what is published.
type recordingLink struct {
	mu  sync.Mutex
	pub []string // "suffix payload"
}

func (l *recordingLink) Publish(_ context.Context, suffix string, payload []byte, _ bool) error {
	l.mu.Lock()
	l.pub = append(l.pub, suffix+" "+string(payload))
	l.mu.Unlock()
	return nil
}
func (l *recordingLink) Republish(ctx context.Context, payloads [][]byte) (int, error) {
	for i, p := range payloads {
		if err := l.Publish(ctx, uplink.TopicEvents, p, false); err != nil {
			return i, err
		}
	}
	return len(payloads), nil
}
func (*recordingLink) State() uplink.LinkState { return uplink.LinkState{Connected: true} }

// reports are the directory reports published, in order.
func (l *recordingLink) reports(t *testing.T) []DirectoryReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []DirectoryReport
	for _, p := range l.pub {
		if b, ok := strings.CutPrefix(p, TopicDirectoryReported+" "); ok {
			var r DirectoryReport
			if err := json.Unmarshal([]byte(b), &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
	}
	return out
}

type pushRig struct {
	t     *testing.T
	f     *Fleet
	st    *store.Outbox
	link  *recordingLink
	clock *clock.Fake
	key   ed25519.PrivateKey
}

func newPushRig(t *testing.T) *pushRig {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clock.NewFake(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC))
	link := &recordingLink{}
	f, err := New(context.Background(), Options{Appliance: "mr-t", Keys: map[string]ed25519.PublicKey{"it": pub}, Link: link, Store: st,
		Directories: st, Health: health.NewTracker(clk, nil), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return &pushRig{t: t, f: f, st: st, link: link, clock: clk, key: priv}
}

// parts signs a directory file in n parts for version v, valid from
// issued for a day.
func (r *pushRig) parts(v int64, csv string, n int, issued time.Time) [][]byte {
	sum := sha256.Sum256([]byte(csv))
	size := (len(csv) + n - 1) / n
	var out [][]byte
	for i := range n {
		data := csv[min(i*size, len(csv)):min((i+1)*size, len(csv))]
		env, err := envelope.Sign(r.key, "it", envelope.Payload{V: 1, Kind: envelope.KindDirectory, Target: "mr-t", Version: v,
			Part: i + 1, Parts: n, SHA256: hex.EncodeToString(sum[:]), Directory: data, Issued: issued, Expires: issued.Add(24 * time.Hour)})
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, env)
	}
	return out
}

func (r *pushRig) send(parts [][]byte, retained bool) {
	for _, p := range parts { // each on the topic of the part it says it is
		r.f.directoryPart(context.Background(), fmt.Sprintf("mailroom/v1/mr-t/directory/desired/%d", peek(p).part), p, retained)
	}
}

func (r *pushRig) names() []string {
	es, _, err := r.st.Directory(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

func people(names ...string) string {
	b := "id,name,email,location,badges,delegates,active\n"
	for i, n := range names {
		b += fmt.Sprintf("P%d,%s,,,,,true\n", i, n)
	}
	return b
}

// tamper changes a part's signed bytes: its signature no longer holds.
func tamper(t *testing.T, part []byte) []byte {
	var env envelope.Envelope
	json.Unmarshal(part, &env)
	b, _ := base64.StdEncoding.DecodeString(env.Payload)
	b = []byte(strings.Replace(string(b), `"v":1`, `"v": 1`, 1))
	env.Payload = base64.StdEncoding.EncodeToString(b)
	out, _ := json.Marshal(env)
	return out
}

func TestDirectoryPushParts(t *testing.T) {
	r := newPushRig(t)
	now := r.clock.Now()
	last := func() DirectoryReport {
		reps := r.link.reports(t)
		if len(reps) == 0 {
			t.Fatal("no report")
		}
		return reps[len(reps)-1]
	}

	// Version 1 in three parts: applied whole, reported.
	v1 := r.parts(1, people("Anna Weiß", "Jürgen Müller", "Carla Vogt"), 3, now)
	r.send(v1[:2], false)
	if len(r.names()) != 0 || len(r.link.reports(t)) != 0 {
		t.Fatal("applied or reported before every part arrived")
	}
	r.send(v1[2:], false)
	if rep := last(); rep.Status != DirectoryApplied || rep.Version != 1 || rep.Applied != 1 || rep.People != 3 || len(r.names()) != 3 {
		t.Fatalf("v1: %+v %v", rep, r.names())
	}
	// Delivered again as retained messages at a connection: passed over.
	r.send(v1, true)
	if n := len(r.link.reports(t)); n != 1 {
		t.Fatalf("%d reports after the retained parts came again", n)
	}

	// Version 2 with part 2 tampered: nothing of it applied, reported with
	// the reason; its other parts are passed over.
	v2 := r.parts(2, people("Nur Eine"), 3, now)
	v2[1] = tamper(t, v2[1])
	r.send(v2, false)
	reps := r.link.reports(t)
	if len(reps) != 2 || reps[1].Status != DirectoryRejected || reps[1].Version != 2 || reps[1].Applied != 1 ||
		!strings.Contains(strings.Join(reps[1].Errors, ";"), "part 2: bad signature") || reps[1].SHA256 == "" || len(r.names()) != 3 {
		t.Fatalf("tampered v2: %+v %v", reps, r.names())
	}
	// Version 2 again, all valid: it was tried; ignored with the reason.
	r.send(r.parts(2, people("Nur Eine"), 3, now), false)
	if rep := last(); rep.Status != DirectoryIgnored || rep.Version != 2 || len(r.names()) != 3 {
		t.Fatalf("v2 again: %+v", rep)
	}

	// A bad part that claims a far version spoils nothing.
	far := r.parts(999, people("X Y"), 1, now)
	r.send([][]byte{tamper(t, far[0])}, false)
	if st, _ := r.st.DirectoryPush(context.Background()); st.Highest != 2 {
		t.Fatalf("a bad part marked version %d as tried", st.Highest)
	}
	if rep := last(); rep.Status != DirectoryRejected || rep.Highest != 2 || rep.Applied != 1 {
		t.Fatalf("the bad part's report says %+v: the operator would refuse versions the box never tried", rep)
	}

	// Version 3 expired (the box's clock ahead): refused once, not tried;
	// valid again, it is applied.
	old := r.parts(3, people("Dora Drei", "Emil Eins"), 2, now.Add(-48*time.Hour))
	r.send(old, false)
	if rep := last(); rep.Status != DirectoryRejected || rep.Version != 3 || !strings.Contains(rep.Errors[0], "expired") {
		t.Fatalf("expired v3: %+v", rep)
	}
	r.send(r.parts(3, people("Dora Drei", "Emil Eins"), 2, now), false)
	if rep := last(); rep.Status != DirectoryApplied || rep.Version != 3 || strings.Join(r.names(), ",") != "Dora Drei,Emil Eins" {
		t.Fatalf("v3: %+v %v", rep, r.names())
	}
	// The same version published again: current.
	r.send(r.parts(3, people("Dora Drei", "Emil Eins"), 2, now), false)
	if rep := last(); rep.Status != DirectoryCurrent || rep.Applied != 3 {
		t.Fatalf("v3 again: %+v", rep)
	}

	// Parts that disagree, and a file the import would refuse: rejected,
	// the directory stays.
	mixed := r.parts(4, people("A B", "C D"), 2, now)
	mixed[1] = r.parts(4, people("E F", "G H"), 2, now)[1]
	r.send(mixed, false)
	if rep := last(); rep.Status != DirectoryRejected || rep.Version != 4 || !strings.Contains(rep.Errors[0], "part 2 says") {
		t.Fatalf("mixed v4: %+v", rep)
	}
	r.send(r.parts(5, "id,name\nX,Y\n", 1, now), false)
	if rep := last(); rep.Status != DirectoryRejected || rep.Version != 5 || len(r.names()) != 2 {
		t.Fatalf("bad file v5: %+v", rep)
	}

	// A push whose parts stop arriving is dropped after ten minutes.
	r.send(r.parts(6, people("I J", "K L"), 2, now)[:1], false)
	r.clock.Advance(11 * time.Minute)
	r.f.dropStaleParts()
	if r.f.collecting != nil {
		t.Fatal("an incomplete push kept past ten minutes")
	}

	// The last report is the one published again at a connection.
	r.f.publishLastDirectoryReport(context.Background())
	if rep := last(); rep.Version != 5 || rep.Status != DirectoryRejected {
		t.Fatalf("republished %+v", rep)
	}
}

// At every connection the last report is published again, by Run.
func TestLastDirectoryReportAtConnect(t *testing.T) {
	r := newPushRig(t)
	r.send(r.parts(1, people("Anna Weiß", "Carla Vogt"), 2, r.clock.Now()), false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r.f.OnConnect()
	waitfor.True(t, 5*time.Second, "the last report published again", func() bool { return len(r.link.reports(t)) >= 2 })
	if rep := r.link.reports(t)[1]; rep.Version != 1 || rep.Status != DirectoryApplied {
		t.Fatalf("republished %+v", rep)
	}
}
