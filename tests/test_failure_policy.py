"""What clients see when the filter's VM fails, with each of Envoy's failure policies
(Istio's failStrategy maps onto them). The failing filters are tiny proxy-wasm modules
in tests/wasm/, assembled with binaryen's wasm-as: one traps on every request (what a
panic does), one refuses to start."""

import subprocess
from pathlib import Path

import pytest

import stack

WAT = stack.ROOT / "tests" / "wasm"


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    out = tmp_path_factory.mktemp("wasm")
    built = {}
    for name in ("trap", "nostart"):
        built[name] = out / f"{name}.wasm"
        subprocess.run(["wasm-as", str(WAT / f"{name}.wat"), "-o", str(built[name])], check=True)
    return built


def envoy_with(tmp_path, backends, wasm: Path, policy: str | None):
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), {"services": []},
                             {n: b.port for n, b in backends.items()}, fallback_cluster="fallback", wasm=wasm)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if policy:
        hcm["http_filters"][0]["typed_config"]["config"]["failure_policy"] = policy
    return stack.Envoy(cfg, tmp_path)


def spoofed(envoy):
    r = stack.request(envoy.port, "/", host="sklearn-iris.example.com", headers=[("x-canary-cluster", "c2")])
    return r.status, r.header("x-backend")


@pytest.mark.parametrize("policy", [None, "FAIL_CLOSED", "FAIL_RELOAD"])
def test_crashed_vm_fails_closed(tmp_path, backends, modules, policy):
    with envoy_with(tmp_path, backends, modules["trap"], policy) as envoy:
        assert [spoofed(envoy) for _ in range(5)] == [(503, None)] * 5
    assert backends["c2"].received == []


def test_crashed_vm_fails_open_and_loses_the_strip(tmp_path, backends, modules):
    """FAIL_OPEN: after the request that crashed it, requests bypass the filter, so the
    routing header a client sends is no longer stripped: it picks the upstream."""
    with envoy_with(tmp_path, backends, modules["trap"], "FAIL_OPEN") as envoy:
        assert spoofed(envoy) == (503, None)
        assert [spoofed(envoy) for _ in range(3)] == [(200, "c2")] * 3


@pytest.mark.parametrize("policy", [None, "FAIL_OPEN"])
def test_vm_that_cannot_start_stops_envoy_from_starting(tmp_path, backends, modules, policy):
    envoy = envoy_with(tmp_path, backends, modules["nostart"], policy).start()
    try:
        assert envoy.wait_exit(timeout=30) == 1
    finally:
        envoy.stop()
    assert "Unable to create Wasm plugin" in envoy.log()
