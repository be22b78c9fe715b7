//! What the timer has to look after for one configuration, worked out once: the clusters
//! to probe or count errors for, and per-VM response counters that the request path
//! bumps without any host call and the timer flushes.

use std::cell::Cell;

use hashbrown::HashMap;

use crate::health::{grpc_probe, Counts, HealthCheck, ProbeKind};
use crate::route::grpc::Outcome;
use crate::route::{Router, Service};

/// One cluster the health machinery looks after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Empty unless a service with a health policy sends to the cluster (only those
    /// read it): 10,000 services without policies copy no names.
    pub name: Box<str>,
    /// How it is probed (from the first service that probes it).
    pub probe: Option<Box<ClusterProbe>>,
    /// Errors are counted in shared windows (an outlier or rollback policy covers it).
    pub windowed: bool,
}

/// One cluster's readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterProbe {
    pub check: HealthCheck,
    /// `:authority` of the probe: the revision's `host`, or the service's first host.
    pub authority: Box<str>,
    /// For a gRPC probe, the target `dispatch_grpc_call` is given (cluster and
    /// authority, see `grpc_probe::upstream`); `None` for HTTP probes.
    pub grpc_target: Option<Box<str>>,
}

impl ClusterProbe {
    fn new(check: HealthCheck, cluster: &str, authority: Box<str>) -> ClusterProbe {
        let grpc_target = match check.probe {
            ProbeKind::Grpc(_) => grpc_probe::upstream(cluster, &authority).map(Into::into),
            ProbeKind::Http { .. } => None,
        };
        ClusterProbe {
            check,
            authority,
            grpc_target,
        }
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    pub clusters: Vec<ClusterPlan>,
    /// Per service, the slot of its first revision's counters (its revisions' slots
    /// follow in order), then the slot count: service `s` owns `starts[s]..starts[s + 1]`.
    starts: Vec<usize>,
    /// Per slot: (service, revision, cluster index).
    slot_info: Vec<(usize, usize, usize)>,
    /// Any policy at all: if not, the filter sets no timer.
    pub active: bool,
}

impl Plan {
    pub fn new(router: &Router) -> Plan {
        let revisions: usize = router.services.iter().map(|s| s.revisions.len()).sum();
        // Clusters matter only to health policies: without any, no cluster table (and no
        // lookup of every revision's cluster name to build it).
        let watched = router.services.iter().any(Service::policed);
        let mut index: HashMap<&str, usize> =
            HashMap::with_capacity(if watched { revisions } else { 0 });
        let mut plan = Plan {
            clusters: Vec::with_capacity(if watched { revisions } else { 0 }),
            starts: Vec::with_capacity(router.services.len() + 1),
            slot_info: Vec::with_capacity(revisions),
            ..Plan::default()
        };
        for (si, service) in router.services.iter().enumerate() {
            plan.add(watched.then_some(&mut index), si, service);
        }
        plan.starts.push(plan.slot_info.len());
        plan
    }

    /// One service's slots and clusters. A call per service: V8 runs a long loop in its
    /// baseline code to the end of the call, and this function's optimised code soon.
    #[inline(never)]
    fn add<'r>(
        &mut self,
        mut index: Option<&mut HashMap<&'r str, usize>>,
        si: usize,
        service: &'r Service,
    ) {
        self.starts.push(self.slot_info.len());
        let policed = service.policed();
        for (rev, revision) in service.revisions.iter().enumerate() {
            let Some(index) = index.as_deref_mut() else {
                self.slot_info.push((si, rev, NO_CLUSTER));
                continue;
            };
            let cluster = *index.entry(revision.cluster()).or_insert_with(|| {
                self.clusters.push(ClusterPlan {
                    name: Box::default(),
                    probe: None,
                    windowed: false,
                });
                self.clusters.len() - 1
            });
            if let Some(c) = self.clusters.get_mut(cluster).filter(|_| policed) {
                if c.name.is_empty() {
                    c.name = revision.cluster().into();
                }
                if c.probe.is_none() {
                    c.probe = service.health_check().cloned().map(|h| {
                        let authority = revision
                            .host
                            .clone()
                            .unwrap_or_else(|| service.probe_authority.clone());
                        Box::new(ClusterProbe::new(h, revision.cluster(), authority))
                    });
                }
                let is_canary = service.canary.is_some_and(|k| k.ready == rev);
                c.windowed |=
                    service.outlier().is_some() || (is_canary && service.auto_rollback().is_some());
            }
            self.slot_info.push((si, rev, cluster));
        }
        self.active |= policed || service.steps().is_some();
    }

    pub fn slot(&self, service: usize, revision: usize) -> Option<usize> {
        let start = *self.starts.get(service)?;
        let end = *self.starts.get(service.checked_add(1)?)?;
        let slot = start.checked_add(revision)?;
        (slot < end).then_some(slot)
    }

    pub fn slot_count(&self) -> usize {
        self.slot_info.len()
    }

