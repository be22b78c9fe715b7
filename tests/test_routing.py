"""What clients and upstreams see when real Envoy runs canary-router."""

import collections
import json
import math

import pytest

import stack

HOST = "sklearn-iris.kserve-test.example.com"
HOST2 = "sklearn-iris-predictor.kserve-test.example.com"
R1, R2 = "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"


def kserve_service(percent=10, **extra):
    svc = {
        "name": "sklearn-iris",
        "hosts": [HOST, HOST2],
        "revisions": [{"name": R1, "cluster": "c1"},
                      {"name": R2, "cluster": "c2", "host": "sklearn-iris-predictor-00002.kserve-test.svc.cluster.local"}],
        "latestRolledoutRevision": R1,
        "latestReadyRevision": R2,
        "tagRouting": True,
        "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}],
    }
    if percent is not None:
        svc["canaryTrafficPercent"] = percent
    svc.update(extra)
    return svc


def count(envoy, n, host=HOST, headers=()):
    """Sends n requests; counts (backend that answered, revision named in the response)."""
    seen = collections.Counter()
    for _ in range(n):
        r = stack.request(envoy.port, "/v1/models/sklearn-iris:predict", host=host, headers=headers)
        assert r.status == 200, r
        seen[(r.header("x-backend"), r.header("x-canary-revision"))] += 1
    return seen


def assert_binomial(observed, n, p, sigmas=4.5):
    sd = math.sqrt(n * p * (1 - p))
    assert abs(observed - n * p) <= sigmas * sd, f"{observed} of {n}, expected {n * p:.0f} +- {sigmas * sd:.0f}"


def test_split_matches_canary_percent_on_two_workers(start_envoy):
    envoy = start_envoy({"services": [kserve_service(10)]}, concurrency=2)
    n = 2000
    seen = count(envoy, n)
    # The response header names the revision whose cluster answered, every time.
    assert set(seen) == {("c2", R2), ("c1", R1)}, seen
    assert_binomial(seen[("c2", R2)], n, 0.10)


@pytest.mark.parametrize("percent", [50, 1])
def test_split_other_percentages(start_envoy, percent):
    envoy = start_envoy({"services": [kserve_service(percent)]})
    n = 1500
    seen = count(envoy, n)
    assert_binomial(seen[("c2", R2)], n, percent / 100)


def test_promote_sends_everything_to_latest_ready(start_envoy):
    envoy = start_envoy({"services": [kserve_service(None)]})
    assert count(envoy, 300) == {("c2", R2): 300}


def test_rollback_to_zero_keeps_the_canary_reachable_by_tag(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(0)]})
    assert count(envoy, 300) == {("c1", R1): 300}
    r = stack.request(envoy.port, "/", host=f"latest-{HOST}")
    assert (r.header("x-backend"), r.header("x-canary-revision")) == ("c2", R2)


def test_tag_routing_both_ways_rewrites_the_authority(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(10)]})
    for host in (HOST, HOST2):
        for sent in (f"latest-{host}", f"LATEST-{host.upper()}.:8080"):
            r = stack.request(envoy.port, "/", host=sent)
            assert (r.status, r.header("x-backend"), r.header("x-canary-revision")) == (200, "c2", R2), r
            # The revision's own host wins over the untagged host.
            assert r.header("x-seen-authority") == "sklearn-iris-predictor-00002.kserve-test.svc.cluster.local"
        for sent in (f"prev-{host}", f"Prev-{host}:443"):
            r = stack.request(envoy.port, "/", host=sent)
            assert (r.status, r.header("x-backend"), r.header("x-canary-revision")) == (200, "c1", R1), r
            assert r.header("x-seen-authority") == host
    # 200 tagged requests never leak into the split.
    assert count(envoy, 200, host=f"prev-{HOST}") == {("c1", R1): 200}


def test_tag_hosts_are_unknown_without_tag_routing(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(10, tagRouting=False)]})
    r = stack.request(envoy.port, "/", host=f"latest-{HOST}")
    assert r.header("x-backend") == "fallback" and r.header("x-canary-revision") == "set-by-upstream"
    assert r.header("x-seen-authority") == f"latest-{HOST}"


def test_prev_tag_needs_a_rolled_out_revision(start_envoy):
    svc = {"name": "m", "hosts": ["m.example.com"], "tagRouting": True,
           "revisions": [{"name": "m-1", "cluster": "c3"}]}
    envoy = start_envoy({"services": [svc]})
    assert stack.request(envoy.port, "/", host="latest-m.example.com").header("x-backend") == "c3"
    assert stack.request(envoy.port, "/", host="prev-m.example.com").header("x-backend") == "fallback"


def test_header_rule_sends_test_traffic_to_the_candidate(start_envoy):
    envoy = start_envoy({"services": [kserve_service(0)]})
    assert count(envoy, 200, headers=[("traffic", "test")]) == {("c2", R2): 200}
    # Not an exact match: the split (0% canary) decides.
    assert count(envoy, 100, headers=[("traffic", "testing")]) == {("c1", R1): 100}


def test_response_header_replaces_the_upstream_value(start_envoy):
    envoy = start_envoy({"services": [kserve_service(50)]})
    for _ in range(50):
        r = stack.request(envoy.port, "/", host=HOST)
        assert r.headers_named("x-canary-revision") == [{"c1": R1, "c2": R2}[r.header("x-backend")]]


