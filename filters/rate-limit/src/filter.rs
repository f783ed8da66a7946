//! The glue between the proxy and the pure parts, written against the core's [`Host`] so it runs
//! natively against `MockHost` in tests; `plugin` only forwards proxy-wasm callbacks here.
//!
//! Per request: pick the rule (reading only what its match and key need), read the clock once,
//! charge the key's bucket in shared data with compare-and-swap, then apply the effects: forward
//! (rate-limit headers on the response if configured) or reply 429 / `RESOURCE_EXHAUSTED`.
//!
//! ## Shared data and the first write
//!
//! Each rule owns `slots` shared-data keys, `mwrl.<config hash>.<rule>.<slot>`, plus one marker
//! key `mwrl.<config hash>.m` per configuration; nothing else is ever written, so the key space
//! is fixed by the configuration whatever the traffic. A slot is updated read → edit →
//! `set_shared_data(cas)`, retried up to `contention.maxRetries` times on `CasMismatch`.
//!
//! Envoy ignores the CAS token when the key does not exist yet (it inserts), so two workers that
//! both find a slot absent would both "win" and one's charge would be lost. A worker that finds a
//! slot absent therefore never writes a charge: it only creates the slot, as an empty table, with
//! a CAS token it knows is *stale* — one read from the marker key before it read the slot. Envoy
//! hands out CAS tokens from one increasing counter, so if another worker created the slot in
//! between, the slot's token is newer than the marker's and the creation fails with
//! `CasMismatch` (harmless: the slot exists). If the slot is still absent the insert happens.
//! Either way the worker then reads the slot again and charges it with an ordinary CAS write, so
//! every charge is a CAS against a token that was read, and none can be lost. (The counter wraps
//! after 2^32 writes; a collision needs exactly that many writes inside one read–write window.)

use std::borrow::Cow;
use std::cell::OnceCell;

use arrayvec::{ArrayString, ArrayVec};
use meshward_core::effects::{self, Action, ApplyError, Effects};
use meshward_core::host::{Host, HostError, LocalReply, LogLevel, MapKind, PropertyPath};
use meshward_core::metrics::Family;
use meshward_core::plugin::on_error;
use meshward_core::route_match::MatchInput;

use crate::config::{self, Config, Cost, Exhausted, HeaderDialect, KeySource, Rule};
use crate::key::{self, Key};
use crate::metrics::{Metrics, Outcome};
use crate::table::{self, Charge, TableSpec};

/// `details` of the local reply `failureMode: deny` sends.
pub const FAILURE_DETAILS: &str = "meshward_rate_limit_error";
/// gRPC `RESOURCE_EXHAUSTED`.
pub const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

static SOURCE_ADDRESS: PropertyPath = PropertyPath::from_static("source\0address");
static ROUTE_NAME: PropertyPath = PropertyPath::from_static("xds\0route_name");
static XFF: PropertyPath = PropertyPath::from_static("request\0headers\0x-forwarded-for");

fn request_header(name: &str) -> PropertyPath {
    PropertyPath::new(&["request", "headers", name])
}

/// What configure prepares per rule.
#[derive(Debug)]
struct Prepared {
    /// `mwrl.<hash>.<rule>.`: the slot number is appended.
    key_prefix: String,
    /// The request header or published property the key is read from.
    key_header: Option<PropertyPath>,
    cost_header: Option<PropertyPath>,
    seed: u64,
    /// `x-ratelimit-limit` value.
    limit: Vec<u8>,
    /// `RateLimit-Policy` value.
    policy: Vec<u8>,
    /// `"name"` for the `RateLimit` field.
    quoted_name: Vec<u8>,
}

/// One configured filter on one VM.
#[derive(Debug)]
pub struct Filter {
    /// The validated configuration.
    pub config: Config,
    /// Metric families (ids of this VM).
    pub metrics: Metrics,
    prepared: Vec<Prepared>,
    marker: String,
}

/// The marker key of a configuration (see the module docs).
pub fn marker_key(config_hash: u64) -> String {
    format!("mwrl.{config_hash:016x}.m")
}

