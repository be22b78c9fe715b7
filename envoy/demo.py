"""A canary release of a KServe InferenceService through real Envoy and canary-router.

Starts two real KServe model servers (revision 00001: an SVC, revision 00002: a depth-1
tree; they answer [[7.7, 3.0, 6.1, 2.3]] with 2 and 1) and Envoy with the filter, then
walks through a release: shadow traffic to the new revision first, then KServe's canary
rollout: 10% canary, tag routing, header routing, promote, rollback; the same canary
over KServe's V2 gRPC protocol (ModelInfer through the same listener), where a canary
model that fails with gRPC INTERNAL (an HTTP 200 on the wire) is rolled back by itself;
and an automatic rollback when the canary's model server dies under load. Every step
sends real requests and prints what was observed next to what was configured.
Everything started is stopped at the end, also on Ctrl-C.

Run it with `make demo`.
"""

from __future__ import annotations

import collections
import copy
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc_client
import stack

HOST = "sklearn-iris.kserve-test.example.com"
R1, R2 = "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"
SAMPLE = [[7.7, 3.0, 6.1, 2.3]]
MODEL_OF = {2: R1, 1: R2}
REQUESTS = 400
GRPC_HOST = "sklearn-iris-grpc.kserve-test.example.com"

BASE = {
    "name": "sklearn-iris",
    "hosts": [HOST],
    "revisions": [{"name": R1, "cluster": "sklearn-iris-00001"},
                  {"name": R2, "cluster": "sklearn-iris-00002"}],
    "latestRolledoutRevision": R1,
    "latestReadyRevision": R2,
    "canaryTrafficPercent": 10,
    "tagRouting": True,
    "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}],
}


# The same InferenceService over gRPC: its own host, and the revisions' gRPC ports (Envoy
# clusters with HTTP/2 upstream), as in envoy/envoy.yaml.
GRPC_BASE = {**BASE, "name": "sklearn-iris-grpc", "hosts": [GRPC_HOST],
             "revisions": [{"name": R1, "cluster": "sklearn-iris-00001-grpc"},
                           {"name": R2, "cluster": "sklearn-iris-00002-grpc"}]}


def bold(s: str) -> str:
    return f"\033[1m{s}\033[0m" if sys.stdout.isatty() else s


