//! Plugin configuration: `RawConfig` (serde, exactly the JSON users write) → validated `Config`.
//!
//! Conventions of `meshward_core::config`: every object denies unknown fields, every error names
//! the JSON path, every optional field may be `null`. Fields that mirror Envoy's
//! `local_ratelimit` (`tokenBucket.*`, `hitsAddend`, `fillInterval`, …) also take the protobuf
//! snake_case spelling. With the `schema` feature, [`schema`] is the JSON Schema of these types
//! (`filters/rate-limit/config.schema.json`); the doc comments are its descriptions.

use meshward_core::config::ConfigDuration;
use meshward_core::route_match::{RouteMatch, RouteMatcher};
use serde::Deserialize;

use crate::bucket::TokenBucket;
use crate::key::{ClientAddress, fnv64};
use crate::table::Overflow;

pub use meshward_core::config::{ConfigError, InvalidConfig};
pub use meshward_core::plugin::FailureMode;

/// Shortest `fillInterval` (Envoy's limit too).
pub const MIN_FILL_INTERVAL_MS: u64 = 50;
/// Most rules (the default bucket included).
pub const MAX_RULES: usize = 64;
/// Largest `maxKeys` of one rule.
pub const MAX_KEYS_PER_RULE: u32 = 1 << 20;
/// Largest `entriesPerSlot`.
pub const MAX_ENTRIES_PER_SLOT: u32 = 64;
/// Largest `contention.maxRetries`.
pub const MAX_RETRIES: u32 = 64;
/// Longest allow-list.
pub const MAX_ALLOW_LIST: usize = 4096;
/// Longest reply body.
pub const MAX_BODY_LEN: usize = 4096;

// === raw (serde) ===

/// Configuration of the meshward rate-limit filter. `{}` limits nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "RateLimitConfig")
)]
pub struct RawConfig {
    /// Ordered rules: the first whose `match` holds (and whose key is present) limits the request.
    pub rules: Option<Vec<RawRule>>,
    /// The bucket of requests no rule takes (a rule without `match`); none: they pass.
    #[serde(alias = "default_bucket")]
    pub default_bucket: Option<RawRule>,
    /// The reply to limited requests and the rate-limit headers.
    pub response: Option<RawResponse>,
    /// Compare-and-swap retries on shared data.
    pub contention: Option<RawContention>,
    /// What to do when the proxy fails a call the filter needs (default `allow`).
    #[serde(alias = "failure_mode")]
    pub failure_mode: Option<FailureMode>,
}

/// One rule: a match, a key and a token bucket per key value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Rule")
)]
pub struct RawRule {
    /// Name (metric tag `rule` and `RateLimit` policy name); default `rule<i>` / `default`.
    /// Letters, digits, `_` and `-`, at most 64.
    pub name: Option<String>,
    /// Envoy `RouteMatch` (`prefix`, `path`, `safeRegex`, `headers`, `queryParameters`, …);
    /// absent: every request.
    #[serde(rename = "match")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<serde_json::Value>"))]
    pub route_match: Option<RouteMatch>,
    /// What separates buckets; absent: one bucket for the whole rule.
    pub key: Option<RawKey>,
    /// The bucket of each key value (Envoy `token_bucket`). Required.
    #[serde(alias = "token_bucket")]
    pub token_bucket: Option<RawTokenBucket>,
    /// Tokens a request costs (Envoy `hits_addend`; default 1).
    #[serde(alias = "hits_addend")]
    pub hits_addend: Option<RawHitsAddend>,
    /// Most distinct key values tracked at once (like Envoy `max_dynamic_descriptors`; default
    /// 4096; 1 without `key`). Fixes the shared-data keys used: `ceil(maxKeys / entriesPerSlot)`.
    #[serde(alias = "max_keys")]
    pub max_keys: Option<u32>,
    /// Key values per shared-data key (default 8, at most 64): larger tables cost more
    /// instructions per request, smaller ones more shared-data keys.
    #[serde(alias = "entries_per_slot")]
    pub entries_per_slot: Option<u32>,
    /// A new key value when its table is full of busy ones (default `evictLru`).
    pub overflow: Option<RawOverflow>,
    /// Count "would limit" but let every request through (default false).
    pub shadow: Option<bool>,
    /// Headers added to a request a shadow rule would have limited, for the upstream to see
    /// (Envoy `request_headers_to_add_when_not_enforced`; at most 4).
    #[serde(alias = "request_headers_to_add_when_not_enforced")]
    pub request_headers_to_add_when_not_enforced: Option<Vec<RawHeader>>,
}

