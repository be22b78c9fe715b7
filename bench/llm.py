"""make bench, the LLM variants (issue #15): what routing OpenAI requests by the model in
their body costs, on real Envoy 1.40, against the floor of the same Envoy chain. Reported,
not targets. Runs after bench/bench.py (`make bench`), or alone:

    .venv/bin/python bench/llm.py     # after `make bench` built the filters once

One Envoy (`--concurrency 1`) under callgrind holds one listener per variant, each
proxying to a `direct_response` listener in the same Envoy, as bench/bench.py does:

    o0    the floor: envoy/envoy.yaml's body filter (json_to_metadata behind its
          ExtensionWithMatcher) and a wasm filter that only reads the model from metadata
          and sets the cluster header (bench/filters/floor_openai); a 2 KiB chat request
    o1    canary-router with `openai`, the same chain and request: routed by body model to
          a 90/10 split, the body checked by serde_json, no rewrite
    o2    as o1, every revision with its own `model`: the body rewritten on every request
    o0-64k, o1-64k, o0-1m, o1-1m   o0 and o1 with 64 KiB and 1 MiB bodies: the body
          parse cost per request is o1's minus o0's at the same size
    d     bench.py's d (canary-router without `openai`, GET, a host that selects a service)
    d+o   as d, with an `openai` section in the configuration: no new host call
    d+oc  as d+o, with the body filter in the chain too (Envoy's matcher skips it)

Instructions per request as bench.py counts them (whole Envoy process, timers taken out,
host calls named by the calibration filter). Writes target/reports/bench-llm.md and .json.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
from bench import stack  # noqa: E402
import yaml  # noqa: E402

FLOOR = bench.TRIMMED_DIR / "bench_floor_openai.wasm"
PATH = "/v1/chat/completions"
MODEL = "llama-3-8b"
SHARED = "models.bench.example.com"  # no service has this host: routed by body
# variant: (what, body bytes or None for a GET, requests, warm-up)
VARIANTS = {
    "o0": ("floor: body filter + read model from metadata, set cluster header; 2 KiB chat request", 2048, 1000, 200),
    "o1": ("canary-router, routed by body model (90/10), body checked; 2 KiB", 2048, 1000, 200),
    "o2": ("as o1, every revision renames the model: body rewritten; 2 KiB", 2048, 1000, 200),
    "o0-64k": ("floor, 64 KiB chat request", 64 << 10, 200, 20),
    "o1-64k": ("as o1, 64 KiB", 64 << 10, 200, 20),
    "o0-1m": ("floor, 1 MiB chat request", (1 << 20) - 4096, 20, 4),
    "o1-1m": ("as o1, 1 MiB", (1 << 20) - 4096, 20, 4),
    "d": ("bench.py's d: no openai, GET", None, 1000, 200),
    "d+o": ("as d, with an openai section", None, 1000, 200),
    "d+oc": ("as d+o, with the body filter in the chain (skipped by its matcher)", None, 1000, 200),
}
FLOORS = {"o1": "o0", "o2": "o0", "o1-64k": "o0-64k", "o1-1m": "o0-1m", "d+o": "d", "d+oc": "d"}


def shipped_body_filter() -> tuple[list[dict], int]:
    cfg = yaml.safe_load((bench.ROOT / "envoy" / "envoy.yaml").read_text())
    listener = cfg["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    wasm = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm")
    return filters[:wasm], listener["per_connection_buffer_limit_bytes"]


def llm_service(name: str, rename: bool) -> dict:
    s = bench.service(name, [], name)
    del s["hosts"]
    s["models"] = [f"{MODEL}-{name}"] if name != "bench-o1" else [MODEL]
    s["canaryTrafficPercent"] = 10
    if rename:
        for i, r in enumerate(s["revisions"]):
            r["model"] = f"{MODEL}-v{i + 1}"
    return s


def plugin_llm() -> dict:
    # o1's service takes the model the requests name; o2's a model of its own (the
    # requests of o2 name it).
    return {"openai": {"maxBodyBytes": 2 << 20},
            "services": [llm_service("bench-o1", False), llm_service("bench-o2", True)]}


def plugin_d_openai() -> dict:
    p = bench.plugin_d()
    p["openai"] = {}
    p["services"].append(llm_service("bench-o1", False))
    return p


def body(size: int, model: str) -> bytes:
    """An OpenAI chat request of exactly `size` bytes."""
    head = json.dumps({"model": model, "messages": [{"role": "system", "content": "You are terse."},
                                                    {"role": "user", "content": ""}],
                       "temperature": 0.2, "user": "user-4242"})
    pad = size - len(head.encode())
    doc = json.loads(head)
    doc["messages"][1]["content"] = ("Tell me about canaries. " * (pad // 24 + 1))[:pad]
    out = json.dumps(doc).encode()
    assert len(out) == size, (len(out), size)
    return out


def bootstrap(ports: dict[str, int], admin_port: int) -> dict:
    pre, _ = shipped_body_filter()
    canary = lambda name, cfg: bench.wasm_filter(name, bench.OPT_WASM, cfg, "bench-llm-canary-router")  # noqa: E731
    routes = bench.cluster_header_routes()
    every = {
        "o0": [*pre, bench.wasm_filter("bench-o0", FLOOR, None, "bench-llm-floor")],
        "o1": [*pre, canary("bench-o1", plugin_llm())],
        "o2": [*pre, canary("bench-o2", plugin_llm())],
        "o0-64k": [*pre, bench.wasm_filter("bench-o0-64k", FLOOR, None, "bench-llm-floor")],
        "o1-64k": [*pre, canary("bench-o1-64k", plugin_llm())],
        "o0-1m": [*pre, bench.wasm_filter("bench-o0-1m", FLOOR, None, "bench-llm-floor")],
        "o1-1m": [*pre, canary("bench-o1-1m", plugin_llm())],
        "d": [canary("bench-d", bench.plugin_d())],
        "d+o": [canary("bench-do", plugin_d_openai())],
        "d+oc": [*pre, canary("bench-doc", plugin_d_openai())],
    }
    listeners = [bench.listener(f"bench_{v.replace('+', '_').replace('-', '_')}", ports[v], routes, filters)
                 for v, filters in every.items()]
    for lst in listeners:
        lst["per_connection_buffer_limit_bytes"] = 4 << 20
    listeners.append(bench.listener("bench_cal", ports[bench.CALIBRATION], [
        {"match": {"prefix": "/"}, "route": {"cluster": "bench-cal"}}],
        [bench.wasm_filter("bench-cal", bench.FILTERS["hostcalls"], None)]))
    listeners.append(bench.listener("bench_upstream", ports["upstream"], [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}], []))
    names = ["bench-llm-floor", "bench-cal", *(f"bench-{x}-{i}" for x in ("o1", "o2", "d") for i in (1, 2))]
    clusters = [{"name": n, "type": "STATIC", "connect_timeout": "1s",
                 "per_connection_buffer_limit_bytes": 4 << 20,
                 "load_assignment": {"cluster_name": n, "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": {"socket_address": {
                         "address": stack.LOOPBACK, "port_value": ports["upstream"]}}}}]}]}}
                for n in names]
    return {"node": {"id": "canary-router-bench-llm", "cluster": "bench"},
            "admin": {"address": {"socket_address": {"address": stack.LOOPBACK, "port_value": admin_port}}},
            "stats_flush_interval": "299s",
            "static_resources": {"listeners": listeners, "clusters": clusters}}


def request_of(v: str, workdir: Path) -> tuple[str, str, Path | None]:
    """(host, path, body file) of variant v's requests."""
    _, size, _, _ = VARIANTS[v]
    if size is None:
        return bench.HOST, "/", None
    model = f"{MODEL}-bench-o2" if v == "o2" else MODEL
    path = workdir / f"body-{v}.json"
    path.write_bytes(body(size, model))
    return SHARED, PATH, path


