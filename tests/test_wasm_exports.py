"""The shipped module exports exactly the ABI callbacks the filter implements.

`make opt` removes the SDK's other exports (Envoy skips a callback a module does not
export), from a list in the Makefile. A hook added to src/wasm/filter.rs but missing from that
list would silently never run: this test ties the two together.
"""
import re
from pathlib import Path

import stack

ROOT = Path(__file__).resolve().parent.parent

# Always needed: the ABI version, memory, allocation, the context lifecycle. (Envoy
# treats a missing proxy_on_vm_start as success, which is what the SDK's default does.)
LIFECYCLE = {"memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate",
             "proxy_on_context_create", "proxy_on_delete"}


def leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def exports(wasm: bytes) -> set[str]:
    assert wasm[:8] == b"\0asm\x01\0\0\0", "not a wasm module"
    at = 8
    while at < len(wasm):
        section, at = wasm[at], at + 1
        size, at = leb128(wasm, at)
        if section == 7:
            count, p = leb128(wasm, at)
            names = set()
            for _ in range(count):
                length, p = leb128(wasm, p)
                names.add(wasm[p:p + length].decode())
                _, p = leb128(wasm, p + length + 1)  # kind byte, then index
            return names
        at += size
    return set()


# The SDK's dispatcher calls `on_grpc_call_response` from two ABI callbacks: a unary
# gRPC call's answer (proxy_on_grpc_receive) and its failure (proxy_on_grpc_close).
SPLIT_HOOKS = {"on_grpc_call_response": {"proxy_on_grpc_receive", "proxy_on_grpc_close"}}


def exports_of(hook: str) -> set[str]:
    """The ABI exports behind an SDK trait method (`on_http_request_body` ->
    `proxy_on_request_body`; `on_http_call_response` keeps its name)."""
    return SPLIT_HOOKS.get(hook) or {"proxy_" + re.sub(r"^on_http_(request|response)_", r"on_\1_", hook)}


def test_the_shipped_module_exports_the_hooks_the_filter_implements_and_no_others():
    source = (ROOT / "src" / "wasm" / "filter.rs").read_text()
    hooks = set(re.findall(r"^\s*fn (on_\w+)\(", source, re.M))
    assert {"on_configure", "on_tick", "on_http_request_headers"} <= hooks, hooks
    expected = LIFECYCLE | {e for h in hooks for e in exports_of(h)}
    assert exports(stack.WASM.read_bytes()) == expected


def test_the_parser_reads_the_untrimmed_module_too():
    # The cargo output still has every SDK export: the trimming is what removed them.
    raw = ROOT / "target" / "wasm32-wasip1" / "release" / "canary_router.wasm"
    names = exports(raw.read_bytes())
    assert {"proxy_on_log", "proxy_on_done", "proxy_on_response_body", "proxy_on_grpc_receive"} <= names
    assert LIFECYCLE | {"proxy_on_vm_start"} <= names
