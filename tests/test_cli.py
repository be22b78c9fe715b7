"""The `canary-router` command end to end, on real Envoy: InferenceServices as KServe's
status shows them (tests/cli/isvc/) -> `render` -> `check` -> the rendered pluginConfig
(through ECDS, as Istio delivers it) with the rendered VirtualServices translated to
Envoy routes (as test_istio does for istio/*.yaml) -> requests. The split, the tag hosts
and promote/rollback must do what KServe's own status says: `status.components.*.traffic`
percentages within a binomial tolerance, every tagged URL reaching its revision. Then
`status` against the running Envoy, and `check`'s refusals against Envoy's own log line."""

import collections
import json
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

import stack
from test_bad_config import CORPUS, refused
from test_istio import envoy_from_virtualservices
from test_routing import assert_binomial

CLI = stack.ROOT / "target" / "debug" / "canary-router"
FIXTURES = stack.ROOT / "tests" / "cli" / "isvc"
STATUS_PATH = "/canary-router/status"
# Where render sends `:explain` requests of Serverless InferenceServices (KServe's route).
LOCAL_GATEWAY = "knative-local-gateway.istio-system.svc.cluster.local"


def cli(*args, stdin: bytes | None = None, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(CLI), *args], input=stdin, capture_output=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr.decode()
    return done


@pytest.fixture(scope="module", autouse=True)
def built_cli():
    if not CLI.exists():  # `make integration` builds it; a bare pytest run may not have
        subprocess.run(["cargo", "build", "--quiet", "--bin", "canary-router"], cwd=stack.ROOT, check=True)


def render_and_check(fixture: str, *options: str) -> list[dict]:
    """render FILE | check -: the manifests, after check passed them on unchanged."""
    rendered = cli("render", str(FIXTURES / fixture), *options).stdout
    checked = cli("check", "-", stdin=rendered)
    assert checked.stdout == rendered
    assert b": accepted: " in checked.stderr
    return [d for d in yaml.safe_load_all(rendered) if d]


def plugin_json(manifests) -> str:
    # What Istio hands the filter: pluginConfig as JSON (see test_istio.plugin_json).
    plugin = next(d for d in manifests if d["kind"] == "WasmPlugin")
    return json.dumps(plugin["spec"]["pluginConfig"], separators=(",", ":"))


def destinations(manifests) -> set[str]:
    return {r["destination"]["host"] for d in manifests if d["kind"] == "VirtualService"
            for http in d["spec"]["http"] for r in http.get("route", [])}


class Gateway:
    """Envoy as Istio would program the ingress gateway from the rendered manifests, with
    an echo backend per destination Service, named after the revision it serves."""

    def __init__(self, manifests, workdir):
        self.backends = {}
        for host in destinations(manifests):
            name = "explainer" if host == LOCAL_GATEWAY else host.split(".")[0]
            self.backends[host] = stack.EchoBackend(name)
        vss = [d for d in manifests if d["kind"] == "VirtualService"]
        ecds = workdir / "ecds.json"
        stack.write_ecds(ecds, plugin_json(manifests), "rendered")
        cfg = envoy_from_virtualservices(vss, None, {h: b.port for h, b in self.backends.items()}, ecds_path=ecds)
        self.envoy = stack.Envoy(cfg, workdir).start().wait_ready()

    def request(self, host, path="/v1/models/m:predict", **kw):
        return stack.request(self.envoy.port, path, host=host, **kw)

    def stop(self):
        self.envoy.stop()
        for b in self.backends.values():
            b.stop()


def kserve_says(isvc: dict, component: str = "predictor"):
    """From the object's status: each revision's percent, and each tagged URL's host with
    the revision it names."""
    traffic = isvc["status"]["components"][component]["traffic"]
    shares = collections.Counter()
    for t in traffic:
        shares[t["revisionName"]] += t["percent"]
    tags = {urlsplit(t["url"]).hostname: t["revisionName"] for t in traffic if "url" in t}
    return shares, tags


