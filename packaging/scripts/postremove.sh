#!/bin/sh
# mailroomd postrm: configuration and buffer stay on remove; purge deletes
# them, and the service user.
set -e
if [ "$1" = "purge" ]; then
	rm -rf /var/lib/mailroomd /etc/mailroomd
	if getent passwd mailroomd >/dev/null; then
		deluser --system mailroomd >/dev/null 2>&1 || userdel mailroomd >/dev/null 2>&1 || true
	fi
	if getent group mailroomd >/dev/null; then
		delgroup --system mailroomd >/dev/null 2>&1 || groupdel mailroomd >/dev/null 2>&1 || true
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if command -v udevadm >/dev/null && [ -d /run/udev ]; then
	udevadm control --reload-rules >/dev/null 2>&1 || true
fi
exit 0
