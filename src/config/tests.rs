//! Configuration model: KServe and Knative semantics, and every rejection rule.

use serde_json::{json, Value};

use crate::config::error::ErrorKind;
use crate::config::parse;
use crate::route::Router;

/// KServe's canary example from the core issue.
fn kserve_example() -> Value {
    json!({
        "services": [{
            "name": "sklearn-iris",
            "hosts": ["sklearn-iris.kserve-test.example.com", "sklearn-iris-predictor.kserve-test.example.com"],
            "revisions": [
                {"name": "sklearn-iris-predictor-00001", "cluster": "sklearn-iris-00001",
                 "host": "sklearn-iris-predictor-00001.kserve-test.svc.cluster.local"},
                {"name": "sklearn-iris-predictor-00002", "cluster": "sklearn-iris-00002"}
            ],
            "latestRolledoutRevision": "sklearn-iris-predictor-00001",
            "latestReadyRevision": "sklearn-iris-predictor-00002",
            "canaryTrafficPercent": 10,
            "tagRouting": true,
            "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"}]
        }]
    })
}

fn load(v: &Value) -> Router {
    match parse(v.to_string().as_bytes()) {
        Ok(r) => r,
        Err(e) => panic!("config rejected: {e}"),
    }
}

fn reject(v: &Value) -> String {
    match parse(v.to_string().as_bytes()) {
        Ok(_) => panic!("config accepted: {v}"),
        Err(e) => e.to_string(),
    }
}

/// Applies `f` to the first service of the KServe example.
fn with_service(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = kserve_example();
    if let Some(Value::Object(s)) = v.pointer_mut("/services/0") {
        f(s);
    }
    v
}

fn split(router: &Router, service: usize) -> Vec<(String, u32)> {
    router.services()[service]
        .split_percents()
        .map(|(r, p)| (r.to_owned(), p))
        .collect()
}

fn tag_target(router: &Router, host: &str) -> Option<String> {
    let route = router.lookup(host)?;
    let view = crate::health::view::View::configured(router);
    let d = router
        .decide(route, |_| None, &mut crate::route::rng::Rng::new(1), &view)?
        .routed()?;
    assert!(route.is_tagged());
    Some(d.revision.to_owned())
}

const R1: &str = "sklearn-iris-predictor-00001";
const R2: &str = "sklearn-iris-predictor-00002";

#[test]
fn kserve_canary_splits_ready_and_rolledout() {
    let r = load(&kserve_example());
    assert_eq!(split(&r, 0), vec![(R2.into(), 10), (R1.into(), 90)]);
    assert_eq!(r.cluster_header(), "x-canary-cluster");
    assert_eq!(r.revision_header(), "x-canary-revision");
    assert!(!r.upstream_revision_header());
}

#[test]
fn promote_is_the_field_removed() {
    let r = load(&with_service(|s| {
        s.remove("canaryTrafficPercent");
    }));
    assert_eq!(split(&r, 0), vec![(R2.into(), 100)]);
    let r = load(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), Value::Null);
    }));
    assert_eq!(split(&r, 0), vec![(R2.into(), 100)]);
}

#[test]
fn rollback_is_zero() {
    let r = load(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), json!(0));
    }));
    assert_eq!(split(&r, 0), vec![(R1.into(), 100)]);
    // A 0% canary stays reachable by tag.
    assert_eq!(
        tag_target(&r, "latest-sklearn-iris.kserve-test.example.com").as_deref(),
        Some(R2)
    );
}

#[test]
fn hundred_percent_goes_to_the_canary() {
    let r = load(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), json!(100));
    }));
    assert_eq!(split(&r, 0), vec![(R2.into(), 100)]);
}

#[test]
fn one_revision_gets_everything() {
    let r = load(&json!({"services": [{
        "name": "m", "hosts": ["m.example.com"], "tagRouting": true,
        "revisions": [{"name": "m-1", "cluster": "c1"}], "canaryTrafficPercent": 10
    }]}));
    assert_eq!(split(&r, 0), vec![("m-1".into(), 100)]);
    assert_eq!(
        tag_target(&r, "latest-m.example.com").as_deref(),
        Some("m-1")
    );
    assert!(
        r.lookup("prev-m.example.com").is_none(),
        "prev- without a rolled-out revision is unknown"
    );
}

#[test]
fn same_revision_in_both_fields_gets_everything() {
    let r = load(&with_service(|s| {
        s.insert("latestRolledoutRevision".into(), json!(R2));
    }));
    assert_eq!(split(&r, 0), vec![(R2.into(), 100)]);
}

#[test]
fn tag_hosts_exist_only_with_tag_routing() {
    let r = load(&kserve_example());
    for h in [
        "sklearn-iris.kserve-test.example.com",
        "sklearn-iris-predictor.kserve-test.example.com",
    ] {
        assert_eq!(tag_target(&r, &format!("latest-{h}")).as_deref(), Some(R2));
        assert_eq!(tag_target(&r, &format!("prev-{h}")).as_deref(), Some(R1));
    }
    let r = load(&with_service(|s| {
        s.remove("tagRouting");
    }));
    assert!(r
        .lookup("latest-sklearn-iris.kserve-test.example.com")
        .is_none());
    assert!(r.lookup("sklearn-iris.kserve-test.example.com").is_some());
}

#[test]
fn knative_traffic_form() {
    let r = load(&json!({"services": [{
        "name": "m", "hosts": ["m.example.com"], "tagRouting": true,
        "revisions": [{"name": "a", "cluster": "ca"}, {"name": "b", "cluster": "cb"}, {"name": "c", "cluster": "cc"}],
        "traffic": [
            {"revisionName": "a", "percent": 70, "tag": "stable"},
            {"revisionName": "b", "percent": 30},
            {"revisionName": "c", "tag": "Shadow"}
        ],
        "headerRoutes": [{"header": "x-model", "value": "shadow", "revision": "shadow"},
                         {"header": "x-model", "value": "b", "revision": "b"}]
    }]}));
    assert_eq!(split(&r, 0), vec![("a".into(), 70), ("b".into(), 30)]);
    assert_eq!(tag_target(&r, "stable-m.example.com").as_deref(), Some("a"));
    assert_eq!(tag_target(&r, "shadow-m.example.com").as_deref(), Some("c"));
    assert!(
        r.lookup("latest-m.example.com").is_none(),
        "no implicit tags in the traffic form"
    );
}

