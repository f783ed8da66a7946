//! One shared-data value: a bounded table of token buckets, keyed by exact key bytes.
//!
//! Layout (little-endian): one format byte ([`FORMAT`]), then up to `capacity` records of
//! `[key_len: u8][key: key_len bytes][tokens: u32][last_fill_ns: u64][last_used_ns: u64]`.
//! Keys are stored whole, so two keys that hash to the same slot are two records: a collision
//! costs a place in the table, never a shared bucket.
//!
//! A missing key gets a new, full bucket. When the table is full, a record that is *idle* (its
//! bucket would be full again by now, so dropping it changes no decision) is evicted first, else
//! the least recently used one (`Overflow::EvictLru`, like Envoy's `max_dynamic_descriptors`),
//! or the request is refused its own bucket (`Overflow::Deny`). The value is edited in place and
//! written back by the caller with compare-and-swap.

use crate::bucket::{BucketState, TokenBucket};

/// First byte of every table value (also the whole value of an empty table: shared data cannot
/// hold an empty value, Envoy reads it back as absent).
pub const FORMAT: u8 = 0x52;
/// Longest key stored (bytes).
pub const MAX_KEY_LEN: usize = 130;
const TAIL: usize = 4 + 8 + 8;

/// What to do with a new key when its table is full of busy keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Evict the least recently used key (it restarts with a full bucket later).
    #[default]
    EvictLru,
    /// Keep the table; the new key's request is limited.
    Deny,
}

/// Why a record left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its bucket was full again: nothing lost.
    Idle,
    /// Least recently used while busy.
    Lru,
}

/// The result of charging one request to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Charge {
    /// The request fits.
    pub allowed: bool,
    /// Tokens left in the bucket after this request.
    pub remaining: u32,
    /// Nanoseconds until the next fill.
    pub reset_ns: u64,
    /// Nanoseconds until the request's cost would fit (`None`: never).
    pub retry_after_ns: Option<u64>,
    /// The table changed and must be written back.
    pub write: bool,
    /// A record was added (live keys + 1).
    pub inserted: bool,
    /// A record was evicted to make room.
    pub evicted: Option<Eviction>,
    /// The table was full and `Overflow::Deny` refused a new key.
    pub overflowed: bool,
}

/// Table parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// The bucket of every key.
    pub bucket: TokenBucket,
    /// Records per table.
    pub capacity: usize,
    /// Full-table policy.
    pub overflow: Overflow,
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn write_at(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// A record's position: start, start of its tail (tokens), end.
#[derive(Debug, Clone, Copy)]
struct Record {
    start: usize,
    tail: usize,
    end: usize,
}

impl Record {
    fn state(self, buf: &[u8]) -> BucketState {
        BucketState {
            tokens: read_u32(buf, self.tail).unwrap_or(0),
            last_fill_ns: read_u64(buf, self.tail + 4).unwrap_or(0),
        }
    }

    fn last_used(self, buf: &[u8]) -> u64 {
        read_u64(buf, self.tail + 12).unwrap_or(0)
    }
}

/// Iterates the records of a table; stops (and reports the length to keep) at a malformed one.
struct Records<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let len = usize::from(*self.buf.get(self.at)?);
        let start = self.at;
        let tail = start + 1 + len;
        let end = tail + TAIL;
        if end > self.buf.len() {
            return None;
        }
        self.at = end;
        Some(Record { start, tail, end })
    }
}

fn records(buf: &[u8]) -> Records<'_> {
    Records { buf, at: 1 }
}

/// Normalizes a value read from shared data into a table: anything that is not one (foreign or
/// truncated data) loses its malformed part rather than failing requests.
fn normalize(buf: &mut Vec<u8>) {
    if buf.first() != Some(&FORMAT) {
        buf.clear();
        buf.push(FORMAT);
        return;
    }
    let mut it = records(buf);
    let mut end = 1;
    for record in it.by_ref() {
        end = record.end;
    }
    buf.truncate(end);
}

/// Number of records in a table value.
pub fn len(buf: &[u8]) -> usize {
    records(buf).count()
}

