"""Validate Istio manifests offline against Istio's schemas (PyPI
`cloudcoil-models-istio`, generated from Istio's CRDs; pinned in tests/requirements.txt).

    .venv/bin/python istio/validate.py istio/*.yaml

Strict validation catches wrong types and enum values; the models silently drop keys
they do not know, so every key of the input must also be in the validated model, or it
is reported as unknown (a typo like `pluginConfg` would otherwise pass).
"""

from __future__ import annotations

import sys

import yaml
from cloudcoil.models.istio.extensions import v1alpha1 as extensions
from cloudcoil.models.istio.networking import v1 as networking
from cloudcoil.models.istio.networking import v1alpha3 as networking_v1alpha3
from pydantic import ValidationError

MODELS = {
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): extensions.WasmPlugin,
    ("networking.istio.io/v1", "Gateway"): networking.Gateway,
    ("networking.istio.io/v1", "VirtualService"): networking.VirtualService,
    ("networking.istio.io/v1", "DestinationRule"): networking.DestinationRule,
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): networking_v1alpha3.EnvoyFilter,
}
# Free-form by design (google.protobuf.Struct): not checked key by key.
# An EnvoyFilter patch's `value` is Envoy configuration (also a Struct).
FREE_FORM = {"pluginConfig", "labels", "annotations", "matchLabels", "value"}


def dropped_keys(given, kept, path="") -> list[str]:
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        out = []
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                out.append(where)
            elif key not in FREE_FORM:
                out.extend(dropped_keys(value, kept[key], where))
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in dropped_keys(g, k, f"{path}[{i}]")]
    return []


def validate(doc: dict) -> list[str]:
    """Problems with one manifest; empty when it is valid."""
    if not isinstance(doc, dict):
        return ["not a mapping"]
    model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        return [f"unsupported apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}"]
    try:
        parsed = model.model_validate(doc, strict=True)
    except ValidationError as e:
        return [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{key}: unknown field" for key in dropped_keys(doc, kept)]


def main(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is None:
                    continue
                problems = validate(doc)
                name = f"{path}#{i} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                print(("INVALID " if problems else "ok      ") + name)
                for p in problems:
                    print(f"    {p}")
                failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