#[test]
fn hosts_are_lowercased() {
    let r = load(
        &json!({"services": [{"name": "m", "hosts": ["M.Example.COM."],
        "revisions": [{"name": "a", "cluster": "c"}]}]}),
    );
    assert!(r.lookup("m.example.com").is_some());
    assert!(r.lookup("M.EXAMPLE.com:443").is_some());
}

#[test]
fn custom_header_names() {
    let r = load(
        &json!({"clusterHeader": "X-Route-To", "revisionHeader": "App-Version",
        "upstreamRevisionHeader": true, "services": []}),
    );
    assert_eq!(r.cluster_header(), "x-route-to");
    assert_eq!(r.revision_header(), "app-version");
    assert!(r.upstream_revision_header());
    assert!(!r.metrics(), "metrics are off by default");
    assert_eq!(r.status_path(), None);
    let r = load(&json!({"statusPath": "/canary-router/status", "metrics": true, "services": []}));
    assert_eq!(
        (r.status_path(), r.metrics()),
        (Some("/canary-router/status"), true)
    );
}

#[test]
fn summary_names_each_split() {
    let r = load(&kserve_example());
    let s = r.summary();
    assert!(
        s.contains(&format!("sklearn-iris: {R2} 10%, {R1} 90%")),
        "{s}"
    );
}

// --- rejections: each names the service, the field and the value -----------------

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should mention {p:?}");
    }
}

#[test]
fn rejects_empty_and_malformed() {
    assert_mentions(
        &parse(b"").err().map(|e| e.to_string()).unwrap_or_default(),
        &["empty"],
    );
    assert_mentions(
        &parse(b"  \n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        &["empty"],
    );
    let e = parse(b"{\"services\": [")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_mentions(&e, &["not valid JSON"]);
    assert_mentions(
        &reject(&json!([1, 2])),
        &["expected the configuration as a JSON object with \"services\""],
    );
    assert_mentions(&reject(&json!({})), &["missing field `services`"]);
}

#[test]
fn rejects_unknown_fields_with_the_service_name() {
    let msg = reject(&with_service(|s| {
        s.insert("canaryTrafficPrecent".into(), json!(10));
    }));
    assert_mentions(
        &msg,
        &[
            "service \"sklearn-iris\"",
            "canaryTrafficPrecent",
            "unknown field",
        ],
    );
    assert_mentions(
        &reject(&json!({"services": [], "clusterHeadr": "x"})),
        &["clusterHeadr", "unknown field"],
    );
    let msg = reject(&with_service(|s| {
        s.insert(
            "revisions".into(),
            json!([{"name": "a", "cluster": "c", "weight": 1}]),
        );
    }));
    assert_mentions(
        &msg,
        &["service \"sklearn-iris\"", "revisions[0]", "weight"],
    );
}

#[test]
fn rejects_wrong_types_naming_the_field() {
    let msg = reject(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), json!("10"));
    }));
    assert_mentions(
        &msg,
        &[
            "service \"sklearn-iris\"",
            "canaryTrafficPercent",
            "invalid type",
        ],
    );
    let msg = reject(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), json!(10.5));
    }));
    assert_mentions(&msg, &["canaryTrafficPercent", "10.5"]);
    let msg = reject(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), json!(1e300));
    }));
    assert_mentions(&msg, &["canaryTrafficPercent"]);
    let msg = reject(&with_service(|s| {
        s.insert("canaryTrafficPercent".into(), json!(u64::MAX));
    }));
    assert_mentions(&msg, &["canaryTrafficPercent"]);
}

#[test]
fn rejects_percent_out_of_range() {
    for p in [101, -1, 1000] {
        let msg = reject(&with_service(|s| {
            s.insert("canaryTrafficPercent".into(), json!(p));
        }));
        assert_mentions(
            &msg,
            &[
                "service \"sklearn-iris\"",
                "canaryTrafficPercent",
                &p.to_string(),
                "0..100",
            ],
        );
    }
}

#[test]
fn rejects_traffic_not_summing_to_100() {
    let base = |traffic: Value| {
        json!({"services": [{"name": "m", "hosts": ["m.example.com"],
        "revisions": [{"name": "a", "cluster": "ca"}, {"name": "b", "cluster": "cb"}], "traffic": traffic}]})
    };
    let msg = reject(&base(
        json!([{"revisionName": "a", "percent": 50}, {"revisionName": "b", "percent": 40}]),
    ));
    assert_mentions(&msg, &["service \"m\"", "traffic", "90", "exactly 100"]);
    let msg = reject(&base(
        json!([{"revisionName": "a", "percent": 150}, {"revisionName": "b", "percent": -50}]),
    ));
    assert_mentions(&msg, &["traffic[0].percent", "150"]);
    assert_mentions(&reject(&base(json!([]))), &["traffic", "empty"]);
    let msg = reject(&base(json!([{"revisionName": "zzz", "percent": 100}])));
    assert_mentions(&msg, &["traffic[0].revisionName", "zzz"]);
    let msg = reject(&base(
        json!([{"revisionName": "a", "percent": 100, "tag": "x"}, {"revisionName": "b", "tag": "X"}]),
    ));
    assert_mentions(&msg, &["traffic[1].tag", "used twice"]);
    let msg = reject(&base(
        json!([{"revisionName": "a", "percent": 100, "tag": "no.dots"}]),
    ));
    assert_mentions(&msg, &["traffic[0].tag", "no.dots"]);
}