    pub fn cluster_of_slot(&self, slot: usize) -> Option<usize> {
        self.slot_info.get(slot).map(|&(_, _, c)| c)
    }

    /// `(service, revision)` of a slot.
    pub fn owner_of_slot(&self, slot: usize) -> Option<(usize, usize)> {
        self.slot_info.get(slot).map(|&(s, r, _)| (s, r))
    }

    /// Whether responses of this slot feed an error window.
    pub fn windowed(&self, slot: usize) -> bool {
        self.cluster_of_slot(slot)
            .and_then(|c| self.clusters.get(c))
            .is_some_and(|c| c.windowed)
    }
}

/// The cluster of every slot when no service has a health policy (there is no table).
const NO_CLUSTER: usize = usize::MAX;

/// Response classes counted per revision.
pub const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
/// gRPC outcomes counted per revision, besides the HTTP class of the same responses (a
/// failed gRPC call is an HTTP 200): calls that ended OK, and calls that ended with one
/// of `grpcErrorCodes`. Other codes (the caller's errors) are in neither.
pub const GRPC_OUTCOMES: [&str; 2] = ["grpc_ok", "grpc_errors"];

/// Per-VM counters, one set per slot. Cells: the request path only adds.
#[derive(Debug, Default)]
pub struct Counters {
    slots: Vec<SlotCounters>,
}

#[derive(Debug, Default)]
struct SlotCounters {
    routed: Cell<u64>,
    /// 2xx, 3xx, 4xx, 5xx; anything else is not counted by class.
    classes: [Cell<u64>; 4],
    responses: Cell<u64>,
    /// `GRPC_OUTCOMES`.
    grpc: [Cell<u64>; 2],
}

/// What one slot did since the last flush.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlotDelta {
    pub routed: u64,
    pub classes: [u64; 4],
    pub responses: u64,
    pub grpc: [u64; 2],
}

impl SlotDelta {
    pub fn is_empty(&self) -> bool {
        *self == SlotDelta::default()
    }

    /// Window counts: every response, and as errors 5xx (local 503s for resets and
    /// connect failures included) and failed gRPC calls (HTTP 200s, so never counted
    /// twice). The status of a gRPC call that streams its answer comes with its trailers:
    /// its error may land in a later flush than its response.
    pub fn counts(&self) -> Counts {
        Counts {
            total: self.responses,
            errors: self.classes[3] + self.grpc[1],
        }
    }
}

impl Counters {
    pub fn new(slots: usize) -> Counters {
        Counters {
            slots: (0..slots).map(|_| SlotCounters::default()).collect(),
        }
    }

    pub fn routed(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.routed.set(s.routed.get() + 1);
        }
    }

    pub fn response(&self, slot: usize, status: u16) {
        if let Some(s) = self.slots.get(slot) {
            s.responses.set(s.responses.get() + 1);
            if let Some(c) = s.classes.get(usize::from(status / 100).wrapping_sub(2)) {
                c.set(c.get() + 1);
            }
        }
    }

    /// How a gRPC call answered by this slot's revision ended (its response was counted
    /// by `response` already).
    pub fn grpc(&self, slot: usize, outcome: Outcome) {
        let index = match outcome {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Other => return,
        };
        if let Some(c) = self.slots.get(slot).and_then(|s| s.grpc.get(index)) {
            c.set(c.get() + 1);
        }
    }

    /// Takes every slot's counts since the last call.
    pub fn drain(&self) -> impl Iterator<Item = (usize, SlotDelta)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let delta = SlotDelta {
                routed: s.routed.take(),
                classes: [0, 1, 2, 3].map(|c| s.classes.get(c).map_or(0, Cell::take)),
                responses: s.responses.take(),
                grpc: [0, 1].map(|c| s.grpc.get(c).map_or(0, Cell::take)),
            };
            (!delta.is_empty()).then_some((i, delta))
        })
    }
}

/// Envoy stat names, chosen so that two tag-extraction regexes (`stats_tags` in
/// envoy/envoy.yaml, and docs/health.md) turn them into
/// `canary_router_<metric>{service="…",revision="…"}` in Prometheus.
pub fn revision_stat(service: &str, revision: &str, metric: &str) -> String {
    format!("canary_router.service.{service}.revision.{revision}.{metric}")
}

