//! The proxy-wasm glue: configuration in, one decision per request out, and a timer that
//! keeps the health view current. All logic lives in the host-tested modules; this file
//! moves headers across the ABI (each header host call costs thousands of Envoy
//! instructions) and shared state between workers.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use hashbrown::HashMap;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::config;
use crate::health::plan::{revision_stat, service_stat, Counters, Plan, CLASSES, GRPC_OUTCOMES};
use crate::health::status;
use crate::health::view::{ClusterState, View};
use crate::health::{
    cluster_id, decode_pair, encode_pair, fingerprint, may_take_lease, Counts, Ejections, Probe,
    ProbeKind, Window,
};
use crate::route::grpc::{status_at, Outcome as GrpcOutcome, StatusAt};
use crate::route::mirror::{self, Capture, Outbox, Skip, Ticket};
use crate::route::rng::Rng;
use crate::route::{Choice, Outcome, Router};
use crate::wasm::grpc;
use crate::wasm::openai::{self, Llm};
use crate::wasm::shared::{self, now_ms, now_us, Stats, PREFIX};

/// Health timer period: rollback and ejection decisions land within a few of these.
const TICK: Duration = Duration::from_millis(100);
/// Without health policies the timer only flushes metrics.
const METRICS_TICK: Duration = Duration::from_millis(1000);
/// With a mirror, the timer also sends the queued shadow copies: they wait at most this.
const MIRROR_TICK: Duration = Duration::from_millis(20);
/// A prober that stops renewing (its root context is gone) is replaced after this.
const LEASE_MS: u64 = 1000;
/// Rollback key value while not rolled back (created at configure time, so that the
/// transition is a real compare-and-swap that exactly one VM wins).
const NOT_ROLLED_BACK: &[u8] = &[0];

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CanaryRoot::new()) });
}}

