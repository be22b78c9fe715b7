"""Package canary-router's .wasm as an OCI image that Istio's wasm fetcher accepts,
without a Docker engine.

    python istio/image.py build WASM OUT_DIR TAG     # writes an OCI image layout
    python istio/image.py extract LAYOUT_DIR TAG     # prints plugin.wasm's sha256 (checks)
    python istio/image.py render URL DIGEST OUT_DIR MANIFEST...  # url and sha256 filled in

Layout: the "compat" variant of the Wasm image spec: an OCI image manifest with one
`application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`, annotated
`module.wasm.image/variant=compat`. Istio also accepts the "oci" artifact variant
(a raw `application/vnd.module.wasm.content.layer.v1+wasm` layer), but the compat
variant is a plain container image that every registry, `skopeo`, `crane` and `docker`
handle. The build is reproducible: the same .wasm gives the same digest.

`sha256` in a WasmPlugin with an `oci://` url is checked against the image manifest
digest, which `build` prints and writes to OUT_DIR/digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    """A tar with only plugin.wasm, with fixed owner, mode and time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(wasm), 0o444, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha256(data)}", "size": len(data), **extra}


def build(wasm_path: Path, out: Path, tag: str) -> str:
    """Writes an OCI image layout at `out` with `tag`; returns the manifest digest."""
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"{wasm_path} is not a wasm module")
    tar = layer_tar(wasm)
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
        "config": {},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, config),
        "layers": [descriptor(LAYER_TYPE, layer)],
        "annotations": {"module.wasm.image/variant": "compat",
                        "org.opencontainers.image.title": "canary-router"},
    }, sort_keys=True).encode()
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        (blobs / sha256(blob)).write_bytes(blob)
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "manifests": [
        descriptor(MANIFEST_TYPE, manifest, annotations={"org.opencontainers.image.ref.name": tag})]}
    (out / "index.json").write_text(json.dumps(index, sort_keys=True))
    digest = sha256(manifest)
    (out / "digest").write_text(digest + "\n")
    return digest


def extract(layout: Path, tag: str) -> tuple[str, bytes]:
    """Reads an OCI layout the way Istio's fetcher reads an image: the manifest, its
    last layer (must be tar+gzip), plugin.wasm inside. Returns (manifest digest, wasm)."""
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    blob = lambda d: (layout / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    manifest_bytes = blob(entry["digest"])
    manifest = json.loads(manifest_bytes)
    layer = manifest["layers"][-1]
    if layer["mediaType"] != LAYER_TYPE:
        raise ValueError(f"layer media type {layer['mediaType']}, Istio expects {LAYER_TYPE}")
    data = blob(layer["digest"])
    if sha256(data) != layer["digest"].split(":", 1)[1]:
        raise ValueError("layer digest mismatch")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        member = next(m for m in tar.getmembers() if m.name in ("plugin.wasm", "./plugin.wasm"))
        wasm = tar.extractfile(member).read()
    return sha256(manifest_bytes), wasm


def render(url: str, digest: str, out: Path, manifests: list[Path]) -> list[Path]:
    """Copies the manifests into `out`, every WasmPlugin's `url` set to this image and
    `sha256` to its manifest digest (line edits, so comments stay)."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise SystemExit(f"not a sha256 hex digest: {digest!r}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in manifests:
        lines = []
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("sha256:"):
                continue
            if line.startswith("  url: "):
                lines += [f"  url: {url}", f"  sha256: {digest}"]
            else:
                lines.append(line)
        target = out / path.name
        target.write_text("\n".join(lines) + "\n")
        written.append(target)
    return written


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["build", wasm, out, tag]:
            print(build(Path(wasm), Path(out), tag))
        case ["extract", layout, tag]:
            digest, wasm = extract(Path(layout), tag)
            print(f"manifest sha256:{digest}\nplugin.wasm sha256:{sha256(wasm)} ({len(wasm)} bytes)")
        case ["render", url, digest, out, *manifests]:
            for path in render(url, digest, Path(out), [Path(m) for m in manifests]):
                print(f"wrote {path}")
        case _:
            raise SystemExit(__doc__)
