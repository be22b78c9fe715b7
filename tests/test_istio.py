"""The Istio manifests users apply: valid against Istio's schemas, broken copies
rejected, and their pluginConfig and VirtualService routes behave on real Envoy as the
README and docs/istio.md say."""

import collections
import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

import stack
from test_routing import assert_binomial

sys.path.insert(0, str(stack.ROOT / "istio"))
import validate  # noqa: E402

ISTIO = stack.ROOT / "istio"
MANIFESTS = sorted(ISTIO.glob("*.yaml"))
HOST = "sklearn-iris.kserve-test.example.com"
R1, R2 = "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"
SVC1, SVC2 = (f"{r}.kserve-test.svc.cluster.local" for r in (R1, R2))


def docs(name):
    return list(yaml.safe_load_all((ISTIO / name).read_text()))


def doc_of_kind(kind):
    return next(d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d["kind"] == kind)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_istio_schemas(path):
    for doc in yaml.safe_load_all(path.read_text()):
        assert validate.validate(doc) == [], doc.get("kind")


def set_path(doc, path, value):
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value


BROKEN = {
    "unknown spec field": ("WasmPlugin", ("spec", "pluginConfg"), {}),
    "unknown phase": ("WasmPlugin", ("spec", "phase"), "AUTH"),
    "unknown failStrategy": ("WasmPlugin", ("spec", "failStrategy"), "FAIL_CLOSED"),
    "priority as string": ("WasmPlugin", ("spec", "priority"), "high"),
    "selector typo": ("WasmPlugin", ("spec", "selector", "matchLabel"), {"istio": "ingressgateway"}),
    "url as list": ("WasmPlugin", ("spec", "url"), ["oci://x"]),
    "pull policy": ("WasmPlugin", ("spec", "imagePullPolicy"), "Sometimes"),
    "header match typo": ("VirtualService", ("spec", "http", 0, "match", 0, "headers", "x-canary-cluster"),
                          {"exactly": "sklearn-iris-00001"}),
    "port as string": ("VirtualService", ("spec", "http", 0, "route", 0, "destination", "port", "number"), "80"),
    "rewrite typo": ("VirtualService", ("spec", "http", 0, "rewrite"), {"authorty": SVC1}),
    "gateway protocol type": ("Gateway", ("spec", "servers", 0, "port", "protocol"), 80),
    "gateway hosts as string": ("Gateway", ("spec", "servers", 0, "hosts"), HOST),
    "envoyfilter applyTo typo": ("EnvoyFilter", ("spec", "configPatches", 0, "applyTo"), "HTTP_FILTERS"),
    "envoyfilter operation typo": ("EnvoyFilter", ("spec", "configPatches", 0, "patch", "operation"), "INSERT_FIST"),
    "envoyfilter context typo": ("EnvoyFilter", ("spec", "configPatches", 0, "match", "context"), "INGRESS"),
    "envoyfilter match typo": ("EnvoyFilter", ("spec", "configPatches", 0, "match", "listner"), {}),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_copy_is_rejected(name):
    kind, path, value = BROKEN[name]
    doc = copy.deepcopy(doc_of_kind(kind))
    assert validate.validate(doc) == []
    set_path(doc, path, value)
    assert validate.validate(doc) != [], f"{name} passed validation"


def test_promote_and_rollback_change_only_the_canary_percent():
    base = docs("wasmplugin.yaml")[0]
    promote, rollback = docs("wasmplugin-promote.yaml")[0], docs("wasmplugin-rollback.yaml")[0]
    svc = base["spec"]["pluginConfig"]["services"][0]
    assert svc["canaryTrafficPercent"] == 10
    expected_promote = copy.deepcopy(base)
    del expected_promote["spec"]["pluginConfig"]["services"][0]["canaryTrafficPercent"]
    assert promote == expected_promote
    expected_rollback = copy.deepcopy(base)
    expected_rollback["spec"]["pluginConfig"]["services"][0]["canaryTrafficPercent"] = 0
    assert rollback == expected_rollback


def plugin_json(wasmplugin: dict) -> str:
    """What Istio hands the filter: spec.pluginConfig (a protobuf Struct) marshalled to
    JSON and wrapped in a google.protobuf.StringValue. Struct numbers are doubles;
    protojson prints whole ones without a fraction, as json.dumps does for ints here."""
    return json.dumps(wasmplugin["spec"]["pluginConfig"], separators=(",", ":"))


def envoy_from_virtualservice(vs: dict, plugin_config, backends: dict[str, int], ecds_path=None,
                              http2=()) -> dict:
    """An Envoy config with the routes Istio generates from `vs` on the gateway."""
    return envoy_from_virtualservices([vs], plugin_config, backends, ecds_path, http2)


def envoy_from_virtualservices(vss: list[dict], plugin_config, backends: dict[str, int], ecds_path=None,
                               http2=()) -> dict:
    """An Envoy config with the routes Istio generates from VirtualServices on the
    gateway: a virtual host per VirtualService for its hosts, a route per http entry (exact
    header or regex path match, authority rewrite, destination cluster or direct
    response), and a cluster per destination host, served by `backends[host]` (HTTP/2 for
    the hosts in `http2`, as a DestinationRule's h2UpgradePolicy makes them)."""
    virtual_hosts = []
    for vs in vss:
        routes = []
        for http in vs["spec"]["http"]:
            match = {"prefix": "/"}
            for m in http.get("match", []):
                if "uri" in m:
                    match = {"safe_regex": {"regex": m["uri"]["regex"]}}
                if "headers" in m:
                    match["headers"] = [{"name": name, "string_match": {"exact": rule["exact"]}}
                                        for name, rule in m["headers"].items()]
            if "directResponse" in http:
                action = {"direct_response": {"status": http["directResponse"]["status"],
                                              "body": {"inline_string": http["directResponse"]["body"]["string"]}}}
            else:
                action = {"route": {"cluster": http["route"][0]["destination"]["host"]}}
                if "rewrite" in http:
                    action["route"]["host_rewrite_literal"] = http["rewrite"]["authority"]
            routes.append({"match": match, **action})
        virtual_hosts.append({"name": f"{vs['metadata']['namespace']}/{vs['metadata']['name']}",
                              "domains": [d for h in vs["spec"]["hosts"] for d in (h, f"{h}:*")], "routes": routes})
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config, backends, ecds_path=ecds_path,
                             http2=http2)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"] = virtual_hosts
    return cfg


