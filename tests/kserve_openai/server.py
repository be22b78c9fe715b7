"""Test code: a real KServe 0.21 model server speaking KServe's OpenAI protocol, with a
small deterministic `OpenAIGenerativeModel` (no weights) standing for one revision.

    python tests/kserve_openai/server.py --revision llama-predictor-00001 \
        --models llama-3-8b,llama-3-8b-v1 --record received.jsonl --http_port 8081

KServe dispatches strictly by the body's `model`, so a revision's server registers the
public name and the name its revision rewrites it to (each a model of its own). Every
answer names the revision and the `model` value the server received
(`revision=<r> model=<m>`), and every request's raw body is appended to `--record`, so
the tests can check the rewrite byte for byte. Chat completions, completions (both
streamed on `"stream": true`) and embeddings are served. A streamed answer whose `user`
is `gate:<name>` holds its last event until the file `<record dir>/<name>` exists, so a
test can show that the first event reached the client before the last was sent.
KServe's vLLM imports are served by `vllm_standin` (see there).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vllm_standin  # noqa: E402

vllm_standin.install()

import kserve  # noqa: E402
from kserve.protocol.rest import server as rest_server  # noqa: E402
from kserve.protocol.rest.openai import OpenAIEncoderModel, OpenAIGenerativeModel  # noqa: E402
from kserve.protocol.rest.openai.types import (  # noqa: E402
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatMessage,
    ChoiceDelta,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    Embedding,
    EmbeddingResponseData,
    UsageInfo,
)

# KServe 0.21 has no flag for the REST bind address (uvicorn's host is hard-coded to
# 0.0.0.0, see envoy/model_server.py): tests listen on loopback only.
_rest_init = rest_server.RESTServer.__init__


def _loopback_init(self, *args, **kwargs):
    _rest_init(self, *args, **kwargs)
    self.config.host = "127.0.0.1"


rest_server.RESTServer.__init__ = _loopback_init

# Far beyond any client timeout of the tests: a gateway that buffered the stream would
# make the client time out waiting for the first event.
GATE_TIMEOUT_S = 120.0


class EchoLLM(OpenAIGenerativeModel, OpenAIEncoderModel):
    """Answers with the revision it stands for and the model name it received."""

    def __init__(self, name: str, revision: str, record: Path):
        super().__init__(name)
        self.revision = revision
        self.record = record

    async def _received(self, request, raw_request) -> str:
        body = await raw_request.body() if raw_request is not None else b""
        with open(self.record, "a") as f:
            f.write(json.dumps({"registered": self.name, "model": request.model,
                                "body": base64.b64encode(body).decode()}) + "\n")
        return f"revision={self.revision} model={request.model}"

    def _words(self, answer: str) -> list[str]:
        first, _, second = answer.partition(" ")
        return [first + " ", second]

    async def _gate(self, request):
        user = getattr(request, "user", None) or ""
        if not user.startswith("gate:"):
            return
        gate = self.record.parent / user.removeprefix("gate:")
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not gate.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def create_chat_completion(self, request, raw_request=None, context=None):
        answer = await self._received(request, raw_request)
        if not request.stream:
            return ChatCompletion(
                id="chatcmpl-" + self.revision, model=request.model,
                choices=[ChatCompletionChoice(index=0, message=ChatMessage(role="assistant", content=answer))],
                usage=UsageInfo(prompt_tokens=1, completion_tokens=2, total_tokens=3))

        async def events():
            for i, word in enumerate(self._words(answer)):
                if i:
                    await self._gate(request)
                chunk = ChatCompletionChunk(
                    id="chatcmpl-" + self.revision, model=request.model,
                    choices=[ChunkChoice(index=0, delta=ChoiceDelta(role="assistant" if i == 0 else None, content=word))])
                yield f"data: {chunk.model_dump_json()}\n\n"
            last = ChatCompletionChunk(id="chatcmpl-" + self.revision, model=request.model,
                                       choices=[ChunkChoice(index=0, delta=ChoiceDelta(), finish_reason="stop")])
            yield f"data: {last.model_dump_json()}\n\n"
            yield "data: [DONE]\n\n"

        return events()

    async def create_completion(self, request, raw_request=None, context=None):
        answer = await self._received(request, raw_request)
        if not request.stream:
            return Completion(id="cmpl-" + self.revision, model=request.model,
                              choices=[CompletionChoice(index=0, text=answer)],
                              usage=UsageInfo(prompt_tokens=1, completion_tokens=2, total_tokens=3))

        async def events():
            for i, word in enumerate(self._words(answer)):
                if i:
                    await self._gate(request)
                chunk = CompletionChunk(id="cmpl-" + self.revision, model=request.model,
                                        choices=[CompletionChunkChoice(index=0, text=word,
                                                                       finish_reason="stop" if i else None)])
                yield f"data: {chunk.model_dump_json()}\n\n"
            yield "data: [DONE]\n\n"

        return events()

    async def create_embedding(self, request, raw_request=None, context=None):
        answer = await self._received(request, raw_request)
        # Deterministic: the first 8 bytes of the answer's SHA-256 as four floats.
        digest = hashlib.sha256(answer.encode()).digest()
        vector = [float(x) for x in struct.unpack("<4H", digest[:8])]
        return Embedding(id="embd-" + self.revision, model=request.model,
                         data=[EmbeddingResponseData(index=0, embedding=vector)],
                         usage=UsageInfo(prompt_tokens=1, total_tokens=1))

    async def create_rerank(self, request, raw_request=None, context=None):
        raise NotImplementedError("rerank is not part of these tests")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--revision", required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names to register")
    parser.add_argument("--record", required=True, help="JSON lines file of received bodies")
    args, _ = parser.parse_known_args()
    record = Path(args.record)
    record.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KSERVE_LOGLEVEL", "WARNING")
    kserve.ModelServer().start([EchoLLM(name, args.revision, record) for name in args.models.split(",")])