/// Envoy's token bucket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "TokenBucket")
)]
pub struct RawTokenBucket {
    /// Capacity, and the tokens of a new bucket (required; 0 limits every request).
    #[serde(alias = "max_tokens")]
    pub max_tokens: Option<u32>,
    /// Tokens added each `fillInterval` (default 1).
    #[serde(alias = "tokens_per_fill")]
    pub tokens_per_fill: Option<u32>,
    /// How often tokens are added (required, at least `50ms`), e.g. `"1s"`.
    #[serde(alias = "fill_interval")]
    pub fill_interval: Option<ConfigDuration>,
}

/// The key of a rule, by `type`: `{"type": "clientAddress", "trustedHops": 1,
/// "ipv6PrefixLength": 64}`, `{"type": "header", "name": "x-api-key", "allowList": [..]}`,
/// `{"type": "queryParameter", "name": "tenant"}`, `{"type": "route"}`, `{"type": "fixed"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Key")
)]
pub struct RawKey {
    /// The source of the key.
    #[serde(rename = "type")]
    pub kind: KeyType,
    /// `header`/`queryParameter`: its name (required).
    pub name: Option<String>,
    /// `header`/`queryParameter`: the values with their own bucket; every other value shares
    /// one. Absent: every value has its own bucket (up to `maxKeys`).
    pub allow_list: Option<Vec<String>>,
    /// `property`: the property path another filter published, e.g. `["meshward_jwt_subject"]`
    /// (filter state `wasm.meshward_jwt_subject`, set by jwt-auth after it verified a token);
    /// 1 to 8 segments (required).
    pub path: Option<Vec<String>>,
    /// `clientAddress`: proxies in front of this one that append to `X-Forwarded-For`; the client
    /// is the `trustedHops`-th entry from the right (default 0: the peer, `source.address`).
    pub trusted_hops: Option<u32>,
    /// `clientAddress`: IPv4 grouping prefix (default 32).
    pub ipv4_prefix_length: Option<u8>,
    /// `clientAddress`: IPv6 grouping prefix (default 64).
    pub ipv6_prefix_length: Option<u8>,
}

/// `key.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum KeyType {
    /// The client address.
    ClientAddress,
    /// A request header value.
    Header,
    /// A query parameter value.
    QueryParameter,
    /// The route's name (`xds.route_name`): one bucket per route.
    Route,
    /// One bucket.
    Fixed,
    /// A property (filter state) another filter published, such as the verified subject
    /// jwt-auth publishes; a request without it falls through to the next rule.
    Property,
}

/// Tokens per request: `{"number": 2}`, or `{"header": "x-cost", "max": 10}` (a decimal header
/// value, capped at `max`; absent or invalid: 1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "HitsAddend")
)]
pub struct RawHitsAddend {
    /// A fixed cost.
    pub number: Option<u32>,
    /// Header carrying the cost.
    pub header: Option<String>,
    /// Cap of a header cost (default `maxTokens`).
    pub max: Option<u32>,
}

/// A new key value when its table is full of busy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum RawOverflow {
    /// Evict the least recently used value (it starts again with a full bucket).
    EvictLru,
    /// Limit the new value's requests until a place frees up.
    Deny,
}

/// Which rate-limit headers responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum HeaderDialect {
    /// None.
    #[default]
    None,
    /// Envoy's `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (draft-03).
    Envoy,
    /// IETF `RateLimit-Policy` and `RateLimit` structured fields (draft-ietf-httpapi-ratelimit-headers-10).
    Ietf,
    /// Both.
    Both,
}

