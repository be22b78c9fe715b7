"""gRPC inference canaries end to end: two real KServe 0.21 model servers with their V2
gRPC servers on (revision 00001: an SVC, 00002: a depth-1 tree; they answer
[[7.7, 3.0, 6.1, 2.3]] with 2 and 1), real Envoy with HTTP/2 upstream clusters and an
h2c listener, and grpcio clients through KServe's own generated stubs."""

import collections

import grpc
import pytest

import grpc_client
import stack
from test_routing import HOST, R1, R2, assert_binomial

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