impl Filter {
    /// Parses the configuration, defines the metrics and creates the marker key; logs the reason
    /// and returns `None` when the configuration is invalid.
    pub fn configure(host: &(impl Host + ?Sized), bytes: &[u8]) -> Option<Self> {
        let config = match config::parse(bytes) {
            Ok(config) => config,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("rate-limit: invalid plugin config: {e}"),
                );
                return None;
            }
        };
        let hash = config.config_hash;
        let prepared = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| prepare(hash, i, rule))
            .collect();
        let marker = marker_key(hash);
        // Any value will do and every VM writes the same one: racing creations are harmless.
        if let Ok(found) = host.shared_data(&marker)
            && found.value.is_none()
            && let Err(e) = host.set_shared_data(&marker, b"1", None)
        {
            host.log(
                LogLevel::Warn,
                &format!("rate-limit: cannot create {marker}: {e}"),
            );
        }
        Some(Self {
            metrics: Metrics::define(host, config.rules.iter().map(|r| r.name.as_str())),
            config,
            prepared,
            marker,
        })
    }

    /// Every shared-data key this configuration may ever use (marker first).
    pub fn shared_keys(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.marker.clone()).chain(
            self.config
                .rules
                .iter()
                .zip(&self.prepared)
                .flat_map(|(rule, p)| (0..rule.slots).map(move |s| format!("{}{s}", p.key_prefix))),
        )
    }
}

fn prepare(hash: u64, index: usize, rule: &Rule) -> Prepared {
    let key_header = match &rule.key {
        KeySource::Header { name, .. } => Some(request_header(name)),
        KeySource::Property { path, .. } => Some(PropertyPath::new(
            &path.iter().map(String::as_str).collect::<Vec<_>>(),
        )),
        _ => None,
    };
    let cost_header = match &rule.cost {
        Cost::Header { name, .. } => Some(request_header(name)),
        Cost::Fixed(_) => None,
    };
    let b = &rule.bucket;
    let refill_ns = u64::from(b.max_tokens.div_ceil(b.tokens_per_fill.max(1)))
        .saturating_mul(b.fill_interval_ns);
    let window_s = refill_ns.div_ceil(1_000_000_000).max(1);
    let policy = format!("\"{}\";q={};w={window_s}", rule.name, b.max_tokens);
    Prepared {
        key_prefix: format!("mwrl.{hash:016x}.{index}."),
        key_header,
        cost_header,
        seed: key::fnv64(rule.name.as_bytes()),
        limit: b.max_tokens.to_string().into_bytes(),
        policy: policy.into_bytes(),
        quoted_name: format!("\"{}\"", rule.name).into_bytes(),
    }
}

/// Request data a route match reads, fetched from the proxy on first use.
struct LazyRequest<'h, H: ?Sized> {
    host: &'h H,
    path: OnceCell<Option<Vec<u8>>>,
}

impl<H: Host + ?Sized> MatchInput for LazyRequest<'_, H> {
    fn path(&self) -> Option<&[u8]> {
        self.path
            .get_or_init(|| {
                self.host
                    .header(MapKind::RequestHeaders, ":path")
                    .ok()
                    .flatten()
            })
            .as_deref()
    }

    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        // Envoy's joined view (duplicates joined with `,`), as RouteMatch expects.
        self.host
            .property(&request_header(name))
            .ok()
            .flatten()
            .map(Cow::Owned)
    }
}

