//! Shared data (all worker VMs with one `vm_id`): a bounded compare-and-swap update loop and a
//! bounded key table.
//!
//! **CAS loop** — [`cas_update`] reads a key, lets the caller compute the new value, and writes it
//! with the CAS token it read; a lost race is retried up to a bound, and the result says
//! explicitly whether the update happened, contention exhausted the retries, or the host failed.
//! The ABI cannot express "insert if absent" (a CAS of 0 writes unconditionally), but Envoy
//! treats a non-zero CAS on an absent key as an insert and rejects it once someone else created
//! the key, so an absent key is written with [`ABSENT_KEY_CAS`].
//!
//! **Key table** — Envoy's shared data has no delete and no TTL (user-asks #7): keys derived
//! from client input or time windows leak. [`KeyTable`] maps any number of logical keys (client
//! ids, IPs…) onto a fixed set of `slots` shared-data keys `<prefix>/<slot>`, chosen by a seeded
//! FNV-1a hash. Each slot holds up to `ways` entries, each with its logical key (so collisions
//! are detected, never merged), its value and when it was last written. A write drops the slot's
//! idle entries (older than `idle_ttl`); if the slot is still full, it evicts the entry written
//! longest ago (ties: the first). The host key space is therefore at most `slots` keys of bounded
//! size, whatever the traffic.
//!
//! Slot encoding (little-endian, versioned): `u8 version = 1`, `u8 count`, then per entry
//! `u64 touched_nanos`, `u8 key_len`, key, `u16 value_len`, value. Logical keys longer than
//! [`MAX_STORED_KEY`] bytes are stored as a 9-byte fingerprint (`0xff` + a second 64-bit hash).
//! An undecodable slot (corrupt, or written by a future version) reads as empty and is
//! overwritten by the next write.

use crate::config::InvalidConfig;
use crate::host::{Host, HostError, Nanos};

/// The CAS token used to create an absent key: Envoy inserts on a non-zero token when the key is
/// absent and reports a mismatch if another writer created it meanwhile (a live key has this
/// exact token only after ~4 billion process-wide writes, and then only by chance).
pub const ABSENT_KEY_CAS: u32 = u32::MAX;

/// Default retry bound for contended updates.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// What an update function decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update<T> {
    /// Write these bytes, then return the value.
    Write(Vec<u8>, T),
    /// Nothing to write (the current value is fine); return the value.
    Keep(T),
}

/// The result of a bounded compare-and-swap update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome<T> {
    /// The update function's decision was applied to the value it saw (written, or nothing to
    /// write), and this is what it returned.
    Updated(T),
    /// Every attempt lost a race; apply the filter's contention policy.
    Exhausted {
        /// How many writes were tried.
        attempts: u32,
    },
    /// The host failed a read or a write for another reason.
    HostFailed(HostError),
}

impl<T> CasOutcome<T> {
    /// The value when [`CasOutcome::Updated`].
    pub fn updated(self) -> Option<T> {
        match self {
            Self::Updated(value) => Some(value),
            Self::Exhausted { .. } | Self::HostFailed(_) => None,
        }
    }
}

/// Reads `key`, computes the new value with `update` (which sees `None` for an absent or empty
/// key), and writes it with the token it read, retrying on [`HostError::CasMismatch`] up to
/// `max_attempts` times (at least once). `update` may run several times: keep it pure.
pub fn cas_update<T>(
    host: &(impl Host + ?Sized),
    key: &str,
    max_attempts: u32,
    mut update: impl FnMut(Option<&[u8]>) -> Update<T>,
) -> CasOutcome<T> {
    let max_attempts = max_attempts.max(1);
    for _ in 0..max_attempts {
        let current = match host.shared_data(key) {
            Ok(current) => current,
            Err(error) => return CasOutcome::HostFailed(error),
        };
        let (bytes, result) = match update(current.value.as_deref()) {
            Update::Keep(result) => return CasOutcome::Updated(result),
            Update::Write(bytes, result) => (bytes, result),
        };
        let cas = current.cas.unwrap_or(ABSENT_KEY_CAS);
        match host.set_shared_data(key, &bytes, Some(cas)) {
            Ok(()) => return CasOutcome::Updated(result),
            Err(HostError::CasMismatch) => {}
            Err(error) => return CasOutcome::HostFailed(error),
        }
    }
    CasOutcome::Exhausted {
        attempts: max_attempts,
    }
}

