"""LLM canaries on real Envoy: OpenAI-style requests routed by the `model` in their body,
through two real KServe 0.21 model servers speaking KServe's OpenAI protocol
(tests/kserve_openai: a deterministic OpenAIGenerativeModel, no weights), driven by the
official `openai` client (no retries: they would hide and multiply failures).

The Envoy side is envoy/envoy.yaml's own entries in front of canary-router (the
json_to_metadata filter scoped to the OpenAI paths) and its listener buffer limit, copied
unchanged into the test configuration.
"""

import base64
import collections
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx2
import openai
import pytest
import yaml

import stack
from test_health import wait_for
from test_routing import assert_binomial

R1, R2 = "llama-predictor-00001", "llama-predictor-00002"
LLAMA, V1, V2 = "llama-3-8b", "llama-3-8b-v1", "llama-3-8b-v2"
MISTRAL, PHI, PHI_SHADOW = "mistral-7b", "phi-3", "phi-3-shadow"
LLAMA_HOST = "llama.kserve-test.example.com"
SHARED = "models.example.com"  # a gateway host no service lists: routed by body
PERCENT = 30

SERVER_MODELS = {
    # Each revision's server registers the public name and its rewrite name (KServe
    # dispatches strictly by the body's model).
    "a": (R1, [LLAMA, V1, MISTRAL, PHI]),
    "b": (R2, [LLAMA, V2, PHI_SHADOW]),
}


def shipped_openai_side():
    """The HTTP filters envoy/envoy.yaml puts in front of canary-router, and its listener
    buffer limit."""
    cfg = yaml.safe_load((stack.ROOT / "envoy" / "envoy.yaml").read_text())
    listener = cfg["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    wasm = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm")
    return filters[:wasm], listener["per_connection_buffer_limit_bytes"]


def plugin_config(health=True):
    llama = {
        "name": "llama", "hosts": [LLAMA_HOST], "models": [LLAMA], "tagRouting": True,
        "revisions": [{"name": R1, "cluster": "llama-00001", "model": V1},
                      {"name": R2, "cluster": "llama-00002", "model": V2}],
        "latestRolledoutRevision": R1, "latestReadyRevision": R2, "canaryTrafficPercent": PERCENT,
        "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}],
        "sticky": {"bodyField": "user"},
    }
    if health:
        llama["healthCheck"] = {"path": "/v2/health/ready", "intervalMs": 200, "timeoutMs": 150,
                                "unhealthyThreshold": 2}
    return {
        "openai": {"listModels": True},
        "services": [
            llama,
            {"name": "mistral", "models": [MISTRAL],
             "revisions": [{"name": "mistral-predictor-00001", "cluster": "mistral-00001"}]},
            {"name": "phi", "models": [PHI],
             "revisions": [{"name": "phi-predictor-00001", "cluster": "phi-00001"},
                           {"name": "phi-shadow", "cluster": "phi-shadow", "model": PHI_SHADOW}],
             "latestReadyRevision": "phi-predictor-00001",
             "mirror": {"revision": "phi-shadow", "percent": 100}},
            {"name": "plain", "hosts": ["plain.example.com"],
             "revisions": [{"name": "plain-1", "cluster": "probe"}]},
        ],
    }


class OpenAIServer:
    """A KServe OpenAI model server (tests/kserve_openai/server.py) for one revision."""

    def __init__(self, key: str, workdir: Path):
        self.revision, self.models = SERVER_MODELS[key]
        self.port = stack.free_port()
        self.workdir = workdir
        self.record = workdir / f"received-{key}.jsonl"
        self.log_path = workdir / f"server-{key}.log"
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = stack._spawn(
            [str(stack.PYTHON), str(stack.ROOT / "tests" / "kserve_openai" / "server.py"),
             "--revision", self.revision, "--models", ",".join(self.models), "--record", str(self.record),
             "--http_port", str(self.port), "--enable_grpc", "false", "--enable_latency_logging", "false",
             "--configure_logging", "false"], self._log)
        return self

    def wait_ready(self):
        try:
            stack.wait_http(self.port, "/v2/health/ready", 60, self.proc, f"OpenAI server {self.revision}")
        except Exception as e:
            raise RuntimeError(f"{e}\n--- log ---\n{self.log_path.read_text()[-3000:]}") from e
        return self

    def received(self) -> list[dict]:
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            entry = json.loads(line)
            entry["body"] = base64.b64decode(entry["body"])
            out.append(entry)
        return out

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        stack.stop_process(self.proc)
        self._log.close()


