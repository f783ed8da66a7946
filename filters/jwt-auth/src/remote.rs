//! `remote_jwks`: one provider's key set fetched from the IdP and shared by every worker VM.
//!
//! Shared data (per `vm_id`), three keys per provider, named after the provider and the URI:
//! - `…/body`: the last JWKS document that parsed into at least one usable key (≤
//!   [`MAX_JWKS_BYTES`]); written before `…/meta`, so a VM that sees a new generation always
//!   finds a body at least that new.
//! - `…/meta`: `"<generation> <fetched_at_ns> <failures>"`. A VM re-parses the body only when the
//!   generation differs from the one it holds: the check is one small shared-data read, done on
//!   verified-token cache misses and on the root's tick (cache hits read nothing).
//! - `…/lease`: `"<held_until_ns> <last_start_ns> <attempt>"`, taken with CAS by the root of the
//!   VM that fetches, so one fetch is in flight across workers; it is held for the timeout plus a
//!   second (a VM that dies frees it by expiry), then released, or kept as the back-off after a
//!   failure (`retry_policy`, then `failed_refetch_duration`). `last_start_ns` also spaces
//!   refetches asked for by an unknown `kid`: at most one per
//!   [`UNKNOWN_KID_REFETCH_INTERVAL_NS`] per provider across workers.
//!
//! Freshness: a set is refreshed from 90% of `cache_duration` on (the root's tick), is fresh
//! until `cache_duration`, and stays usable as last-known-good for one more `cache_duration`
//! while fetches fail; after that the provider's requests fail with "Jwks remote fetch is
//! failed" (401) until a fetch succeeds.

use std::rc::Rc;

use meshward_core::host::{BufferKind, Host, HostError, HostResult, MapKind, Nanos};

use crate::config::{Provider, RemoteJwks};
use crate::jwks::{self, KeySet, MAX_JWKS_BYTES};

/// The root's tick period while nothing waits: refresh and sync checks.
pub const REFRESH_TICK_MS: u32 = 1000;
/// The root's tick period while streams wait on another VM's fetch.
pub const POLL_TICK_MS: u32 = 50;
/// The tick period a stream sets so its root fetches at its very next callback.
pub const KICK_TICK_MS: u32 = 1;
/// Most streams waiting for keys per VM; beyond that a request is answered at once.
pub const MAX_WAITERS: usize = 256;
/// Shortest time between two refetches asked for by unknown `kid`s (per provider, all workers).
pub const UNKNOWN_KID_REFETCH_INTERVAL_NS: u64 = 30 * SECOND;
/// Longest time a stream waits for keys.
pub const MAX_WAIT_NS: u64 = 30 * SECOND;
const SECOND: u64 = 1_000_000_000;

/// Why a stream waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The provider has no usable key set.
    Keys,
    /// The token's `kid` is not in the set: maybe the IdP rotated.
    UnknownKid,
}

/// What a lease attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This VM holds it now (with the failed-attempt count so far).
    Taken(u32),
    /// Another fetch is in flight, or the back-off after a failure runs.
    Busy,
    /// An unknown-`kid` refetch happened too recently; allowed again at this time.
    TooSoon(Nanos),
}

/// What syncing with shared data found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    /// Another VM stored a new key set (now parsed here).
    pub new_keys: bool,
    /// Another VM's fetch failed for good (retries spent).
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    generation: u64,
    fetched_ns: u64,
    failures: u64,
}