#[test]
fn rejects_mixed_forms() {
    let msg = reject(&with_service(|s| {
        s.insert(
            "traffic".into(),
            json!([{"revisionName": R1, "percent": 100}]),
        );
    }));
    assert_mentions(
        &msg,
        &[
            "service \"sklearn-iris\"",
            "traffic",
            "canaryTrafficPercent",
        ],
    );
    let msg = reject(
        &json!({"services": [{"name": "m", "hosts": ["m.example.com"],
        "revisions": [{"name": "a", "cluster": "ca"}], "latestReadyRevision": "a",
        "traffic": [{"revisionName": "a", "percent": 100}]}]}),
    );
    assert_mentions(&msg, &["traffic and latestReadyRevision"]);
}

#[test]
fn rejects_unknown_revisions() {
    let msg = reject(&with_service(|s| {
        s.insert(
            "latestReadyRevision".into(),
            json!("sklearn-iris-predictor-00003"),
        );
    }));
    assert_mentions(
        &msg,
        &[
            "service \"sklearn-iris\"",
            "latestReadyRevision",
            "sklearn-iris-predictor-00003",
        ],
    );
    let msg = reject(&with_service(|s| {
        s.insert("latestRolledoutRevision".into(), json!("nope"));
    }));
    assert_mentions(&msg, &["latestRolledoutRevision", "nope"]);
    let msg = reject(&with_service(|s| {
        s.insert(
            "headerRoutes".into(),
            json!([{"header": "traffic", "value": "x", "revision": "nope"}]),
        );
    }));
    assert_mentions(&msg, &["headerRoutes[0].revision", "nope"]);
}

#[test]
fn rejects_missing_kserve_fields() {
    let msg = reject(&with_service(|s| {
        s.remove("latestRolledoutRevision");
    }));
    assert_mentions(
        &msg,
        &[
            "service \"sklearn-iris\"",
            "latestRolledoutRevision",
            "canaryTrafficPercent is 10",
        ],
    );
    let msg = reject(&with_service(|s| {
        s.remove("latestReadyRevision");
    }));
    assert_mentions(&msg, &["latestReadyRevision", "2 revisions"]);
    // Nothing to split: promoted without a rolled-out revision is fine.
    let ok = with_service(|s| {
        s.remove("latestRolledoutRevision");
        s.remove("canaryTrafficPercent");
        s.insert("headerRoutes".into(), json!([]));
    });
    load(&ok);
    let msg = reject(&with_service(|s| {
        s.remove("latestRolledoutRevision");
        s.remove("canaryTrafficPercent");
        s.insert(
            "headerRoutes".into(),
            json!([{"header": "traffic", "value": "old", "revision": "prev"}]),
        );
    }));
    assert_mentions(
        &msg,
        &[
            "headerRoutes[0].revision",
            "prev",
            "latestRolledoutRevision",
        ],
    );
}

#[test]
fn rejects_duplicates() {
    let msg = reject(&with_service(|s| {
        s.insert(
            "revisions".into(),
            json!([{"name": R1, "cluster": "a"}, {"name": R1, "cluster": "b"}]),
        );
    }));
    assert_mentions(
        &msg,
        &[
            "service \"sklearn-iris\"",
            "revisions[1].name",
            R1,
            "used twice",
        ],
    );
    let mut v = kserve_example();
    let copy = v["services"][0].clone();
    if let Some(Value::Array(services)) = v.get_mut("services") {
        services.push(copy);
    }
    assert_mentions(&reject(&v), &["service \"sklearn-iris\"", "used twice"]);
}

#[test]
fn rejects_a_host_claimed_twice() {
    let svc = |name: &str, host: &str| {
        json!({"name": name, "hosts": [host],
        "revisions": [{"name": "a", "cluster": "c"}], "tagRouting": true})
    };
    let msg =
        reject(&json!({"services": [svc("one", "m.example.com"), svc("two", "M.example.com")]}));
    assert_mentions(
        &msg,
        &[
            "service \"two\"",
            "hosts[0]",
            "m.example.com",
            "service \"one\"",
        ],
    );
    // A generated tag host colliding with another service's host.
    let msg = reject(
        &json!({"services": [svc("one", "m.example.com"), svc("two", "latest-m.example.com")]}),
    );
    assert_mentions(
        &msg,
        &[
            "service \"two\"",
            "latest-m.example.com",
            "a tag host of service \"one\"",
        ],
    );
    let msg = reject(
        &json!({"services": [{"name": "m", "hosts": ["a.com", "a.com"],
        "revisions": [{"name": "a", "cluster": "c"}]}]}),
    );
    assert_mentions(&msg, &["hosts[1]", "another host of this service"]);
}