/// The key of `rule` for this request; `None` when the request has no value for it (the rule
/// then does not apply).
fn rule_key(
    rule: &Rule,
    prepared: &Prepared,
    host: &(impl Host + ?Sized),
    request: &LazyRequest<'_, impl Host + ?Sized>,
    out: &mut Key,
) -> Result<bool, HostError> {
    match &rule.key {
        KeySource::Fixed => Ok(true),
        KeySource::Route => match host.property(&ROUTE_NAME)? {
            Some(route) => {
                key::value_key(&route, None, out);
                Ok(true)
            }
            None => Ok(false),
        },
        KeySource::ClientAddress(client) => {
            let xff = if client.trusted_hops > 0 {
                host.property(&XFF)?
            } else {
                None
            };
            let mut peer_error = None;
            let peer = || {
                host.property(&SOURCE_ADDRESS)
                    .map_err(|e| peer_error = Some(e))
                    .ok()
                    .flatten()
            };
            let ip = key::client_ip(client, xff.as_deref(), peer);
            if let Some(e) = peer_error {
                return Err(e);
            }
            match ip {
                Some(ip) => {
                    key::address_key(client, ip, out);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        // A property absent (e.g. no verified token, so jwt-auth published no subject) is like a
        // header absent: the rule does not apply and the next one is tried.
        KeySource::Header { allow_list, .. } | KeySource::Property { allow_list, .. } => {
            let Some(path) = &prepared.key_header else {
                return Ok(false);
            };
            match host.property(path)? {
                Some(value) => {
                    key::value_key(&value, allow_list.as_deref(), out);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        KeySource::QueryParameter { name, allow_list } => {
            match request
                .path()
                .and_then(|p| key::query_value(p, name.as_bytes()))
            {
                Some(value) => {
                    key::value_key(value, allow_list.as_deref(), out);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
    }
}

fn cost(rule: &Rule, prepared: &Prepared, host: &(impl Host + ?Sized)) -> Result<u32, HostError> {
    match (&rule.cost, &prepared.cost_header) {
        (Cost::Header { max, .. }, Some(path)) => Ok(host
            .property(path)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
            .map_or(1, |n| n.min(*max))),
        (Cost::Fixed(n), _) => Ok(*n),
        (Cost::Header { .. }, None) => Ok(1),
    }
}

/// The result of charging shared data.
enum Charged {
    Done(Charge),
    Exhausted,
}

/// Creates slot `name` as an empty table if it is absent (see the module docs).
fn create_slot(host: &(impl Host + ?Sized), marker: &str, name: &str) -> Result<(), HostError> {
    let mut stale = host.shared_data(marker)?.cas;
    if stale.is_none() {
        host.set_shared_data(marker, b"1", None)?;
        stale = host.shared_data(marker)?.cas;
    }
    // Without a token (the marker vanished: cannot happen in Envoy) creation is refused rather
    // than made unconditional.
    let Some(stale) = stale else {
        return Err(HostError::NotFound);
    };
    match host.set_shared_data(name, &[table::FORMAT], Some(stale)) {
        Ok(()) | Err(HostError::CasMismatch) => Ok(()),
        Err(e) => Err(e),
    }
}

fn charge_shared(
    host: &(impl Host + ?Sized),
    filter: &Filter,
    name: &str,
    spec: &TableSpec,
    key: &[u8],
    cost: u32,
    now: u64,
) -> Result<Charged, HostError> {
    let mut created = false;
    let mut attempts = 0;
    while attempts <= filter.config.max_retries {
        let found = host.shared_data(name)?;
        let (Some(mut value), Some(cas)) = (found.value, found.cas) else {
            if created {
                return Err(HostError::NotFound);
            }
            create_slot(host, &filter.marker, name)?;
            created = true;
            continue;
        };
        let charge = table::charge(&mut value, spec, key, cost, now);
        if !charge.write {
            return Ok(Charged::Done(charge));
        }
        match host.set_shared_data(name, &value, Some(cas)) {
            Ok(()) => return Ok(Charged::Done(charge)),
            Err(HostError::CasMismatch) => attempts += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(Charged::Exhausted)
}

/// What the request phase decided, for the response phase.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decision {
    /// Index of the rule that took the request.
    pub rule: usize,
    /// The outcome counted.
    pub outcome: Option<Outcome>,
    /// Tokens left.
    pub remaining: u32,
    /// Seconds to the next fill.
    pub reset_s: u64,
    /// A local reply was sent (its headers are already complete).
    pub replied: bool,
}

/// One stream.
#[derive(Debug, Default)]
pub struct Stream {
    decision: Option<Decision>,
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// Longest shared-data key name: `mwrl.` + 16 hex digits + `.` + rule index + `.` + slot.
type SlotName = ArrayString<64>;

/// The shared-data key of `slot` of a rule, on the stack (no allocation per request).
fn slot_name(prepared: &Prepared, slot: u32) -> SlotName {
    let mut name = SlotName::new();
    // The prefix is at most 5 + 16 + 1 + 20 + 1 bytes and the slot at most 10 digits.
    let _ = name.try_push_str(&prepared.key_prefix);
    let _ = name.try_push_str(itoa::Buffer::new().format(slot));
    name
}

/// The rate-limit headers of one decision in the configured dialect(s), handed to `emit` in
/// order, borrowing the two numbers formatted by the caller; `composed` holds the IETF
/// `RateLimit` value. A callback rather than a list: the response phase writes each header
/// straight to the proxy (an intermediate list and `Effects` cost ~500 instructions there).
fn rate_limit_headers<'a>(
    p: &'a Prepared,
    dialect: HeaderDialect,
    remaining: &'a [u8],
    reset: &'a [u8],
    composed: &'a mut ArrayVec<u8, 160>,
    mut emit: impl FnMut(&'static str, &'a [u8]),
) {
    if matches!(dialect, HeaderDialect::Envoy | HeaderDialect::Both) {
        emit("x-ratelimit-limit", &p.limit[..]);
        emit("x-ratelimit-remaining", remaining);
        emit("x-ratelimit-reset", reset);
    }
    if matches!(dialect, HeaderDialect::Ietf | HeaderDialect::Both) {
        let _ = composed.try_extend_from_slice(&p.quoted_name);
        let _ = composed.try_extend_from_slice(b";r=");
        let _ = composed.try_extend_from_slice(remaining);
        let _ = composed.try_extend_from_slice(b";t=");
        let _ = composed.try_extend_from_slice(reset);
        let composed: &'a [u8] = composed;
        emit("ratelimit-policy", &p.policy[..]);
        emit("ratelimit", composed);
    }
}

/// The counters one decision adds 1 to, as (family, series), handed to `count`.
fn count_decision<'m>(
    metrics: &'m Metrics,
    rule: usize,
    outcome: Outcome,
    charge: &Charge,
    mut count: impl FnMut(&'m Family, usize),
) {
    count(&metrics.requests, Metrics::request_series(rule, outcome));
    if charge.inserted && charge.evicted.is_none() {
        count(&metrics.live_keys, rule);
    }
    if let Some(why) = charge.evicted {
        count(&metrics.evictions, Metrics::eviction_series(rule, why));
    }
}

impl Stream {
    /// The decision of the request phase, if a rule took the request.
    pub const fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    fn request(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
    ) -> Result<Action, ApplyError> {
        let request = LazyRequest {
            host,
            path: OnceCell::new(),
        };
        let mut key = Key::new();
        let mut chosen = None;
        for (i, (rule, prepared)) in filter.config.rules.iter().zip(&filter.prepared).enumerate() {
            if rule.matcher.as_ref().is_some_and(|m| !m.matches(&request)) {
                continue;
            }
            key.clear();
            if rule_key(rule, prepared, host, &request, &mut key).map_err(ApplyError::reading)? {
                chosen = Some((i, rule, prepared));
                break;
            }
        }
        let Some((index, rule, prepared)) = chosen else {
            return Ok(Action::Continue);
        };
        let cost = cost(rule, prepared, host).map_err(ApplyError::reading)?;
        let now = host.now().map_err(ApplyError::reading)?;
        let spec = TableSpec {
            bucket: rule.bucket,
            capacity: usize::try_from(rule.entries_per_slot).unwrap_or(1),
            overflow: rule.overflow,
        };
        let charged = if rule.bucket.max_tokens == 0 {
            // Rejects everything without touching shared data.
            Charged::Done(Charge {
                reset_ns: rule.bucket.fill_interval_ns,
                ..Charge::default()
            })
        } else {
            let name = slot_name(prepared, key::slot(&key, prepared.seed, rule.slots));
            charge_shared(host, filter, &name, &spec, &key, cost, now)
                .map_err(ApplyError::reading)?
        };
        let (outcome, limited, charge) = match charged {
            Charged::Exhausted => (
                Outcome::ContentionExhausted,
                filter.config.on_exhausted == Exhausted::Deny,
                Charge {
                    reset_ns: rule.bucket.fill_interval_ns,
                    retry_after_ns: Some(rule.bucket.fill_interval_ns),
                    ..Charge::default()
                },
            ),
            Charged::Done(c) if c.allowed => (Outcome::Allowed, false, c),
            Charged::Done(c) if rule.shadow => (Outcome::ShadowLimited, false, c),
            Charged::Done(c) => (Outcome::Limited, true, c),
        };
        let decision = Decision {
            rule: index,
            outcome: Some(outcome),
            remaining: charge.remaining,
            reset_s: ceil_secs(charge.reset_ns),
            replied: limited,
        };
        self.decision = Some(decision);
        let metrics = &filter.metrics;
        if !limited {
            // Forwarded, the common path: the (shadow) request headers and the counters go
            // straight to the proxy, in the order `effects::apply` uses; building and applying
            // an `Effects` value for them cost ~300 wasm instructions per request (measured).
            if outcome == Outcome::ShadowLimited {
                for (name, value) in &rule.shadow_request_headers {
                    host.set_header(MapKind::RequestHeaders, name, value)
                        .map_err(|error| ApplyError::Host {
                            what: "header",
                            error,
                        })?;
                }
            }
            count_decision(metrics, index, outcome, &charge, |family, series| {
                family.add(host, series, 1);
            });
            return Ok(Action::Continue);
        }
        // Declared before `effects`, which borrows them.
        let mut remaining = itoa::Buffer::new();
        let mut reset = itoa::Buffer::new();
        let mut retry_after = itoa::Buffer::new();
        let mut composed = ArrayVec::new();
        let mut headers: ArrayVec<(&str, &[u8]), 16> = ArrayVec::new();
        let mut effects = Effects::new();
        count_decision(metrics, index, outcome, &charge, |family, series| {
            effects.count(family, series, 1);
        });
        let response = &filter.config.response;
        let retry_after = retry_after
            .format(ceil_secs(
                charge.retry_after_ns.unwrap_or(charge.reset_ns).max(1),
            ))
            .as_bytes();
        for (name, value) in &response.headers {
            let _ = headers.try_push((name.as_str(), value.as_slice()));
        }
        rate_limit_headers(
            prepared,
            response.dialect,
            remaining.format(decision.remaining).as_bytes(),
            reset.format(decision.reset_s).as_bytes(),
            &mut composed,
            |name, value| {
                let _ = headers.try_push((name, value));
            },
        );
        if response.retry_after {
            let _ = headers.try_push(("retry-after", retry_after));
        }
        let grpc = host
            .header(MapKind::RequestHeaders, "content-type")
            .map_err(ApplyError::reading)?
            .is_some_and(|ct| ct.starts_with(b"application/grpc"));
        effects.reply(LocalReply {
            status: response.status,
            headers: &headers,
            body: &response.body,
            details: &response.details,
            grpc_status: grpc.then_some(GRPC_RESOURCE_EXHAUSTED),
        });
        Ok(effects::apply(host, MapKind::RequestHeaders, &effects)?.action)
    }

    /// Request headers: decide and apply; a host failure is counted and handled by
    /// `failureMode`.
    pub fn on_request_headers(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        match self.request(filter, host) {
            Ok(action) => action,
            Err(error) => {
                self.decision = None;
                filter.metrics.host_failures.add(host, 0, 1);
                on_error(host, filter.config.failure_mode, FAILURE_DETAILS, &error)
            }
        }
    }

    /// Response headers: the rate-limit headers of the bucket that was charged.
    pub fn on_response_headers(&self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        let dialect = filter.config.response.dialect;
        let Some(decision) = &self.decision else {
            return Action::Continue;
        };
        if decision.replied || dialect == HeaderDialect::None {
            return Action::Continue;
        }
        let Some(prepared) = filter.prepared.get(decision.rule) else {
            return Action::Continue;
        };
        let mut remaining = itoa::Buffer::new();
        let mut reset = itoa::Buffer::new();
        let mut composed = ArrayVec::new();
        let mut failed = None;
        rate_limit_headers(
            prepared,
            dialect,
            remaining.format(decision.remaining).as_bytes(),
            reset.format(decision.reset_s).as_bytes(),
            &mut composed,
            |name, value| {
                if failed.is_none() {
                    failed = host.set_header(MapKind::ResponseHeaders, name, value).err();
                }
            },
        );
        if let Some(error) = failed {
            filter.metrics.host_failures.add(host, 0, 1);
            ::log::warn!("response headers: {error}");
        }
        Action::Continue
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

    fn on_response_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
        stream.on_response_headers(self, host)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use meshward_core::host::mock::MockHost;

    use super::*;

    const PER_IP: &str = r#"{"rules": [{"name": "ip", "key": {"type": "clientAddress"},
        "tokenBucket": {"maxTokens": 2, "tokensPerFill": 1, "fillInterval": "1s"}}],
        "response": {"rateLimitHeaders": "both"}}"#;

    fn host(peer: &str) -> MockHost {
        MockHost::new()
            .with_request_header(":path", "/x?tenant=a")
            .with_property(&["source", "address"], peer)
    }

    #[test]
    fn limits_per_client_with_headers_and_metrics() {
        let host = host("10.0.0.1:1234");
        let filter = Filter::configure(&host, PER_IP.as_bytes()).unwrap();
        for _ in 0..2 {
            assert_eq!(
                Stream::default().on_request_headers(&filter, &host),
                Action::Continue
            );
        }
        let mut stream = Stream::default();
        assert_eq!(stream.on_request_headers(&filter, &host), Action::Pause);
        let reply = host.local_response().unwrap();
        assert_eq!(
            (reply.status, reply.details.as_str()),
            (429, "meshward_rate_limited")
        );
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(header("x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(header("retry-after").as_deref(), Some("1"));
        assert_eq!(
            header("ratelimit-policy").as_deref(),
            Some("\"ip\";q=2;w=2")
        );
        assert_eq!(header("ratelimit").as_deref(), Some("\"ip\";r=0;t=1"));
        assert_eq!(reply.grpc_status, None);
        assert_eq!(
            host.metric_value("rule=.=ip;.;outcome=.=allowed;.;meshward_rate_limit_requests_total"),
            Some(2)
        );
        assert_eq!(
            host.metric_value("rule=.=ip;.;outcome=.=limited;.;meshward_rate_limit_requests_total"),
            Some(1)
        );
        assert_eq!(
            host.metric_value("rule=.=ip;.;meshward_rate_limit_live_keys"),
            Some(1)
        );
        // Another client has its own bucket; only configured keys exist.
        let other = self::host("10.0.0.2:1");
        other.put_shared_data("x", "y");
        let keys: Vec<String> = filter.shared_keys().collect();
        assert_eq!(keys.len(), 1 + 512);
        for key in host.shared_keys() {
            assert!(keys.contains(&key), "{key}");
        }
    }

    #[test]
    fn grpc_requests_get_resource_exhausted_and_shadow_only_counts() {
        let config =
            r#"{"rules": [{"name": "g", "tokenBucket": {"maxTokens": 0, "fillInterval": "1s"}}]}"#;
        let host = host("10.0.0.1:1").with_request_header("content-type", "application/grpc+proto");
        let filter = Filter::configure(&host, config.as_bytes()).unwrap();
        assert_eq!(
            Stream::default().on_request_headers(&filter, &host),
            Action::Pause
        );
        assert_eq!(host.local_response().unwrap().grpc_status, Some(8));
        assert!(
            host.shared_keys().iter().all(|k| k.ends_with(".m")),
            "max_tokens 0 touches no bucket"
        );

        let shadow = r#"{"rules": [{"name": "s", "shadow": true, "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"},
            "request_headers_to_add_when_not_enforced": [{"name": "X-Would-Limit", "value": "s"}]}]}"#;
        let host = self::host("10.0.0.1:1");
        let filter = Filter::configure(&host, shadow.as_bytes()).unwrap();
        for _ in 0..3 {
            assert_eq!(
                Stream::default().on_request_headers(&filter, &host),
                Action::Continue
            );
        }
        assert!(host.local_response().is_none());
        assert_eq!(host.request_header("x-would-limit").as_deref(), Some("s"));
        assert_eq!(
            host.metric_value(
                "rule=.=s;.;outcome=.=shadow_limited;.;meshward_rate_limit_requests_total"
            ),
            Some(2)
        );
    }

    #[test]
    fn first_write_never_overwrites_a_slot_created_concurrently() {
        let host = MockHost::new();
        let filter = Filter::configure(&host, PER_IP.as_bytes()).unwrap();
        let slot = "mwrl.test.0.1";
        // Another worker created the slot and charged it after this one read it as absent.
        let mut theirs = vec![table::FORMAT];
        let spec = TableSpec {
            bucket: filter.config.rules[0].bucket,
            capacity: 8,
            overflow: table::Overflow::EvictLru,
        };
        table::charge(&mut theirs, &spec, b"k", 1, 0);
        host.put_shared_data(slot, &theirs);
        create_slot(&host, &filter.marker, slot).unwrap();
        assert_eq!(host.shared_entry(slot).unwrap().0, theirs, "kept");
        // Absent: created empty.
        create_slot(&host, &filter.marker, "mwrl.test.0.2").unwrap();
        assert_eq!(
            host.shared_entry("mwrl.test.0.2").unwrap().0,
            [table::FORMAT]
        );
    }

    #[test]
    fn header_and_query_keys_and_costs() {
        let config = r#"{"rules": [
            {"name": "q", "match": {"prefix": "/q"}, "key": {"type": "queryParameter", "name": "tenant"},
             "tokenBucket": {"maxTokens": 5, "fillInterval": "1s"}},
            {"name": "h", "key": {"type": "header", "name": "x-api-key", "allowList": ["gold"]},
             "hitsAddend": {"header": "x-cost", "max": 3},
             "tokenBucket": {"maxTokens": 5, "fillInterval": "1s"}}]}"#;
        let host = MockHost::new()
            .with_request_header(":path", "/x?tenant=a")
            .with_request_header("x-api-key", "silver")
            .with_request_header("x-cost", "100");
        let filter = Filter::configure(&host, config.as_bytes()).unwrap();
        let mut stream = Stream::default();
        stream.on_request_headers(&filter, &host);
        let d = stream.decision().unwrap();
        assert_eq!((d.rule, d.remaining), (1, 2), "cost capped at 3");
        let host = MockHost::new().with_request_header(":path", "/q?tenant=a");
        let mut stream = Stream::default();
        stream.on_request_headers(&filter, &host);
        assert_eq!(stream.decision().unwrap().rule, 0);
        // No key value anywhere: no rule, nothing charged.
        let host = MockHost::new().with_request_header(":path", "/q");
        let mut stream = Stream::default();
        stream.on_request_headers(&filter, &host);
        assert!(stream.decision().is_none());
    }

    #[test]
    fn property_keys_charge_per_value_and_fall_through_when_absent() {
        let config = r#"{"rules": [
            {"name": "user", "key": {"type": "property", "path": ["meshward_jwt_subject"]},
             "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}},
            {"name": "rest", "tokenBucket": {"maxTokens": 5, "fillInterval": "1s"}}]}"#;
        let alice = MockHost::new().with_property(&["meshward_jwt_subject"], "alice");
        let filter = Filter::configure(&alice, config.as_bytes()).unwrap();
        let mut stream = Stream::default();
        assert_eq!(stream.on_request_headers(&filter, &alice), Action::Continue);
        assert_eq!(stream.decision().unwrap().rule, 0);
        assert_eq!(
            Stream::default().on_request_headers(&filter, &alice),
            Action::Pause
        );
        let anonymous = MockHost::new();
        let mut stream = Stream::default();
        assert_eq!(
            stream.on_request_headers(&filter, &anonymous),
            Action::Continue
        );
        assert_eq!(stream.decision().unwrap().rule, 1, "fell through");
    }

    #[test]
    fn route_keys_separate_routes() {
        let config = r#"{"rules": [{"name": "r", "key": {"type": "route"},
            "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]}"#;
        let a = MockHost::new().with_property(&["xds", "route_name"], "a");
        let filter = Filter::configure(&a, config.as_bytes()).unwrap();
        assert_eq!(
            Stream::default().on_request_headers(&filter, &a),
            Action::Continue
        );
        assert_eq!(
            Stream::default().on_request_headers(&filter, &a),
            Action::Pause
        );
        let b = MockHost::new().with_property(&["xds", "route_name"], "b");
        for (key, value) in a
            .shared_keys()
            .iter()
            .filter_map(|k| a.shared_entry(k).map(|e| (k.clone(), e.0)))
        {
            b.put_shared_data(&key, value);
        }
        assert_eq!(
            Stream::default().on_request_headers(&filter, &b),
            Action::Continue
        );
    }

    #[test]
    fn invalid_config_is_logged_with_its_path() {
        let host = MockHost::new();
        assert!(
            Filter::configure(
                &host,
                br#"{"rules": [{"tokenBucket": {"maxTokens": 1, "fillInterval": "10ms"}}]}"#
            )
            .is_none()
        );
        let logs = host.logs_at_least(LogLevel::Error);
        assert!(
            logs[0].starts_with(
                "rate-limit: invalid plugin config: rules[0].tokenBucket.fillInterval"
            ),
            "{logs:?}"
        );
    }
}
