//! The assignment hash: a key and an experiment's salt → a bucket in `[0, 10000)` → a variant.
//!
//! Specification (stable across VMs, proxies and releases; the test vectors below pin it):
//!
//! 1. At configure time, per experiment: `k = SHA-256(salt)` (salt as UTF-8 bytes);
//!    `k0`, `k1` = bytes 0..8 and 8..16 of `k` as little-endian unsigned 64-bit integers.
//! 2. Per request: `x = SipHash-2-4(k0, k1; key)`, the 64-bit output of the reference
//!    algorithm (Aumasson & Bernstein) over the raw key bytes (crate `siphasher`).
//! 3. `bucket = (x × 10000) >> 64` (128-bit product): multiply-shift, not modulo. Every bucket
//!    gets either ⌊2^64/10000⌋ or ⌈2^64/10000⌉ of the 2^64 values of `x`, so the bias is below
//!    10000/2^64 ≈ 5.4·10^-16 per bucket.
//! 4. Each variant owns a contiguous range of buckets, in configured order: variant *i* ends at
//!    `⌊(w_0 + … + w_i) × 10000 / Σw⌋` (exclusive). The request gets the variant whose range
//!    holds `bucket`.
//!
//! Why SipHash keyed by the salt rather than SHA-256 per request: SipHash-2-4 is a keyed PRF
//! designed for short inputs, with the same uniformity for this purpose, at about a twentieth
//! of SHA-256's wasm instructions (one SHA-256 block measured ~11,000 wasm instructions; the
//! whole per-request budget is 5,000). SHA-256 only runs once per experiment at configure time.
//!
//! Because the bucket of a key never depends on the weights, changing weights only moves the
//! range boundaries: with the sum kept fixed, raising variant B from 10 to 20 (and lowering A
//! from 90 to 80) moves exactly the users in buckets `[8000, 9000)` from A to B and nobody
//! else.

use std::hash::Hasher as _;

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;

/// The fixed bucket space (basis points).
pub const BUCKETS: u32 = 10_000;

/// The SipHash key of an experiment, derived from its salt once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKey {
    k0: u64,
    k1: u64,
}

impl HashKey {
    /// `SHA-256(salt)`, first 16 bytes as two little-endian u64.
    pub fn from_salt(salt: &[u8]) -> Self {
        let digest = Sha256::digest(salt);
        let mut k = [0u8; 16];
        for (slot, byte) in k.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
        ] = k;
        Self {
            k0: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            k1: u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        }
    }

    /// SipHash-2-4 of `input` under this key.
    pub fn hash(&self, input: &[u8]) -> u64 {
        let mut hasher = SipHasher24::new_with_keys(self.k0, self.k1);
        hasher.write(input);
        hasher.finish()
    }
}

/// The bucket of `key` in an experiment whose salt gave `hash_key` (see the module docs).
pub fn bucket(hash_key: &HashKey, key: &[u8]) -> u32 {
    let x = hash_key.hash(key);
    let scaled = (u128::from(x) * u128::from(BUCKETS)) >> 64;
    // scaled < BUCKETS by construction.
    u32::try_from(scaled).unwrap_or(BUCKETS - 1)
}

/// The exclusive upper bucket of each variant; `None` when the weights sum to 0 (or overflow).
pub fn boundaries(weights: &[u64]) -> Option<Vec<u32>> {
    let total = weights
        .iter()
        .try_fold(0u64, |sum, w| sum.checked_add(*w))?;
    if total == 0 {
        return None;
    }
    let mut cumulative = 0u128;
    weights
        .iter()
        .map(|w| {
            cumulative += u128::from(*w);
            u32::try_from(cumulative * u128::from(BUCKETS) / u128::from(total)).ok()
        })
        .collect()
}

/// The variant whose range holds `bucket`.
pub fn variant_of(boundaries: &[u32], bucket: u32) -> usize {
    boundaries
        .iter()
        .position(|end| bucket < *end)
        .unwrap_or(boundaries.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    /// Pinned test vectors (salt, key, SipHash output, bucket): these must never change
    /// (README "Hash specification"). Computed independently from the specification with
    /// Python's hashlib and a reference SipHash-2-4 checked against the paper's test vector.
    const VECTORS: &[(&str, &str, u64, u32)] = &[
        ("checkout", "user-1", 0x781f_bef8_40f9_2442, 4692),
        ("checkout", "user-2", 0x70fb_a926_a9b8_ed0b, 4413),
        ("checkout", "", 0x154b_92d6_1206_7cd5, 831),
        ("exp-2026", "alice@example.com", 0xf9fd_24d0_8c0b_e34a, 9765),
        ("exp-2026", "203.0.113.7", 0x8262_0cdf_1892_165d, 5093),
        (
            "checkout",
            "a-key-longer-than-sixteen-bytes",
            0x5d2c_ad66_d27f_7ea0,
            3639,
        ),
    ];

    #[test]
    fn test_vectors() {
        for (salt, key, x, expected) in VECTORS {
            let hash_key = HashKey::from_salt(salt.as_bytes());
            assert_eq!(
                hash_key.hash(key.as_bytes()),
                *x,
                "salt {salt:?} key {key:?}"
            );
            assert_eq!(bucket(&hash_key, key.as_bytes()), *expected);
        }
    }

    #[test]
    fn siphash_paper_vector() {
        // SipHash-2-4 paper, Appendix A: key 00..0f, message 00..0e.
        let mut hasher = SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        hasher.write(&(0u8..15).collect::<Vec<_>>());
        assert_eq!(hasher.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn boundaries_are_cumulative_over_the_fixed_space() {
        assert_eq!(boundaries(&[90, 10]).unwrap(), [9000, 10000]);
        assert_eq!(boundaries(&[1, 1, 1]).unwrap(), [3333, 6666, 10000]);
        assert_eq!(boundaries(&[0, 5]).unwrap(), [0, 10000]);
        assert_eq!(boundaries(&[0, 0]), None);
        assert_eq!(boundaries(&[]), None);
        assert_eq!(variant_of(&[0, 10000], 0), 1);
        assert_eq!(variant_of(&[9000, 10000], 8999), 0);
        assert_eq!(variant_of(&[9000, 10000], 9000), 1);
    }

    #[test]
    fn ramp_moves_only_users_between_the_old_and_new_boundary() {
        let before = boundaries(&[90, 10]).unwrap();
        let after = boundaries(&[80, 20]).unwrap();
        let mut moved = 0;
        for i in 0..20_000u32 {
            let key = format!("user-{i}");
            let b = bucket(&HashKey::from_salt(b"ramp"), key.as_bytes());
            let (old, new) = (variant_of(&before, b), variant_of(&after, b));
            if old != new {
                // Only A → B, only from the slice that changed hands.
                assert_eq!((old, new), (0, 1));
                assert!((8000..9000).contains(&b));
                moved += 1;
            } else {
                assert!(!(8000..9000).contains(&b));
            }
        }
        // About 10 % of users move.
        assert!((1800..2200).contains(&moved), "{moved}");
    }

    #[test]
    fn sequential_keys_spread_evenly() {
        let bounds = boundaries(&[30, 70]).unwrap();
        let n = 100_000;
        let hash_key = HashKey::from_salt(b"seq");
        let b = (0..n)
            .filter(|i| variant_of(&bounds, bucket(&hash_key, i.to_string().as_bytes())) == 0)
            .count();
        let share = b as f64 / f64::from(n);
        assert!((share - 0.30).abs() < 0.01, "{share}");
    }
}
