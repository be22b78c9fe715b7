//! The compiled routing table and the per-request decision. Built once per
//! configuration (see `config`), read-only afterwards: lookups are one hash probe on a
//! stack-normalised key, decisions touch no JSON and allocate nothing of their own.

pub mod authority;
pub mod grpc;
pub mod mirror;
pub mod model_path;
pub mod openai;
pub mod rng;
pub mod split;
pub mod steps;

use hashbrown::HashMap;

use crate::health::view::{Unavailable, View};
use crate::health::{HealthCheck, Outlier, RatePolicy};
use crate::route::authority::{host_part, is_lowercase, lowercase_into, KeyBuf, KEY_CAPACITY};
use crate::route::rng::Rng;
use crate::route::split::{cookie_value, sticky_bucket, Split};

pub const DEFAULT_CLUSTER_HEADER: &str = "x-canary-cluster";
pub const DEFAULT_REVISION_HEADER: &str = "x-canary-revision";
pub const DEFAULT_TAG_HEADER: &str = "x-canary-tag";

#[derive(Debug)]
pub struct Router {
    pub(crate) cluster_header: Box<str>,
    pub(crate) revision_header: Box<str>,
    pub(crate) upstream_revision_header: bool,
    /// Request header naming a tag, for services with tag routing; always stripped.
    pub(crate) tag_header: Box<str>,
    /// Some service routes by tag.
    pub(crate) tag_routing: bool,
    /// Answered with the status view when set.
    pub(crate) status_path: Option<Box<str>>,
    /// Per-revision Envoy stats (costs a `:status` read per routed response).
    pub(crate) metrics: bool,
    /// gRPC statuses that count as a failure of the revision that answered.
    pub(crate) grpc_error_codes: crate::route::grpc::ErrorCodes,
    /// Every authority the filter answers, plain and tagged, lowercased without port.
    pub(crate) hosts: HashMap<Box<str>, HostRoute>,
    /// Model name -> service, for requests whose host no service has (model paths, and
    /// OpenAI bodies).
    pub(crate) models: HashMap<Box<str>, HostRoute>,
    pub(crate) services: Vec<Service>,
    /// OpenAI-style requests: routed by the model in their body (see `openai`).
    pub(crate) openai: Option<Box<crate::route::openai::OpenAi>>,
}

#[derive(Debug)]
pub struct Service {
    pub(crate) name: Box<str>,
    pub(crate) revisions: Vec<Revision>,
    pub(crate) split: Split,
    pub(crate) header_routes: Vec<HeaderRoute>,
    pub(crate) canary: Option<Canary>,
    /// `:authority` of probes to revisions without their own `host`.
    pub(crate) probe_authority: Box<str>,
    /// With tag routing: tag -> revision (`latest`/`prev`, or Knative tags).
    pub(crate) tags: Vec<(Box<str>, usize)>,
    /// `split: exact`: deterministic interleave instead of random draws.
    pub(crate) exact: bool,
    /// What few services have, apart: a configuration may list 10,000 services.
    pub(crate) policies: Option<Box<Policies>>,
}

/// A service's health, rollback, stickiness, step and mirror settings.
#[derive(Debug, Default)]
pub struct Policies {
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) outlier: Option<Outlier>,
    pub(crate) auto_rollback: Option<RatePolicy>,
    pub(crate) sticky: Option<Sticky>,
    /// Progressive canary share by wall-clock time (KServe form, instead of
    /// canaryTrafficPercent).
    pub(crate) steps: Option<crate::route::steps::Steps>,
    /// Shadow copies of split-routed requests to one revision.
    pub(crate) mirror: Option<crate::route::mirror::Mirror>,
}

/// Where a sticky user's identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(Box<str>),
    Cookie(Box<str>),
    /// A top-level field of an OpenAI body (read from the metadata Envoy left).
    BodyField(Box<str>),
}

