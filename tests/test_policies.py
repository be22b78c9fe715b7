"""Traffic policies beyond KServe, on real Envoy: sticky users, exact splits, tags by
header."""

import collections

import stack
from test_health import wait_for
from test_routing import HOST, R1, R2, assert_binomial, kserve_service


def sticky_service(percent, **sticky):
    svc = kserve_service(percent)
    svc["sticky"] = sticky
    return svc


def revision_of(envoy, user, port=None):
    r = stack.request(port or envoy.port, "/", host=HOST, headers=[("cookie", f"theme=dark; session={user}")])
    return r.header("x-canary-revision")


def test_sticky_users_stay_put_across_workers_processes_and_a_percentage_increase(tmp_path, backends):
    users = [f"user-{i}" for i in range(600)]
    ecds = tmp_path / "ecds.json"
    clusters = {n: b.port for n, b in backends.items()}
    first = stack.Envoy(stack.envoy_config(stack.free_port(), stack.free_port(),
                                           {"services": [sticky_service(10, cookie="session")]}, clusters, ecds_path=ecds),
                        tmp_path, concurrency=2, name="first")
    second = stack.Envoy(stack.envoy_config(stack.free_port(), stack.free_port(),
                                            {"services": [sticky_service(10, cookie="session")]}, clusters),
                         tmp_path, concurrency=2, name="second")
    with first, second:
        at10 = {u: revision_of(first, u) for u in users}
        # New connections land on either worker: every repeat agrees.
        assert all(revision_of(first, u) == at10[u] for u in users[:200])
        # Another Envoy process (another gateway replica) assigns the same way.
        assert all(revision_of(second, u) == at10[u] for u in users)
        assert_binomial(sum(1 for r in at10.values() if r == R2), len(users), 0.10)
        # 10% -> 30%: users only move onto the canary, never back.
        stack.write_ecds(ecds, {"services": [sticky_service(30, cookie="session")]}, "30")
        assert wait_for(lambda: sum(revision_of(first, u) == R2 for u in users[:100]) >
                        sum(at10[u] == R2 for u in users[:100]), timeout=5.0), "30% never applied"
        at30 = {u: revision_of(first, u) for u in users}
        assert all(at30[u] == R2 for u in users if at10[u] == R2)
        assert_binomial(sum(1 for r in at30.values() if r == R2), len(users), 0.30)
        # Without the cookie, the normal split decides.
        seen = collections.Counter(stack.request(first.port, "/", host=HOST).header("x-canary-revision")
                                   for _ in range(400))
        assert_binomial(seen[R2], 400, 0.30)


def test_sticky_by_header(start_envoy):
    envoy = start_envoy({"services": [sticky_service(50, header="x-user-id")]}, concurrency=2)
    for user in ("alice", "bob", "carol", "dave"):
        seen = {stack.request(envoy.port, "/", host=HOST, headers=[("x-user-id", user)]).header("x-canary-revision")
                for _ in range(30)}
        assert len(seen) == 1, (user, seen)


def test_exact_split_counts_within_one_at_every_step(start_envoy):
    svc = kserve_service(10)
    svc["split"] = "exact"
    envoy = start_envoy({"services": [svc]}, concurrency=1)
    counts = collections.Counter()
    for n in range(1, 301):
        counts[stack.request(envoy.port, "/", host=HOST).header("x-canary-revision")] += 1
        assert abs(counts[R2] - 0.1 * n) < 1 and abs(counts[R1] - 0.9 * n) < 1, (n, counts)
    # Tagged and header-routed requests do not move the interleave.
    for _ in range(7):
        stack.request(envoy.port, "/", host=f"latest-{HOST}")
        stack.request(envoy.port, "/", host=HOST, headers=[("traffic", "test")])
    for n in range(301, 401):
        counts[stack.request(envoy.port, "/", host=HOST).header("x-canary-revision")] += 1
        assert abs(counts[R2] - 0.1 * n) < 1, (n, counts)


def test_tag_header_routes_and_is_stripped(start_envoy, backends):
    untagged = {"name": "other", "hosts": ["other.example.com"], "revisions": [{"name": "o1", "cluster": "c3"}]}
    envoy = start_envoy({"services": [kserve_service(0), untagged]})
    for value, backend in [("latest", "c2"), ("prev", "c1"), ("LATEST", "c1"), ("unknown", "c1"), ("", "c1")]:
        r = stack.request(envoy.port, "/", host=HOST, headers=[("x-canary-tag", value)])
        assert r.header("x-backend") == backend, value
    # Tag before header rules: the rule says latest, the tag says prev.
    r = stack.request(envoy.port, "/", host=HOST, headers=[("x-canary-tag", "prev"), ("traffic", "test")])
    assert r.header("x-backend") == "c1"
    # Only for services with tag routing, and never upstream, whatever the host.
    assert stack.request(envoy.port, "/", host="other.example.com", headers=[("x-canary-tag", "latest")]).header("x-backend") == "c3"
    stack.request(envoy.port, "/", host="nobody.example.com", headers=[("x-canary-tag", "latest")])
    for name in ("c1", "c2", "c3", "fallback"):
        assert all(v == [] for v in backends[name].headers_seen("x-canary-tag")), name


def rfc3339(t: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def steps_service(weights, start, interval=2, **extra):
    svc = kserve_service(None)
    svc["steps"] = {"weights": weights, "intervalSeconds": interval, "startTime": rfc3339(start)}
    svc.update(extra)
    return svc


def canary_share(envoy, n=200):
    return sum(stack.request(envoy.port, "/", host=HOST).header("x-canary-revision") == R2 for _ in range(n))


def sleep_until(t):
    import time
    time.sleep(max(0.0, t - time.time()))


def test_steps_advance_with_the_clock(start_envoy):
    import time
    start = time.time() + 2.0
    envoy = start_envoy({"services": [steps_service([10, 60, 100], start)]}, concurrency=2)
    assert_binomial(canary_share(envoy), 200, 0.10)  # before startTime: the first step
    sleep_until(start + 2.3)
    assert_binomial(canary_share(envoy), 200, 0.60)
    sleep_until(start + 4.3)
    assert canary_share(envoy) == 200  # the last step routes as promoted


def test_rollback_stops_the_steps(start_envoy, backends):
    import time
    start = time.time()
    policy = {"autoRollback": {"maxErrorRate": 0.05, "minRequests": 20, "windowMs": 10000}}
    envoy = start_envoy({"statusPath": "/status", "services": [steps_service([30, 60, 100], start, **policy)]},
                        concurrency=2)
    backends["c2"].fail = True
    for _ in range(300):
        stack.request(envoy.port, "/", host=HOST)
    assert wait_for(lambda: canary_share(envoy, 50) == 0, timeout=2.0)
    sleep_until(start + 4.5)  # past the 100% step
    assert canary_share(envoy) == 0
    import json
    assert json.loads(stack.request(envoy.port, "/status", host="x").body)["services"][0]["rolledBack"] is True