class HeadersProbe:
    """An upstream that notes when a request's headers arrived (before its body ends),
    then reads the body and answers 200."""

    def __init__(self):
        self.sock = socket.create_server((stack.LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.headers_seen = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.headers_seen.set()
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            while (len(body) < length) if length is not None else not body.endswith(b"0\r\n\r\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("openai-servers")
    started = {key: OpenAIServer(key, workdir).start() for key in SERVER_MODELS}
    try:
        for s in started.values():
            s.wait_ready()
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="module")
def probe():
    p = HeadersProbe()
    yield p
    p.close()


def clusters(servers, probe):
    a, b = servers["a"].port, servers["b"].port
    return {"llama-00001": a, "llama-00002": b, "mistral-00001": a, "phi-00001": a, "phi-shadow": b,
            "probe": probe.port}


@pytest.fixture(scope="module")
def envoy(servers, probe, tmp_path_factory):
    pre, limit = shipped_openai_side()
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config(), clusters(servers, probe),
                             pre_filters=pre, buffer_limit=limit, route_timeout="5s")
    e = stack.Envoy(cfg, tmp_path_factory.mktemp("envoy-llm"), concurrency=2).start().wait_ready()
    yield e
    e.stop()


def client(envoy, host=SHARED, prefix="/openai/v1", sent=None, timeout=10.0) -> openai.OpenAI:
    """The official client, through Envoy, with `Host: host`; `sent` collects the exact
    request bodies it sends."""
    hooks = {"request": [lambda request: sent.append(request.content)]} if sent is not None else {}
    return openai.OpenAI(api_key="test", base_url=f"http://{stack.LOOPBACK}:{envoy.port}{prefix}",
                         max_retries=0, timeout=timeout, default_headers={"Host": host},
                         http_client=httpx2.Client(event_hooks=hooks))


def chat(c, model=LLAMA, **kwargs):
    """One chat completion: (revision header, answer text, raw response)."""
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}], **kwargs)
    completion = raw.parse()
    return raw.headers.get("x-canary-revision"), completion.choices[0].message.content, raw


def post(envoy, path, body: bytes, host=SHARED, headers=()):
    return stack.request(envoy.port, path, host=host, body=body,
                         headers=[("content-type", "application/json"), *headers])


def assert_openai_error(r, status, code=None, param=None):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    error = json.loads(r.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"] and error["type"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def test_split_by_body_model_and_each_revision_gets_its_own_model_name(envoy):
    c = client(envoy)
    n = 300
    seen = collections.Counter()
    for _ in range(n):
        revision, answer, _ = chat(c)
        # The revision named in the response served it, and received its own model name.
        assert answer == f"revision={revision} model={ {R1: V1, R2: V2}[revision]}", (revision, answer)
        seen[revision] += 1
    assert set(seen) == {R1, R2}, seen
    assert_binomial(seen[R2], n, PERCENT / 100)
    # Other models, other services; the vLLM-style path prefix is configured too.
    revision, answer, _ = chat(c, MISTRAL)
    assert (revision, answer) == ("mistral-predictor-00001", f"revision={R1} model={MISTRAL}")


def test_the_rewrite_changes_only_the_model_string(envoy, servers):
    sent = []
    c = client(envoy, sent=sent)
    for i in range(20):
        c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": f"request {i} caf\u00e9 \"q\""}],
                                  temperature=0.5, user=f"rewrite-{i}", extra_body={"metadata": {"model": LLAMA}})
    by_body = {}
    for key in ("a", "b"):
        for entry in servers[key].received():
            by_body.setdefault(entry["body"], []).append((key, entry["model"]))
    rewrites = collections.Counter()
    for body in sent:
        # What each revision's server must have received: the client's bytes, with the top
        # level model string (only) replaced by the revision's model.
        expected = {key: body.replace(b'"model":"llama-3-8b"', f'"model":"{model}"'.encode(), 1)
                    for key, model in (("a", V1), ("b", V2))}
        assert expected["a"] != body and b'"metadata":{"model":"llama-3-8b"}' in expected["a"]
        hits = [seen for key in ("a", "b") for seen in by_body.get(expected[key], []) if seen[0] == key]
        assert len(hits) == 1, (body, hits)
        key, model = hits[0]
        assert model == {"a": V1, "b": V2}[key]
        rewrites[key] += 1
    assert sum(rewrites.values()) == 20


