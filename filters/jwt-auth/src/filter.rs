//! The glue between the proxy and the pure decisions, written against the core's [`Host`] so it
//! runs natively against `MockHost`; `plugin` only forwards proxy-wasm callbacks here.
//!
//! Per request: pick the first rule whose match holds (no rule: no requirement), read every
//! token location (at most one may hold a token), evaluate the requirement (verifying each
//! provider at most once, through its verified-token cache), then one [`Effects`]: strip every
//! header the filter may write, write claim and payload headers, strip the token, publish
//! properties — or reply 401/403 with an RFC 6750 `WWW-Authenticate`.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use meshward_core::effects::{self, Action, ApplyError, Callout, Effects};
use meshward_core::host::{
    Host, HostError, HttpCall, LocalReply, LogLevel, MapKind, MetricKind, Nanos, PropertyPath,
    StreamKind,
};
use meshward_core::metrics::Family;
use meshward_core::plugin::{FailureMode, on_error};
use meshward_core::route_match::MatchInput;
use meshward_core::waiters::Waiters;

use crate::cache::{TokenCache, token_fingerprint};
use crate::config::{self, Config, Location, Requirement};
use crate::jwks::KeySet;
use crate::remote::{self, Lease, Remote, Want};
use crate::verify::{self, Failure, Verified};

/// `details` of the 503 sent when the proxy fails a call the filter needs (fail closed).
pub const FAILURE_DETAILS: &str = "meshward_jwt_auth_error";
/// Property: issuer of the verified token.
pub static ISSUER_PROPERTY: PropertyPath = PropertyPath::from_static("meshward_jwt_issuer");
/// Property: subject of the verified token.
pub static SUBJECT_PROPERTY: PropertyPath = PropertyPath::from_static("meshward_jwt_subject");
/// Property: name of the provider that verified the token.
pub static PROVIDER_PROPERTY: PropertyPath = PropertyPath::from_static("meshward_jwt_provider");
/// Longest `realm` in `WWW-Authenticate`.
const MAX_REALM: usize = 256;
/// Most `payload_in_metadata`/`header_in_metadata` properties set on one request (the effects
/// hold [`effects::MAX_PROPERTIES`], three of which are provider, issuer and subject).
const MAX_METADATA_PROPERTIES: usize = effects::MAX_PROPERTIES - 3;

fn request_header(name: &str) -> PropertyPath {
    PropertyPath::new(&["request", "headers", name])
}

/// Metric families.
#[derive(Debug)]
pub struct Metrics {
    /// `meshward_jwt_auth_allowed_total{provider}`; the last series is `provider=none`.
    pub allowed: Family,
    /// `meshward_jwt_auth_denied_total{reason,provider}`: reason-major, `none` last.
    pub denied: Family,
    /// `meshward_jwt_auth_cors_preflight_bypassed_total`.
    pub cors_bypassed: Family,
    /// `meshward_jwt_auth_cache_total{result=hit|miss}`.
    pub cache: Family,
    /// `meshward_jwt_auth_jwks_fetch_total{provider,result=ok|failed}` (remote providers,
    /// two series each).
    pub jwks_fetch: Family,
    /// `meshward_jwt_auth_jwks_age_seconds{provider}` (remote providers).
    pub jwks_age: Family,
    providers: usize,
}

impl Metrics {
    fn define(host: &(impl Host + ?Sized), config: &Config) -> Self {
        let names: Vec<&str> = config
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .chain(["none"])
            .collect();
        let allowed_tags: Vec<[(&str, &str); 1]> =
            names.iter().map(|n| [("provider", *n)]).collect();
        let denied_tags: Vec<[(&str, &str); 2]> = Failure::ALL
            .iter()
            .flat_map(|f| {
                names
                    .iter()
                    .map(move |n| [("reason", f.code()), ("provider", *n)])
            })
            .collect();
        let remote_names: Vec<&str> = config
            .providers
            .iter()
            .filter(|p| p.remote.is_some())
            .map(|p| p.name.as_str())
            .collect();
        let fetch_tags: Vec<[(&str, &str); 2]> = remote_names
            .iter()
            .flat_map(|n| {
                [
                    [("provider", *n), ("result", "ok")],
                    [("provider", *n), ("result", "failed")],
                ]
            })
            .collect();
        let age_tags: Vec<[(&str, &str); 1]> =
            remote_names.iter().map(|n| [("provider", *n)]).collect();
        Self {
            allowed: Family::define(
                host,
                MetricKind::Counter,
                "meshward_jwt_auth_allowed_total",
                allowed_tags.iter().map(|t| &t[..]),
            ),
            denied: Family::define(
                host,
                MetricKind::Counter,
                "meshward_jwt_auth_denied_total",
                denied_tags.iter().map(|t| &t[..]),
            ),
            cors_bypassed: Family::single(
                host,
                MetricKind::Counter,
                "meshward_jwt_auth_cors_preflight_bypassed_total",
            ),
            cache: Family::define(
                host,
                MetricKind::Counter,
                "meshward_jwt_auth_cache_total",
                [&[("result", "hit")][..], &[("result", "miss")][..]],
            ),
            jwks_fetch: Family::define(
                host,
                MetricKind::Counter,
                "meshward_jwt_auth_jwks_fetch_total",
                fetch_tags.iter().map(|t| &t[..]),
            ),
            jwks_age: Family::define(
                host,
                MetricKind::Gauge,
                "meshward_jwt_auth_jwks_age_seconds",
                age_tags.iter().map(|t| &t[..]),
            ),
            providers: config.providers.len(),
        }
    }

