//! The glue between the proxy and the pure decisions, written against the core's [`Host`] so it
//! runs natively against `MockHost`; `plugin` only forwards proxy-wasm callbacks here.
//!
//! Per request: pick the first rule whose match holds (no rule: no requirement), read every
//! token location (at most one may hold a token), evaluate the requirement (verifying each
//! provider at most once, through its verified-token cache), then one [`Effects`]: strip every
//! header the filter may write, write claim and payload headers, strip the token, publish
//! properties — or reply 401/403 with an RFC 6750 `WWW-Authenticate`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use meshward_core::effects::{self, Action, ApplyError, Effects};
use meshward_core::host::{
    Host, HostError, LocalReply, LogLevel, MapKind, MetricKind, PropertyPath,
};
use meshward_core::metrics::Family;
use meshward_core::plugin::{FailureMode, on_error};
use meshward_core::route_match::MatchInput;

use crate::cache::{TokenCache, token_fingerprint};
use crate::config::{self, Config, Location, Requirement};
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
/// Most payload properties set on one request.
const MAX_PAYLOAD_PROPERTIES: usize = 4;

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
        let caches = config
            .providers
            .iter()
            .map(|p| RefCell::new(TokenCache::new(p.cache_entries)))
            .collect();
        Some(Self {
            metrics: Metrics::define(host, &config),
            config,
            caches,
            location_paths,
            payload_paths,
        })
    }

    fn verify_cached(
        &self,
        host: &(impl Host + ?Sized),
        provider: usize,
        token: &str,
        now: u64,
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
        let verified = Rc::new(verify::verify(p, token, now).inspect_err(|failure| {
            if ::log::log_enabled!(::log::Level::Debug) {
                ::log::debug!(
                    "provider {}: token {} refused: {}",
                    p.name,
                    token_fingerprint(token),
                    failure.code()
                );
            }
        })?);
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
        let result = filter.verify_cached(host, provider, token, now);
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
        let now = host.now()? / 1_000_000_000;
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
                    body: failure.message().as_bytes(),
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
        let mut payloads = 0;
        for &p in &passed {
            if let (Some(Some(path)), Some(Some(Ok(v)))) =
                (filter.payload_paths.get(p), self.results.get(p))
                && let Some(json) = &v.payload_json
                && payloads < MAX_PAYLOAD_PROPERTIES
            {
                effects.set_property(path, json);
                payloads += 1;
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