/// The keys stored in a table value (tests and tools).
pub fn keys(buf: &[u8]) -> Vec<Vec<u8>> {
    records(buf)
        .filter_map(|r| buf.get(r.start + 1..r.tail).map(<[u8]>::to_vec))
        .collect()
}

/// Charges `cost` tokens for `key` at `now`, editing `buf` (a table value) in place.
pub fn charge(buf: &mut Vec<u8>, spec: &TableSpec, key: &[u8], cost: u32, now: u64) -> Charge {
    normalize(buf);
    let bucket = &spec.bucket;
    let key = key.get(..MAX_KEY_LEN.min(key.len())).unwrap_or_default();
    let found = records(buf).find(|r| buf.get(r.start + 1..r.tail) == Some(key));
    let mut out = Charge::default();
    let (record, mut state, last_used) = if let Some(record) = found {
        // Foreign or corrupted shared data never grants more than a full bucket.
        let mut state = record.state(buf);
        state.tokens = state.tokens.min(bucket.max_tokens);
        (record, state, record.last_used(buf))
    } else {
        let state = bucket.new_state(now);
        if len(buf) >= spec.capacity {
            let idle = records(buf).find(|r| bucket.is_idle(&r.state(buf), now));
            let victim = match (idle, spec.overflow) {
                (Some(r), _) => Some((r, Eviction::Idle)),
                (None, Overflow::EvictLru) => records(buf)
                    .min_by_key(|r| r.last_used(buf))
                    .map(|r| (r, Eviction::Lru)),
                (None, Overflow::Deny) => None,
            };
            let Some((victim, why)) = victim else {
                // A new key in a full table: judged as a new bucket would be, but not stored,
                // so a flood of new keys cannot take the places of busy ones.
                out.overflowed = true;
                out.allowed = false;
                out.reset_ns = bucket.fill_interval_ns;
                out.retry_after_ns = Some(bucket.fill_interval_ns);
                return out;
            };
            buf.drain(victim.start..victim.end);
            out.evicted = Some(why);
        }
        let start = buf.len();
        // `key` is at most MAX_KEY_LEN (< 256) bytes.
        buf.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
        buf.extend_from_slice(key);
        let tail = buf.len();
        buf.extend_from_slice(&[0; TAIL]);
        out.inserted = true;
        out.write = true;
        let record = Record {
            start,
            tail,
            end: tail + TAIL,
        };
        (record, state, now)
    };
    out.write |= bucket.refill(&mut state, now);
    out.allowed = bucket.max_tokens > 0 && state.tokens >= cost;
    if out.allowed {
        state.tokens -= cost;
        out.write |= cost > 0;
    }
    // A limited key is touched at most once an interval: enough for LRU, no write per request.
    let touch = out.allowed || now.saturating_sub(last_used) >= bucket.fill_interval_ns;
    out.remaining = state.tokens;
    out.reset_ns = bucket.until_next_fill(&state, now);
    out.retry_after_ns = bucket.until_available(&state, now, cost);
    if out.write || touch {
        out.write = true;
        write_at(buf, record.tail, &state.tokens.to_le_bytes());
        write_at(buf, record.tail + 4, &state.last_fill_ns.to_le_bytes());
        write_at(buf, record.tail + 12, &now.max(last_used).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, reason = "test code")]

    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// Regression (found by `make fuzz`, target bucket_table): a record holding more tokens than
    /// the bucket's capacity (corrupted or foreign shared data) allowed that many requests.
    #[test]
    fn a_record_over_capacity_is_clamped_to_a_full_bucket() {
        let spec = spec(4, Overflow::EvictLru);
        let mut buf = vec![FORMAT, 1, b'k'];
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        let allowed = (0..10)
            .filter(|_| charge(&mut buf, &spec, b"k", 1, SEC).allowed)
            .count();
        assert_eq!(allowed, 3);
    }

    fn spec(capacity: usize, overflow: Overflow) -> TableSpec {
        TableSpec {
            bucket: TokenBucket {
                max_tokens: 3,
                tokens_per_fill: 1,
                fill_interval_ns: SEC,
            },
            capacity,
            overflow,
        }
    }

    #[test]
    fn admits_exactly_max_tokens_then_refills() {
        let spec = spec(4, Overflow::EvictLru);
        let mut buf = vec![FORMAT];
        let allowed: Vec<bool> = (0..5)
            .map(|_| charge(&mut buf, &spec, b"k", 1, 10).allowed)
            .collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        let c = charge(&mut buf, &spec, b"k", 1, 10 + SEC);
        assert!(c.allowed);
        assert_eq!(c.remaining, 0);
        assert!(!charge(&mut buf, &spec, b"k", 1, 10 + SEC).allowed);
        assert_eq!(len(&buf), 1);
    }

    #[test]
    fn colliding_keys_keep_their_own_buckets() {
        let spec = spec(4, Overflow::EvictLru);
        let mut buf = vec![FORMAT];
        for _ in 0..3 {
            assert!(charge(&mut buf, &spec, b"a", 1, 0).allowed);
        }
        assert!(!charge(&mut buf, &spec, b"a", 1, 0).allowed);
        assert!(charge(&mut buf, &spec, b"b", 1, 0).allowed);
        assert_eq!(keys(&buf), [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn full_tables_evict_idle_then_lru_or_deny() {
        let lru = spec(2, Overflow::EvictLru);
        let mut buf = vec![FORMAT];
        charge(&mut buf, &lru, b"a", 3, 0);
        charge(&mut buf, &lru, b"b", 3, 1);
        let c = charge(&mut buf, &lru, b"c", 1, 2);
        assert_eq!(c.evicted, Some(Eviction::Lru));
        assert_eq!(keys(&buf), [b"b".to_vec(), b"c".to_vec()]);
        // After 3 s, "b" is full again: idle, evicted first whatever its recency.
        charge(&mut buf, &lru, b"c", 1, 3 * SEC);
        let c = charge(&mut buf, &lru, b"d", 1, 3 * SEC + 1);
        assert_eq!(c.evicted, Some(Eviction::Idle));
        assert_eq!(keys(&buf), [b"c".to_vec(), b"d".to_vec()]);

        let deny = spec(1, Overflow::Deny);
        let mut buf = vec![FORMAT];
        charge(&mut buf, &deny, b"a", 1, 0);
        let c = charge(&mut buf, &deny, b"b", 1, 0);
        assert!(c.overflowed && !c.allowed && !c.write);
        assert_eq!(len(&buf), 1);
    }

    #[test]
    fn malformed_values_are_repaired_not_trusted() {
        let spec = spec(2, Overflow::EvictLru);
        let mut buf = b"garbage".to_vec();
        assert!(charge(&mut buf, &spec, b"k", 1, 0).allowed);
        assert_eq!(len(&buf), 1);
        buf.extend_from_slice(&[200, 1, 2]);
        assert!(charge(&mut buf, &spec, b"k", 1, 0).allowed);
        assert_eq!(len(&buf), 1);
        let zero = TableSpec {
            bucket: TokenBucket {
                max_tokens: 0,
                ..spec.bucket
            },
            ..spec
        };
        assert!(!charge(&mut buf, &zero, b"z", 0, 0).allowed);
    }

    proptest::proptest! {
        /// Whatever shared data holds (foreign bytes, truncated tables) and whatever the clock
        /// says, charging never panics, keeps at most `capacity` records and never lets a bucket
        /// exceed `maxTokens`.
        #[test]
        fn any_value_any_key_any_time(
            mut buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            keys in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..20),
            times in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..20),
            cost in 0u32..5,
        ) {
            let spec = spec(3, Overflow::EvictLru);
            for (key, now) in keys.iter().zip(times.iter().cycle()) {
                let c = charge(&mut buf, &spec, key, cost, *now);
                proptest::prop_assert!(c.remaining <= spec.bucket.max_tokens);
                proptest::prop_assert!(len(&buf) <= spec.capacity);
            }
        }
    }
}