def test_sticky_users_by_the_user_field(envoy):
    c = client(envoy)
    users = [f"user-{i}" for i in range(150)]
    first = {}
    for u in users:
        first[u] = chat(c, user=u)[0]
    # Each user stays on its revision, across connections and both workers.
    for u in users[:50]:
        for _ in range(2):
            assert chat(client(envoy), user=u)[0] == first[u], u
    assert_binomial(sum(r == R2 for r in first.values()), len(users), PERCENT / 100)


def test_tags_header_rules_and_hosts_on_llm_paths(envoy):
    shared = client(envoy)
    for headers, revision in (({"x-canary-tag": "latest"}, R2), ({"x-canary-tag": "prev"}, R1),
                              ({"traffic": "test"}, R2)):
        for _ in range(10):
            got, answer, _ = chat(shared, extra_headers=headers)
            assert got == revision and answer.endswith({R1: V1, R2: V2}[revision]), (headers, got, answer)
    # The service's own host and its tag hosts: the body is rewritten there too.
    for host, revision in ((f"latest-{LLAMA_HOST}", R2), (f"prev-{LLAMA_HOST}", R1)):
        got, answer, _ = chat(client(envoy, host=host))
        assert (got, answer) == (revision, f"revision={revision} model={ {R1: V1, R2: V2}[revision]}")
    seen = {chat(client(envoy, host=LLAMA_HOST))[0] for _ in range(40)}
    assert seen == {R1, R2}
    # A model the host's service does not serve.
    with pytest.raises(openai.NotFoundError):
        chat(client(envoy, host=LLAMA_HOST), MISTRAL)


def test_completions_embeddings_and_the_vllm_prefix(envoy):
    c = client(envoy)
    raw = c.completions.with_raw_response.create(model=LLAMA, prompt="hi", extra_headers={"x-canary-tag": "prev"})
    assert raw.parse().choices[0].text == f"revision={R1} model={V1}"
    e = c.embeddings.create(model=LLAMA, input="hi", encoding_format="float", extra_headers={"x-canary-tag": "latest"})
    assert len(e.data[0].embedding) == 4 and e.model == V2
    # /v1/... (vLLM-style) is an OpenAI path too: routed, and KServe (which serves
    # /openai/v1/...) answers its own 404.
    r = post(envoy, "/v1/chat/completions", json.dumps({"model": LLAMA, "messages": []}).encode(),
             headers=[("x-canary-tag", "latest")])
    assert r.status == 404 and r.header("x-canary-revision") == R2


def test_unknown_model_is_the_clients_not_found_error(envoy):
    c = client(envoy)
    with pytest.raises(openai.NotFoundError) as raised:
        chat(c, "gpt-4o")
    assert raised.value.code == "model_not_found" and "gpt-4o" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        c.chat.completions.create(model=5, messages=[])
    assert raised.value.code == "invalid_type"


def test_each_error_has_its_status_and_shape(envoy):
    body = json.dumps({"model": LLAMA, "messages": []}).encode()
    path = "/openai/v1/chat/completions"
    cases = [
        (b'{"model": "gpt-x", "messages": []}', (), 404, "model_not_found"),
        (b'{"messages": []}', (), 400, "missing_required_parameter"),
        (b'{"model": "", "messages": []}', (), 400, "missing_required_parameter"),
        (b'{"model": null}', (), 400, "missing_required_parameter"),
        (b'{"model": ["llama-3-8b"]}', (), 400, "missing_required_parameter"),
        (b'{"model": 7}', (), 400, "invalid_type"),
        (b'{"model": true}', (), 400, "invalid_type"),
        (b'[{"model": "llama-3-8b"}]', (), 400, "missing_required_parameter"),
        (b'{"model": "llama-3-8b", "messages": [', (), 400, "invalid_json"),
        (b'{"model": "llama-3-8b", "model": "llama-3-8b"}', (), 400, "duplicate_parameter"),
        (b'{"model": "llama-3-8b", "mod\\u0065l": "mistral-7b"}', (), 400, "duplicate_parameter"),
        (body, (("content-encoding", "gzip"),), 415, "unsupported_content_encoding"),
        (b'\x1f\x8b\x08\x00garbage', (("content-encoding", "gzip"),), 415, "unsupported_content_encoding"),
    ]
    for payload, headers, status, code in cases:
        r = post(envoy, path, payload, headers=headers)
        error = assert_openai_error(r, status, code)
        assert r.header("x-canary-revision") is None, (payload, r)
        assert "model" not in error["message"] or status != 415
    r = stack.request(envoy.port, path, host=SHARED, body=body, headers=[("content-type", "text/plain")])
    assert_openai_error(r, 415, "unsupported_content_type")
    # 413: above maxBodyBytes (1 MiB) and below Envoy's buffer limit, ours; above that,
    # Envoy's own (text/plain).
    big = json.dumps({"model": LLAMA, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}).encode()
    with pytest.raises(openai.APIStatusError) as raised:
        client(envoy).chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "x" * (1 << 20)}])
    assert raised.value.status_code == 413 and raised.value.code == "request_too_large"
    assert_openai_error(post(envoy, path, big), 413, "request_too_large")
    r = post(envoy, path, big + b" " * (1 << 20))
    assert r.status == 413 and r.header("content-type") == "text/plain"