#[test]
fn rejects_bad_clusters_hosts_and_headers() {
    let msg = reject(&with_service(|s| {
        s.insert(
            "revisions".into(),
            json!([{"name": R1, "cluster": ""}, {"name": R2, "cluster": "b"}]),
        );
    }));
    assert_mentions(
        &msg,
        &["service \"sklearn-iris\"", "revisions[0].cluster", "empty"],
    );
    let msg = reject(&with_service(|s| {
        s.insert(
            "revisions".into(),
            json!([{"name": R1, "cluster": "a\r\nx-evil: 1"}, {"name": R2, "cluster": "b"}]),
        );
    }));
    assert_mentions(&msg, &["revisions[0].cluster", "printable"]);
    for bad in ["*.example.com", "a.example.com:80", "", "a b", "ünï.com"] {
        let msg = reject(&with_service(|s| {
            s.insert("hosts".into(), json!([bad]));
        }));
        assert_mentions(
            &msg,
            &["service \"sklearn-iris\"", "hosts[0]", "not a valid host"],
        );
    }
    assert_mentions(
        &reject(&with_service(|s| {
            s.insert("hosts".into(), json!([]));
        })),
        &["hosts", "empty"],
    );
    let msg = reject(&with_service(|s| {
        s.insert(
            "revisions".into(),
            json!([{"name": R1, "cluster": "a", "host": "bad host"}, {"name": R2, "cluster": "b"}]),
        );
    }));
    assert_mentions(&msg, &["revisions[0].host", "bad host"]);
    for (field, bad) in [
        ("clusterHeader", "x canary"),
        ("revisionHeader", ":status"),
        ("clusterHeader", "content-type"),
    ] {
        let mut v = kserve_example();
        v[field] = json!(bad);
        assert_mentions(&reject(&v), &[field, bad, "header name"]);
    }
    let mut v = kserve_example();
    v["revisionHeader"] = json!("X-Canary-Cluster");
    assert_mentions(
        &reject(&v),
        &["revisionHeader", "differ from clusterHeader"],
    );
    let msg = reject(&with_service(|s| {
        s.insert(
            "headerRoutes".into(),
            json!([{"header": "bad header", "value": "x", "revision": "latest"}]),
        );
    }));
    assert_mentions(&msg, &["headerRoutes[0].header", "bad header"]);
    let msg = reject(&with_service(|s| {
        s.insert(
            "headerRoutes".into(),
            json!([{"header": "x-canary-cluster", "value": "x", "revision": "latest"}]),
        );
    }));
    assert_mentions(&msg, &["headerRoutes[0].header", "strips clusterHeader"]);
    assert_mentions(
        &reject(&json!({"services": [{"name": "", "hosts": ["a.com"],
        "revisions": [{"name": "a", "cluster": "c"}]}]})),
        &["services[0].name", "empty"],
    );
}

#[test]
fn error_kinds_are_structured() {
    let err = parse(
        with_service(|s| {
            s.insert("canaryTrafficPercent".into(), json!(101));
        })
        .to_string()
        .as_bytes(),
    )
    .err();
    let err = err.map(|e| (e.service, e.kind));
    assert_eq!(
        err,
        Some((
            Some("sklearn-iris".into()),
            ErrorKind::PercentOutOfRange {
                field: "canaryTrafficPercent".into(),
                value: 101
            }
        ))
    );
}

#[test]
fn ten_thousand_services_load_quickly() {
    let services: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("svc-{i}"), "hosts": [format!("svc-{i}.example.com")], "tagRouting": true,
            "revisions": [{"name": format!("svc-{i}-1"), "cluster": format!("c{i}-1")},
                          {"name": format!("svc-{i}-2"), "cluster": format!("c{i}-2")}],
            "latestRolledoutRevision": format!("svc-{i}-1"), "latestReadyRevision": format!("svc-{i}-2"),
            "canaryTrafficPercent": 10}))
        .collect();
    let r = load(&json!({"services": services}));
    assert_eq!(r.services().len(), 10_000);
    assert!(r.lookup("svc-9999.example.com").is_some());
    assert!(r.lookup("prev-svc-0.example.com").is_some());
}

/// The corpus under tests/bad_configs (also run on real Envoy by the integration tests):
/// every file is rejected with a message that has each expected part.
#[test]
fn bad_config_corpus_is_rejected_with_its_message() {
    use std::collections::BTreeMap;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs");
    let expected: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "expected.json")
        .collect();
    files.sort();
    let mut names: Vec<String> = expected.keys().map(|n| format!("{n}.json")).collect();
    names.sort();
    assert_eq!(
        files, names,
        "every corpus file needs an expectation, and back"
    );
    assert!(expected.len() >= 30);
    for (name, parts) in expected {
        let bytes = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
        let err = match parse(&bytes) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => e.to_string(),
        };
        for part in parts {
            assert!(err.contains(&part), "{name}: {err:?} lacks {part:?}");
        }
    }
}

#[test]
fn model_paths_select_a_service_when_the_host_does_not() {
    let r = load(&json!({"services": [
        {"name": "iris", "hosts": ["iris.example.com"], "models": ["sklearn-iris"],
         "revisions": [{"name": "i1", "cluster": "c1"}]},
        {"name": "bert", "hosts": ["bert.example.com"], "models": ["bert", "bert-large"],
         "revisions": [{"name": "b1", "cluster": "c2"}]}
    ]}));
    assert!(r.routes_by_model());
    assert_eq!(
        r.lookup_model("/v1/models/sklearn-iris:predict")
            .map(|h| h.service()),
        Some(0)
    );
    assert_eq!(
        r.lookup_model("/v2/models/bert-large/versions/3/infer")
            .map(|h| h.service()),
        Some(1)
    );
    assert!(r.lookup_model("/v2/models/gpt/infer").is_none());
    assert!(!load(&kserve_example()).routes_by_model());
    let dup = json!({"services": [
        {"name": "a", "hosts": ["a.com"], "models": ["m"], "revisions": [{"name": "a1", "cluster": "c"}]},
        {"name": "b", "hosts": ["b.com"], "models": ["m"], "revisions": [{"name": "b1", "cluster": "c"}]}
    ]});
    assert_mentions(
        &reject(&dup),
        &["service \"b\"", "models[0]", "unique across services"],
    );
    let bad = json!({"services": [{"name": "a", "hosts": ["a.com"], "models": ["../x"], "revisions": [{"name": "a1", "cluster": "c"}]}]});
    assert_mentions(&reject(&bad), &["models[0]", "\"../x\""]);
}