    fn provider_series(&self, provider: Option<usize>) -> usize {
        provider.unwrap_or(self.providers)
    }

    fn denied_series(&self, failure: Failure, provider: Option<usize>) -> usize {
        failure.index() * (self.providers + 1) + self.provider_series(provider)
    }
}

/// One configured filter on one VM.
#[derive(Debug)]
pub struct Filter {
    /// The validated configuration.
    pub config: Config,
    /// Metric families.
    pub metrics: Metrics,
    /// Per provider: the verified-token cache.
    caches: Vec<RefCell<TokenCache>>,
    /// Per location: the property path of its header (cookie header for cookies).
    location_paths: Vec<Option<PropertyPath>>,
    /// Per provider: the property of `payload_in_metadata`.
    payload_paths: Vec<Option<PropertyPath>>,
    /// Per provider: the property of `header_in_metadata`.
    header_paths: Vec<Option<PropertyPath>>,
    /// Per provider: its `remote_jwks` state on this VM.
    remotes: Vec<Option<RefCell<Remote>>>,
    /// Streams waiting for a remote key set (keyed by provider index).
    waiters: RefCell<Waiters<usize>>,
    /// The root's tick period as last set (0: none).
    tick_ms: Cell<u32>,
}

impl Filter {
    /// Parses the configuration, builds keys, caches and metric families; logs the reason and
    /// returns `None` when the configuration is invalid.
    pub fn configure(host: &(impl Host + ?Sized), bytes: &[u8]) -> Option<Self> {
        let config = match config::parse(bytes) {
            Ok(config) => config,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("jwt-auth: invalid plugin config: {e}"),
                );
                return None;
            }
        };
        let location_paths = config
            .locations
            .iter()
            .map(|l| match l {
                Location::Header { name, .. } => Some(request_header(name)),
                Location::Cookie(_) => Some(request_header("cookie")),
                Location::Param(_) => None,
            })
            .collect();
        let payload_paths = config
            .providers
            .iter()
            .map(|p| {
                p.payload_in_metadata
                    .as_deref()
                    .map(|n| PropertyPath::new(&[n]))
            })
            .collect();
        let header_paths = config
            .providers
            .iter()
            .map(|p| {
                p.header_in_metadata
                    .as_deref()
                    .map(|n| PropertyPath::new(&[n]))
            })
            .collect();
        let caches = config
            .providers
            .iter()
            .map(|p| RefCell::new(TokenCache::new(p.cache_entries)))
            .collect();
        let mut series = 0;
        let remotes: Vec<Option<RefCell<Remote>>> = config
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.remote.as_ref().map(|r| {
                    let remote = Remote::new(i, series, p, r);
                    series += 1;
                    RefCell::new(remote)
                })
            })
            .collect();
        let tick_ms = if config
            .providers
            .iter()
            .any(|p| p.remote.as_ref().is_some_and(|r| r.fetch_at_start))
        {
            remote::KICK_TICK_MS
        } else if series > 0 {
            remote::REFRESH_TICK_MS
        } else {
            0
        };
        if tick_ms > 0
            && let Err(e) = host.set_tick_period(tick_ms)
        {
            host.log(
                LogLevel::Error,
                &format!("jwt-auth: cannot arm the timer for remote JWKS: {e}"),
            );
            return None;
        }
        Some(Self {
            metrics: Metrics::define(host, &config),
            config,
            caches,
            location_paths,
            payload_paths,
            header_paths,
            remotes,
            waiters: RefCell::new(Waiters::new(remote::MAX_WAITERS)),
            tick_ms: Cell::new(tick_ms),
        })
    }

    fn remote(&self, provider: usize) -> Option<&RefCell<Remote>> {
        self.remotes.get(provider).and_then(Option::as_ref)
    }

    /// The keys of a remote provider usable at `now_ns`, syncing with other VMs first.
    fn remote_keys(
        &self,
        host: &(impl Host + ?Sized),
        provider: usize,
        now_ns: Nanos,
    ) -> Option<Rc<KeySet>> {
        let p = self.config.providers.get(provider)?;
        let r = p.remote.as_ref()?;
        let mut state = self.remote(provider)?.try_borrow_mut().ok()?;
        match state.sync(host, p, r) {
            Ok(synced) if synced.new_keys => self.clear_cache(provider),
            Ok(_) => {}
            Err(e) => ::log::warn!("provider {}: cannot read the shared key set: {e}", p.name),
        }
        if state.refresh_due(r, now_ns) && state.want.is_none() {
            state.want = Some(Want::Keys);
        }
        state.usable(r, now_ns)
    }

    fn clear_cache(&self, provider: usize) {
        if let Some(cache) = self.caches.get(provider)
            && let Ok(mut cache) = cache.try_borrow_mut()
        {
            cache.clear();
        }
    }

    /// Registers stream `context_id` as waiting for provider `provider`'s keys and has the root
    /// fetch at its next callback. `false`: the stream cannot wait (answer it now).
    fn wait(
        &self,
        host: &(impl Host + ?Sized),
        context_id: u32,
        provider: usize,
        want: Want,
        now_ns: Nanos,
    ) -> bool {
        let (Some(state), Some(Some(r))) = (
            self.remote(provider),
            self.config
                .providers
                .get(provider)
                .map(|p| p.remote.as_ref()),
        ) else {
            return false;
        };
        let wait_ns = u64::from(r.timeout_ms)
            .saturating_mul(1_000_000)
            .saturating_mul(u64::from(r.retries) + 1)
            .saturating_add(r.backoff_max_ns.saturating_mul(u64::from(r.retries)))
            .saturating_add(1_000_000_000)
            .min(remote::MAX_WAIT_NS);
        let Ok(mut waiters) = self.waiters.try_borrow_mut() else {
            return false;
        };
        if context_id == 0
            || waiters
                .wait(context_id, provider, now_ns.saturating_add(wait_ns))
                .is_err()
        {
            return false;
        }
        if let Ok(mut state) = state.try_borrow_mut()
            && state.want != Some(Want::Keys)
        {
            state.want = Some(want);
        }
        if self.tick_ms.get() != remote::KICK_TICK_MS {
            match host.set_tick_period(remote::KICK_TICK_MS) {
                Ok(()) => self.tick_ms.set(remote::KICK_TICK_MS),
                Err(e) => ::log::warn!("cannot kick the root's timer: {e}"),
            }
        }
        true
    }

    /// The root's tick: sync with other VMs, start a wanted fetch (one across workers), resume
    /// the streams whose keys arrived, or whose fetch failed, or whose deadline passed.
    pub fn tick(&self, host: &(impl Host + ?Sized), root_context_id: u32) {
        let Ok(now) = host.now() else {
            return;
        };
        let mut resume: Vec<u32> = Vec::new();
        for (i, p) in self.config.providers.iter().enumerate() {
            let (Some(r), Some(cell)) = (p.remote.as_ref(), self.remote(i)) else {
                continue;
            };
            let Ok(mut state) = cell.try_borrow_mut() else {
                continue;
            };
            let mut settled = false;
            match state.sync(host, p, r) {
                Ok(synced) => {
                    if synced.new_keys {
                        self.clear_cache(i);
                    }
                    settled = synced.new_keys || synced.failed;
                    if settled {
                        // Another VM's fetch answered what this VM wanted (its waiters decide
                        // again below): no second fetch for the same need.
                        state.want = None;
                    }
                }
                Err(e) => ::log::warn!("provider {}: cannot read the shared key set: {e}", p.name),
            }
            if state.expire(r, now) {
                ::log::warn!("provider {}: the last-known-good key set expired", p.name);
                self.clear_cache(i);
            }
            if let Some(age) = state.age_seconds(now) {
                self.metrics.jwks_age.record(host, state.series, age);
            }
            let waiting = self
                .waiters
                .try_borrow()
                .is_ok_and(|w| w.any_waiting_for(i));
            let wanted = state.want.or_else(|| {
                let missing = state.usable(r, now).is_none() && (r.fetch_at_start || waiting);
                (missing || state.refresh_due(r, now)).then_some(Want::Keys)
            });
            if let Some(want) = wanted
                && state.in_flight.is_none()
            {
                match state.take_lease(host, r, now, want) {
                    Ok(Lease::Taken(_)) => {
                        state.want = None;
                        let headers = [
                            (":method", &b"GET"[..]),
                            (":path", r.path.as_bytes()),
                            (":authority", r.authority.as_bytes()),
                            ("accept", b"application/json"),
                        ];
                        let mut effects = Effects::new();
                        effects.callout = Some(Callout::Http(HttpCall {
                            cluster: &r.cluster,
                            headers: &headers,
                            timeout_ms: r.timeout_ms,
                            ..HttpCall::default()
                        }));
                        // The root is the effective context here: the call belongs to it.
                        match effects::apply(host, MapKind::RequestHeaders, &effects) {
                            Ok(applied) => state.in_flight = applied.callout_token,
                            Err(e) => {
                                ::log::warn!("provider {}: cannot fetch the JWKS: {e}", p.name);
                                self.metrics.jwks_fetch.add(host, state.series * 2 + 1, 1);
                                let attempt = state.attempt(host);
                                settled |= state.fetch_failed(host, r, attempt, now);
                            }
                        }
                    }
                    Ok(Lease::Busy) => {}
                    Ok(Lease::TooSoon(until)) => {
                        state.want = None;
                        state.unknown_kid_quiet_until = until;
                        settled = true;
                    }
                    Err(e) => ::log::warn!("provider {}: cannot take the fetch lease: {e}", p.name),
                }
            }
            if settled && let Ok(mut waiters) = self.waiters.try_borrow_mut() {
                resume.extend(waiters.take(i).iter().map(|w| w.context_id));
            }
        }
        if let Ok(mut waiters) = self.waiters.try_borrow_mut() {
            resume.extend(waiters.take_expired(now).iter().map(|w| w.context_id));
        }
        self.resume(host, root_context_id, &resume);
        let period = if self.waiters.try_borrow().is_ok_and(|w| !w.is_empty()) {
            remote::POLL_TICK_MS
        } else {
            remote::REFRESH_TICK_MS
        };
        if self.tick_ms.get() != period {
            match host.set_tick_period(period) {
                Ok(()) => self.tick_ms.set(period),
                Err(e) => ::log::warn!("cannot set the tick period: {e}"),
            }
        }
    }

    /// The answer to a JWKS fetch this VM made.
    pub fn fetch_answered(
        &self,
        host: &(impl Host + ?Sized),
        root_context_id: u32,
        token: u32,
        num_headers: usize,
    ) {
        let Some(cell) = self
            .remotes
            .iter()
            .flatten()
            .find(|c| c.try_borrow().is_ok_and(|s| s.in_flight == Some(token)))
        else {
            ::log::warn!("ignoring the answer to callout {token}: no JWKS fetch in flight");
            return;
        };
        let Ok(now) = host.now() else {
            return;
        };
        let provider = {
            let Ok(mut state) = cell.try_borrow_mut() else {
                return;
            };
            state.in_flight = None;
            let i = state.provider;
            let (Some(p), Some(r)) = (
                self.config.providers.get(i),
                self.config.providers.get(i).and_then(|p| p.remote.as_ref()),
            ) else {
                return;
            };
            let settled = match remote::read_answer(host, p, r, num_headers) {
                Ok((text, set)) => {
                    self.metrics.jwks_fetch.add(host, state.series * 2, 1);
                    if let Err(e) = state.fetched(host, &text, set, now) {
                        ::log::warn!("provider {}: cannot share the key set: {e}", p.name);
                    }
                    self.clear_cache(i);
                    ::log::info!("provider {}: JWKS fetched", p.name);
                    true
                }
                Err(e) => {
                    self.metrics.jwks_fetch.add(host, state.series * 2 + 1, 1);
                    ::log::warn!("provider {}: {e}", p.name);
                    let attempt = state.attempt(host);
                    state.fetch_failed(host, r, attempt, now)
                }
            };
            settled.then_some(i)
        };
        if let Some(i) = provider {
            let waiting: Vec<u32> = self
                .waiters
                .try_borrow_mut()
                .map(|mut w| w.take(i).iter().map(|w| w.context_id).collect())
                .unwrap_or_default();
            self.resume(host, root_context_id, &waiting);
        }
    }

    /// Decides again for each stream in `context_ids` (now that keys arrived or will not) in its
    /// own context, then switches back to the root.
    fn resume(&self, host: &(impl Host + ?Sized), root_context_id: u32, context_ids: &[u32]) {
        if context_ids.is_empty() {
            return;
        }
        for &context_id in context_ids {
            if let Err(e) = host.set_effective_context(context_id) {
                ::log::warn!("cannot resume stream {context_id}: {e}");
                continue;
            }
            let mut stream = Stream {
                context_id,
                resumed: true,
                ..Stream::default()
            };
            if stream.on_request_headers(self, host) == Action::Continue
                && let Err(e) = host.continue_stream(StreamKind::Request)
            {
                ::log::warn!("cannot continue stream {context_id}: {e}");
            }
        }
        if let Err(e) = host.set_effective_context(root_context_id) {
            ::log::warn!("cannot switch back to the root context: {e}");
        }
    }

    /// A stream ended: it waits no more.
    pub fn forget(&self, context_id: u32) {
        if let Ok(mut waiters) = self.waiters.try_borrow_mut() {
            waiters.forget(context_id);
        }
    }

    fn verify_cached(
        &self,
        host: &(impl Host + ?Sized),
        provider: usize,
        token: &str,
        now: u64,
        now_ns: Nanos,
    ) -> Result<Rc<Verified>, Failure> {
        let Some(p) = self.config.providers.get(provider) else {
            return Err(Failure::Missing);
        };
        let cache = self.caches.get(provider);
        if let Some(cache) = cache
            && let Some(hit) = cache.borrow_mut().get(token, now)
        {
            self.metrics.cache.add(host, 0, 1);
            return Ok(hit);
        }
        self.metrics.cache.add(host, 1, 1);
        let remote_keys;
        let keys = if p.remote.is_some() {
            remote_keys = self
                .remote_keys(host, provider, now_ns)
                .ok_or(Failure::JwksFetchFailed)?;
            &*remote_keys
        } else {
            &p.keys
        };
        let verified = Rc::new(verify::verify_with(p, keys, token, now).inspect_err(
            |failure| {
                if ::log::log_enabled!(::log::Level::Debug) {
                    ::log::debug!(
                        "provider {}: token {} refused: {}",
                        p.name,
                        token_fingerprint(token),
                        failure.code()
                    );
                }
            },
        )?);
        if let (Some(cache), Some(exp)) = (cache, verified.expires_at) {
            cache.borrow_mut().insert(
                token,
                now,
                exp.saturating_add(p.clock_skew_seconds),
                Rc::clone(&verified),
            );
        }
        Ok(verified)
    }
}

