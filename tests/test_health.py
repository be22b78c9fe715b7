"""Revision health on real Envoy with two workers: readiness probes (one prober per
process), passive ejection, automatic rollback under load, metrics in Prometheus, the
status view, and fail open. Backends fail on command: 500s, unready, hanging, down."""

import collections
import json
import re
import sys
import time

import pytest

import stack
from test_routing import HOST, R1, R2, assert_binomial

sys.path.insert(0, str(stack.ROOT / "bench"))
import rollback  # noqa: E402

INTERVAL_MS = 200


def service(percent=50, **policies):
    svc = {"name": "sklearn-iris", "hosts": [HOST], "tagRouting": True,
           "revisions": [{"name": R1, "cluster": "c1"}, {"name": R2, "cluster": "c2"}],
           "latestRolledoutRevision": R1, "latestReadyRevision": R2,
           "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}]}
    if percent is not None:
        svc["canaryTrafficPercent"] = percent
    svc.update(policies)
    return svc


PROBES = {"healthCheck": {"intervalMs": INTERVAL_MS, "timeoutMs": 150, "unhealthyThreshold": 2, "healthyThreshold": 2}}
OUTLIER = {"outlier": {"maxErrorRate": 0.5, "minRequests": 20, "windowMs": 2000, "ejectionMs": 1500}}


def split(envoy, n=200, host=HOST, headers=()):
    return collections.Counter(stack.request(envoy.port, "/", host=host, headers=headers).header("x-backend")
                               for _ in range(n))


def wait_for(condition, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def wasm_lines(envoy, text):
    return [line for line in envoy.log().splitlines() if "wasm log" in line and text in line]


def test_unready_revision_leaves_rotation_and_comes_back(start_envoy, backends):
    envoy = start_envoy({"services": [service(50, **PROBES)]}, concurrency=2)
    assert set(split(envoy)) == {"c1", "c2"}
    backends["c2"].ready = False
    # Two failed probes at 200 ms, then every worker's next 100 ms refresh.
    assert wait_for(lambda: split(envoy, 50) == {"c1": 50}, timeout=2.0), "c2 still gets traffic"
    assert split(envoy, 300) == {"c1": 300}
    for host, headers in [(f"latest-{HOST}", ()), (HOST, [("traffic", "test")])]:
        r = stack.request(envoy.port, "/", host=host, headers=headers)
        assert r.status == 503 and r.header("x-canary-revision") == R2
        assert r.body == f"revision {R2} of service sklearn-iris is not ready\n".encode()
    assert stack.request(envoy.port, "/", host=f"prev-{HOST}").header("x-backend") == "c1"
    backends["c2"].ready = True
    assert wait_for(lambda: "c2" in split(envoy, 50), timeout=2.0), "c2 never came back"
    # The first worker to refresh brings c2 back; the other follows on its own next
    # refresh (100 ms, later on a loaded machine): the share is measured after both.
    time.sleep(0.5)
    assert_binomial(split(envoy, 600)["c2"], 600, 0.5)
    # Logged once per process, by the prober.
    assert len(wasm_lines(envoy, 'cluster "c2" is not ready')) == 1
    assert len(wasm_lines(envoy, 'cluster "c2" is ready again')) == 1


def test_one_prober_per_process(start_envoy, backends):
    start_envoy({"services": [service(50, **PROBES)]}, concurrency=2)
    time.sleep(0.5)
    before = backends["c1"].health_checks
    time.sleep(2.0)
    probes = backends["c1"].health_checks - before
    # 2 s at 200 ms is 10 probes (fewer when a loaded machine delays the timer); three
    # root contexts probing would be 30.
    assert 4 <= probes <= 13, probes


def test_hanging_revision_is_taken_out_by_probe_timeouts(start_envoy, backends):
    envoy = start_envoy({"services": [service(50, **PROBES)]}, concurrency=2)
    backends["c2"].hang = True
    assert wait_for(lambda: 'cluster "c2" is not ready' in envoy.log(), timeout=3.0)
    time.sleep(0.3)
    started = time.monotonic()
    assert split(envoy, 100) == {"c1": 100}
    assert time.monotonic() - started < 5, "requests waited on the hanging revision"


def test_failing_revision_is_ejected_then_tried_again(start_envoy, backends):
    envoy = start_envoy({"services": [service(50, **OUTLIER)]}, concurrency=2)
    backends["c2"].fail = True
    statuses = collections.Counter(stack.request(envoy.port, "/", host=HOST).status for _ in range(300))
    # minRequests (20) errors trip it; up to two 100 ms ticks of half the traffic follow.
    assert statuses[500] < 150, statuses
    assert split(envoy, 200) == {"c1": 200}
    # Once, or again if this took longer than ejectionMs while it still failed.
    lines = wasm_lines(envoy, f'revision "{R2}" ejected for 1500 ms')
    assert lines
    assert re.search(r"\d+ errors in \d+ responses \(\d+\.\d%\) over 2000 ms, above 50\.0%", lines[0])
    backends["c2"].fail = False
    # After ejectionMs it is tried again, with a clean window, and stays.
    assert wait_for(lambda: "c2" in split(envoy, 50), timeout=3.0)
    assert_binomial(split(envoy, 400)["c2"], 400, 0.5)


LONG_EJECTION = {"outlier": {**OUTLIER["outlier"], "ejectionMs": 30000}}


def test_refused_connections_count_as_errors(start_envoy, backends):
    # Ejected for longer than the test lasts, so it is ejected exactly once.
    envoy = start_envoy({"services": [service(50, **LONG_EJECTION)]}, concurrency=2)
    backends["c2"].stop()
    try:
        statuses = collections.Counter(stack.request(envoy.port, "/", host=HOST).status for _ in range(300))
        assert statuses[503] < 150, statuses
        # The worker that ejects sees it at once, the other on its next refresh (100 ms,
        # more on a loaded machine): both must have it within two seconds.
        assert wait_for(lambda: split(envoy, 50) == {"c1": 50}, timeout=2.0), "c2 never left rotation"
        assert split(envoy, 200) == {"c1": 200}
    finally:
        backends["c2"].restart()
    assert len(wasm_lines(envoy, f'revision "{R2}" ejected')) == 1


def test_the_last_healthy_revision_is_never_ejected(start_envoy, backends):
    envoy = start_envoy({"statusPath": "/status", "services": [service(50, **LONG_EJECTION)]}, concurrency=2)
    backends["c1"].fail = backends["c2"].fail = True
    answered = collections.Counter()
    for _ in range(600):
        r = stack.request(envoy.port, "/", host=HOST)
        answered[(r.status, r.header("x-backend"))] += 1
    # Every request still reached a revision (its own 500), never a filter 503.
    assert set(answered) <= {(500, "c1"), (500, "c2")}, answered
    assert len(wasm_lines(envoy, "ejected for")) == 1
    revisions = json.loads(stack.request(envoy.port, "/status", host="x").body)["services"][0]["revisions"]
    assert sum(r["ejected"] for r in revisions) == 1, revisions


def test_automatic_rollback_under_load(tmp_path):
    result = rollback.measure(tmp_path)
    assert result["rolled_back"] and result["rollback_log_lines"] == 1, result
    # Only canary requests failed, few of them, and none reached it by the split after.
    assert result["failed_not_from_canary"] == 0, result
    assert 0 < result["failed_before_rollback"] < 150, result
    assert result["time_to_rollback_ms"] < 1000, result
    assert result["canary_after_rollback"] == 0, result


def test_rollback_keeps_tags_shows_in_status_and_metrics_and_ends_with_new_config(tmp_path, backends):
    ecds = tmp_path / "ecds.json"
    policy = {"autoRollback": {"maxErrorRate": 0.05, "minRequests": 20, "windowMs": 10000}}
    cfg = {"statusPath": "/canary-router/status", "services": [service(50, **policy)]}
    envoy_cfg = stack.envoy_config(stack.free_port(), stack.free_port(), cfg,
                                   {n: b.port for n, b in backends.items()}, ecds_path=ecds)
    with stack.Envoy(envoy_cfg, tmp_path, concurrency=2) as envoy:
        backends["c2"].fail = True
        for _ in range(100):
            stack.request(envoy.port, "/", host=HOST)
        assert wait_for(lambda: split(envoy, 50) == {"c1": 50}, timeout=2.0)
        # Still rolled back a while later: it stays until the configuration changes.
        time.sleep(0.5)
        assert split(envoy, 200) == {"c1": 200}
        # Tag routing to the canary keeps working, for debugging.
        r = stack.request(envoy.port, "/", host=f"latest-{HOST}")
        assert (r.status, r.header("x-backend"), r.header("x-canary-revision")) == (500, "c2", R2)
        status = json.loads(stack.request(envoy.port, "/canary-router/status", host="any").body)
        svc = status["services"][0]
        assert (svc["rolledBack"], svc["prev"], svc["latest"]) == (True, 100.0, 0.0)
        time.sleep(1.2)  # one metrics flush
        prom = stack.request(envoy.admin_port, "/stats/prometheus").body.decode()
        assert 'canary_router_rollbacks{service="sklearn-iris"} 1' in prom, prom
        assert 'canary_router_rolled_back{service="sklearn-iris"} 1' in prom
        assert len(wasm_lines(envoy, "rolled back, 100% to")) == 1
        # A new configuration (the operator's next step) starts unrolled.
        backends["c2"].fail = False
        cfg["services"][0]["canaryTrafficPercent"] = 40
        stack.write_ecds(ecds, cfg, "2")
        assert wait_for(lambda: "c2" in split(envoy, 50), timeout=2.0)
        assert_binomial(split(envoy, 600)["c2"], 600, 0.4)


def test_sparse_canary_is_not_rolled_back(start_envoy, backends):
    policy = {"autoRollback": {"maxErrorRate": 0.05, "minRequests": 50, "windowMs": 10000}}
    envoy = start_envoy({"statusPath": "/status", "services": [service(10, **policy)]}, concurrency=2)
    backends["c2"].fail = True
    # 30 failures (header-routed responses count too), below minRequests.
    for _ in range(30):
        assert stack.request(envoy.port, "/", host=HOST, headers=[("traffic", "test")]).status == 500
    time.sleep(0.5)
    status = json.loads(stack.request(envoy.port, "/status", host="x").body)
    assert status["services"][0]["rolledBack"] is False
    assert "rolled back" not in envoy.log()


def test_metrics_count_every_routed_request_by_revision_and_class(start_envoy, backends):
    envoy = start_envoy({"metrics": True, "services": [service(50, **PROBES)]}, concurrency=2)
    seen = split(envoy, 400)
    backends["c2"].fail = True
    for _ in range(10):
        stack.request(envoy.port, "/", host=HOST, headers=[("traffic", "test")])
    time.sleep(0.5)
    prom = stack.request(envoy.admin_port, "/stats/prometheus").body.decode()

    def metric(name, revision):
        m = re.search(rf'^canary_router_{name}{{service="sklearn-iris",revision="{revision}"}} (\d+)$', prom, re.M)
        return int(m.group(1)) if m else None

    assert metric("requests", R1) == seen["c1"]
    assert metric("requests", R2) == seen["c2"] + 10
    assert metric("responses_2xx", R2) == seen["c2"]
    assert metric("responses_5xx", R2) == 10
    assert metric("ready", R2) == 1 and metric("effective_percent", R1) == 50


def test_request_metrics_are_off_by_default(start_envoy, backends):
    # Off by default: the `:status` read they need costs about 3% of a proxied request, and
    # Envoy's own cluster stats already count each revision (one cluster per revision).
    envoy = start_envoy({"services": [service(50)]})
    split(envoy, 20)
    time.sleep(1.2)
    prom = stack.request(envoy.admin_port, "/stats/prometheus").body.decode()
    assert "canary_router_requests" not in prom and "canary_router_responses" not in prom
    assert re.search(r'^envoy_cluster_upstream_rq_total\{envoy_cluster_name="c2"\} [1-9]', prom, re.M), prom


def test_status_view_matches_the_config(start_envoy):
    envoy = start_envoy({"statusPath": "/canary-router/status", "services": [service(10)]})
    r = stack.request(envoy.port, "/canary-router/status?pretty", host="anything")
    assert r.status == 200 and r.header("content-type") == "application/json"
    svc = json.loads(r.body)["services"][0]
    assert svc == {
        "name": "sklearn-iris", "url": f"http://{HOST}", "ready": True, "prev": 90.0, "latest": 10.0,
        "prevRolledoutRevision": R1, "latestReadyRevision": R2, "rolledBack": False, "failOpen": False,
        "configuredSplit": [{"revision": R2, "percent": 10.0}, {"revision": R1, "percent": 90.0}],
        "effectiveSplit": [{"revision": R2, "percent": 10.0}, {"revision": R1, "percent": 90.0}],
        "revisions": [{"name": R1, "cluster": "c1", "ready": True, "ejected": False},
                      {"name": R2, "cluster": "c2", "ready": True, "ejected": False}],
    }


def test_no_healthy_revision_fails_open_and_says_so_once(start_envoy, backends):
    envoy = start_envoy({"services": [service(50, **PROBES)]}, concurrency=2)
    backends["c1"].ready = backends["c2"].ready = False
    assert wait_for(lambda: "fail open" in envoy.log(), timeout=3.0)
    time.sleep(0.3)
    seen = split(envoy, 400)
    assert_binomial(seen["c2"], 400, 0.5)
    assert len(wasm_lines(envoy, "fail open")) == 1