/// A header value as text. RFC 9110 allows bytes 0x80-0xFF (obs-text) in field values and
/// Envoy passes them on; the SDK's string getters would panic on them, so read bytes and
/// replace what is not UTF-8 (nothing the filter matches contains U+FFFD by accident).
pub(super) fn header(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok()??;
    Some(
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// The stat of a mirror metric, named after the revision the copies go to.
fn mirror_stat(router: &Router, service: usize, metric: &str) -> Option<String> {
    let (_, revision) = router.mirror(service)?;
    let service = router.services().get(service)?;
    Some(revision_stat(service.name(), revision.name(), metric))
}

/// Shared state a view was built from: readiness per cluster, ejection per revision,
/// rollback per service, current step per service.
type Seen = (Vec<bool>, Vec<Vec<bool>>, Vec<bool>, Vec<Option<u32>>);

struct CanaryRoot {
    /// Swapped whole on reconfiguration; requests in flight keep what they started with.
    router: Rc<Router>,
    plan: Rc<Plan>,
    view: Rc<View>,
    counters: Rc<Counters>,
    rng: Rc<Cell<Rng>>,
    /// This root context's identity in the prober lease.
    me: u64,
    /// Rollback state belongs to one configuration: a new one starts unrolled.
    fingerprint: String,
    /// A configuration judges its canary on the responses since it was loaded.
    loaded_at: u64,
    stats: Stats,
    /// Probes and shadow copies in flight, by token (one map: each map type is its
    /// own copy of the table code in the .wasm).
    calls: HashMap<u32, Call>,
    /// Shadow copies: queued by the HTTP contexts, sent by the timer.
    outbox: Rc<Outbox>,
    /// The timer runs every `MIRROR_TICK` with a mirror; the rest of its work keeps its
    /// own period.
    work_period_ms: u64,
    next_work: u64,
    next_probe: Vec<u64>,
    /// Per cluster: a probe is in flight.
    probing: Vec<bool>,
    /// Per cluster, the counts one flush adds to its shared window (all zero between
    /// flushes), and the clusters that have some.
    window_sums: Vec<Counts>,
    touched: Vec<usize>,
    /// What the view was last built from, to rebuild it only on change.
    seen: Seen,
}

/// What a `dispatch_http_call` or `dispatch_grpc_call` token stands for (Envoy draws
/// the two kinds of tokens from disjoint sets).
enum Call {
    /// A health probe of the cluster with this index.
    Probe(usize),
    /// A shadow copy for this service, holding its place in the outbox until answered.
    Shadow(usize, Ticket),
}

fn seed() -> u64 {
    // No entropy from the host: the clock still differs per VM and start.
    getrandom::u64().unwrap_or_else(|_| now_ms() ^ 0x5eed_5eed_5eed_5eed)
}

fn key(kind: &str, name: &str) -> String {
    format!("{PREFIX}{kind}/{name}")
}

impl CanaryRoot {
    fn new() -> Self {
        let router = Rc::new(Router::default());
        CanaryRoot {
            view: Rc::new(View::configured(&router)),
            plan: Rc::new(Plan::new(&router)),
            router,
            counters: Rc::new(Counters::default()),
            rng: Rc::new(Cell::new(Rng::new(seed()))),
            me: seed() | 1,
            fingerprint: String::new(),
            loaded_at: 0,
            stats: Stats::default(),
            calls: HashMap::new(),
            outbox: Rc::new(Outbox::default()),
            work_period_ms: 0,
            next_work: 0,
            next_probe: Vec::new(),
            probing: Vec::new(),
            window_sums: Vec::new(),
            touched: Vec::new(),
            seen: Seen::default(),
        }
    }

    /// Rollback and fail-open state belong to one configuration (error windows,
    /// readiness and ejections belong to the clusters, and outlive reloads).
    fn scoped(&self, kind: &str, name: &str) -> String {
        key(kind, &format!("{}/{name}", self.fingerprint))
    }

    fn rollback_key(&self, service: &str) -> String {
        self.scoped("rollback", service)
    }

    /// Merges this VM's response counts into the shared windows and Envoy stats.
    fn flush(&mut self, now: u64) {
        let router = Rc::clone(&self.router);
        for (slot, delta) in self.counters.drain() {
            let Some((si, ri)) = self.plan.owner_of_slot(slot) else {
                continue;
            };
            if router.metrics() {
                if let Some((svc, rev)) = router
                    .services
                    .get(si)
                    .and_then(|s| Some((&*s.name, s.revisions.get(ri)?.name())))
                {
                    self.stats
                        .add(revision_stat(svc, rev, "requests"), delta.routed);
                    for (class, n) in CLASSES.iter().zip(delta.classes) {
                        self.stats
                            .add(revision_stat(svc, rev, &format!("responses_{class}")), n);
                    }
                    for (outcome, n) in GRPC_OUTCOMES.iter().zip(delta.grpc) {
                        self.stats.add(revision_stat(svc, rev, outcome), n);
                    }
                }
            }
            // A zero delta would add nothing to the window's sums.
            if self.plan.windowed(slot) && delta.counts().total > 0 {
                let sum = self.plan.cluster_of_slot(slot).and_then(|cluster| {
                    let sum = self.window_sums.get_mut(cluster)?;
                    if *sum == Counts::default() {
                        self.touched.push(cluster);
                    }
                    Some(sum)
                });
                if let Some(sum) = sum {
                    sum.total += delta.counts().total;
                    sum.errors += delta.counts().errors;
                }
            }
        }
        for cluster in self.touched.drain(..) {
            let Some(sum) = self.window_sums.get_mut(cluster) else {
                continue;
            };
            let counts = std::mem::take(sum);
            if let Some(c) = self.plan.clusters.get(cluster) {
                shared::update(&key("window", &c.name), |old| {
                    let mut w = Window::decode(old.unwrap_or_default());
                    w.add(now, counts);
                    Some(w.encode())
                });
            }
        }
    }

    /// Passive ejection and automatic rollback, decided from the shared windows.
    fn evaluate(&mut self, now: u64) {
        let router = Rc::clone(&self.router);
        for (si, service) in router.services.iter().enumerate() {
            if let Some(outlier) = service.outlier() {
                let id_of = |r: usize| {
                    service
                        .revisions
                        .get(r)
                        .map(|rev| cluster_id(rev.cluster()))
                };
                let split: Vec<u64> = service
                    .split
                    .shares()
                    .filter_map(|(r, _)| id_of(r))
                    .collect();
                // Readiness by cluster id, as this VM's view has it.
                let not_ready: Vec<u64> = self.view.service(si).map_or(Vec::new(), |s| {
                    (0..service.revisions.len())
                        .filter(|&r| {
                            s.unavailable(r) == Some(crate::health::view::Unavailable::NotReady)
                        })
                        .filter_map(id_of)
                        .collect()
                });
                let ready = |c: u64| !not_ready.contains(&c);
                for revision in &service.revisions {
                    let window_key = key("window", revision.cluster());
                    let window = Window::decode(&shared::get(&window_key).unwrap_or_default());
                    let counts = window.sum(now, outlier.rate.window_ms);
                    if !outlier.rate.trips(counts) {
                        continue;
                    }
                    let until = now + outlier.ejection_ms;
                    let id = cluster_id(revision.cluster());
                    let ejected = shared::update(&key("eject", &service.name), |old| {
                        Ejections::decode(old.unwrap_or_default())
                            .eject(id, now, until, &split, ready)
                            .map(|e| e.encode())
                    });
                    if ejected {
                        warn!(
                            "service {:?}: revision {:?} ejected for {} ms: {} errors in {} responses ({:.1}%) over {} ms, above {:.1}%",
                            service.name, revision.name(), outlier.ejection_ms, counts.errors, counts.total,
                            100.0 * counts.rate(), outlier.rate.window_ms, 100.0 * outlier.rate.max_error_rate
                        );
                        self.stats.add(
                            revision_stat(&service.name, revision.name(), "ejections"),
                            1,
                        );
                        // It comes back with a clean window, not with the errors that ejected it.
                        shared::update(&window_key, |_| Some(Vec::new()));
                    }
                }
            }
            let (Some(policy), Some(canary)) = (service.auto_rollback(), service.canary) else {
                continue;
            };
            if !service.canary_active(now) {
                continue;
            }
            let Some(revision) = service.revisions.get(canary.ready) else {
                continue;
            };
            let rollback_key = self.rollback_key(&service.name);
            if shared::get(&rollback_key).is_some_and(|v| v != NOT_ROLLED_BACK) {
                continue;
            }
            let window = Window::decode(
                &shared::get(&key("window", revision.cluster())).unwrap_or_default(),
            );
            let counts = window.sum_since(now, policy.window_ms, self.loaded_at);
            if !policy.trips(counts) {
                continue;
            }
            let won = shared::update(&rollback_key, |old| {
                (old == Some(NOT_ROLLED_BACK))
                    .then(|| encode_pair(counts.errors, counts.total).to_vec())
            });
            if won {
                let stable = service
                    .revisions
                    .get(canary.rolled)
                    .map_or("?", |r| r.name());
                warn!(
                    "service {:?}: canary {:?} rolled back, 100% to {:?}: {} errors in {} responses ({:.1}%) over {} ms, above {:.1}% (until the configuration changes)",
                    service.name, revision.name(), stable, counts.errors, counts.total, 100.0 * counts.rate(),
                    policy.window_ms, 100.0 * policy.max_error_rate
                );
                self.stats.add(service_stat(&service.name, "rollbacks"), 1);
            }
        }
    }

    /// One prober per process: the root context holding the lease probes every due
    /// cluster; the others read the results from shared data.
    fn probe(&mut self, now: u64) {
        if !self.plan.clusters.iter().any(|c| c.probe.is_some()) {
            return;
        }
        let lease_key = key("prober", "lease");
        let me = self.me;
        let mine = shared::update(&lease_key, |old| {
            may_take_lease(old.and_then(decode_pair), me, now)
                .then(|| encode_pair(me, now + LEASE_MS).to_vec())
        });
        if !mine {
            return;
        }
        let plan = Rc::clone(&self.plan);
        for (ci, cluster) in plan.clusters.iter().enumerate() {
            let Some(probe) = cluster.probe.as_deref() else {
                continue;
            };
            let check = &probe.check;
            let due = self.next_probe.get(ci).copied().unwrap_or(0);
            // One probe per cluster in flight (a flag, not a scan of the calls: with
            // thousands of probed clusters that scan is quadratic per tick).
            if now < due || self.probing.get(ci).copied().unwrap_or(false) {
                continue;
            }
            if let Some(next) = self.next_probe.get_mut(ci) {
                *next = now + check.interval_ms;
            }
            let timeout = Duration::from_millis(check.timeout_ms);
            let sent = match &check.probe {
                ProbeKind::Http { path } => {
                    let headers = vec![
                        (":method", "GET"),
                        (":path", &**path),
                        (":authority", &*probe.authority),
                        ("user-agent", "canary-router-probe"),
                    ];
                    self.dispatch_http_call(&cluster.name, headers, None, vec![], timeout)
                }
                // Answered in on_grpc_call_response.
                ProbeKind::Grpc(g) => {
                    grpc::dispatch_probe(probe.grpc_target.as_deref(), g, timeout)
                }
            };
            match sent {
                Ok(token) => {
                    self.calls.insert(token, Call::Probe(ci));
                    if let Some(flag) = self.probing.get_mut(ci) {
                        *flag = true;
                    }
                }
                Err(_) => self.record_probe(ci, false),
            }
        }
    }

    fn record_probe(&mut self, cluster: usize, ok: bool) {
        let Some((c, check)) = self
            .plan
            .clusters
            .get(cluster)
            .and_then(|c| Some((c, &c.probe.as_deref()?.check)))
        else {
            return;
        };
        let probe_key = key("probe", &c.name);
        let before = shared::get(&probe_key)
            .and_then(|v| Probe::decode(&v))
            .unwrap_or_default();
        shared::update(&probe_key, |old| {
            let p = old.and_then(Probe::decode).unwrap_or_default();
            Some(p.record(ok, check).encode().to_vec())
        });
        let after = before.record(ok, check);
        if after.ready != before.ready {
            let state = if after.ready {
                "ready again"
            } else {
                "not ready"
            };
            info!(
                "cluster {:?} is {state} ({} on {})",
                c.name,
                if ok { "success" } else { "failure" },
                check.probe.describe()
            );
        }
    }

    /// Rebuilds the view from shared state when that state changed.
    fn refresh(&mut self, now: u64) {
        let ready: Vec<bool> = self
            .plan
            .clusters
            .iter()
            .map(|c| {
                c.probe.is_none()
                    || shared::get(&key("probe", &c.name))
                        .and_then(|v| Probe::decode(&v))
                        .unwrap_or_default()
                        .ready
            })
            .collect();
        let ejected: Vec<Vec<bool>> = self
            .router
            .services
            .iter()
            .map(|s| {
                if s.outlier().is_none() {
                    return Vec::new();
                }
                let set =
                    Ejections::decode(&shared::get(&key("eject", &s.name)).unwrap_or_default());
                s.revisions
                    .iter()
                    .map(|r| set.is_ejected(cluster_id(r.cluster()), now))
                    .collect()
            })
            .collect();
        let rolled: Vec<bool> = self
            .router
            .services
            .iter()
            .map(|s| {
                s.auto_rollback().is_some()
                    && s.canary.is_some()
                    && shared::get(&self.rollback_key(&s.name))
                        .is_some_and(|v| v != NOT_ROLLED_BACK)
            })
            .collect();
        let steps: Vec<Option<u32>> = self
            .router
            .services
            .iter()
            .map(|s| s.step_percent(now))
            .collect();
        let seen = (ready, ejected, rolled, steps);
        if seen == self.seen {
            return;
        }
        let plan = Rc::clone(&self.plan);
        let (ready, ejected, rolled, _) = &seen;
        let state_of = |si: usize, ri: usize, _: &str| ClusterState {
            ready: plan
                .slot(si, ri)
                .and_then(|s| plan.cluster_of_slot(s))
                .and_then(|i| ready.get(i).copied())
                .unwrap_or(true),
            ejected: ejected
                .get(si)
                .and_then(|e| e.get(ri))
                .copied()
                .unwrap_or(false),
        };
        let view = View::build(&self.router, now, state_of, |si| {
            rolled.get(si).copied().unwrap_or(false)
        });
        for (si, (old, new)) in self.view.services.iter().zip(&view.services).enumerate() {
            let Some(s) = self.router.services.get(si) else {
                continue;
            };
            if new.fail_open != old.fail_open {
                // Once per process: the VM that flips the shared flag logs.
                let flag = [u8::from(new.fail_open)];
                let flipped = shared::update(&self.scoped("failopen", &s.name), |v| {
                    (v.unwrap_or(&[0]) != flag).then(|| flag.to_vec())
                });
                if flipped && new.fail_open {
                    warn!("service {:?}: no revision of its split is available; routing by the configured split (fail open)", s.name);
                } else if flipped {
                    info!(
                        "service {:?}: revisions available again; fail open ended",
                        s.name
                    );
                }
            }
        }
        self.view = Rc::new(view);
        self.seen = seen;
        self.record_gauges();
    }

    /// Sends the shadow copies the HTTP contexts queued since the last tick.
    fn send_shadows(&mut self) {
        let router = Rc::clone(&self.router);
        for shadow in self.outbox.take_queued() {
            let (Some((mirror, revision)), Some(service)) = (
                router.mirror(shadow.service),
                router.services().get(shadow.service),
            ) else {
                continue;
            };
            let headers: Vec<(&str, &str)> = shadow
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let body = (!shadow.body.is_empty()).then_some(shadow.body.as_slice());
            let timeout = Duration::from_millis(mirror.timeout_ms);
            let sent =
                hostcalls::dispatch_http_call(revision.cluster(), headers, body, vec![], timeout);
            let metric = match sent {
                Ok(token) => {
                    self.calls
                        .insert(token, Call::Shadow(shadow.service, shadow.ticket));
                    "mirror_requests"
                }
                Err(_) => "mirror_failures",
            };
            self.stats
                .add(revision_stat(&service.name, revision.name(), metric), 1);
        }
        // Mirror counters do not depend on `metrics`: they cost the request path nothing.
        for (si, reason, n) in self.outbox.take_skips() {
            if let Some(stat) = mirror_stat(&router, si, reason.metric()) {
                self.stats.add(stat, n);
            }
        }
    }

    /// Counts the answer to a shadow copy (none: timeout, reset or connect failure): by
    /// its HTTP class, and a gRPC copy answered 200 by its status too, as the metrics of
    /// the request path count calls.
    fn shadow_answered(&mut self, service: usize, num_headers: usize, num_trailers: usize) {
        let status = (num_headers > 0)
            .then(|| header(MapType::HttpCallResponseHeaders, ":status"))
            .flatten()
            .and_then(|s| s.parse::<u64>().ok());
        let metric = match status.map(|s| s / 100) {
            Some(2) => "mirror_responses_2xx",
            Some(3) => "mirror_responses_3xx",
            Some(4) => "mirror_responses_4xx",
            Some(5) => "mirror_responses_5xx",
            _ => "mirror_failures",
        };
        if let Some(stat) = mirror_stat(&self.router, service, metric) {
            self.stats.add(stat, 1);
        }
        let outcome = (status == Some(200))
            .then(|| grpc::call_status(num_trailers))
            .flatten()
            .map(|code| self.router.grpc_error_codes().outcome(code));
        let metric = match outcome {
            Some(GrpcOutcome::Ok) => "mirror_grpc_ok",
            Some(GrpcOutcome::Failed) => "mirror_grpc_errors",
            Some(GrpcOutcome::Other) | None => return,
        };
        if let Some(stat) = mirror_stat(&self.router, service, metric) {
            self.stats.add(stat, 1);
        }
    }

    /// Readiness, ejection, effective share and rollback, for services with policies.
    fn record_gauges(&mut self) {
        let router = Rc::clone(&self.router);
        let view = Rc::clone(&self.view);
        for (service, state) in router.services.iter().zip(&view.services) {
            if !service.policed() {
                continue;
            }
            for (ri, revision) in service.revisions.iter().enumerate() {
                let unavailable = state.unavailable(ri);
                let share = state
                    .split
                    .shares()
                    .find(|&(r, _)| r == ri)
                    .map_or(0, |(_, w)| w);
                let stat = |m: &str| revision_stat(&service.name, revision.name(), m);
                self.stats.set(
                    stat("ready"),
                    u64::from(unavailable != Some(crate::health::view::Unavailable::NotReady)),
                );
                self.stats.set(
                    stat("ejected"),
                    u64::from(unavailable == Some(crate::health::view::Unavailable::Ejected)),
                );
                self.stats
                    .set(stat("effective_percent"), u64::from((share + 50) / 100));
            }
            self.stats.set(
                service_stat(&service.name, "rolled_back"),
                u64::from(state.rolled_back),
            );
        }
    }
}

impl Context for CanaryRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        _body_size: usize,
        num_trailers: usize,
    ) {
        let cluster = match self.calls.remove(&token_id) {
            Some(Call::Probe(cluster)) => {
                if let Some(flag) = self.probing.get_mut(cluster) {
                    *flag = false;
                }
                cluster
            }
            Some(Call::Shadow(service, _ticket)) => {
                self.shadow_answered(service, num_headers, num_trailers);
                return;
            }
            None => return,
        };
        // No headers: timeout, reset or connect failure.
        let ok = num_headers > 0
            && header(MapType::HttpCallResponseHeaders, ":status").as_deref() == Some("200");
        self.record_probe(cluster, ok);
    }

    // The answer to a gRPC probe (status 0: an answer in the receive buffer; else the
    // call failed with that status: refused, timed out, unimplemented...).
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(Call::Probe(cluster)) = self.calls.remove(&token_id) else {
            return;
        };
        if let Some(flag) = self.probing.get_mut(cluster) {
            *flag = false;
        }
        let method =
            self.plan
                .clusters
                .get(cluster)
                .and_then(|c| match &c.probe.as_deref()?.check.probe {
                    ProbeKind::Grpc(g) => Some(g.method),
                    ProbeKind::Http { .. } => None,
                });
        let ok = method.is_some_and(|m| grpc::probe_ready(m, status_code, response_size));
        self.record_probe(cluster, ok);
    }
}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Seeded here too: a reconfiguration (ECDS) gets a new root context in the
        // running VM.
        self.rng.set(Rng::new(seed()));
        let started = now_us();
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let mut router = match config::parse(&bytes) {
            Ok(router) => router,
            Err(e) => {
                error!("configuration rejected: {e}");
                return false;
            }
        };
        router.render_model_list(now_ms() / 1000);
        let plan = Plan::new(&router);
        self.fingerprint = format!("{:016x}", fingerprint(&bytes));
        self.loaded_at = now_ms();
        // Flags that exactly one VM may flip, created before any VM races to flip them.
        for service in &router.services {
            if service.auto_rollback().is_some() {
                shared::ensure(&self.rollback_key(&service.name), NOT_ROLLED_BACK);
            }
            if service.health_check().is_some() || service.outlier().is_some() {
                shared::ensure(&self.scoped("failopen", &service.name), &[0]);
            }
        }
        // Counts and health bookkeeping only where something reads them: with neither
        // metrics nor a policy, 10,000 services would zero a megabyte for nothing.
        let counted = if router.metrics() || plan.active {
            plan.slot_count()
        } else {
            0
        };
        let watched = if plan.active { plan.clusters.len() } else { 0 };
        self.counters = Rc::new(Counters::new(counted));
        self.next_probe = vec![0; watched];
        self.probing = vec![false; watched];
        self.window_sums = vec![Counts::default(); watched];
        self.touched.clear();
        self.view = Rc::new(View::configured(&router));
        self.seen = Seen::default();
        let work = if plan.active {
            Some(TICK)
        } else if router.metrics() {
            Some(METRICS_TICK)
        } else {
            None
        };
        let mirrors = router.services.iter().any(|s| s.mirror().is_some());
        self.work_period_ms = work.map_or(0, |p| p.as_millis() as u64);
        self.next_work = 0;
        // A new configuration starts with its own outbox: copies of the old one are
        // sent by the root context that took them, or dropped with it.
        self.outbox = Rc::new(Outbox::default());
        let tick = if mirrors { Some(MIRROR_TICK) } else { work };
        if let Some(period) = tick {
            let _ = hostcalls::set_tick_period(period);
        }
        self.plan = Rc::new(plan);
        self.router = Rc::new(router);
        if self.plan.active {
            self.refresh(now_ms());
        }
        // The time and the VM's memory (wasm memory only grows: this is the high-water
        // mark) are part of the line so that operators and the benchmark can read them.
        let elapsed = now_us().saturating_sub(started);
        let memory_kib = core::arch::wasm32::memory_size::<0>() * 64;
        info!(
            "configuration loaded in {}.{:03} ms, VM memory {memory_kib} KiB: {}",
            elapsed / 1000,
            elapsed % 1000,
            self.router.summary()
        );
        true
    }

    fn on_tick(&mut self) {
        self.send_shadows();
        let now = now_ms();
        if self.work_period_ms == 0 || now < self.next_work {
            return;
        }
        self.next_work = now + self.work_period_ms;
        self.flush(now);
        if self.plan.active {
            self.evaluate(now);
            self.probe(now);
            self.refresh(now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryHttp {
            router: Rc::clone(&self.router),
            plan: Rc::clone(&self.plan),
            view: Rc::clone(&self.view),
            counters: Rc::clone(&self.counters),
            rng: Rc::clone(&self.rng),
            outbox: Rc::clone(&self.outbox),
            choice: None,
            slot: None,
            trailers_slot: None,
            capture: None,
            llm: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct CanaryHttp {
    router: Rc<Router>,
    plan: Rc<Plan>,
    view: Rc<View>,
    counters: Rc<Counters>,
    rng: Rc<Cell<Rng>>,
    /// Set when this filter routed the request; names the revision on the response.
    choice: Option<Choice>,
    /// Counters of the routed revision, when its responses are counted.
    slot: Option<usize>,
    /// Set while a counted 200 may still end with `grpc-status` in its trailers.
    trailers_slot: Option<usize>,
    outbox: Rc<Outbox>,
    /// A shadow copy being taken while the request body passes.
    capture: Option<Capture>,
    /// An OpenAI request routed by its body's model, until its body is checked.
    llm: Option<Llm>,
}

impl CanaryHttp {
    /// Takes a shadow copy of this request if the service mirrors and the draw says so.
    /// Host calls: one for all headers; then one per body chunk.
    fn start_mirror(
        &mut self,
        router: &Router,
        choice: Choice,
        client_authority: Option<&str>,
        end_of_stream: bool,
    ) {
        let Some((mirror, revision)) = router.mirror(choice.service) else {
            return;
        };
        // A copy to the revision that serves the request tells nothing new.
        if mirror.revision == choice.revision {
            return;
        }
        let mut rng = self.rng.get();
        let sampled = mirror.samples(rng.below(crate::route::split::BUCKETS));
        self.rng.set(rng);
        if !sampled {
            return;
        }
        let unavailable = self
            .view
            .service(choice.service)
            .and_then(|s| s.unavailable(mirror.revision))
            .is_some();
        if unavailable {
            self.outbox.skipped(choice.service, Skip::Unavailable);
            return;
        }
        let Ok(headers) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
            return;
        };
        let content_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| std::str::from_utf8(v).ok());
        if mirror::declared_too_large(content_length, mirror.max_body) {
            self.outbox.skipped(choice.service, Skip::TooLarge);
            return;
        }
        let own = [
            router.cluster_header(),
            router.tag_header(),
            router.revision_header(),
        ];
        let headers = mirror::copy_headers(
            headers,
            &own,
            // Read after the primary's own rewrite: the copy gets the client's authority
            // unless the mirror revision has a host of its own.
            revision.host.as_deref().or(client_authority),
            router
                .upstream_revision_header()
                .then_some((router.revision_header(), revision.name())),
        );
        match self.outbox.start(choice.service, headers, mirror.max_body) {
            Ok(capture) if end_of_stream => capture.finish(&self.outbox),
            Ok(capture) => self.capture = Some(capture),
            Err(reason) => self.outbox.skipped(choice.service, reason),
        }
    }

    /// After an OpenAI body callback: once the body is through, the request is a plain
    /// one; if the filter answered it, the revision neither served it nor is named.
    fn llm_done(&mut self, done: Result<Action, ()>, end_of_stream: bool) -> Action {
        match done {
            Ok(action) => {
                if end_of_stream {
                    self.llm = None;
                }
                action
            }
            Err(()) => {
                self.llm = None;
                self.choice = None;
                self.slot = None;
                Action::Pause
            }
        }
    }

    /// The request ended (body or trailers): the copy is complete.
    fn finish_mirror(&mut self) {
        if let Some(capture) = self.capture.take() {
            capture.finish(&self.outbox);
        }
    }
}

impl Context for CanaryHttp {}

impl HttpContext for CanaryHttp {
    // Host calls: unknown host 2 (read authority, remove the cluster header); routed
    // request 2 plus one per header rule read, one for an authority rewrite and one for
    // the optional upstream revision header; +1 (`:path`) with `statusPath` or `models`.
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let router = Rc::clone(&self.router);
        // `:path`: on every request with a status view; otherwise only for a host no
        // service has, when model paths could route it.
        let status_path = router.status_path();
        let mut path = status_path.and_then(|_| header(MapType::HttpRequestHeaders, ":path"));
        if status_path.is_some() && path.as_deref().and_then(|p| p.split('?').next()) == status_path
        {
            let body = status::render(&router, &self.view);
            self.send_http_response(
                200,
                vec![
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ],
                Some(body.as_bytes()),
            );
            return Action::Pause;
        }
        let authority = header(MapType::HttpRequestHeaders, ":authority");
        let mut route = authority.as_deref().and_then(|a| router.lookup(a));
        if route.is_none() && router.routes_by_model() {
            if path.is_none() {
                path = header(MapType::HttpRequestHeaders, ":path");
            }
            route = path.as_deref().and_then(|p| router.lookup_model(p));
        }
        // OpenAI paths: the body's model (from Envoy's metadata) picks the service.
        let mut pending = None;
        if let Some(o) = router.openai() {
            match openai::start(&router, o, route, &mut path) {
                openai::Start::Other => {}
                openai::Start::Answered => return Action::Pause,
                openai::Start::Body(r, p) => (route, pending) = (Some(r), Some(p)),
            }
        }
        // A tag header the decision read and found absent needs no stripping.
        let mut tag_absent = false;
        let outcome = route.and_then(|route| {
            let mut rng = self.rng.get();
            let outcome = router.decide_with(
                route,
                |name| {
                    let value = header(MapType::HttpRequestHeaders, name);
                    tag_absent |= value.is_none() && name == router.tag_header();
                    value
                },
                |field| match (&pending, router.openai()) {
                    (Some(_), Some(o)) => openai::body_field(o, field),
                    _ => None,
                },
                &mut rng,
                &self.view,
            );
            self.rng.set(rng);
            outcome
        });
        if router.tag_routing()
            && !tag_absent
            && !matches!(outcome, Some(Outcome::Unavailable { .. }))
        {
            // The tag header only ever speaks to this filter.
            self.set_http_request_header(router.tag_header(), None);
        }
        match outcome {
            None => {
                // Whatever the host, a client never picks the upstream cluster.
                self.set_http_request_header(router.cluster_header(), None);
            }
            Some(Outcome::Unavailable {
                choice,
                revision,
                reason,
            }) => {
                let service = router
                    .services()
                    .get(choice.service)
                    .map_or("", |s| s.name());
                if pending.is_some() {
                    let e = crate::route::openai::ApiError::unavailable(
                        revision,
                        service,
                        reason.as_str(),
                    );
                    openai::answer(&e, Some((router.revision_header(), revision)));
                    return Action::Pause;
                }
                let message = format!(
                    "revision {revision} of service {service} is {}\n",
                    reason.as_str()
                );
                // +1 host call on this path: is it a gRPC call?
                grpc::unavailable_reply(router.revision_header(), revision, &message);
                return Action::Pause;
            }
            Some(Outcome::Routed(d)) => {
                // Setting replaces every copy a client sent, and (ABI 0.2.1) makes Envoy
                // re-select the route, so the `cluster_header` route sees this value.
                self.set_http_request_header(router.cluster_header(), Some(d.cluster));
                if let Some(authority) = d.authority {
                    self.set_http_request_header(":authority", Some(authority));
                }
                if router.upstream_revision_header() {
                    self.set_http_request_header(router.revision_header(), Some(d.revision));
                }
                if d.by_split {
                    self.start_mirror(&router, d.choice, authority.as_deref(), end_of_stream);
                }
                self.llm = pending.map(|p| Llm::routed(&router, p, d.choice));
                self.choice = Some(d.choice);
                let slot = self.plan.slot(d.choice.service, d.choice.revision);
                if let Some(slot) = slot {
                    self.counters.routed(slot);
                }
                self.slot = slot.filter(|&s| router.metrics() || self.plan.windowed(s));
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(llm) = self.llm.as_mut() {
            let router = Rc::clone(&self.router);
            let done = llm.on_body(
                &router,
                body_size,
                end_of_stream,
                &mut self.capture,
                &self.outbox,
            );
            return self.llm_done(done, end_of_stream);
        }
        let Some(capture) = self.capture.as_mut() else {
            return Action::Continue;
        };
        // Each call sees only the chunk that just arrived: the filter never buffers.
        let chunk = if body_size == 0 {
            Ok(Vec::new())
        } else {
            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .map(Option::unwrap_or_default)
        };
        let pushed = match chunk {
            Ok(bytes) => capture.push(&bytes),
            Err(_) => Err(Skip::TooLarge),
        };
        if let Err(reason) = pushed {
            let service = capture.service;
            self.capture = None;
            self.outbox.skipped(service, reason);
        } else if end_of_stream {
            self.finish_mirror();
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(llm) = self.llm.as_ref() {
            let router = Rc::clone(&self.router);
            let done = llm.on_trailers(&router, &mut self.capture, &self.outbox);
            return self.llm_done(done, true);
        }
        self.finish_mirror();
        Action::Continue
    }

    // Host calls: 1 to name the revision; for a counted response +1 (`:status`), and
    // +1 (`grpc-status`) for a 200 that ends here (a trailers-only gRPC answer).
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(name) = self.choice.and_then(|c| self.router.revision_name(c)) {
            self.set_http_response_header(self.router.revision_header(), Some(name));
        }
        if let Some(slot) = self.slot.take() {
            let status = header(MapType::HttpResponseHeaders, ":status")
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            self.counters.response(slot, status);
            match status_at(status, end_of_stream) {
                StatusAt::Headers => {
                    if let Some(code) = grpc::status_in(MapType::HttpResponseHeaders) {
                        let outcome = self.router.grpc_error_codes().outcome(code);
                        self.counters.grpc(slot, outcome);
                    }
                }
                StatusAt::Trailers => self.trailers_slot = Some(slot),
                StatusAt::Nowhere => {}
            }
        }
        Action::Continue
    }

    // Envoy calls this for every response with trailers (every gRPC answer but the
    // trailers-only ones), counted or not: one VM call. Host calls: 1 (`grpc-status`)
    // for a counted response, none otherwise.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(slot) = self.trailers_slot.take() {
            if let Some(code) = grpc::status_in(MapType::HttpResponseTrailers) {
                let outcome = self.router.grpc_error_codes().outcome(code);
                self.counters.grpc(slot, outcome);
            }
        }
        Action::Continue
    }
}
