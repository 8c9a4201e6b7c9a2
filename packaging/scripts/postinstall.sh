#!/bin/sh
# mailroomd postinst: the service user, state directory, udev rules, unit.
set -e
if ! getent group mailroomd >/dev/null; then
	addgroup --system mailroomd >/dev/null
fi
if ! getent passwd mailroomd >/dev/null; then
	# The home must exist before adduser looks at it; its owner is set below.
	install -d -m 0700 /var/lib/mailroomd
	adduser --system --ingroup mailroomd --home /var/lib/mailroomd --no-create-home \
		--shell /usr/sbin/nologin --gecos "mailroomd" mailroomd >/dev/null
fi
# Serial ports on Debian belong to dialout.
if getent group dialout >/dev/null; then
	adduser mailroomd dialout >/dev/null 2>&1 || true
fi
install -d -o mailroomd -g mailroomd -m 0700 /var/lib/mailroomd
install -d -o mailroomd -g mailroomd -m 0700 /var/lib/mailroomd/update
install -d -o root -g mailroomd -m 0750 /etc/mailroomd
install -d -o mailroomd -g mailroomd -m 0700 /etc/mailroomd/tls
chown root:mailroomd /etc/mailroomd/mailroomd.yaml
chmod 0640 /etc/mailroomd/mailroomd.yaml
if command -v udevadm >/dev/null && [ -d /run/udev ]; then
	udevadm control --reload-rules >/dev/null 2>&1 || true
	udevadm trigger --subsystem-match=tty --subsystem-match=usb --subsystem-match=hidraw >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
	systemctl enable mailroomd.service mailroomd-update.path >/dev/null 2>&1 || true
	systemctl start mailroomd-update.path >/dev/null 2>&1 || true
	# Started by the administrator once the configuration and certificates
	# are in place; restarted on upgrade when it was running.
	if [ "$1" = "configure" ] && [ -n "$2" ]; then
		systemctl try-restart mailroomd.service >/dev/null 2>&1 || true
	fi
fi
exit 0