fn numbers<const N: usize>(bytes: Option<&[u8]>) -> Option<[u64; N]> {
    let text = std::str::from_utf8(bytes?).ok()?;
    let mut out = [0u64; N];
    let mut parts = text.split(' ');
    for slot in &mut out {
        *slot = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Meta {
    fn parse(bytes: Option<&[u8]>) -> Option<Self> {
        let [generation, fetched_ns, failures] = numbers::<3>(bytes)?;
        Some(Self {
            generation,
            fetched_ns,
            failures,
        })
    }

    fn encode(self) -> String {
        format!("{} {} {}", self.generation, self.fetched_ns, self.failures)
    }
}

/// One `remote_jwks` provider's state on one VM.
#[derive(Debug)]
pub struct Remote {
    /// The provider's index in the configuration.
    pub provider: usize,
    /// Its series in the JWKS metric families.
    pub series: usize,
    meta_key: String,
    body_key: String,
    lease_key: String,
    keys: Option<Rc<KeySet>>,
    generation: u64,
    fetched_ns: Nanos,
    failures: u64,
    /// The fetch this VM has in flight (callout token).
    pub in_flight: Option<u32>,
    /// Set by a stream, consumed by the root's tick.
    pub want: Option<Want>,
    /// Until then, an unknown `kid` does not wait for a refetch on this VM.
    pub unknown_kid_quiet_until: Nanos,
}

/// Reads shared data, treating a missing key as empty.
fn read(host: &(impl Host + ?Sized), key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
    match host.shared_data(key) {
        Ok(v) => Ok((v.value, v.cas)),
        Err(HostError::NotFound) => Ok((None, None)),
        Err(e) => Err(e),
    }
}

impl Remote {
    /// The state of `provider` (index `provider`, metric series `series`) before any fetch.
    pub fn new(provider: usize, series: usize, config: &Provider, remote: &RemoteJwks) -> Self {
        let base = format!(
            "meshward.jwt_auth.jwks/{}/{}{}",
            config.name, remote.authority, remote.path
        );
        Self {
            provider,
            series,
            meta_key: format!("{base}/meta"),
            body_key: format!("{base}/body"),
            lease_key: format!("{base}/lease"),
            keys: None,
            generation: 0,
            fetched_ns: 0,
            failures: 0,
            in_flight: None,
            want: None,
            unknown_kid_quiet_until: 0,
        }
    }

    /// The set usable at `now` (fresh or last-known-good within the stale window).
    pub fn usable(&self, remote: &RemoteJwks, now: Nanos) -> Option<Rc<KeySet>> {
        let limit = self
            .fetched_ns
            .saturating_add(remote.cache_duration_ns.saturating_mul(2));
        self.keys.as_ref().filter(|_| now < limit).map(Rc::clone)
    }

    /// Whether the set should be refreshed at `now` (90% of `cache_duration` passed).
    pub fn refresh_due(&self, remote: &RemoteJwks, now: Nanos) -> bool {
        self.keys.is_some()
            && now
                >= self
                    .fetched_ns
                    .saturating_add(remote.cache_duration_ns / 10 * 9)
    }

    /// Age of the set in seconds (`None`: no set yet).
    pub fn age_seconds(&self, now: Nanos) -> Option<u64> {
        self.keys
            .as_ref()
            .map(|_| now.saturating_sub(self.fetched_ns) / SECOND)
    }

    /// Drops a set past its stale window; returns whether it did.
    pub fn expire(&mut self, remote: &RemoteJwks, now: Nanos) -> bool {
        if self.keys.is_some() && self.usable(remote, now).is_none() {
            self.keys = None;
            return true;
        }
        false
    }

    /// Picks up what other VMs stored: parses the body when the generation changed.
    ///
    /// # Errors
    /// The proxy failed a shared-data read.
    pub fn sync(
        &mut self,
        host: &(impl Host + ?Sized),
        provider: &Provider,
        remote: &RemoteJwks,
    ) -> HostResult<Synced> {
        let (value, _) = read(host, &self.meta_key)?;
        let Some(meta) = Meta::parse(value.as_deref()) else {
            return Ok(Synced::default());
        };
        let mut synced = Synced {
            new_keys: false,
            failed: meta.failures != self.failures,
        };
        self.failures = meta.failures;
        if meta.generation == self.generation {
            return Ok(synced);
        }
        // Whatever the body holds, this generation is seen: a bad body is not re-read per request.
        self.generation = meta.generation;
        let (body, _) = read(host, &self.body_key)?;
        let parsed = body
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| "not UTF-8".to_owned())
            .and_then(|text| {
                jwks::parse_remote(text, &provider.algorithms, remote.allow_symmetric_keys)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(set) => {
                self.keys = Some(Rc::new(set));
                self.fetched_ns = meta.fetched_ns;
                synced.new_keys = true;
            }
            Err(e) => ::log::warn!(
                "provider {}: the shared key set does not parse here: {e}",
                provider.name
            ),
        }
        Ok(synced)
    }

    /// Tries to take the fetch lease at `now` for a fetch of kind `want`.
    ///
    /// # Errors
    /// The proxy failed a shared-data call.
    pub fn take_lease(
        &self,
        host: &(impl Host + ?Sized),
        remote: &RemoteJwks,
        now: Nanos,
        want: Want,
    ) -> HostResult<Lease> {
        let (mut value, mut cas) = read(host, &self.lease_key)?;
        if value.is_none() {
            // Created once, unconditionally (racing creators write the same value); every later
            // write goes through CAS.
            host.set_shared_data(&self.lease_key, b"0 0 0", None)?;
            (value, cas) = read(host, &self.lease_key)?;
        }
        let [until, last_start, attempt] = numbers::<3>(value.as_deref()).unwrap_or([0, 0, 0]);
        if until > now {
            return Ok(Lease::Busy);
        }
        let next_unknown_kid = last_start.saturating_add(UNKNOWN_KID_REFETCH_INTERVAL_NS);
        if want == Want::UnknownKid && last_start > 0 && next_unknown_kid > now {
            return Ok(Lease::TooSoon(next_unknown_kid));
        }
        let hold = u64::from(remote.timeout_ms)
            .saturating_mul(1_000_000)
            .saturating_add(SECOND);
        let lease = format!("{} {now} {attempt}", now.saturating_add(hold));
        match host.set_shared_data(&self.lease_key, lease.as_bytes(), cas) {
            Ok(()) => Ok(Lease::Taken(u32::try_from(attempt).unwrap_or(u32::MAX))),
            Err(HostError::CasMismatch) => Ok(Lease::Busy),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease back (or keeps it as a back-off) after this VM's fetch: held until
    /// `until`, with `attempt` failures so far.
    fn set_lease(&self, host: &(impl Host + ?Sized), until: Nanos, attempt: u32) {
        let result = read(host, &self.lease_key).and_then(|(value, cas)| {
            let [_, last_start, _] = numbers::<3>(value.as_deref()).unwrap_or([0, 0, 0]);
            let lease = format!("{until} {last_start} {attempt}");
            host.set_shared_data(&self.lease_key, lease.as_bytes(), cas)
        });
        if let Err(e) = result {
            // The lease then frees itself at its expiry.
            ::log::warn!("cannot update the JWKS fetch lease: {e}");
        }
    }

    /// Updates `…/meta` with `change`, retrying once on a CAS race.
    fn update_meta(
        &self,
        host: &(impl Host + ?Sized),
        change: impl Fn(Meta) -> Meta,
    ) -> HostResult<Meta> {
        let mut last = Err(HostError::CasMismatch);
        for _ in 0..2 {
            let (value, cas) = read(host, &self.meta_key)?;
            let meta = change(Meta::parse(value.as_deref()).unwrap_or_default());
            match host.set_shared_data(&self.meta_key, meta.encode().as_bytes(), cas) {
                Ok(()) => return Ok(meta),
                Err(e) => last = Err(e),
            }
        }
        last
    }

    /// A fetch this VM made succeeded with `text` (already parsed into `set`): store it for
    /// every VM, adopt it here, release the lease.
    ///
    /// # Errors
    /// The proxy failed a shared-data call (the set is still used on this VM).
    pub fn fetched(
        &mut self,
        host: &(impl Host + ?Sized),
        text: &[u8],
        set: KeySet,
        now: Nanos,
    ) -> HostResult<()> {
        self.keys = Some(Rc::new(set));
        self.fetched_ns = now;
        host.set_shared_data(&self.body_key, text, None)?;
        let meta = self.update_meta(host, |m| Meta {
            generation: m.generation.saturating_add(1),
            fetched_ns: now,
            failures: m.failures,
        })?;
        self.generation = meta.generation;
        self.failures = meta.failures;
        self.set_lease(host, 0, 0);
        Ok(())
    }

    /// A fetch this VM made failed after `attempt` earlier failures. Returns whether it was
    /// the last try (then other VMs learn it through `…/meta` and their waiters stop waiting);
    /// otherwise the lease is held for the retry back-off and the next tick retries.
    pub fn fetch_failed(
        &mut self,
        host: &(impl Host + ?Sized),
        remote: &RemoteJwks,
        attempt: u32,
        now: Nanos,
    ) -> bool {
        if attempt < remote.retries {
            let backoff = remote
                .backoff_base_ns
                .saturating_mul(1u64 << attempt.min(20))
                .min(remote.backoff_max_ns);
            self.set_lease(host, now.saturating_add(backoff), attempt.saturating_add(1));
            self.want.get_or_insert(Want::Keys);
            return false;
        }
        self.set_lease(host, now.saturating_add(remote.failed_refetch_ns), 0);
        match self.update_meta(host, |m| Meta {
            failures: m.failures.saturating_add(1),
            ..m
        }) {
            Ok(meta) => self.failures = meta.failures,
            Err(e) => ::log::warn!("cannot record the failed JWKS fetch: {e}"),
        }
        true
    }

    /// The attempt count stored in the lease (for the fetch this VM just made).
    pub fn attempt(&self, host: &(impl Host + ?Sized)) -> u32 {
        read(host, &self.lease_key)
            .ok()
            .and_then(|(v, _)| numbers::<3>(v.as_deref()))
            .map_or(0, |[_, _, a]| u32::try_from(a).unwrap_or(u32::MAX))
    }
}

/// Why a JWKS answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The call was reset (no response).
    #[error("the JWKS fetch failed (reset, {0})")]
    Reset(u32),
    /// A status other than 200 (504 for a timeout).
    #[error("the JWKS endpoint answered {0}")]
    Status(String),
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Empty, not JSON, or without a usable key.
    #[error("the JWKS is unusable: {0}")]
    Invalid(String),
}

/// Reads the answer being delivered (`num_headers` 0: reset) and parses it for `provider`.
pub fn read_answer(
    host: &(impl Host + ?Sized),
    provider: &Provider,
    remote: &RemoteJwks,
    num_headers: usize,
) -> Result<(Vec<u8>, KeySet), FetchError> {
    if num_headers == 0 {
        let code = host.call_status().map_or(0, |(code, _)| code);
        return Err(FetchError::Reset(code));
    }
    let status = host
        .header(MapKind::HttpCallResponseHeaders, ":status")
        .map_err(|e| FetchError::Status(format!("unreadable ({e})")))?
        .unwrap_or_default();
    if status != b"200" {
        return Err(FetchError::Status(
            String::from_utf8_lossy(&status).into_owned(),
        ));
    }
    // One byte more than allowed, to tell "too large" from "just fits".
    let body = host
        .buffer(BufferKind::HttpCallResponseBody, 0, MAX_JWKS_BYTES + 1)
        .map_err(|e| FetchError::Invalid(format!("unreadable body ({e})")))?
        .unwrap_or_default();
    if body.len() > MAX_JWKS_BYTES {
        return Err(FetchError::TooLarge);
    }
    let text = std::str::from_utf8(&body).map_err(|_| FetchError::Invalid("not UTF-8".into()))?;
    let set = jwks::parse_remote(text, &provider.algorithms, remote.allow_symmetric_keys)
        .map_err(|e| FetchError::Invalid(e.to_string()))?;
    Ok((body, set))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn shared_records_parse_strictly() {
        assert_eq!(numbers::<3>(Some(b"1 2 3")), Some([1, 2, 3]));
        assert_eq!(numbers::<3>(Some(b"1 2")), None);
        assert_eq!(numbers::<3>(Some(b"1 2 3 4")), None);
        assert_eq!(numbers::<3>(Some(b"1 x 3")), None);
        assert_eq!(numbers::<3>(None), None);
        let meta = Meta {
            generation: 7,
            fetched_ns: 9,
            failures: 1,
        };
        assert_eq!(Meta::parse(Some(meta.encode().as_bytes())), Some(meta));
    }
}