/// The reply to limited requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Response")
)]
pub struct RawResponse {
    /// HTTP status (default 429; 400–599). gRPC requests get `RESOURCE_EXHAUSTED`.
    pub status: Option<u16>,
    /// Body (default `local_rate_limited`, as Envoy); the `grpc-message` for gRPC.
    pub body: Option<String>,
    /// Extra headers on the reply.
    pub headers: Option<Vec<RawHeader>>,
    /// `response_code_details` (default `meshward_rate_limited`; no whitespace).
    pub details: Option<String>,
    /// Rate-limit headers on allowed and limited responses (default `none`).
    pub rate_limit_headers: Option<HeaderDialect>,
    /// `retry-after` (seconds) on limited replies (default true).
    pub retry_after: Option<bool>,
}

/// One header.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Header")
)]
pub struct RawHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Compare-and-swap retries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Contention")
)]
pub struct RawContention {
    /// Retries after a lost compare-and-swap (default 8, at most 64).
    pub max_retries: Option<u32>,
    /// The request's fate when they run out (default `deny`: never over-admit).
    pub on_exhausted: Option<Exhausted>,
}

/// The fate of a request whose retries ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Exhausted {
    /// Let it through uncharged.
    Allow,
    /// Limit it.
    #[default]
    Deny,
}

meshward_core::object_only!(
    RawConfig,
    RawRule,
    RawTokenBucket,
    RawKey,
    RawHitsAddend,
    RawResponse,
    RawHeader,
    RawContention,
);

/// The JSON Schema of the configuration (draft 2020-12).
#[cfg(feature = "schema")]
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert(
        "$id".to_owned(),
        "https://meshward.invalid/schemas/rate-limit/config.schema.json".into(),
    );
    schema.to_value()
}

// === validated ===

/// A rule's key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One bucket.
    Fixed,
    /// The route name.
    Route,
    /// The client address.
    ClientAddress(ClientAddress),
    /// A header (lower-case name).
    Header {
        /// Name.
        name: String,
        /// Values with their own bucket.
        allow_list: Option<Vec<Vec<u8>>>,
    },
    /// A query parameter.
    QueryParameter {
        /// Name.
        name: String,
        /// Values with their own bucket.
        allow_list: Option<Vec<Vec<u8>>>,
    },
    /// A property another filter published (path segments).
    Property {
        /// Path segments.
        path: Vec<String>,
        /// Values with their own bucket.
        allow_list: Option<Vec<Vec<u8>>>,
    },
}

/// Tokens per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cost {
    /// Fixed.
    Fixed(u32),
    /// From a header, capped.
    Header {
        /// Lower-case name.
        name: String,
        /// Cap.
        max: u32,
    },
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name.
    pub name: String,
    /// Compiled match (`None`: every request).
    pub matcher: Option<RouteMatcher>,
    /// Key source.
    pub key: KeySource,
    /// Bucket.
    pub bucket: TokenBucket,
    /// Cost.
    pub cost: Cost,
    /// Shared-data keys (slots) of the rule.
    pub slots: u32,
    /// Key values per slot.
    pub entries_per_slot: u32,
    /// Full-table policy.
    pub overflow: Overflow,
    /// Shadow mode.
    pub shadow: bool,
    /// Request headers set when a shadow rule would have limited (lower-case names).
    pub shadow_request_headers: Vec<(String, Vec<u8>)>,
}

/// The validated reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers (lower-case names).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Details.
    pub details: String,
    /// Header dialect.
    pub dialect: HeaderDialect,
    /// `retry-after` on 429.
    pub retry_after: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rules in order, the default bucket (if any) last.
    pub rules: Vec<Rule>,
    /// Whether the last rule is the default bucket.
    pub has_default: bool,
    /// Reply.
    pub response: Response,
    /// Retries.
    pub max_retries: u32,
    /// Exhausted retries.
    pub on_exhausted: Exhausted,
    /// Host failures.
    pub failure_mode: FailureMode,
    /// FNV-1a of the configuration bytes: names this configuration's shared-data keys, so a
    /// changed configuration starts with clean buckets.
    pub config_hash: u64,
}