/// The request seen by route matchers: `:path` read once, headers on demand (joined view).
struct RequestView<'h, H: Host + ?Sized> {
    host: &'h H,
    path: Option<Vec<u8>>,
}

impl<H: Host + ?Sized> MatchInput for RequestView<'_, H> {
    fn path(&self) -> Option<&[u8]> {
        self.path.as_deref()
    }

    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let value = if name.starts_with(':') {
            self.host.header(MapKind::RequestHeaders, name)
        } else {
            self.host.property(&request_header(name))
        };
        value.ok().flatten().map(Cow::Owned)
    }
}

/// What the request phase decided.
#[derive(Debug, Default)]
enum Outcome {
    /// Nothing decided yet, or no requirement applies.
    #[default]
    NoRequirement,
    /// Allowed.
    Allowed,
    /// Refused.
    Denied {
        failure: Failure,
        provider: Option<usize>,
    },
}

/// One stream's state: the token, each provider's verification, the decision and the reply
/// texts (the effects borrow from here).
#[derive(Debug, Default)]
pub struct Stream {
    token: Option<(usize, String)>,
    results: Vec<Option<Result<Rc<Verified>, Failure>>>,
    passed: Vec<bool>,
    outcome: Outcome,
    www_authenticate: String,
    details: String,
    output_values: Vec<Option<String>>,
    /// The stream's context id (to wait on the root).
    context_id: u32,
    /// Decided again by the root after waiting: never waits twice.
    resumed: bool,
    /// A remote provider whose keys this request would wait for.
    wait_for: Option<(usize, Want)>,
    now_ns: Nanos,
}

