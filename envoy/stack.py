"""Start and stop the local stack: real Envoy with the canary-router filter, echo
backends and real KServe model servers, all as processes on 127.0.0.1 and free ports.

Shared by the demo (`envoy/demo.py`) and the integration tests (`tests/`). Standard
library only, so it runs in the project venv without extra packages.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
ENVOY_BIN = VENV / "bin" / "envoy"
PYTHON = VENV / "bin" / "python"
# What ships (`make opt`: exports trimmed, wasm-opt), so tests and the demo run it.
WASM = ROOT / "target" / "canary-router.wasm"
LOOPBACK = "127.0.0.1"

# Envoy tag extraction for the filter's stats (the same two regexes as src/health/plan.rs):
# wasmcustom.canary_router.service.<s>.revision.<r>.<metric> becomes
# canary_router_<metric>{service="<s>",revision="<r>"} in /stats/prometheus.
STATS_TAGS = [
    {"tag_name": "service",
     "regex": r"^wasmcustom\.canary_router\.(service\.(.+?)\.)(?:revision\..+\.)?[a-z0-9_]+$"},
    {"tag_name": "revision",
     "regex": r"^wasmcustom\.canary_router\.service\..+?\.(revision\.(.+)\.)[a-z0-9_]+$"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --- HTTP client -----------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.header_list = [(k.lower(), v) for k, v in headers]
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.header_list if k == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Response({self.status}, {self.header_list}, {self.body[:200]!r})"


def request(port: int, path: str = "/", host: str | None = None, headers=(),
            body: bytes | None = None, method: str | None = None,
            timeout: float = 10.0, conn: http.client.HTTPConnection | None = None) -> Response:
    """One HTTP/1.1 request to 127.0.0.1:port. `headers` is a list of pairs, so a test
    can send the same header twice. Pass `conn` to reuse a keep-alive connection."""
    own = conn is None
    c = conn or http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        c.putrequest(method or ("POST" if body is not None else "GET"), path,
                     skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            c.putheader("Host", host)
        for k, v in headers:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        if own:
            c.close()


class Load:
    """Closed-loop clients on keep-alive connections, for as long as the `with` lasts.
    Records one tuple per request: (start, end, status, *values of `headers`), wall-clock
    times; a connection error records its exception name as the status."""

    def __init__(self, port: int, host: str, headers: tuple[str, ...], clients: int = 4,
                 path: str = "/v1/models/sklearn-iris:predict"):
        self.port, self.host, self.headers, self.path = port, host, headers, path
        self.records: list[tuple] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self):
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        while not self.stop.is_set():
            start = time.time()
            try:
                r = request(self.port, self.path, host=self.host, conn=conn)
                self.records.append((start, time.time(), r.status, *(r.header(h) for h in self.headers)))
            except (OSError, http.client.HTTPException) as e:
                self.records.append((start, time.time(), type(e).__name__, *(None for _ in self.headers)))
                conn.close()
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen | None = None,
              what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if request(port, path, timeout=1.0).status == 200:
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready on port {port} after {timeout}s ({last})")


# --- Echo backend ----------------------------------------------------------------


class QuietServer(ThreadingHTTPServer):
    """Clients that hang up (Envoy timing out a hanging backend) are not errors here."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


class EchoBackend:
    """An upstream that answers every request with its own name and records what it
    received, so tests can assert on the authority and headers that reached it."""

    HEALTH_PATHS = ("/v2/health/ready", "/v1/models/")

    def __init__(self, name: str, port: int = 0):
        self.name = name
        self.received: list[dict] = []
        self.health_checks = 0
        # Faults on command: `ready=False` fails health checks (503), `fail=True`
        # answers 500 to everything else, `hang=True` answers nothing for 30 s.
        self.ready = True
        self.fail = False
        self.hang = False
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle and delayed
            # ACKs add 40 ms to every response.
            disable_nagle_algorithm = True

            def _answer(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = self._read_chunked()
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                if backend.hang:
                    time.sleep(30)
                    return
                if self.headers.get("user-agent") == "canary-router-probe":
                    with backend._lock:
                        backend.health_checks += 1
                    return self._reply(200 if backend.ready else 503, b"{}")
                seen = {"method": self.command, "path": self.path,
                        "headers": [(k.lower(), v) for k, v in self.headers.items()],
                        "body": body}
                with backend._lock:
                    backend.received.append(seen)
                self._reply(500 if backend.fail else 200, json.dumps({"backend": backend.name}).encode())

            def _read_chunked(self) -> bytes:
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()

            def _reply(self, status, out):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.send_header("x-backend", backend.name)
                self.send_header("x-seen-authority", self.headers.get("Host", ""))
                # An upstream that names itself in the filter's response header, to show
                # the filter's value replaces it.
                self.send_header("x-canary-revision", "set-by-upstream")
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self._handler = Handler
        self._serve(port)

    def _serve(self, port: int):
        self.server = QuietServer((LOOPBACK, port), self._handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def headers_seen(self, name: str) -> list[list[str]]:
        with self._lock:
            return [[v for k, v in r["headers"] if k == name] for r in self.received]

    def reset(self):
        with self._lock:
            self.received.clear()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def restart(self):
        """After `stop`: listen again on the same port (connections were refused meanwhile)."""
        self._serve(self.port)


# --- Envoy -----------------------------------------------------------------------


def wasm_filter(plugin_config, wasm: Path = WASM, name: str = "canary-router") -> dict:
    """The HTTP filter entry that loads canary-router with `plugin_config` (a dict, or a
    raw string to hand over exactly)."""
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": value},
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm)}}},
            },
        },
    }