fn header_name(path: &str, name: &str) -> Result<String, InvalidConfig> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(InvalidConfig::at(
            path,
            format!("`{name}` is not a valid http header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A configured header: a valid name (lower-cased) and a value without CR, LF or NUL.
fn header(path: &str, raw: RawHeader) -> Result<(String, Vec<u8>), InvalidConfig> {
    let name = header_name(&format!("{path}.name"), &raw.name)?;
    if raw
        .value
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(InvalidConfig::at(
            format!("{path}.value"),
            "no CR, LF or NUL",
        ));
    }
    Ok((name, raw.value.into_bytes()))
}

fn allow_list(path: &str, raw: Option<Vec<String>>) -> Result<Option<Vec<Vec<u8>>>, InvalidConfig> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.is_empty() || raw.len() > MAX_ALLOW_LIST {
        return Err(InvalidConfig::at(
            path,
            format!("must list 1 to {MAX_ALLOW_LIST} values"),
        ));
    }
    Ok(Some(raw.into_iter().map(String::into_bytes).collect()))
}

fn key_source(raw: Option<RawKey>) -> Result<KeySource, InvalidConfig> {
    let Some(raw) = raw else {
        return Ok(KeySource::Fixed);
    };
    let own: &[&str] = match raw.kind {
        KeyType::ClientAddress => &["trustedHops", "ipv4PrefixLength", "ipv6PrefixLength"],
        KeyType::Header | KeyType::QueryParameter => &["name", "allowList"],
        KeyType::Property => &["path", "allowList"],
        KeyType::Fixed | KeyType::Route => &[],
    };
    for (field, present) in [
        ("name", raw.name.is_some()),
        ("allowList", raw.allow_list.is_some()),
        ("path", raw.path.is_some()),
        ("trustedHops", raw.trusted_hops.is_some()),
        ("ipv4PrefixLength", raw.ipv4_prefix_length.is_some()),
        ("ipv6PrefixLength", raw.ipv6_prefix_length.is_some()),
    ] {
        if present && !own.contains(&field) {
            return Err(InvalidConfig::at(field, "not used by this key type"));
        }
    }
    Ok(match raw.kind {
        KeyType::Fixed => KeySource::Fixed,
        KeyType::Route => KeySource::Route,
        KeyType::ClientAddress => {
            let trusted_hops = raw.trusted_hops.unwrap_or(0);
            if trusted_hops > 16 {
                return Err(InvalidConfig::at("trustedHops", "must be at most 16"));
            }
            let ipv4_prefix = raw.ipv4_prefix_length.unwrap_or(32);
            if !(1..=32).contains(&ipv4_prefix) {
                return Err(InvalidConfig::at("ipv4PrefixLength", "must be 1 to 32"));
            }
            let ipv6_prefix = raw.ipv6_prefix_length.unwrap_or(64);
            if !(1..=128).contains(&ipv6_prefix) {
                return Err(InvalidConfig::at("ipv6PrefixLength", "must be 1 to 128"));
            }
            KeySource::ClientAddress(ClientAddress {
                trusted_hops,
                ipv4_prefix,
                ipv6_prefix,
            })
        }
        KeyType::Header => {
            let name = raw
                .name
                .ok_or_else(|| InvalidConfig::at("name", "required"))?;
            KeySource::Header {
                name: header_name("name", &name)?,
                allow_list: allow_list("allowList", raw.allow_list)?,
            }
        }
        KeyType::QueryParameter => {
            let name = raw
                .name
                .ok_or_else(|| InvalidConfig::at("name", "required"))?;
            if name.is_empty() || name.len() > 1024 {
                return Err(InvalidConfig::at("name", "must be 1 to 1024 bytes"));
            }
            KeySource::QueryParameter {
                name,
                allow_list: allow_list("allowList", raw.allow_list)?,
            }
        }
        KeyType::Property => {
            let path = raw
                .path
                .ok_or_else(|| InvalidConfig::at("path", "required"))?;
            if path.is_empty() || path.len() > 8 {
                return Err(InvalidConfig::at("path", "must have 1 to 8 segments"));
            }
            for (i, segment) in path.iter().enumerate() {
                // Segments are joined with NUL bytes on the wire.
                if segment.is_empty() || segment.len() > 256 || segment.contains('\0') {
                    return Err(InvalidConfig::at(
                        format!("path[{i}]"),
                        "must be 1 to 256 bytes without NUL",
                    ));
                }
            }
            KeySource::Property {
                path,
                allow_list: allow_list("allowList", raw.allow_list)?,
            }
        }
    })
}

fn token_bucket(raw: Option<RawTokenBucket>) -> Result<TokenBucket, InvalidConfig> {
    let raw = raw.ok_or_else(|| InvalidConfig::at("tokenBucket", "required"))?;
    let max_tokens = raw
        .max_tokens
        .ok_or_else(|| InvalidConfig::at("tokenBucket.maxTokens", "required"))?;
    let tokens_per_fill = raw.tokens_per_fill.unwrap_or(1);
    if tokens_per_fill == 0 {
        return Err(InvalidConfig::at(
            "tokenBucket.tokensPerFill",
            "must be at least 1",
        ));
    }
    let interval = raw
        .fill_interval
        .ok_or_else(|| InvalidConfig::at("tokenBucket.fillInterval", "required"))?;
    if interval.as_nanos() < MIN_FILL_INTERVAL_MS * 1_000_000 {
        return Err(InvalidConfig::at(
            "tokenBucket.fillInterval",
            format!("must be at least {MIN_FILL_INTERVAL_MS}ms, got {interval}"),
        ));
    }
    Ok(TokenBucket {
        max_tokens,
        tokens_per_fill,
        fill_interval_ns: interval.as_nanos(),
    })
}

fn rule(raw: RawRule, default_name: String, is_default: bool) -> Result<Rule, InvalidConfig> {
    let name = raw.name.unwrap_or(default_name);
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(InvalidConfig::at(
            "name",
            "must be 1 to 64 letters, digits, `_` or `-`",
        ));
    }
    let matcher = match (&raw.route_match, is_default) {
        (Some(_), true) => {
            return Err(InvalidConfig::at(
                "match",
                "the default bucket takes every request left",
            ));
        }
        (Some(m), false) => Some(
            RouteMatcher::compile(m)
                .map_err(|e| InvalidConfig::at(e.field_under("match"), e.reason))?,
        ),
        (None, _) => None,
    };
    let key = key_source(raw.key).map_err(|e| e.within("key"))?;
    let bucket = token_bucket(raw.token_bucket)?;
    let cost = match raw.hits_addend {
        None => Cost::Fixed(1),
        Some(h) => match (h.number, h.header) {
            (Some(n), None) => {
                if h.max.is_some() {
                    return Err(InvalidConfig::at(
                        "hitsAddend.max",
                        "only used with `header`",
                    ));
                }
                Cost::Fixed(n)
            }
            (None, Some(header)) => Cost::Header {
                name: header_name("hitsAddend.header", &header)?,
                max: h.max.unwrap_or(bucket.max_tokens.max(1)).max(1),
            },
            _ => {
                return Err(InvalidConfig::at(
                    "hitsAddend",
                    "exactly one of `number` and `header`",
                ));
            }
        },
    };
    let dynamic = key != KeySource::Fixed;
    let max_keys = raw.max_keys.unwrap_or(if dynamic { 4096 } else { 1 });
    if !(1..=MAX_KEYS_PER_RULE).contains(&max_keys) || (!dynamic && max_keys != 1) {
        return Err(InvalidConfig::at(
            "maxKeys",
            format!("must be 1 to {MAX_KEYS_PER_RULE} (1 without a key)"),
        ));
    }
    let entries_per_slot = raw.entries_per_slot.unwrap_or(if dynamic { 8 } else { 1 });
    if !(1..=MAX_ENTRIES_PER_SLOT).contains(&entries_per_slot) {
        return Err(InvalidConfig::at(
            "entriesPerSlot",
            format!("must be 1 to {MAX_ENTRIES_PER_SLOT}"),
        ));
    }
    let raw_shadow_headers = raw
        .request_headers_to_add_when_not_enforced
        .unwrap_or_default();
    if raw_shadow_headers.len() > 4 {
        return Err(InvalidConfig::at(
            "requestHeadersToAddWhenNotEnforced",
            "at most 4 headers",
        ));
    }
    let mut shadow_request_headers = Vec::with_capacity(raw_shadow_headers.len());
    for (i, h) in raw_shadow_headers.into_iter().enumerate() {
        let path = format!("requestHeadersToAddWhenNotEnforced[{i}]");
        shadow_request_headers.push(header(&path, h)?);
    }
    Ok(Rule {
        name,
        matcher,
        key,
        bucket,
        cost,
        slots: max_keys.div_ceil(entries_per_slot),
        entries_per_slot: entries_per_slot.min(max_keys),
        overflow: match raw.overflow {
            None | Some(RawOverflow::EvictLru) => Overflow::EvictLru,
            Some(RawOverflow::Deny) => Overflow::Deny,
        },
        shadow: raw.shadow.unwrap_or(false),
        shadow_request_headers,
    })
}

