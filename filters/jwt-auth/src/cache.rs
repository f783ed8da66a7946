//! Verified-token cache of one provider on one VM: bounded in entries and bytes, each entry
//! expiring with its token's `exp` (plus the provider's leeway).
//!
//! Keyed by the token's last 32 bytes (the end of its signature, unpredictable for anyone without
//! the signing key; only verified tokens are ever inserted) and confirmed by comparing the whole
//! stored token, so two tokens sharing a key can never admit one for the other: the second is a
//! miss, verified on its own, and replaces the first. Not a SHA-256 of the token: on wasm32 that
//! costs ~60,000 instructions for a 600-byte RS256 token (three times the whole cached-request
//! budget), and hashing the whole token with SipHash still ~15,000; the equality check gives the
//! guarantee a cryptographic key would.
//! Only tokens with an `exp` are cached (a token without one is re-verified each time).
//! Eviction is oldest-first.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::verify::Verified;

/// Bytes of cached tokens and outputs per provider and VM.
pub const MAX_CACHE_BYTES: usize = 512 * 1024;

/// A short SHA-256 prefix of a token, the only form of a token that may appear in logs.
pub fn token_fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Bytes of the token's tail used as the map key.
const KEY_BYTES: usize = 32;

type Key = [u8; KEY_BYTES];

fn key(token: &str) -> Key {
    let bytes = token.as_bytes();
    let tail = bytes
        .get(bytes.len().saturating_sub(KEY_BYTES)..)
        .unwrap_or_default();
    let mut key = [0u8; KEY_BYTES];
    if let Some(dst) = key.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    key
}

/// Whole-token equality, eight bytes at a time and without an early exit (wasm32's `memcmp` goes
/// byte by byte: ~7,000 instructions for a 600-byte token; this ~1,000).
fn same_token(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_differ = a_words
        .remainder()
        .iter()
        .zip(b_words.remainder())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    let words_differ = a_words.zip(b_words).fold(0u64, |acc, (x, y)| {
        let word = |c: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        };
        acc | (word(x) ^ word(y))
    });
    tails_differ == 0 && words_differ == 0
}

#[derive(Debug)]
struct Entry {
    token: Box<str>,
    verified_at: u64,
    valid_until: u64,
    verified: Rc<Verified>,
    bytes: usize,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    bytes: usize,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: disabled).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The verified outputs of `token` if it is cached and still valid at `now`. A clock that went
    /// back before the verification is a miss: `nbf` (and everything else) is checked again.
    pub fn get(&mut self, token: &str, now: u64) -> Option<Rc<Verified>> {
        let key = key(token);
        let entry = self.entries.get(&key)?;
        if !same_token(entry.token.as_bytes(), token.as_bytes()) {
            return None;
        }
        if now > entry.valid_until || now < entry.verified_at {
            self.remove(&key);
            return None;
        }
        Some(Rc::clone(&entry.verified))
    }

    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes = self.bytes.saturating_sub(entry.bytes);
            self.order.retain(|k| k != key);
        }
    }

    /// Caches `verified` for `token`, verified at `verified_at`, until `valid_until` (seconds).
    pub fn insert(
        &mut self,
        token: &str,
        verified_at: u64,
        valid_until: u64,
        verified: Rc<Verified>,
    ) {
        let bytes = token.len() + verified.heap_bytes() + 128;
        if self.capacity == 0 || bytes > MAX_CACHE_BYTES {
            return;
        }
        let key = key(token);
        self.remove(&key);
        while self.entries.len() >= self.capacity || self.bytes + bytes > MAX_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(entry.bytes);
            }
        }
        self.entries.insert(
            key,
            Entry {
                token: token.into(),
                verified_at,
                valid_until,
                verified,
                bytes,
            },
        );
        self.order.push_back(key);
        self.bytes += bytes;
    }

    /// Forgets every token (the provider's keys changed: a token verified by a key that was
    /// dropped must not stay admitted).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_expiring_and_exact() {
        let mut cache = TokenCache::new(2);
        let v = Rc::new(Verified::default());
        for t in ["a", "b", "c"] {
            cache.insert(t, 0, 100, Rc::clone(&v));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", 0).is_none());
        assert!(cache.get("c", 100).is_some());
        assert!(cache.get("x", 0).is_none());
        assert!(cache.get("c", 101).is_none());
        assert_eq!(cache.len(), 1);
        // Same key (last 32 bytes), different token: never a hit.
        let long = format!("A{}", "z".repeat(40));
        cache.insert(&long, 0, 100, Rc::clone(&v));
        assert!(cache.get(&format!("B{}", "z".repeat(40)), 0).is_none());
        assert!(cache.get(&long, 0).is_some());
        cache.remove(&key(&long));
        assert!(same_token(b"0123456789abc", b"0123456789abc"));
        assert!(!same_token(b"0123456789abc", b"0123456789abd"));
        assert!(!same_token(b"1123456789abc", b"0123456789abc"));
        assert!(!same_token(b"0123456789abc", b"0123456789ab"));
        assert_eq!(token_fingerprint("abc"), "ba7816bf");
    }

    /// Regression (found by tests/integration/tests/filters/faults.rs): a token cached at 50 was
    /// served at 10 after the clock stepped back, skipping its `nbf` check.
    #[test]
    fn a_clock_that_went_back_before_the_verification_misses() {
        let mut cache = TokenCache::new(2);
        cache.insert("t", 50, 100, Rc::new(Verified::default()));
        assert!(cache.get("t", 50).is_some());
        assert!(cache.get("t", 49).is_none());
    }
}
