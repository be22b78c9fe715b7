"""A real KServe model server for one revision of the demo InferenceService.

Trains an iris classifier from scikit-learn's bundled data at start (no download) and
serves it with KServe's own ModelServer: V1 and V2 REST, and the V2 gRPC protocol
(`inference.GRPCInferenceService`) unless `--enable_grpc false`:

    python envoy/model_server.py --model_name sklearn-iris --kind svc --http_port 8080 \
        --grpc_port 8081

`--kind svc` and `--kind tree` answer differently on [[7.7, 3.0, 6.1, 2.3]] (2 and 1),
so a client can tell from the prediction which revision served it.

`--faults FILE` lets a test or the demo make this revision misbehave, as a real model
does: while FILE holds `internal`, `predict` raises (KServe answers REST 500, gRPC
INTERNAL, trailers-only); `internal-trailers` does the same after the gRPC server has
sent its response headers, so INTERNAL comes in real trailers (as from servers that send
response metadata first); while it holds `unready`, the model reports not ready (REST
`/v2/models/<name>/ready` and gRPC `ModelReady`). The file is read on every call.

`--grpc_health` also serves the standard gRPC health service (`grpc.health.v1.Health`,
from grpcio-health-checking) on the gRPC port, as Triton does and KServe does not:
SERVING while the model is ready.
"""

import argparse

import grpc.aio
import kserve
from kserve.protocol.grpc import server as grpc_server
from kserve.protocol.rest import server as rest_server
from kserve.utils.utils import get_predict_input, get_predict_response
from sklearn.datasets import load_iris
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

# KServe 0.21 hard-codes uvicorn's host to 0.0.0.0. A local demo or test must not
# listen on every interface, so bind the REST server to loopback (or --bind).
_rest_init = rest_server.RESTServer.__init__
BIND_HOST = "127.0.0.1"


def _loopback_init(self, *args, **kwargs):
    _rest_init(self, *args, **kwargs)
    self.config.host = BIND_HOST


rest_server.RESTServer.__init__ = _loopback_init

# The gRPC server's address is hard-coded too (`[::]:<grpc_port>` in KServe's
# GRPCServer.start, with no flag): rewrite it to the same loopback address.
_add_insecure_port = grpc.aio._server.Server.add_insecure_port


def _loopback_port(self, address: str) -> int:
    port = address.rsplit(":", 1)[-1]
    return _add_insecure_port(self, f"{BIND_HOST}:{port}")


grpc.aio._server.Server.add_insecure_port = _loopback_port
FAULTS = None


def fault() -> str:
    if FAULTS is None:
        return ""
    try:
        with open(FAULTS) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


class InferenceServicer(grpc_server.InferenceServicer):
    """KServe's own servicer; under `internal-trailers` it sends the response headers
    before the model fails, as servers that set response metadata early do."""

    async def ModelInfer(self, request, context):
        if fault() == "internal-trailers":
            await context.send_initial_metadata((("x-model-kind", "iris"),))
        return await super().ModelInfer(request, context)


grpc_server.InferenceServicer = InferenceServicer
GRPC_HEALTH = False


def add_health(server) -> None:
    """grpc.health.v1 for the whole server (service ""): SERVING while the model is ready.
    Imported here: only --grpc_health needs grpcio-health-checking."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    class ModelHealth(health.aio.HealthServicer):
        async def Check(self, request, context):
            ready = fault() != "unready"
            await self.set("", health_pb2.HealthCheckResponse.SERVING if ready
                           else health_pb2.HealthCheckResponse.NOT_SERVING)
            return await super().Check(request, context)

    health_pb2_grpc.add_HealthServicer_to_server(ModelHealth(), server)


_add_inference = grpc_server.grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server


def _add_servicers(servicer, server):
    _add_inference(servicer, server)
    if GRPC_HEALTH:
        add_health(server)


grpc_server.grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server = _add_servicers


class IrisModel(kserve.Model):
    def __init__(self, name: str, kind: str):
        super().__init__(name)
        self.kind = kind
        self.model = None
        self.load()

    def load(self) -> bool:
        features, labels = load_iris(return_X_y=True)
        if self.kind == "svc":
            self.model = SVC(gamma="scale").fit(features, labels)
        else:
            self.model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, labels)
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        return self.ready and fault() != "unready"

    def predict(self, payload, headers=None, response_headers=None):
        if fault() in ("internal", "internal-trailers"):
            raise RuntimeError("injected fault: this revision's model is failing")
        instances = get_predict_input(payload)
        result = self.model.predict(instances)
        return get_predict_response(payload, result, self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--kind", choices=["svc", "tree"], required=True)
    parser.add_argument("--bind", default="127.0.0.1", help="address the REST and gRPC servers listen on")
    parser.add_argument("--faults", default=None, help="file that switches faults on (see above)")
    parser.add_argument("--grpc_health", action="store_true", help="serve grpc.health.v1 too")
    args, _ = parser.parse_known_args()
    BIND_HOST = args.bind
    FAULTS = args.faults
    GRPC_HEALTH = args.grpc_health
    kserve.ModelServer().start([IrisModel(args.model_name, args.kind)])
