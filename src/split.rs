//! A weighted split over 10,000 buckets. Revisions own consecutive bucket ranges in the
//! order they are listed (for KServe's fields: the canary first), so a draw, or later a
//! stable per-user bucket, maps to exactly one revision.

use crate::rng::Rng;

pub const BUCKETS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Revisions with a non-zero share, each owning buckets up to `end` (exclusive).
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    revision: usize,
    end: u32,
}

impl Split {
    /// `weights` are `(revision index, percent)`; the caller has checked that they sum
    /// to 100. Zero shares own no bucket.
    pub fn new(weights: impl IntoIterator<Item = (usize, u32)>) -> Split {
        let mut end = 0;
        let entries = weights
            .into_iter()
            .filter(|&(_, pct)| pct > 0)
            .map(|(revision, pct)| {
                end += pct * (BUCKETS / 100);
                Entry { revision, end }
            })
            .collect();
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
        self.entries
            .iter()
            .find(|e| bucket < e.end)
            .or(self.entries.last())
            .map_or(0, |e| e.revision)
    }

    /// The split among the revisions `keep` accepts, each keeping its share relative to
    /// the others and its place in bucket order; `None` when none of them has a share.
    pub fn restricted(&self, keep: impl Fn(usize) -> bool) -> Option<Split> {
        let mut start = 0;
        let kept: Vec<(usize, u32)> = self
            .entries
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
        let entries = kept
            .into_iter()
            .map(|(revision, width)| {
                cumulative += u64::from(width);
                let end = (cumulative * u64::from(BUCKETS) / u64::from(sum)) as u32;
                Entry { revision, end }
            })
            .collect();
        Some(Split { entries })
    }

    /// `(revision index, buckets out of 10,000)` with a non-zero share, in bucket order.
    pub fn shares(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut start = 0;
        self.entries.iter().map(move |e| {
            let width = e.end - start;
            start = e.end;
            (e.revision, width)
        })
    }

    /// `(revision index, percent)` with a non-zero share, in bucket order.
    pub fn percents(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut start = 0;
        self.entries.iter().map(move |e| {
            let pct = (e.end - start) / (BUCKETS / 100);
            start = e.end;
            (e.revision, pct)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_list_order() {
        let s = Split::new([(1, 10), (0, 90)]);
        assert_eq!(s.for_bucket(0), 1);
        assert_eq!(s.for_bucket(999), 1);
        assert_eq!(s.for_bucket(1000), 0);
        assert_eq!(s.for_bucket(9999), 0);
        assert_eq!(s.percents().collect::<Vec<_>>(), vec![(1, 10), (0, 90)]);
    }

    #[test]
    fn zero_shares_get_nothing() {
        let s = Split::new([(1, 0), (0, 100)]);
        assert_eq!(s.percents().collect::<Vec<_>>(), vec![(0, 100)]);
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| s.pick(&mut rng) == 0));
    }

    #[test]
    fn draws_match_the_weights() {
        let s = Split::new([(0, 10), (1, 30), (2, 60)]);
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
        let s = Split::new([(0, 10), (1, 30), (2, 60)]);
        let r = s.restricted(|rev| rev != 2).unwrap();
        assert_eq!(r.shares().collect::<Vec<_>>(), vec![(0, 2500), (1, 7500)]);
        assert_eq!(
            s.restricted(|rev| rev == 1)
                .unwrap()
                .shares()
                .collect::<Vec<_>>(),
            vec![(1, 10_000)]
        );
        assert_eq!(s.restricted(|_| true), Some(s.clone()));
        assert_eq!(s.restricted(|_| false), None);
        // Thirds round so the buckets still sum to 10,000.
        let thirds = Split::new([(0, 33), (1, 33), (2, 34)])
            .restricted(|rev| rev != 2)
            .unwrap();
        assert_eq!(thirds.shares().map(|(_, w)| w).sum::<u32>(), BUCKETS);
        assert_eq!(Split::new([(0, 100)]).restricted(|rev| rev == 1), None);
    }

    #[test]
    fn one_percent_is_a_hundred_buckets() {
        let s = Split::new([(0, 1), (1, 99)]);
        assert_eq!((0..BUCKETS).filter(|&b| s.for_bucket(b) == 0).count(), 100);
    }
}
