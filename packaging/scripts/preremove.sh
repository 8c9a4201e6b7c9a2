#!/bin/sh
# mailroomd prerm: stop the service on removal (not on upgrade).
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
	systemctl stop mailroomd.service mailroomd-update.path >/dev/null 2>&1 || true
	systemctl disable mailroomd.service mailroomd-update.path >/dev/null 2>&1 || true
fi
exit 0
