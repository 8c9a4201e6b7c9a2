package app

import (
	"os"
	"regexp"
	"testing"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
	"github.com/mailroomd/mailroomd/drivers/reopen"
	"github.com/mailroomd/mailroomd/drivers/scale/serialscale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// TestEveryAlertHasAHeadline checks that the status page has a headline in
// German and English for every condition key the daemon raises, so that
// no alert reaches a German-speaking clerk in English alone.
func TestEveryAlertHasAHeadline(t *testing.T) {
	js, err := os.ReadFile("../web/assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	type headline struct {
		re  *regexp.Regexp
		key string
	}
	var table []headline
	for _, m := range regexp.MustCompile(`\[/(\^[^/]+\$)/, "(alert\w+)"\]`).FindAllSubmatch(js, -1) {
		table = append(table, headline{regexp.MustCompile(string(m[1])), string(m[2])})
	}
	if len(table) == 0 {
		t.Fatal("no alert headlines found in app.js")
	}
	keys := []string{
		uplink.ConditionDisconnected, uplink.ConditionUnsubscribed, ConditionStoreRecovered, ConditionLoginLockout, intake.ConditionRefusing,
		fleet.ConditionPending, fleet.ConditionOldest, fleet.ConditionDisk, fleet.ConditionCert,
		fleet.ConditionProbeFailed, fleet.ConditionProbeSlow, fleet.ConditionRejected,
		fleet.ConditionClockUnsynced, fleet.ConditionClockJumped,
		reopen.DisconnectedKey("dock-scale"), scanner.ConditionKey("dock-scanner"),
		serialscale.SilentKey("dock-scale"), zpl.StatusKey("dock-printer"), station.StuckKey("dock-1"),
	}
	for _, k := range keys {
		var found string
		for _, h := range table {
			if h.re.MatchString(k) {
				found = h.key
				break
			}
		}
		if found == "" {
			t.Errorf("condition %q has no headline on the status page", k)
			continue
		}
		// Both languages name it: the key appears once per language table.
		if n := len(regexp.MustCompile(`\b`+found+`: "`).FindAll(js, -1)); n != 2 {
			t.Errorf("headline %s of %q is in %d language tables, want 2", found, k, n)
		}
	}
}

// TestEveryDriverHasAConstructor keeps the daemon's device constructors in
// step with the drivers the configuration accepts.
func TestEveryDriverHasAConstructor(t *testing.T) {
	names := map[string]bool{}
	for _, spec := range config.Drivers {
		names[spec.Name] = true
		if deviceConstructors[spec.Name] == nil {
			t.Errorf("driver %s is accepted by the configuration but has no constructor", spec.Name)
		}
	}
	for name := range deviceConstructors {
		if !names[name] {
			t.Errorf("constructor %s has no driver spec in config.Drivers", name)
		}
	}
}