fn response(raw: Option<RawResponse>) -> Result<Response, InvalidConfig> {
    let raw = raw.unwrap_or_default();
    let status = raw.status.unwrap_or(429);
    if !(400..=599).contains(&status) {
        return Err(InvalidConfig::at("response.status", "must be 400 to 599"));
    }
    let body = raw.body.unwrap_or_else(|| "local_rate_limited".to_owned());
    if body.len() > MAX_BODY_LEN {
        return Err(InvalidConfig::at(
            "response.body",
            format!("at most {MAX_BODY_LEN} bytes"),
        ));
    }
    let details = raw
        .details
        .unwrap_or_else(|| "meshward_rate_limited".to_owned());
    if details.is_empty() || details.len() > 128 || !details.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidConfig::at(
            "response.details",
            "must be 1 to 128 visible ascii characters",
        ));
    }
    let mut headers = Vec::new();
    for (i, h) in raw.headers.unwrap_or_default().into_iter().enumerate() {
        headers.push(header(&format!("response.headers[{i}]"), h)?);
    }
    if headers.len() > 8 {
        return Err(InvalidConfig::at("response.headers", "at most 8 headers"));
    }
    Ok(Response {
        status,
        body: body.into_bytes(),
        headers,
        details,
        dialect: raw.rate_limit_headers.unwrap_or_default(),
        retry_after: raw.retry_after.unwrap_or(true),
    })
}