/// KServe's pair: `ready` is latestReadyRevision, `rolled` latestRolledoutRevision.
/// `active` while canaryTrafficPercent is strictly between 0 and 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    pub ready: usize,
    pub rolled: usize,
    pub active: bool,
}

#[derive(Debug)]
pub struct Revision {
    /// The name, then the cluster: one allocation (a configuration may have 20,000).
    text: Box<str>,
    name_len: usize,
    /// Authority to send upstream instead of the client's.
    pub(crate) host: Option<Box<str>>,
}

#[derive(Debug)]
pub struct HeaderRoute {
    pub(crate) header: Box<str>,
    pub(crate) value: Box<str>,
    pub(crate) revision: usize,
}

/// What a host of the table leads to.
#[derive(Debug)]
pub struct HostRoute {
    pub(crate) service: usize,
    pub(crate) tag: Option<TagRoute>,
}

/// A `<tag>-<host>` authority: one revision, whatever the split says.
#[derive(Debug)]
pub struct TagRoute {
    pub(crate) revision: usize,
    /// The untagged host, or the revision's own `host` where set.
    pub(crate) authority: Box<str>,
}

/// The revision picked for a request, kept by the HTTP context until the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub service: usize,
    pub revision: usize,
}

/// The result of a decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    Routed(Decision<'a>),
    /// A tag or header rule chose a revision that is out of rotation.
    Unavailable {
        choice: Choice,
        revision: &'a str,
        reason: Unavailable,
    },
}

impl<'a> Outcome<'a> {
    pub fn routed(self) -> Option<Decision<'a>> {
        match self {
            Outcome::Routed(d) => Some(d),
            Outcome::Unavailable { .. } => None,
        }
    }
}

/// What the glue must do to the upstream request.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub choice: Choice,
    pub cluster: &'a str,
    pub revision: &'a str,
    /// New `:authority`, if it changes.
    pub authority: Option<&'a str>,
    /// The split chose (randomly, exactly or by sticky bucket), not a tag or a rule.
    pub by_split: bool,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            cluster_header: DEFAULT_CLUSTER_HEADER.into(),
            revision_header: DEFAULT_REVISION_HEADER.into(),
            upstream_revision_header: false,
            tag_header: DEFAULT_TAG_HEADER.into(),
            tag_routing: false,
            status_path: None,
            metrics: false,
            grpc_error_codes: crate::route::grpc::ErrorCodes::default(),
            hosts: HashMap::default(),
            models: HashMap::default(),
            services: Vec::new(),
            openai: None,
        }
    }
}

impl Router {
    pub fn cluster_header(&self) -> &str {
        &self.cluster_header
    }

    pub fn revision_header(&self) -> &str {
        &self.revision_header
    }

    pub fn upstream_revision_header(&self) -> bool {
        self.upstream_revision_header
    }

    pub fn tag_header(&self) -> &str {
        &self.tag_header
    }

    /// Whether any service routes by tag (and so the tag header must be stripped).
    pub fn tag_routing(&self) -> bool {
        self.tag_routing
    }

    pub fn status_path(&self) -> Option<&str> {
        self.status_path.as_deref()
    }

    pub fn metrics(&self) -> bool {
        self.metrics
    }

