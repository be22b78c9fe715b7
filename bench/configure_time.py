"""on_configure time of make bench's variant f (10,000 services) in real Envoy, without the
rest of the benchmark (issue #6): starts Envoy RUNS times (default 3) with only f's
listener and reads the time the filter logs (`configuration loaded in X ms`), once per
VM (main thread and worker).

    make opt && .venv/bin/python bench/configure_time.py [RUNS] [WASM]

WASM defaults to target/canary-router.wasm (make opt's output).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
import stack  # noqa: E402


def one_run(workdir: Path, wasm: Path) -> list[float]:
    plugin = bench.plugin_f()
    clusters = {"bench-f-1": stack.free_port(), "bench-f-2": stack.free_port()}
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin, clusters,
                             wasm=wasm)
    with stack.Envoy(cfg, workdir):
        pass
    times = [float(m) for m in re.findall(r"configuration loaded in ([\d.]+) ms: 10000 service",
                                          (workdir / "envoy.log").read_text(errors="replace"))]
    if not times:
        raise SystemExit((workdir / "envoy.log").read_text(errors="replace")[-3000:])
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    wasm = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else bench.OPT_WASM
    if not wasm.exists():
        raise SystemExit(f"{wasm} missing: make opt")
    load = os.getloadavg()[0]
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            t = one_run(Path(tmp) / f"run{i}", wasm)
            print(f"run {i + 1}: " + ", ".join(f"{x:.1f} ms" for x in t), flush=True)
            times += t
    print(f"on_configure, {bench.SERVICES_F:,} services: max {max(times):.1f} ms, "
          f"min {min(times):.1f} ms over {len(times)} loads "
          f"(load average {load:.2f} -> {os.getloadavg()[0]:.2f}; {wasm.stat().st_size:,} bytes of wasm)")


if __name__ == "__main__":
    main()
