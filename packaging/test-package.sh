#!/usr/bin/env bash
# Builds the Debian packages and the Windows executable, signs them with
# throwaway keys, and checks what IT would check: package contents,
# permissions and scripts, an install from /usr/bin, a clean remove and
# purge, the Windows signature (and that a tampered copy fails), and the
# signed checksums; and runs the scanner's end-to-end tests against the
# arm64 binary under QEMU user emulation. Run by `make package-test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
ok() { echo "package-test: ok: $*"; }
# says PATTERN COMMAND...: whether COMMAND's output matches PATTERN. The
# output is read whole first: piping into grep -q would let grep exit at the
# first match and kill the writer with SIGPIPE, which pipefail reports as
# a failure.
says() { local pattern=$1 out; shift; out=$("$@") || return 1; grep -q -- "$pattern" <<<"$out"; }
SUDO=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || fail "installing the package needs root or sudo"
	SUDO=sudo
fi
for tool in dpkg-deb dpkg file osslsigncode openssl aarch64-linux-gnu-gcc x86_64-w64-mingw32-gcc qemu-aarch64-static; do
	command -v "$tool" >/dev/null || fail "$tool is missing (make deps installs it)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
GO=${GO:-go}
$GO build -o "$work/mailroomd" ./daemon
"$work/mailroomd" fleet keygen --out "$work/release" --id release >/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/win.key" -out "$work/win.pem" -days 2 \
	-subj "/CN=mailroomd test code signing" -addext "extendedKeyUsage=codeSigning" 2>/dev/null

rm -rf dist
make --no-print-directory package RELEASE_PUB="$work/release/fleet.pub"
make --no-print-directory sign RELEASE_PUB="$work/release/fleet.pub" RELEASE_KEY="$work/release/fleet.key" \
	WIN_CERT="$work/win.pem" WIN_KEY="$work/win.key"
commit=$(git rev-parse --short HEAD)

for arch in amd64 arm64; do
	deb=$(ls dist/mailroomd_*_"$arch".deb)
	says "Architecture: $arch" dpkg-deb -I "$deb" || fail "$deb: wrong architecture"
	listing=$(dpkg-deb -c "$deb")
	for want in '-rwxr-xr-x root/root .* ./usr/bin/mailroomd$' \
		'-rw-r----- root/root .* ./etc/mailroomd/mailroomd.yaml$' \
		'-rw-r--r-- root/root .* ./usr/lib/systemd/system/mailroomd.service$' \
		'-rw-r--r-- root/root .* ./usr/lib/udev/rules.d/60-mailroomd.rules$' \
		'-rw-r--r-- root/root .* ./usr/lib/systemd/system/mailroomd-update.path$' \
		'-rw-r--r-- root/root .* ./usr/lib/systemd/system/mailroomd-update.service$' \
		'-rw-r--r-- root/root .* ./usr/share/mailroomd/release.pub$' \
		'./usr/share/doc/mailroomd/docs/mqtt-api.md$'; do
		grep -Eq -- "$want" <<<"$listing" || fail "$deb lacks $want"
	done
	dpkg-deb -e "$deb" "$work/control-$arch"
	for s in postinst prerm postrm; do
		[ -x "$work/control-$arch/$s" ] || fail "$deb: no executable $s"
	done
	grep -qx /etc/mailroomd/mailroomd.yaml "$work/control-$arch/conffiles" || fail "$deb: the config is not a conffile"
	dpkg-deb -x "$deb" "$work/root-$arch"
	want=$([ "$arch" = arm64 ] && echo "ARM aarch64" || echo "x86-64")
	says "$want" file "$work/root-$arch/usr/bin/mailroomd" || fail "$deb: the binary is not $want"
	cmp -s "$work/root-$arch/usr/share/mailroomd/release.pub" "$work/release/fleet.pub" || fail "$deb: not the release key"
	ok "$deb: files, modes, conffile, scripts, architecture"
done

