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
# types ~57 KB, regex-lite for safe_regex ~55 KB); jwt-auth 772 KiB: rsa (crypto-bigint), p256,
# p384, ed25519-dalek, hmac (p384 alone is the largest part), plus remote JWKS (shared-data lease
# and key set, root tick/callout glue, config types) and requirement_map: ~53 KiB (issue #10);
WASM_BUDGET_KB ?= 280
BUDGET_KB_rate-limit := 400
BUDGET_KB_jwt-auth := 815
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

.PHONY: openssl
openssl: ## install the openssl command line (Debian package) when missing: jwt-auth's PEM tests generate keys with it
	@command -v openssl >/dev/null || { \
	  echo "installing openssl with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends openssl >/dev/null 2>&1 || { \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends openssl >/dev/null; }; \
	  command -v openssl >/dev/null || { echo "openssl not found and could not be installed"; exit 1; }; }

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
test-native: dist openssl ## native unit tests of every checked package (see CHECKED_PACKAGES)
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

# --- robustness ------------------------------------------------------------------------------

# Coverage-guided fuzzing of the filters' pure logic with cargo-fuzz (libFuzzer), crate
# tests/fuzz (outside the workspace, its own Cargo.lock; targets and input formats in its
# README). cargo-fuzz needs nightly `-Z` flags: RUSTC_BOOTSTRAP=1 enables them on the stable
# toolchain. No sanitizer: the code under test is safe Rust (no `unsafe` outside the wasm-only
# ABI module), so ASan would only slow it; debug assertions (overflow checks) are on, so an
# arithmetic overflow is a crash. What libFuzzer adds to the corpus stays under the target dir;
# the committed seeds (tests/fuzz/seeds, from the test tables) are only read; a crash is written
# to tests/fuzz/artifacts/<target>/ (ignored by git) — replay it with
# `make fuzz FUZZ_TARGETS=<target> FUZZ_ARGS=tests/fuzz/artifacts/<target>/crash-…`.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= config requests jwt trace_context net cookie bucket_table header_map
FUZZ_ARGS ?=
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := RUSTC_BOOTSTRAP=1 $(TOOLS_DIR)/bin/cargo-fuzz
FUZZ_FLAGS := --fuzz-dir tests/fuzz --sanitizer none --debug-assertions \
  --target-dir $(or $(CARGO_TARGET_DIR),target)/fuzz
FUZZ_CORPUS := $(or $(CARGO_TARGET_DIR),target)/fuzz/corpus

.PHONY: fuzz-tools
fuzz-tools: ## install cargo-fuzz into the tools directory
	@if [ "$$($(TOOLS_DIR)/bin/cargo-fuzz --version 2>/dev/null | awk '{print $$2}')" != "$(CARGO_FUZZ_VERSION)" ]; then \
	  echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) into $(TOOLS_DIR)"; \
	  $(CARGO) install --quiet --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root $(TOOLS_DIR); \
	fi

.PHONY: fuzz
fuzz: fuzz-tools ## fuzz the pure logic (cargo fuzz): each of the 8 targets FUZZ_SECONDS (default 30 s: ~4 min + build)
	$(CARGO_FUZZ) build $(FUZZ_FLAGS)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_CORPUS)/$$t tests/fuzz/artifacts/$$t; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  if [ -n "$(FUZZ_ARGS)" ]; then set -- $(FUZZ_ARGS); else set -- $(FUZZ_CORPUS)/$$t tests/fuzz/seeds/$$t; fi; \
	  log=$(FUZZ_CORPUS)/../$$t.log; \
	  if $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t "$$@" -- -max_total_time=$(FUZZ_SECONDS) \
	      -artifact_prefix=tests/fuzz/artifacts/$$t/ -print_final_stats=1 > $$log 2>&1; then \
	    grep -E '^(Done|stat::number_of_executed_units)' $$log || true; \
	  else \
	    grep -E -A12 'panicked|==[0-9]+==|SUMMARY|Test unit written' $$log | head -40; \
	    echo "fuzz $$t: crash (full log: $$log; input in tests/fuzz/artifacts/$$t/)"; exit 1; \
	  fi; \
	done

# The wasm-level fuzzing (tests/integration/tests/filters/fuzz_smoke.rs) for longer than the
# 10,000 requests per filter and test that `make test` runs: FUZZ_WASM_SECONDS per test (or
# FUZZ_WASM_REQUESTS), with a new seed each run (printed; FUZZ_WASM_SEED=<n> replays one).
FUZZ_WASM_SECONDS ?= 120
FUZZ_WASM_REQUESTS ?=
FUZZ_WASM_SEED ?=

.PHONY: fuzz-wasm
fuzz-wasm: dist ## fuzz the real .wasm filters, the callout shape and the shipped chain: FUZZ_WASM_SECONDS per test (default 120; 4 tests)
	@seed=$(or $(FUZZ_WASM_SEED),$$(date +%s%N)); echo "fuzz-wasm seed $$seed (replay: make fuzz-wasm FUZZ_WASM_SEED=$$seed)"; \
	MESHWARD_FUZZ_SEED=$$seed $(if $(FUZZ_WASM_REQUESTS),MESHWARD_FUZZ_REQUESTS=$(FUZZ_WASM_REQUESTS),MESHWARD_FUZZ_SECONDS=$(FUZZ_WASM_SECONDS)) \
	  $(CARGO) test --locked -p meshward-integration-tests --test filters fuzz_smoke -- --nocapture

