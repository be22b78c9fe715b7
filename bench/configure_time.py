"""on_configure time of make bench's variant f (10,000 services) in real Envoy, without the
rest of the benchmark: bench.configure_alone, i.e. an Envoy with only f's
listener started RUNS times (default 3), and the time the filter logs (`configuration
loaded in X ms`), once per VM (the main thread loads it twice, the worker once).

    make opt && .venv/bin/python bench/configure_time.py [RUNS] [WASM]

WASM defaults to target/canary-router.wasm (make opt's output).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if len(sys.argv) > 2:
        bench.OPT_WASM = Path(sys.argv[2]).resolve()
    wasm = bench.OPT_WASM
    if not wasm.exists():
        raise SystemExit(f"{wasm} missing: make opt")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        loads = bench.configure_alone(Path(tmp), runs)
    for run in range(1, runs + 1):
        print(f"run {run}: " + ", ".join(f"{c['ms']:.1f} ms ({c['thread']}, VM memory {c['memory_mib']:.1f} MiB)"
                                         for c in loads if c["run"] == run), flush=True)
    times = sorted(c["ms"] for c in loads)
    print(f"on_configure, {bench.SERVICES_F:,} services: max {times[-1]:.1f} ms, "
          f"median {times[len(times) // 2]:.1f} ms, min {times[0]:.1f} ms over {len(times)} loads "
          f"(load average {load:.2f} -> {os.getloadavg()[0]:.2f}; {wasm.stat().st_size:,} bytes of wasm)")


if __name__ == "__main__":
    main()
