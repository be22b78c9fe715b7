"""Hostile and odd requests on real Envoy (2 workers): each is routed correctly or passed
through, never reaches a cluster it should not, and never crashes the filter's VM."""

import json
import re
import socket

import pytest

import stack
from test_routing import HOST, R1, R2, kserve_service

LONG_HOST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57])  # 249 characters
assert len(LONG_HOST) == 249


def raw(port: int, data: bytes) -> tuple[int, dict, bytes]:
    """Sends bytes as they are; returns (status, headers, body) of the first response."""
    with socket.create_connection((stack.LOOPBACK, port), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), v.strip())
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


@pytest.fixture
def envoy(start_envoy):
    long_svc = {"name": "long", "hosts": [LONG_HOST], "tagRouting": True,
                "revisions": [{"name": "long-1", "cluster": "c3"}, {"name": "long-2", "cluster": "c4"}],
                "latestRolledoutRevision": "long-1", "latestReadyRevision": "long-2", "canaryTrafficPercent": 0,
                "sticky": {"cookie": "user"}}
    return start_envoy({"services": [kserve_service(0, sticky={"header": "x-user"}), long_svc]}, concurrency=2)


def vm_restarts(envoy) -> int:
    stats = stack.request(envoy.admin_port, "/stats?filter=wasm").body.decode()
    created = int(re.search(r"wasm\.envoy\.wasm\.runtime\.v8\.created: (\d+)", stats).group(1))
    return created


CASES = []


def case(fn):
    CASES.append(fn.__name__)
    return fn


@case
def spoofed_routing_headers(envoy, backends):
    r = stack.request(envoy.port, "/", host=HOST, headers=[("x-canary-cluster", "c2"), ("x-canary-cluster", "c4"),
                                                            ("x-canary-revision", R2), ("x-envoy-original-host", "x")])
    assert r.header("x-backend") == "c1" and r.header("x-canary-revision") == R1


@case
def two_host_headers(envoy, backends):
    # Envoy joins them ("a,b"): an authority no service has, so it passes unrouted.
    for first, second in ((HOST, f"latest-{HOST}"), (f"latest-{HOST}", HOST)):
        status, headers, _ = raw(envoy.port, f"GET / HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\n"
                                             f"x-canary-cluster: c2\r\nConnection: close\r\n\r\n".encode())
        assert status == 400 or headers.get("x-backend") == "fallback", (status, headers)


@case
def absolute_form_uri_wins_over_host(envoy, backends):
    status, headers, _ = raw(envoy.port, f"GET http://latest-{HOST}/v1/models/x HTTP/1.1\r\nHost: other.example.com\r\n"
                                         f"Connection: close\r\n\r\n".encode())
    assert (status, headers.get("x-backend"), headers.get("x-canary-revision")) == (200, "c2", R2)
    assert headers.get("x-seen-authority") == "sklearn-iris-predictor-00002.kserve-test.svc.cluster.local"


@case
def uppercase_trailing_dot_and_ports(envoy, backends):
    for host in (HOST.upper(), f"{HOST}.", f"{HOST}:8080", f"{HOST.upper()}.:1", f"PREV-{HOST}.:65535"):
        r = stack.request(envoy.port, "/", host=host)
        assert (r.status, r.header("x-backend")) == (200, "c1"), (host, r)


@case
def ip_literals_are_unknown_hosts(envoy, backends):
    for host in ("[::1]:8080", "[::1]", "127.0.0.1", "127.0.0.1:80", "[fe80::1%25eth0]"):
        r = stack.request(envoy.port, "/", host=host, headers=[("x-canary-cluster", "c2")])
        assert r.header("x-backend") == "fallback", (host, r)


