//! Revision health, as pure state machines and the byte encodings they take in proxy-wasm
//! shared data (process-wide, shared by every worker). Time is passed in, in
//! milliseconds of wall-clock time, so everything here is tested on the host.

pub mod grpc_probe;
pub mod plan;
pub mod status;
pub mod view;

/// Error windows count in buckets of this width.
pub const BUCKET_MS: u64 = 1000;
/// Longest window a policy may ask for, in buckets.
pub const MAX_WINDOW_BUCKETS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: ProbeKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

/// What a readiness probe asks (`healthCheck.protocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// `GET <path>`: ready on 200.
    Http { path: Box<str> },
    /// A gRPC method: ready when its answer says so.
    Grpc(grpc_probe::GrpcProbe),
}

impl ProbeKind {
    /// What a log line names the probe by: the path, or the gRPC method.
    pub fn describe(&self) -> &str {
        match self {
            ProbeKind::Http { path } => path,
            ProbeKind::Grpc(g) => g.method.full_name(),
        }
    }
}

/// A rate policy over a sliding window: passive ejection and automatic rollback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    pub max_error_rate: f64,
    pub min_requests: u64,
    pub window_ms: u64,
}

impl RatePolicy {
    /// True when the window has enough requests and its error rate passes the limit.
    pub fn trips(&self, counts: Counts) -> bool {
        counts.total >= self.min_requests
            && counts.total > 0
            && counts.errors as f64 > self.max_error_rate * counts.total as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlier {
    pub rate: RatePolicy,
    pub ejection_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub errors: u64,
}

impl Counts {
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }
}

/// Probe-driven readiness of one cluster. Ready until probes say otherwise, so a fresh
/// gateway serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub ready: bool,
    pub successes: u32,
    pub failures: u32,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            ready: true,
            successes: 0,
            failures: 0,
        }
    }
}

impl Probe {
    /// The state after one probe result.
    pub fn record(self, ok: bool, check: &HealthCheck) -> Probe {
        let (successes, failures) = if ok {
            (self.successes.saturating_add(1), 0)
        } else {
            (0, self.failures.saturating_add(1))
        };
        let ready = if self.ready {
            failures < check.unhealthy_threshold
        } else {
            successes >= check.healthy_threshold
        };
        Probe {
            ready,
            successes,
            failures,
        }
    }

    pub fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        let (ready, rest) = out.split_at_mut(1);
        let (s, f) = rest.split_at_mut(4);
        ready.copy_from_slice(&[u8::from(self.ready)]);
        s.copy_from_slice(&self.successes.to_le_bytes());
        f.copy_from_slice(&self.failures.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Probe> {
        let (ready, rest) = bytes.split_first()?;
        Some(Probe {
            ready: *ready != 0,
            successes: u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?),
            failures: u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?),
        })
    }
}

/// Responses and errors of one cluster in one-second buckets, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    second: u64,
    total: u32,
    errors: u32,
}

const BUCKET_BYTES: usize = 16;

impl Window {
    /// Adds counts at `now_ms`, dropping buckets older than the longest window.
    pub fn add(&mut self, now_ms: u64, counts: Counts) {
        let second = now_ms / BUCKET_MS;
        self.buckets
            .retain(|b| b.second + MAX_WINDOW_BUCKETS > second && b.second <= second);
        let total = u32::try_from(counts.total).unwrap_or(u32::MAX);
        let errors = u32::try_from(counts.errors).unwrap_or(u32::MAX);
        match self.buckets.iter_mut().find(|b| b.second == second) {
            Some(b) => {
                b.total = b.total.saturating_add(total);
                b.errors = b.errors.saturating_add(errors);
            }
            None => self.buckets.push(Bucket {
                second,
                total,
                errors,
            }),
        }
    }

    /// Counts over the last `window_ms` (whole buckets, the current one included).
    pub fn sum(&self, now_ms: u64, window_ms: u64) -> Counts {
        self.sum_since(now_ms, window_ms, 0)
    }

    /// As `sum`, without buckets older than `since_ms` (a configuration judges its
    /// canary on the responses since it was loaded).
    pub fn sum_since(&self, now_ms: u64, window_ms: u64, since_ms: u64) -> Counts {
        let now = now_ms / BUCKET_MS;
        let since = since_ms / BUCKET_MS;
        let span = window_ms.div_ceil(BUCKET_MS).max(1);
        self.buckets
            .iter()
            .filter(|b| b.second <= now && b.second + span > now && b.second >= since)
            .fold(Counts::default(), |c, b| Counts {
                total: c.total + u64::from(b.total),
                errors: c.errors + u64::from(b.errors),
            })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buckets.len() * BUCKET_BYTES);
        for b in &self.buckets {
            out.extend_from_slice(&b.second.to_le_bytes());
            out.extend_from_slice(&b.total.to_le_bytes());
            out.extend_from_slice(&b.errors.to_le_bytes());
        }
        out
    }

    /// A window from shared data; anything malformed reads as empty.
    pub fn decode(bytes: &[u8]) -> Window {
        let buckets = bytes
            .chunks_exact(BUCKET_BYTES)
            .filter_map(|c| {
                Some(Bucket {
                    second: u64::from_le_bytes(c.get(0..8)?.try_into().ok()?),
                    total: u32::from_le_bytes(c.get(8..12)?.try_into().ok()?),
                    errors: u32::from_le_bytes(c.get(12..16)?.try_into().ok()?),
                })
            })
            .collect();
        Window { buckets }
    }
}

