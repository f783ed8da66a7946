//! Verified-token cache of one provider on one VM: bounded in entries and bytes, each entry
//! expiring with its token's `exp` (plus the provider's leeway).
//!
//! Keyed by the SHA-256 of the token; a hit also compares the whole stored token, so even a hash
//! collision can never admit a token that was not verified. Only tokens with an `exp` are cached
//! (a token without one is re-verified each time). Eviction is oldest-first.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::verify::Verified;

/// Bytes of cached tokens and outputs per provider and VM.
pub const MAX_CACHE_BYTES: usize = 512 * 1024;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// The SHA-256 of `token`.
pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
struct Entry {
    token: Box<str>,
    valid_until: u64,
    verified: Rc<Verified>,
    bytes: usize,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<TokenHash, Entry>,
    order: VecDeque<TokenHash>,
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

    /// The verified outputs of `token` if it is cached and still valid at `now`.
    pub fn get(&mut self, hash: &TokenHash, token: &str, now: u64) -> Option<Rc<Verified>> {
        let entry = self.entries.get(hash)?;
        if &*entry.token != token {
            return None;
        }
        if now > entry.valid_until {
            self.remove(hash);
            return None;
        }
        Some(Rc::clone(&entry.verified))
    }

    fn remove(&mut self, hash: &TokenHash) {
        if let Some(entry) = self.entries.remove(hash) {
            self.bytes = self.bytes.saturating_sub(entry.bytes);
            self.order.retain(|h| h != hash);
        }
    }

    /// Caches `verified` for `token` until `valid_until` (seconds).
    pub fn insert(
        &mut self,
        hash: TokenHash,
        token: &str,
        valid_until: u64,
        verified: Rc<Verified>,
    ) {
        let bytes = token.len() + verified.heap_bytes() + 128;
        if self.capacity == 0 || bytes > MAX_CACHE_BYTES {
            return;
        }
        self.remove(&hash);
        while self.entries.len() >= self.capacity || self.bytes + bytes > MAX_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(entry.bytes);
            }
        }
        self.entries.insert(
            hash,
            Entry {
                token: token.into(),
                valid_until,
                verified,
                bytes,
            },
        );
        self.order.push_back(hash);
        self.bytes += bytes;
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
            cache.insert(token_hash(t), t, 100, Rc::clone(&v));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&token_hash("a"), "a", 0).is_none());
        assert!(cache.get(&token_hash("c"), "c", 100).is_some());
        // Same hash slot, different token: never a hit.
        assert!(cache.get(&token_hash("c"), "x", 0).is_none());
        assert!(cache.get(&token_hash("c"), "c", 101).is_none());
        assert_eq!(cache.len(), 1);
    }
}
