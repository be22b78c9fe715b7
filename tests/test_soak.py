"""A short soak under faults (`make soak` runs the long one): steady load through real
Envoy with two workers while revisions return 500s, are killed and restarted, hang, and
the configuration is reloaded through ECDS every 3 s."""

import json

import stack
import sys

sys.path.insert(0, str(stack.ROOT / "bench"))
import soak  # noqa: E402


def test_short_soak_under_faults(tmp_path):
    result = soak.run(30, tmp_path)
    report = stack.ROOT / "target" / "reports" / "soak-short.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    assert result["envoy_alive"]
    assert result["fault_kinds"] == ["500s", "down", "hang"] and result["config_reloads"] >= 9
    assert result["errors"] > 0, "the faults should show"
    assert result["unexplained"] == [] and result["errors_explained_by_faults"] == result["errors"], result
    assert result["unknown_cluster"] == 0
    assert result["routed_to_ejected"] == 0
    assert result["ejections"] >= 1
    assert (result["panics"], result["vm_failures"]) == (0, 0)
    assert result["vms_active_after"] == result["vms_active_before"]
    # Memory flat: Envoy's RSS within 10% of where it was after warm-up.
    assert result["rss_kb_after"] <= 1.10 * result["rss_kb_before"], result