/// The ejected clusters of one service (by `cluster_id`) with their deadlines, kept in
/// one shared-data value so that "never eject the last available revision" is decided
/// in the same compare-and-swap that ejects. Keyed by cluster, not by revision index, so
/// that ejections outlive configuration reloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ejections(Vec<(u64, u64)>);

impl Ejections {
    pub fn decode(bytes: &[u8]) -> Ejections {
        Ejections(bytes.chunks_exact(16).filter_map(decode_pair).collect())
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|&(r, u)| encode_pair(r, u))
            .collect()
    }

    pub fn is_ejected(&self, cluster: u64, now_ms: u64) -> bool {
        self.0
            .iter()
            .any(|&(c, until)| c == cluster && until > now_ms)
    }

    /// The set with `cluster` ejected until `until`, or `None` when it is already
    /// ejected or when no other cluster of the split (`split`: ids of the clusters with a
    /// share) would stay available (`ready` and not ejected).
    pub fn eject(
        &self,
        cluster: u64,
        now_ms: u64,
        until: u64,
        split: &[u64],
        ready: impl Fn(u64) -> bool,
    ) -> Option<Ejections> {
        if self.is_ejected(cluster, now_ms) {
            return None;
        }
        let another = split
            .iter()
            .any(|&c| c != cluster && ready(c) && !self.is_ejected(c, now_ms));
        if !another {
            return None;
        }
        let mut next: Vec<(u64, u64)> = self
            .0
            .iter()
            .copied()
            .filter(|&(_, u)| u > now_ms)
            .collect();
        next.push((cluster, until));
        Some(Ejections(next))
    }
}

/// FNV-1a: the same bytes give the same value in every worker, process and restart.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable 64-bit fingerprint of a whole configuration (megabytes for 10,000 services):
/// eight bytes per step instead of FNV's one, then a SplitMix64 finaliser. Stable like
/// `fnv1a`; not for hash tables an attacker fills.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    // In blocks, each a call of its own: V8 runs a long loop in its baseline code to the
    // end of the call, and the optimised code from the next call on.
    let mut blocks = bytes.chunks_exact(4096);
    for block in &mut blocks {
        h = fingerprint_words(h, block);
    }
    let rest = blocks.remainder();
    h = fingerprint_words(h, rest);
    for &b in rest.get(rest.len() / 8 * 8..).unwrap_or_default() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `fingerprint`'s mixing of the whole words of `block`.
#[inline(never)]
fn fingerprint_words(mut h: u64, block: &[u8]) -> u64 {
    for chunk in block.chunks_exact(8) {
        let w = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h
}

/// A stable id for a cluster name.
pub fn cluster_id(name: &str) -> u64 {
    fnv1a(name.as_bytes())
}

/// A u64 pair in shared data: an ejection (until, count), a prober lease (owner, until)
/// or a rollback (errors, total).
pub fn encode_pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let (x, y) = out.split_at_mut(8);
    x.copy_from_slice(&a.to_le_bytes());
    y.copy_from_slice(&b.to_le_bytes());
    out
}

pub fn decode_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?),
        u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
    ))
}