// === hashing ===

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Seeded 64-bit FNV-1a: the seed's bytes are hashed before `bytes`. Fast and tiny; not a keyed
/// PRF, so it spreads keys but does not stop a determined attacker from colliding them (which
/// then only costs evictions, never memory).
pub fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    seed.to_le_bytes()
        .iter()
        .chain(bytes)
        .fold(FNV_OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
        })
}

// === key table ===

/// Longest logical key stored verbatim; longer keys are stored as a fingerprint.
pub const MAX_STORED_KEY: usize = 64;
/// Largest value an entry can hold.
pub const MAX_VALUE_LEN: usize = u16::MAX as usize;
/// Largest slot count a table may have.
pub const MAX_SLOTS: u32 = 65_536;
/// Largest number of entries per slot.
pub const MAX_WAYS: u8 = 32;

const SLOT_VERSION: u8 = 1;
const FINGERPRINT_TAG: u8 = 0xff;

/// One logical entry of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: Vec<u8>,
    touched: Nanos,
    value: Vec<u8>,
}

fn encode_slot(entries: &[Entry]) -> Vec<u8> {
    let size = 2 + entries
        .iter()
        .map(|e| 11 + e.key.len() + e.value.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(SLOT_VERSION);
    out.push(u8::try_from(entries.len()).unwrap_or(u8::MAX));
    for entry in entries.iter().take(usize::from(u8::MAX)) {
        out.extend_from_slice(&entry.touched.to_le_bytes());
        out.push(u8::try_from(entry.key.len()).unwrap_or(0));
        out.extend_from_slice(&entry.key);
        out.extend_from_slice(&u16::try_from(entry.value.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&entry.value);
    }
    out
}

/// Reads a slot; `None` when it is not a valid version-1 slot.
fn decode_slot(bytes: &[u8]) -> Option<Vec<Entry>> {
    let (&version, rest) = bytes.split_first()?;
    if version != SLOT_VERSION {
        return None;
    }
    let (&count, mut rest) = rest.split_first()?;
    let mut entries = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (touched, after) = rest.split_first_chunk::<8>()?;
        let (&key_len, after) = after.split_first()?;
        let (key, after) = after.split_at_checked(usize::from(key_len))?;
        let (value_len, after) = after.split_first_chunk::<2>()?;
        let (value, after) = after.split_at_checked(usize::from(u16::from_le_bytes(*value_len)))?;
        entries.push(Entry {
            key: key.to_vec(),
            touched: u64::from_le_bytes(*touched),
            value: value.to_vec(),
        });
        rest = after;
    }
    rest.is_empty().then_some(entries)
}

/// What a [`KeyTable::update`] did besides running the update function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUpdate<T> {
    /// What the update function returned.
    pub result: T,
    /// Live entries of other logical keys evicted to make room (0 or 1); count it in a metric.
    pub evicted: u32,
    /// Idle entries dropped from the slot while writing.
    pub expired: u32,
}

/// A fixed-size table of logical keys over shared data; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTable {
    prefix: String,
    slots: u32,
    ways: u8,
    idle_ttl: Nanos,
    seed: u64,
    max_attempts: u32,
}