def ecds_filter(path: Path, name: str = "canary-router") -> dict:
    """The HTTP filter entry that takes canary-router from extension config discovery
    (ECDS), the way Istio delivers a WasmPlugin, here from a file Envoy watches."""
    return {
        "name": name,
        "config_discovery": {
            "config_source": {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
        },
    }


def write_ecds(path: Path, plugin_config, version: str, wasm: Path = WASM, name: str = "canary-router"):
    """Writes an ECDS discovery response for canary-router atomically: Envoy watches for
    the file being moved into place, and must never read half a file."""
    response = {
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": wasm_filter(plugin_config, wasm, name)["typed_config"],
        }],
    }
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(response))
    os.replace(tmp, path)


# What makes a cluster speak HTTP/2 without TLS (h2c, prior knowledge) upstream, as gRPC
# servers need: the same block as the gRPC clusters of envoy/envoy.yaml.
HTTP2_UPSTREAM = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


def cluster(name: str, port: int, http2: bool = False) -> dict:
    """A static cluster of one endpoint on 127.0.0.1; `http2` for gRPC upstreams."""
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": LOOPBACK, "port_value": port}}}}]}]}}
    if http2:
        c["typed_extension_protocol_options"] = HTTP2_UPSTREAM
    return c


def envoy_config(listen_port: int, admin_port: int, plugin_config, clusters: dict[str, int],
                 cluster_header: str = "x-canary-cluster", fallback_cluster: str | None = None,
                 wasm: Path = WASM, ecds_path: Path | None = None, route_timeout: str = "30s",
                 http2: Collection[str] = (), pre_filters=(), buffer_limit: int | None = None) -> dict:
    """A listener with the filter, a route on `cluster_header`, one cluster per revision
    (name -> port on 127.0.0.1) and, for requests the filter did not route, either a 404
    or `fallback_cluster`. With `ecds_path`, the filter comes from that ECDS file
    (written with `plugin_config` unless it is None) instead of inline. The listener
    takes HTTP/1.1 and h2c (gRPC clients); the clusters named in `http2` speak HTTP/2 to
    their upstream (gRPC servers), the others HTTP/1.1. `pre_filters` are HTTP filter
    entries placed before the filter (the OpenAI body filter of envoy/envoy.yaml), and
    `buffer_limit` the listener's per-connection buffer limit."""
    if ecds_path is not None and plugin_config is not None:
        write_ecds(ecds_path, plugin_config, "0", wasm)
    canary_filter = ecds_filter(ecds_path) if ecds_path is not None else wasm_filter(plugin_config, wasm)
    fallback = ({"route": {"cluster": fallback_cluster}} if fallback_cluster else
                {"direct_response": {"status": 404,
                                     "body": {"inline_string": "no canary route for this host\n"}}})
    return {
        # xDS (ECDS included) needs a node identity.
        "node": {"id": "canary-router-local", "cluster": "ingress"},
        "stats_config": {"stats_tags": STATS_TAGS},
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": LOOPBACK, "port_value": listen_port}},
                **({"per_connection_buffer_limit_bytes": buffer_limit} if buffer_limit else {}),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        # HTTP/1.1, and HTTP/2 without TLS (h2c prior knowledge, what gRPC
                        # clients send on an insecure channel), told apart by the preface.
                        "codec_type": "AUTO",
                        "route_config": {"name": "canary", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [
                                {"match": {"prefix": "/", "headers": [
                                    {"name": cluster_header, "present_match": True}]},
                                 "route": {"cluster_header": cluster_header, "timeout": route_timeout}},
                                {"match": {"prefix": "/"}, **fallback},
                            ]}]},
                        "http_filters": [
                            *pre_filters,
                            canary_filter,
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                         "router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [cluster(name, port, name in http2) for name, port in clusters.items()],
        },
    }


