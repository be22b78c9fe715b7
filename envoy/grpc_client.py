"""gRPC clients for the demo and the tests: KServe's own generated V2 stubs
(`kserve.protocol.grpc`, the Open Inference Protocol's `inference.GRPCInferenceService`)
over the venv's grpcio, on insecure (h2c) channels to 127.0.0.1.

Separate from stack.py, which stays standard-library only: this needs grpcio and kserve.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

import stack

SERVICE = "inference.GRPCInferenceService"


def channel(port: int, authority: str | None = None) -> grpc.Channel:
    """An insecure channel to 127.0.0.1:port; `authority` is the `:authority` of every
    call (what Host is to HTTP/1.1, and what the filter looks services up by)."""
    options = [("grpc.default_authority", authority)] if authority else []
    # One connection per channel, not shared with other channels to the same target:
    # several clients of a load then spread over Envoy's workers.
    options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.insecure_channel(f"{stack.LOOPBACK}:{port}", options=options)


def stub(port: int, authority: str | None = None) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel(port, authority))


def infer_request(rows, model: str = "sklearn-iris") -> pb.ModelInferRequest:
    """A V2 ModelInfer request of FP32 rows, like stack.infer_v2 over REST."""
    flat = [float(x) for row in rows for x in row]
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input-0", datatype="FP32", shape=[len(rows), len(rows[0])],
        contents=pb.InferTensorContents(fp32_contents=flat))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


@dataclass
class Reply:
    """What a client saw of one call: its status code, the predictions (OK only), and
    the initial and trailing metadata (a trailers-only answer has only the latter)."""

    code: grpc.StatusCode
    details: str = ""
    predictions: list = field(default_factory=list)
    initial: dict[str, str] = field(default_factory=dict)
    trailing: dict[str, str] = field(default_factory=dict)

    def metadata(self, key: str) -> str | None:
        """A metadata value wherever it came (initial for answers, trailing for
        trailers-only errors)."""
        return self.initial.get(key, self.trailing.get(key))


def infer(s: pb_grpc.GRPCInferenceServiceStub, rows, metadata=(), timeout: float = 10.0,
          model: str = "sklearn-iris") -> Reply:
    """One ModelInfer call; a failed call is a Reply too, never an exception."""
    try:
        response, call = s.ModelInfer.with_call(infer_request(rows, model), metadata=list(metadata),
                                                timeout=timeout)
    except grpc.RpcError as e:
        return Reply(e.code(), e.details() or "", [], dict(e.initial_metadata() or ()),
                     dict(e.trailing_metadata() or ()))
    output = response.outputs[0].contents if response.outputs else None
    predictions = list(output.int64_contents or output.fp32_contents) if output else []
    return Reply(grpc.StatusCode.OK, "", predictions, dict(call.initial_metadata() or ()),
                 dict(call.trailing_metadata() or ()))


def wait_ready(port: int, timeout: float = 30.0, model: str = "sklearn-iris") -> None:
    """Until the model server's gRPC side answers ModelReady true (it starts after REST)."""
    s = stub(port)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if s.ModelReady(pb.ModelReadyRequest(name=model), timeout=1.0).ready:
                return
        except grpc.RpcError as e:
            last = e.code()
        time.sleep(0.05)
    raise TimeoutError(f"gRPC model server on port {port} not ready after {timeout}s ({last})")


class Load:
    """Closed-loop gRPC clients, each on its own channel, for as long as the `with`
    lasts. Records one tuple per call: (start, end, status code name, value of
    `key` in the call's metadata, first prediction or None)."""

    def __init__(self, port: int, authority: str, rows, clients: int = 4,
                 key: str = "x-canary-revision"):
        self.port, self.authority, self.rows, self.key = port, authority, rows, key
        self.records: list[tuple] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self):
        ch = channel(self.port, self.authority)
        s = pb_grpc.GRPCInferenceServiceStub(ch)
        while not self.stop.is_set():
            start = time.time()
            r = infer(s, self.rows)
            self.records.append((start, time.time(), r.code.name, r.metadata(self.key),
                                 r.predictions[0] if r.predictions else None))
        ch.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