impl KeyTable {
    /// A table of `slots` shared-data keys `<prefix>/<0..slots>`, each holding up to `ways`
    /// entries, entries idle for `idle_ttl` nanoseconds being reclaimable.
    ///
    /// `seed` must be the same in every worker VM (derive it from the configuration, e.g.
    /// [`fnv1a64`] of the rule name — never from randomness), or workers would disagree on slots.
    ///
    /// # Errors
    ///
    /// An empty prefix, `slots` outside `1..=65536`, `ways` outside `1..=32`, or a zero TTL
    /// (paths `prefix`, `slots`, `ways`, `idleTtl`, relative to the caller's table config).
    pub fn new(
        prefix: &str,
        slots: u32,
        ways: u8,
        idle_ttl: Nanos,
        seed: u64,
    ) -> Result<Self, InvalidConfig> {
        if prefix.is_empty() {
            return Err(InvalidConfig::at("prefix", "must not be empty"));
        }
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(InvalidConfig::at(
                "slots",
                format!("must be between 1 and {MAX_SLOTS}"),
            ));
        }
        if !(1..=MAX_WAYS).contains(&ways) {
            return Err(InvalidConfig::at(
                "ways",
                format!("must be between 1 and {MAX_WAYS}"),
            ));
        }
        if idle_ttl == 0 {
            return Err(InvalidConfig::at("idleTtl", "must be greater than zero"));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            slots,
            ways,
            idle_ttl,
            seed,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// Sets the CAS retry bound (default [`DEFAULT_MAX_ATTEMPTS`]).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The number of shared-data keys this table can ever use.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The slot a logical key lives in.
    pub fn slot_of(&self, logical_key: &[u8]) -> u32 {
        // Modulo bias is irrelevant at these sizes.
        u32::try_from(fnv1a64(self.seed, logical_key) % u64::from(self.slots)).unwrap_or(0)
    }

    /// The shared-data key of a slot: `<prefix>/<slot>`.
    pub fn slot_key(&self, slot: u32) -> String {
        format!("{}/{slot}", self.prefix)
    }

    fn stored_key(&self, logical_key: &[u8]) -> Vec<u8> {
        if logical_key.len() <= MAX_STORED_KEY {
            return logical_key.to_vec();
        }
        let mut fingerprint = Vec::with_capacity(9);
        fingerprint.push(FINGERPRINT_TAG);
        fingerprint.extend_from_slice(&fnv1a64(!self.seed, logical_key).to_le_bytes());
        fingerprint
    }

    fn is_idle(&self, entry: &Entry, now: Nanos) -> bool {
        now.saturating_sub(entry.touched) >= self.idle_ttl
    }

    /// The live value of `logical_key` (`None` if absent or idle).
    ///
    /// # Errors
    ///
    /// The host's error when the slot cannot be read.
    pub fn get(
        &self,
        host: &(impl Host + ?Sized),
        logical_key: &[u8],
        now: Nanos,
    ) -> Result<Option<Vec<u8>>, HostError> {
        let slot = host.shared_data(&self.slot_key(self.slot_of(logical_key)))?;
        let stored = self.stored_key(logical_key);
        Ok(slot
            .value
            .as_deref()
            .and_then(decode_slot)
            .unwrap_or_default()
            .into_iter()
            .find(|entry| entry.key == stored && !self.is_idle(entry, now))
            .map(|entry| entry.value))
    }

    /// Updates `logical_key` under CAS: `update` sees its live value (`None` when absent or
    /// idle) and returns the new value (`Some`, stamped with `now`) or `None` to leave the slot
    /// untouched, plus a result. Values longer than [`MAX_VALUE_LEN`] are refused with
    /// [`HostError::BadArgument`] before any write.
    pub fn update<T>(
        &self,
        host: &(impl Host + ?Sized),
        logical_key: &[u8],
        now: Nanos,
        mut update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> CasOutcome<TableUpdate<T>> {
        let key = self.slot_key(self.slot_of(logical_key));
        let stored = self.stored_key(logical_key);
        let mut too_large = false;
        let outcome = cas_update(host, &key, self.max_attempts, |current| {
            let mut entries = current.and_then(decode_slot).unwrap_or_default();
            let position = entries.iter().position(|entry| entry.key == stored);
            let live_value = position
                .and_then(|i| entries.get(i))
                .filter(|entry| !self.is_idle(entry, now))
                .map(|entry| entry.value.as_slice());
            let (new_value, result) = update(live_value);
            let Some(new_value) = new_value else {
                return Update::Keep(TableUpdate {
                    result,
                    evicted: 0,
                    expired: 0,
                });
            };
            if new_value.len() > MAX_VALUE_LEN {
                too_large = true;
                return Update::Keep(TableUpdate {
                    result,
                    evicted: 0,
                    expired: 0,
                });
            }
            if let Some(i) = position {
                entries.remove(i);
            }
            let before = entries.len();
            entries.retain(|entry| !self.is_idle(entry, now));
            let expired = u32::try_from(before - entries.len()).unwrap_or(u32::MAX);
            let mut evicted = 0;
            while entries.len() >= usize::from(self.ways) {
                let oldest = entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, entry)| (entry.touched, *i))
                    .map(|(i, _)| i);
                match oldest {
                    Some(i) => {
                        entries.remove(i);
                        evicted += 1;
                    }
                    None => break,
                }
            }
            entries.push(Entry {
                key: stored.clone(),
                touched: now,
                value: new_value,
            });
            Update::Write(
                encode_slot(&entries),
                TableUpdate {
                    result,
                    evicted,
                    expired,
                },
            )
        });
        if too_large {
            return CasOutcome::HostFailed(HostError::BadArgument);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::mock::{Hostcall, MockHost};

    const SECOND: Nanos = 1_000_000_000;

    fn increment(current: Option<&[u8]>) -> Update<u64> {
        let value = current
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u64::from_le_bytes)
            + 1;
        Update::Write(value.to_le_bytes().to_vec(), value)
    }

    #[test]
    fn cas_update_writes_a_new_key() {
        let host = MockHost::new();
        assert_eq!(cas_update(&host, "k", 3, increment), CasOutcome::Updated(1));
        assert_eq!(cas_update(&host, "k", 3, increment), CasOutcome::Updated(2));
        assert_eq!(host.shared_entry("k").unwrap().0, 2u64.to_le_bytes());
    }

    #[test]
    fn cas_update_retries_after_a_mismatch() {
        let host = MockHost::new()
            .with_shared_data("k", 5u64.to_le_bytes())
            .failing_next(Hostcall::SetSharedData, HostError::CasMismatch, 2);
        let mut calls = 0;
        let outcome = cas_update(&host, "k", 3, |current| {
            calls += 1;
            increment(current)
        });
        assert_eq!(outcome, CasOutcome::Updated(6));
        assert_eq!(calls, 3);
    }

    #[test]
    fn cas_update_loses_a_real_race_and_sees_the_other_write() {
        let host = MockHost::new().with_shared_data("k", 1u64.to_le_bytes());
        let mut first = true;
        let outcome = cas_update(&host, "k", 2, |current| {
            if first {
                first = false;
                // Another worker writes between our read and our write.
                host.put_shared_data("k", 10u64.to_le_bytes());
            }
            increment(current)
        });
        assert_eq!(outcome, CasOutcome::Updated(11));
    }

    #[test]
    fn cas_update_on_an_absent_key_does_not_clobber_a_concurrent_insert() {
        let host = MockHost::new();
        let mut first = true;
        let outcome = cas_update(&host, "k", 2, |current| {
            if first {
                first = false;
                host.put_shared_data("k", 7u64.to_le_bytes());
            }
            increment(current)
        });
        assert_eq!(outcome, CasOutcome::Updated(8));
    }

    #[test]
    fn cas_update_reports_exhaustion() {
        let host = MockHost::new().failing_always(Hostcall::SetSharedData, HostError::CasMismatch);
        assert_eq!(
            cas_update(&host, "k", 4, increment),
            CasOutcome::Exhausted { attempts: 4 }
        );
        assert_eq!(
            cas_update(&host, "k", 0, increment),
            CasOutcome::Exhausted { attempts: 1 }
        );
    }

    #[test]
    fn cas_update_reports_host_failures() {
        let host =
            MockHost::new().failing_next(Hostcall::SharedData, HostError::InternalFailure, 1);
        assert_eq!(
            cas_update(&host, "k", 4, increment),
            CasOutcome::HostFailed(HostError::InternalFailure)
        );
        host.fail_next(Hostcall::SetSharedData, HostError::BadArgument, 1);
        assert_eq!(
            cas_update(&host, "k", 4, increment),
            CasOutcome::HostFailed(HostError::BadArgument)
        );
    }

    #[test]
    fn keep_does_not_write() {
        let host = MockHost::new();
        assert_eq!(
            cas_update(&host, "k", 4, |_| Update::Keep("no")),
            CasOutcome::Updated("no")
        );
        assert_eq!(host.shared_writes(), 0);
    }

    #[test]
    fn fnv1a64_matches_the_reference_and_depends_on_the_seed() {
        // Reference FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; with a seed the 8 seed bytes come first.
        let unseeded = b"a".iter().fold(FNV_OFFSET, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
        });
        assert_eq!(unseeded, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(1, b"a"), fnv1a64(2, b"a"));
        assert_eq!(fnv1a64(9, b"client"), fnv1a64(9, b"client"));
    }