@case
def tag_prefixes_on_unknown_hosts(envoy, backends):
    for host in ("latest-unknown.example.com", "prev-", "latest-", "latest-.", f"latest-latest-{HOST}",
                 f"latest-{HOST}.evil.com", f"x-latest-{HOST}", f"canary-{HOST}"):
        r = stack.request(envoy.port, "/", host=host, headers=[("x-canary-cluster", "c2")])
        assert r.header("x-backend") == "fallback", (host, r)


@case
def tag_hosts_longer_than_253_characters(envoy, backends):
    r = stack.request(envoy.port, "/", host=f"latest-{LONG_HOST}")
    assert len(f"latest-{LONG_HOST}") > 253
    assert (r.header("x-backend"), r.header("x-canary-revision")) == ("c4", "long-2")
    assert r.header("x-seen-authority") == LONG_HOST
    assert stack.request(envoy.port, "/", host=LONG_HOST).header("x-backend") == "c3"
    for host in ("x" * 1000, f"latest-{LONG_HOST}x", "a." * 400 + "com"):
        assert stack.request(envoy.port, "/", host=host).header("x-backend") == "fallback"


@case
def header_values_with_control_characters(envoy, backends):
    for value in (b"te\x01st", b"test\x7f", b"t\x00est"):
        status, headers, _ = raw(envoy.port, b"GET / HTTP/1.1\r\nHost: " + HOST.encode() +
                                 b"\r\ntraffic: " + value + b"\r\nConnection: close\r\n\r\n")
        # Envoy's codec refuses them, or the rule does not match: never the canary.
        assert status == 400 or headers.get("x-backend") == "c1", (value, status, headers)


@case
def non_utf8_header_values(envoy, backends):
    # RFC 9110 obs-text: bytes 0x80-0xFF pass Envoy's codec. Every header the filter reads
    # (tag, rule, sticky header, cookie, host, path) gets one; the SDK's string getters would
    # panic on them and abort the VM.
    for value in (b"traffic: t\xe9st", b"traffic: \xc3\x28", b"x-user: \xff\xfe", b"x-canary-tag: l\xe9test",
                  b"x-canary-tag: latest\xff", b"cookie: a=\xff; user=\xe9bob"):
        for host, backend in ((HOST, "c1"), (LONG_HOST, "c3")):
            status, headers, _ = raw(envoy.port, b"GET /v1/models/m:predict HTTP/1.1\r\nHost: " + host.encode()
                                     + b"\r\n" + value + b"\r\nConnection: close\r\n\r\n")
            assert status == 400 or (status, headers.get("x-backend")) == (200, backend), (value, status, headers)
    status, headers, _ = raw(envoy.port, b"GET /v2/models/\xe9/infer HTTP/1.1\r\nHost: caf\xe9.example.com\r\nConnection: close\r\n\r\n")
    assert status == 400 or headers.get("x-backend") == "fallback", (status, headers)


@case
def header_rule_near_misses(envoy, backends):
    for value in ("Test", "te st", "test,test", "tes", "test" * 2000):
        r = stack.request(envoy.port, "/", host=HOST, headers=[("traffic", value)])
        assert r.header("x-backend") == "c1", value
    # Surrounding whitespace is not part of a header value (HTTP trims it).
    assert stack.request(envoy.port, "/", host=HOST, headers=[("traffic", " test ")]).header("x-backend") == "c2"
    r = stack.request(envoy.port, "/", host=HOST, headers=[("traffic", "test"), ("traffic", "other")])
    assert r.status == 200


@case
def huge_cookies_and_headers(envoy, backends):
    r = stack.request(envoy.port, "/", host=HOST, headers=[("cookie", "session=" + "x" * 50_000)])
    assert (r.status, r.header("x-backend")) == (200, "c1")
    r = stack.request(envoy.port, "/", host=HOST, headers=[("cookie", "a=" + "x" * 70_000)])
    assert r.status == 431 and r.header("x-backend") is None
    r = stack.request(envoy.port, "/", host=HOST, headers=[(f"x-h{i}", "v") for i in range(90)])
    assert r.status == 200


