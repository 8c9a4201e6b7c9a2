# mailroomd. `make run` runs the demo; `make test` runs every test.
SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DEMO    := var/demo

# The Go release every target builds and tests with: the newest patch release
# that govulncheck finds clean. The go command takes it from the module proxy
# when the machine's own Go is another release (this overrides a machine's
# GOTOOLCHAIN=local; set GO_TOOLCHAIN to try another).
GO_TOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN := $(GO_TOOLCHAIN)

.PHONY: chaos all build run broker deps vm-kernel test prebuild tests race test-race fuzz bench vet lint staticcheck vulncheck clean cross package sign package-test

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/mailroomd ./daemon

## run: the daemon on configs/demo.yaml with a simulated scanner
run: build
	./bin/mailroomd dev-certs --dir $(DEMO)/certs --client-id mr-demo-01
	./bin/mailroomd run --config configs/demo.yaml

## broker: a local mosquitto with the demo certificates (mutual TLS, port 8883)
broker: build deps
	./bin/mailroomd dev-certs --dir $(DEMO)/certs --client-id mr-demo-01
	printf '%s\n' 'listener 8883 127.0.0.1' 'cafile $(DEMO)/certs/ca.pem' \
	  'certfile $(DEMO)/certs/server.pem' 'keyfile $(DEMO)/certs/server.key' \
	  'require_certificate true' 'use_identity_as_username true' 'use_username_as_clientid true' 'user root' > $(DEMO)/mosquitto.conf
	mosquitto -c $(DEMO)/mosquitto.conf -v

