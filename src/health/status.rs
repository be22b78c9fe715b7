//! The status view: what `kubectl get isvc` shows (URL, READY, PREV, LATEST,
//! PREVROLLEDOUTREVISION, LATESTREADYREVISION) plus health, the effective split and the
//! rollback state, as one JSON document written by serde_json.

use serde::Serialize;

use crate::health::view::{Unavailable, View};
use crate::route::split::{Split, BUCKETS};
use crate::route::{Router, Service};

/// `{"services": [...]}`, one entry per service the view knows.
#[derive(Serialize)]
struct Document<'a> {
    services: Vec<ServiceStatus<'a>>,
}

/// `prev` is the percent of split-routed traffic now going to latestRolledoutRevision,
/// `latest` the percent going to latestReadyRevision (as `kubectl get isvc` prints them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceStatus<'a> {
    name: &'a str,
    url: String,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_rolledout_revision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_ready_revision: Option<&'a str>,
    rolled_back: bool,
    fail_open: bool,
    configured_split: Vec<Share<'a>>,
    effective_split: Vec<Share<'a>>,
    revisions: Vec<RevisionStatus<'a>>,
}

#[derive(Serialize)]
struct Share<'a> {
    revision: &'a str,
    percent: f64,
}

#[derive(Serialize)]
struct RevisionStatus<'a> {
    name: &'a str,
    cluster: &'a str,
    ready: bool,
    ejected: bool,
}

/// The document, pretty-printed.
pub fn render(router: &Router, view: &View) -> String {
    let services = router
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, service)| Some(service_status(service, view.service(i)?)))
        .collect();
    // Serialising these structs into a String cannot fail.
    serde_json::to_string_pretty(&Document { services }).unwrap_or_default()
}

fn service_status<'a>(
    service: &'a Service,
    state: &crate::health::view::ServiceView,
) -> ServiceStatus<'a> {
    let name_of = |rev: usize| service.revisions.get(rev).map(|r| r.name());
    let percent_of = |rev: usize| {
        state
            .split
            .shares()
            .find(|&(r, _)| r == rev)
            .map_or(0.0, |(_, w)| percent(w))
    };
    let (prev, latest) = match service.canary {
        Some(c) => (Some(c.rolled), Some(c.ready)),
        None => (None, service.split.shares().next().map(|(r, _)| r)),
    };
    let shares = |split: &Split| {
        split
            .shares()
            .filter_map(|(rev, width)| {
                Some(Share {
                    revision: name_of(rev)?,
                    percent: percent(width),
                })
            })
            .collect()
    };
    ServiceStatus {
        name: &service.name,
        url: format!("http://{}", service.probe_authority),
        ready: (0..service.revisions.len()).any(|r| state.unavailable(r).is_none()),
        prev: prev.map(percent_of),
        latest: latest.map(percent_of),
        prev_rolledout_revision: prev.and_then(name_of),
        latest_ready_revision: latest.and_then(name_of),
        rolled_back: state.rolled_back,
        fail_open: state.fail_open,
        configured_split: shares(&state.configured),
        effective_split: shares(&state.split),
        revisions: service
            .revisions
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                let u = state.unavailable(ri);
                RevisionStatus {
                    name: r.name(),
                    cluster: r.cluster(),
                    ready: u != Some(Unavailable::NotReady),
                    ejected: u == Some(Unavailable::Ejected),
                }
            })
            .collect(),
    }
}

fn percent(width: u32) -> f64 {
    f64::from(width) * 100.0 / f64::from(BUCKETS)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::config::parse;
    use crate::health::view::ClusterState;

    #[test]
    fn layout_is_serde_json_pretty() {
        let router = parse(
            br#"{"services": [{"name": "s", "hosts": ["h"],
            "revisions": [{"name": "r", "cluster": "c"}]}]}"#,
        )
        .unwrap();
        let text = render(&router, &View::configured(&router));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"services": [{"name": "s", "url": "http://h", "ready": true, "latest": 100.0,
                "latestReadyRevision": "r", "rolledBack": false, "failOpen": false,
                "configuredSplit": [{"revision": "r", "percent": 100.0}],
                "effectiveSplit": [{"revision": "r", "percent": 100.0}],
                "revisions": [{"name": "r", "cluster": "c", "ready": true, "ejected": false}]}]})
        );
        assert!(text.starts_with("{\n  \"services\": [\n    {\n      \"name\": \"s\",\n"));
        assert!(text.ends_with("\"ejected\": false\n        }\n      ]\n    }\n  ]\n}"));
        assert_eq!(
            render(&Router::default(), &View::default()),
            "{\n  \"services\": []\n}"
        );
    }

    #[test]
    fn status_matches_kubectl_columns_and_health() {
        let cfg = json!({"services": [{
            "name": "sklearn-iris", "hosts": ["sklearn-iris.kserve-test.example.com"],
            "revisions": [{"name": "r1", "cluster": "c1"}, {"name": "r2", "cluster": "c2"}],
            "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 10,
            "autoRollback": {"maxErrorRate": 0.1}
        }]});
        let router = parse(cfg.to_string().as_bytes()).unwrap();
        let s: Value = serde_json::from_str(&render(&router, &View::configured(&router))).unwrap();
        let svc = &s["services"][0];
        assert_eq!(svc["url"], "http://sklearn-iris.kserve-test.example.com");
        assert_eq!(
            (
                svc["ready"].clone(),
                svc["prev"].clone(),
                svc["latest"].clone()
            ),
            (json!(true), json!(90.0), json!(10.0))
        );
        assert_eq!(svc["prevRolledoutRevision"], "r1");
        assert_eq!(svc["latestReadyRevision"], "r2");
        let view = View::build(
            &router,
            0,
            |_, _, c| ClusterState {
                ready: true,
                ejected: c == "c2",
            },
            |_| false,
        );
        let s: Value = serde_json::from_str(&render(&router, &view)).unwrap();
        let svc = &s["services"][0];
        assert_eq!(
            (svc["prev"].clone(), svc["latest"].clone()),
            (json!(100.0), json!(0.0))
        );
        assert_eq!(
            svc["revisions"][1],
            json!({"name": "r2", "cluster": "c2", "ready": true, "ejected": true})
        );
        assert_eq!(
            svc["configuredSplit"][0],
            json!({"revision": "r2", "percent": 10.0})
        );
        let view = View::build(&router, 0, |_, _, _| ClusterState::default(), |_| true);
        let s: Value = serde_json::from_str(&render(&router, &view)).unwrap();
        assert_eq!(s["services"][0]["rolledBack"], true);
        assert_eq!(
            s["services"][0]["effectiveSplit"],
            json!([{"revision": "r1", "percent": 100.0}])
        );
    }
}
