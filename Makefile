# mailroomd. `make run` runs the demo; `make test` runs every test.
SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DEMO    := var/demo

.PHONY: all build run broker deps test test-race fuzz bench vet clean

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
	  'require_certificate true' 'use_identity_as_username true' 'user root' > $(DEMO)/mosquitto.conf
	mosquitto -c $(DEMO)/mosquitto.conf -v

## deps: install what the tests need (Debian/Ubuntu), only when missing
deps:
	@need=(); \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto); \
	command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients); \
	command -v chromium >/dev/null || need+=(chromium); \
	if [ $${#need[@]} -gt 0 ]; then \
	  echo "installing: $${need[*]}"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq "$${need[@]}" >/dev/null; \
	fi
	@# The packaged service would hold port 1883 and is not what the tests use.
	@if command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; then systemctl stop mosquitto || true; fi

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

## test: every test, with real mosquitto, PTYs, SQLite files and the real binary,
## and a short run of every fuzz target
test: deps vet
	$(GO) test -count=1 -timeout 9m ./...
	$(MAKE) fuzz FUZZTIME=3s

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
	$(GO) test -run XXX -fuzz FuzzOpen -fuzztime $(FUZZTIME) ./internal/envelope

## bench: ingest, drain, latency and memory benchmarks (see docs/benchmarks.md)
bench: deps
	$(GO) test -run XXX -bench . -benchmem ./drivers/... ./internal/barcode
	$(GO) test -run XXX -bench PageTTFB -benchmem ./internal/web
	$(GO) test -run XXX -bench Stream20 -benchtime 1x ./internal/web
	$(GO) test -run XXX -bench . -benchtime 1x -timeout 30m ./internal/store ./internal/uplink ./daemon

clean:
	rm -rf bin var
