"""Cost per gRPC call of canary-router on real Envoy 1.40 (issue #13): the variant of
`make bench` for unary gRPC calls, reported, no target.

    make bench-grpc              # or: .venv/bin/python bench/grpc_bench.py (after make bench once)

One Envoy (`--concurrency 1`, under callgrind) holds an h2c listener per variant, each
sending the calls over HTTP/2 to a gRPC server outside Envoy (grpcio, answering every
`inference.GRPCInferenceService/ModelInfer` with a fixed message: response headers, one
message, trailers with grpc-status 0), so Envoy's figure holds only its own work:

    ga    no filter, fixed route
    gc2   the floor of d (bench/filters/floor_d): read :authority, set the cluster header,
          set x-canary-revision on the response; no routing logic
    gd0   gd from a module without the response-trailers export (`make bench-grpc-filters`)
    gd    canary-router, canaryTrafficPercent 10 (as bench.py's d)
    gdm   gd with metrics: true (reads :status, and grpc-status in the trailers)

A gRPC answer ends with trailers, so Envoy calls canary-router's response-trailers
callback (exported for gRPC outcomes) on every call, which the floor does not export:
gd / gc2 holds that VM call, and gd - gd0 is its price. Instructions are counted as bench.py counts them (warm-up,
`callgrind_control -z`, BENCH_REQUESTS calls from 4 grpcio clients, dump, timers
removed; host calls named by the calibration listener). Prints a markdown table and
writes target/reports/bench-grpc.md and bench-grpc.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(ROOT / "bench"))

import grpc  # noqa: E402

import bench  # noqa: E402
import grpc_client  # noqa: E402
import stack  # noqa: E402

VARIANTS = [
    ("ga", "no filter, fixed route"),
    ("gc2", "floor of d: read :authority, set cluster header, set response header (no routing logic)"),
    ("gd0", "as gd, built without proxy_on_response_trailers (gRPC outcomes not read)"),
    ("gd", "canary-router, canaryTrafficPercent 10"),
    ("gdm", "canary-router, canaryTrafficPercent 10, metrics (grpc-status read from the trailers)"),
]
HOST = bench.HOST
CLIENTS = 4
SAMPLE = [[7.7, 3.0, 6.1, 2.3]]
REPORTS = bench.REPORTS
NO_TRAILERS = bench.TRIMMED_DIR / "canary-router-no-trailers.wasm"


class Upstream:
    """A gRPC server answering ModelInfer with a fixed ModelInferResponse (what KServe's
    iris model answers), from grpcio's C core: fast enough not to pace the calls Envoy
    serves under callgrind."""

    def __init__(self):
        answer = grpc_client.pb.ModelInferResponse(
            model_name="sklearn-iris", id="1",
            outputs=[grpc_client.pb.ModelInferResponse.InferOutputTensor(
                name="output-0", datatype="INT64", shape=[1],
                contents=grpc_client.pb.InferTensorContents(int64_contents=[2]))]).SerializeToString()
        handler = grpc.method_handlers_generic_handler(grpc_client.SERVICE, {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(lambda request, context: answer)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"{stack.LOOPBACK}:0")
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)


def plugin(metrics: bool) -> dict:
    svc = bench.service("bench-gd", [HOST], "bench-gd")
    return {"metrics": metrics, "services": [svc]}


def bootstrap(ports: dict[str, int], admin_port: int, upstream: int) -> dict:
    """bench.py's Envoy with no variant of its own (the calibration listener and its
    direct_response upstream), plus the gRPC listeners and their HTTP/2 clusters."""
    # (bench.bootstrap builds every listener it knows, then keeps the chosen ones.)
    cfg = bench.bootstrap({**{v: 0 for v, _ in bench.VARIANTS}, **ports}, admin_port, [])
    fixed = [{"match": {"prefix": "/"}, "route": {"cluster": "bench-ga"}}]
    grpc_listeners = {
        "ga": (bench.listener("bench_ga", ports["ga"], fixed, []), ["bench-ga"]),
        # floor_d sets the cluster header to bench-c2 (its own constant).
        "gc2": (bench.listener("bench_gc2", ports["gc2"], bench.cluster_header_routes(),
                               [bench.wasm_filter("bench-gc2", bench.FILTERS["floor_d"], None)]), ["bench-c2"]),
        "gd0": (bench.listener("bench_gd0", ports["gd0"], bench.cluster_header_routes(),
                               [bench.wasm_filter("bench-gd0", NO_TRAILERS, plugin(False))]), []),
        "gd": (bench.listener("bench_gd", ports["gd"], bench.cluster_header_routes(),
                              [bench.wasm_filter("bench-gd", bench.OPT_WASM, plugin(False), "bench-canary-router")]),
               ["bench-gd-1", "bench-gd-2"]),
        "gdm": (bench.listener("bench_gdm", ports["gdm"], bench.cluster_header_routes(),
                               [bench.wasm_filter("bench-gdm", bench.OPT_WASM, plugin(True), "bench-canary-router")]),
                []),  # the same service and clusters as gd
    }
    for listener, clusters in grpc_listeners.values():
        listener["filter_chains"][0]["filters"][0]["typed_config"]["codec_type"] = "AUTO"
        cfg["static_resources"]["listeners"].append(listener)
        cfg["static_resources"]["clusters"] += [stack.cluster(c, upstream, http2=True) for c in clusters]
    return cfg


def calls(port: int, n: int) -> int:
    """`n` unary ModelInfer calls (a multiple of the clients), all OK; how many were made."""
    n -= n % CLIENTS
    failed: list[str] = []

    def client():
        channel = grpc_client.channel(port, HOST)
        s = grpc_client.pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(n // CLIENTS):
            r = grpc_client.infer(s, SAMPLE, timeout=120)
            if r.code != grpc.StatusCode.OK:
                failed.append(f"{r.code.name} {r.details}")
        channel.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        sys.exit(f"gRPC calls to port {port}: {len(failed)} failed, e.g. {failed[0]}")
    return n


def check(ports: dict[str, int]):
    for v, _ in VARIANTS:
        r = grpc_client.infer(grpc_client.stub(ports[v], HOST), SAMPLE, timeout=60)
        if r.code != grpc.StatusCode.OK or r.predictions != [2]:
            sys.exit(f"variant {v}: {r}")
        if v != "ga" and not (r.initial.get("x-canary-revision") or "").startswith("bench-"):
            sys.exit(f"variant {v}: no x-canary-revision in {r.initial}")


def measure(workdir: Path) -> tuple[dict[str, bench.Dump], bench.Timers, bench.HostCalls]:
    upstream = Upstream()
    ports = {v: stack.free_port() for v in [*(v for v, _ in VARIANTS), bench.CALIBRATION, "upstream"]}
    admin_port = stack.free_port()
    config_path = workdir / "envoy-bench-grpc.json"
    config_path.write_text(json.dumps(bootstrap(ports, admin_port, upstream.port)))
    cg_dir = workdir / "callgrind"
    cg_dir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "envoy-callgrind-grpc.log"
    t0 = time.monotonic()
    proc, log = bench.start_envoy(config_path, log_path, cg_dir / "callgrind.out")
    control = lambda *args: subprocess.run(["callgrind_control", *args, str(proc.pid)],  # noqa: E731
                                           check=True, capture_output=True)
    dumps: dict[str, bench.Dump] = {}
    try:
        bench.wait_ready(admin_port, proc, 300, log_path)
        control("-i", "on")
        print(f"  Envoy under callgrind ready after {time.monotonic() - t0:.0f} s", flush=True)
        check(ports)

        def window(label: str, action) -> bench.Dump:
            return bench.callgrind_window(proc.pid, cg_dir, label, action)

        dumps["idle"] = window("idle", lambda: time.sleep(bench.IDLE_SECONDS))
        bench.hey(ports[bench.CALIBRATION], bench.CAL_WARMUP, bench.CALIBRATION)
        dumps[bench.CALIBRATION] = window(bench.CALIBRATION, lambda: bench.hey(
            ports[bench.CALIBRATION], bench.CAL_REQUESTS, bench.CALIBRATION))
        for v, _ in VARIANTS:
            calls(ports[v], bench.WARMUP)
            dumps[v] = window(v, lambda: calls(ports[v], bench.REQUESTS))  # noqa: B023
            print(f"  {v}: {dumps[v].summary / dumps[v].requests:,.0f} instructions/call with timers "
                  f"({dumps[v].requests} calls in {dumps[v].seconds:.1f} s)", flush=True)
    finally:
        stack.stop_process(proc, timeout=10)
        log.close()
        upstream.stop()
    timers = bench.Timers(dumps["idle"])
    return dumps, timers, bench.HostCalls(dumps[bench.CALIBRATION], timers)


def main():
    REPORTS.mkdir(parents=True, exist_ok=True)
    for f in (bench.OPT_WASM, NO_TRAILERS, bench.FILTERS["floor_d"], bench.FILTERS["hostcalls"]):
        if not f.exists():
            sys.exit(f"{f} is missing: run `make bench-grpc`, which builds it")
    workdir = stack.scratch_dir("bench-grpc-")
    print(f"gRPC instructions: Envoy under callgrind, {bench.WARMUP} warm-up then {bench.REQUESTS} "
          f"unary calls per variant ({CLIENTS} grpcio clients)", flush=True)
    dumps, timers, host = measure(workdir)
    names = [v for v, _ in VARIANTS]
    per_call = {v: (dumps[v].summary - timers.instructions(dumps[v])) / dumps[v].requests for v in names}
    hostcalls = {v: host.per_request(dumps[v], timers) for v in names}
    inside = {v: bench.wasm_breakdown(dumps[v], timers, host) for v in names if v != "ga"}
    lines = [
        "Envoy 1.40, --concurrency 1, under callgrind; each variant an h2c listener sending unary "
        "ModelInfer calls over HTTP/2 to a grpcio server outside Envoy (headers, one message, "
        f"trailers). {bench.REQUESTS} calls per variant from {CLIENTS} grpcio clients after "
        f"{bench.WARMUP} warm-up, timers excluded as in bench.py. Reported, no target.",
        "",
        "| variant | what | instructions/call | vs gc2 | host calls/call (measured) |",
        "|---|---|---:|---:|---|",
    ]
    for v, what in VARIANTS:
        lines.append(f"| {v} | {what} | {per_call[v]:,.0f} | {per_call[v] / per_call['gc2']:.3f} | "
                     f"{bench.fmt_calls(*hostcalls[v])} |")
    lines += [
        "",
        "Inside the wasm filters, per call: instructions in the callbacks Envoy calls (inclusive) = "
        "in host calls + in wasm code and V8 stubs: " + "; ".join(
            f"{v} {b['callbacks']:,.0f} = {b['host_calls']:,.0f} + {b['wasm_code']:,.0f}"
            for v, b in inside.items()) + ".",
        "Callbacks Envoy called per call (wasm exports): " + "; ".join(
            f"{v} {sum(dumps[v].calls_to[f] for f in bench.callbacks(dumps[v], timers.idle)) / dumps[v].requests:g}"
            for v in inside) + ".",
        f"The response-trailers export: gd - gd0 = {per_call['gd'] - per_call['gd0']:,.0f} instructions per "
        f"call (its VM call, nothing read without metrics); with metrics its grpc-status read: gdm - gd = "
        f"{per_call['gdm'] - per_call['gd']:,.0f} (with the :status read metrics make on every response).",
        "Instructions per host call (inclusive), of which calling back into wasm to allocate a returned "
        "value: " + "; ".join(
            f"{v}: " + ", ".join(f"{name} {c:,.0f} ({b:,.0f})" for name, (c, b) in sorted(per.items()))
            for v, per in ((v, host.per_call(dumps[v], timers)) for v in inside)) + ".",
    ]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    (REPORTS / "bench-grpc.md").write_text(report)
    (REPORTS / "bench-grpc.json").write_text(json.dumps({
        "instructions_per_call": per_call,
        "hostcalls_per_call": {v: {"total": t, "named": nm, "below_0.5": r} for v, (t, nm, r) in hostcalls.items()},
        "inside_wasm": inside}, indent=2))
    print(f"written to {REPORTS / 'bench-grpc.md'}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
