//! The status view: what `kubectl get isvc` shows (URL, READY, PREV, LATEST,
//! PREVROLLEDOUTREVISION, LATESTREADYREVISION) plus health, the effective split and the
//! rollback state, as one JSON document.

use crate::health::view::{Unavailable, View};
use crate::route::split::{Split, BUCKETS};
use crate::route::Router;

/// The document, written as `serde_json::to_string_pretty` wrote the `Serialize` structs
/// it replaces (same keys, order, indentation, escapes and number spelling), without
/// serde's serializer in the wasm:
///
/// `{"services": [{"name", "url", "ready", "prev"?, "latest"?, "prevRolledoutRevision"?,
/// "latestReadyRevision"?, "rolledBack", "failOpen", "configuredSplit": [{"revision",
/// "percent"}], "effectiveSplit": [...], "revisions": [{"name", "cluster", "ready",
/// "ejected"}]}]}`, where `prev` is the percent of split-routed traffic now going to
/// latestRolledoutRevision and `latest` the percent going to latestReadyRevision.
pub fn render(router: &Router, view: &View) -> String {
    let mut w = Pretty::default();
    w.open('{');
    w.key("services");
    w.open('[');
    for (i, service) in router.services.iter().enumerate() {
        let Some(state) = view.service(i) else {
            continue;
        };
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
        w.item();
        w.open('{');
        w.key("name");
        w.string(&service.name);
        w.key("url");
        w.string(&format!("http://{}", service.probe_authority));
        w.key("ready");
        w.bool((0..service.revisions.len()).any(|r| state.unavailable(r).is_none()));
        if let Some(rev) = prev {
            w.key("prev");
            w.number(percent_of(rev));
        }
        if let Some(rev) = latest {
            w.key("latest");
            w.number(percent_of(rev));
        }
        if let Some(name) = prev.and_then(name_of) {
            w.key("prevRolledoutRevision");
            w.string(name);
        }
        if let Some(name) = latest.and_then(name_of) {
            w.key("latestReadyRevision");
            w.string(name);
        }
        w.key("rolledBack");
        w.bool(state.rolled_back);
        w.key("failOpen");
        w.bool(state.fail_open);
        let shares = |w: &mut Pretty, key: &str, split: &Split| {
            w.key(key);
            w.open('[');
            for (rev, width) in split.shares() {
                let Some(name) = name_of(rev) else {
                    continue;
                };
                w.item();
                w.open('{');
                w.key("revision");
                w.string(name);
                w.key("percent");
                w.number(percent(width));
                w.close('}');
            }
            w.close(']');
        };
        shares(&mut w, "configuredSplit", &state.configured);
        shares(&mut w, "effectiveSplit", &state.split);
        w.key("revisions");
        w.open('[');
        for (ri, r) in service.revisions.iter().enumerate() {
            let u = state.unavailable(ri);
            w.item();
            w.open('{');
            w.key("name");
            w.string(r.name());
            w.key("cluster");
            w.string(r.cluster());
            w.key("ready");
            w.bool(u != Some(Unavailable::NotReady));
            w.key("ejected");
            w.bool(u == Some(Unavailable::Ejected));
            w.close('}');
        }
        w.close(']');
        w.close('}');
    }
    w.close(']');
    w.close('}');
    w.out
}

fn percent(width: u32) -> f64 {
    f64::from(width) * 100.0 / f64::from(BUCKETS)
}

/// serde_json's pretty printer, for the few shapes above: two-space indent, `"key": value`,
/// `[]` for an empty array.
#[derive(Default)]
struct Pretty {
    out: String,
    depth: usize,
    /// Nothing written yet in the innermost open object or array.
    empty: bool,
}

impl Pretty {
    fn open(&mut self, bracket: char) {
        self.out.push(bracket);
        self.depth += 1;
        self.empty = true;
    }

    fn close(&mut self, bracket: char) {
        self.depth = self.depth.saturating_sub(1);
        if !self.empty {
            self.newline();
        }
        self.out.push(bracket);
        self.empty = false;
    }

    fn newline(&mut self) {
        self.out.push('\n');
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    /// Starts an array element.
    fn item(&mut self) {
        if !self.empty {
            self.out.push(',');
        }
        self.newline();
        self.empty = false;
    }

    /// Starts an object member.
    fn key(&mut self, key: &str) {
        self.item();
        self.string(key);
        self.out.push_str(": ");
    }

    fn bool(&mut self, value: bool) {
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn number(&mut self, value: f64) {
        if value.is_finite() {
            self.out.push_str(zmij::Buffer::new().format_finite(value));
        } else {
            self.out.push_str("null");
        }
    }

    /// A string with serde_json's escapes: `"`, `\\`, and the control characters.
    fn string(&mut self, value: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.push('"');
        for c in value.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if c < ' ' => {
                    let b = c as usize;
                    self.out.push_str("\\u00");
                    for nibble in [b >> 4, b & 0xf] {
                        self.out
                            .push(char::from(HEX.get(nibble).copied().unwrap_or(b'0')));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::config::parse;
    use crate::health::view::ClusterState;

    #[test]
    fn strings_and_numbers_are_spelled_as_serde_json_spells_them() {
        let mut text: String = (0u8..0x80).map(char::from).collect();
        text.push_str("bücher \u{2028} \u{1F600}");
        let mut w = Pretty::default();
        w.string(&text);
        assert_eq!(w.out, serde_json::to_string(&text).unwrap());
        for width in 0..=BUCKETS {
            let mut w = Pretty::default();
            w.number(percent(width));
            assert_eq!(w.out, serde_json::to_string(&percent(width)).unwrap());
        }
    }

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