    pub fn grpc_error_codes(&self) -> crate::route::grpc::ErrorCodes {
        self.grpc_error_codes
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// A service's mirror setting and the revision it copies to.
    pub fn mirror(&self, service: usize) -> Option<(&crate::route::mirror::Mirror, &Revision)> {
        let s = self.services.get(service)?;
        let m = s.mirror()?;
        Some((m, s.revisions.get(m.revision)?))
    }

    /// The route for a request authority, or `None` for a host this filter does not serve.
    pub fn lookup(&self, authority: &str) -> Option<&HostRoute> {
        let host = host_part(authority)?;
        if is_lowercase(host) {
            // The common case: no copy, no buffer to clear.
            return self.hosts.get(host);
        }
        let mut buf: KeyBuf = [0; KEY_CAPACITY];
        self.hosts.get(lowercase_into(host, &mut buf)?)
    }

    /// Whether `lookup_model` can match anything (else `:path` need not be read).
    pub fn routes_by_model(&self) -> bool {
        !self.models.is_empty()
    }

    /// The route for a KServe inference path's model, for a host no service has.
    pub fn lookup_model(&self, path: &str) -> Option<&HostRoute> {
        self.models
            .get(crate::route::model_path::model_from_path(path)?)
    }

    /// The `openai` section, if configured.
    pub fn openai(&self) -> Option<&crate::route::openai::OpenAi> {
        self.openai.as_deref()
    }

    /// The service a model name in an OpenAI body selects (the bytes Envoy's metadata
    /// holds: a string's, or those of another JSON type, which name no model).
    pub fn lookup_body_model(&self, model: &[u8]) -> Option<&HostRoute> {
        self.models.get(std::str::from_utf8(model).ok()?)
    }

    /// Whether `model` is one of the public model names of `service`.
    pub fn serves_model(&self, service: usize, model: &[u8]) -> bool {
        self.lookup_body_model(model)
            .is_some_and(|r| r.service == service)
    }

    /// The model name a revision sends upstream in place of the client's, if it has one.
    pub fn revision_model(&self, choice: Choice) -> Option<&str> {
        self.openai.as_ref()?.revision_model(choice)
    }

    /// Whether an OpenAI request routed to `service` by its host needs its body read: a
    /// revision renames the model, or users stick by a body field.
    pub fn reads_bodies(&self, service: usize) -> bool {
        self.openai.as_ref().is_some_and(|o| o.renames(service))
            || self
                .services
                .get(service)
                .is_some_and(|s| s.sticky_body_field().is_some())
    }

    /// Renders the `openai` model list (`created`: when the configuration loaded, in
    /// seconds since the epoch).
    pub fn render_model_list(&mut self, created: u64) {
        let list = crate::route::openai::model_list(self.public_models().into_iter(), created);
        if let Some(openai) = self.openai.as_mut() {
            openai.set_model_list(list);
        }
    }

    /// Every public model name (with `openai`) and the service that serves it, in
    /// configuration order.
    pub fn public_models(&self) -> Vec<(&str, &str)> {
        let Some(openai) = self.openai.as_deref() else {
            return Vec::new();
        };
        openai
            .listed()
            .filter_map(|(s, model)| Some((model, self.services.get(s)?.name())))
            .collect()
    }

    /// Picks the revision: tag, then header routes (first match), then the split that
    /// `view` says is in effect. `header` reads one request header; it is called at most
    /// once per rule, and only for untagged requests of services that have rules.
    /// A tag or rule that names a revision out of rotation gives `Outcome::Unavailable`.
    pub fn decide<'a, H>(
        &'a self,
        route: &'a HostRoute,
        header: H,
        rng: &mut Rng,
        view: &View,
    ) -> Option<Outcome<'a>>
    where
        H: FnMut(&str) -> Option<String>,
    {
        self.decide_with(route, header, |_| None, rng, view)
    }