class Envoy:
    """The real Envoy binary from the venv, started on a generated config."""

    def __init__(self, config: dict, workdir: Path, concurrency: int = 1, name: str = "envoy"):
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / f"{name}.json"
        self.log_path = self.workdir / f"{name}.log"
        self.config_path.write_text(json.dumps(config, indent=2))
        listener = config["static_resources"]["listeners"][0]
        self.port = listener["address"]["socket_address"]["port_value"]
        self.admin_port = config["admin"]["address"]["socket_address"]["port_value"]
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Envoy":
        self._log = open(self.log_path, "wb")
        self.proc = _spawn(
            [str(ENVOY_BIN), "-c", str(self.config_path), "--concurrency", str(self.concurrency),
             "--disable-hot-restart", "--log-level", "info"], self._log)
        return self

    def wait_ready(self, timeout: float = 30.0) -> "Envoy":
        try:
            wait_http(self.admin_port, "/ready", timeout, self.proc, "envoy")
        except Exception as e:
            raise RuntimeError(f"{e}\n--- envoy log ---\n{self.log()[-4000:]}") from e
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        """For configurations Envoy must refuse: the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start().wait_ready()

    def __exit__(self, *exc):
        self.stop()


# Every process started here, so that none outlives the script that started it, even
# when the script ends without reaching its own cleanup.
_STARTED: list[subprocess.Popen] = []


def _spawn(args: list[str], log) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _STARTED.append(proc)
    return proc


@atexit.register
def _stop_all():
    for proc in _STARTED:
        stop_process(proc)


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


# --- KServe model servers ----------------------------------------------------------


class ModelServer:
    """A real KServe 0.21 model server (envoy/model_server.py) on a loopback port; with
    `grpc`, also KServe's V2 gRPC server on a second one (`grpc_port`), and the standard
    gRPC health service there too."""

    def __init__(self, kind: str, workdir: Path, model_name: str = "sklearn-iris", grpc: bool = False):
        self.kind = kind
        self.model_name = model_name
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None
        self.log_path = Path(workdir) / f"model-{kind}-{self.port}.log"
        # model_server.py reads it on every call: see `fault`.
        self.faults_path = Path(workdir) / f"model-{kind}-{self.port}.faults"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ModelServer":
        self._log = open(self.log_path, "wb")
        grpc = (["--grpc_port", str(self.grpc_port), "--grpc_health"] if self.grpc_port
                else ["--enable_grpc", "false"])
        self.proc = _spawn(
            [str(PYTHON), str(ROOT / "envoy" / "model_server.py"), "--kind", self.kind,
             "--model_name", self.model_name, "--http_port", str(self.port), *grpc,
             "--faults", str(self.faults_path), "--enable_latency_logging", "false",
             "--configure_logging", "false"], self._log)
        return self

    def fault(self, what: str = "") -> None:
        """`internal`: every prediction raises (REST 500, gRPC INTERNAL); `unready`: the
        model reports not ready; "": healthy again. Takes effect on the next call."""
        tmp = self.faults_path.with_suffix(".tmp")
        tmp.write_text(what)
        os.replace(tmp, self.faults_path)

    def wait_ready(self, timeout: float = 60.0) -> "ModelServer":
        try:
            wait_http(self.port, "/v2/health/ready", timeout, self.proc, f"model server {self.kind}")
        except Exception as e:
            raise RuntimeError(f"{e}\n--- log ---\n{self.log_path.read_text()[-3000:]}") from e
        return self

    def stop(self):
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()


def predict_v1(port: int, host: str, instances, model: str = "sklearn-iris", headers=()):
    body = json.dumps({"instances": instances}).encode()
    return request(port, f"/v1/models/{model}:predict", host=host, body=body,
                   headers=[("Content-Type", "application/json"), *headers])


def infer_v2(port: int, host: str, rows, model: str = "sklearn-iris", headers=()):
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])],
                                   "datatype": "FP32", "data": rows}]}).encode()
    return request(port, f"/v2/models/{model}/infer", host=host, body=body,
                   headers=[("Content-Type", "application/json"), *headers])


def scratch_dir(prefix: str) -> Path:
    base = ROOT / ".run"
    base.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


if __name__ == "__main__":
    print("stack.py is a library for envoy/demo.py and tests/", file=sys.stderr)
