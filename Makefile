# meshward — the one recipe book. CI calls `make test` (see .ci/run); README gives `make run` and `make test`.
# Every target installs what it needs on a fresh machine (rust targets, wasm-bindgen-test-runner).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO    ?= cargo
PROFILE  ?= wasm-release
WASM_TARGET := wasm32-wasip1
# Shipped filters (dist/<name>.wasm from package meshward-filter-<name>).
FILTERS  := trace-id rate-limit jwt-auth ab-routing metric-tag
# Test-only modules built alongside, not shipped (dist/<name>.wasm from package
# meshward-<name>-filter): noop is the benchmark baseline; abi-probe drives every
# meshward_core::abi entry point; callout proves the async shape (streams waiting on a
# root-context callout) in the integration tests.
TEST_MODULES := noop abi-probe callout
# Modules `make bench` measures (the probes have no meaningful single-request profile).
BENCH_MODULES := noop $(FILTERS)
# Size gate per shipped filter, in KiB (`make size` fails above it), set by measurement
# (BENCHMARKS.md has the history). Default, then per-filter overrides:
# trace-id 271 KiB measured: serde + serde_json config (+88 KB) and opt-level 3 (+37 KB, for half
# the instructions per request); rate-limit 396 KiB: also Envoy RouteMatch rules (their serde
# types ~57 KB, regex-lite for safe_regex ~55 KB); jwt-auth 877 KiB: jwt-simple's pure-Rust
# backends (two bignum libraries, ed25519, 12 verify paths) — too big, to be cut (issue #10);
WASM_BUDGET_KB ?= 280
BUDGET_KB_rate-limit := 400
BUDGET_KB_jwt-auth := 880
# ab-routing 438 KiB: its config's serde types (~103 KB), RouteMatch targeting with regex-lite
# (~55 KB), HMAC/SHA-256/SipHash.
BUDGET_KB_ab-routing := 440
budget_of = $(or $(BUDGET_KB_$(1)),$(WASM_BUDGET_KB))
# Tools we install live outside the clone so fresh clones on the same machine reuse them.
# (wasm-bindgen-cli is installed without --locked: its published lockfile names a webpki-roots
# release the registry no longer serves.)
TOOLS_DIR ?= $(HOME)/.cache/meshward/tools
# dist/ is what ships: cargo's output (which keeps the `name` section, for reading trap
# backtraces against it) run through `wasm-opt -Oz`, which also drops names and producers.
# `make dist WASM_OPT=0` skips that pass (debugging only; sizes then exceed the budget).
WASM_OPT ?= 1
WASM_OPT_FLAGS := -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-mutable-globals

WASM_OUT := $(or $(CARGO_TARGET_DIR),target)/$(WASM_TARGET)/$(PROFILE)
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3}' Cargo.lock)
WASM_BINDGEN_RUNNER  := $(TOOLS_DIR)/bin/wasm-bindgen-test-runner

pkg_of = $(if $(filter $(TEST_MODULES),$(1)),meshward-$(1)-filter,meshward-filter-$(1))
file_of = $(subst -,_,$(call pkg_of,$(1))).wasm

# The packages `make test` builds, lints and tests: every package in the workspace.
CHECKED_PACKAGES := meshward-core $(foreach f,$(FILTERS) $(TEST_MODULES),$(call pkg_of,$(f))) \
  meshward-host meshward-proxy meshward-integration-tests meshward-ratelimit-service

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- set-up -----------------------------------------------------------------------------------

.PHONY: targets
targets: ## install the rust wasm targets
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

.PHONY: wasm-opt
wasm-opt: ## install binaryen's wasm-opt (Debian package) when missing
	@command -v wasm-opt >/dev/null || { \
	  echo "installing binaryen (wasm-opt) with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q binaryen >/dev/null 2>&1 || { \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q binaryen >/dev/null; }; \
	  command -v wasm-opt >/dev/null || { echo "wasm-opt not found and binaryen could not be installed"; exit 1; }; }

.PHONY: redis-server
redis-server: ## install Debian's redis-server when missing (the rate limit service's Redis storage, started by tests)
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || { \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends redis-server >/dev/null; }; \
	  command -v redis-server >/dev/null || { echo "redis-server not found and could not be installed"; exit 1; }; }