    /// As `decide`, for requests whose body fields a sticky `bodyField` may read:
    /// `body_field` reads one (called at most once, only where stickiness decides).
    pub fn decide_with<'a, H, B>(
        &'a self,
        route: &'a HostRoute,
        mut header: H,
        mut body_field: B,
        rng: &mut Rng,
        view: &View,
    ) -> Option<Outcome<'a>>
    where
        H: FnMut(&str) -> Option<String>,
        B: FnMut(&str) -> Option<String>,
    {
        let service = self.services.get(route.service)?;
        let state = view.service(route.service);
        let (revision, tag_authority, explicit) = match &route.tag {
            Some(tag) => (tag.revision, Some(&*tag.authority), true),
            None => {
                let by_tag = if service.tags.is_empty() {
                    None
                } else {
                    header(&self.tag_header).and_then(|t| {
                        service
                            .tags
                            .iter()
                            .find(|(tag, _)| **tag == *t)
                            .map(|&(_, r)| r)
                    })
                };
                match by_tag.or_else(|| match_header_routes(&service.header_routes, &mut header)) {
                    Some(rule) => (rule, None, true),
                    None => {
                        let split = state.map_or(&service.split, |s| &s.split);
                        let revision =
                            match sticky_value(service.sticky(), &mut header, &mut body_field) {
                                Some(value) => split.for_bucket(sticky_bucket(&value)),
                                None => match state.filter(|_| service.exact) {
                                    Some(s) => s.interleave.pick(split),
                                    None => split.pick(rng),
                                },
                            };
                        (revision, None, false)
                    }
                }
            }
        };
        let chosen = service.revisions.get(revision)?;
        let choice = Choice {
            service: route.service,
            revision,
        };
        if explicit {
            if let Some(reason) = state.and_then(|s| s.unavailable(revision)) {
                return Some(Outcome::Unavailable {
                    choice,
                    revision: chosen.name(),
                    reason,
                });
            }
        }
        Some(Outcome::Routed(Decision {
            choice,
            cluster: chosen.cluster(),
            revision: chosen.name(),
            authority: chosen.host.as_deref().or(tag_authority),
            by_split: !explicit,
        }))
    }

    /// The revision name to put on the response of a routed request.
    pub fn revision_name(&self, choice: Choice) -> Option<&str> {
        let service = self.services.get(choice.service)?;
        service.revisions.get(choice.revision).map(|r| r.name())
    }
}

/// The identity a sticky service assigns by, if the request carries one.
fn sticky_value<H, B>(sticky: Option<&Sticky>, header: &mut H, body_field: &mut B) -> Option<String>
where
    H: FnMut(&str) -> Option<String>,
    B: FnMut(&str) -> Option<String>,
{
    let value = match sticky? {
        Sticky::Header(name) => header(name)?,
        Sticky::Cookie(name) => cookie_value(&header("cookie")?, name)?.to_owned(),
        Sticky::BodyField(name) => body_field(name)?,
    };
    (!value.is_empty()).then_some(value)
}

/// The revision of the first rule whose header has exactly its value. Consecutive
/// rules on the same header read it once.
fn match_header_routes<H>(routes: &[HeaderRoute], header: &mut H) -> Option<usize>
where
    H: FnMut(&str) -> Option<String>,
{
    let mut last: Option<(&str, Option<String>)> = None;
    for rule in routes {
        let fresh = !matches!(&last, Some((name, _)) if *name == &*rule.header);
        if fresh {
            last = Some((&rule.header, header(&rule.header)));
        }
        if let Some((_, Some(value))) = &last {
            if value.as_str() == &*rule.value {
                return Some(rule.revision);
            }
        }
    }
    None
}