impl Config {
    fn from_raw(raw: RawConfig, config_hash: u64) -> Result<Self, InvalidConfig> {
        let raw_rules = raw.rules.unwrap_or_default();
        let mut rules = Vec::with_capacity(raw_rules.len() + 1);
        for (i, r) in raw_rules.into_iter().enumerate() {
            rules.push(
                rule(r, format!("rule{i}"), false).map_err(|e| e.within(&format!("rules[{i}]")))?,
            );
        }
        let has_default = raw.default_bucket.is_some();
        if let Some(d) = raw.default_bucket {
            rules.push(rule(d, "default".to_owned(), true).map_err(|e| e.within("defaultBucket"))?);
        }
        if rules.len() > MAX_RULES {
            return Err(InvalidConfig::at(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (i, r) in rules.iter().enumerate() {
            if rules.iter().take(i).any(|other| other.name == r.name) {
                return Err(InvalidConfig::at(
                    format!("rules[{i}].name"),
                    format!("`{}` is used twice", r.name),
                ));
            }
        }
        let contention = raw.contention.unwrap_or_default();
        let max_retries = contention.max_retries.unwrap_or(8);
        if max_retries > MAX_RETRIES {
            return Err(InvalidConfig::at(
                "contention.maxRetries",
                format!("at most {MAX_RETRIES}"),
            ));
        }
        Ok(Self {
            rules,
            has_default,
            response: response(raw.response)?,
            max_retries,
            on_exhausted: contention.on_exhausted.unwrap_or_default(),
            failure_mode: raw.failure_mode.unwrap_or(FailureMode::Allow),
            config_hash,
        })
    }
}

/// Parses and validates the plugin configuration.
///
/// # Errors
/// [`ConfigError`] naming the JSON path of the first problem.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let raw: RawConfig = meshward_core::config::parse_raw(bytes)?;
    Ok(Config::from_raw(raw, fnv64(bytes))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn err(json: &str) -> String {
        parse(json.as_bytes()).err().unwrap().to_string()
    }

    #[test]
    fn envoy_spellings_and_defaults() {
        let c = parse(
            br#"{"rules": [{"key": {"type": "clientAddress"},
                 "token_bucket": {"max_tokens": 5, "tokens_per_fill": 2, "fill_interval": "1s"}}],
               "defaultBucket": {"tokenBucket": {"maxTokens": 0, "fillInterval": "60s"}}}"#,
        )
        .unwrap();
        assert_eq!(c.rules.len(), 2);
        let r = &c.rules[0];
        assert_eq!(
            (r.name.as_str(), r.slots, r.entries_per_slot),
            ("rule0", 512, 8)
        );
        assert_eq!(r.bucket.fill_interval_ns, 1_000_000_000);
        assert_eq!(c.rules[1].name, "default");
        assert_eq!(c.rules[1].slots, 1);
        assert_eq!(c.response.status, 429);
        assert_eq!(c.on_exhausted, Exhausted::Deny);
        assert!(parse(b"").unwrap().rules.is_empty());
    }

