//! A weighted split over 10,000 buckets. Revisions own consecutive bucket ranges in the
//! order they are listed (for KServe's fields: the canary first), so a draw, or later a
//! stable per-user bucket, maps to exactly one revision.

use std::cell::Cell;

use crate::health::fnv1a;
use crate::route::rng::Rng;

pub const BUCKETS: u32 = 10_000;

#[derive(Clone)]
pub struct Split {
    /// Revisions with a non-zero share, each owning buckets up to `end` (exclusive).
    entries: Entries,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split")
            .field("entries", &self.entries.as_slice())
            .finish()
    }
}

impl PartialEq for Split {
    fn eq(&self, other: &Self) -> bool {
        self.entries.as_slice() == other.entries.as_slice()
    }
}

impl Eq for Split {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    revision: usize,
    end: u32,
}

/// A split's entries: up to two (every KServe-form split) inline, without an
/// allocation (a configuration has a split per service, and the view two more); more in
/// a Vec.
#[derive(Debug, Clone)]
enum Entries {
    Inline { len: u8, items: [Entry; 2] },
    Heap(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::Inline { len, items } => items.get(..usize::from(*len)).unwrap_or_default(),
            Entries::Heap(items) => items,
        }
    }
}

impl Entries {
    fn new() -> Entries {
        let none = Entry {
            revision: 0,
            end: 0,
        };
        Entries::Inline {
            len: 0,
            items: [none; 2],
        }
    }

    fn push(&mut self, entry: Entry) {
        match self {
            Entries::Inline { len, items } => match items.get_mut(usize::from(*len)) {
                Some(slot) => {
                    *slot = entry;
                    *len += 1;
                }
                None => {
                    let mut all = items.to_vec();
                    all.push(entry);
                    *self = Entries::Heap(all);
                }
            },
            Entries::Heap(all) => all.push(entry),
        }
    }
}

impl Split {
    /// `weights` are `(revision index, percent)`; the caller has checked that they sum
    /// to 100. Zero shares own no bucket.
    /// (A slice, not a generic iterator: one copy of this code in the .wasm.)
    pub fn new(weights: &[(usize, u32)]) -> Split {
        let mut entries = Entries::new();
        let mut end = 0;
        for &(revision, pct) in weights {
            if pct > 0 {
                end += pct * (BUCKETS / 100);
                entries.push(Entry { revision, end });
            }
        }
        Split { entries }
    }

    /// The revision for one request. A split with one revision draws nothing.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        match self.entries.as_slice() {
            [only] => only.revision,
            _ => self.for_bucket(rng.below(BUCKETS)),
        }
    }

    pub fn for_bucket(&self, bucket: u32) -> usize {
        let entries = self.entries.as_slice();
        entries
            .iter()
            .find(|e| bucket < e.end)
            .or(entries.last())
            .map_or(0, |e| e.revision)
    }

    /// Whether the shares cover every bucket (so that `restricted` to all revisions
    /// returns the split unchanged).
    pub fn is_full(&self) -> bool {
        self.entries
            .as_slice()
            .last()
            .is_some_and(|e| e.end == BUCKETS)
    }

    /// The split among the revisions `keep` accepts, each keeping its share relative to
    /// the others and its place in bucket order; `None` when none of them has a share.
    pub fn restricted(&self, keep: &dyn Fn(usize) -> bool) -> Option<Split> {
        let mut start = 0;
        let kept: Vec<(usize, u32)> = self
            .entries
            .as_slice()
            .iter()
            .filter_map(|e| {
                let width = e.end - start;
                start = e.end;
                keep(e.revision).then_some((e.revision, width))
            })
            .collect();
        let sum: u32 = kept.iter().map(|&(_, w)| w).sum();
        if sum == 0 {
            return None;
        }
        // Cumulative rounding: the last entry ends exactly at BUCKETS.
        let mut cumulative = 0u64;
        let mut entries = Entries::new();
        for (revision, width) in kept {
            cumulative += u64::from(width);
            let end = (cumulative * u64::from(BUCKETS) / u64::from(sum)) as u32;
            entries.push(Entry { revision, end });
        }
        Some(Split { entries })
    }

    /// `(revision index, buckets out of 10,000)` with a non-zero share, in bucket order.
    pub fn shares(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut start = 0;
        self.entries.as_slice().iter().map(move |e| {
            let width = e.end - start;
            start = e.end;
            (e.revision, width)
        })
    }

    /// `(revision index, percent)` with a non-zero share, in bucket order.
    pub fn percents(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut start = 0;
        self.entries.as_slice().iter().map(move |e| {
            let pct = (e.end - start) / (BUCKETS / 100);
            start = e.end;
            (e.revision, pct)
        })
    }
}

/// The bucket of a sticky value (a user id, a session cookie): the same on every worker,
/// replica and restart (FNV-1a, then a SplitMix64 finaliser so that similar values spread
/// evenly), so a user keeps their revision while its bucket range does.
pub fn sticky_bucket(value: &str) -> u32 {
    let mut z = fnv1a(value.as_bytes());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((u128::from(z) * u128::from(BUCKETS)) >> 64) as u32
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), if present and non-empty.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Smooth weighted round robin over a split (`split: exact`): after any n picks, each
/// revision has been picked within one of n times its share. One per worker and split;
/// Cells, because requests only ever add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interleave {
    current: Vec<Cell<i64>>,
}

impl Interleave {
    pub fn new(split: &Split) -> Interleave {
        Interleave {
            current: split
                .entries
                .as_slice()
                .iter()
                .map(|_| Cell::new(0))
                .collect(),
        }
    }