def test_the_model_list_and_the_services_own_list(envoy):
    for prefix in ("/openai/v1", "/v1"):
        models = client(envoy, prefix=prefix).models.list()
        assert [m.id for m in models.data] == [LLAMA, MISTRAL, PHI], prefix
        assert [m.owned_by for m in models.data] == ["llama", "mistral", "phi"]
    # On a service's own host, GET /v1/models is KServe's V1 list-models call.
    r = stack.request(envoy.port, "/v1/models", host=LLAMA_HOST)
    assert r.status == 200 and "models" in r.json() and r.header("x-canary-revision") in (R1, R2)
    # Other methods are not answered by the filter.
    assert stack.request(envoy.port, "/v1/models", host=SHARED, method="DELETE").status == 404


def test_streaming_is_not_buffered(envoy, servers):
    # The server sends its last events only once the gate file exists; a gateway that
    # held the stream back would make this client time out before the first event.
    c = client(envoy, timeout=10)
    gate = servers["a"].workdir / "gate-stream"
    stream = c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "stream"}], stream=True,
                                       user="gate:gate-stream", extra_headers={"x-canary-tag": "prev"})
    events = iter(stream)
    first = next(events)  # the server holds its last events until the gate opens
    assert first.choices[0].delta.content == f"revision={R1} "
    assert not gate.exists()
    gate.touch()
    rest = "".join(chunk.choices[0].delta.content or "" for chunk in events)
    assert rest == f"model={V1}"
    assert stream.response.headers["x-canary-revision"] == R1
    assert stream.response.headers["content-type"].startswith("text/event-stream")


def test_shadow_copies_carry_the_mirror_revisions_model(envoy, servers):
    sent = []
    c = client(envoy, sent=sent)
    for i in range(5):
        revision, answer, _ = chat(c, PHI, user=f"shadow-{i}")
        assert (revision, answer) == ("phi-predictor-00001", f"revision={R1} model={PHI}")
    assert wait_for(lambda: sum(e["model"] == PHI_SHADOW for e in servers["b"].received()) >= 5, timeout=5.0)
    shadow = [e["body"] for e in servers["b"].received() if e["model"] == PHI_SHADOW]
    assert sorted(shadow) == sorted(b.replace(b'"model":"phi-3"', b'"model":"phi-3-shadow"', 1) for b in sent)


def test_other_paths_are_not_held(envoy, probe):
    def first_chunk_reaches_upstream(path):
        probe.headers_seen.clear()
        s = socket.create_connection((stack.LOOPBACK, envoy.port), timeout=10)
        try:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: plain.example.com\r\ncontent-type: application/json\r\n"
                      f"transfer-encoding: chunked\r\n\r\n6\r\n{{\"a\":1\r\n".encode())
            reached = probe.headers_seen.wait(2.0)
            s.sendall(b"1\r\n}\r\n0\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            return reached
        finally:
            s.close()

    assert first_chunk_reaches_upstream("/v1/models/plain:predict")
    assert first_chunk_reaches_upstream("/v2/models/plain/infer?x=/v1/chat/completions")
    # The contrast: on an OpenAI path the body filter holds the request until it is whole.
    assert not first_chunk_reaches_upstream("/openai/v1/chat/completions")


def test_the_envoy_side_missing_is_a_500_logged_once(servers, probe, tmp_path):
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config(health=False),
                             clusters(servers, probe))
    with stack.Envoy(cfg, tmp_path) as bare:
        for _ in range(3):
            r = post(bare, "/openai/v1/chat/completions", json.dumps({"model": LLAMA, "messages": []}).encode())
            assert_openai_error(r, 500, "gateway_misconfigured")
        with pytest.raises(openai.InternalServerError):
            chat(client(bare))
        # Requests elsewhere are unaffected.
        assert stack.request(bare.port, "/v1/models/plain:predict", host="plain.example.com", body=b"{}").status == 200
        lines = [l for l in bare.log().splitlines() if "without metadata in namespace" in l]
        assert len(lines) == 1, lines