    #[test]
    fn property_keys() {
        let c = parse(
            br#"{"rules": [{"key": {"type": "property", "path": ["meshward_jwt_subject"], "allowList": ["a"]},
                "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.rules[0].key,
            KeySource::Property {
                path: vec!["meshward_jwt_subject".to_owned()],
                allow_list: Some(vec![b"a".to_vec()]),
            }
        );
        assert_eq!(c.rules[0].slots, 512, "a dynamic key");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bucket = |b: &str| format!(r#"{{"rules": [{{"tokenBucket": {b}}}]}}"#);
        assert!(
            err(&bucket(r#"{"maxTokens": 1, "fillInterval": "0s"}"#))
                .starts_with("rules[0].tokenBucket.fillInterval: must be at least 50ms")
        );
        assert!(
            err(&bucket(r#"{"maxTokens": 1, "fillInterval": "49ms"}"#))
                .starts_with("rules[0].tokenBucket.fillInterval:")
        );
        assert!(
            err(&bucket(r#"{"maxTokens": 1}"#))
                .starts_with("rules[0].tokenBucket.fillInterval: required")
        );
        assert!(
            err(&bucket(
                r#"{"maxTokens": 1, "fillInterval": "1s", "burst": 2}"#
            ))
            .starts_with("rules[0].tokenBucket.burst: unknown field")
        );
        assert!(
            err(&bucket(
                r#"{"maxTokens": 1, "max_tokens": 1, "fillInterval": "1s"}"#
            ))
            .contains("duplicate field")
        );
        assert!(err(r#"{"rules": [{}]}"#).starts_with("rules[0].tokenBucket: required"));
        assert!(err(r#"{"defaultBucket": {"match": {"prefix": "/"}, "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}}"#)
            .starts_with("defaultBucket.match:"));
        assert!(err(r#"{"rules": [{"key": {"type": "header"}, "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]}"#)
            .starts_with("rules[0].key.name: required"));
        assert!(err(r#"{"rules": [{"key": {"type": "fixed", "trustedHops": 1}, "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]}"#)
            .starts_with("rules[0].key.trustedHops:"));
        let key = |k: &str| {
            err(&format!(
                r#"{{"rules": [{{"key": {k}, "tokenBucket": {{"maxTokens": 1, "fillInterval": "1s"}}}}]}}"#
            ))
        };
        assert!(key(r#"{"type": "property"}"#).starts_with("rules[0].key.path: required"));
        assert!(
            key(r#"{"type": "property", "path": []}"#).starts_with("rules[0].key.path: must have")
        );
        assert!(
            key(r#"{"type": "property", "path": ["a", ""]}"#).starts_with("rules[0].key.path[1]:")
        );
        assert!(
            key(r#"{"type": "property", "path": ["a\u0000b"]}"#)
                .starts_with("rules[0].key.path[0]:")
        );
        assert!(
            key(r#"{"type": "header", "name": "x", "path": ["a"]}"#)
                .starts_with("rules[0].key.path: not used")
        );
        assert!(err(r#"{"contention": {"maxRetries": 100}}"#).starts_with("contention.maxRetries"));
        assert!(err(r#"{"response": {"details": "a b"}}"#).starts_with("response.details"));
        assert!(err(r#"{"unknown": 1}"#).starts_with("unknown: unknown field"));
    }
}
