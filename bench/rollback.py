"""Time to automatic rollback, and client requests lost before it, for a canary that
starts failing every request at 10% share under steady load, on real Envoy (2 workers).

    make bench-rollback          # or: .venv/bin/python bench/rollback.py [rounds]

Prints a markdown table. The integration test tests/test_health.py runs one round of
the same measurement and asserts on it.
"""

from __future__ import annotations

import json
import statistics
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))

import stack  # noqa: E402

HOST = "sklearn-iris.kserve-test.example.com"
R1, R2 = "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"


def config(policy: dict) -> dict:
    return {"services": [{
        "name": "sklearn-iris", "hosts": [HOST], "tagRouting": True,
        "revisions": [{"name": R1, "cluster": "c1"}, {"name": R2, "cluster": "c2"}],
        "latestRolledoutRevision": R1, "latestReadyRevision": R2, "canaryTrafficPercent": 10,
        "autoRollback": policy,
    }]}


def measure(workdir: Path, policy: dict | None = None, clients: int = 4, warmup: float = 1.5,
            after: float = 3.0) -> dict:
    """One round: healthy canary for `warmup` s, then it fails every request."""
    policy = policy or {"maxErrorRate": 0.05, "minRequests": 20, "windowMs": 10000}
    backends = {"c1": stack.EchoBackend("c1"), "c2": stack.EchoBackend("c2")}
    try:
        cfg = stack.envoy_config(stack.free_port(), stack.free_port(), config(policy),
                                 {n: b.port for n, b in backends.items()})
        with stack.Envoy(cfg, workdir, concurrency=2) as envoy, stack.Load(envoy.port, HOST, ("x-backend",), clients) as load:
            time.sleep(warmup)
            broke_at = time.time()
            backends["c2"].fail = True
            time.sleep(after)
        log = envoy.log()
    finally:
        for b in backends.values():
            b.stop()
    # Records: (start, end, status, x-backend).
    after_break = [r for r in load.records if r[0] >= broke_at]
    to_canary = [r for r in after_break if r[3] == "c2"]
    failed = [r for r in after_break if r[2] != 200]
    last_canary = max((r[0] for r in to_canary), default=broke_at)
    elapsed = (max(r[0] for r in load.records) - min(r[0] for r in load.records)) if load.records else 1
    return {
        "requests": len(load.records),
        "rps": round(len(load.records) / elapsed),
        "failed_before_rollback": len(failed),
        "failed_not_from_canary": len([r for r in failed if r[3] != "c2"]),
        "time_to_rollback_ms": round(1000 * (last_canary - broke_at), 1),
        "rolled_back": "rolled back, 100% to" in log,
        "rollback_log_lines": log.count("rolled back, 100% to"),
        "canary_after_rollback": len([r for r in after_break if r[0] > last_canary and r[3] == "c2"]),
    }


def main(rounds: int):
    results = [measure(stack.scratch_dir("bench-rollback-")) for _ in range(rounds)]
    print(f"Automatic rollback: canary at 10% starts failing 100% of requests; "
          f"autoRollback maxErrorRate 0.05, minRequests 20; Envoy 2 workers, 4 keep-alive clients; {rounds} rounds.\n")
    print("| round | requests | rps | failed before rollback | time to rollback (ms) |")
    print("|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['requests']} | {r['rps']} | {r['failed_before_rollback']} | {r['time_to_rollback_ms']} |")
    med = lambda k: statistics.median(r[k] for r in results)  # noqa: E731
    print(f"| median | | | {med('failed_before_rollback')} | {med('time_to_rollback_ms')} |")
    out = ROOT / "target" / "reports" / "rollback.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    # A plain kill ends through the cleanup code (the Envoy context manager, atexit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