    pub fn pick(&self, split: &Split) -> usize {
        let total: i64 = split.shares().map(|(_, w)| i64::from(w)).sum();
        let mut best: Option<(usize, usize, i64)> = None;
        for ((i, (revision, width)), current) in split.shares().enumerate().zip(&self.current) {
            current.set(current.get() + i64::from(width));
            if best.is_none_or(|(_, _, b)| current.get() > b) {
                best = Some((i, revision, current.get()));
            }
        }
        match best {
            Some((i, revision, _)) => {
                if let Some(c) = self.current.get(i) {
                    c.set(c.get() - total);
                }
                revision
            }
            None => split.for_bucket(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_list_order() {
        let s = Split::new(&[(1, 10), (0, 90)]);
        assert_eq!(s.for_bucket(0), 1);
        assert_eq!(s.for_bucket(999), 1);
        assert_eq!(s.for_bucket(1000), 0);
        assert_eq!(s.for_bucket(9999), 0);
        assert_eq!(s.percents().collect::<Vec<_>>(), vec![(1, 10), (0, 90)]);
    }

    #[test]
    fn zero_shares_get_nothing() {
        let s = Split::new(&[(1, 0), (0, 100)]);
        assert_eq!(s.percents().collect::<Vec<_>>(), vec![(0, 100)]);
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| s.pick(&mut rng) == 0));
    }

    #[test]
    fn draws_match_the_weights() {
        let s = Split::new(&[(0, 10), (1, 30), (2, 60)]);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        let n = 100_000;
        for _ in 0..n {
            counts[s.pick(&mut rng)] += 1;
        }
        // Within 5 sigma of the binomial expectation.
        for (i, p) in [0.1f64, 0.3, 0.6].into_iter().enumerate() {
            let expected = p * n as f64;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (counts[i] as f64 - expected).abs() < 5.0 * sigma,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn restricted_splits_keep_relative_shares() {
        let s = Split::new(&[(0, 10), (1, 30), (2, 60)]);
        let r = s.restricted(&|rev| rev != 2).unwrap();
        assert_eq!(r.shares().collect::<Vec<_>>(), vec![(0, 2500), (1, 7500)]);
        assert_eq!(
            s.restricted(&|rev| rev == 1)
                .unwrap()
                .shares()
                .collect::<Vec<_>>(),
            vec![(1, 10_000)]
        );
        assert_eq!(s.restricted(&|_| true), Some(s.clone()));
        assert_eq!(s.restricted(&|_| false), None);
        // Thirds round so the buckets still sum to 10,000.
        let thirds = Split::new(&[(0, 33), (1, 33), (2, 34)])
            .restricted(&|rev| rev != 2)
            .unwrap();
        assert_eq!(thirds.shares().map(|(_, w)| w).sum::<u32>(), BUCKETS);
        assert_eq!(Split::new(&[(0, 100)]).restricted(&|rev| rev == 1), None);
    }

    #[test]
    fn exact_interleave_stays_within_one_of_the_share() {
        for weights in [
            vec![(0, 10), (1, 90)],
            vec![(0, 33), (1, 33), (2, 34)],
            vec![(0, 1), (1, 99)],
            vec![(0, 100)],
        ] {
            let split = Split::new(&weights);
            let interleave = Interleave::new(&split);
            let mut counts = [0f64; 3];
            for n in 1..=20_000u32 {
                counts[interleave.pick(&split)] += 1.0;
                for &(rev, pct) in &weights {
                    let expected = f64::from(n) * f64::from(pct) / 100.0;
                    assert!(
                        (counts[rev] - expected).abs() < 1.0,
                        "{weights:?} n={n} {counts:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn sticky_buckets_are_stable_and_even() {
        assert_eq!(sticky_bucket("user-42"), sticky_bucket("user-42"));
        assert!(sticky_bucket("") < BUCKETS);
        // 10% of 100,000 users land below bucket 1000, within 5 sigma.
        let low = (0..100_000)
            .filter(|i| sticky_bucket(&format!("user-{i}")) < 1000)
            .count();
        assert!((9_525..10_475).contains(&low), "{low}");
        // Raising the canary share only moves users onto the canary.
        let s10 = Split::new(&[(1, 10), (0, 90)]);
        let s20 = Split::new(&[(1, 20), (0, 80)]);
        for i in 0..10_000 {
            let b = sticky_bucket(&format!("u{i}"));
            if s10.for_bucket(b) == 1 {
                assert_eq!(s20.for_bucket(b), 1);
            }
        }
    }

    #[test]
    fn cookies() {
        assert_eq!(
            cookie_value("a=1; session=abc; b=2", "session"),
            Some("abc")
        );
        assert_eq!(cookie_value("session=\"q\"", "session"), Some("q"));
        assert_eq!(cookie_value("xsession=1; session=", "session"), None);
        assert_eq!(cookie_value("garbage;;=;", "session"), None);
        assert_eq!(cookie_value("Session=1", "session"), None);
    }

    #[test]
    fn splits_of_any_length_compare_by_their_entries() {
        for n in 0..6usize {
            let weights: Vec<(usize, u32)> = (0..n).map(|r| (r, 1)).collect();
            let s = Split::new(&weights);
            assert_eq!(s.entries.as_slice().len(), n);
            assert_eq!(s.percents().collect::<Vec<_>>(), weights);
            assert_eq!(s, s.clone());
            assert_ne!(s, Split::new(&(0..=n).map(|r| (r, 1)).collect::<Vec<_>>()));
        }
    }

    #[test]
    fn one_percent_is_a_hundred_buckets() {
        let s = Split::new(&[(0, 1), (1, 99)]);
        assert_eq!((0..BUCKETS).filter(|&b| s.for_bucket(b) == 0).count(), 100);
    }
}