/// The value of query parameter `name` in `path` (raw, not percent-decoded: JWTs need none);
/// `Err` when it occurs twice.
fn query_param<'p>(path: &'p [u8], name: &str) -> Result<Option<&'p [u8]>, Failure> {
    let Some(q) = path.iter().position(|b| *b == b'?') else {
        return Ok(None);
    };
    let query = path.get(q + 1..).unwrap_or_default();
    let query = query.split(|b| *b == b'#').next().unwrap_or_default();
    let mut found = None;
    for pair in query.split(|b| *b == b'&') {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        if key == name.as_bytes() {
            if found.is_some() {
                return Err(Failure::Multiple);
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// The value of cookie `name` in a (joined) `cookie` header; `Err` when it occurs twice.
fn cookie<'c>(header: &'c [u8], name: &str) -> Result<Option<&'c [u8]>, Failure> {
    let mut found = None;
    for pair in header.split(|b| *b == b';' || *b == b',') {
        let pair = pair.trim_ascii();
        if let Some(i) = pair.iter().position(|b| *b == b'=')
            && pair.get(..i) == Some(name.as_bytes())
        {
            if found.is_some() {
                return Err(Failure::Multiple);
            }
            found = pair.get(i + 1..);
        }
    }
    Ok(found)
}

impl Stream {
    /// Whether the request was allowed (tests, logs).
    pub fn allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed | Outcome::NoRequirement)
    }

    fn extract(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
        path: Option<&[u8]>,
    ) -> Result<Result<(), Failure>, HostError> {
        let mut cookie_header: Option<Option<Vec<u8>>> = None;
        for (i, location) in filter.config.locations.iter().enumerate() {
            let token: Option<Vec<u8>> = match location {
                Location::Header { prefix, .. } => {
                    let Some(Some(p)) = filter.location_paths.get(i) else {
                        continue;
                    };
                    let Some(value) = host.property(p)? else {
                        continue;
                    };
                    let matches_prefix = value
                        .get(..prefix.len())
                        .is_some_and(|v| v.eq_ignore_ascii_case(prefix.as_bytes()));
                    if !matches_prefix {
                        continue;
                    }
                    let rest = value.get(prefix.len()..).unwrap_or_default().trim_ascii();
                    // The joined view of a repeated header: more than one token header.
                    if rest.contains(&b',') {
                        return Ok(Err(Failure::Multiple));
                    }
                    Some(rest.to_vec())
                }
                Location::Param(name) => match query_param(path.unwrap_or_default(), name) {
                    Ok(v) => v.map(<[u8]>::to_vec),
                    Err(f) => return Ok(Err(f)),
                },
                Location::Cookie(name) => {
                    if cookie_header.is_none() {
                        let p = filter.location_paths.get(i).and_then(Option::as_ref);
                        cookie_header = Some(match p {
                            Some(p) => host.property(p)?,
                            None => None,
                        });
                    }
                    match cookie_header.as_ref().and_then(Option::as_deref) {
                        None => None,
                        Some(h) => match cookie(h, name) {
                            Ok(v) => v.map(<[u8]>::to_vec),
                            Err(f) => return Ok(Err(f)),
                        },
                    }
                }
            };
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                continue;
            };
            if self.token.is_some() {
                return Ok(Err(Failure::Multiple));
            }
            // Non-UTF-8 cannot be a JWT: keep it as a malformed token (refused by verify).
            let token = String::from_utf8(token).unwrap_or_else(|_| "\u{0}".to_owned());
            self.token = Some((i, token));
        }
        Ok(Ok(()))
    }

    fn provider_result(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
        provider: usize,
        now: u64,
    ) -> Result<Rc<Verified>, Failure> {
        let Some((location, token)) = &self.token else {
            return Err(Failure::Missing);
        };
        let reads = filter
            .config
            .providers
            .get(provider)
            .is_some_and(|p| p.locations.contains(location));
        if !reads {
            return Err(Failure::Missing);
        }
        if let Some(Some(done)) = self.results.get(provider) {
            return done.clone();
        }
        let result = filter.verify_cached(host, provider, token, now, self.now_ns);
        if let Some(state) = filter.remote(provider)
            && self.wait_for.is_none()
        {
            match result {
                Err(Failure::JwksFetchFailed) => self.wait_for = Some((provider, Want::Keys)),
                Err(Failure::UnknownKid)
                    if state
                        .try_borrow()
                        .is_ok_and(|s| s.unknown_kid_quiet_until <= self.now_ns) =>
                {
                    self.wait_for = Some((provider, Want::UnknownKid));
                }
                _ => {}
            }
        }
        if let Some(slot) = self.results.get_mut(provider) {
            *slot = Some(result.clone());
        }
        result
    }

    fn try_any_provider(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
        now: u64,
    ) -> Result<(), (Failure, Option<usize>)> {
        let mut worst: Option<(Failure, Option<usize>)> = None;
        for p in 0..filter.config.providers.len() {
            match self.provider_result(filter, host, p, now) {
                Ok(v) => {
                    let allowed = filter
                        .config
                        .providers
                        .get(p)
                        .is_some_and(|pr| v.audience_allowed(&pr.audiences));
                    if allowed {
                        self.mark_passed(p);
                        return Ok(());
                    }
                    worst = pick(worst, (Failure::Audience, Some(p)));
                }
                Err(f) => worst = pick(worst, (f, Some(p))),
            }
        }
        Err(worst.unwrap_or((Failure::Missing, None)))
    }

    fn mark_passed(&mut self, provider: usize) {
        if let Some(slot) = self.passed.get_mut(provider) {
            *slot = true;
        }
    }

    fn evaluate(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
        requirement: &Requirement,
        now: u64,
    ) -> Result<(), (Failure, Option<usize>)> {
        match requirement {
            Requirement::Provider {
                provider,
                audiences,
            } => {
                let v = self
                    .provider_result(filter, host, *provider, now)
                    .map_err(|f| (f, Some(*provider)))?;
                let accepted = match audiences {
                    Some(a) => a.as_slice(),
                    None => filter
                        .config
                        .providers
                        .get(*provider)
                        .map_or(&[][..], |p| p.audiences.as_slice()),
                };
                if !v.audience_allowed(accepted) {
                    return Err((Failure::Audience, Some(*provider)));
                }
                self.mark_passed(*provider);
                Ok(())
            }
            Requirement::Any(list) => {
                let mut worst = None;
                let mut ok = false;
                for r in list {
                    match self.evaluate(filter, host, r, now) {
                        Ok(()) => ok = true,
                        Err(e) => worst = pick(worst, e),
                    }
                }
                if ok {
                    Ok(())
                } else {
                    Err(worst.unwrap_or((Failure::Missing, None)))
                }
            }
            Requirement::All(list) => {
                for r in list {
                    self.evaluate(filter, host, r, now)?;
                }
                Ok(())
            }
            Requirement::AllowMissing => {
                if self.token.is_none() {
                    return Ok(());
                }
                self.try_any_provider(filter, host, now)
            }
            Requirement::AllowMissingOrFailed => {
                if self.token.is_some() {
                    let _ = self.try_any_provider(filter, host, now);
                }
                Ok(())
            }
        }
    }

    fn decide(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) -> Result<bool, HostError> {
        let config = &filter.config;
        if config.bypass_cors_preflight
            && host.header(MapKind::RequestHeaders, ":method")?.as_deref() == Some(b"OPTIONS")
            && host.header(MapKind::RequestHeaders, "origin")?.is_some()
            && host
                .header(MapKind::RequestHeaders, "access-control-request-method")?
                .is_some()
        {
            filter.metrics.cors_bypassed.add(host, 0, 1);
            return Ok(false);
        }
        if config.rules.is_empty() {
            return Ok(false);
        }
        let view = RequestView {
            host,
            path: host.header(MapKind::RequestHeaders, ":path")?,
        };
        let Some(rule) = config.rules.iter().find(|r| r.matcher.matches(&view)) else {
            return Ok(false);
        };
        let Some(requirement) = &rule.requires else {
            return Ok(false);
        };
        self.results = vec![None; config.providers.len()];
        self.passed = vec![false; config.providers.len()];
        let path = view.path;
        if let Err(failure) = self.extract(filter, host, path.as_deref())? {
            self.outcome = Outcome::Denied {
                failure,
                provider: None,
            };
            return Ok(true);
        }
        self.now_ns = host.now()?;
        let now = self.now_ns / 1_000_000_000;
        self.outcome = match self.evaluate(filter, host, requirement, now) {
            Ok(()) => Outcome::Allowed,
            Err((failure, provider)) => Outcome::Denied { failure, provider },
        };
        Ok(true)
    }

    fn prepare_reply(
        &mut self,
        host: &(impl Host + ?Sized),
        failure: Failure,
    ) -> Result<(), HostError> {
        let authority = host.header(MapKind::RequestHeaders, ":authority")?;
        let path = host.header(MapKind::RequestHeaders, ":path")?;
        let mut realm = String::from("http://");
        let clean = |bytes: &[u8], realm: &mut String| {
            for &b in bytes {
                if b == b'?' || b == b'#' {
                    break;
                }
                if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
                    realm.push(char::from(b));
                }
            }
        };
        clean(authority.as_deref().unwrap_or_default(), &mut realm);
        clean(path.as_deref().unwrap_or_default(), &mut realm);
        realm.truncate(MAX_REALM);
        self.www_authenticate = if failure == Failure::Missing {
            format!("Bearer realm=\"{realm}\"")
        } else {
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                failure.message()
            )
        };
        self.details = format!(
            "jwt_authn_access_denied{{{}}}",
            failure.message().replace(' ', "_")
        );
        Ok(())
    }

    fn compute_outputs(&mut self, filter: &Filter) {
        self.output_values = filter
            .config
            .output_headers
            .iter()
            .map(|header| {
                let mut value = None;
                for (i, p) in filter.config.providers.iter().enumerate() {
                    if !self.passed.get(i).copied().unwrap_or(false) {
                        continue;
                    }
                    let Some(Some(Ok(v))) = self.results.get(i) else {
                        continue;
                    };
                    for (c, claim) in p.claim_to_headers.iter().enumerate() {
                        if &claim.header == header
                            && let Some(Some(text)) = v.claim_values.get(c)
                        {
                            value = Some(text.clone());
                        }
                    }
                    if p.forward_payload_header.as_ref() == Some(header) {
                        value.clone_from(&v.payload_b64);
                    }
                }
                value
            })
            .collect();
    }

    fn request(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
    ) -> Result<Action, ApplyError> {
        let requirement_applied = self.decide(filter, host).map_err(ApplyError::reading)?;
        if let (Outcome::Denied { .. }, Some((provider, want)), false) =
            (&self.outcome, self.wait_for, self.resumed)
            && filter.wait(host, self.context_id, provider, want, self.now_ns)
        {
            // Decided again from the root once the keys are there (or will not come).
            return Ok(Action::Pause);
        }
        if let Outcome::Denied { failure, .. } = self.outcome {
            self.prepare_reply(host, failure)
                .map_err(ApplyError::reading)?;
        } else if requirement_applied {
            self.compute_outputs(filter);
        }
        let reply_headers;
        let mut effects = Effects::new();
        match &self.outcome {
            Outcome::Denied { failure, provider } => {
                reply_headers = [("www-authenticate", self.www_authenticate.as_bytes())];
                effects.reply(LocalReply {
                    status: failure.status(),
                    headers: &reply_headers,
                    body: if filter.config.strip_failure_response {
                        b""
                    } else {
                        failure.message().as_bytes()
                    },
                    details: &self.details,
                    grpc_status: None,
                });
                effects.count(
                    &filter.metrics.denied,
                    filter.metrics.denied_series(*failure, *provider),
                    1,
                );
            }
            Outcome::Allowed | Outcome::NoRequirement => {
                self.allowed_effects(filter, requirement_applied, &mut effects);
            }
        }
        Ok(effects::apply(host, MapKind::RequestHeaders, &effects)?.action)
    }

    fn allowed_effects<'a>(&'a self, filter: &'a Filter, applied: bool, effects: &mut Effects<'a>) {
        let config = &filter.config;
        let mut wrote = false;
        for (i, header) in config.output_headers.iter().enumerate() {
            match self.output_values.get(i) {
                Some(Some(value)) => {
                    effects.set_header(header, value.as_bytes());
                    wrote = true;
                }
                _ => effects.remove_header(header),
            }
        }
        if !applied {
            return;
        }
        let passed: Vec<usize> = (0..config.providers.len())
            .filter(|i| self.passed.get(*i).copied().unwrap_or(false))
            .collect();
        if let Some((location, _)) = &self.token
            && let Some(Location::Header { name, .. }) = config.locations.get(*location)
        {
            let forwarded = passed
                .iter()
                .any(|p| config.providers.get(*p).is_some_and(|pr| pr.forward));
            if !forwarded {
                effects.remove_header(name);
            }
        }
        let first = passed.first().copied();
        effects.count(
            &filter.metrics.allowed,
            filter.metrics.provider_series(first),
            1,
        );
        let Some(first) = first else {
            return;
        };
        if let (Some(p), Some(Some(Ok(v)))) = (config.providers.get(first), self.results.get(first))
        {
            effects.set_property(&PROVIDER_PROPERTY, p.name.as_bytes());
            if let Some(iss) = &v.issuer {
                effects.set_property(&ISSUER_PROPERTY, iss.as_bytes());
            }
            if let Some(sub) = &v.subject {
                effects.set_property(&SUBJECT_PROPERTY, sub.as_bytes());
            }
        }
        let mut published = 0;
        for &p in &passed {
            let Some(Some(Ok(v))) = self.results.get(p) else {
                continue;
            };
            let metadata = [
                (filter.payload_paths.get(p), &v.payload_json),
                (filter.header_paths.get(p), &v.header_json),
            ];
            for (path, json) in metadata {
                if let (Some(Some(path)), Some(json)) = (path, json)
                    && published < MAX_METADATA_PROPERTIES
                {
                    effects.set_property(path, json);
                    published += 1;
                }
            }
        }
        effects.clear_route_cache = wrote
            || passed.iter().any(|p| {
                config
                    .providers
                    .get(*p)
                    .is_some_and(|pr| pr.clear_route_cache)
            });
    }

    /// Request headers: decide and apply. A host failure denies (503): an authentication filter
    /// fails closed.
    pub fn on_request_headers(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        match self.request(filter, host) {
            Ok(action) => action,
            Err(error) => on_error(host, FailureMode::Deny, FAILURE_DETAILS, &error),
        }
    }
}

