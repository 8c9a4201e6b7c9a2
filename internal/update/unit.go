package update

import (
	"os"
	"strings"
)

// PackagePending is the marker whose appearance starts the package's
// mailroomd-update.service (mailroomd-update.path watches it).
const PackagePending = "/var/lib/mailroomd/update/pending"

// PackageUnitMarker is in the systemd unit the Debian package installs.
const PackageUnitMarker = "# installed by the mailroomd package"

// packageUnits are where the Debian package's unit lives.
var packageUnits = []string{"/usr/lib/systemd/system/mailroomd.service", "/lib/systemd/system/mailroomd.service"}

// PackagedUnit returns the path of the package's hardened systemd unit, or
// "" when the daemon was not installed from the package.
func PackagedUnit() string {
	for _, p := range packageUnits {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), PackageUnitMarker) {
			return p
		}
	}
	return ""
}
