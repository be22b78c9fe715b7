//! What one VM currently routes by: per service, the effective split after health and
//! rollback, and which revisions are out of rotation. Rebuilt on the timer from shared
//! state, read by the request path without any host call.

use crate::route::split::{Interleave, Split};
use crate::route::{Canary, Router, Service};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    NotReady,
    Ejected,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::NotReady => "not ready",
            Unavailable::Ejected => "ejected",
        }
    }
}

/// The health of one cluster, as the shared state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterState {
    pub ready: bool,
    pub ejected: bool,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            ready: true,
            ejected: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub split: Split,
    /// Per revision, why it is out of rotation; empty when every revision is available
    /// (the usual case, without an allocation per service): read through
    /// [`ServiceView::unavailable`].
    pub unavailable: Vec<Option<Unavailable>>,
    pub rolled_back: bool,
    /// No revision that would take a share is available: the configured split is used.
    pub fail_open: bool,
    /// This worker's position in the `split: exact` interleave of `split`.
    pub interleave: Interleave,
    /// The split the configuration asks for now, before health (the current step's).
    pub configured: Split,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub services: Vec<ServiceView>,
}

impl View {
    /// Everything healthy, nothing rolled back: the configuration as written.
    pub fn configured(router: &Router) -> View {
        View::build(router, 0, |_, _, _| ClusterState::default(), |_| false)
    }

    /// The view at `now_ms`; `state(service, revision, cluster)` says whether a revision
    /// is ready and ejected.
    pub fn build(
        router: &Router,
        now_ms: u64,
        state: impl Fn(usize, usize, &str) -> ClusterState,
        rolled_back: impl Fn(usize) -> bool,
    ) -> View {
        let services = router
            .services
            .iter()
            .enumerate()
            .map(|(index, service)| {
                let why = |(ri, r): (usize, &crate::route::Revision)| {
                    let state = state(index, ri, r.cluster());
                    if !state.ready {
                        Some(Unavailable::NotReady)
                    } else if state.ejected {
                        Some(Unavailable::Ejected)
                    } else {
                        None
                    }
                };
                let revisions = service.revisions.iter().enumerate();
                let unavailable: Vec<Option<Unavailable>> =
                    if revisions.clone().map(why).all(|u| u.is_none()) {
                        Vec::new()
                    } else {
                        revisions.map(why).collect()
                    };
                // A rollback outlives the step schedule: it stops the progression.
                let rolled = service
                    .canary
                    .filter(|_| service.auto_rollback().is_some() && rolled_back(index));
                service_view(service, now_ms, unavailable, rolled, &|ri, cluster| {
                    state(index, ri, cluster).ejected
                })
            })
            .collect();
        View { services }
    }

    pub fn service(&self, index: usize) -> Option<&ServiceView> {
        self.services.get(index)
    }
}

impl ServiceView {
    /// Why revision `rev` is out of rotation, if it is.
    pub fn unavailable(&self, rev: usize) -> Option<Unavailable> {
        self.unavailable.get(rev).copied().flatten()
    }
}

/// The rest of a service's view, once its revisions' availability is known: not generic
/// (one copy for `View::configured` and the timer's views).
fn service_view(
    service: &Service,
    now_ms: u64,
    unavailable: Vec<Option<Unavailable>>,
    rolled: Option<Canary>,
    ejected: &dyn Fn(usize, &str) -> bool,
) -> ServiceView {
    let configured = service.split_at(now_ms);
    let base = match rolled {
        Some(c) => Split::new(&[(c.rolled, 100)]),
        None => configured.clone(),
    };
    // The common case: every revision available, nothing rolled back, a split that covers
    // every bucket; restricting it to all revisions is itself.
    if rolled.is_none() && base.is_full() && unavailable.is_empty() {
        return ServiceView {
            configured,
            interleave: interleave(service.exact, &base),
            split: base,
            unavailable,
            rolled_back: false,
            fail_open: false,
        };
    }
    let available = |rev: usize| {
        rev < service.revisions.len() && unavailable.get(rev).copied().flatten().is_none()
    };
    // Failing open goes in tiers: revisions that are only not ready (probes can be wrong)
    // before ejected ones (which just failed real traffic), and the configured split only
    // when every revision is ejected.
    let ejected: Vec<bool> = service
        .revisions
        .iter()
        .enumerate()
        .map(|(ri, r)| ejected(ri, r.cluster()))
        .collect();
    let not_ejected = |rev: usize| ejected.get(rev) == Some(&false);
    let (split, fail_open) = match base.restricted(&available) {
        Some(split) => (split, false),
        None => (base.restricted(&not_ejected).unwrap_or(base), true),
    };
    ServiceView {
        configured,
        interleave: interleave(service.exact, &split),
        split,
        unavailable,
        rolled_back: rolled.is_some(),
        fail_open,
    }
}