# --- run and measure --------------------------------------------------------------------------

.PHONY: run
run: dist ## build the filters and serve them through the dev proxy on localhost (Ctrl-C stops)
	@# The dev profile on purpose: it shares wasmtime's build with `make test` (a release build of
	@# wasmtime alone takes ~20 minutes on 2 cores); the filters themselves are always optimized.
	$(CARGO) run --locked -q -p meshward-proxy -- demo --config envoy-local/envoy.yaml --wasm-dir dist

# `make bench` is the publishing tool (issue #15): tests/proxy/src/bin/meshward-bench.rs runs
# every filter, the whole chain and the no-op baseline with envoy-local/envoy.yaml's configs and the
# bench profile request (tests/fixtures/bench/), prints each figure against
# tests/fixtures/bench/budgets.json, and rewrites BENCHMARKS.md's generated sections (between
# `<!-- bench:NAME:begin/end -->`, prose kept) and BENCHMARKS-chart.svg. Over-budget figures are
# listed, not fatal (the file publishes misses with their reason); BENCH_STRICT=1 makes them fail.
# The host runs in the dev profile: fuel counts do not depend on it, and a release build of
# wasmtime alone takes ~20 minutes on 2 cores.
BENCH_BIN := $(or $(CARGO_TARGET_DIR),target)/debug/meshward-bench
BENCH_SOAK_QUICK ?= 10000
BENCH_SOAK ?= 1000000
BENCH_E2E_SECONDS ?= 10
BENCH_STRICT ?= 0
BENCH_COMMON := --raw-dir $(WASM_OUT) $(if $(filter 1,$(BENCH_STRICT)),--strict)

.PHONY: wrk
wrk: ## install wrk (Debian package) when missing: make bench's load generator
	@command -v wrk >/dev/null || { \
	  echo "installing wrk with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk >/dev/null 2>&1 || { \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk >/dev/null; }; \
	  command -v wrk >/dev/null || { echo "wrk not found and could not be installed"; exit 1; }; }

.PHONY: bench-tool
bench-tool:
	$(CARGO) build --locked -q -p meshward-proxy --bin meshward-bench

.PHONY: bench
bench: dist wrk bench-tool ## measure every filter + chain vs noop against the budgets; rewrite BENCHMARKS.md and its chart
	$(BENCH_BIN) $(BENCH_COMMON) --soak $(BENCH_SOAK_QUICK) --soak-section soak-quick \
	  --e2e-seconds $(BENCH_E2E_SECONDS) --write BENCHMARKS.md --chart BENCHMARKS-chart.svg

.PHONY: soak
soak: dist bench-tool ## 1,000,000 requests per filter and the chain: memory per VM and shared-data keys along the way (BENCHMARKS.md)
	$(BENCH_BIN) $(BENCH_COMMON) --only-soak --soak $(BENCH_SOAK) --soak-every 50000 \
	  --soak-section soak --write BENCHMARKS.md

.PHONY: bench-check
bench-check: dist bench-tool ## fail unless BENCHMARKS.md's instruction counts, memory and sizes equal a fresh run
	$(BENCH_BIN) $(BENCH_COMMON) --check BENCHMARKS.md

.PHONY: bench-fixtures
# Each module alone through pw-bench, with tests/fixtures/<filter>/bench.json as config and one
# extra request header from tests/fixtures/<filter>/bench.header (`name: value`) when present: the
# filter authors' per-callback view (`pw-bench --trace` for the per-hostcall one).
bench-fixtures: dist ## pw-bench per module with its tests/fixtures/<filter>/bench.json config
	$(CARGO) build --locked -q -p meshward-host --bin pw-bench
	@for f in $(BENCH_MODULES); do \
	  set --; \
	  [ -f tests/fixtures/$$f/bench.json ] && set -- "$$@" --config tests/fixtures/$$f/bench.json; \
	  [ -f tests/fixtures/$$f/bench.header ] && set -- "$$@" --header "$$(cat tests/fixtures/$$f/bench.header)"; \
	  $(or $(CARGO_TARGET_DIR),target)/debug/pw-bench dist/$$f.wasm --name $$f "$$@"; \
	done
	@# rate-limit's limited path: 4 uncounted requests spend the bucket, every measured one is a 429.
	$(or $(CARGO_TARGET_DIR),target)/debug/pw-bench dist/rate-limit.wasm --name rate-limit-limited \
	  --config tests/fixtures/rate-limit/bench-limited.json --warm-up 4 --status 429

.PHONY: bench-jwt
# One fresh signature verification per request for each algorithm family: the token cache is off
# (tests/fixtures/jwt-auth/bench-fresh.json) and tests/fixtures/jwt-auth/bench-<alg>.token is sent.
bench-jwt: dist ## jwt-auth: wasm instructions per fresh verification, per algorithm (RS256 PS256 ES256 ES384 EdDSA HS256)
	$(CARGO) build --locked -q -p meshward-host --bin pw-bench
	@for alg in rs256 ps256 es256 es384 eddsa hs256; do \
	  $(or $(CARGO_TARGET_DIR),target)/debug/pw-bench dist/jwt-auth.wasm --name jwt-auth-fresh-$$alg \
	    --config tests/fixtures/jwt-auth/bench-fresh.json --requests 20 \
	    --header "authorization: Bearer $$(cat tests/fixtures/jwt-auth/bench-$$alg.token)"; \
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