def assert_split_as_status_says(gw: Gateway, isvc: dict, component: str = "predictor", n: int = 600):
    host = urlsplit(isvc["status"]["url"]).hostname
    shares, tags = kserve_says(isvc, component)
    seen = collections.Counter()
    for _ in range(n):
        r = gw.request(host)
        assert r.status == 200, r
        backend = r.header("x-backend")
        # The revision that answered is the one the response names, reached by its own
        # Service name as authority.
        assert r.header("x-canary-revision") == backend, r
        assert r.header("x-seen-authority") == f"{backend}.{isvc['metadata']['namespace']}.svc.cluster.local", r
        seen[backend] += 1
    assert set(seen) <= {rev for rev, p in shares.items() if p}, (seen, shares)
    for rev, percent in shares.items():
        assert_binomial(seen[rev], n, percent / 100)
    # Tags are routed as KServe's annotation asks (KServe also tags the rolled-out
    # revision `prev` without it; render says so, and leaves it out).
    if isvc["metadata"]["annotations"].get("serving.kserve.io/enable-tag-routing") == "true":
        for tag_host, rev in tags.items():
            r = gw.request(tag_host)
            assert (r.status, r.header("x-backend")) == (200, rev), (tag_host, r)
    else:
        for tag_host in tags:
            assert gw.request(tag_host).status == 404, tag_host
    return seen


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`kubectl get isvc -A -o json` of a cluster (a canary with tags, a raw deployment, a
    transformer, an explainer, one never ready, one ModelMesh), rendered with the status
    view on, on one Envoy."""
    manifests = render_and_check("cluster.json", "--config", json.dumps({"statusPath": STATUS_PATH}))
    gw = Gateway(manifests, tmp_path_factory.mktemp("cli-cluster"))
    objects = {i["metadata"]["name"]: i for i in json.loads((FIXTURES / "cluster.json").read_text())["items"]}
    yield gw, objects
    gw.stop()


def test_rendered_cluster_routes_as_kserve_status_says(cluster):
    gw, isvcs = cluster
    assert_split_as_status_says(gw, isvcs["sklearn-iris"])
    # The transformer takes the split; its revisions answer.
    assert_split_as_status_says(gw, isvcs["image-classifier"], component="transformer", n=400)
    assert_split_as_status_says(gw, isvcs["income"], n=400)
    # KServe's own tag routing names the predictor's host; the filter also answers the
    # tags of the InferenceService's own host.
    for tag, rev in [("latest", "sklearn-iris-predictor-00002"), ("prev", "sklearn-iris-predictor-00001")]:
        r = gw.request(f"{tag}-sklearn-iris.kserve-test.example.com")
        assert (r.status, r.header("x-backend")) == (200, rev), r
    # RawDeployment: one revision, the predictor's Service.
    r = gw.request("sklearn-raw-kserve-test.example.com")
    assert (r.status, r.header("x-backend"), r.header("x-seen-authority")) == (
        200, "sklearn-raw-predictor", "sklearn-raw-predictor.kserve-test.svc.cluster.local"), r
    # `:explain` goes where KServe sends it: the explainer, through Knative's local gateway.
    r = gw.request("income.kserve-test.example.com", path="/v1/models/income:explain", body=b"{}")
    assert (r.status, r.header("x-backend"), r.header("x-seen-authority")) == (
        200, "explainer", "income-explainer.kserve-test.svc.cluster.local"), r
    # Skipped objects are not served: not ready, ModelMesh.
    assert gw.request("bert.kserve-test.example.com").status == 404


def test_status_prints_the_filters_view_as_kubectl_get_isvc(cluster):
    gw, _ = cluster
    url = f"http://127.0.0.1:{gw.envoy.port}{STATUS_PATH}"
    table = cli("status", url).stdout.decode().splitlines()
    header = table[0].split()
    assert header == ["NAME", "URL", "READY", "PREV", "LATEST", "PREVROLLEDOUTREVISION", "LATESTREADYREVISION",
                      "SPLIT", "EJECTED", "ROLLEDBACK"], table
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {"image-classifier", "income", "sklearn-iris", "sklearn-raw"}, table
    assert rows["sklearn-iris"] == [
        "sklearn-iris", "http://sklearn-iris.kserve-test.example.com", "True", "90", "10",
        "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002",
        "sklearn-iris-predictor-00002=10,sklearn-iris-predictor-00001=90", "<none>", "False"], table
    # No split: PREV stays empty, as in kubectl's own table.
    assert rows["sklearn-raw"][2:5] == ["True", "100", "sklearn-raw-predictor"], table
    # -o json passes the view through.
    view = cli("status", "-o", "json", url).stdout
    assert json.loads(view) == stack.request(gw.envoy.port, STATUS_PATH).json()
    wide = cli("status", "-o", "wide", url).stdout.decode().splitlines()
    assert wide[0].split()[-3:] == ["CONFIGURED", "NOTREADY", "FAILOPEN"]
    # A wrong path says what to look at.
    missing = cli("status", f"http://127.0.0.1:{gw.envoy.port}/nope", check=False)
    assert missing.returncode == 1 and b"404" in missing.stderr, missing


@pytest.mark.parametrize("fixture", ["canary-old-names", "rollback", "promoted", "not-ready"])
def test_each_state_routes_as_kserve_status_says(tmp_path, fixture):
    """KServe's guide, step by step: its printed status (old -predictor-default- names),
    rollback to 0 with the canary still reachable by tag, promotion, a failing new
    revision that gets nothing."""
    isvc = json.loads((FIXTURES / f"{fixture}.json").read_text())
    gw = Gateway(render_and_check(f"{fixture}.json"), tmp_path)
    try:
        seen = assert_split_as_status_says(gw, isvc, n=400)
        if fixture == "rollback":
            assert seen == {"sklearn-iris-predictor-00001": 400}
            r = gw.request("latest-sklearn-iris.kserve-test.example.com")
            assert r.header("x-backend") == "sklearn-iris-predictor-00002", r
        if fixture == "promoted":
            assert seen == {"sklearn-iris-predictor-00002": 400}
            # After a promotion KServe has no prev tag, and neither has the gateway.
            assert gw.request("prev-sklearn-iris-predictor.kserve-test.example.com").status == 404
        if fixture == "not-ready":
            assert seen == {"sklearn-iris-predictor-00001": 400}
    finally:
        gw.stop()


@pytest.mark.parametrize("name", ["percent-above-100", "unknown-field", "malformed-json"])
def test_check_says_what_envoy_logs(tmp_path, name):
    """`check`'s refusal is Envoy's own log line, after `configuration rejected: `."""
    path = CORPUS / f"{name}.json"
    ours = cli("check", str(path), check=False)
    assert ours.returncode == 1
    envoy_line = refused(tmp_path, path.read_text(encoding="utf-8"))
    marker = "configuration rejected: "
    assert ours.stderr.decode().rstrip("\n").split(marker, 1)[1] == envoy_line.split(marker, 1)[1]