    fn table(slots: u32, ways: u8) -> KeyTable {
        KeyTable::new("meshward.test", slots, ways, 60 * SECOND, 42).unwrap()
    }

    fn put(
        table: &KeyTable,
        host: &MockHost,
        key: &[u8],
        value: &[u8],
        now: Nanos,
    ) -> TableUpdate<()> {
        table
            .update(host, key, now, |_| (Some(value.to_vec()), ()))
            .updated()
            .unwrap()
    }

    #[test]
    fn table_round_trips_values() {
        let host = MockHost::new();
        let table = table(8, 2);
        put(&table, &host, b"client-a", b"1", 0);
        assert_eq!(
            table.get(&host, b"client-a", SECOND).unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(table.get(&host, b"client-b", SECOND).unwrap(), None);
        let seen = table
            .update(&host, b"client-a", SECOND, |current| {
                (Some(b"2".to_vec()), current.map(<[u8]>::to_vec))
            })
            .updated()
            .unwrap();
        assert_eq!(seen.result.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            host.shared_keys(),
            [table.slot_key(table.slot_of(b"client-a"))]
        );
    }

    #[test]
    fn colliding_keys_share_a_slot_without_mixing_values() {
        let host = MockHost::new();
        let table = table(1, 4);
        put(&table, &host, b"a", b"va", 0);
        put(&table, &host, b"b", b"vb", 0);
        assert_eq!(
            table.get(&host, b"a", 0).unwrap().as_deref(),
            Some(&b"va"[..])
        );
        assert_eq!(
            table.get(&host, b"b", 0).unwrap().as_deref(),
            Some(&b"vb"[..])
        );
        assert_eq!(host.shared_keys(), ["meshward.test/0"]);
    }

    #[test]
    fn idle_entries_expire_and_are_reclaimed_first() {
        let host = MockHost::new();
        let table = table(1, 2);
        put(&table, &host, b"old", b"1", 0);
        put(&table, &host, b"fresh", b"2", 50 * SECOND);
        // At 61 s "old" is idle: it reads as absent and is dropped instead of evicting "fresh".
        assert_eq!(table.get(&host, b"old", 61 * SECOND).unwrap(), None);
        let update = put(&table, &host, b"new", b"3", 61 * SECOND);
        assert_eq!((update.expired, update.evicted), (1, 0));
        assert!(table.get(&host, b"fresh", 61 * SECOND).unwrap().is_some());
    }

    #[test]
    fn a_full_slot_evicts_the_least_recently_written_entry() {
        let host = MockHost::new();
        let table = table(1, 2);
        put(&table, &host, b"a", b"1", SECOND);
        put(&table, &host, b"b", b"2", 2 * SECOND);
        put(&table, &host, b"a", b"1", 3 * SECOND); // refreshes "a"
        let update = put(&table, &host, b"c", b"3", 4 * SECOND);
        assert_eq!(update.evicted, 1);
        assert_eq!(table.get(&host, b"b", 4 * SECOND).unwrap(), None);
        assert!(table.get(&host, b"a", 4 * SECOND).unwrap().is_some());
        assert!(table.get(&host, b"c", 4 * SECOND).unwrap().is_some());
    }

    #[test]
    fn long_keys_are_stored_as_fingerprints() {
        let host = MockHost::new();
        let table = table(1, 4);
        let long_a = vec![b'a'; 300];
        let mut long_b = long_a.clone();
        long_b.push(b'b');
        put(&table, &host, &long_a, b"A", 0);
        put(&table, &host, &long_b, b"B", 0);
        assert_eq!(
            table.get(&host, &long_a, 0).unwrap().as_deref(),
            Some(&b"A"[..])
        );
        assert_eq!(
            table.get(&host, &long_b, 0).unwrap().as_deref(),
            Some(&b"B"[..])
        );
        assert!(host.shared_entry("meshward.test/0").unwrap().0.len() < 64);
    }

    #[test]
    fn corrupt_or_future_slots_read_as_empty_and_are_overwritten() {
        for garbage in [&b"\x02\x01whatever"[..], b"\x01\x05", b"\x01\x00extra", b""] {
            let host = MockHost::new();
            let table = table(1, 2);
            host.put_shared_data("meshward.test/0", garbage);
            assert_eq!(table.get(&host, b"a", 0).unwrap(), None);
            put(&table, &host, b"a", b"1", 0);
            assert_eq!(
                table.get(&host, b"a", 0).unwrap().as_deref(),
                Some(&b"1"[..])
            );
        }
    }

    #[test]
    fn oversized_values_are_refused_without_writing() {
        let host = MockHost::new();
        let outcome =
            table(1, 1).update(&host, b"a", 0, |_| (Some(vec![0; MAX_VALUE_LEN + 1]), ()));
        assert_eq!(outcome, CasOutcome::HostFailed(HostError::BadArgument));
        assert_eq!(host.shared_writes(), 0);
    }

    #[test]
    fn table_contention_is_reported() {
        let host = MockHost::new().failing_always(Hostcall::SetSharedData, HostError::CasMismatch);
        let outcome = table(4, 2)
            .with_max_attempts(3)
            .update(&host, b"a", 0, |_| (Some(b"1".to_vec()), ()));
        assert_eq!(outcome, CasOutcome::Exhausted { attempts: 3 });
    }

    #[test]
    fn table_config_is_validated() {
        let cases = [
            (KeyTable::new("", 1, 1, 1, 0), "prefix"),
            (KeyTable::new("p", 0, 1, 1, 0), "slots"),
            (KeyTable::new("p", MAX_SLOTS + 1, 1, 1, 0), "slots"),
            (KeyTable::new("p", 1, 0, 1, 0), "ways"),
            (KeyTable::new("p", 1, 1, 0, 0), "idleTtl"),
        ];
        for (result, path) in cases {
            assert_eq!(result.unwrap_err().path(), path);
        }
    }

    #[test]
    fn slot_encoding_round_trips() {
        let entries = vec![
            Entry {
                key: b"k1".to_vec(),
                touched: 7,
                value: b"v".to_vec(),
            },
            Entry {
                key: vec![],
                touched: u64::MAX,
                value: vec![],
            },
        ];
        assert_eq!(decode_slot(&encode_slot(&entries)), Some(entries));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn the_key_space_never_exceeds_the_slot_count(
                slots in 1u32..6,
                ways in 1u8..4,
                writes in proptest::collection::vec((0u16..200, 0u64..120), 1..200),
            ) {
                let host = MockHost::new();
                let table = KeyTable::new("p", slots, ways, 30 * SECOND, 7).unwrap();
                let mut now = 0;
                for (client, step) in writes {
                    now += step * SECOND / 10;
                    let key = format!("client-{client}");
                    let update = table.update(&host, key.as_bytes(), now, |_| (Some(client.to_le_bytes().to_vec()), ()));
                    prop_assert!(update.updated().is_some());
                    // The value just written is readable, under its own key only.
                    let read = table.get(&host, key.as_bytes(), now).unwrap();
                    prop_assert_eq!(read, Some(client.to_le_bytes().to_vec()));
                    prop_assert!(host.shared_keys().len() <= slots as usize);
                    for slot_key in host.shared_keys() {
                        let entries = decode_slot(&host.shared_entry(&slot_key).unwrap().0).unwrap();
                        prop_assert!(entries.len() <= usize::from(ways));
                    }
                }
            }
        }
    }
}
