"""The OCI image, end to end with no Docker engine: `make push` to a real registry
(Debian's docker-registry on 127.0.0.1), pulled back with skopeo, read the way Istio's
fetcher reads it; the wasm is byte-identical, the digest is the sha256 that the rendered
WasmPlugin names, and the pulled module runs in Envoy."""

import hashlib
import subprocess
import sys

import pytest
import yaml

import stack

sys.path.insert(0, str(stack.ROOT / "istio"))
import image  # noqa: E402
import validate  # noqa: E402

OPT_WASM = stack.ROOT / "target" / "canary-router.wasm"
VERSION = next(line.split('"')[1] for line in (stack.ROOT / "Cargo.toml").read_text().splitlines()
               if line.startswith("version = "))


@pytest.fixture
def registry(tmp_path):
    port = stack.free_port()
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}},
        "http": {"addr": f"{stack.LOOPBACK}:{port}"},
    }))
    log = open(tmp_path / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        stack.wait_http(port, "/v2/", 15, proc, "docker-registry")
        yield f"{stack.LOOPBACK}:{port}"
    finally:
        stack.stop_process(proc)
        log.close()


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=stack.ROOT, **kw)


def test_image_build_is_reproducible(tmp_path):
    a = image.build(OPT_WASM, tmp_path / "a", VERSION)
    b = image.build(OPT_WASM, tmp_path / "b", VERSION)
    assert a == b
    digest, wasm = image.extract(tmp_path / "a", VERSION)
    assert digest == a and wasm == OPT_WASM.read_bytes()


def test_push_pull_round_trip(registry, tmp_path):
    out = run("make", "-s", "push", f"REGISTRY={registry}/kserve", "TLS_VERIFY=false").stdout
    ref = f"{registry}/kserve/canary-router:{VERSION}"
    digest = (stack.ROOT / "target" / "oci" / "digest").read_text().strip()

    # The registry serves the manifest we built, byte for byte: same digest.
    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout.encode()
    assert hashlib.sha256(raw).hexdigest() == digest

    # Pulled back and read as Istio reads it: tar+gzip last layer holding plugin.wasm.
    pulled = tmp_path / "pulled"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{pulled}:{VERSION}")
    pulled_digest, wasm = image.extract(pulled, VERSION)
    assert pulled_digest == digest
    assert wasm == OPT_WASM.read_bytes()

    # The manifests `make push` rendered name this image and its digest, and still
    # validate against Istio's schemas.
    rendered = sorted((stack.ROOT / "target" / "istio").glob("wasmplugin*.yaml"))
    assert len(rendered) == 3, out
    for path in rendered:
        doc = yaml.safe_load(path.read_text())
        assert doc["spec"]["url"] == f"oci://{ref}"
        assert doc["spec"]["sha256"] == digest
        assert validate.validate(doc) == []

    # The module from the registry runs in Envoy.
    (tmp_path / "plugin.wasm").write_bytes(wasm)
    backend = stack.EchoBackend("c1")
    try:
        cfg = stack.envoy_config(stack.free_port(), stack.free_port(),
                                 {"services": [{"name": "m", "hosts": ["m.example.com"],
                                                "revisions": [{"name": "m-1", "cluster": "c1"}]}]},
                                 {"c1": backend.port}, wasm=tmp_path / "plugin.wasm")
        with stack.Envoy(cfg, tmp_path) as envoy:
            r = stack.request(envoy.port, "/", host="m.example.com")
            assert (r.status, r.header("x-canary-revision")) == (200, "m-1")
    finally:
        backend.stop()


def test_push_without_registry_says_how():
    r = subprocess.run(["make", "-s", "push"], capture_output=True, text=True, cwd=stack.ROOT)
    assert r.returncode != 0 and "usage: make push REGISTRY=" in r.stdout
