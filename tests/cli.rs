//! The `canary-router` command, run as users run it: `render` on InferenceServices in
//! every state KServe's status can show (tests/cli/isvc/, built from KServe's documented
//! status output) against golden manifests and notes (tests/cli/golden/), `render`'s
//! output through `check`, and `check` on the bad-configuration corpus, whose messages
//! are taken from the filter's own `parse`, not written down here.
//!
//! `UPDATE_GOLDEN=1 cargo test --test cli` rewrites the golden files; review the diff.

// A test binary, helpers included: failing is panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::io::Write;

const BIN: &str = env!("CARGO_BIN_EXE_canary-router");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the command in the repository root (so paths in its output are relative).
fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Compares with the golden file, or writes it under UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = root().join("tests/cli/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn fixtures(prefix_bad: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/cli/isvc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .filter(|n| n.starts_with("bad-") == prefix_bad)
        .collect();
    names.sort();
    names
}

#[test]
fn render_maps_every_state_to_its_golden_manifests() {
    let cases = fixtures(false);
    for state in [
        "canary",
        "canary-old-names",
        "canary-no-tags",
        "first-rollout",
        "rollback",
        "promoted",
        "not-ready",
        "never-ready",
        "raw-deployment",
        "transformer",
        "explainer",
        "stale-status",
        "cluster-local",
        "modelmesh",
        "cluster",
    ] {
        assert!(cases.iter().any(|c| c == state), "no fixture for {state}");
    }
    for case in cases {
        let input = format!("tests/cli/isvc/{case}.json");
        let out = run(&["render", &input], None);
        assert!(out.status.success(), "{case}: {}", text(&out.stderr));
        golden(&format!("{case}.yaml"), &text(&out.stdout));
        golden(&format!("{case}.stderr"), &text(&out.stderr));

        // What render writes, check accepts, and passes on unchanged from standard input.
        let checked = run(&["check", "-"], Some(&out.stdout));
        assert!(
            checked.status.success(),
            "{case}: {}",
            text(&checked.stderr)
        );
        assert_eq!(checked.stdout, out.stdout, "{case}");
        assert!(text(&checked.stderr).contains(": accepted: "), "{case}");
    }
}

#[test]
fn render_refuses_what_it_cannot_map_naming_object_and_field() {
    for case in fixtures(true) {
        let out = run(&["render", &format!("tests/cli/isvc/{case}.json")], None);
        assert_eq!(out.status.code(), Some(1), "{case}");
        assert!(out.stdout.is_empty(), "{case}: wrote {}", text(&out.stdout));
        golden(&format!("{case}.stderr"), &text(&out.stderr));
    }
}

#[test]
fn render_json_is_one_list_and_options_reach_the_manifests() {
    let out = run(
        &["render", "-o", "json", "-"],
        Some(&std::fs::read(root().join("tests/cli/isvc/cluster.json")).unwrap()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    golden("cluster.list.json", &text(&out.stdout));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("v1"), Some("List"))
    );

    let image_from = std::env::temp_dir().join(format!(
        "canary-router-cli-test-{}.yaml",
        std::process::id()
    ));
    std::fs::write(
        &image_from,
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: canary-router}\nspec:\n  \
         url: oci://registry.local:5000/canary-router:0.1.0\n  \
         sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = run(
        &[
            "render",
            "tests/cli/isvc/cluster.json",
            "--image-from",
            image_from.to_str().unwrap(),
            "--namespace",
            "gateways",
            "--name",
            "models",
            "--selector",
            "app=models-gateway",
            "--selector",
            "tier=edge",
            "--policy",
            r#"{"healthCheck": {"path": "/v2/health/ready", "intervalMs": 2000}, "outlier": {"maxErrorRate": 0.5}}"#,
            "--policy",
            r#"kserve-test/sklearn-iris={"autoRollback": {"maxErrorRate": 0.05}, "healthCheck": {"path": "/v1/models/sklearn-iris"}}"#,
            "--policy",
            r#"income={"outlier": null, "sticky": {"header": "x-user"}}"#,
            "--config",
            r#"{"statusPath": "/canary-router/status", "metrics": true}"#,
        ],
        None,
    );
    std::fs::remove_file(&image_from).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    golden("cluster-options.yaml", &text(&out.stdout));
    golden("cluster-options.stderr", &text(&out.stderr));

    let out = run(
        &[
            "render",
            "tests/cli/isvc/canary.json",
            "--gateway",
            "knative-serving/knative-ingress-gateway",
        ],
        None,
    );
    let yaml = text(&out.stdout);
    assert!(!yaml.contains("kind: Gateway"), "{yaml}");
    assert!(
        yaml.contains("  - knative-serving/knative-ingress-gateway\n"),
        "{yaml}"
    );
}