## deps: install what the tests need (Debian/Ubuntu), only when missing
deps:
	@need=(); \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto); \
	command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients); \
	command -v chromium >/dev/null || need+=(chromium); \
	command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross); \
	command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static); \
	command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64); \
	command -v osslsigncode >/dev/null || need+=(osslsigncode); \
	command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server); \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server); \
	command -v dpkg-deb >/dev/null || need+=(dpkg); \
	command -v systemd-analyze >/dev/null || need+=(systemd); \
	command -v openssl >/dev/null || need+=(openssl); \
	command -v file >/dev/null || need+=(file); \
	command -v fusermount3 >/dev/null || need+=(fuse3); \
	command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86); \
	ldd /bin/busybox 2>&1 | grep -Eq 'not a dynamic executable|statically linked' || need+=(busybox-static); \
	command -v xz >/dev/null || need+=(xz-utils); \
	command -v zstd >/dev/null || need+=(zstd); \
	command -v tesseract >/dev/null || need+=(tesseract-ocr); \
	ls /usr/share/tesseract-ocr/*/tessdata/deu.traineddata >/dev/null 2>&1 || need+=(tesseract-ocr-deu); \
	ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata >/dev/null 2>&1 || need+=(tesseract-ocr-eng); \
	if [ $${#need[@]} -gt 0 ]; then \
	  echo "installing: $${need[*]}"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq "$${need[@]}" >/dev/null; \
	fi
	@$(MAKE) --no-print-directory vm-kernel
	@# The packaged service would hold port 1883 and is not what the tests use.
	@if command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; then systemctl stop mosquitto || true; fi
	@for s in nats-server rabbitmq-server; do if command -v systemctl >/dev/null && systemctl is-active -q $$s 2>/dev/null; then systemctl stop $$s || true; fi; done

## vm-kernel: Debian's current kernel (the package linux-image-amd64 depends
## on) in var/vm/PACKAGE: its vmlinuz and media modules, for the camera test
## that runs the binary in a QEMU machine with the kernel's vivid video driver
VM_DIR := $(CURDIR)/var/vm
vm-kernel:
	@set -e; \
	pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $$2; exit}'; }; \
	p=$$(pkg); \
	if [ -z "$$p" ]; then SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get update -qq; p=$$(pkg); fi; \
	[ -n "$$p" ] || { echo "vm-kernel: apt knows no linux-image-amd64 (Debian's kernel package, which the camera test boots)"; exit 1; }; \
	if ! ls $(VM_DIR)/$$p/boot/vmlinuz-* >/dev/null 2>&1; then \
	  echo "vm-kernel: fetching $$p"; \
	  rm -rf $(VM_DIR)/$$p.tmp; mkdir -p $(VM_DIR)/$$p.tmp/deb; \
	  fetch() { (cd $(VM_DIR)/$$p.tmp/deb && apt-get download -q $$p >download.log 2>&1); }; \
	  if ! fetch; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get update -qq; \
	    rm -rf $(VM_DIR)/$$p.tmp; p=$$(pkg); mkdir -p $(VM_DIR)/$$p.tmp/deb; \
	    fetch || { cat $(VM_DIR)/$$p.tmp/deb/download.log; echo "vm-kernel: cannot download $$p"; exit 1; }; \
	  fi; \
	  dpkg-deb --fsys-tarfile $(VM_DIR)/$$p.tmp/deb/*.deb | tar -x -C $(VM_DIR)/$$p.tmp --wildcards '*/boot/vmlinuz-*' '*/modules/*/kernel/drivers/media/*'; \
	  rm -rf $(VM_DIR)/$$p.tmp/deb; \
	  mv $(VM_DIR)/$$p.tmp $(VM_DIR)/$$p; \
	fi; \
	unpack() { \
	  [ -n "$$(find $(VM_DIR)/$$p -name "*.ko.$$1" -print -quit)" ] || return 0; \
	  command -v $$2 >/dev/null || { echo "vm-kernel: the kernel's modules are compressed with $$2, which is not installed (make deps installs it)"; exit 1; }; \
	  find $(VM_DIR)/$$p -name "*.ko.$$1" -exec $$2 -d -q $$3 {} +; \
	}; \
	unpack xz xz; unpack zst zstd --rm; unpack gz gzip; \
	echo $$p > $(VM_DIR)/current.tmp && mv $(VM_DIR)/current.tmp $(VM_DIR)/current; \
	find $(VM_DIR) -mindepth 1 -maxdepth 1 -type d ! -name "$$p" -exec rm -rf {} +

vet:
	$(GO) vet ./...
	@out=$$($$($(GO) env GOROOT)/bin/gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

## lint: go vet, gofmt, staticcheck and govulncheck; any finding fails
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0
lint: vet staticcheck vulncheck

staticcheck:
	$(GO) run $(STATICCHECK) ./...

## vulncheck: govulncheck against the Go vulnerability database. The database
## comes from the module proxy (golang.org/x/vulndb at VULNDB_VERSION) and is
## indexed locally by its own tool, so the check needs no other host than the
## proxy. The version is pinned so that a build's verdict does not change
## under it; `make vulncheck VULNDB_VERSION=latest` checks against the newest,
## and raising the pin is a commit of its own.
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
VULNDB_DIR     := $(CURDIR)/var/vulndb
vulncheck:
	@set -e; \
	v=$$($(GO) list -m -f '{{.Version}}' golang.org/x/vulndb@$(VULNDB_VERSION)); \
	db=$(VULNDB_DIR)/$$v; \
	if [ ! -f $$db/index/db.json ]; then \
	  echo "vulncheck: indexing golang.org/x/vulndb@$$v"; \
	  $(GO) mod download golang.org/x/vulndb@$$v; \
	  rm -rf $$db.tmp; \
	  $(GO) run golang.org/x/vulndb/cmd/indexdb@$$v -vulns $$($(GO) env GOMODCACHE)/golang.org/x/vulndb@$$v/data/osv -out $$db.tmp; \
	  mv $$db.tmp $$db; \
	fi; \
	echo "$(GO) run $(GOVULNCHECK) -db file://$$db ./..."; \
	$(GO) run $(GOVULNCHECK) -db file://$$db ./...

## test: every check and test, in stages. The build cache is filled once
## (SQLite's C code compiles once, not per stage); then the static checks,
## the tests and a short pass of every fuzz target run in parallel.
test: deps
	$(MAKE) --no-print-directory prebuild
	$(MAKE) --no-print-directory -j3 -Otarget lint tests fuzz FUZZTIME=3s
	$(MAKE) --no-print-directory race

prebuild:
	$(GO) build ./...
	$(GO) test -count=1 -exec /bin/true ./... >/dev/null

## tests: the Go tests alone (real mosquitto, PTYs, SQLite files, the real binary)
tests:
	$(GO) test -count=1 -timeout 9m ./...

## race: the lifecycle tests under the race detector: the supervisor's, and
## the real binary's (built with -race) SIGTERM-during-switch and alert tests
race:
	$(GO) test -race -count=1 -timeout 9m ./internal/app
	MAILROOMD_RACE=1 $(GO) test -race -count=1 -timeout 9m -run 'TestSIGTERMDuringConfigApply|TestAlertsAndStatusAcrossKillAndConfigSwitches' ./daemon

test-race: deps
	$(GO) test -race -count=1 -timeout 15m ./...

## fuzz: a run of every fuzz target (FUZZTIME each)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run XXX -fuzz FuzzEventJSON -fuzztime $(FUZZTIME) ./internal/event
	$(GO) test -run XXX -fuzz FuzzFramer -fuzztime $(FUZZTIME) ./drivers/scanner/serialline
	$(GO) test -run XXX -fuzz FuzzDecoders -fuzztime $(FUZZTIME) ./drivers/hid
	$(GO) test -run XXX -fuzz FuzzProtocols -fuzztime $(FUZZTIME) ./drivers/scale/serialscale
	$(GO) test -run XXX -fuzz FuzzParseHostStatus -fuzztime $(FUZZTIME) ./drivers/printer/zpl
	$(GO) test -run XXX -fuzz FuzzClassify -fuzztime $(FUZZTIME) ./internal/barcode
	$(GO) test -run XXX -fuzz FuzzParseMessage -fuzztime $(FUZZTIME) ./internal/barcode
	$(GO) test -run XXX -fuzz FuzzParseCSV -fuzztime $(FUZZTIME) ./internal/directory
	$(GO) test -run XXX -fuzz FuzzOpen -fuzztime $(FUZZTIME) ./internal/envelope
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime $(FUZZTIME) ./drivers/hotplug
	$(GO) test -run XXX -fuzz FuzzManualEntry -fuzztime $(FUZZTIME) ./internal/web
	$(GO) test -run XXX -fuzz FuzzCheckSignature -fuzztime $(FUZZTIME) ./internal/web
	$(GO) test -run XXX -fuzz FuzzFrameToJPEG -fuzztime $(FUZZTIME) ./drivers/camera/v4l2
	$(GO) test -run XXX -fuzz FuzzParsePending -fuzztime $(FUZZTIME) ./internal/update

## chaos: the chaos suite with many faults (a short run is part of make test),
## the power cuts of TestPowerCut among them, then one summary table of both
CHAOS_ROUNDS ?= 200
POWERCUT_ROUNDS ?= 200
chaos: deps
	@mkdir -p var
	set -o pipefail; MAILROOMD_CHAOS_ROUNDS=$(CHAOS_ROUNDS) MAILROOMD_POWERCUT_ROUNDS=$(POWERCUT_ROUNDS) \
	  $(GO) test -count=1 -timeout 90m -run 'TestChaos|TestDiskFull|TestClockJumps|TestPowerCut' -v ./daemon | tee var/chaos.log
	@awk '/^ +(SIGKILL daemon|broker killed and restarted|link cut without TCP close|cut between PUBLISH and PUBACK|power cut [a-z ]+) +[0-9]+$$/ { \
	    n = $$NF; $$NF = ""; sub(/^ +/, ""); sub(/ +$$/, ""); rows[++k] = $$0; faults[$$0] = n } \
	  /events committed [0-9]+, forwarded/ { match($$0, /events committed [0-9]+/); cc = substr($$0, RSTART+17, RLENGTH-17); \
	    match($$0, /lost [0-9]+/); cl = substr($$0, RSTART+5, RLENGTH-5) } \
	  /power cuts: events committed/ { match($$0, /committed [0-9]+/); pc = substr($$0, RSTART+10, RLENGTH-10); \
	    match($$0, /lost [0-9]+/); pl = substr($$0, RSTART+5, RLENGTH-5); match($$0, /gaps [0-9]+/); pg = substr($$0, RSTART+5, RLENGTH-5) } \
	  END { printf "\n%-36s %8s\n", "fault", "count"; for (i = 1; i <= k; i++) printf "%-36s %8d\n", rows[i], faults[rows[i]]; \
	    printf "%-36s %8d\n%-36s %8d\n%-36s %8d\n", "events committed", cc + pc, "events lost", cl + pl, "gaps", pg; \
	    if (cc == "" || pc == "") { print "chaos: a summary line is missing from var/chaos.log"; exit 1 } }' var/chaos.log

## cross: linux/amd64, linux/arm64 and windows/amd64 binaries, with cgo
## (Debian's cross compilers), version and commit stamped
NFPM       ?= $(shell $(GO) env GOPATH)/bin/nfpm
NFPM_VER   := v2.45.2
DEB_VER    ?= $(shell v=$$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//'); echo "$${v:-0.1.0}+git$(COMMIT)")
RELEASE_PUB ?= packaging/release.pub
cross:
	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux-amd64/mailroomd ./daemon
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux-arm64/mailroomd ./daemon
	CGO_ENABLED=1 GOOS=windows GOARCH=amd64 CC=x86_64-w64-mingw32-gcc $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/windows-amd64/mailroomd.exe ./daemon

$(NFPM):
	cd /tmp && GOFLAGS= $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VER)

## package: Debian packages for amd64 and arm64 in dist/
package: cross $(NFPM)
	@mkdir -p dist
	@if [ "$(RELEASE_PUB)" = packaging/release.pub ]; then echo "note: packaging the development release key (set RELEASE_PUB for a release)"; fi
	cp $(RELEASE_PUB) bin/release.pub
	for arch in amd64 arm64; do \
	  sed -e 's#./packaging/release.pub#./bin/release.pub#' -e 's#[$$]{BINARY}#./bin/linux-'$$arch'/mailroomd#' packaging/nfpm.yaml > bin/nfpm-$$arch.yaml; \
	  ARCH=$$arch VERSION=$(DEB_VER) \
	    $(NFPM) package --config bin/nfpm-$$arch.yaml --packager deb --target dist/ || exit 1; \
	done

## sign: sign the Windows executable (osslsigncode; WIN_CERT/WIN_KEY, or a
## test certificate) and list every artifact in a signed SHA256SUMS
## (RELEASE_KEY, the Ed25519 release key)
WIN_CERT ?=
WIN_KEY  ?=
RELEASE_KEY ?=
sign: package
	@test -n "$(RELEASE_KEY)" || { echo "set RELEASE_KEY to the release signing key"; exit 2; }
	@test -n "$(WIN_CERT)" || { echo "set WIN_CERT and WIN_KEY to the code signing certificate and key"; exit 2; }
	osslsigncode sign -certs $(WIN_CERT) -key $(WIN_KEY) -n mailroomd -h sha256 \
	  -in bin/windows-amd64/mailroomd.exe -out dist/mailroomd.exe
	./bin/linux-amd64/mailroomd release sign --key $(RELEASE_KEY) --out dist dist/*.deb dist/mailroomd.exe

## package-test: build, sign and inspect the packages, install and purge the amd64 one, and run the arm64 binary's end-to-end tests under QEMU
package-test: deps
	packaging/test-package.sh

## bench: ingest, drain, latency and memory benchmarks (see docs/benchmarks.md)
bench: deps
	$(GO) test -run XXX -bench . -benchmem ./drivers/... ./internal/barcode
	$(GO) test -run XXX -bench PageTTFB -benchmem ./internal/web
	$(GO) test -run XXX -bench Stream20 -benchtime 1x ./internal/web
	$(GO) test -run XXX -bench 'Fleet$$' -benchtime 1x -timeout 20m ./internal/uplink
	$(GO) test -run XXX -bench FleetCluster -benchtime 1x -timeout 30m ./internal/uplink
	$(GO) test -run XXX -bench DiskSync -benchtime 5000x ./internal/store
	$(GO) test -run XXX -bench 'Ingest$$|Drain$$|ScanToPuback|BacklogRSS' -benchtime 1x -timeout 30m ./internal/store ./internal/uplink ./daemon
	$(GO) test -run XXX -bench CommitWhileDraining -benchtime 1x -count 3 ./internal/store
	# commit latency varies with the disk from minute to minute: five runs
	$(GO) test -run XXX -bench IngestOffered -benchtime 1x -count 5 ./internal/store
	$(GO) test -run XXX -bench Parcels -benchtime 1x -count 3 -timeout 20m ./internal/store
	$(GO) test -run XXX -bench Directory -benchtime 1x -count 3 ./internal/directory
	$(GO) test -run XXX -bench PhotoUpload -benchtime 1x -timeout 20m ./internal/uplink
	$(GO) test -run XXX -bench FullLoad -benchtime 1x -timeout 40m ./daemon
	$(GO) test -run XXX -bench ReadLabel -benchtime 3x ./internal/ocr
	TMPDIR=/dev/shm $(GO) test -run XXX -bench IngestOffered -benchtime 1x -count 3 ./internal/store

clean:
	rm -rf dist
	rm -rf bin var