.PHONY: libclang
libclang: ## install Debian's libclang-dev when missing (bindgen for RocksDB, which limitador's Redis storage drags in)
	@ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || { \
	  echo "installing libclang-dev with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends libclang-dev >/dev/null 2>&1 || { \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends libclang-dev >/dev/null; }; }

.PHONY: tools
tools: targets ## install wasm-bindgen-test-runner matching Cargo.lock
	@if [ "$$($(WASM_BINDGEN_RUNNER) --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into $(TOOLS_DIR)"; \
	  $(CARGO) install --quiet wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS_DIR); \
	fi

# --- build ------------------------------------------------------------------------------------

.PHONY: build
build: targets ## build every filter (and test module) for wasm32-wasip1
	$(CARGO) build --locked --target $(WASM_TARGET) --profile $(PROFILE) \
	  $(foreach f,$(FILTERS) $(TEST_MODULES),-p $(call pkg_of,$(f)))

.PHONY: dist
dist: build $(if $(filter 1,$(WASM_OPT)),wasm-opt) ## put each filter at dist/<name>.wasm (optimized, stripped) and print its size
	@mkdir -p dist
	@for pair in $(foreach f,$(FILTERS) $(TEST_MODULES),$(f):$(call file_of,$(f))); do \
	  f=$${pair%%:*}; src=$(WASM_OUT)/$${pair#*:}; \
	  if [ "$(WASM_OPT)" = 1 ]; then wasm-opt $(WASM_OPT_FLAGS) $$src -o dist/$$f.wasm; else cp $$src dist/$$f.wasm; fi; \
	done
	@$(MAKE) --no-print-directory size

.PHONY: size
size: ## print module sizes; fail when a shipped filter exceeds its budget (WASM_BUDGET_KB, BUDGET_KB_<filter>)
	@status=0; for pair in $(foreach f,$(FILTERS),$(f):$(call budget_of,$(f))) $(foreach f,$(TEST_MODULES),$(f):none); do \
	  f=$${pair%%:*}; budget=$${pair#*:}; \
	  [ -f dist/$$f.wasm ] || { echo "dist/$$f.wasm missing: run make dist"; exit 1; }; \
	  bytes=$$(stat -c %s dist/$$f.wasm); kb=$$(( (bytes + 1023) / 1024 )); \
	  printf '  dist/%-16s %8d bytes (%d KiB)\n' "$$f.wasm" $$bytes $$kb; \
	  if [ $$budget != none ] && [ $$kb -gt $$budget ]; then echo "  ^ over the $$budget KiB budget"; status=1; fi; \
	done; exit $$status

.PHONY: stats-tags
stats-tags: ## print the Envoy stats_tags / Istio extraStatTags YAML for a metric-tag config: make stats-tags CONFIG=file.json
	@test -n "$(CONFIG)" || { echo "usage: make stats-tags CONFIG=path/to/metric-tag-config.json"; exit 2; }
	@$(CARGO) run --locked -q -p meshward-filter-metric-tag --features schema --bin metric-tag-stats-tags -- $(CONFIG)

.PHONY: schemas
schemas: ## regenerate filters/<name>/config.schema.json (JSON Schema of each filter's config)
	@for f in $(FILTERS); do \
	  $(CARGO) run --locked -q -p $(call pkg_of,$$f) --features schema --bin $$f-schema > filters/$$f/config.schema.json.tmp; \
	  mv filters/$$f/config.schema.json.tmp filters/$$f/config.schema.json; \
	  echo "  filters/$$f/config.schema.json"; \
	done

# --- checks -----------------------------------------------------------------------------------

.PHONY: fmt
fmt: ## format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: targets ## rustfmt check + clippy for the native target and for wasm32-wasip1
	$(CARGO) fmt $(addprefix -p ,$(CHECKED_PACKAGES)) -- --check
	$(CARGO) clippy --locked $(addprefix -p ,$(CHECKED_PACKAGES)) --all-targets -- -D warnings
	$(CARGO) clippy --locked --target $(WASM_TARGET) -p meshward-core \
	  $(foreach f,$(FILTERS) $(TEST_MODULES),-p $(call pkg_of,$(f))) -- -D warnings

.PHONY: test-native
test-native: dist ## native unit tests of every checked package (see CHECKED_PACKAGES)
	$(CARGO) test --locked $(addprefix -p ,$(CHECKED_PACKAGES))

.PHONY: test-wasm
test-wasm: tools ## the core crate's tests on wasm32-unknown-unknown under Node (wasm-bindgen-test)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_BINDGEN_RUNNER) \
	  $(CARGO) test --locked -p meshward-core --target wasm32-unknown-unknown

.PHONY: test-redis
test-redis: redis-server libclang ## the rate limit service on Limitador's Redis storage (builds RocksDB: ~10 min on 2 cores)
	$(CARGO) test --locked -p meshward-ratelimit-service --features redis

.PHONY: test
test: lint test-native test-wasm ## every test: lint, native + integration + e2e tests, core tests under Node
	@echo "make test: all checks passed"

.PHONY: ci
ci: test ## what CI runs

# --- run and measure --------------------------------------------------------------------------

.PHONY: run
run: dist ## build the filters and serve them through the dev proxy on localhost (Ctrl-C stops)
	@# The dev profile on purpose: it shares wasmtime's build with `make test` (a release build of
	@# wasmtime alone takes ~20 minutes on 2 cores); the filters themselves are always optimized.
	$(CARGO) run --locked -q -p meshward-proxy -- demo --config envoy-local/envoy.yaml --wasm-dir dist

.PHONY: bench
# The request is pw-bench's bench profile, tests/fixtures/bench/request.json (see its README),
# with tests/fixtures/<filter>/bench.json as config and one extra request header from
# tests/fixtures/<filter>/bench.header (`name: value`) when present.
bench: dist ## wasm instructions (fuel) and hostcalls per callback and per request, memory per VM, for noop and every filter
	$(CARGO) build --locked -q -p meshward-host --bin pw-bench
	@for f in $(BENCH_MODULES); do \
	  set --; \
	  [ -f tests/fixtures/$$f/bench.json ] && set -- "$$@" --config tests/fixtures/$$f/bench.json; \
	  [ -f tests/fixtures/$$f/bench.header ] && set -- "$$@" --header "$$(cat tests/fixtures/$$f/bench.header)"; \
	  $(or $(CARGO_TARGET_DIR),target)/debug/pw-bench dist/$$f.wasm --name $$f "$$@"; \
	done

# --- for users with Docker ------------------------------------------------------------------------

.PHONY: envoy-up
envoy-up: dist ## start Envoy + demo upstreams with docker compose (needs a Docker engine)
	docker compose -f envoy-local/docker-compose.yaml up -d

.PHONY: envoy-down
envoy-down: ## stop the docker compose setup
	docker compose -f envoy-local/docker-compose.yaml down

.PHONY: images
images: dist ## build one Istio-compatible OCI image per filter (needs Docker)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
	  echo "make images needs a running Docker engine; none found. The images are FROM scratch with one"; \
	  echo "layer holding plugin.wasm (istio/Dockerfile); any OCI builder can build them from dist/."; exit 1; }
	@for f in $(FILTERS); do docker build -f istio/Dockerfile --build-arg FILTER=$$f -t meshward/$$f:latest . ; done

.PHONY: clean
clean: ## remove build output
	$(CARGO) clean
	rm -rf dist