/// The interleave of a `split: exact` service; the others draw at random and need none.
fn interleave(exact: bool, split: &Split) -> Interleave {
    if exact {
        Interleave::new(split)
    } else {
        Interleave::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::parse;

    fn router() -> Router {
        let cfg = json!({"services": [{
            "name": "iris", "hosts": ["iris.example.com"],
            "revisions": [{"name": "r1", "cluster": "c1"}, {"name": "r2", "cluster": "c2"}],
            "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 10,
            "autoRollback": {"maxErrorRate": 0.1}
        }]});
        parse(cfg.to_string().as_bytes()).unwrap()
    }

    fn shares(v: &View) -> Vec<(usize, u32)> {
        v.services[0].split.shares().collect()
    }

    #[test]
    fn unavailable_revisions_lose_their_share() {
        let r = router();
        assert_eq!(shares(&View::configured(&r)), vec![(1, 1000), (0, 9000)]);
        let v = View::build(
            &r,
            0,
            |_, _, c| ClusterState {
                ready: c != "c2",
                ejected: false,
            },
            |_| false,
        );
        assert_eq!(shares(&v), vec![(0, 10_000)]);
        assert_eq!(
            v.services[0].unavailable,
            vec![None, Some(Unavailable::NotReady)]
        );
        let v = View::build(
            &r,
            0,
            |_, _, c| ClusterState {
                ready: true,
                ejected: c == "c1",
            },
            |_| false,
        );
        assert_eq!(shares(&v), vec![(1, 10_000)]);
        assert!(!v.services[0].fail_open);
    }

    #[test]
    fn nothing_available_fails_open() {
        let r = router();
        let v = View::build(
            &r,
            0,
            |_, _, _| ClusterState {
                ready: false,
                ejected: false,
            },
            |_| false,
        );
        assert!(v.services[0].fail_open);
        assert_eq!(shares(&v), vec![(1, 1000), (0, 9000)]);
    }

    #[test]
    fn failing_open_prefers_not_ready_revisions_to_ejected_ones() {
        let r = router();
        let v = View::build(
            &r,
            0,
            |_, _, c| ClusterState {
                ready: false,
                ejected: c == "c1",
            },
            |_| false,
        );
        assert!(v.services[0].fail_open);
        assert_eq!(shares(&v), vec![(1, 10_000)]);
        let all_ejected = View::build(
            &r,
            0,
            |_, _, _| ClusterState {
                ready: true,
                ejected: true,
            },
            |_| false,
        );
        assert!(all_ejected.services[0].fail_open);
        assert_eq!(shares(&all_ejected), vec![(1, 1000), (0, 9000)]);
    }

    #[test]
    fn rollback_sends_everything_to_the_rolled_out_revision() {
        let r = router();
        let v = View::build(&r, 0, |_, _, _| ClusterState::default(), |_| true);
        assert!(v.services[0].rolled_back);
        assert_eq!(shares(&v), vec![(0, 10_000)]);
        // A rolled-out revision that is down: fail open to it rather than the canary.
        let v = View::build(
            &r,
            0,
            |_, _, c| ClusterState {
                ready: c != "c1",
                ejected: false,
            },
            |_| true,
        );
        assert!(v.services[0].fail_open);
        assert_eq!(shares(&v), vec![(0, 10_000)]);
    }
}