class Demo:
    def __init__(self):
        self.workdir = stack.scratch_dir("demo-")
        self.models: dict[str, stack.ModelServer] = {}
        self.envoy: stack.Envoy | None = None
        self.listen_port = stack.free_port()
        self.admin_port = stack.free_port()

    def start_models(self):
        print(f"Starting two KServe model servers (logs in {self.workdir}) ...")
        # Registered before they start, so that an interrupt at any moment stops them.
        self.models = {"sklearn-iris-00001": stack.ModelServer("svc", self.workdir, grpc=True),
                       "sklearn-iris-00002": stack.ModelServer("tree", self.workdir, grpc=True)}
        for m in self.models.values():
            m.start()
        for cluster, m in self.models.items():
            m.wait_ready()
            grpc_client.wait_ready(m.grpc_port)
            print(f"  {cluster}: {m.kind} model ready on 127.0.0.1:{m.port} (REST), :{m.grpc_port} (gRPC)")

    def configure(self, service: dict, title: str):
        """Starts Envoy with `service` as the plugin configuration (a restart here; live
        reconfiguration through ECDS is how Istio does it)."""
        if self.envoy:
            self.envoy.stop()
        clusters = {name: m.port for name, m in self.models.items()}
        grpc_clusters = {f"{name}-grpc": m.grpc_port for name, m in self.models.items()}
        cfg = stack.envoy_config(self.listen_port, self.admin_port, {"services": [service]},
                                 clusters | grpc_clusters, http2=set(grpc_clusters))
        self.envoy = stack.Envoy(cfg, self.workdir, concurrency=2)
        self.envoy.start().wait_ready()
        print()
        print(bold(f"== {title}"))
        shown = {k: service[k] for k in ("latestRolledoutRevision", "latestReadyRevision",
                                          "canaryTrafficPercent", "mirror") if k in service}
        print(f"   plugin config: {shown}")

    def predict(self, host=HOST, headers=()):
        r = stack.predict_v1(self.envoy.port, host, SAMPLE, headers=headers)
        if r.status != 200:
            return None, r.status, r.header("x-canary-revision")
        return MODEL_OF.get(r.json()["predictions"][0]), r.status, r.header("x-canary-revision")

    def split(self, expected: dict[str, int]):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: self.predict(), range(REQUESTS)))
        print(f"   {REQUESTS} POST /v1/models/sklearn-iris:predict with Host: {HOST}")
        self.table(results, expected)

    def table(self, results, expected: dict[str, int]):
        """`results`: (revision the prediction says, status, revision the header says)."""
        by_model = collections.Counter(model for model, _, _ in results)
        mismatched = sum(1 for model, _, header in results if model != header)
        failed = sum(1 for _, status, _ in results if status not in (200, "OK"))
        print(f"   | {'revision':<30} | configured | observed |")
        print(f"   |{'-' * 32}|------------|----------|")
        for rev in (R1, R2):
            print(f"   | {rev:<30} | {expected.get(rev, 0):>9}% | {100 * by_model[rev] / REQUESTS:>7.1f}% |")
        print(f"   x-canary-revision matched the model that answered: {REQUESTS - mismatched}/{REQUESTS};"
              f" failed requests: {failed}")

    def one(self, label: str, host=HOST, headers=()):
        model, status, header = self.predict(host, headers)
        print(f"   {label:<48} -> {status} {header} (prediction says {model})")

    def mirror_counts(self) -> dict[str, int]:
        prom = stack.request(self.envoy.admin_port, "/stats/prometheus").body.decode()
        return {m.group(1): int(m.group(2)) for m in re.finditer(
            rf'^canary_router_(mirror_[a-z0-9_]+){{service="sklearn-iris",revision="{R2}"}} (\d+)$', prom, re.M)}

    def shadow(self):
        shadowed = copy.deepcopy(BASE)
        shadowed["canaryTrafficPercent"] = 0
        shadowed["mirror"] = {"revision": R2, "percent": 100}
        self.configure(shadowed, "Shadow: every request copied to the new revision, clients see only the old one")
        self.split({R1: 100})
        deadline = time.monotonic() + 3
        while self.mirror_counts().get("mirror_responses_2xx", 0) < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = self.mirror_counts()
        print(f"   copies sent to {R2}: {counts.get('mirror_requests', 0)}, answered 2xx: "
              f"{counts.get('mirror_responses_2xx', 0)} (canary_router_mirror_* metrics); "
              "their answers never reach a client")

    def run(self):
        self.start_models()

        self.shadow()
        self.configure(BASE, "Canary: 10% to the new revision (canaryTrafficPercent: 10)")
        self.split({R1: 90, R2: 10})
        print("   Tag and header routing reach one revision whatever the split:")
        self.one(f"Host: latest-{HOST}", host=f"latest-{HOST}")
        self.one(f"Host: prev-{HOST}", host=f"prev-{HOST}")
        self.one("traffic: test (Iter8-style header rule)", headers=[("traffic", "test")])
        self.one("x-canary-cluster: sklearn-iris-00002 (spoofed: ignored)",
                 headers=[("x-canary-cluster", "sklearn-iris-00002")])
        r = stack.request(self.envoy.port, "/", host="unknown.example.com",
                          headers=[("x-canary-cluster", "sklearn-iris-00002")])
        print(f"   {'unknown host with a spoofed x-canary-cluster':<48} -> {r.status} (not routed)")

        promoted = copy.deepcopy(BASE)
        del promoted["canaryTrafficPercent"]
        self.configure(promoted, "Promote: canaryTrafficPercent removed")
        self.split({R2: 100})

        rolled_back = copy.deepcopy(BASE)
        rolled_back["canaryTrafficPercent"] = 0
        self.configure(rolled_back, "Rollback: canaryTrafficPercent: 0")
        self.split({R1: 100})
        self.one(f"Host: latest-{HOST} (0% canary, still reachable)", host=f"latest-{HOST}")

        self.grpc()
        self.auto_rollback()

        print()
        print(f"Envoy config: {self.envoy.config_path}")
        print("Done.")

    def grpc_call(self, stub):
        r = grpc_client.infer(stub, SAMPLE)
        model = MODEL_OF.get(r.predictions[0]) if r.predictions else None
        return model, r.code.name, r.metadata("x-canary-revision")

    def grpc(self):
        """The same canary over KServe's V2 gRPC protocol, then a canary model that fails
        with gRPC INTERNAL: an HTTP 200 on the wire, judged by its grpc-status."""
        self.configure(GRPC_BASE, "gRPC: 10% canary over KServe V2 gRPC (ModelInfer, h2c on the same port)")
        stubs = [grpc_client.stub(self.listen_port, GRPC_HOST) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: self.grpc_call(stubs[i % 8]), range(REQUESTS)))
        print(f"   {REQUESTS} inference.GRPCInferenceService/ModelInfer calls with :authority {GRPC_HOST}")
        self.table(results, {R1: 90, R2: 10})

        watched = copy.deepcopy(GRPC_BASE)
        watched["autoRollback"] = {"maxErrorRate": 0.05, "minRequests": 20, "windowMs": 10000}
        self.configure(watched, "gRPC automatic rollback: the canary model fails with INTERNAL")
        print(f"   autoRollback: {watched['autoRollback']}")
        canary = self.models["sklearn-iris-00002"]
        with grpc_client.Load(self.listen_port, GRPC_HOST, SAMPLE, clients=8) as load:
            time.sleep(1.0)
            broke_at = time.time()
            canary.fault("internal")
            print("   ... the canary's predict now raises: KServe answers INTERNAL, HTTP 200 on the wire ...")
            deadline = time.monotonic() + 10
            while "rolled back" not in self.envoy.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        canary.fault("")
        after = [r for r in load.records if r[0] >= broke_at]
        failed = collections.Counter(r[2] for r in after if r[2] != "OK")
        tail = collections.Counter(r[3] for r in after[-REQUESTS:])
        print(f"   after:  {sum(failed.values())} of {len(after)} calls failed ({dict(failed)}) before the "
              f"rollback; of the last {REQUESTS}, {tail[R1]} went to {R1}, {tail[R2]} to the canary")
        for line in self.envoy.log().splitlines():
            if "rolled back" in line:
                print("   envoy log: " + line.split("canary-router: ", 2)[-1])

    def auto_rollback(self):
        """The canary's model server dies under load; the filter rolls back by itself."""
        watched = copy.deepcopy(BASE)
        watched["autoRollback"] = {"maxErrorRate": 0.05, "minRequests": 20, "windowMs": 10000}
        self.configure(watched, "Automatic rollback: the canary's model server dies under load")
        print(f"   autoRollback: {watched['autoRollback']}")
        with ThreadPoolExecutor(8) as pool:
            before = list(pool.map(lambda _: self.predict(), range(REQUESTS)))
            self.models["sklearn-iris-00002"].stop()
            print("   ... canary model server (sklearn-iris-00002) stopped ...")
            after = list(pool.map(lambda _: self.predict(), range(2 * REQUESTS)))
        failed = sum(1 for _, status, _ in after if status != 200)
        tail = collections.Counter(model for model, _, _ in after[-REQUESTS:])
        print(f"   before: {collections.Counter(m for m, _, _ in before)[R2]} of {REQUESTS} answered by the canary")
        print(f"   after:  {failed} of {2 * REQUESTS} requests failed before the rollback; of the last "
              f"{REQUESTS}, {tail[R1]} went to {R1}, {tail[R2]} to the canary")
        for line in self.envoy.log().splitlines():
            if "rolled back" in line:
                print("   envoy log: " + line.split("canary-router: ", 2)[-1])

    def stop(self):
        if self.envoy:
            self.envoy.stop()
        for m in self.models.values():
            m.stop()


def main():
    # Ctrl-C and a plain kill both end in the `finally` below (installed explicitly:
    # a shell may start us with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    demo = Demo()
    started = time.monotonic()
    try:
        demo.run()
    except KeyboardInterrupt:
        print("\nInterrupted.")
    finally:
        demo.stop()
        print(f"Stopped everything the demo started ({time.monotonic() - started:.0f} s).")


if __name__ == "__main__":
    main()