#[test]
fn steps_follow_the_clock_and_are_validated() {
    let with_steps = |steps: Value| {
        with_service(|s| {
            s.remove("canaryTrafficPercent");
            s.insert("steps".into(), steps);
        })
    };
    let r = load(&with_steps(
        json!({"weights": [5, 10, 25, 50, 100], "intervalSeconds": 60, "startTime": "2026-11-23T12:00:00Z"}),
    ));
    let start = 1_795_435_200_000u64;
    let service = &r.services()[0];
    let canary_share = |now: u64| {
        service
            .split_at(now)
            .percents()
            .find(|(rev, _)| *rev == 1)
            .map_or(0, |(_, p)| p)
    };
    assert_eq!(canary_share(0), 5, "before startTime: the first weight");
    assert_eq!(canary_share(start + 61_000), 10);
    assert_eq!(canary_share(start + 3 * 60_000), 50);
    assert_eq!(canary_share(start + 10 * 60_000), 100);
    assert!(service.canary_active(start) && !service.canary_active(start + 10 * 60_000));
    assert_mentions(
        &reject(&with_service(|s| {
            s.insert(
                "steps".into(),
                json!({"weights": [5], "intervalSeconds": 1, "startTime": "2026-11-23T12:00:00Z"}),
            );
        })),
        &[
            "steps",
            "steps and canaryTrafficPercent are mutually exclusive",
        ],
    );
    assert_mentions(
        &reject(&with_steps(
            json!({"weights": [50, 10], "intervalSeconds": 60, "startTime": "2026-11-23T12:00:00Z"}),
        )),
        &["steps.weights[1]", "only go up"],
    );
    assert_mentions(
        &reject(&with_steps(
            json!({"weights": [5, 101], "intervalSeconds": 60, "startTime": "2026-11-23T12:00:00Z"}),
        )),
        &["steps.weights[1]: 101 is outside 0..100"],
    );
    assert_mentions(
        &reject(&with_steps(
            json!({"weights": [5], "intervalSeconds": 60, "startTime": "yesterday"}),
        )),
        &["steps.startTime", "RFC 3339"],
    );
    assert_mentions(
        &reject(&with_steps(
            json!({"weights": [], "intervalSeconds": 60, "startTime": "2026-11-23T12:00:00Z"}),
        )),
        &["steps.weights: must not be empty"],
    );
    assert_mentions(
        &reject(&with_steps(
            json!({"weights": [5], "intervalSeconds": 0, "startTime": "2026-11-23T12:00:00Z"}),
        )),
        &["steps.intervalSeconds"],
    );
    let traffic = json!({"services": [{"name": "m", "hosts": ["m.com"], "revisions": [{"name": "a", "cluster": "c"}],
        "traffic": [{"revisionName": "a", "percent": 100}],
        "steps": {"weights": [5], "intervalSeconds": 60, "startTime": "2026-11-23T12:00:00Z"}}]});
    assert_mentions(&reject(&traffic), &["steps", "KServe form"]);
}

#[test]
fn mirror_copies_a_share_to_one_revision() {
    let with_mirror = |mirror: Value| {
        with_service(|s| {
            if let Some(Value::Array(revs)) = s.get_mut("revisions") {
                revs.push(
                    json!({"name": "shadow", "cluster": "c-shadow", "host": "shadow.internal"}),
                );
            }
            s.insert("mirror".into(), mirror);
        })
    };
    let r = load(&with_mirror(json!({"revision": "shadow", "percent": 25})));
    let (m, rev) = r.mirror(0).unwrap();
    assert_eq!(
        (m.revision, m.share, m.max_body, m.timeout_ms),
        (2, 2_500, 65_536, 5_000)
    );
    assert_eq!(
        (rev.cluster(), rev.host.as_deref()),
        ("c-shadow", Some("shadow.internal"))
    );
    // The shadow is not part of the split.
    assert_eq!(split(&r, 0).len(), 2);
    let r = load(&with_mirror(
        json!({"revision": "sklearn-iris-predictor-00002", "percent": 0, "maxBodyBytes": 0, "timeoutMs": 60000}),
    ));
    let (m, _) = r.mirror(0).unwrap();
    assert_eq!(
        (m.revision, m.share, m.max_body, m.timeout_ms),
        (1, 0, 0, 60_000)
    );
    assert!(load(&kserve_example()).mirror(0).is_none());
    let msg = reject(&with_mirror(json!({"revision": "shadow", "percent": -1})));
    assert_mentions(&msg, &["sklearn-iris", "mirror.percent", "-1"]);
    let msg = reject(&with_mirror(
        json!({"revision": "shadow", "percent": 5, "maxBodyBytes": 16777217}),
    ));
    assert_mentions(&msg, &["mirror.maxBodyBytes", "16777217"]);
}

