"""The Envoy config and compose file shipped for users work as shipped: the config runs
on real Envoy (addresses moved to loopback), and the compose file mounts files that
exist."""

import collections
from pathlib import Path

import yaml

import stack
from test_routing import assert_binomial

ENVOY_DIR = stack.ROOT / "envoy"
HOST = "sklearn-iris.kserve-test.example.com"


def local_copy(backends) -> dict:
    """envoy.yaml on loopback: its REST clusters on `backends` c1 and c2 (name -> object
    with a `port`), its gRPC clusters on `backends` g1 and g2 if given, else on ports
    nothing listens on."""
    cfg = yaml.safe_load((ENVOY_DIR / "envoy.yaml").read_text())
    cfg["admin"]["address"]["socket_address"].update(address=stack.LOOPBACK, port_value=stack.free_port())
    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address=stack.LOOPBACK, port_value=stack.free_port())
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    wasm["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(stack.WASM)
    ports = {"sklearn-iris-00001": backends["c1"].port, "sklearn-iris-00002": backends["c2"].port,
             "sklearn-iris-00001-grpc": backends["g1"].port if "g1" in backends else stack.free_port(),
             "sklearn-iris-00002-grpc": backends["g2"].port if "g2" in backends else stack.free_port()}
    assert sorted(c["name"] for c in cfg["static_resources"]["clusters"]) == sorted(ports)
    for cluster in cfg["static_resources"]["clusters"]:
        cluster["type"] = "STATIC"
        ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ep["address"]["socket_address"].update(address=stack.LOOPBACK, port_value=ports[cluster["name"]])
    return cfg


def test_shipped_envoy_config_routes_the_canary(tmp_path, backends):
    with stack.Envoy(local_copy(backends), tmp_path) as envoy:
        n = 1000
        seen = collections.Counter()
        for _ in range(n):
            r = stack.request(envoy.port, "/v1/models/sklearn-iris:predict", host=HOST)
            seen[(r.header("x-backend"), r.header("x-canary-revision"))] += 1
        assert set(seen) == {("c1", "sklearn-iris-predictor-00001"), ("c2", "sklearn-iris-predictor-00002")}
        assert_binomial(seen[("c2", "sklearn-iris-predictor-00002")], n, 0.10)
        assert stack.request(envoy.port, "/", host=f"latest-{HOST}").header("x-backend") == "c2"
        assert stack.request(envoy.port, "/", host="localhost:8080", headers=[("traffic", "test")]).header("x-backend") == "c2"
        r = stack.request(envoy.port, "/", host="other.example.com", headers=[("x-canary-cluster", "sklearn-iris-00002")])
        assert r.status == 404


def test_compose_file_mounts_what_the_repo_has():
    compose = yaml.safe_load((ENVOY_DIR / "docker-compose.yaml").read_text())
    sources = [v.split(":")[0] for svc in compose["services"].values() for v in svc.get("volumes", [])]
    assert sources, compose
    for src in sources:
        path = (ENVOY_DIR / src).resolve()
        assert path.exists(), f"{src} (resolved {path}) is mounted but missing; run make opt"
    assert Path(ENVOY_DIR / "envoy.yaml").resolve() in [(ENVOY_DIR / s).resolve() for s in sources]


def compose_config(path):
    import subprocess
    return subprocess.run(["docker-compose", "-f", str(path), "config", "-q"], capture_output=True, text=True)


def test_compose_file_is_valid_for_docker_compose(tmp_path):
    r = compose_config(ENVOY_DIR / "docker-compose.yaml")
    assert r.returncode == 0, r.stderr
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text((ENVOY_DIR / "docker-compose.yaml").read_text().replace("depends_on:", "depends_onn:"))
    r = compose_config(broken)
    assert r.returncode != 0 and "depends_onn" in r.stderr


def test_shipped_config_extracts_the_same_stat_tags_the_tests_use():
    cfg = yaml.safe_load((ENVOY_DIR / "envoy.yaml").read_text())
    assert cfg["stats_config"]["stats_tags"] == stack.STATS_TAGS
