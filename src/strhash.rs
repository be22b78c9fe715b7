//! The hash of the string-keyed tables (hosts, models, names while compiling): eight
//! bytes per 64-bit multiply. hashbrown's default (foldhash) emulates a 64x64->128-bit
//! multiply with four on wasm32, and every request hashes its host once, every service
//! of a configuration a few names.
//!
//! Not seeded: the keys come from the configuration, and a client can only look up, so
//! there is no table for it to flood.

use std::hash::{BuildHasher, Hasher};

/// Builds [`StrHasher`]s (the `S` of the tables).
#[derive(Debug, Clone, Copy, Default)]
pub struct StrHash;

impl BuildHasher for StrHash {
    type Hasher = StrHasher;

    fn build_hasher(&self) -> StrHasher {
        StrHasher(0)
    }
}

/// Odd constants with well-spread bits (from splitmix64).
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;

#[derive(Debug, Clone, Copy)]
pub struct StrHasher(u64);

impl StrHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K1).rotate_left(31);
    }
}

fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map_or(0, u64::from_le_bytes)
}

impl Hasher for StrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        self.mix(len as u64);
        if len < 8 {
            // Up to seven bytes in one word (zero-padded: the length tells them apart).
            let mut buf = [0u8; 8];
            for (slot, b) in buf.iter_mut().zip(bytes) {
                *slot = *b;
            }
            self.mix(u64::from_le_bytes(buf));
            return;
        }
        let mut at = 0;
        while at + 8 < len {
            self.mix(word(bytes, at));
            at += 8;
        }
        // The last word ends at the end (it may overlap the one before).
        self.mix(word(bytes, len - 8));
    }

    // `str`'s `Hash` writes a 0xff after the bytes, which `write` needs no multiply for:
    // it already counted the length.
    fn write_u8(&mut self, i: u8) {
        self.0 ^= u64::from(i);
    }

    fn finish(&self) -> u64 {
        // hashbrown indexes buckets with the low bits and tags them with the top seven
        // of the low 32 on wasm32: fold the high half in.
        let h = self.0.wrapping_mul(K2);
        h ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn hash(s: &str) -> u64 {
        StrHash.hash_one(s)
    }

    #[test]
    fn equal_strings_hash_alike_and_near_ones_do_not() {
        assert_eq!(
            hash("svc-00001.bench.example.com"),
            hash("svc-00001.bench.example.com")
        );
        let near = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "a\0",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "svc-00001.bench.example.com",
            "svc-00002.bench.example.com",
            "svc-00001.bench.example.con",
            "tvc-00001.bench.example.com",
        ];
        let hashes: HashSet<u64> = near.iter().map(|s| hash(s)).collect();
        assert_eq!(hashes.len(), near.len());
    }

    #[test]
    fn names_that_differ_in_one_digit_spread_over_buckets_and_tags() {
        // As hashbrown uses a 32-bit hash: 10,000 hosts in 16,384 buckets, and the
        // seven-bit tag from the top of the low 32 bits.
        let n = 10_000;
        let mut buckets = HashSet::new();
        let mut tags = HashSet::new();
        for i in 0..n {
            let h = hash(&format!("svc-{i:05}.bench.example.com")) as u32;
            buckets.insert(h & 16_383);
            tags.insert(h >> 25);
        }
        // Random placement would fill 1 - e^(-10000/16384), about 46%, of the buckets.
        assert!(buckets.len() > 7_000, "{} buckets", buckets.len());
        assert_eq!(tags.len(), 128);
    }
}