# The arm64 build runs: the end-to-end tests of the scanner path (a PTY
# scanner, the SQLite buffer, mosquitto over mutual TLS; one of them with 24
# SIGKILLs, the other with a SIGTERM) run against the packaged arm64 binary
# under QEMU user emulation, invoked directly with Debian's arm64 libraries.
arm=$PWD/bin/linux-arm64/mailroomd
says "ARM aarch64" file "$arm" || fail "$arm is not an arm64 binary"
cmp -s "$arm" "$work/root-arm64/usr/bin/mailroomd" || fail "$arm is not the binary in the arm64 package"
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || fail "the arm64 C library is missing (make deps installs libc6-dev-arm64-cross)"
arm_tests=(TestScansFromSerialScannerReachBroker TestCrashLosesNothingCommitted)
qemu="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
started=$SECONDS
out=$(MAILROOMD_TEST_BINARY="$arm" MAILROOMD_TEST_EXEC="$qemu" MAILROOMD_TEST_GOARCH=arm64 MAILROOMD_TEST_TIME_SCALE=3 \
	$GO test -count=1 -v -timeout 15m -run "^($(IFS='|'; echo "${arm_tests[*]}"))\$" ./daemon 2>&1) || {
	echo "$out" >&2
	fail "the end-to-end tests failed against the arm64 binary under QEMU"
}
grep -qF "binary under test: $arm, GOARCH arm64, run by \"$qemu\": mailroomd " <<<"$out" || { echo "$out" >&2; fail "the tests did not run $arm under $qemu"; }
grep -q "(commit $commit)" <<<"$out" || { echo "$out" >&2; fail "the arm64 binary does not name commit $commit"; }
for t in "${arm_tests[@]}"; do
	grep -q -- "^--- PASS: $t (" <<<"$out" || { echo "$out" >&2; fail "$t did not pass against the arm64 binary (skipped or not run)"; }
done
ok "arm64 binary under $qemu: ${arm_tests[*]} passed ($((SECONDS - started)) s)"

# Install, run from /usr/bin, remove, purge.
deb=$(ls dist/mailroomd_*_amd64.deb)
$SUDO dpkg --purge mailroomd >/dev/null 2>&1 || true
$SUDO dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
says "$commit" /usr/bin/mailroomd version || fail "mailroomd version does not name commit $commit"
getent passwd mailroomd >/dev/null || fail "no mailroomd user"
[ "$(stat -c '%a %U:%G' /etc/mailroomd/mailroomd.yaml)" = "640 root:mailroomd" ] || fail "config mode $(stat -c '%a %U:%G' /etc/mailroomd/mailroomd.yaml)"
[ "$(stat -c '%a %U:%G' /var/lib/mailroomd)" = "700 mailroomd:mailroomd" ] || fail "state dir mode $(stat -c '%a %U:%G' /var/lib/mailroomd)"
cat >"$work/check.yaml" <<YAML
version: 1
appliance: {id: mr-package-test}
storage: {path: $work/buffer.db}
uplink: {brokers: ["mqtt://127.0.0.1:1883"], insecure: true}
devices: [{name: sim, kind: scanner, driver: sim}]
YAML
/usr/bin/mailroomd check-config --config "$work/check.yaml" >/dev/null || fail "check-config from /usr/bin"
says "already installed its hardened unit" /usr/bin/mailroomd install --config "$work/check.yaml" || fail "install did not defer to the package's unit"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (make deps installs it)"
out=$(systemd-analyze verify /usr/lib/systemd/system/mailroomd.service /usr/lib/systemd/system/mailroomd-update.service /usr/lib/systemd/system/mailroomd-update.path 2>&1) || fail "systemd-analyze verify: $out"
ok "systemd-analyze verify"
$SUDO dpkg -r mailroomd >/dev/null || fail "dpkg -r"
[ -f /etc/mailroomd/mailroomd.yaml ] && [ -d /var/lib/mailroomd ] || fail "remove deleted the config or the buffer"
[ ! -e /usr/bin/mailroomd ] || fail "remove left the binary"
$SUDO dpkg --purge mailroomd >/dev/null || fail "dpkg --purge"
[ ! -e /etc/mailroomd ] && [ ! -e /var/lib/mailroomd ] || fail "purge left config or buffer"
! getent passwd mailroomd >/dev/null || fail "purge left the user"
ok "install, run, remove (config and buffer kept), purge"

# The Windows executable is signed; a tampered copy is not accepted.
osslsigncode verify -CAfile "$work/win.pem" -in dist/mailroomd.exe >/dev/null 2>&1 || fail "osslsigncode verify"
cp dist/mailroomd.exe "$work/tampered.exe"
printf '\x90\x90\x90\x90' | dd of="$work/tampered.exe" bs=1 seek=4096 conv=notrunc 2>/dev/null
! osslsigncode verify -CAfile "$work/win.pem" -in "$work/tampered.exe" >/dev/null 2>&1 || fail "a tampered executable verified"
ok "windows executable signed; tampered copy rejected"

# Every artifact is in the signed checksums; tampering is caught.
"$work/mailroomd" release verify --pub "$work/release/fleet.pub" dist/*.deb dist/mailroomd.exe >/dev/null || fail "release verify"
mkdir "$work/copy" && cp dist/* "$work/copy/"
printf 'x' >>"$work/copy/$(basename "$deb")"
! "$work/mailroomd" release verify --pub "$work/release/fleet.pub" "$work/copy/$(basename "$deb")" >/dev/null 2>&1 || fail "a tampered package verified"
ok "signed checksums"