impl Service {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Health checks, passive ejection or automatic rollback watch its revisions'
    /// clusters.
    pub fn policed(&self) -> bool {
        self.policies.as_ref().is_some_and(|p| {
            p.health_check.is_some() || p.outlier.is_some() || p.auto_rollback.is_some()
        })
    }

    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.policies.as_ref()?.health_check.as_ref()
    }

    pub fn outlier(&self) -> Option<&Outlier> {
        self.policies.as_ref()?.outlier.as_ref()
    }

    pub fn auto_rollback(&self) -> Option<&RatePolicy> {
        self.policies.as_ref()?.auto_rollback.as_ref()
    }

    pub fn sticky(&self) -> Option<&Sticky> {
        self.policies.as_ref()?.sticky.as_ref()
    }

    pub fn steps(&self) -> Option<&crate::route::steps::Steps> {
        self.policies.as_ref()?.steps.as_ref()
    }

    pub fn mirror(&self) -> Option<&crate::route::mirror::Mirror> {
        self.policies.as_ref()?.mirror.as_ref()
    }

    /// The sticky body field, if this service assigns users by one.
    pub fn sticky_body_field(&self) -> Option<&str> {
        match self.sticky()? {
            Sticky::BodyField(name) => Some(name),
            _ => None,
        }
    }

    /// The configured split at `now_ms` (the current step's, with steps).
    pub fn split_at(&self, now_ms: u64) -> Split {
        match (self.steps(), self.canary) {
            (Some(steps), Some(c)) => {
                let p = steps.percent(now_ms);
                Split::new(&[(c.ready, p), (c.rolled, 100 - p)])
            }
            _ => self.split.clone(),
        }
    }

    /// Whether a canary is live at `now_ms` (strictly between 0 and 100 percent), so that
    /// automatic rollback watches it.
    pub fn canary_active(&self, now_ms: u64) -> bool {
        match (self.steps(), self.canary) {
            (Some(steps), Some(_)) => {
                let p = steps.percent(now_ms);
                p > 0 && p < 100
            }
            (_, c) => c.is_some_and(|c| c.active),
        }
    }

    /// The current step's canary percent, for services with steps.
    pub fn step_percent(&self, now_ms: u64) -> Option<u32> {
        self.steps().map(|s| s.percent(now_ms))
    }

    /// `(revision name, percent)` of the split, in bucket order, for logs and status.
    pub fn split_percents(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.split
            .percents()
            .filter_map(move |(rev, pct)| self.revisions.get(rev).map(|r| (r.name(), pct)))
    }
}

impl Revision {
    pub(crate) fn new(name: &str, cluster: &str, host: Option<Box<str>>) -> Revision {
        let mut text = String::with_capacity(name.len() + cluster.len());
        text.push_str(name);
        text.push_str(cluster);
        Revision {
            text: text.into_boxed_str(),
            name_len: name.len(),
            host,
        }
    }

    pub fn name(&self) -> &str {
        self.text.get(..self.name_len).unwrap_or_default()
    }

    pub fn cluster(&self) -> &str {
        self.text.get(self.name_len..).unwrap_or_default()
    }
}

impl HostRoute {
    pub fn service(&self) -> usize {
        self.service
    }

