"""gRPC inference canaries end to end: two real KServe 0.21 model servers with their V2
gRPC servers on (revision 00001: an SVC, 00002: a depth-1 tree; they answer
[[7.7, 3.0, 6.1, 2.3]] with 2 and 1), real Envoy with HTTP/2 upstream clusters and an
h2c listener, and grpcio clients through KServe's own generated stubs."""

import collections
import re
import time
from types import SimpleNamespace

import grpc
import pytest

import grpc_client
import stack
import test_istio
from test_health import wait_for, wasm_lines
from test_routing import HOST, R1, R2, assert_binomial
from test_shipped_config import local_copy

SAMPLE = [[7.7, 3.0, 6.1, 2.3]]
ANSWER = {2: R1, 1: R2}
REVISION = "x-canary-revision"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The two revisions' model servers, shared by every test of the module (each start
    costs about 2.5 s and 215 MiB); faults are reset after each test."""
    workdir = tmp_path_factory.mktemp("kserve-grpc")
    servers = {"g1": stack.ModelServer("svc", workdir, grpc=True).start(),
               "g2": stack.ModelServer("tree", workdir, grpc=True).start()}
    try:
        for s in servers.values():
            s.wait_ready()
            grpc_client.wait_ready(s.grpc_port)
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture(autouse=True)
def healthy_models(request):
    yield
    if "models" in request.fixturenames:
        for s in request.getfixturevalue("models").values():
            s.fault("")


def grpc_service(percent=20, **extra):
    svc = {"name": "sklearn-iris", "hosts": [HOST], "tagRouting": True,
           "revisions": [{"name": R1, "cluster": "g1"}, {"name": R2, "cluster": "g2"}],
           "latestRolledoutRevision": R1, "latestReadyRevision": R2, "canaryTrafficPercent": percent,
           "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}]}
    svc.update(extra)
    return svc


def start(models, tmp_path, plugin_config, concurrency=2, extra_clusters=None):
    """Envoy in front of the model servers' gRPC ports (HTTP/2 clusters g1, g2, plus
    `extra_clusters`: name -> port, also HTTP/2)."""
    clusters = {name: m.grpc_port for name, m in models.items()} | (extra_clusters or {})
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config, clusters,
                             http2=set(clusters))
    return stack.Envoy(cfg, tmp_path, concurrency=concurrency)


@pytest.fixture(scope="module")
def envoy(models, tmp_path_factory):
    """A 20% canary with tag routing and a header rule, no health policy."""
    e = start(models, tmp_path_factory.mktemp("envoy-grpc"), {"services": [grpc_service(20)]})
    with e:
        yield e


def test_models_differ_when_asked_directly_over_grpc(models):
    for name, answer in (("g1", 2), ("g2", 1)):
        r = grpc_client.infer(grpc_client.stub(models[name].grpc_port), SAMPLE)
        assert (r.code, r.predictions) == (grpc.StatusCode.OK, [answer]), r


def test_model_infer_split_over_grpc(envoy):
    n = 400
    seen = collections.Counter()
    # A few channels (connections), so that both workers take calls.
    stubs = [grpc_client.stub(envoy.port, HOST) for _ in range(4)]
    for i in range(n):
        r = grpc_client.infer(stubs[i % 4], SAMPLE)
        assert r.code == grpc.StatusCode.OK, r
        # The revision named in the initial metadata is the one whose model answered.
        assert ANSWER[r.predictions[0]] == r.initial[REVISION], r
        seen[r.initial[REVISION]] += 1
    assert_binomial(seen[R2], n, 0.20)


def test_tag_authorities_and_header_rules_by_metadata(envoy):
    for authority, metadata, revision in [(f"latest-{HOST}", (), R2), (f"prev-{HOST}", (), R1),
                                          (HOST, [("traffic", "test")], R2)]:
        s = grpc_client.stub(envoy.port, authority)
        for _ in range(20):
            r = grpc_client.infer(s, SAMPLE, metadata=metadata)
            assert r.code == grpc.StatusCode.OK, r
            assert (r.predictions, r.initial[REVISION]) == ([{R1: 2, R2: 1}[revision]], revision)


def test_a_client_never_picks_the_cluster_and_unknown_authorities_are_unimplemented(envoy):
    # A spoofed cluster header from a client is replaced on a routed call...
    s = grpc_client.stub(envoy.port, f"prev-{HOST}")
    for _ in range(10):
        r = grpc_client.infer(s, SAMPLE, metadata=[("x-canary-cluster", "g2")])
        assert (r.code, r.initial[REVISION], r.predictions) == (grpc.StatusCode.OK, R1, [2])
    # ...and removed on an unknown one: the fallback route's 404 reaches a gRPC client as
    # UNIMPLEMENTED (Envoy's mapping of a local 404), with the route's body as message.
    r = grpc_client.infer(grpc_client.stub(envoy.port, "unknown.example.com"), SAMPLE,
                          metadata=[("x-canary-cluster", "g2")])
    assert (r.code, r.details) == (grpc.StatusCode.UNIMPLEMENTED, "no canary route for this host\n"), r
    assert r.metadata(REVISION) is None


def metrics(envoy, revision: str) -> dict[str, int]:
    prom = stack.request(envoy.admin_port, "/stats/prometheus").body.decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        rf'^canary_router_([a-z0-9_]+){{service="sklearn-iris",revision="{revision}"}} (\d+)$', prom, re.M)}


def wait_metrics(envoy, revision: str, expected: dict[str, int], timeout=5.0) -> dict[str, int]:
    wait_for(lambda: all(metrics(envoy, revision).get(k) == v for k, v in expected.items()), timeout=timeout)
    return metrics(envoy, revision)


def test_metrics_count_grpc_outcomes_read_from_the_trailers(models, tmp_path):
    with start(models, tmp_path, {"metrics": True, "services": [grpc_service(50)]}) as envoy:
        s = grpc_client.stub(envoy.port, HOST)
        seen = collections.Counter(grpc_client.infer(s, SAMPLE).initial[REVISION] for _ in range(100))
        # A successful unary answer ends with grpc-status 0 in real trailers.
        for revision in (R1, R2):
            assert wait_metrics(envoy, revision, {"grpc_ok": seen[revision]}) == {
                "requests": seen[revision], "responses_2xx": seen[revision], "grpc_ok": seen[revision]}
        # NOT_FOUND (a model the server does not have) is the caller's error: in neither.
        bad = grpc_client.infer(s, SAMPLE, metadata=[("traffic", "test")], model="no-such-model")
        assert (bad.code, bad.trailing[REVISION]) == (grpc.StatusCode.NOT_FOUND, R2), bad
        after = wait_metrics(envoy, R2, {"requests": seen[R2] + 1})
        assert (after["grpc_ok"], after.get("grpc_errors", 0)) == (seen[R2], 0), after


@pytest.mark.parametrize("fault", ["internal", "internal-trailers"])
def test_a_canary_failing_with_internal_on_http_200_is_rolled_back(models, tmp_path, fault):
    policy = {"autoRollback": {"maxErrorRate": 0.05, "minRequests": 20, "windowMs": 10000}}
    with start(models, tmp_path, {"metrics": True, "services": [grpc_service(20, **policy)]}) as envoy:
        models["g2"].fault(fault)
        r = grpc_client.infer(grpc_client.stub(envoy.port, f"latest-{HOST}"), SAMPLE)
        assert (r.code, r.details) == (grpc.StatusCode.INTERNAL, "Internal server error"), r
        if fault == "internal-trailers":
            # The server sent its headers first: the status came in real trailers.
            assert r.initial.get("x-model-kind") == "iris" and r.initial[REVISION] == R2, r
        else:
            assert r.initial == {} and r.trailing[REVISION] == R2, r
        with grpc_client.Load(envoy.port, HOST, SAMPLE, clients=4) as load:
            assert wait_for(lambda: "rolled back, 100% to" in envoy.log(), timeout=10.0), envoy.log()[-3000:]
            time.sleep(0.5)  # both workers' next refresh
            rolled_at = time.time()
            time.sleep(1.0)
        after = [rec for rec in load.records if rec[0] > rolled_at]
        assert after and {rec[2:5] for rec in after} == {("OK", R1, 2)}, collections.Counter(rec[2:4] for rec in after)
        failed = [rec for rec in load.records if rec[2] != "OK"]
        # Only canary calls failed, and few of them.
        assert failed and {rec[2:4] for rec in failed} == {("INTERNAL", R2)}, collections.Counter(rec[2:4] for rec in failed)
        assert len(failed) < 100, len(failed)
        m = wait_metrics(envoy, R2, {"grpc_errors": len(failed) + 1})
        # HTTP 200s on the wire, errors by their status.
        assert m["responses_2xx"] >= m["grpc_errors"] and m.get("responses_5xx", 0) == 0, m
        line = next(line for line in envoy.log().splitlines() if "rolled back" in line)
        assert f'canary "{R2}" rolled back, 100% to "{R1}"' in line, line


def test_a_refused_upstream_is_unavailable_and_ejected_and_local_replies_are_grpc(models, tmp_path):
    svc = grpc_service(50, outlier={"maxErrorRate": 0.5, "minRequests": 20, "windowMs": 2000, "ejectionMs": 30000})
    svc["revisions"][1]["cluster"] = "gdead"
    with start(models, tmp_path, {"services": [svc]}, extra_clusters={"gdead": stack.free_port()}) as envoy:
        s = grpc_client.stub(envoy.port, HOST)
        codes = collections.Counter()
        for _ in range(200):
            r = grpc_client.infer(s, SAMPLE)
            codes[(r.code.name, r.metadata(REVISION))] += 1
        # Envoy answers a gRPC call it could not connect for with HTTP 200 and
        # grpc-status 14: counted as errors, the revision is ejected.
        assert codes[("UNAVAILABLE", R2)] > 0 and codes[("UNAVAILABLE", R2)] < 100, codes
        assert wait_for(lambda: f'revision "{R2}" ejected' in envoy.log(), timeout=3.0)
        time.sleep(0.5)
        for _ in range(50):
            r = grpc_client.infer(s, SAMPLE)
            assert (r.code, r.initial[REVISION]) == (grpc.StatusCode.OK, R1), r
        # A tag that names the ejected revision: the filter answers itself, and the client
        # reads a gRPC UNAVAILABLE naming the revision (no trailing newline).
        r = grpc_client.infer(grpc_client.stub(envoy.port, f"latest-{HOST}"), SAMPLE)
        assert (r.code, r.details) == (grpc.StatusCode.UNAVAILABLE, f"revision {R2} of service sklearn-iris is ejected"), r
        assert r.trailing[REVISION] == R2 and r.initial == {}, r
        # HTTP clients still get the text body, newline included.
        h = stack.request(envoy.port, "/", host=f"latest-{HOST}")
        assert (h.status, h.body) == (503, f"revision {R2} of service sklearn-iris is ejected\n".encode()), h


def test_unary_calls_are_mirrored_and_the_copies_counted_by_grpc_status(models, tmp_path):
    svc = grpc_service(0, mirror={"revision": R2, "percent": 100})
    with start(models, tmp_path, {"services": [svc]}) as envoy:
        s = grpc_client.stub(envoy.port, HOST)
        for _ in range(40):
            r = grpc_client.infer(s, SAMPLE)
            assert (r.code, r.initial[REVISION], r.predictions) == (grpc.StatusCode.OK, R1, [2]), r
        # The copies reached the gRPC server (te: trailers kept, HTTP/2) and answered OK.
        assert wait_metrics(envoy, R2, {"mirror_grpc_ok": 40}) == {
            "mirror_requests": 40, "mirror_responses_2xx": 40, "mirror_grpc_ok": 40}
        models["g2"].fault("internal")
        for _ in range(10):
            assert grpc_client.infer(s, SAMPLE).code == grpc.StatusCode.OK
        m = wait_metrics(envoy, R2, {"mirror_grpc_errors": 10})
        assert (m["mirror_requests"], m["mirror_responses_2xx"], m["mirror_grpc_ok"]) == (50, 50, 40), m


def test_the_shipped_envoy_config_splits_grpc_calls(models, tmp_path):
    # envoy/envoy.yaml as shipped, on loopback: its gRPC clusters on the model servers'
    # gRPC ports, its REST ones on their REST ports.
    ports = {"c1": models["g1"].port, "c2": models["g2"].port,
             "g1": models["g1"].grpc_port, "g2": models["g2"].grpc_port}
    cfg = local_copy({name: SimpleNamespace(port=port) for name, port in ports.items()})
    with stack.Envoy(cfg, tmp_path) as envoy:
        s = grpc_client.stub(envoy.port, "sklearn-iris-grpc.kserve-test.example.com")
        n = 400
        seen = collections.Counter()
        for _ in range(n):
            r = grpc_client.infer(s, SAMPLE)
            assert r.code == grpc.StatusCode.OK and ANSWER[r.predictions[0]] == r.initial[REVISION], r
            seen[r.initial[REVISION]] += 1
        assert_binomial(seen[R2], n, 0.10)
        # REST and gRPC share the listener.
        r = stack.predict_v1(envoy.port, "sklearn-iris.kserve-test.example.com", SAMPLE,
                             headers=[("traffic", "test")])
        assert (r.status, r.json(), r.header(REVISION)) == (200, {"predictions": [1]}, R2), r


def test_the_istio_grpc_manifests_route_grpc_calls_as_istio_would(models, tmp_path):
    """istio/grpc.yaml's VirtualService and DestinationRules, and the WasmPlugin's gRPC
    service, applied as Istio would apply them, in front of the real gRPC servers."""
    manifests = test_istio.docs("grpc.yaml")
    vs = next(d for d in manifests if d["kind"] == "VirtualService")
    upgraded = {d["spec"]["host"] for d in manifests if d["kind"] == "DestinationRule"
                and d["spec"]["trafficPolicy"]["connectionPool"]["http"]["h2UpgradePolicy"] == "UPGRADE"}
    revisions = {f"sklearn-iris-grpc-predictor-0000{i}": models[f"g{i}"] for i in (1, 2)}
    backends = {f"{r}.kserve-test.svc.cluster.local": m.grpc_port for r, m in revisions.items()}
    assert upgraded == set(backends)
    plugin = test_istio.plugin_json(test_istio.docs("wasmplugin.yaml")[0])
    with stack.Envoy(test_istio.envoy_from_virtualservice(vs, plugin, backends, http2=upgraded), tmp_path) as envoy:
        host = "sklearn-iris-grpc.kserve-test.example.com"
        s = grpc_client.stub(envoy.port, host)
        seen = collections.Counter()
        n = 400
        answer = {2: "sklearn-iris-grpc-predictor-00001", 1: "sklearn-iris-grpc-predictor-00002"}
        for _ in range(n):
            r = grpc_client.infer(s, SAMPLE)
            assert r.code == grpc.StatusCode.OK and answer[r.predictions[0]] == r.initial[REVISION], r
            seen[r.initial[REVISION]] += 1
        assert_binomial(seen["sklearn-iris-grpc-predictor-00002"], n, 0.10)
        r = grpc_client.infer(grpc_client.stub(envoy.port, f"latest-{host}"), SAMPLE)
        assert (r.code, r.predictions) == (grpc.StatusCode.OK, [1]), r


GRPC_PROBES = {"protocol": "grpc", "intervalMs": 200, "timeoutMs": 150, "unhealthyThreshold": 2,
               "healthyThreshold": 2}


def split_over_grpc(envoy, n=100, authority=HOST) -> collections.Counter:
    s = grpc_client.stub(envoy.port, authority)
    return collections.Counter(grpc_client.infer(s, SAMPLE).metadata(REVISION) for _ in range(n))


@pytest.mark.parametrize("method", ["inference.GRPCInferenceService/ModelReady", "grpc.health.v1.Health/Check"])
def test_grpc_probes_take_an_unready_revision_out_and_back(models, tmp_path, method):
    probes = {**GRPC_PROBES, "grpcMethod": method}
    with start(models, tmp_path, {"services": [grpc_service(50, healthCheck=probes)]}) as envoy:
        assert set(split_over_grpc(envoy)) == {R1, R2}
        models["g2"].fault("unready")
        # Two failed probes at 200 ms, then every worker's next 100 ms refresh.
        assert wait_for(lambda: split_over_grpc(envoy, 50) == {R1: 50}, timeout=3.0), "g2 still gets calls"
        assert split_over_grpc(envoy, 200) == {R1: 200}
        # A tag naming it: a gRPC UNAVAILABLE from the filter.
        r = grpc_client.infer(grpc_client.stub(envoy.port, f"latest-{HOST}"), SAMPLE)
        assert (r.code, r.details) == (grpc.StatusCode.UNAVAILABLE, f"revision {R2} of service sklearn-iris is not ready"), r
        models["g2"].fault("")
        assert wait_for(lambda: R2 in split_over_grpc(envoy, 50), timeout=3.0), "g2 never came back"
        # Logged once per process, by the prober, naming the method.
        assert len(wasm_lines(envoy, f'cluster "g2" is not ready (failure on {method})')) == 1, envoy.log()[-3000:]
        assert len(wasm_lines(envoy, f'cluster "g2" is ready again (success on {method})')) == 1


def test_grpc_probes_fail_on_a_refused_server_and_an_unknown_model(models, tmp_path):
    iris = grpc_service(50, healthCheck=GRPC_PROBES)
    iris["revisions"][1]["cluster"] = "gdead"  # refused: UNAVAILABLE
    typo = {"name": "typo", "hosts": ["typo.example.com"], "revisions": [{"name": "typo-1", "cluster": "g2"}],
            "healthCheck": {**GRPC_PROBES, "model": "no-such-model"}}  # NOT_FOUND
    cfg = {"statusPath": "/status", "services": [iris, typo]}
    with start(models, tmp_path, cfg, extra_clusters={"gdead": stack.free_port()}) as envoy:
        for cluster in ("gdead", "g2"):
            assert wait_for(lambda: f'cluster "{cluster}" is not ready' in envoy.log(), timeout=3.0), cluster  # noqa: B023
        time.sleep(0.3)  # every worker's next refresh
        services = stack.request(envoy.port, "/status", host="x").json()["services"]
        ready = {r["name"]: r["ready"] for s in services for r in s["revisions"]}
        assert ready == {R1: True, R2: False, "typo-1": False}, ready
        assert split_over_grpc(envoy, 50) == {R1: 50}


def test_server_ready_does_not_see_an_unready_model(models, tmp_path):
    # KServe 0.21's ServerReady answers true whatever its model's state: why ModelReady
    # is the default.
    probes = {**GRPC_PROBES, "grpcMethod": "inference.GRPCInferenceService/ServerReady"}
    with start(models, tmp_path, {"services": [grpc_service(50, healthCheck=probes)]}) as envoy:
        models["g2"].fault("unready")
        time.sleep(1.2)  # six probe intervals
        assert "is not ready" not in envoy.log()
        assert R2 in split_over_grpc(envoy, 50)
