//! The assignment hash: a key and an experiment's salt → a bucket in `[0, 10000)` → a variant.
//!
//! Specification (stable across VMs, proxies and releases; the test vectors below pin it):
//!
//! 1. `digest = SHA-256(salt || 0x00 || key)` (salt: the experiment's salt as UTF-8, which may
//!    not contain NUL; key: the raw bytes of the key value).
//! 2. `x` = the first 8 bytes of `digest` as a big-endian unsigned 64-bit integer.
//! 3. `bucket = (x × 10000) >> 64` (128-bit product): multiply-shift, not modulo. Every bucket
//!    gets either ⌊2^64/10000⌋ or ⌈2^64/10000⌉ of the 2^64 values of `x`, so the bias is below
//!    10000/2^64 ≈ 5.4·10^-16 per bucket.
//! 4. Each variant owns a contiguous range of buckets, in configured order: variant *i* ends at
//!    `⌊(w_0 + … + w_i) × 10000 / Σw⌋` (exclusive). The request gets the variant whose range
//!    holds `bucket`.
//!
//! Because the bucket of a key never depends on the weights, changing weights only moves the
//! range boundaries: with the sum kept fixed, raising variant B from 10 to 20 (and lowering A
//! from 90 to 80) moves exactly the users in buckets `[8000, 9000)` from A to B and nobody
//! else.

use sha2::{Digest, Sha256};

/// The fixed bucket space (basis points).
pub const BUCKETS: u32 = 10_000;

/// The bucket of `key` in an experiment salted with `salt` (see the module docs).
pub fn bucket(salt: &[u8], key: &[u8]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update([0u8]);
    hasher.update(key);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    for (slot, byte) in first.iter_mut().zip(digest.iter()) {
        *slot = *byte;
    }
    let x = u64::from_be_bytes(first);
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

    /// Pinned test vectors: these must never change (README "Hash specification"); computed
    /// independently with Python's hashlib from the specification above.
    const VECTORS: &[(&str, &str, u32)] = &[
        ("checkout", "user-1", 399),
        ("checkout", "user-2", 3322),
        ("checkout", "", 1465),
        ("exp-2026", "alice@example.com", 2042),
        ("exp-2026", "203.0.113.7", 4622),
    ];

    #[test]
    fn test_vectors() {
        for (salt, key, expected) in VECTORS {
            assert_eq!(
                bucket(salt.as_bytes(), key.as_bytes()),
                *expected,
                "salt {salt:?} key {key:?}"
            );
        }
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
            let b = bucket(b"ramp", key.as_bytes());
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
        let b = (0..n)
            .filter(|i| variant_of(&bounds, bucket(b"seq", i.to_string().as_bytes())) == 0)
            .count();
        let share = b as f64 / f64::from(n);
        assert!((share - 0.30).abs() < 0.01, "{share}");
    }
}
