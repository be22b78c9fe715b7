"""Real Envoy refuses every configuration of the bad-config corpus (tests/bad_configs,
one file per rule the validator enforces, plus malformed JSON, wrong types, huge numbers,
empty strings, unicode hosts, deep nesting), and a 10 MB one, each with one error line
from the filter that names the service, the field and the value."""

import json
import re

import pytest

import stack

CORPUS = stack.ROOT / "tests" / "bad_configs"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


def refused(tmp_path, plugin_config: str) -> str:
    """Starts Envoy with `plugin_config`; returns the filter's error line."""
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config, {"c1": 1, "c2": 2})
    envoy = stack.Envoy(cfg, tmp_path).start()
    try:
        code = envoy.wait_exit(timeout=60)
    finally:
        envoy.stop()
    log = envoy.log()
    assert code != 0, log[-2000:]
    assert "Unable to create Wasm plugin" in log
    rejected = [line for line in log.splitlines() if "configuration rejected:" in line]
    assert rejected, log[-3000:]
    # Envoy may run on_configure in more than one context; every line says the same.
    assert len({re.sub(r"^\[[^]]*\]\[\d+\]", "", line) for line in rejected}) == 1, rejected
    assert "[error]" in rejected[0]
    return rejected[0]


def test_corpus_has_at_least_thirty_configs():
    assert len(EXPECTED) >= 30
    assert sorted(p.stem for p in CORPUS.glob("*.json") if p.name != "expected.json") == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_envoy_refuses_bad_config(tmp_path, name):
    line = refused(tmp_path, (CORPUS / f"{name}.json").read_text(encoding="utf-8"))
    for part in EXPECTED[name]:
        assert part in line, f"{part!r} not in {line!r}"


def test_envoy_refuses_a_ten_megabyte_config_naming_the_bad_service(tmp_path):
    services = [{"name": f"svc-{i}", "hosts": [f"svc-{i}.models.example.com"],
                 "revisions": [{"name": f"svc-{i}-predictor-00001", "cluster": f"outbound|80||svc-{i}-1.ns.svc.cluster.local"},
                               {"name": f"svc-{i}-predictor-00002", "cluster": f"outbound|80||svc-{i}-2.ns.svc.cluster.local"}],
                 "latestRolledoutRevision": f"svc-{i}-predictor-00001", "latestReadyRevision": f"svc-{i}-predictor-00002",
                 "canaryTrafficPercent": 10, "tagRouting": True} for i in range(25_000)]
    services[-1]["canaryTrafficPercent"] = 101
    text = json.dumps({"services": services})
    assert len(text) > 10_000_000
    line = refused(tmp_path, text)
    assert 'service "svc-24999": canaryTrafficPercent: 101 is outside 0..100' in line