/// Whether `me` may probe now: the lease is free, expired, or already `me`'s.
pub fn may_take_lease(current: Option<(u64, u64)>, me: u64, now_ms: u64) -> bool {
    match current {
        None => true,
        Some((owner, until)) => owner == me || until <= now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_tell_configs_apart() {
        assert_eq!(fingerprint(b"{}"), fingerprint(b"{}"));
        let base = br#"{"services": [{"name": "a", "canaryTrafficPercent": 10}]}"#.to_vec();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(fingerprint(&base)));
        // Every one-byte change, and every truncation, gives a new value.
        for i in 0..base.len() {
            let mut changed = base.clone();
            changed[i] ^= 1;
            assert!(seen.insert(fingerprint(&changed)), "byte {i}");
            assert!(seen.insert(fingerprint(&base[..i])), "prefix {i}");
        }
        // Past a 4 KiB block, in every lane: a changed byte, or two words trading places.
        let long: Vec<u8> = (0..9001u32).map(|i| (i * 7 % 251) as u8).collect();
        assert!(seen.insert(fingerprint(&long)));
        for i in [0, 8, 16, 24, 4095, 4096, 8999, 9000] {
            let mut changed = long.clone();
            changed[i] ^= 0x80;
            assert!(seen.insert(fingerprint(&changed)), "byte {i}");
        }
        for (a, b) in [(0, 8), (8, 16), (24, 32), (4088, 4096)] {
            let mut swapped = long.clone();
            for k in 0..8 {
                swapped.swap(a + k, b + k);
            }
            assert!(seen.insert(fingerprint(&swapped)), "words {a} and {b}");
        }
    }

    fn check(unhealthy: u32, healthy: u32) -> HealthCheck {
        HealthCheck {
            probe: ProbeKind::Http {
                path: "/v2/health/ready".into(),
            },
            interval_ms: 1000,
            timeout_ms: 500,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        }
    }

    #[test]
    fn probes_follow_thresholds() {
        let c = check(2, 3);
        let mut p = Probe::default();
        assert!(p.ready);
        p = p.record(false, &c);
        assert!(p.ready, "one failure is below the threshold");
        p = p.record(true, &c).record(false, &c);
        assert!(p.ready, "failures must be consecutive");
        p = p.record(false, &c);
        assert!(!p.ready);
        p = p.record(true, &c).record(true, &c);
        assert!(!p.ready);
        p = p.record(true, &c);
        assert!(p.ready);
        assert_eq!(Probe::decode(&p.encode()), Some(p));
        assert_eq!(Probe::decode(&[1, 2]), None);
    }

    #[test]
    fn windows_slide_and_round_trip() {
        let mut w = Window::default();
        w.add(
            10_000,
            Counts {
                total: 10,
                errors: 1,
            },
        );
        w.add(
            10_500,
            Counts {
                total: 10,
                errors: 9,
            },
        );
        w.add(
            12_100,
            Counts {
                total: 5,
                errors: 0,
            },
        );
        assert_eq!(
            w.sum(12_200, 1000),
            Counts {
                total: 5,
                errors: 0
            }
        );
        assert_eq!(
            w.sum(12_200, 3000),
            Counts {
                total: 25,
                errors: 10
            }
        );
        assert_eq!(
            w.sum(13_000, 3000),
            Counts {
                total: 5,
                errors: 0
            }
        );
        assert_eq!(
            w.sum(13_000, 4000),
            Counts {
                total: 25,
                errors: 10
            }
        );
        assert_eq!(
            w.sum(13_000, 2000),
            Counts {
                total: 5,
                errors: 0
            }
        );
        assert_eq!(Window::decode(&w.encode()), w);
        // Old buckets are dropped when new counts arrive.
        w.add(
            10_000 + MAX_WINDOW_BUCKETS * BUCKET_MS,
            Counts {
                total: 1,
                errors: 1,
            },
        );
        assert_eq!(
            w.sum(70_000, 60_000),
            Counts {
                total: 6,
                errors: 1
            }
        );
        assert_eq!(Window::decode(&[1, 2, 3]), Window::default());
    }

    #[test]
    fn rate_policy_needs_volume_and_rate() {
        let p = RatePolicy {
            max_error_rate: 0.05,
            min_requests: 20,
            window_ms: 10_000,
        };
        assert!(
            !p.trips(Counts {
                total: 19,
                errors: 19
            }),
            "below minRequests"
        );
        assert!(
            !p.trips(Counts {
                total: 100,
                errors: 5
            }),
            "at the limit is not past it"
        );
        assert!(p.trips(Counts {
            total: 100,
            errors: 6
        }));
        assert!(!p.trips(Counts::default()));
    }

    #[test]
    fn ejections_never_take_the_last_revision() {
        let none = Ejections::default();
        let split = [0, 1];
        assert_ne!(cluster_id("c1"), cluster_id("c2"));
        let one = none.eject(1, 0, 100, &split, |_| true).unwrap();
        assert!(one.is_ejected(1, 50) && !one.is_ejected(1, 100));
        assert_eq!(
            one.eject(1, 50, 200, &split, |_| true),
            None,
            "already ejected"
        );
        assert_eq!(
            one.eject(0, 50, 200, &split, |_| true),
            None,
            "0 is the last one left"
        );
        assert_eq!(
            none.eject(1, 0, 100, &split, |r| r != 0),
            None,
            "0 is not ready"
        );
        // Expired entries are dropped when the set changes.
        let later = one.eject(0, 150, 300, &split, |_| true).unwrap();
        assert_eq!(later, Ejections(vec![(0, 300)]));
        assert_eq!(Ejections::decode(&later.encode()), later);
        assert_eq!(Ejections::decode(&[1, 2, 3]), Ejections::default());
    }

    #[test]
    fn leases() {
        assert!(may_take_lease(None, 1, 0));
        assert!(may_take_lease(Some((1, 100)), 1, 50));
        assert!(!may_take_lease(Some((2, 100)), 1, 50));
        assert!(may_take_lease(Some((2, 100)), 1, 100));
        assert_eq!(decode_pair(&encode_pair(7, 9)), Some((7, 9)));
        assert_eq!(decode_pair(&[0; 15]), None);
    }
}