#[test]
fn render_refuses_bad_options() {
    for (args, says) in [
        (vec!["--policy", r#"{"canaryTrafficPercent": 50}"#], "--policy: canaryTrafficPercent is rendered from the InferenceService"),
        (vec!["--policy", r#"iris={"hosts": []}"#], "--policy iris: hosts is rendered"),
        (vec!["--policy", "[1]"], "--policy: expected a JSON object"),
        (vec!["--policy", "{"], "--policy: not JSON"),
        (vec!["--config", r#"{"services": []}"#], "--config: services are rendered"),
        (vec!["--sha256", "abc"], "sha256: \"abc\" is not 64 lowercase hex digits"),
        (vec!["--selector", "istio"], "--selector: \"istio\" is not LABEL=VALUE"),
        // The filter's own compiler refuses a policy, before anything is written.
        (
            vec!["--policy", r#"{"outlier": {"maxErrorRate": 2}}"#],
            "inferenceservice kserve-test/sklearn-iris: the filter would refuse the rendered pluginConfig: configuration rejected: service \"sklearn-iris\": outlier.maxErrorRate",
        ),
    ] {
        let mut all = vec!["render", "tests/cli/isvc/canary.json"];
        all.extend(&args);
        let out = run(&all, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
    // A policy for an InferenceService not read is applied nowhere, and said so.
    let out = run(
        &[
            "render",
            "tests/cli/isvc/canary.json",
            "--policy",
            r#"bert={"sticky": {"header": "x"}}"#,
        ],
        None,
    );
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("--policy bert: no InferenceService of that name was read"));
}

/// Every file of the bad-configuration corpus is refused with exactly the message the
/// filter's `parse` gives (and so Envoy logs after "configuration rejected: ").
#[test]
fn check_refuses_the_whole_bad_config_corpus_with_the_filters_messages() {
    let dir = root().join("tests/bad_configs");
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 30);
    let mut paths = Vec::new();
    for (name, parts) in &expected {
        let rel = format!("tests/bad_configs/{name}.json");
        let bytes = std::fs::read(root().join(&rel)).unwrap();
        let message = match canary_router::parse(&bytes) {
            Ok(_) => panic!("{name}: the filter accepts it"),
            Err(e) => e.to_string(),
        };
        let out = run(&["check", &rel], None);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let line = format!("{rel}: plugin configuration: configuration rejected: {message}\n");
        assert_eq!(text(&out.stderr), line, "{name}");
        for part in parts.as_array().unwrap() {
            assert!(
                line.contains(part.as_str().unwrap()),
                "{name}: {line:?} lacks {part}"
            );
        }
        paths.push(rel);
    }
    // All at once: one refusal line per file, exit 1.
    let mut args = vec!["check"];
    args.extend(paths.iter().map(String::as_str));
    let out = run(&args, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr)
            .matches(": configuration rejected: ")
            .count(),
        paths.len()
    );
}

#[test]
fn check_accepts_the_shipped_manifests_and_envoy_config() {
    let out = run(
        &[
            "check",
            "istio/wasmplugin.yaml",
            "istio/wasmplugin-promote.yaml",
            "istio/wasmplugin-rollback.yaml",
            "envoy/envoy.yaml",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stderr);
    assert_eq!(report.matches(": accepted: ").count(), 4, "{report}");
    assert!(
        report
            .contains("envoy/envoy.yaml: document 1 (Envoy wasm filter canary-router): accepted: "),
        "{report}"
    );
    // Files are not echoed; only standard input is.
    assert!(out.stdout.is_empty());
}

#[test]
fn check_names_the_document_that_is_refused() {
    let good = std::fs::read_to_string(root().join("istio/wasmplugin.yaml")).unwrap();
    let bad = good.replace("canaryTrafficPercent: 10", "canaryTrafficPercent: 10.5");
    let stream = format!(
        "{}---\n{bad}",
        std::fs::read_to_string(root().join("istio/gateway.yaml")).unwrap()
    );
    let out = run(&["check", "-v", "-"], Some(stream.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing passes on after a refusal");
    let report = text(&out.stderr);
    // The filter's own message for that pluginConfig.
    let doc: serde_json::Value = serde_norway::from_str(&bad).unwrap();
    let config = serde_json::to_vec(&doc["spec"]["pluginConfig"]).unwrap();
    let message = canary_router::parse(&config).err().unwrap().to_string();
    assert!(message.contains("canaryTrafficPercent"), "{message}");
    assert!(
        report.contains(&format!("<stdin>: document 3 (WasmPlugin istio-system/canary-router): configuration rejected: {message}\n")),
        "{report}"
    );
    assert!(
        report.contains("<stdin>: document 1 (Gateway kserve-test/kserve-canary-gateway): skipped"),
        "{report}"
    );
}

#[test]
fn check_without_anything_to_check_fails() {
    let out = run(&["check", "istio/gateway.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nothing to check"));
    let out = run(&["check", "tests/cli/isvc/does-not-exist.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: tests/cli/isvc/does-not-exist.yaml: "));
}

#[test]
fn help_reads_like_kubectl() {
    let out = run(&["render", "--help"], None);
    let help = text(&out.stdout);
    for part in [
        "Usage: canary-router render [OPTIONS] <FILE>",
        "Examples:",
        "--image-from <PATH>",
        "--policy <[NAME=]JSON>",
    ] {
        assert!(help.contains(part), "{part:?} not in:\n{help}");
    }
    let out = run(&["--help"], None);
    let help = text(&out.stdout);
    for command in ["render", "check", "status"] {
        assert!(help.contains(&format!("  {command} ")), "{help}");
    }
    assert!(Path::new(BIN).exists());
}