@pytest.fixture
def revision_backends():
    started = {SVC1: stack.EchoBackend("00001"), SVC2: stack.EchoBackend("00002")}
    yield started
    for b in started.values():
        b.stop()


def test_manifests_route_on_real_envoy_as_istio_would(tmp_path, revision_backends):
    """The WasmPlugin's pluginConfig and the VirtualService, applied as Istio applies
    them (the filter through ECDS), then promote and rollback by the manifests."""
    vs = next(d for d in docs("gateway.yaml") if d["kind"] == "VirtualService")
    ecds = tmp_path / "ecds.json"
    stack.write_ecds(ecds, plugin_json(docs("wasmplugin.yaml")[0]), "canary")
    cfg = envoy_from_virtualservice(vs, None, {h: b.port for h, b in revision_backends.items()}, ecds_path=ecds)
    with stack.Envoy(cfg, tmp_path) as envoy:
        n = 1000
        seen = collections.Counter()
        for _ in range(n):
            r = stack.request(envoy.port, "/v1/models/sklearn-iris:predict", host=HOST)
            assert r.status == 200, r
            seen[(r.header("x-backend"), r.header("x-canary-revision"), r.header("x-seen-authority"))] += 1
        assert set(seen) == {("00001", R1, SVC1), ("00002", R2, SVC2)}, seen
        assert_binomial(seen[("00002", R2, SVC2)], n, 0.10)
        for host, backend in [(f"latest-{HOST}", "00002"), (f"prev-{HOST}:80", "00001")]:
            r = stack.request(envoy.port, "/", host=host)
            assert (r.status, r.header("x-backend")) == (200, backend), r
        r = stack.request(envoy.port, "/", host=HOST, headers=[("traffic", "test")])
        assert r.header("x-backend") == "00002"
        # A client cannot pick the revision: not on a served host, not on another one.
        for _ in range(200):
            r = stack.request(envoy.port, "/", host=f"prev-{HOST}", headers=[("x-canary-cluster", "sklearn-iris-00002")])
            assert r.header("x-backend") == "00001"
        r = stack.request(envoy.port, "/", host="other.example.com", headers=[("x-canary-cluster", "sklearn-iris-00002")])
        assert r.status == 404

        for manifest, backend in [("wasmplugin-promote.yaml", "00002"), ("wasmplugin-rollback.yaml", "00001")]:
            stack.write_ecds(ecds, plugin_json(docs(manifest)[0]), manifest)
            deadline_ok = wait_until_all(envoy, backend)
            assert deadline_ok, f"{manifest} not in effect"
            assert {stack.request(envoy.port, "/", host=HOST).header("x-backend") for _ in range(300)} == {backend}


def wait_until_all(envoy, backend, timeout=5.0, run=50):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(stack.request(envoy.port, "/", host=HOST).header("x-backend") == backend for _ in range(run)):
            return True
    return False


def test_the_llm_envoyfilter_carries_envoy_yamls_body_filter_and_buffer_limit():
    """The EnvoyFilter puts exactly the entry the LLM tests run (envoy/envoy.yaml's, in
    front of canary-router) first in the gateway's HTTP filters, and its buffer limit."""
    shipped = yaml.safe_load((stack.ROOT / "envoy" / "envoy.yaml").read_text())
    listener = shipped["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    wasm = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm")
    envoy_filter = doc_of_kind("EnvoyFilter")
    patches = envoy_filter["spec"]["configPatches"]
    inserted = [p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER"]
    assert inserted == filters[:wasm]
    assert [p["patch"]["operation"] for p in patches if p["applyTo"] == "HTTP_FILTER"] == ["INSERT_FIRST"]
    merged = [p["patch"]["value"] for p in patches if p["applyTo"] == "LISTENER"]
    assert merged == [{"per_connection_buffer_limit_bytes": listener["per_connection_buffer_limit_bytes"]}]
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == docs("wasmplugin.yaml")[0]["spec"]["selector"]["matchLabels"]
