//! Envoy's token bucket (`max_tokens`, `tokens_per_fill`, `fill_interval`), refilled lazily from
//! the host clock instead of by a timer.
//!
//! Envoy's local rate limiter adds `tokens_per_fill` every `fill_interval` (a timer), capped at
//! `max_tokens`, and a new bucket starts full. Here the fills that the timer would have made are
//! computed when the bucket is next used: `fills = (now - last_fill) / fill_interval`, and
//! `last_fill` advances by whole intervals so the fill phase is kept. The clock is the proxy's
//! wall clock, so it may jump:
//! - backwards (`now < last_fill`): no tokens are added and `last_fill` restarts at `now`, so a
//!   jump back can only delay the next fill, never add tokens;
//! - forwards by any amount: the arithmetic saturates and the bucket is at most full.

/// One bucket's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Capacity, and the tokens of a new bucket; 0 rejects every request.
    pub max_tokens: u32,
    /// Tokens added per interval.
    pub tokens_per_fill: u32,
    /// The interval, in nanoseconds (at least 50 ms).
    pub fill_interval_ns: u64,
}

/// The state of one bucket (one key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Tokens left.
    pub tokens: u32,
    /// Time of the last fill (or of creation), on the fill phase.
    pub last_fill_ns: u64,
}

impl TokenBucket {
    /// A new bucket at `now`: full.
    pub const fn new_state(&self, now: u64) -> BucketState {
        BucketState {
            tokens: self.max_tokens,
            last_fill_ns: now,
        }
    }

    /// Adds the fills due at `now`; returns whether the state changed.
    pub fn refill(&self, state: &mut BucketState, now: u64) -> bool {
        if now < state.last_fill_ns {
            // The clock went back: restart the interval, add nothing.
            state.last_fill_ns = now;
            return true;
        }
        let elapsed = now - state.last_fill_ns;
        let fills = elapsed / self.fill_interval_ns.max(1);
        if fills == 0 {
            return false;
        }
        let added = fills.saturating_mul(u64::from(self.tokens_per_fill));
        let tokens = u64::from(state.tokens).saturating_add(added);
        state.tokens = u32::try_from(tokens.min(u64::from(self.max_tokens))).unwrap_or(u32::MAX);
        // Keep the phase: the last fill happened a whole number of intervals after the previous.
        state.last_fill_ns = now - elapsed % self.fill_interval_ns.max(1);
        true
    }

    /// Whether a bucket left alone until `now` is full again (so dropping it loses nothing: a
    /// new bucket starts full).
    pub fn is_idle(&self, state: &BucketState, now: u64) -> bool {
        let mut state = *state;
        self.refill(&mut state, now);
        state.tokens >= self.max_tokens
    }

    /// Nanoseconds from `now` to the next fill of a refilled `state`.
    pub const fn until_next_fill(&self, state: &BucketState, now: u64) -> u64 {
        let since = now.saturating_sub(state.last_fill_ns);
        self.fill_interval_ns.saturating_sub(since)
    }

    /// Nanoseconds from `now` until `cost` tokens are available (0 when they are now); `None`
    /// when they never will be (`cost > max_tokens`, or nothing is ever added).
    pub fn until_available(&self, state: &BucketState, now: u64, cost: u32) -> Option<u64> {
        if state.tokens >= cost {
            return Some(0);
        }
        if cost > self.max_tokens || self.tokens_per_fill == 0 {
            return None;
        }
        let missing = u64::from(cost - state.tokens);
        let fills = missing.div_ceil(u64::from(self.tokens_per_fill));
        let first = self.until_next_fill(state, now);
        Some(first.saturating_add((fills - 1).saturating_mul(self.fill_interval_ns)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn bucket() -> TokenBucket {
        TokenBucket {
            max_tokens: 10,
            tokens_per_fill: 3,
            fill_interval_ns: SEC,
        }
    }

    #[test]
    fn refills_whole_intervals_keeping_the_phase() {
        let b = bucket();
        let mut s = BucketState {
            tokens: 0,
            last_fill_ns: 100,
        };
        assert!(!b.refill(&mut s, 100 + SEC - 1));
        assert_eq!(s.tokens, 0);
        assert!(b.refill(&mut s, 100 + SEC + 5));
        assert_eq!((s.tokens, s.last_fill_ns), (3, 100 + SEC));
        b.refill(&mut s, 100 + 3 * SEC);
        assert_eq!((s.tokens, s.last_fill_ns), (9, 100 + 3 * SEC));
        b.refill(&mut s, 100 + 4 * SEC);
        assert_eq!(s.tokens, 10, "capped at max_tokens");
    }

    #[test]
    fn clock_jumps_never_add_tokens_beyond_the_rules() {
        let b = bucket();
        let mut s = BucketState {
            tokens: 2,
            last_fill_ns: 50 * SEC,
        };
        b.refill(&mut s, 10 * SEC);
        assert_eq!(
            (s.tokens, s.last_fill_ns),
            (2, 10 * SEC),
            "backwards: nothing added"
        );
        b.refill(&mut s, u64::MAX);
        assert_eq!(s.tokens, 10, "far forwards: at most full");
        let huge = TokenBucket {
            max_tokens: u32::MAX,
            tokens_per_fill: u32::MAX,
            fill_interval_ns: 50_000_000,
        };
        let mut s = huge.new_state(0);
        s.tokens = 0;
        huge.refill(&mut s, u64::MAX);
        assert_eq!(s.tokens, u32::MAX);
    }

    #[test]
    fn idle_and_waits() {
        let b = bucket();
        let s = BucketState {
            tokens: 4,
            last_fill_ns: 0,
        };
        assert!(!b.is_idle(&s, SEC));
        assert!(b.is_idle(&s, 2 * SEC));
        assert_eq!(b.until_available(&s, SEC / 2, 4), Some(0));
        assert_eq!(b.until_available(&s, SEC / 2, 5), Some(SEC / 2));
        assert_eq!(b.until_available(&s, SEC / 2, 8), Some(SEC / 2 + SEC));
        assert_eq!(b.until_available(&s, 0, 11), None);
    }
}