def test_client_cluster_header_never_picks_the_upstream(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(10)]})
    n = 1000
    spoof = [("x-canary-cluster", "c2"), ("X-Canary-Cluster", "c3")]
    seen = count(envoy, n, headers=spoof)
    assert set(seen) == {("c2", R2), ("c1", R1)}
    assert_binomial(seen[("c2", R2)], n, 0.10)
    # Upstream sees exactly the filter's value, never the client's copies.
    for name in ("c1", "c2"):
        assert all(v == [name] for v in backends[name].headers_seen("x-canary-cluster"))
    # Unknown host: the client's copies are removed before the router looks.
    for host in ("unknown.example.com", f"latest-{HOST}.evil.com"):
        r = stack.request(envoy.port, "/", host=host, headers=spoof)
        assert r.header("x-backend") == "fallback", r
    assert backends["fallback"].headers_seen("x-canary-cluster") == [[], []]
    assert backends["c3"].received == []


def test_spoofed_cluster_header_on_the_demo_route_gets_404(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(10)]}, fallback=False)
    r = stack.request(envoy.port, "/", host="unknown.example.com", headers=[("x-canary-cluster", "c2")])
    assert r.status == 404 and r.header("x-canary-revision") is None
    assert backends["c2"].received == []


def test_unknown_host_passes_through_untouched(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(10)]})
    body = json.dumps({"instances": [[1, 2, 3, 4]]}).encode()
    r = stack.request(envoy.port, "/v1/models/x:predict", host="Other.Example.com:8080",
                      headers=[("content-type", "application/json"), ("x-canary-revision", "client")], body=body)
    assert r.status == 200 and r.header("x-backend") == "fallback"
    # The response header is the upstream's own: the filter did not route this one.
    assert r.header("x-canary-revision") == "set-by-upstream"
    seen = backends["fallback"].received[-1]
    assert dict(seen["headers"])["host"] == "Other.Example.com:8080"
    assert dict(seen["headers"])["content-type"] == "application/json"
    assert dict(seen["headers"])["x-canary-revision"] == "client"
    assert seen["body"] == body and seen["path"] == "/v1/models/x:predict"


def test_body_and_content_type_reach_the_revision_unchanged(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(None)]})
    body = json.dumps({"instances": [[7.7, 3.0, 6.1, 2.3]]}).encode()
    r = stack.request(envoy.port, "/v1/models/sklearn-iris:predict", host=HOST,
                      headers=[("Content-Type", "application/json")], body=body)
    assert r.header("x-backend") == "c2"
    seen = backends["c2"].received[-1]
    assert seen["body"] == body
    assert [v for k, v in seen["headers"] if k == "content-type"] == ["application/json"]


def test_two_services_route_independently(start_envoy):
    knative = {"name": "bert", "hosts": ["bert.example.com"], "tagRouting": True,
               "revisions": [{"name": "bert-1", "cluster": "c3"}, {"name": "bert-2", "cluster": "c4"}],
               "traffic": [{"revisionName": "bert-1", "percent": 50, "tag": "stable"},
                           {"revisionName": "bert-2", "percent": 50, "tag": "candidate"}],
               "headerRoutes": [{"header": "traffic", "value": "test", "revision": "candidate"}]}
    envoy = start_envoy({"services": [kserve_service(10), knative]})
    n = 1000
    iris = count(envoy, n)
    bert = count(envoy, n, host="bert.example.com")
    assert set(iris) == {("c1", R1), ("c2", R2)} and set(bert) == {("c3", "bert-1"), ("c4", "bert-2")}
    assert_binomial(iris[("c2", R2)], n, 0.10)
    assert_binomial(bert[("c4", "bert-2")], n, 0.50)
    assert count(envoy, 50, host="candidate-bert.example.com") == {("c4", "bert-2"): 50}
    assert count(envoy, 50, host="stable-bert.example.com") == {("c3", "bert-1"): 50}
    assert count(envoy, 50, host="bert.example.com", headers=[("traffic", "test")]) == {("c4", "bert-2"): 50}
    # The other service's tags mean nothing here.
    assert stack.request(envoy.port, "/", host="latest-bert.example.com").header("x-backend") == "fallback"


def test_upstream_revision_header_is_opt_in(start_envoy, backends):
    envoy = start_envoy({"services": [kserve_service(None)]})
    stack.request(envoy.port, "/", host=HOST)
    assert backends["c2"].headers_seen("x-canary-revision") == [[]]
    envoy = start_envoy({"upstreamRevisionHeader": True, "services": [kserve_service(None)]})
    stack.request(envoy.port, "/", host=HOST, headers=[("x-canary-revision", "client")])
    assert backends["c2"].headers_seen("x-canary-revision")[-1] == [R2]


def test_custom_header_names(start_envoy, backends):
    cfg = {"clusterHeader": "x-route-to", "revisionHeader": "app-version", "services": [kserve_service(None)]}
    envoy = start_envoy(cfg, cluster_header="x-route-to")
    r = stack.request(envoy.port, "/", host=HOST, headers=[("x-route-to", "c3")])
    assert (r.header("x-backend"), r.header("app-version")) == ("c2", R2)
    r = stack.request(envoy.port, "/", host="nope.example.com", headers=[("x-route-to", "c3")])
    assert r.header("x-backend") == "fallback" and backends["c3"].received == []
