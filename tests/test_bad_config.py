"""Real Envoy refuses every kind of bad configuration, and the filter's one error line
names the service, the field and the value."""

import copy
import re

import pytest

import stack
from test_routing import kserve_service


def config(**service_changes):
    svc = kserve_service(10)
    for k, v in service_changes.items():
        if v is None:
            svc.pop(k, None)
        else:
            svc[k] = v
    return {"services": [svc]}


def two_services_same_host():
    cfg = config()
    other = copy.deepcopy(cfg["services"][0])
    other["name"] = "sklearn-iris-v2"
    other["hosts"] = ["SKLEARN-IRIS.kserve-test.example.com"]
    cfg["services"].append(other)
    return cfg


SVC = 'service "sklearn-iris": '
R1 = "sklearn-iris-predictor-00001"

CASES = {
    "unknown field": (config(canaryTrafficPrecent=10), [SVC, "canaryTrafficPrecent", "unknown field"]),
    "percent above 100": (config(canaryTrafficPercent=150), [SVC, "canaryTrafficPercent: 150 is outside 0..100"]),
    "negative percent": (config(canaryTrafficPercent=-5), [SVC, "canaryTrafficPercent: -5 is outside 0..100"]),
    "percent as string": (config(canaryTrafficPercent="10"), [SVC, "canaryTrafficPercent: invalid type"]),
    "traffic not 100": (config(latestReadyRevision=None, latestRolledoutRevision=None, canaryTrafficPercent=None,
                               headerRoutes=None,
                               traffic=[{"revisionName": R1, "percent": 60},
                                        {"revisionName": "sklearn-iris-predictor-00002", "percent": 30}]),
                        [SVC, "traffic: percents sum to 90"]),
    "mixed forms": (config(traffic=[{"revisionName": R1, "percent": 100}]),
                    [SVC, "traffic and canaryTrafficPercent"]),
    "unknown ready revision": (config(latestReadyRevision="sklearn-iris-predictor-00003"),
                               [SVC, 'latestReadyRevision: "sklearn-iris-predictor-00003" is not a revision']),
    "unknown rule revision": (config(headerRoutes=[{"header": "traffic", "value": "test", "revision": "canary"}]),
                              [SVC, 'headerRoutes[0].revision: "canary" is not a revision']),
    "duplicate revision": (config(revisions=[{"name": R1, "cluster": "c1"}, {"name": R1, "cluster": "c2"}]),
                           [SVC, f'revisions[1].name: revision name "{R1}" is used twice']),
    "host of two services": (two_services_same_host(),
                             ['service "sklearn-iris-v2": hosts[0]', "sklearn-iris.kserve-test.example.com",
                              'already claimed by service "sklearn-iris"']),
    "empty cluster": (config(revisions=[{"name": R1, "cluster": ""},
                                        {"name": "sklearn-iris-predictor-00002", "cluster": "c2"}]),
                      [SVC, "revisions[0].cluster: must not be empty"]),
    "invalid header name": ({"clusterHeader": "x canary cluster", **config()},
                            ['clusterHeader: "x canary cluster" is not a usable header name']),
    "invalid rule header": (config(headerRoutes=[{"header": "traffic:", "value": "test", "revision": "latest"}]),
                            [SVC, 'headerRoutes[0].header: "traffic:"']),
    "wildcard host": (config(hosts=["*.example.com"]), [SVC, 'hosts[0]: "*.example.com" is not a valid host']),
    "host with port": (config(hosts=["iris.example.com:8080"]), [SVC, 'hosts[0]: "iris.example.com:8080"']),
    "bad rewrite host": (config(revisions=[{"name": R1, "cluster": "c1", "host": "a/b"},
                                           {"name": "sklearn-iris-predictor-00002", "cluster": "c2"}]),
                         [SVC, 'revisions[0].host: "a/b" is not a valid host']),
    "missing rolled-out revision": (config(latestRolledoutRevision=None),
                                    [SVC, "latestRolledoutRevision: missing", "canaryTrafficPercent is 10"]),
    "malformed JSON": ('{"services": [', ["not valid JSON"]),
    "empty configuration": ("", ["configuration is empty"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_envoy_refuses_bad_config(tmp_path, name):
    plugin_config, expected = CASES[name]
    cfg = stack.envoy_config(stack.free_port(), stack.free_port(), plugin_config, {"c1": 1, "c2": 2})
    envoy = stack.Envoy(cfg, tmp_path).start()
    try:
        code = envoy.wait_exit(timeout=30)
    finally:
        envoy.stop()
    log = envoy.log()
    assert code != 0, log[-2000:]
    rejected = [line for line in log.splitlines() if "configuration rejected:" in line]
    assert len(rejected) >= 1, log[-3000:]
    # Envoy may run on_configure in more than one context; every line says the same.
    assert len({re.sub(r"^\[[^]]*\]\[\d+\]", "", line) for line in rejected}) == 1, rejected
    assert "[error]" in rejected[0]
    for part in expected:
        assert part in rejected[0], f"{part!r} not in {rejected[0]!r}"