fn pick(
    current: Option<(Failure, Option<usize>)>,
    candidate: (Failure, Option<usize>),
) -> Option<(Failure, Option<usize>)> {
    match current {
        Some(c) if c.0.weight() >= candidate.0.weight() => Some(c),
        _ => Some(candidate),
    }
}

/// The proxy-wasm glue is the core's ([`meshward_core::plugin::register`]); this says which
/// callbacks the filter handles.
impl meshward_core::plugin::HttpFilter for Filter {
    type Stream = Stream;

    fn configure(host: &(impl Host + ?Sized)) -> Option<Self> {
        let bytes = meshward_core::plugin::plugin_configuration(host)?;
        Filter::configure(host, &bytes)
    }

    fn on_request_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
        stream.on_request_headers(self, host)
    }

    fn on_stream_created(&self, stream: &mut Stream, context_id: u32) {
        stream.context_id = context_id;
    }

    fn on_stream_done(&self, stream: &mut Stream) {
        self.forget(stream.context_id);
    }

    fn on_tick(&self, host: &(impl Host + ?Sized), root_context_id: u32) {
        self.tick(host, root_context_id);
    }

    fn on_http_call_response(
        &self,
        host: &(impl Host + ?Sized),
        root_context_id: u32,
        token: u32,
        num_headers: usize,
    ) {
        self.fetch_answered(host, root_context_id, token, num_headers);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use jwt_simple::prelude::{Claims, HS256Key, MACLike};
    use meshward_core::host::mock::{Hostcall, MockHost};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_767_225_600;

    fn config() -> String {
        let jwks = format!(
            r#"{{\"keys\":[{{\"kty\":\"oct\",\"k\":\"{}\"}}]}}"#,
            <ct_codecs::Base64UrlSafeNoPadding as ct_codecs::Encoder>::encode_to_string(SECRET)
                .unwrap_or_default()
        );
        format!(
            r#"{{"providers": {{"p": {{"issuer": "iss", "local_jwks": {{"inline_string": "{jwks}"}},
                "payload_in_metadata": "jwt_payload",
                "claim_to_headers": [{{"header_name": "x-sub", "claim_name": "sub"}}]}}}},
              "rules": [{{"match": {{"prefix": "/"}}, "requires": {{"provider_name": "p"}}}}]}}"#
        )
    }

    fn token() -> String {
        let claims = Claims::create(jwt_simple::prelude::Duration::from_hours(1))
            .with_issuer("iss")
            .with_subject("alice");
        let mut claims = claims;
        claims.issued_at = Some(jwt_simple::prelude::UnixTimeStamp::from_secs(NOW));
        claims.expires_at = Some(jwt_simple::prelude::UnixTimeStamp::from_secs(NOW + 3600));
        claims.invalid_before = None;
        HS256Key::from_bytes(SECRET).authenticate(claims).unwrap()
    }

    fn host(token: &str) -> MockHost {
        MockHost::new()
            .with_time(NOW * 1_000_000_000)
            .with_request_header(":path", "/a?b=c")
            .with_request_header(":authority", "example.com")
            .with_request_header("authorization", format!("Bearer {token}"))
            .with_request_header("x-sub", "mallory")
    }

    #[test]
    fn verified_token_sets_headers_properties_and_is_cached() {
        let token = token();
        let host = host(&token);
        let original = host.request_headers();
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        for round in 0..2 {
            host.put_header_map(MapKind::RequestHeaders, original.clone());
            let mut stream = Stream::default();
            assert_eq!(stream.on_request_headers(&filter, &host), Action::Continue);
            assert!(
                host.local_response().is_none(),
                "{:?}",
                host.local_response()
            );
            assert_eq!(host.request_header("x-sub").as_deref(), Some("alice"));
            assert_eq!(host.request_header("authorization"), None);
            assert_eq!(
                host.property_value(&["meshward_jwt_issuer"]).as_deref(),
                Some(&b"iss"[..])
            );
            assert_eq!(
                host.property_value(&["meshward_jwt_subject"]).as_deref(),
                Some(&b"alice"[..])
            );
            assert_eq!(
                host.property_value(&["meshward_jwt_provider"]).as_deref(),
                Some(&b"p"[..])
            );
            let payload = host.property_value(&["jwt_payload"]).unwrap();
            assert!(
                String::from_utf8(payload)
                    .unwrap()
                    .contains("\"sub\":\"alice\"")
            );
            let hit = host.metric_value("result=.=hit;.;meshward_jwt_auth_cache_total");
            assert_eq!(hit.unwrap_or(0), round, "round {round}");
        }
    }

    #[test]
    fn refusal_replies_401_with_rfc6750_header_and_host_failure_fails_closed() {
        let token = token();
        let host = host(&format!("{token}x"));
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        Stream::default().on_request_headers(&filter, &host);
        let reply = host.local_response().unwrap();
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.details,
            "jwt_authn_access_denied{Jwt_verification_fails}"
        );
        let www = reply
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        assert_eq!(
            www,
            "Bearer realm=\"http://example.com/a\", error=\"invalid_token\", \
             error_description=\"Jwt verification fails\""
        );
        assert_eq!(
            host.metric_value("reason=.=signature;.;provider=.=p;.;meshward_jwt_auth_denied_total"),
            Some(1)
        );
        let failing = self::host(&token).failing_always(Hostcall::Property, HostError::BadArgument);
        assert_eq!(
            Stream::default().on_request_headers(&filter, &failing),
            Action::Pause
        );
        assert_eq!(failing.local_response().unwrap().status, 503);
    }
}
