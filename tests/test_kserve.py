"""End to end through real KServe 0.21 model servers: an SVC (revision 00001) and a
depth-1 tree (revision 00002) that answer [[7.7, 3.0, 6.1, 2.3]] with 2 and 1, so the
prediction itself tells which revision served a request."""

import collections

import pytest

import stack
from test_routing import HOST, R1, R2, assert_binomial

SAMPLE = [[7.7, 3.0, 6.1, 2.3]]
ANSWER = {2: R1, 1: R2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kserve")
    servers = {"c1": stack.ModelServer("svc", workdir).start(), "c2": stack.ModelServer("tree", workdir).start()}
    try:
        for s in servers.values():
            s.wait_ready()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture(scope="module")
def envoy(models, tmp_path_factory):
    svc = {"name": "sklearn-iris", "hosts": [HOST], "tagRouting": True,
           "revisions": [{"name": R1, "cluster": "c1"}, {"name": R2, "cluster": "c2"}],
           "latestRolledoutRevision": R1, "latestReadyRevision": R2, "canaryTrafficPercent": 20,
           "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}],
           "models": ["sklearn-iris"]}
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), {"services": [svc]},
                             {name: m.port for name, m in models.items()})
    e = stack.Envoy(cfg, tmp_path_factory.mktemp("envoy"), concurrency=2).start().wait_ready()
    yield e
    e.stop()


def test_models_differ_when_asked_directly(models):
    assert stack.predict_v1(models["c1"].port, "x", SAMPLE).json() == {"predictions": [2]}
    assert stack.predict_v1(models["c2"].port, "x", SAMPLE).json() == {"predictions": [1]}


def test_v1_predict_split_through_envoy(envoy):
    n = 400
    seen = collections.Counter()
    for _ in range(n):
        r = stack.predict_v1(envoy.port, HOST, SAMPLE)
        assert r.status == 200, r
        # The revision named in the response is the one whose model answered.
        assert ANSWER[r.json()["predictions"][0]] == r.header("x-canary-revision")
        seen[r.header("x-canary-revision")] += 1
    assert_binomial(seen[R2], n, 0.20)


def test_v2_infer_tag_and_header_routing(envoy):
    for host, headers, revision in [(f"latest-{HOST}", (), R2), (f"prev-{HOST}", (), R1),
                                    (HOST, [("traffic", "test")], R2)]:
        for _ in range(20):
            r = stack.infer_v2(envoy.port, host, SAMPLE, headers=headers)
            assert r.status == 200, r
            assert r.json()["outputs"][0]["data"] == [{R1: 2, R2: 1}[revision]]
            assert r.header("x-canary-revision") == revision


def test_model_metadata_and_readiness_through_the_gateway(envoy):
    r = stack.request(envoy.port, "/v2/models/sklearn-iris/ready", host=f"latest-{HOST}")
    assert r.status == 200 and r.header("x-canary-revision") == R2
    r = stack.request(envoy.port, "/v1/models/sklearn-iris", host=f"prev-{HOST}")
    assert r.status == 200 and r.json()["ready"] is True


SHARED = "models.example.com"  # a gateway host no service lists


def test_model_path_routing_on_a_shared_host_v1_and_v2(envoy):
    seen = collections.Counter()
    for i in range(200):
        r = (stack.predict_v1 if i % 2 else stack.infer_v2)(envoy.port, SHARED, SAMPLE)
        assert r.status == 200, r
        revision = r.header("x-canary-revision")
        prediction = r.json()["predictions"][0] if i % 2 else r.json()["outputs"][0]["data"][0]
        assert ANSWER[prediction] == revision
        seen[revision] += 1
    assert_binomial(seen[R2], 200, 0.20)
    # Header rules still apply; paths are left as they are.
    r = stack.predict_v1(envoy.port, SHARED, SAMPLE, headers=[("traffic", "test")])
    assert r.header("x-canary-revision") == R2 and r.json() == {"predictions": [1]}
    r = stack.request(envoy.port, "/v2/models/sklearn-iris/ready", host=SHARED)
    assert r.status == 200 and r.header("x-canary-revision") in (R1, R2)
    # An unknown model, or a path that names none, is not routed: the 404 route answers.
    for path in ("/v1/models/gpt:predict", "/v2/models/gpt/infer", "/v2/health/ready"):
        r = stack.request(envoy.port, path, host=SHARED, headers=[("x-canary-cluster", "c2")])
        assert r.status == 404 and r.header("x-canary-revision") is None, path
