package update

import (
	"strings"
	"testing"
	"time"
)

func TestPendingMarker(t *testing.T) {
	p := Pending{Artifact: "/var/lib/mailroomd/update/staged/mailroomd_2.0.0_arm64.deb", RequestID: "req-7\nx", From: "1.9.0", Timeout: 5 * time.Minute}
	got, err := ParsePending(p.Marshal())
	if err != nil || got != p {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, p)
	}
	for _, tc := range []struct {
		in   string
		want Pending
		err  string
	}{
		{in: "/srv/mailroomd_2.deb\n", want: Pending{Artifact: "/srv/mailroomd_2.deb"}},
		{in: `{"artifact":"/a.deb"}`, want: Pending{Artifact: "/a.deb"}},
		{in: `{"artifact":"/a.deb","later":1}`, want: Pending{Artifact: "/a.deb"}},
		{in: "", err: "empty"},
		{in: "/a.deb\n/b.deb\n", err: "more than one line"},
		{in: `{"artifact":""}`, err: "no artifact"},
		{in: `{"artifact":"/a.deb","timeout_ns":-1}`, err: "negative timeout"},
		{in: `{"artifact":"/a.deb"} {}`, err: "data after"},
		{in: `{"artifact":`, err: "unexpected EOF"},
		{in: "/srv/a\xff.deb", err: "not UTF-8"},
	} {
		got, err := ParsePending([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParsePending(f *testing.F) {
	f.Add([]byte(`{"artifact":"/a.deb","request_id":"r","from":"1","timeout_ns":1}`))
	f.Add([]byte("/a.deb\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePending(b)
		if err != nil {
			return
		}
		if p.Artifact == "" || p.Timeout < 0 {
			t.Fatalf("accepted %+v", p)
		}
		if again, err := ParsePending(p.Marshal()); err != nil || again != p {
			t.Fatalf("round trip of %+v: %+v %v", p, again, err)
		}
	})
}
