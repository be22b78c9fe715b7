"""Soak under faults: steady load through real Envoy (2 workers) while revisions fail
(500s), are killed and restarted (refused connections), hang, and the configuration is
reloaded through ECDS every few seconds. Afterwards: no VM restart or panic, memory
flat, no request routed to an ejected revision or an unknown cluster, and every
client-visible error explained by a fault that was injected at that moment.

    make soak                      # 5 minutes (SOAK_SECONDS=...)
    .venv/bin/python bench/soak.py 300

tests/test_soak.py runs a short version and asserts the same.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))

import stack  # noqa: E402

HOST = "iris.example.com"
CLUSTERS = ("c1", "c2", "c3")
# Faults take turns, one revision at a time: (kind, cluster).
FAULTS = [("500s", "c1"), ("down", "c2"), ("hang", "c3")]
EJECTION_MS = 2000
# After a fault ends, requests already in flight may still fail for this long.
GRACE = 2.5


def config(step: int) -> dict:
    shares = [(40, 30, 30), (30, 40, 30), (30, 30, 40)][step % 3]
    return {"statusPath": "/status", "services": [{
        "name": "iris", "hosts": [HOST],
        "revisions": [{"name": f"iris-{c}", "cluster": c} for c in CLUSTERS],
        "traffic": [{"revisionName": f"iris-{c}", "percent": p} for c, p in zip(CLUSTERS, shares)],
        # The backends share one Python process with the load generator: under full load
        # they can take a few hundred ms to answer a probe, so the timeout leaves room.
        "healthCheck": {"intervalMs": 300, "timeoutMs": 250, "unhealthyThreshold": 2, "healthyThreshold": 2},
        "outlier": {"maxErrorRate": 0.3, "minRequests": 20, "windowMs": 2000, "ejectionMs": EJECTION_MS},
    }]}


def inject(backend: stack.EchoBackend, kind: str, on: bool):
    """Starts (`on`) or ends one fault on a backend."""
    if kind == "500s":
        backend.fail = on
    elif kind == "hang":
        backend.hang = on
    elif on:
        backend.stop()
    else:
        backend.restart()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stat(envoy, name: str) -> int:
    text = stack.request(envoy.admin_port, f"/stats?filter={re.escape(name)}").body.decode()
    m = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def ejections(log: str) -> list[tuple[float, str]]:
    """(wall time, cluster) of every ejection the filter logged."""
    out = []
    for m in re.finditer(r'^\[([0-9-]+ [0-9:.]+)\].*revision "iris-(c\d)" ejected for', log, re.M):
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((t, m.group(2)))
    return out


def run(seconds: float, workdir: Path, fault_seconds: float = 4.0, reload_seconds: float = 3.0) -> dict:
    backends = {c: stack.EchoBackend(c) for c in CLUSTERS}
    ecds = workdir / "ecds.json"
    faults: list[tuple[float, float, str, str]] = []  # (start, end, kind, cluster)
    reloads = 0
    try:
        cfg = stack.envoy_config(stack.free_port(), stack.free_port(), config(0),
                                 {c: b.port for c, b in backends.items()}, ecds_path=ecds, route_timeout="1s")
        with stack.Envoy(cfg, workdir, concurrency=2) as envoy, stack.Load(envoy.port, HOST, ("x-backend", "x-canary-revision"),
                                                                    path="/v1/models/iris:predict") as load:
            time.sleep(3)  # warm up
            vms_before = stat(envoy, "wasm.envoy.wasm.runtime.v8.active")
            rss_before = rss_kb(envoy.proc.pid)
            started = time.monotonic()
            next_fault = next_reload = started
            fault_index = 0
            active = None
            while time.monotonic() - started < seconds:
                now = time.monotonic()
                if now >= next_reload:
                    reloads += 1
                    stack.write_ecds(ecds, config(reloads), str(reloads))
                    next_reload = now + reload_seconds
                if now >= next_fault:
                    if active:  # end the running fault
                        kind, cluster, since = active
                        inject(backends[cluster], kind, False)
                        faults.append((since, time.time(), kind, cluster))
                        active = None
                        next_fault = now + fault_seconds / 2  # a quiet spell between faults
                    else:
                        kind, cluster = FAULTS[fault_index % len(FAULTS)]
                        fault_index += 1
                        inject(backends[cluster], kind, True)
                        active = (kind, cluster, time.time())
                        next_fault = now + fault_seconds
                time.sleep(0.05)
            if active:
                kind, cluster, since = active
                inject(backends[cluster], kind, False)
                faults.append((since, time.time(), kind, cluster))
            time.sleep(GRACE)  # let the last faulty requests finish
            vms_after = stat(envoy, "wasm.envoy.wasm.runtime.v8.active")
            created = stat(envoy, "wasm.envoy.wasm.runtime.v8.created")
            rss_after = rss_kb(envoy.proc.pid)
            alive = envoy.proc.poll() is None
        log = envoy.log()
    finally:
        for b in backends.values():
            try:
                b.stop()
            except Exception:
                pass

    def explained(record) -> bool:
        start, end, status, backend, revision = record
        for f_start, f_end, kind, cluster in faults:
            if not (start <= f_end + GRACE and end >= f_start):
                continue
            if f"iris-{cluster}" != revision and backend != cluster:
                continue
            if kind == "500s" and status == 500 and backend == cluster:
                return True
            if kind == "down" and status == 503:
                return True
            if kind == "hang" and status in (503, 504):
                return True
        return False

    errors = [r for r in load.records if r[2] != 200]
    unexplained = [r for r in errors if not explained(r)]
    # Routed to an ejected revision: by the split, one tick (100 ms) after the ejection
    # was logged and before it ended.
    ejected = ejections(log)
    to_ejected = [r for r in load.records for t, c in ejected
                  if r[4] == f"iris-{c}" and t + 0.25 <= r[0] <= t + EJECTION_MS / 1000 - 0.25]
    return {
        "seconds": seconds,
        "requests": len(load.records),
        "errors": len(errors),
        "errors_explained_by_faults": len(errors) - len(unexplained),
        "unexplained": [list(r) for r in unexplained[:10]],
        "unknown_cluster": sum(1 for r in load.records if r[2] == 503 and r[3] is None and r[4] is None),
        "routed_to_ejected": len(to_ejected),
        "faults_injected": len(faults),
        "fault_kinds": sorted({k for _, _, k, _ in faults}),
        "config_reloads": reloads,
        "ejections": len(ejected),
        # Live VMs (one per worker plus the main thread's): a VM that died and was
        # replaced, or leaked, changes this. Envoy also builds one short-lived VM per
        # distinct new plugin configuration (`created` counts those too).
        "vms_active_before": vms_before,
        "vms_active_after": vms_after,
        "vms_created_total": created,
        "panics": log.count("panicked"),
        "vm_failures": log.count("Wasm VM failed"),
        "rss_kb_before": rss_before,
        "rss_kb_after": rss_after,
        "envoy_alive": alive,
    }


if __name__ == "__main__":
    # A plain kill ends through the cleanup code (the Envoy context manager, atexit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 300
    result = run(seconds, stack.scratch_dir("soak-"))
    out = ROOT / "target" / "reports" / "soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