pub fn service_stat(service: &str, metric: &str) -> String {
    format!("canary_router.service.{service}.{metric}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::parse;

    #[test]
    fn plan_shares_clusters_and_marks_policies() {
        let cfg = json!({"services": [
            {"name": "a", "hosts": ["a.com"], "healthCheck": {"path": "/v1/models/a"},
             "revisions": [{"name": "a1", "cluster": "c1"}, {"name": "a2", "cluster": "c2", "host": "a2.internal"}],
             "latestRolledoutRevision": "a1", "latestReadyRevision": "a2", "canaryTrafficPercent": 10,
             "autoRollback": {"maxErrorRate": 0.1}},
            {"name": "b", "hosts": ["b.com"], "revisions": [{"name": "b1", "cluster": "c1"}]}
        ]});
        let router = parse(cfg.to_string().as_bytes()).unwrap();
        let plan = Plan::new(&router);
        assert!(plan.active);
        assert_eq!(plan.clusters.len(), 2);
        assert_eq!(plan.slot_count(), 3);
        let c1 = &plan.clusters[0];
        assert_eq!(
            c1.probe.as_deref().map(|p| (
                p.check.probe.describe(),
                &*p.authority,
                p.grpc_target.is_none()
            )),
            Some(("/v1/models/a", "a.com", true))
        );
        assert!(!c1.windowed, "the stable revision has no policy");
        let c2 = &plan.clusters[1];
        assert_eq!(
            c2.probe.as_deref().map(|p| &*p.authority),
            Some("a2.internal")
        );
        assert!(c2.windowed, "the canary is watched for rollback");
        assert_eq!(plan.cluster_of_slot(plan.slot(1, 0).unwrap()), Some(0));
        let slots: Vec<_> = [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
            (2, 0),
            (usize::MAX, 0),
        ]
        .iter()
        .map(|&(s, r)| plan.slot(s, r))
        .collect();
        assert_eq!(slots, [Some(0), Some(1), None, Some(2), None, None, None]);
        assert_eq!(plan.owner_of_slot(2), Some((1, 0)));
        assert_eq!(Plan::default().slot(0, 0), None);
        let quiet = parse(br#"{"services": [{"name": "b", "hosts": ["b.com"], "revisions": [{"name": "b1", "cluster": "c1"}]}]}"#).unwrap();
        let quiet = Plan::new(&quiet);
        assert!(!quiet.active);
        // Without health policies there is no cluster table; slots still work.
        assert!(quiet.clusters.is_empty());
        assert_eq!(
            (quiet.slot(0, 0), quiet.owner_of_slot(0)),
            (Some(0), Some((0, 0)))
        );
        assert!(!quiet.windowed(0));
    }

    #[test]
    fn grpc_probes_carry_their_target() {
        let cfg = json!({"services": [
            {"name": "iris", "hosts": ["iris.com"],
             "healthCheck": {"protocol": "grpc", "intervalMs": 200},
             "revisions": [{"name": "i1", "cluster": "g1"}, {"name": "i2", "cluster": "g2", "host": "i2.internal"}],
             "latestRolledoutRevision": "i1", "latestReadyRevision": "i2", "canaryTrafficPercent": 10}
        ]});
        let router = parse(cfg.to_string().as_bytes()).unwrap();
        let plan = Plan::new(&router);
        let probes: Vec<&ClusterProbe> = plan
            .clusters
            .iter()
            .map(|c| c.probe.as_deref().unwrap())
            .collect();
        let ProbeKind::Grpc(g) = &probes[0].check.probe else {
            panic!("{:?}", probes[0]);
        };
        assert_eq!(
            (g.method, &*g.model),
            (grpc_probe::ProbeMethod::ModelReady, "iris")
        );
        assert_eq!(
            probes[0].grpc_target.as_deref(),
            grpc_probe::upstream("g1", "iris.com").as_deref()
        );
        assert_eq!(
            probes[1].grpc_target.as_deref(),
            grpc_probe::upstream("g2", "i2.internal").as_deref()
        );
    }

    #[test]
    fn counters_drain_once() {
        let c = Counters::new(2);
        c.routed(1);
        c.response(1, 200);
        c.response(1, 503);
        c.response(1, 101);
        c.response(9, 200);
        let drained: Vec<_> = c.drain().collect();
        assert_eq!(
            drained,
            vec![(
                1,
                SlotDelta {
                    routed: 1,
                    classes: [1, 0, 0, 1],
                    responses: 3,
                    grpc: [0, 0],
                }
            )]
        );
        assert_eq!(
            drained[0].1.counts(),
            Counts {
                total: 3,
                errors: 1
            }
        );
        assert_eq!(c.drain().count(), 0);
    }

    #[test]
    fn failed_grpc_calls_are_errors_of_their_200s() {
        let c = Counters::new(1);
        for _ in 0..4 {
            c.response(0, 200);
        }
        c.grpc(0, Outcome::Ok);
        c.grpc(0, Outcome::Failed);
        c.grpc(0, Outcome::Failed);
        c.grpc(0, Outcome::Other);
        c.response(0, 503);
        c.grpc(7, Outcome::Failed);
        let (_, delta) = c.drain().next().unwrap();
        assert_eq!((delta.classes, delta.grpc), ([4, 0, 0, 1], [1, 2]));
        assert_eq!(
            delta.counts(),
            Counts {
                total: 5,
                errors: 3
            }
        );
    }

    #[test]
    fn stat_names() {
        assert_eq!(
            revision_stat("iris", "iris-1", "requests"),
            "canary_router.service.iris.revision.iris-1.requests"
        );
        assert_eq!(
            service_stat("iris", "rollbacks"),
            "canary_router.service.iris.rollbacks"
        );
    }
}