/// serde decodes the document in one pass: the first error in document order, named by
/// its JSON path inside the service it is in (escapes and all); keys given twice and
/// arrays where objects belong are refused, so no reader can take a different value than
/// the filter did.
#[test]
fn decoding_errors_name_the_path_the_service_and_the_value() {
    let err = |text: &str| match parse(text.as_bytes()) {
        Ok(_) => panic!("accepted {text}"),
        Err(e) => e.to_string(),
    };
    let starts = |text: &str, start: &str| {
        let e = err(text);
        assert!(e.starts_with(start), "{e:?} should start with {start:?}");
    };
    starts(
        r#"{"services": [{"name": "a", "revisions": [{"name": "r", "cluster": "c"}], "hosts": 5, "canaryTrafficPercent": "x"}]}"#,
        r#"service "a": hosts: invalid type: integer `5`, expected a sequence at line 1 column "#,
    );
    starts(
        r#"{"services": [{"name": "a", "hosts": ["a.com"], "revisions": [{"name": "r", "cluster": "c"}], "canaryTrafficPercent": "x"}]}"#,
        r#"service "a": canaryTrafficPercent: invalid type: string "x", expected i64"#,
    );
    // Keys given twice are refused, whatever their values.
    starts(
        r#"{"services": [{"name": "a", "hosts": ["a.com"], "hosts": ["a.com"], "revisions": [{"name": "r", "cluster": "c"}]}]}"#,
        r#"service "a": duplicate field `hosts`"#,
    );
    starts(
        r#"{"services": [], "services": []}"#,
        "duplicate field `services`",
    );
    starts(
        r#"{"services": [{"name": "a", "hosts": ["a.com"], "revisions": [{"name": "r", "cluster": "c", "cluster": "d"}]}]}"#,
        r#"service "a": revisions[0]: duplicate field `cluster`"#,
    );
    // An object written as an array is refused, at every level.
    starts(
        r#"{"services": [["a", ["a.com"], [["r", "c"]]]]}"#,
        "services[0]: invalid type: sequence, expected a JSON object",
    );
    starts(
        r#"{"services": [{"name": "a", "hosts": ["a.com"], "revisions": [["r", "c"]]}]}"#,
        r#"service "a": revisions[0]: invalid type: sequence, expected a JSON object"#,
    );
    starts(
        r#"[[]]"#,
        r#"invalid type: sequence, expected the configuration as a JSON object with "services""#,
    );
    // The first error in the document wins, over a later syntax error too (which leaves
    // no names to go by: the path says which service).
    starts(
        r#"{"services": [{"name": "a", "hosts": 5, "revisions": []}], "metrics": tru}"#,
        "services[0].hosts: invalid type: integer `5`",
    );
    assert_eq!(
        err(r#"{"services": [{"name": "a", "tagRouting": tru}"#),
        "not valid JSON: services[0].tagRouting: expected ident at line 1 column 46"
    );
    assert_eq!(
        err(r#"{"services": [{"name": "a", "canaryTrafficPercent": 1e999}]}"#),
        "not valid JSON: services[0].canaryTrafficPercent: number out of range at line 1 column 57"
    );
    // The service is named as it decodes, escapes and all; unknown fields are listed.
    starts(
        r#"{"services": [{"n\u0061me": "caf\u00e9", "hosts": 5}]}"#,
        r#"service "café": hosts: invalid type: integer `5`, expected a sequence"#,
    );
    starts(
        r#"{"services": [{"name": "a", "zeta": 1, "alpha": 2, "hosts": 5}]}"#,
        r#"service "a": zeta: unknown field `zeta`, expected one of `name`, `hosts`,"#,
    );
    // No name to go by: the path says which service.
    starts(
        r#"{"services": [{"name": 7, "hosts": 5}]}"#,
        "services[0].name: invalid type: integer `7`, expected a string",
    );
    starts(
        r#"{"services": [{"hosts": ["b.com"], "revisions": 3}]}"#,
        "services[0].revisions: invalid type: integer `3`",
    );
}

/// Values in messages are quoted as `{:?}` quotes them: control characters and invisible
/// or bidi-reordering characters come out escaped, so a configuration value cannot
/// disguise the log line it appears in.
#[test]
fn values_in_messages_are_escaped() {
    let msg = reject(&with_service(|s| {
        s.insert(
            "hosts".into(),
            json!(["moc.elpmaxe\u{202e}.evil\u{200b}.com\n[info] fake"]),
        );
    }));
    assert!(
        msg.contains(r#""moc.elpmaxe\u{202e}.evil\u{200b}.com\n[info] fake""#),
        "{msg}"
    );
    assert!(!msg.contains('\u{202e}') && !msg.contains('\n'), "{msg:?}");
    let msg = reject(&with_service(|s| {
        s.insert("name".into(), json!("iris\u{7}\u{2028}"));
        s.insert("split".into(), json!("x"));
    }));
    assert!(
        msg.starts_with(r#"service "iris\u{7}\u{2028}": split"#),
        "{msg}"
    );
}

/// Services are checked against the whole top level, wherever its keys stand (Istio
/// sorts keys, so `tagHeader` comes after `services`); the top level's errors come before
/// any service's.
#[test]
fn services_are_checked_against_the_whole_top_level() {
    let err = |text: &str| match parse(text.as_bytes()) {
        Ok(_) => panic!("accepted {text}"),
        Err(e) => e.to_string(),
    };
    let service = |extra: &str| {
        format!(
            r#"{{"name": "a", "hosts": ["a.com"], "revisions": [{{"name": "r", "cluster": "c"}}]{extra}}}"#
        )
    };
    let route = |header: &str| {
        service(&format!(
            r#", "headerRoutes": [{{"header": "{header}", "value": "v", "revision": "r"}}]"#
        ))
    };
    // clusterHeader renamed before, and after, the services.
    let renamed = |route: String| {
        [
            format!(r#"{{"clusterHeader": "x-to", "services": [{route}]}}"#),
            format!(r#"{{"services": [{route}], "clusterHeader": "x-to"}}"#),
        ]
    };
    // A header route on the default clusterHeader is fine once clusterHeader is renamed.
    for text in renamed(route("x-canary-cluster")) {
        let router = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(router.cluster_header(), "x-to");
    }
    // And a route on the renamed one is refused, wherever the rename is.
    for text in renamed(route("x-to")) {
        assert!(err(&text).contains("strips clusterHeader"), "{text}");
    }
    // A sticky header named like tagHeader, which Istio's sorted keys put after services.
    let sticky = service(r#", "sticky": {"header": "x-user"}"#);
    assert!(
        parse(format!(r#"{{"services": [{sticky}], "tagHeader": "x-tag"}}"#).as_bytes()).is_ok()
    );
    assert!(err(&format!(
        r#"{{"services": [{sticky}], "tagHeader": "x-user"}}"#
    ))
    .contains("sticky"));
    // The top level's errors come before the services', its type errors before both.
    let bad_service = service(r#", "split": "sometimes""#);
    assert!(err(&format!(
        r#"{{"services": [{bad_service}], "clusterHeader": "x y"}}"#
    ))
    .starts_with("clusterHeader"));
    assert!(err(&format!(
        r#"{{"services": [{bad_service}], "metrics": "yes"}}"#
    ))
    .starts_with(r#"metrics: invalid type: string "yes", expected a boolean"#));
    assert!(err(&format!(r#"{{"services": [{bad_service}]}}"#)).contains("sometimes"));
    // Names with escapes are compared decoded.
    let good = service("");
    let twin =
        r#"{"name": "\u0061", "hosts": ["b.com"], "revisions": [{"name": "r", "cluster": "c"}]}"#;
    assert!(err(&format!(r#"{{"services": [{good}, {twin}]}}"#)).contains("used twice"));
    assert!(err(&format!(r#"{{"services": [{twin}, {good}]}}"#)).contains("used twice"));
}

#[test]
fn grpc_error_codes_replace_the_defaults() {
    use crate::route::grpc::{ErrorCodes, DEFAULT_ERROR_CODES};
    let codes = |r: &Router| r.grpc_error_codes().codes().collect::<Vec<_>>();
    assert_eq!(codes(&load(&kserve_example())), DEFAULT_ERROR_CODES);
    let mut v = kserve_example();
    v["grpcErrorCodes"] = json!([14, 8, 16]);
    assert_eq!(codes(&load(&v)), [8, 14, 16]);
    // An empty list: no gRPC status is a failure (HTTP 5xx still are).
    v["grpcErrorCodes"] = json!([]);
    assert_eq!(load(&v).grpc_error_codes(), ErrorCodes::new(&[]));
    for (codes, parts) in [
        (
            json!([13, 0]),
            &["grpcErrorCodes[1]: \"0\" is invalid", "1..16", "OK"][..],
        ),
        (
            json!([17]),
            &["grpcErrorCodes[0]: \"17\" is invalid", "1..16"],
        ),
        (json!([-2]), &["grpcErrorCodes[0]: \"-2\" is invalid"]),
        (
            json!([13, 14, 13]),
            &["grpcErrorCodes[2]: \"13\" is invalid: listed twice"],
        ),
        (
            json!(["13"]),
            &["grpcErrorCodes[0]", "invalid type: string"],
        ),
        (
            json!([13.5]),
            &["grpcErrorCodes[0]", "invalid type: floating point"],
        ),
        (
            json!(13),
            &[
                "grpcErrorCodes",
                "invalid type: integer `13`, expected a sequence",
            ],
        ),
    ] {
        v["grpcErrorCodes"] = codes;
        let msg = reject(&v);
        assert!(!msg.starts_with("service"), "a top-level field: {msg}");
        assert_mentions(&msg, parts);
    }
}

#[test]
fn grpc_health_checks_ask_for_the_services_model() {
    use crate::health::grpc_probe::{GrpcProbe, ProbeMethod};
    use crate::health::ProbeKind;
    let probe = |health: Value| {
        let r = load(&with_service(|s| {
            s.insert("healthCheck".into(), health);
        }));
        r.services()[0].health_check().map(|h| h.probe.clone())
    };
    let grpc = |method, model: &str| {
        Some(ProbeKind::Grpc(GrpcProbe {
            method,
            model: model.into(),
        }))
    };
    assert_eq!(
        probe(json!({})),
        Some(ProbeKind::Http {
            path: "/v2/health/ready".into()
        })
    );
    assert_eq!(
        probe(json!({"protocol": "http", "path": "/v1/models/sklearn-iris"})),
        Some(ProbeKind::Http {
            path: "/v1/models/sklearn-iris".into()
        })
    );
    // KServe's model is named after the InferenceService: the service's name.
    assert_eq!(
        probe(json!({"protocol": "grpc"})),
        grpc(ProbeMethod::ModelReady, "sklearn-iris")
    );
    assert_eq!(
        probe(json!({"protocol": "grpc", "model": "iris-v2", "intervalMs": 200})),
        grpc(ProbeMethod::ModelReady, "iris-v2")
    );
    assert_eq!(
        probe(
            json!({"protocol": "grpc", "grpcMethod": "inference.GRPCInferenceService/ServerReady"})
        ),
        grpc(ProbeMethod::ServerReady, "sklearn-iris")
    );
    assert_eq!(
        probe(json!({"protocol": "grpc", "grpcMethod": "grpc.health.v1.Health/Check"})),
        grpc(ProbeMethod::HealthCheck, "sklearn-iris")
    );
}

#[test]
fn rejects_health_check_fields_of_the_other_protocol() {
    let rejected = |health: Value| {
        reject(&with_service(|s| {
            s.insert("healthCheck".into(), health);
        }))
    };
    for (health, parts) in [
        (
            json!({"protocol": "h2"}),
            &[
                "service \"sklearn-iris\": ",
                "healthCheck.protocol: \"h2\" is invalid",
                "\"grpc\"",
            ][..],
        ),
        (
            json!({"protocol": "grpc", "path": "/v2/health/ready"}),
            &[
                "healthCheck.path: \"/v2/health/ready\" is invalid",
                "HTTP probes",
            ],
        ),
        (
            json!({"grpcMethod": "inference.GRPCInferenceService/ModelReady"}),
            &[
                "healthCheck.grpcMethod",
                "set healthCheck.protocol to \"grpc\"",
            ],
        ),
        (
            json!({"protocol": "http", "model": "sklearn-iris"}),
            &[
                "healthCheck.model: \"sklearn-iris\" is invalid",
                "gRPC probes",
            ],
        ),
        (
            json!({"protocol": "grpc", "grpcMethod": "inference.GRPCInferenceService/ModelInfer"}),
            &[
                "healthCheck.grpcMethod: \"inference.GRPCInferenceService/ModelInfer\" is invalid",
                "grpc.health.v1.Health/Check",
            ],
        ),
        (
            json!({"protocol": "grpc", "grpcMethod": "grpc.health.v1.Health/Check", "model": "iris"}),
            &["healthCheck.model: \"iris\" is invalid: only ModelReady"],
        ),
        (
            json!({"protocol": "grpc", "model": "iris model"}),
            &["healthCheck.model: \"iris model\" is invalid"],
        ),
        (
            json!({"protocol": "grpc", "grpcMehod": "x"}),
            &["healthCheck", "unknown field `grpcMehod`"],
        ),
    ] {
        assert_mentions(&rejected(health), parts);
    }
}

#[test]
fn grpc_probes_need_cluster_names_their_target_can_carry() {
    let with_cluster = |len: usize| {
        with_service(|s| {
            s.insert("healthCheck".into(), json!({"protocol": "grpc"}));
            s["revisions"][1]["cluster"] = json!("c".repeat(len));
        })
    };
    load(&with_cluster(125));
    assert_mentions(
        &reject(&with_cluster(126)),
        &["revisions[1].cluster", "at most 125 bytes"],
    );
    // HTTP probes have no such limit.
    let mut http = with_cluster(300);
    http["services"][0]["healthCheck"] = json!({});
    load(&http);
}

/// The LLM canary of issue #15.
fn llm_example() -> Value {
    json!({
        "openai": {"maxBodyBytes": 65536, "listModels": true},
        "services": [{
            "name": "llama", "models": ["llama-3-8b", "meta-llama/Llama-3-8B:instruct"],
            "revisions": [
                {"name": "llama-predictor-00001", "cluster": "llama-00001", "model": "llama-3-8b-v1"},
                {"name": "llama-predictor-00002", "cluster": "llama-00002", "model": "llama-3-8b-v2"},
                {"name": "llama-predictor-00003", "cluster": "llama-00003"}],
            "latestRolledoutRevision": "llama-predictor-00001",
            "latestReadyRevision": "llama-predictor-00002",
            "canaryTrafficPercent": 10,
            "sticky": {"bodyField": "user"}
        }, {
            "name": "bert", "hosts": ["bert.example.com"], "models": ["bert"],
            "revisions": [{"name": "bert-1", "cluster": "bert-1"}]
        }]
    })
}

#[test]
fn the_openai_section_and_revision_models() {
    use crate::route::Choice;
    let r = load(&llm_example());
    let o = r.openai().expect("openai");
    assert_eq!(o.max_body(), 65536);
    assert_eq!(o.namespace(), "canary-router");
    assert_eq!(o.paths().count(), 8);
    assert!(o.is_model_path("/openai/v1/chat/completions?x=1") && o.is_list_path("/v1/models"));
    let choice = |service, revision| Choice { service, revision };
    assert_eq!(r.revision_model(choice(0, 0)), Some("llama-3-8b-v1"));
    assert_eq!(r.revision_model(choice(0, 1)), Some("llama-3-8b-v2"));
    assert_eq!(r.revision_model(choice(0, 2)), None);
    assert_eq!(r.revision_model(choice(1, 0)), None);
    assert!(r.reads_bodies(0) && !r.reads_bodies(1));
    assert_eq!(r.services()[0].sticky_body_field(), Some("user"));
    // A model names one service; Hugging Face style names are model names too.
    assert_eq!(
        r.lookup_body_model(b"meta-llama/Llama-3-8B:instruct")
            .map(|h| h.service()),
        Some(0)
    );
    assert_eq!(r.lookup_body_model(b"bert").map(|h| h.service()), Some(1));
    assert!(
        r.lookup_body_model(b"llama-3-8b-v1").is_none() && r.lookup_body_model(b"\xff").is_none()
    );
    assert!(r.serves_model(0, b"llama-3-8b") && !r.serves_model(1, b"llama-3-8b"));
    assert_eq!(
        r.public_models(),
        [
            ("llama-3-8b", "llama"),
            ("meta-llama/Llama-3-8B:instruct", "llama"),
            ("bert", "bert")
        ]
    );
    // A service reached only by model needs no host; it probes with `localhost`.
    assert_eq!(&*r.services()[0].probe_authority, "localhost");
}

#[test]
fn the_openai_section_defaults_and_choices() {
    let r = load(
        &json!({"openai": {}, "services": [{"name": "m", "models": ["m"],
        "revisions": [{"name": "m1", "cluster": "m1"}]}]}),
    );
    let o = r.openai().unwrap();
    assert_eq!(o.max_body(), 1 << 20);
    assert!(!o.is_list_path("/v1/models"), "the model list is opt-in");
    let r = load(
        &json!({"openai": {"paths": ["/x/v1/chat/completions", "/chat"], "metadataNamespace": "llm",
        "listModels": true}, "services": [{"name": "m", "models": ["m"],
        "revisions": [{"name": "m1", "cluster": "m1"}]}]}),
    );
    let o = r.openai().unwrap();
    assert!(o.is_model_path("/chat") && !o.is_model_path("/v1/chat/completions"));
    assert!(o.is_list_path("/x/v1/models") && !o.is_list_path("/v1/models"));
    assert_eq!(o.namespace(), "llm");
    // Without `openai`, nothing of it.
    assert!(load(&kserve_example()).openai().is_none());
}

#[test]
fn llm_rules_are_enforced() {
    let mut v = llm_example();
    v["openai"]["paths"] = json!(["/v1/completions", "/v1/completions"]);
    assert!(reject(&v).contains("openai.paths[1]: \"/v1/completions\" is invalid: listed twice"));
    let mut v = llm_example();
    v["openai"]["paths"] = json!([]);
    assert!(reject(&v).contains("openai.paths: must not be empty"));
    let mut v = llm_example();
    v["openai"]["maxBodyBytes"] = json!(64u64 << 20 | 1);
    assert!(reject(&v).contains("openai.maxBodyBytes"));
    let mut v = llm_example();
    v["services"][0]["sticky"] = json!({"bodyField": "body"});
    assert!(reject(&v).contains("sticky.bodyField: \"body\" is invalid"));
    let mut v = llm_example();
    v["services"][0]["sticky"] = json!({});
    assert!(reject(&v)
        .contains("sticky: \"\" is invalid: set exactly one of header, cookie or bodyField"));
    let mut v = llm_example();
    v["services"][1]["models"] = json!(["llama-3-8b"]);
    assert!(reject(&v)
        .contains("service \"bert\": models[0]: \"llama-3-8b\" is invalid: another service"));
    let mut v = llm_example();
    v["services"][0]["revisions"][0]["model"] = json!("");
    assert!(reject(&v).contains("revisions[0].model: \"\" is invalid"));
}
