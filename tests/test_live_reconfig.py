"""Live reconfiguration the way Istio delivers a WasmPlugin change: the filter comes
from extension config discovery (ECDS, here a file Envoy watches). Under steady load the
canary moves 10 -> 50 -> 0 -> promoted, then a bad config arrives. Every step's config
gives the revisions a distinct `host`, and the upstream echoes the authority it saw, so
each response says which configuration routed it."""

import json
import time

import stack
from test_routing import assert_binomial, kserve_service

HOST = "sklearn-iris.kserve-test.example.com"
STEPS = [10, 50, 0, None]  # None: promoted (canaryTrafficPercent removed)
STEP_SECONDS = 2.5
REPORT = stack.ROOT / "target" / "reports" / "live_reconfig.json"


def step_config(version: int, percent):
    svc = kserve_service(percent)
    svc["revisions"] = [{"name": r["name"], "cluster": r["cluster"], "host": f"{r['cluster']}.v{version}.internal"}
                        for r in svc["revisions"]]
    return {"services": [svc]}


def version_of(authority: str | None) -> int | None:
    # c1.v3.internal -> 3
    try:
        return int(authority.split(".")[1][1:])
    except (AttributeError, IndexError, ValueError):
        return None


def test_canary_moves_under_load_with_no_failed_request(tmp_path, backends):
    ecds = tmp_path / "ecds.json"
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), step_config(1, STEPS[0]),
                             {n: b.port for n, b in backends.items()}, ecds_path=ecds)
    with stack.Envoy(cfg, tmp_path, concurrency=2) as envoy, stack.Load(envoy.port, HOST, ("x-backend", "x-seen-authority")) as load:
        writes = {1: time.time()}
        time.sleep(STEP_SECONDS)
        for version, percent in enumerate(STEPS[1:], start=2):
            writes[version] = time.time()
            stack.write_ecds(ecds, step_config(version, percent), str(version))
            time.sleep(STEP_SECONDS)
        bad_at = time.time()
        stack.write_ecds(ecds, {"services": [kserve_service(150)]}, "bad")
        time.sleep(STEP_SECONDS)
    log = envoy.log()

    records = load.records
    # Records: (start, end, status, x-backend, x-seen-authority).
    failed = [r for r in records if r[2] != 200]
    assert not failed, f"{len(failed)} failed of {len(records)}: {failed[:5]}"

    report = {"requests": len(records), "failed": 0, "steps": []}
    for version, percent in enumerate(STEPS, start=1):
        written = writes[version]
        # Time to new config: from the write until the last request that still started
        # on the previous configuration.
        stale = [r[0] for r in records if r[0] >= written and version_of(r[4]) == version - 1]
        switch = (max(stale) - written) if stale else 0.0
        mine = [r for r in records if version_of(r[4]) == version]
        canary = sum(1 for r in mine if r[3] == "c2")
        expected = 100 if percent is None else percent
        if version > 1:
            assert switch < 1.0, f"step {version}: old config served {switch:.3f}s after the write"
            report["steps"].append({"canaryTrafficPercent": percent, "requests": len(mine),
                                    "observed_canary_percent": round(100 * canary / len(mine), 1),
                                    "time_to_new_split_ms": round(1000 * switch, 1)})
        assert len(mine) > 200, f"step {version}: only {len(mine)} requests"
        if expected in (0, 100):
            assert canary == len(mine) * expected // 100, f"step {version}: {canary} of {len(mine)}"
        else:
            assert_binomial(canary, len(mine), expected / 100)

    # The bad config was refused; the promoted one kept serving every request.
    after_bad = [r for r in records if r[0] > bad_at]
    assert after_bad and all(version_of(r[4]) == len(STEPS) and r[3] == "c2" for r in after_bad)
    assert 'configuration rejected: service "sklearn-iris": canaryTrafficPercent: 150' in log
    assert "update rejected" in log, log[-2000:]
    report["bad_config_requests_after"] = len(after_bad)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