    pub fn is_tagged(&self) -> bool {
        self.tag.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::json;

    use super::*;
    use crate::config::parse;

    fn router() -> Router {
        let cfg = json!({"services": [
            {"name": "iris", "hosts": ["iris.example.com"], "tagRouting": true,
             "revisions": [{"name": "r1", "cluster": "c1"},
                           {"name": "r2", "cluster": "c2", "host": "r2.ns.svc.cluster.local"}],
             "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 10,
             "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"},
                              {"header": "traffic", "value": "old", "revision": "prev"},
                              {"header": "x-user", "value": "qa", "revision": "r2"}]},
            {"name": "other", "hosts": ["other.example.com"],
             "revisions": [{"name": "o1", "cluster": "oc1"}]}
        ]});
        parse(cfg.to_string().as_bytes()).unwrap()
    }

    fn decide<'a>(
        r: &'a Router,
        host: &str,
        headers: &[(&str, &str)],
        rng: &mut Rng,
    ) -> Option<Decision<'a>> {
        let route = r.lookup(host)?;
        let view = View::configured(r);
        r.decide(
            route,
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            rng,
            &view,
        )?
        .routed()
    }

    #[test]
    fn unknown_hosts_are_not_routed() {
        let r = router();
        let mut rng = Rng::new(1);
        for host in [
            "",
            "example.com",
            "latest-other.example.com",
            "prev-unknown.com",
            "[::1]:80",
            "iris.example.com.evil",
        ] {
            assert!(decide(&r, host, &[], &mut rng).is_none(), "{host}");
        }
    }

    #[test]
    fn only_split_decisions_are_marked_by_split() {
        let r = router();
        let mut rng = Rng::new(1);
        assert!(
            decide(&r, "iris.example.com", &[], &mut rng)
                .unwrap()
                .by_split
        );
        assert!(
            !decide(&r, "latest-iris.example.com", &[], &mut rng)
                .unwrap()
                .by_split
        );
        assert!(
            !decide(&r, "iris.example.com", &[("x-user", "qa")], &mut rng)
                .unwrap()
                .by_split
        );
        assert!(
            !decide(
                &r,
                "iris.example.com",
                &[("x-canary-tag", "prev")],
                &mut rng
            )
            .unwrap()
            .by_split
        );
        assert!(
            decide(&r, "other.example.com", &[], &mut rng)
                .unwrap()
                .by_split
        );
    }

    #[test]
    fn tags_win_over_header_routes() {
        let r = router();
        let d = decide(
            &r,
            "prev-iris.example.com:8080",
            &[("traffic", "test")],
            &mut Rng::new(1),
        )
        .unwrap();
        assert_eq!(
            (d.revision, d.cluster, d.authority),
            ("r1", "c1", Some("iris.example.com"))
        );
        // The revision's own host wins over the untagged host.
        let d = decide(&r, "LATEST-iris.example.com.", &[], &mut Rng::new(1)).unwrap();
        assert_eq!(
            (d.revision, d.cluster, d.authority),
            ("r2", "c2", Some("r2.ns.svc.cluster.local"))
        );
    }

    #[test]
    fn header_routes_first_match_wins() {
        let r = router();
        let mut rng = Rng::new(1);
        let d = decide(&r, "iris.example.com", &[("traffic", "test")], &mut rng).unwrap();
        assert_eq!(d.revision, "r2");
        let d = decide(
            &r,
            "iris.example.com",
            &[("traffic", "old"), ("x-user", "qa")],
            &mut rng,
        )
        .unwrap();
        assert_eq!(d.revision, "r1");
        let d = decide(&r, "iris.example.com", &[("x-user", "qa")], &mut rng).unwrap();
        assert_eq!(d.revision, "r2");
        // Values match exactly: a near miss falls through to the split, drawing as if
        // no header had been sent.
        for seed in 0..200 {
            let near_miss = decide(
                &r,
                "iris.example.com",
                &[("traffic", "Test")],
                &mut Rng::new(seed),
            )
            .unwrap();
            let none = decide(&r, "iris.example.com", &[], &mut Rng::new(seed)).unwrap();
            assert_eq!(near_miss, none);
        }
    }

    #[test]
    fn consecutive_rules_on_one_header_read_it_once() {
        let r = router();
        let reads = RefCell::new(Vec::new());
        let route = r.lookup("iris.example.com").unwrap();
        r.decide(
            route,
            |name| {
                reads.borrow_mut().push(name.to_owned());
                None
            },
            &mut Rng::new(1),
            &View::configured(&r),
        );
        // The tag header first (the service routes by tag), then each rule header once.
        assert_eq!(*reads.borrow(), vec!["x-canary-tag", "traffic", "x-user"]);
        // Services without rules and tagged requests read no header at all.
        reads.borrow_mut().clear();
        for host in ["other.example.com", "latest-iris.example.com"] {
            let route = r.lookup(host).unwrap();
            r.decide(
                route,
                |name| {
                    reads.borrow_mut().push(name.to_owned());
                    None
                },
                &mut Rng::new(1),
                &View::configured(&r),
            );
        }
        assert!(reads.borrow().is_empty());
    }

    #[test]
    fn split_follows_the_percentages() {
        let r = router();
        let mut rng = Rng::new(0xdecafbad);
        let n = 100_000;
        let canary = (0..n)
            .filter(|_| {
                decide(&r, "iris.example.com", &[], &mut rng)
                    .unwrap()
                    .revision
                    == "r2"
            })
            .count();
        // 10% within 5 sigma (sigma ~ 95).
        assert!((9_525..10_475).contains(&canary), "{canary}");
        // Split-routed requests keep the client's authority unless the revision sets one.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = decide(&r, "iris.example.com", &[], &mut rng).unwrap();
            seen.insert((d.revision, d.authority));
        }
        assert_eq!(
            seen,
            [("r1", None), ("r2", Some("r2.ns.svc.cluster.local"))]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn unavailable_revisions_answer_tags_and_rules_but_leave_the_split() {
        use crate::health::view::ClusterState;
        let r = router();
        let view = View::build(
            &r,
            0,
            |_, _, c| ClusterState {
                ready: c != "c2",
                ejected: false,
            },
            |_| false,
        );
        let mut rng = Rng::new(3);
        let headers = |h: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                h.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        for (host, h) in [
            ("latest-iris.example.com", &[][..]),
            ("iris.example.com", &[("traffic", "test")][..]),
        ] {
            let out = r
                .decide(r.lookup(host).unwrap(), headers(h), &mut rng, &view)
                .unwrap();
            assert!(
                matches!(
                    out,
                    Outcome::Unavailable {
                        revision: "r2",
                        reason: Unavailable::NotReady,
                        ..
                    }
                ),
                "{out:?}"
            );
        }
        // The split no longer sends anything to r2; r1 stays reachable every way.
        for _ in 0..500 {
            let out = r
                .decide(
                    r.lookup("iris.example.com").unwrap(),
                    headers(&[]),
                    &mut rng,
                    &view,
                )
                .unwrap();
            assert_eq!(out.routed().unwrap().revision, "r1");
        }
        let out = r
            .decide(
                r.lookup("prev-iris.example.com").unwrap(),
                headers(&[]),
                &mut rng,
                &view,
            )
            .unwrap();
        assert_eq!(out.routed().unwrap().revision, "r1");
    }

    fn policy_router() -> Router {
        let cfg = json!({"services": [
            {"name": "iris", "hosts": ["iris.example.com"], "tagRouting": true,
             "revisions": [{"name": "r1", "cluster": "c1"}, {"name": "r2", "cluster": "c2"}],
             "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 10,
             "headerRoutes": [{"header": "traffic", "value": "test", "revision": "prev"}],
             "sticky": {"cookie": "session"}},
            {"name": "exact", "hosts": ["exact.example.com"], "split": "exact", "sticky": {"header": "x-user"},
             "revisions": [{"name": "e1", "cluster": "e1"}, {"name": "e2", "cluster": "e2"}],
             "traffic": [{"revisionName": "e1", "percent": 70}, {"revisionName": "e2", "percent": 30, "tag": "beta"}]}
        ]});
        parse(cfg.to_string().as_bytes()).unwrap()
    }

    fn pick(r: &Router, view: &View, host: &str, headers: &[(&str, &str)]) -> String {
        let out = r.decide(
            r.lookup(host).unwrap(),
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            &mut Rng::new(9),
            view,
        );
        out.unwrap().routed().unwrap().revision.to_owned()
    }

    #[test]
    fn tag_header_only_for_tag_routing_services_and_before_rules() {
        let r = policy_router();
        assert!(r.tag_routing());
        let view = View::configured(&r);
        assert_eq!(
            pick(
                &r,
                &view,
                "iris.example.com",
                &[("x-canary-tag", "latest"), ("traffic", "test")]
            ),
            "r2"
        );
        assert_eq!(
            pick(&r, &view, "iris.example.com", &[("x-canary-tag", "prev")]),
            "r1"
        );
        // An unknown tag falls through to the header rules.
        assert_eq!(
            pick(
                &r,
                &view,
                "iris.example.com",
                &[("x-canary-tag", "nope"), ("traffic", "test")]
            ),
            "r1"
        );
        // The exact service has no tag routing: its tags mean nothing in the header.
        let e = (0..10)
            .map(|_| pick(&r, &view, "exact.example.com", &[("x-canary-tag", "beta")]))
            .collect::<Vec<_>>();
        assert!(e.contains(&"e1".to_owned()));
    }

    #[test]
    fn sticky_users_keep_their_revision_and_rules_come_first() {
        let r = policy_router();
        let view = View::configured(&r);
        let mut canary_users = 0;
        for i in 0..2000 {
            let cookie = format!("theme=dark; session=user-{i}");
            let first = pick(&r, &view, "iris.example.com", &[("cookie", &cookie)]);
            assert!((0..5)
                .all(|_| pick(&r, &view, "iris.example.com", &[("cookie", &cookie)]) == first));
            canary_users += usize::from(first == "r2");
            assert_eq!(
                pick(
                    &r,
                    &view,
                    "iris.example.com",
                    &[("cookie", &cookie), ("traffic", "test")]
                ),
                "r1"
            );
        }
        assert!(
            (140..260).contains(&canary_users),
            "{canary_users} of 2000 at 10%"
        );
        assert_eq!(
            pick(&r, &view, "exact.example.com", &[("x-user", "alice")]),
            pick(&r, &view, "exact.example.com", &[("x-user", "alice")])
        );
    }

    #[test]
    fn exact_split_interleaves_per_view() {
        let r = policy_router();
        let view = View::configured(&r);
        let picks: Vec<String> = (0..10)
            .map(|_| pick(&r, &view, "exact.example.com", &[]))
            .collect();
        assert_eq!(picks.iter().filter(|p| *p == "e2").count(), 3, "{picks:?}");
    }

    #[test]
    fn sticky_by_a_body_field_reads_it_only_where_stickiness_decides() {
        let cfg = json!({"openai": {}, "services": [{"name": "llama", "models": ["llama"], "tagRouting": true,
            "hosts": ["llama.example.com"],
            "revisions": [{"name": "r1", "cluster": "c1", "model": "llama-1"}, {"name": "r2", "cluster": "c2"}],
            "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 10,
            "headerRoutes": [{"header": "traffic", "value": "test", "revision": "prev"}],
            "sticky": {"bodyField": "user"}}]});
        let r = parse(cfg.to_string().as_bytes()).unwrap();
        let view = View::configured(&r);
        let route = r.lookup_body_model(b"llama").unwrap();
        let reads = RefCell::new(0);
        let pick = |user: Option<&str>, traffic: Option<&str>| {
            let out = r.decide_with(
                route,
                |h| {
                    (h == "traffic")
                        .then(|| traffic.map(str::to_owned))
                        .flatten()
                },
                |field| {
                    assert_eq!(field, "user");
                    *reads.borrow_mut() += 1;
                    user.map(str::to_owned)
                },
                &mut Rng::new(7),
                &view,
            );
            out.unwrap().routed().unwrap().revision.to_owned()
        };
        let mut canary = 0;
        for i in 0..2000 {
            let user = format!("user-{i}");
            let first = pick(Some(&user), None);
            assert_eq!(pick(Some(&user), None), first);
            canary += usize::from(first == "r2");
        }
        assert!((140..260).contains(&canary), "{canary} of 2000 at 10%");
        // A header rule decides before stickiness: the body field is not read.
        *reads.borrow_mut() = 0;
        assert_eq!(pick(Some("user-1"), Some("test")), "r1");
        assert_eq!(*reads.borrow(), 0);
        // Without the field, or with an empty one, the split decides.
        assert!(["r1", "r2"].contains(&pick(None, None).as_str()));
        assert!(["r1", "r2"].contains(&pick(Some(""), None).as_str()));
        // `decide` (no body) never reads one.
        let out = r.decide(route, |_| None, &mut Rng::new(1), &view).unwrap();
        assert!(out.routed().is_some());
    }

    #[test]
    fn services_are_independent() {
        let r = router();
        let d = decide(
            &r,
            "other.example.com",
            &[("traffic", "test")],
            &mut Rng::new(1),
        )
        .unwrap();
        assert_eq!((d.choice.service, d.revision, d.cluster), (1, "o1", "oc1"));
        assert_eq!(r.revision_name(d.choice), Some("o1"));
        assert_eq!(
            r.revision_name(Choice {
                service: 9,
                revision: 0
            }),
            None
        );
    }
}
