package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// schemaKeys lists every key path of t: "uplink.keepalive", "devices[].baud".
func schemaKeys(t reflect.Type, prefix string, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		path := join(prefix, tag)
		out[path] = true
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
			path += "[]"
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshalerType) {
			schemaKeys(ft, path, out)
		}
	}
}

// documentKeys lists every key path written in a YAML document, list items
// merged.
func documentKeys(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			documentKeys(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			path := join(prefix, n.Content[i].Value)
			out[path] = true
			documentKeys(n.Content[i+1], path, out)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			documentKeys(c, prefix+"[]", out)
		}
	}
}

// TestReferenceConfigShowsEveryKey keeps configs/mailroomd.yaml, the
// commented reference, complete: its keys are exactly the schema's, and it
// is valid but for the files it names, which do not exist here.
func TestReferenceConfigShowsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../configs/mailroomd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	want, got := map[string]bool{}, map[string]bool{}
	schemaKeys(reflect.TypeOf(Config{}), "", want)
	documentKeys(&doc, "", got)
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("configs/mailroomd.yaml lacks %v and has unknown %v", missing, extra)
	}
	_, err = Parse("../../configs/mailroomd.yaml", b)
	var errs Errors
	if err != nil && !errors.As(err, &errs) {
		t.Fatal(err)
	}
	for _, p := range errs {
		if !strings.Contains(p.Msg, "no such file or directory") {
			t.Errorf("reference config: %s", p)
		}
	}
}

// The uplink's certificate and key in the reference config live where the
// packaged service may write (ReadWritePaths= of packaging/mailroomd.service),
// since renew-cert and install-cert write beside them.
func TestReferenceConfigKeepsCertificatesWritable(t *testing.T) {
	unit, err := os.ReadFile("../../packaging/mailroomd.service")
	if err != nil {
		t.Fatal(err)
	}
	var writable []string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "ReadWritePaths="); ok {
			for _, p := range strings.Fields(v) {
				writable = append(writable, strings.TrimPrefix(p, "-"))
			}
		}
	}
	b, err := os.ReadFile("../../configs/mailroomd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"cert_file", "key_file"} {
		m := regexp.MustCompile(`(?m)^  ` + key + `: (\S+)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("uplink %s not found", key)
		}
		if dir := filepath.Dir(string(m[1])); !slices.Contains(writable, dir) {
			t.Errorf("uplink.%s %s: its directory is not one the service may write (%v)", key, m[1], writable)
		}
	}
}
