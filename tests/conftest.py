"""Fixtures for the integration tests: real Envoy with the built .wasm, echo backends
and real KServe model servers, all on 127.0.0.1 and free ports, stopped by pid."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "envoy"))

import stack  # noqa: E402


def pytest_sessionstart(session):
    missing = [p for p in (stack.WASM, stack.ENVOY_BIN) if not p.exists()]
    if missing:
        pytest.exit(f"missing {', '.join(map(str, missing))}: run `make test` (it builds them)", 2)


@pytest.fixture
def backends():
    """Echo backends named after the clusters they serve, plus `fallback` for requests
    the filter does not route."""
    started = {name: stack.EchoBackend(name) for name in ("c1", "c2", "c3", "c4", "fallback")}
    yield started
    for b in started.values():
        b.stop()


@pytest.fixture
def start_envoy(tmp_path, backends):
    """`start_envoy(plugin_config, **envoy_config_kwargs)` -> a ready Envoy whose
    clusters are the echo backends."""
    running = []

    def start(plugin_config, concurrency=1, fallback=True, **kwargs):
        clusters = {name: b.port for name, b in backends.items()}
        cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config, clusters,
                                 fallback_cluster="fallback" if fallback else None, **kwargs)
        envoy = stack.Envoy(cfg, tmp_path, concurrency=concurrency, name=f"envoy{len(running)}")
        running.append(envoy)
        return envoy.start().wait_ready()

    yield start
    for e in running:
        e.stop()
