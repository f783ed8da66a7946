//! Controllable time and randomness for the guests.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Default wall-clock start: 2026-01-01T00:00:00Z in ns since the Unix epoch.
pub const DEFAULT_WALL_START_NS: u64 = 1_767_225_600_000_000_000;
/// Default monotonic start (an arbitrary positive value, like a host's uptime).
pub const DEFAULT_MONOTONIC_START_NS: u64 = 1_000_000_000_000;

/// The host clock: wall time (`proxy_get_current_time_nanoseconds`, WASI realtime) and
/// monotonic time (WASI monotonic, tick timers). Fixed by default so tests are repeatable;
/// tests move it with [`FakeClock::advance`]. [`FakeClock::real`] follows the machine clock
/// (for the dev proxy).
#[derive(Debug)]
pub struct FakeClock {
    wall_ns: AtomicU64,
    monotonic_ns: AtomicU64,
    real: AtomicBool,
    real_origin: Mutex<Option<(u64, std::time::Instant)>>,
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::fixed(DEFAULT_WALL_START_NS)
    }
}

impl FakeClock {
    /// A fake clock starting at `wall_ns`.
    pub fn fixed(wall_ns: u64) -> Self {
        Self {
            wall_ns: AtomicU64::new(wall_ns),
            monotonic_ns: AtomicU64::new(DEFAULT_MONOTONIC_START_NS),
            real: AtomicBool::new(false),
            real_origin: Mutex::new(None),
        }
    }

    /// A clock that follows the machine's clocks.
    pub fn real() -> Self {
        let clock = Self::default();
        clock.use_real_time();
        clock
    }

    /// Switches to the machine's clocks (advance/set then have no effect).
    #[allow(
        clippy::disallowed_methods,
        reason = "the real-time mode exists for the dev proxy, which serves real traffic"
    )]
    pub fn use_real_time(&self) {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        *self
            .real_origin
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((wall, std::time::Instant::now()));
        self.real.store(true, Ordering::SeqCst);
    }

    fn real_elapsed(&self) -> Option<(u64, u64)> {
        if !self.real.load(Ordering::SeqCst) {
            return None;
        }
        let origin = *self
            .real_origin
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        origin.map(|(wall, instant)| {
            let elapsed = u64::try_from(instant.elapsed().as_nanos()).unwrap_or(u64::MAX);
            (
                wall.saturating_add(elapsed),
                DEFAULT_MONOTONIC_START_NS.saturating_add(elapsed),
            )
        })
    }

    /// Wall time, ns since the Unix epoch.
    pub fn wall_ns(&self) -> u64 {
        self.real_elapsed()
            .map_or_else(|| self.wall_ns.load(Ordering::SeqCst), |(w, _)| w)
    }

    /// Monotonic time in ns.
    pub fn monotonic_ns(&self) -> u64 {
        self.real_elapsed()
            .map_or_else(|| self.monotonic_ns.load(Ordering::SeqCst), |(_, m)| m)
    }

    /// Sets the wall time.
    pub fn set_wall_ns(&self, ns: u64) {
        self.wall_ns.store(ns, Ordering::SeqCst);
    }

    /// Sets the monotonic time.
    pub fn set_monotonic_ns(&self, ns: u64) {
        self.monotonic_ns.store(ns, Ordering::SeqCst);
    }

    /// Advances both clocks.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.wall_ns.fetch_add(ns, Ordering::SeqCst);
        self.monotonic_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

/// Source of WASI `random_get` bytes: seeded (repeatable, the default) or process-random.
#[derive(Debug)]
pub struct RandomSource {
    state: Mutex<u64>,
    real: AtomicBool,
}

impl Default for RandomSource {
    fn default() -> Self {
        Self::seeded(0x6d65_7368_7761_7264)
    }
}

impl RandomSource {
    /// A repeatable source.
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: Mutex::new(seed),
            real: AtomicBool::new(false),
        }
    }

    /// A source seeded from the process's random hasher keys (OS randomness via std); not a
    /// CSPRNG, good enough for test and dev ids.
    pub fn real() -> Self {
        let source = Self::seeded(0);
        source.reseed_randomly();
        source
    }

    /// Re-seeds with a fixed seed.
    pub fn reseed(&self, seed: u64) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = seed;
        self.real.store(false, Ordering::SeqCst);
    }

    /// Re-seeds from process randomness.
    pub fn reseed_randomly(&self) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = hasher.finish();
        self.real.store(true, Ordering::SeqCst);
    }

    /// Fills `buf` (splitmix64 stream).
    pub fn fill(&self, buf: &mut [u8]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let bytes = z.to_le_bytes();
            for (dst, src) in chunk.iter_mut().zip(bytes.iter()) {
                *dst = *src;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_both_clocks() {
        let clock = FakeClock::default();
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.wall_ns(), DEFAULT_WALL_START_NS + 5_000_000);
        assert_eq!(clock.monotonic_ns(), DEFAULT_MONOTONIC_START_NS + 5_000_000);
    }

    #[test]
    fn seeded_random_is_repeatable() {
        let (a, b) = (RandomSource::seeded(7), RandomSource::seeded(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
    }
}