def hey(port: int, n: int, request: tuple[str, str, Path | None]) -> int:
    n -= n % bench.CLIENTS_HEY
    host, path, data = request
    args = ["hey", "-n", str(n), "-c", str(bench.CLIENTS_HEY), "-t", "120", "-host", host]
    if data is not None:
        args += ["-m", "POST", "-T", "application/json", "-D", str(data)]
    out = subprocess.run([*args, f"http://{stack.LOOPBACK}:{port}{path}"], capture_output=True,
                         text=True, check=True).stdout
    codes = {int(c): int(k) for c, k in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    if codes != {200: n}:
        sys.exit(f"hey on {port}{path}: status codes {codes}, expected {n} x 200\n{out}")
    return n


def check(ports: dict[str, int], requests: dict) -> None:
    for v in VARIANTS:
        host, path, data = requests[v]
        r = stack.request(ports[v], path, host=host, body=data.read_bytes() if data else None,
                          headers=[("content-type", "application/json")] if data else [], timeout=120)
        if r.status != 200:
            sys.exit(f"variant {v}: {r.status} {r.body[:300]!r}")
        if v.startswith("o1") or v in ("o2", "d", "d+o", "d+oc"):
            if not (r.header("x-canary-revision") or "").startswith("bench-"):
                sys.exit(f"variant {v}: no x-canary-revision in {r.header_list}")


def main():
    bench.REPORTS.mkdir(parents=True, exist_ok=True)
    for f in [bench.OPT_WASM, FLOOR, bench.FILTERS["hostcalls"]]:
        if not f.exists():
            sys.exit(f"{f} is missing: run `make bench`, which builds it")
    workdir = stack.scratch_dir("bench-llm-")
    ports = {v: stack.free_port() for v in [*VARIANTS, bench.CALIBRATION, "upstream"]}
    admin_port = stack.free_port()
    config = workdir / "envoy-bench-llm.json"
    config.write_text(json.dumps(bootstrap(ports, admin_port)))
    requests = {v: request_of(v, workdir) for v in VARIANTS}

    cg_dir = (bench.REPORTS / "callgrind" if bench.PROFILE else workdir / "callgrind") / "llm"
    shutil.rmtree(cg_dir, ignore_errors=True)
    cg_dir.mkdir(parents=True)
    log_path = workdir / "envoy-callgrind-llm.log"
    print("LLM variants: Envoy under callgrind, one listener per variant", flush=True)
    t0 = time.monotonic()
    proc, log = bench.start_envoy(config, log_path, cg_dir / "callgrind.out")
    control = lambda *args: subprocess.run(["callgrind_control", *args, str(proc.pid)],  # noqa: E731
                                           check=True, capture_output=True)
    dumps: dict[str, bench.Dump] = {}
    try:
        bench.wait_ready(admin_port, proc, 300, log_path)
        control("-i", "on")
        print(f"  ready after {time.monotonic() - t0:.0f} s", flush=True)
        check(ports, requests)

        def window(label: str, action) -> bench.Dump:
            return bench.callgrind_window(proc.pid, cg_dir, label, action)

        dumps["idle"] = window("idle", lambda: time.sleep(bench.IDLE_SECONDS))
        hey(ports[bench.CALIBRATION], bench.CAL_WARMUP, (bench.HOST, "/", None))
        dumps[bench.CALIBRATION] = window(bench.CALIBRATION, lambda: hey(
            ports[bench.CALIBRATION], bench.CAL_REQUESTS, (bench.HOST, "/", None)))
        for v, (_, _, n, warm) in VARIANTS.items():
            hey(ports[v], warm, requests[v])
            dumps[v] = window(v, lambda: hey(ports[v], n, requests[v]))  # noqa: B023
            print(f"  {v}: {dumps[v].summary / dumps[v].requests:,.0f} instructions/request with timers "
                  f"({dumps[v].requests} requests in {dumps[v].seconds:.1f} s)", flush=True)
    finally:
        stack.stop_process(proc, timeout=10)
        log.close()

    timers = bench.Timers(dumps["idle"])
    host = bench.HostCalls(dumps[bench.CALIBRATION], timers)
    per_req = {v: (dumps[v].summary - timers.instructions(dumps[v])) / dumps[v].requests for v in VARIANTS}
    calls = {v: host.per_request(dumps[v], timers) for v in VARIANTS}
    inside = {v: bench.wasm_breakdown(dumps[v], timers, host) for v in VARIANTS}

    lines = ["LLM variants (bench/llm.py): Envoy 1.40, --concurrency 1, each variant a listener proxying "
             "to a direct_response listener in the same Envoy, POST /v1/chat/completions with the body "
             "sizes below (hey -c 4), the shipped body filter of envoy/envoy.yaml in front; instructions "
             "of the whole Envoy process under callgrind, timers excluded, as in bench.py.",
             "",
             "| variant | what | requests | instructions/request | vs its floor | host calls/request (measured) | in the wasm callbacks (host calls + wasm code) |",
             "|---|---|---:|---:|---:|---|---|"]
    for v, (what, _, _, _) in VARIANTS.items():
        floor = FLOORS.get(v)
        ratio = f"{per_req[v] / per_req[floor]:.3f} × {floor}" if floor else "floor"
        b = inside[v]
        lines.append(f"| {v} | {what} | {dumps[v].requests} | {per_req[v]:,.0f} | {ratio} | "
                     f"{bench.fmt_calls(*calls[v])} | {b['callbacks']:,.0f} ({b['host_calls']:,.0f} + "
                     f"{b['wasm_code']:,.0f}) |")
    parse = {size: per_req[f"o1{size}"] - per_req[f"o0{size}"] for size in ("", "-64k", "-1m")}
    sizes = {s: VARIANTS[f"o0{s}"][1] for s in parse}
    slope = {s: (parse[s] - parse[""]) / (sizes[s] - sizes[""]) for s in ("-64k", "-1m")}
    envoy_side = (per_req["o0-1m"] - per_req["o0"]) / (sizes["-1m"] - sizes[""])
    lines += ["",
              "canary-router above its floor (o1 minus o0 at the same size): "
              + ", ".join(f"{label} {parse[s]:,.0f} instructions/request" for s, label in
                          (("", "2 KiB"), ("-64k", "64 KiB"), ("-1m", "1 MiB")))
              + "; beyond 2 KiB it grows by " + " and ".join(f"{slope[s]:.2f}" for s in slope)
              + " instructions per byte (to 64 KiB, to 1 MiB: the body's copy into the VM and serde_json's "
              f"check), Envoy's side (json_to_metadata, holding the body) by {envoy_side:.1f} per byte. "
              f"The rewrite (o2 minus o1, 2 KiB): {per_req['o2'] - per_req['o1']:,.0f} instructions/request.",
              f"Without `openai` a request costs what it did: d+o / d = {per_req['d+o'] / per_req['d']:.3f}; "
              f"with the body filter in the chain (Envoy's matcher skipping it): d+oc / d = "
              f"{per_req['d+oc'] / per_req['d']:.3f}."]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    (bench.REPORTS / "bench-llm.md").write_text(report)
    (bench.REPORTS / "bench-llm.json").write_text(json.dumps({
        "instructions_per_request": per_req, "hostcalls_per_request": {v: c[0] for v, c in calls.items()},
        "inside_wasm": inside, "above_floor": parse, "per_byte": slope,
        "envoy_side_per_byte": envoy_side}, indent=2))
    print(f"written to {bench.REPORTS / 'bench-llm.md'}")
    if not bench.PROFILE:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
