"""Test code: a stand-in for the few vLLM modules KServe 0.21 imports for its OpenAI protocol.

KServe 0.21 registers its OpenAI routes (`/openai/v1/chat/completions`, `/completions`,
`/embeddings`, `/rerank`, `/models`) only when `kserve.protocol.rest.openai.types` can
import its request and response models from vLLM (and `endpoints.py` vLLM's
`with_cancellation`). vLLM pulls torch and CUDA libraries (gigabytes); the tests need
none of its engine. `install()` registers, in `sys.modules`, modules with exactly the
names KServe imports (see `IMPORTS`), as small pydantic models with the OpenAI fields the
tests use; request models accept any other field, as vLLM's do. Nothing here is imported
by the filter or shipped: it lets KServe's own server code (FastAPI routes, dataplane
dispatch by the body's `model`, `OpenAIGenerativeModel`) run for real in the tests.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import types
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    # vLLM's request models take every OpenAI parameter; the tests' model reads these.
    model_config = ConfigDict(extra="allow")


def _now() -> int:
    return int(time.time())


# --- vllm.entrypoints.openai.engine.protocol ----------------------------------------


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: Optional[int] = 0


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "vllm"


class ModelList(BaseModel):
    object: str = "list"
    data: List[ModelCard] = Field(default_factory=list)


class DeltaMessage(BaseModel):
    role: Optional[str] = None
    content: Optional[str] = None


# --- vllm.entrypoints.openai.chat_completion.protocol --------------------------------


class ChatMessage(BaseModel):
    role: str
    content: Optional[str] = None


class ChatCompletionLogProb(BaseModel):
    token: str
    logprob: float = -9999.0
    bytes: Optional[List[int]] = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: List[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(BaseModel):
    content: Optional[List[ChatCompletionLogProbsContent]] = None


class ChatCompletionRequest(_Request):
    model: str
    messages: List[Dict[str, Any]]
    stream: Optional[bool] = False
    user: Optional[str] = None


class ChatCompletionResponseChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: Optional[ChatCompletionLogProbs] = None
    finish_reason: Optional[str] = "stop"


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: List[ChatCompletionResponseChoice]
    usage: UsageInfo


class ChatCompletionResponseStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: Optional[ChatCompletionLogProbs] = None
    finish_reason: Optional[str] = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    choices: List[ChatCompletionResponseStreamChoice]


# --- vllm.entrypoints.openai.completion.protocol -------------------------------------


class CompletionLogProbs(BaseModel):
    text_offset: List[int] = Field(default_factory=list)
    token_logprobs: List[Optional[float]] = Field(default_factory=list)
    tokens: List[str] = Field(default_factory=list)


class CompletionRequest(_Request):
    model: str
    prompt: Union[str, List[Any]]
    stream: Optional[bool] = False
    user: Optional[str] = None


class CompletionResponseChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogProbs] = None
    finish_reason: Optional[str] = "stop"


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: List[CompletionResponseChoice]
    usage: UsageInfo


class CompletionResponseStreamChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogProbs] = None
    finish_reason: Optional[str] = None


class CompletionStreamResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: List[CompletionResponseStreamChoice]


# --- vllm.entrypoints.pooling.embed.protocol / scoring.protocol ---------------------


class EmbeddingCompletionRequest(_Request):
    model: str
    input: Union[str, List[Any]]
    user: Optional[str] = None


EmbeddingRequest = EmbeddingCompletionRequest


class EmbeddingResponseData(BaseModel):
    index: int
    object: str = "embedding"
    embedding: Union[List[float], str]


class EmbeddingResponse(BaseModel):
    id: str
    object: str = "list"
    created: int = Field(default_factory=_now)
    model: str
    data: List[EmbeddingResponseData]
    usage: UsageInfo


class RerankRequest(_Request):
    model: str
    query: str
    documents: List[str]


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: Dict[str, int] = Field(default_factory=dict)
    results: List[Dict[str, Any]] = Field(default_factory=list)


# --- vllm.entrypoints.chat_utils: message types (typed dicts in vLLM; only re-exported) --

ChatCompletionContentPartParam = Dict[str, Any]
CustomChatCompletionMessageParam = Dict[str, Any]
ChatCompletionMessageParam = Dict[str, Any]
ChatCompletionToolMessageParam = Dict[str, Any]
ChatCompletionContentPartTextParam = Dict[str, Any]
ChatCompletionAssistantMessageParam = Dict[str, Any]
ConversationMessage = Dict[str, Any]


# --- vllm.entrypoints.serve.utils.api_utils ------------------------------------------


def with_cancellation(handler):
    """As vLLM's: the handler is cancelled when the client disconnects first."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        request = kwargs["raw_request"] if "raw_request" in kwargs else args[1]
        handler_task = asyncio.create_task(handler(*args, **kwargs))

        async def disconnected():
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.create_task(disconnected())
        done, pending = await asyncio.wait([handler_task, watch], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return handler_task.result() if handler_task in done else None

    return wrapper


IMPORTS = {
    "vllm.entrypoints.openai.chat_completion.protocol": [
        "ChatCompletionResponseChoice", "ChatCompletionLogProb", "ChatCompletionLogProbs",
        "ChatCompletionStreamResponse", "ChatCompletionResponseStreamChoice", "ChatMessage",
        "ChatCompletionLogProbsContent", "ChatCompletionRequest", "ChatCompletionResponse"],
    "vllm.entrypoints.openai.completion.protocol": [
        "CompletionResponseChoice", "CompletionStreamResponse", "CompletionResponseStreamChoice",
        "CompletionLogProbs", "CompletionRequest", "CompletionResponse"],
    "vllm.entrypoints.openai.engine.protocol": ["DeltaMessage", "UsageInfo", "ModelCard", "ModelList"],
    "vllm.entrypoints.pooling.embed.protocol": [
        "EmbeddingRequest", "EmbeddingResponse", "EmbeddingResponseData", "EmbeddingCompletionRequest"],
    "vllm.entrypoints.pooling.scoring.protocol": ["RerankRequest", "RerankResponse"],
    "vllm.entrypoints.chat_utils": [
        "ChatCompletionContentPartParam", "CustomChatCompletionMessageParam", "ChatCompletionMessageParam",
        "ChatCompletionToolMessageParam", "ChatCompletionContentPartTextParam",
        "ChatCompletionAssistantMessageParam", "ConversationMessage"],
    "vllm.entrypoints.serve.utils.api_utils": ["with_cancellation"],
}


def install() -> None:
    """Registers the modules of `IMPORTS` (and their parent packages) in `sys.modules`."""
    if "vllm" in sys.modules:
        raise RuntimeError("a vllm module is already imported; the stand-in would shadow it")
    here = sys.modules[__name__]
    for dotted, names in IMPORTS.items():
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                module = types.ModuleType(name, "test stand-in for vLLM (tests/kserve_openai/vllm_standin.py)")
                module.__path__ = []  # a package, so that submodules import
                sys.modules[name] = module
                if i > 1:
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], module)
        for attr in names:
            setattr(sys.modules[dotted], attr, getattr(here, attr))
