//! Streams paused until the root context has something for them: a bounded registry.
//!
//! A filter whose request needs data only the root context fetches (a key set, a quota answer)
//! pauses the stream and registers it here with what it waits for and a deadline. When the
//! root's callout answers, it takes every stream waiting for that key and resumes or replies to
//! each with [`crate::effects::resume`] (an effective-context switch); its tick takes the
//! streams whose deadline passed and replies to them. A stream that ends while waiting
//! (client gone) is forgotten in its `on_done`.
//!
//! Bounded: at most `capacity` streams wait at once; beyond that [`Waiters::wait`] refuses and
//! the filter answers the request at once (its failure mode) instead of holding memory.

use crate::host::Nanos;

/// A stream waiting on the root context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter<K> {
    /// The stream's context id (for `set_effective_context`).
    pub context_id: u32,
    /// What it waits for.
    pub key: K,
    /// When it stops waiting (the filter replies, e.g. 504 or its failure mode).
    pub deadline: Nanos,
}

/// The registry; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Waiters<K> {
    waiting: Vec<Waiter<K>>,
    capacity: usize,
}

/// [`Waiters::wait`] refused: the registry is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many streams waiting ({0})")]
pub struct Full(pub usize);

impl<K: PartialEq + Copy> Waiters<K> {
    /// An empty registry for at most `capacity` streams.
    pub fn new(capacity: usize) -> Self {
        Self {
            waiting: Vec::new(),
            capacity,
        }
    }

    /// Registers a paused stream.
    ///
    /// # Errors
    /// [`Full`] when `capacity` streams already wait.
    pub fn wait(&mut self, context_id: u32, key: K, deadline: Nanos) -> Result<(), Full> {
        // A stream that registers again replaces its entry, even when the registry is full.
        self.forget(context_id);
        if self.waiting.len() >= self.capacity {
            return Err(Full(self.capacity));
        }
        self.waiting.push(Waiter {
            context_id,
            key,
            deadline,
        });
        Ok(())
    }

    /// Removes and returns every stream waiting for `key`, oldest first.
    pub fn take(&mut self, key: K) -> Vec<Waiter<K>> {
        self.take_where(|w| w.key == key)
    }

    /// Removes and returns every stream whose deadline is at or before `now`, oldest first.
    pub fn take_expired(&mut self, now: Nanos) -> Vec<Waiter<K>> {
        self.take_where(|w| w.deadline <= now)
    }

    fn take_where(&mut self, mut pick: impl FnMut(&Waiter<K>) -> bool) -> Vec<Waiter<K>> {
        let mut taken = Vec::new();
        self.waiting.retain(|w| {
            if pick(w) {
                taken.push(*w);
                false
            } else {
                true
            }
        });
        taken
    }

    /// Forgets a stream (it ended while waiting). Returns whether it was waiting.
    pub fn forget(&mut self, context_id: u32) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.context_id != context_id);
        self.waiting.len() != before
    }

    /// Number of waiting streams.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no stream waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether any stream waits for `key`.
    pub fn any_waiting_for(&self, key: K) -> bool {
        self.waiting.iter().any(|w| w.key == key)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn takes_waiters_by_key_and_by_deadline_and_is_bounded() {
        let mut waiters = Waiters::new(3);
        waiters.wait(10, "jwks-a", 100).unwrap();
        waiters.wait(11, "jwks-b", 50).unwrap();
        waiters.wait(12, "jwks-a", 200).unwrap();
        assert_eq!(waiters.wait(13, "jwks-a", 300), Err(Full(3)));
        let a: Vec<u32> = waiters
            .take("jwks-a")
            .iter()
            .map(|w| w.context_id)
            .collect();
        assert_eq!(a, [10, 12]);
        assert!(!waiters.any_waiting_for("jwks-a"));
        assert!(waiters.take_expired(49).is_empty());
        assert_eq!(waiters.take_expired(50).len(), 1);
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_stream_waits_once_and_can_be_forgotten() {
        let mut waiters = Waiters::new(2);
        waiters.wait(10, 1u8, 100).unwrap();
        waiters.wait(10, 2u8, 100).unwrap();
        assert_eq!(waiters.len(), 1);
        waiters.wait(11, 1u8, 100).unwrap();
        waiters.wait(10, 3u8, 100).unwrap();
        assert_eq!(
            waiters.len(),
            2,
            "re-registering at capacity replaces the entry"
        );
        assert!(waiters.forget(10));
        assert!(!waiters.forget(10));
    }
}