@case
def methods_and_paths(envoy, backends):
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"):
        r = stack.request(envoy.port, "/v1/models/sklearn-iris:predict?x=%00%ff", host=HOST, method=method)
        assert r.status in (200, 501), (method, r)
    status, _, _ = raw(envoy.port, f"GET /../../etc/passwd HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    assert status in (200, 400, 404)


@case
def empty_and_missing_host(envoy, backends):
    status, headers, _ = raw(envoy.port, b"GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
    assert status == 400 or headers.get("x-backend") == "fallback"
    # HTTP/1.0 without Host: Envoy answers 426 Upgrade Required by default.
    status, headers, _ = raw(envoy.port, b"GET / HTTP/1.0\r\n\r\n")
    assert status in (400, 426) or headers.get("x-backend") == "fallback"


def test_hostile_requests(envoy, backends):
    created = vm_restarts(envoy)
    for name in CASES:
        globals()[name](envoy, backends)
    # The VM never restarted (a panic would abort it), nothing reached a cluster a
    # request should not, and Envoy is still serving.
    assert vm_restarts(envoy) == created
    assert "panicked" not in envoy.log() and "Wasm VM failed" not in envoy.log()
    assert backends["c2"].received == [] or all(
        dict(r["headers"]).get("host", "").startswith("sklearn-iris-predictor-00002") for r in backends["c2"].received)
    assert stack.request(envoy.port, "/", host=HOST).status == 200
    print(f"{len(CASES)} hostile request classes tried")


# --- Hostile OpenAI bodies (LLM canaries: the body's model routes the request) -----------

LLM_PATH = "/openai/v1/chat/completions"


@pytest.fixture
def llm_envoy(start_envoy):
    from test_llm import shipped_openai_side
    pre, limit = shipped_openai_side()
    svc = {"name": "llama", "models": ["llama"], "sticky": {"bodyField": "user"},
           "revisions": [{"name": "r1", "cluster": "c1", "model": "llama-v1"},
                         {"name": "r2", "cluster": "c2", "model": "llama-v2"}],
           "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 50}
    return start_envoy({"openai": {}, "services": [svc]}, concurrency=2, pre_filters=pre, buffer_limit=limit)


def llm_post(envoy, body: bytes, headers=()):
    return stack.request(envoy.port, LLM_PATH, host="models.example.com", body=body,
                         headers=[("content-type", "application/json"), *headers], timeout=30)


def error_code(r):
    assert r.header("content-type") == "application/json", r
    return r.json()["error"]["code"]


def test_hostile_openai_bodies(llm_envoy, backends):
    envoy = llm_envoy
    created = vm_restarts(envoy)
    refused = []  # full bodies no revision may ever receive
    # The model of every JSON type but a string.
    for value, code in (("5", "invalid_type"), ("-2.5e300", "invalid_type"), ("true", "invalid_type"),
                        ("false", "invalid_type"), ("null", "missing_required_parameter"),
                        ("[]", "missing_required_parameter"), ('["llama"]', "missing_required_parameter"),
                        ("{}", "missing_required_parameter"), ('""', "missing_required_parameter"),
                        ('"\\u0000"', "model_not_found"), ('"llama\\n"', "model_not_found")):
        body = b'{"model": %s, "messages": []}' % value.encode()
        r = llm_post(envoy, body)
        assert (r.status, error_code(r)) in ((400, code), (404, code)), (value, r)
        refused.append(body)
    # Duplicate keys, escaped or not, whichever one Envoy's parser keeps.
    for body in (b'{"model": "llama", "model": "llama"}', b'{"model": "other", "mod\\u0065l": "llama"}',
                 b'{"mod\\u0065l": "llama", "model": "llama"}'):
        r = llm_post(envoy, body)
        assert (r.status, error_code(r)) == (400, "duplicate_parameter"), (body, r)
        refused.append(body)
    # An escaped key alone is the key; an escaped value is the value.
    for body in (b'{"mod\\u0065l": "llama", "user": "u1"}', b'{"model": "ll\\u0061ma", "user": "u1"}'):
        r = llm_post(envoy, body)
        assert r.status == 200 and r.header("x-canary-revision") in ("r1", "r2"), (body, r)
        got = backends[r.header("x-backend")].received[-1]["body"]
        revision_model = {"r1": b"llama-v1", "r2": b"llama-v2"}[r.header("x-canary-revision")]
        assert json.loads(got)["model"] == revision_model.decode()
        assert got.replace(b'"' + revision_model + b'"', b"", 1) == body.replace(
            b'"llama"' if b'"llama"' in body else b'"ll\\u0061ma"', b"", 1)
    # Deep nesting: what Envoy's parser refuses is refused; what it takes, serde_json takes
    # without recursion.
    deep = b'{"model": "llama", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = llm_post(envoy, deep)
    assert (r.status, error_code(r)) == (400, "invalid_json"), r
    refused.append(deep)
    nested = b'{"model": "llama", "x": ' + b"[" * 200 + b"]" * 200 + b"}"
    r = llm_post(envoy, nested)
    assert r.status in (200, 400), r
    # Huge strings: a model too long for metadata; a 900 KB field that passes whole.
    r = llm_post(envoy, b'{"model": "' + b"l" * 100_000 + b'"}')
    assert r.status in (400, 404) and error_code(r) in ("missing_required_parameter", "model_not_found"), r
    big = b'{"model": "llama", "prompt": "' + b"\xc3\xa9" * 450_000 + b'"}'
    r = llm_post(envoy, big)
    assert r.status == 200, r
    got = backends[r.header("x-backend")].received[-1]["body"]
    assert got.replace(b'"llama-v1"', b'"llama"').replace(b'"llama-v2"', b'"llama"') == big
    # Invalid UTF-8 and other non-JSON.
    for body in (b'{"model": "ll\xffama"}', b'{"model": "llama", "x": "\xc3\x28"}', b'{"model": "\\ud800"}',
                 b'\xef\xbb\xbf{"model": "llama"}', b'{"model": "llama"} {"model": "llama"}', b"\x00" * 64):
        r = llm_post(envoy, body)
        assert r.status == 400, (body, r)
        refused.append(body)
    # One-byte chunks: Envoy's body filter gathers them; the whole body is checked.
    body = b'{"model": "llama", "user": "chunky", "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection((stack.LOOPBACK, envoy.port), timeout=10) as s:
        s.sendall(f"POST {LLM_PATH} HTTP/1.1\r\nHost: models.example.com\r\ncontent-type: application/json\r\n"
                  f"transfer-encoding: chunked\r\nconnection: close\r\n\r\n".encode())
        for byte in body:
            s.sendall(b"1\r\n" + bytes([byte]) + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert any(b.replace(b'"llama-v1"', b'"llama"').replace(b'"llama-v2"', b'"llama"') == body
               for b in (r["body"] for name in ("c1", "c2") for r in backends[name].received)), answer
    # A spoofed cluster header does not route an unknown model.
    r = llm_post(envoy, b'{"model": "gpt"}', headers=[("x-canary-cluster", "c2")])
    assert (r.status, error_code(r)) == (404, "model_not_found")
    # No revision ever received a refused body whole (rewritten or not); no VM restarted.
    def unrewritten(b):
        return b.replace(b'"llama-v1"', b'"llama"', 1).replace(b'"llama-v2"', b'"llama"', 1)

    received = [r["body"] for name in ("c1", "c2") for r in backends[name].received]
    for body in refused:
        assert not any(b == body or unrewritten(b) == body for b in received), body[:80]
    assert vm_restarts(envoy) == created
    assert "panicked" not in envoy.log() and "Wasm VM failed" not in envoy.log()