def test_a_hanging_model_server_delays_no_other_model(envoy, servers):
    """Last: stops the canary's server (SIGSTOP), so that it hangs, then lets it go."""
    b = servers["b"]
    hung = []

    def to_the_canary():
        try:
            chat(client(envoy, timeout=15), extra_headers={"x-canary-tag": "latest"})
            hung.append("answered")
        except openai.APIStatusError as e:
            hung.append(e.status_code)

    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        # Requests already on their way to the stopped server hang there...
        threads = [threading.Thread(target=to_the_canary, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        # ...while other models, and this model's stable revision, answer as fast as ever.
        latencies = []
        for model in (MISTRAL, PHI, LLAMA) * 10:
            t = time.monotonic()
            revision, answer, _ = chat(client(envoy), model, extra_headers={"x-canary-tag": "prev"})
            latencies.append(time.monotonic() - t)
            assert answer.startswith(f"revision={R1} "), answer
        assert max(latencies) < 2.0, latencies
        assert all(t.is_alive() for t in threads) and hung == []
        # The probes time out: the canary leaves rotation. A tag or rule naming it is
        # answered at once, 503 in OpenAI's shape; the split sends everything to R1.
        assert wait_for(lambda: post(envoy, "/openai/v1/chat/completions", b'{"model": "llama-3-8b"}',
                                     headers=[("traffic", "test")]).status == 503, timeout=10.0)
        start = time.monotonic()
        r = post(envoy, "/openai/v1/chat/completions", b'{"model": "llama-3-8b"}', headers=[("traffic", "test")])
        assert time.monotonic() - start < 2.0
        assert_openai_error(r, 503, "revision_unavailable")
        assert r.header("x-canary-revision") == R2
        assert {chat(client(envoy))[0] for _ in range(30)} == {R1}
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    for t in threads:
        t.join(timeout=20)
    # The hung requests end with the route's timeout (504) or are answered once it runs.
    assert len(hung) == 3 and set(hung) <= {504, "answered"}, hung
    assert wait_for(lambda: {chat(client(envoy))[0] for _ in range(20)} == {R1, R2}, timeout=10.0)


def test_a_body_followed_by_trailers_is_checked_and_renamed(tmp_path):
    """Trailers make json_to_metadata pass the body in one callback and the trailers in
    another: canary-router holds the body and renames it in the trailers callback."""
    pre, limit = shipped_openai_side()
    echo = stack.EchoBackend("c1")
    svc = {"name": "llama", "models": [LLAMA], "revisions": [{"name": R1, "cluster": "c1", "model": V1}]}
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), {"openai": {}, "services": [svc]},
                             {"c1": echo.port}, pre_filters=pre, buffer_limit=limit)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_protocol_options"] = {"enable_trailers": True}
    try:
        with stack.Envoy(cfg, tmp_path) as e:
            # The second is routed on the model Envoy's parser kept (the last), then refused
            # by canary-router's own parse in the trailers callback.
            for body, status in ((b'{"model": "llama-3-8b", "x": 1}', 200), (b'{"model": 1, "model": "llama-3-8b"}', 400)):
                with socket.create_connection((stack.LOOPBACK, e.port), timeout=10) as s:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\ncontent-type: application/json\r\n"
                              b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                              + b"%x\r\n%s\r\n0\r\nx-trailer: 1\r\n\r\n" % (len(body), body))
                    answer = b""
                    while chunk := s.recv(65536):
                        answer += chunk
                assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:300]
            received = [r["body"] for r in echo.received]
            assert received[0] == b'{"model": "llama-3-8b-v1", "x": 1}'
            # At most the refused request's headers reached the upstream, never its body.
            assert all(not b for b in received[1:]), received
    finally:
        echo.stop()
