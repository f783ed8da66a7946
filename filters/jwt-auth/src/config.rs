//! Plugin configuration: `RawConfig` (serde, the JSON users write: a field-for-field subset of
//! Envoy's `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`, in both protobuf-JSON
//! spellings) → validated [`Config`].
//!
//! Every object denies unknown fields, so an Envoy field this filter does not support yet
//! (`filter_state_rules`, …) is refused by name instead of silently ignored. Every
//! error names the JSON path of the offending field. With the `schema` feature, [`schema`] is the
//! JSON Schema of the same types (`filters/jwt-auth/config.schema.json`, `make schemas`); the doc
//! comments of the `Raw` types are its descriptions, so they are written for users.

#[cfg(feature = "schema")]
use std::collections::BTreeMap;
use std::fmt;

use meshward_core::route_match::{CompiledStringMatcher, RouteMatch, RouteMatcher, StringMatcher};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::jwks::{self, Algorithm, KeySet};
use crate::pem;

pub use meshward_core::config::{ConfigError, InvalidConfig};

/// Default `clock_skew_seconds` (Envoy's).
pub const DEFAULT_CLOCK_SKEW_SECONDS: u32 = 60;
/// Largest `clock_skew_seconds` accepted: leeway beyond five minutes hides broken clocks.
pub const MAX_CLOCK_SKEW_SECONDS: u32 = 300;
/// Default largest token, in bytes (`jwt_cache_config.jwt_max_token_size`).
pub const DEFAULT_MAX_TOKEN_BYTES: u32 = 8 * 1024;
/// Largest `jwt_max_token_size` accepted.
pub const MAX_TOKEN_BYTES: u32 = 64 * 1024;
/// Default verified-token cache size per provider (Envoy's `jwt_cache_size` default).
pub const DEFAULT_CACHE_ENTRIES: u32 = 100;
/// Largest `jwt_cache_size` accepted.
pub const MAX_CACHE_ENTRIES: u32 = 10_000;
/// Most headers the filter may write on one request (claims and payload headers of all
/// providers together): each is also stripped from every incoming request.
pub const MAX_OUTPUT_HEADERS: usize = 12;
/// Most providers.
pub const MAX_PROVIDERS: usize = 32;
/// Most `normalize_payload_in_metadata.space_delimited_claims`.
pub const MAX_SPACE_DELIMITED_CLAIMS: usize = 16;
/// Deepest nesting of `requires_any` / `requires_all`.
pub const MAX_REQUIREMENT_DEPTH: usize = 8;

// === raw (serde) ===

/// Configuration of the meshward jwt-auth filter: Envoy's `jwt_authn` `JwtAuthentication`
/// (supported subset, both `camelCase` and `snake_case` field names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtAuthConfig")
)]
pub struct RawConfig {
    /// Named JWT providers (map of name to provider).
    pub providers: Option<Providers>,
    /// Which requests need which tokens: the first rule whose `match` matches decides; a request
    /// no rule matches needs no token (as Envoy).
    pub rules: Option<Vec<RawRule>>,
    /// Let CORS preflight requests (`OPTIONS` with `origin` and
    /// `access-control-request-method`) through without a token (default false).
    #[serde(alias = "bypass_cors_preflight")]
    pub bypass_cors_preflight: Option<bool>,
    /// Named requirements, referenced by a rule's `requirement_name`.
    #[serde(alias = "requirement_map")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<BTreeMap<String, RawRequirement>>")
    )]
    pub requirement_map: Option<std::collections::BTreeMap<String, RawRequirement>>,
    /// Refusals carry an empty body (status, `WWW-Authenticate` and `details` unchanged; default
    /// false).
    #[serde(alias = "strip_failure_response")]
    pub strip_failure_response: Option<bool>,
}

/// The `providers` map; a name given twice is an error (a plain map would keep the last one).
#[derive(Debug, Clone, Default)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(transparent)
)]
pub struct Providers(
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, RawProvider>"))]
    pub  Vec<(String, RawProvider)>,
);

impl<'de> Deserialize<'de> for Providers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProvidersVisitor;
        impl<'de> Visitor<'de> for ProvidersVisitor {
            type Value = Providers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of provider names to providers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Providers, A::Error> {
                let mut out: Vec<(String, RawProvider)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!("duplicate provider `{name}`")));
                    }
                    let provider = map.next_value::<RawProvider>()?;
                    out.push((name, provider));
                }
                Ok(Providers(out))
            }
        }
        deserializer.deserialize_map(ProvidersVisitor)
    }
}

/// Envoy's `JwtProvider` (supported subset).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtProvider")
)]
pub struct RawProvider {
    /// Required value of the `iss` claim (exact match). Empty or absent: any issuer.
    pub issuer: Option<String>,
    /// Accepted `aud` values; the token needs at least one of them. Absent or empty: `aud` is not
    /// checked.
    pub audiences: Option<Vec<String>>,
    /// The `sub` claim must match this (Envoy `StringMatcher`).
    #[cfg_attr(feature = "schema", schemars(with = "Option<serde_json::Value>"))]
    pub subjects: Option<StringMatcher>,
    /// Tokens without `exp` are rejected (default **true**; Envoy's default is false, RFC 8725
    /// asks for expiring tokens).
    #[serde(alias = "require_expiration")]
    pub require_expiration: Option<bool>,
    /// Longest accepted `exp - iat` (protobuf duration, e.g. `"86400s"`); tokens then need both
    /// `iat` and `exp`.
    #[serde(alias = "max_lifetime")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub max_lifetime: Option<meshward_core::config::ConfigDuration>,
    /// The provider's keys, inline (exactly one of `local_jwks` and `remote_jwks`).
    #[serde(alias = "local_jwks")]
    pub local_jwks: Option<RawDataSource>,
    /// The provider's keys, fetched from the IdP's JWKS endpoint through an Envoy cluster and
    /// shared by every worker VM (exactly one of `local_jwks` and `remote_jwks`).
    #[serde(alias = "remote_jwks")]
    pub remote_jwks: Option<RawRemoteJwks>,
    /// Headers the token is read from, each with an optional prefix (`Bearer `). Default, when
    /// none of `from_headers`, `from_params`, `from_cookies` is given: `Authorization: Bearer`
    /// and the `access_token` query parameter.
    #[serde(alias = "from_headers")]
    pub from_headers: Option<Vec<RawJwtHeader>>,
    /// Query parameters the token is read from.
    #[serde(alias = "from_params")]
    pub from_params: Option<Vec<String>>,
    /// Cookies the token is read from.
    #[serde(alias = "from_cookies")]
    pub from_cookies: Option<Vec<String>>,
    /// Keep the token header when forwarding the request (default false: the header carrying
    /// the token is removed).
    pub forward: Option<bool>,
    /// Forward the verified payload (base64url JSON) in this header.
    #[serde(alias = "forward_payload_header")]
    pub forward_payload_header: Option<String>,
    /// Publish the verified payload (JSON) as the filter-state property of this name.
    #[serde(alias = "payload_in_metadata")]
    pub payload_in_metadata: Option<String>,
    /// Publish the verified token's header (JSON) as the filter-state property of this name.
    #[serde(alias = "header_in_metadata")]
    pub header_in_metadata: Option<String>,
    /// How the payload published by `payload_in_metadata` is normalized.
    #[serde(alias = "normalize_payload_in_metadata")]
    pub normalize_payload_in_metadata: Option<RawNormalizePayload>,
    /// Copy claims into request headers (replacing any value the client sent).
    #[serde(alias = "claim_to_headers")]
    pub claim_to_headers: Option<Vec<RawClaimToHeader>>,
    /// Accepted clock difference for `exp` and `nbf`, in seconds (default 60, at most 300).
    #[serde(alias = "clock_skew_seconds")]
    pub clock_skew_seconds: Option<u32>,
    /// Clear the route cache when a token verifies (default false; the cache is cleared anyway
    /// when claim or payload headers are written).
    #[serde(alias = "clear_route_cache")]
    pub clear_route_cache: Option<bool>,
    /// The verified-token cache and the token size limit.
    #[serde(alias = "jwt_cache_config")]
    pub jwt_cache_config: Option<RawJwtCacheConfig>,
    /// meshward: the algorithms this provider accepts (default: all supported). RFC 8725 §3.1.
    #[serde(alias = "allowed_algorithms")]
    pub allowed_algorithms: Option<Vec<String>>,
}

/// Envoy's `DataSource`: only `inline_string` (a JWKS document or a PEM public key) is
/// supported.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "DataSource")
)]
pub struct RawDataSource {
    /// A JWKS document (RFC 7517 JSON), or one PEM public key (`BEGIN PUBLIC KEY`: RSA, EC
    /// P-256/P-384, Ed25519; `BEGIN RSA PUBLIC KEY`).
    #[serde(alias = "inline_string")]
    pub inline_string: Option<String>,
}

/// Envoy's `RemoteJwks`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "RemoteJwks")
)]
pub struct RawRemoteJwks {
    /// Where the JWKS is fetched (required).
    #[serde(alias = "http_uri")]
    pub http_uri: Option<RawHttpUri>,
    /// How long a fetched key set is fresh (default 600s, as Envoy). It is refreshed at 90% of
    /// this and kept as last-known-good for as long again when the IdP fails.
    #[serde(alias = "cache_duration")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub cache_duration: Option<meshward_core::config::ConfigDuration>,
    /// Fetch when the filter starts instead of on the first request that needs the keys.
    #[serde(alias = "async_fetch")]
    pub async_fetch: Option<RawAsyncFetch>,
    /// Retries of a failed fetch (default: none).
    #[serde(alias = "retry_policy")]
    pub retry_policy: Option<RawRetryPolicy>,
    /// meshward: accept symmetric (`oct`) keys from this JWKS (default false: a remote JWKS is
    /// public, so an HMAC key in it would let anyone sign tokens).
    #[serde(alias = "allow_symmetric_keys")]
    pub allow_symmetric_keys: Option<bool>,
}

/// Envoy's `HttpUri`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "HttpUri")
)]
pub struct RawHttpUri {
    /// `http://host[:port]/path` of the JWKS; its authority and path are sent.
    pub uri: String,
    /// The Envoy cluster the request goes to.
    pub cluster: String,
    /// Timeout of the fetch (required, as Envoy; e.g. `"1s"`).
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub timeout: Option<meshward_core::config::ConfigDuration>,
}

/// Envoy's `JwksAsyncFetch`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwksAsyncFetch")
)]
pub struct RawAsyncFetch {
    /// Accepted for compatibility: a proxy-wasm filter cannot hold the listener back, so the
    /// listener is always "fast" (requests before the first fetch wait for it, bounded).
    #[serde(alias = "fast_listener")]
    pub fast_listener: Option<bool>,
    /// Pause after a failed fetch before the next one (default 1s, as Envoy).
    #[serde(alias = "failed_refetch_duration")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub failed_refetch_duration: Option<meshward_core::config::ConfigDuration>,
}

/// Envoy's `RetryPolicy` (supported subset).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "RetryPolicy")
)]
pub struct RawRetryPolicy {
    /// Retries after a failed fetch (default 1, as Envoy; at most 10).
    #[serde(alias = "num_retries")]
    pub num_retries: Option<u32>,
    /// Back-off between retries.
    #[serde(alias = "retry_back_off")]
    pub retry_back_off: Option<RawBackOff>,
}

/// Envoy's `BackoffStrategy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "BackoffStrategy")
)]
pub struct RawBackOff {
    /// First back-off (default 1s), doubled after each retry.
    #[serde(alias = "base_interval")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub base_interval: Option<meshward_core::config::ConfigDuration>,
    /// Longest back-off (default 10 × `base_interval`).
    #[serde(alias = "max_interval")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub max_interval: Option<meshward_core::config::ConfigDuration>,
}

/// Envoy's `JwtHeader`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtHeader")
)]
pub struct RawJwtHeader {
    /// Header name.
    pub name: String,
    /// What precedes the token in the value, e.g. `Bearer ` (compared ASCII-case-insensitively).
    #[serde(alias = "value_prefix")]
    pub value_prefix: Option<String>,
}

/// Envoy's `JwtClaimToHeader`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtClaimToHeader")
)]
pub struct RawClaimToHeader {
    /// Request header to write.
    #[serde(alias = "header_name")]
    pub header_name: String,
    /// Claim to copy; nested claims by dotted path (`realm.role`). Strings, numbers and
    /// booleans are written as text; arrays of them are joined with `,` (Envoy refuses arrays).
    #[serde(alias = "claim_name")]
    pub claim_name: String,
}

/// Envoy's `JwtProvider.NormalizePayload`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "NormalizePayload")
)]
pub struct RawNormalizePayload {
    /// Top-level claims that, when they are strings, are published split on spaces into arrays
    /// of strings (`"scope": "read write"` becomes `["read", "write"]`); at most 16.
    #[serde(alias = "space_delimited_claims")]
    pub space_delimited_claims: Option<Vec<String>>,
}

/// Envoy's `JwtCacheConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtCacheConfig")
)]
pub struct RawJwtCacheConfig {
    /// Verified tokens cached per provider and worker (default 100, 0 disables the cache).
    #[serde(alias = "jwt_cache_size")]
    pub jwt_cache_size: Option<u32>,
    /// Largest token accepted, in bytes (default 8192, at most 65536); larger ones are rejected
    /// before any decoding.
    #[serde(alias = "jwt_max_token_size")]
    pub jwt_max_token_size: Option<u32>,
}

/// Envoy's `RequirementRule`.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "RequirementRule")
)]
pub struct RawRule {
    /// Envoy `RouteMatch` (`prefix`, `path`, `safe_regex`, `headers`, …).
    #[serde(rename = "match")]
    #[cfg_attr(feature = "schema", schemars(with = "serde_json::Value"))]
    pub route_match: RouteMatch,
    /// What matching requests need; absent (and no `requirement_name`): nothing.
    pub requires: Option<RawRequirement>,
    /// Instead of `requires`: the name of an entry of `requirement_map` (stands in for Envoy's
    /// per-route `requirement_name`).
    #[serde(alias = "requirement_name")]
    pub requirement_name: Option<String>,
}

/// Envoy's `JwtRequirement`: exactly one of its fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtRequirement")
)]
pub struct RawRequirement {
    /// A valid token of this provider.
    #[serde(alias = "provider_name")]
    pub provider_name: Option<String>,
    /// A valid token of this provider with one of these audiences (replacing the provider's).
    #[serde(alias = "provider_and_audiences")]
    pub provider_and_audiences: Option<RawProviderAndAudiences>,
    /// At least one of these requirements (two or more).
    #[serde(alias = "requires_any")]
    pub requires_any: Option<RawRequirementList>,
    /// All of these requirements (two or more).
    #[serde(alias = "requires_all")]
    pub requires_all: Option<RawRequirementList>,
    /// A missing token is accepted; a token that is present must verify.
    #[serde(alias = "allow_missing")]
    pub allow_missing: Option<Empty>,
    /// Always accepted; a token that verifies still produces its outputs.
    #[serde(alias = "allow_missing_or_failed")]
    pub allow_missing_or_failed: Option<Empty>,
}

/// Envoy's `ProviderWithAudiences`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ProviderWithAudiences")
)]
pub struct RawProviderAndAudiences {
    /// The provider.
    #[serde(alias = "provider_name")]
    pub provider_name: String,
    /// Accepted audiences (replace the provider's).
    pub audiences: Vec<String>,
}

/// Envoy's `JwtRequirementOrList` / `JwtRequirementAndList`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "JwtRequirementList")
)]
pub struct RawRequirementList {
    /// The requirements.
    pub requirements: Vec<RawRequirement>,
}

/// `{}` (protobuf `Empty`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Empty {}

meshward_core::object_only!(
    RawConfig,
    RawProvider,
    RawDataSource,
    RawRemoteJwks,
    RawHttpUri,
    RawAsyncFetch,
    RawRetryPolicy,
    RawBackOff,
    RawJwtHeader,
    RawClaimToHeader,
    RawNormalizePayload,
    RawJwtCacheConfig,
    RawRule,
    RawRequirement,
    RawProviderAndAudiences,
    RawRequirementList,
    Empty,
);

/// The JSON Schema of the configuration (draft 2020-12), as committed in
/// `filters/jwt-auth/config.schema.json`.
#[cfg(feature = "schema")]
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert(
        "$id".to_owned(),
        "https://meshward.invalid/schemas/jwt-auth/config.schema.json".into(),
    );
    let mut value = schema.to_value();
    add_snake_case_aliases(&mut value);
    value
}

/// schemars ignores `#[serde(alias)]`: every camelCase property also gets its protobuf-JSON
/// snake_case spelling, with the same schema (giving both is still refused by the parser).
#[cfg(feature = "schema")]
fn add_snake_case_aliases(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get_mut("properties") {
                let aliases: Vec<(String, serde_json::Value)> = props
                    .iter()
                    .filter(|(k, _)| k.bytes().any(|b| b.is_ascii_uppercase()))
                    .map(|(k, v)| {
                        let mut snake = String::with_capacity(k.len() + 4);
                        for c in k.chars() {
                            if c.is_ascii_uppercase() {
                                snake.push('_');
                                snake.push(c.to_ascii_lowercase());
                            } else {
                                snake.push(c);
                            }
                        }
                        (snake, v.clone())
                    })
                    .collect();
                let renamed: Vec<(String, String)> = props
                    .keys()
                    .filter(|k| k.bytes().any(|b| b.is_ascii_uppercase()))
                    .cloned()
                    .zip(aliases.iter().map(|(snake, _)| snake.clone()))
                    .collect();
                props.extend(aliases);
                // A required field may be given in either spelling.
                let mut either = Vec::new();
                if let Some(serde_json::Value::Array(required)) = map.get_mut("required") {
                    required.retain(|name| {
                        let pair = renamed.iter().find(|(camel, _)| name == camel.as_str());
                        if let Some((camel, snake)) = pair {
                            either.push(serde_json::json!({"anyOf": [
                                {"required": [camel]}, {"required": [snake]}
                            ]}));
                        }
                        pair.is_none()
                    });
                }
                if !either.is_empty() {
                    map.insert("allOf".to_owned(), serde_json::Value::Array(either));
                }
            }
            map.values_mut().for_each(add_snake_case_aliases);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(add_snake_case_aliases),
        _ => {}
    }
}

// === validated ===

/// Where a token may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A header (lower-case name) and a prefix before the token.
    Header {
        /// Lower-case header name.
        name: String,
        /// Prefix (empty for none).
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// One claim copied to a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToHeader {
    /// Lower-case header name.
    pub header: String,
    /// Dotted path segments.
    pub claim: Vec<String>,
}

/// A validated `remote_jwks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// Envoy cluster.
    pub cluster: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// `:path` of the fetch.
    pub path: String,
    /// Fetch timeout, ms (> 0).
    pub timeout_ms: u32,
    /// Freshness of a fetched set, ns.
    pub cache_duration_ns: u64,
    /// Fetch at start-up (`async_fetch` given).
    pub fetch_at_start: bool,
    /// Pause after a failed fetch (and its retries), ns.
    pub failed_refetch_ns: u64,
    /// Retries after a failure.
    pub retries: u32,
    /// First retry back-off, ns.
    pub backoff_base_ns: u64,
    /// Longest retry back-off, ns.
    pub backoff_max_ns: u64,
    /// `oct` keys accepted.
    pub allow_symmetric_keys: bool,
}

/// Default `cache_duration` (Envoy's: 10 minutes).
pub const DEFAULT_CACHE_DURATION_SECONDS: u64 = 600;
/// Most retries of a failed JWKS fetch.
pub const MAX_RETRIES: u32 = 10;

fn remote_jwks(raw: &RawRemoteJwks) -> Result<RemoteJwks, InvalidConfig> {
    let uri = raw
        .http_uri
        .as_ref()
        .ok_or_else(|| InvalidConfig::at("httpUri", "is required"))?;
    if uri.cluster.is_empty() {
        return Err(InvalidConfig::at("httpUri.cluster", "must not be empty"));
    }
    let rest = uri
        .uri
        .strip_prefix("http://")
        .or_else(|| uri.uri.strip_prefix("https://"))
        .ok_or_else(|| InvalidConfig::at("httpUri.uri", "must start with http:// or https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (
            rest.get(..i).unwrap_or_default(),
            rest.get(i..).unwrap_or("/"),
        ),
        None => (rest, "/"),
    };
    let printable = |t: &str| t.bytes().all(|b| b.is_ascii_graphic());
    if authority.is_empty() || !printable(authority) || !printable(path) {
        return Err(InvalidConfig::at(
            "httpUri.uri",
            "must be http(s)://host[:port]/path without spaces or control characters",
        ));
    }
    let timeout = uri
        .timeout
        .ok_or_else(|| InvalidConfig::at("httpUri.timeout", "is required (as Envoy)"))?;
    let timeout_ms = timeout.as_millis_u32();
    if timeout_ms == 0 || timeout_ms > 60_000 {
        return Err(InvalidConfig::at(
            "httpUri.timeout",
            "must be between 1ms and 60s",
        ));
    }
    let cache_duration_ns = raw.cache_duration.map_or(
        DEFAULT_CACHE_DURATION_SECONDS * 1_000_000_000,
        meshward_core::config::ConfigDuration::as_nanos,
    );
    if cache_duration_ns < 1_000_000_000 {
        return Err(InvalidConfig::at("cacheDuration", "must be at least 1s"));
    }
    let fetch = raw.async_fetch.clone();
    let failed_refetch_ns = fetch
        .as_ref()
        .and_then(|f| f.failed_refetch_duration)
        .map_or(
            1_000_000_000,
            meshward_core::config::ConfigDuration::as_nanos,
        );
    if failed_refetch_ns == 0 {
        return Err(InvalidConfig::at(
            "asyncFetch.failedRefetchDuration",
            "must be positive",
        ));
    }
    let (retries, backoff_base_ns, backoff_max_ns) = match &raw.retry_policy {
        None => (0, 1_000_000_000, 10_000_000_000),
        Some(policy) => {
            let retries = policy.num_retries.unwrap_or(1);
            if retries > MAX_RETRIES {
                return Err(InvalidConfig::at(
                    "retryPolicy.numRetries",
                    format!("must be at most {MAX_RETRIES}"),
                ));
            }
            let back_off = policy.retry_back_off.clone().unwrap_or_default();
            let base = back_off
                .base_interval
                .map_or(1_000_000_000, |d| d.as_nanos());
            if base == 0 {
                return Err(InvalidConfig::at(
                    "retryPolicy.retryBackOff.baseInterval",
                    "must be positive",
                ));
            }
            let max = back_off
                .max_interval
                .map_or(base.saturating_mul(10), |d| d.as_nanos());
            if max < base {
                return Err(InvalidConfig::at(
                    "retryPolicy.retryBackOff.maxInterval",
                    "must not be less than baseInterval",
                ));
            }
            (retries, base, max)
        }
    };
    Ok(RemoteJwks {
        cluster: uri.cluster.clone(),
        authority: authority.to_owned(),
        path: path.to_owned(),
        timeout_ms,
        cache_duration_ns,
        fetch_at_start: fetch.is_some(),
        failed_refetch_ns,
        retries,
        backoff_base_ns,
        backoff_max_ns,
        allow_symmetric_keys: raw.allow_symmetric_keys.unwrap_or(false),
    })
}

/// A validated provider.
#[derive(Debug)]
pub struct Provider {
    /// Its name (metrics, logs).
    pub name: String,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Accepted audiences (empty: not checked).
    pub audiences: Vec<String>,
    /// `sub` matcher.
    pub subjects: Option<CompiledStringMatcher>,
    /// `exp` required.
    pub require_expiration: bool,
    /// Longest `exp - iat`, seconds.
    pub max_lifetime_seconds: Option<u64>,
    /// The keys (`local_jwks`; empty with `remote_jwks`).
    pub keys: KeySet,
    /// `remote_jwks`: where the VM's keys come from instead.
    pub remote: Option<RemoteJwks>,
    /// Indices into [`Config::locations`].
    pub locations: Vec<usize>,
    /// Keep the token header.
    pub forward: bool,
    /// Payload header (lower-case).
    pub forward_payload_header: Option<String>,
    /// Payload property name.
    pub payload_in_metadata: Option<String>,
    /// Header property name.
    pub header_in_metadata: Option<String>,
    /// Top-level claims published split on spaces (with `payload_in_metadata`).
    pub space_delimited_claims: Vec<String>,
    /// Claims to headers.
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Leeway, seconds.
    pub clock_skew_seconds: u64,
    /// Clear the route cache on success.
    pub clear_route_cache: bool,
    /// Verified-token cache entries.
    pub cache_entries: usize,
    /// Largest token, bytes.
    pub max_token_bytes: usize,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
}

/// A compiled requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A token of provider `provider` (index), with audiences overriding the provider's.
    Provider {
        /// Index into [`Config::providers`].
        provider: usize,
        /// `provider_and_audiences` override.
        audiences: Option<Vec<String>>,
    },
    /// Any of these.
    Any(Vec<Requirement>),
    /// All of these.
    All(Vec<Requirement>),
    /// Missing is fine, present must verify.
    AllowMissing,
    /// Always fine.
    AllowMissingOrFailed,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// The route match.
    pub matcher: RouteMatcher,
    /// The requirement (None: nothing required).
    pub requires: Option<Requirement>,
}

/// Validated configuration.
#[derive(Debug, Default)]
pub struct Config {
    /// Providers, in configuration order.
    pub providers: Vec<Provider>,
    /// Every distinct token location of all providers.
    pub locations: Vec<Location>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
    /// Skip CORS preflights.
    pub bypass_cors_preflight: bool,
    /// Empty refusal bodies.
    pub strip_failure_response: bool,
    /// Every header any provider may write (stripped from every request).
    pub output_headers: Vec<String>,
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

fn property_name(path: &str, name: &str) -> Result<String, InvalidConfig> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"_-.".contains(&b);
    if name.is_empty() || name.len() > 128 || !name.bytes().all(ok) {
        return Err(InvalidConfig::at(
            path,
            "must be 1 to 128 characters from [A-Za-z0-9_.-]",
        ));
    }
    Ok(name.to_owned())
}

fn location_index(locations: &mut Vec<Location>, location: Location) -> usize {
    if let Some(i) = locations.iter().position(|l| *l == location) {
        return i;
    }
    locations.push(location);
    locations.len() - 1
}

fn provider(
    name: &str,
    raw: RawProvider,
    locations: &mut Vec<Location>,
) -> Result<Provider, InvalidConfig> {
    let subjects = match &raw.subjects {
        None => None,
        Some(m) => Some(
            CompiledStringMatcher::compile(m, "subjects")
                .map_err(|e| InvalidConfig::at(e.field_under(""), e.reason))?,
        ),
    };
    let clock_skew = raw.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS);
    if clock_skew > MAX_CLOCK_SKEW_SECONDS {
        return Err(InvalidConfig::at(
            "clockSkewSeconds",
            format!("must be at most {MAX_CLOCK_SKEW_SECONDS}"),
        ));
    }
    let max_lifetime_seconds = match raw.max_lifetime {
        None => None,
        Some(d) => {
            let secs = d.as_nanos() / 1_000_000_000;
            if secs == 0 {
                return Err(InvalidConfig::at("maxLifetime", "must be at least 1s"));
            }
            Some(secs)
        }
    };
    let algorithms = match &raw.allowed_algorithms {
        None => Algorithm::ALL.to_vec(),
        Some(list) => {
            if list.is_empty() {
                return Err(InvalidConfig::at("allowedAlgorithms", "must not be empty"));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, name) in list.iter().enumerate() {
                let Some(alg) = Algorithm::from_name(name) else {
                    return Err(InvalidConfig::at(
                        format!("allowedAlgorithms[{i}]"),
                        format!("`{name}` is not a supported algorithm (`none` never is)"),
                    ));
                };
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
            out
        }
    };
    let (keys, remote) = match (&raw.local_jwks, &raw.remote_jwks) {
        (Some(_), Some(_)) => {
            return Err(InvalidConfig::root(
                "give either localJwks or remoteJwks, not both",
            ));
        }
        (None, Some(r)) => (
            KeySet::default(),
            Some(remote_jwks(r).map_err(|e| e.within("remoteJwks"))?),
        ),
        (local, None) => {
            let jwks_text = local
                .as_ref()
                .and_then(|d| d.inline_string.as_deref())
                .ok_or_else(|| {
                    InvalidConfig::at("localJwks.inlineString", "is required (or remoteJwks)")
                })?;
            let keys = if pem::looks_like_pem(jwks_text) {
                pem::parse(jwks_text, &algorithms)
            } else {
                jwks::parse_local(jwks_text, &algorithms)
            }
            .map_err(|e| e.within("localJwks.inlineString"))?;
            (keys, None)
        }
    };

    let mut locs = Vec::new();
    let none_given =
        raw.from_headers.is_none() && raw.from_params.is_none() && raw.from_cookies.is_none();
    if none_given {
        locs.push(location_index(
            locations,
            Location::Header {
                name: "authorization".to_owned(),
                prefix: "Bearer ".to_owned(),
            },
        ));
        locs.push(location_index(
            locations,
            Location::Param("access_token".to_owned()),
        ));
    }
    for (i, h) in raw.from_headers.iter().flatten().enumerate() {
        let name = header_name(&format!("fromHeaders[{i}].name"), &h.name)?;
        let loc = Location::Header {
            name,
            prefix: h.value_prefix.clone().unwrap_or_default(),
        };
        locs.push(location_index(locations, loc));
    }
    for (i, p) in raw.from_params.iter().flatten().enumerate() {
        if p.is_empty() {
            return Err(InvalidConfig::at(
                format!("fromParams[{i}]"),
                "must not be empty",
            ));
        }
        locs.push(location_index(locations, Location::Param(p.clone())));
    }
    for (i, c) in raw.from_cookies.iter().flatten().enumerate() {
        if c.is_empty() {
            return Err(InvalidConfig::at(
                format!("fromCookies[{i}]"),
                "must not be empty",
            ));
        }
        locs.push(location_index(locations, Location::Cookie(c.clone())));
    }
    locs.sort_unstable();
    locs.dedup();

    let mut claim_to_headers = Vec::new();
    for (i, c) in raw.claim_to_headers.iter().flatten().enumerate() {
        let header = header_name(&format!("claimToHeaders[{i}].headerName"), &c.header_name)?;
        let claim: Vec<String> = c.claim_name.split('.').map(str::to_owned).collect();
        if claim.iter().any(String::is_empty) {
            return Err(InvalidConfig::at(
                format!("claimToHeaders[{i}].claimName"),
                "must be a claim name or a dotted path of claim names",
            ));
        }
        claim_to_headers.push(ClaimToHeader { header, claim });
    }
    let forward_payload_header = raw
        .forward_payload_header
        .as_deref()
        .map(|h| header_name("forwardPayloadHeader", h))
        .transpose()?;
    let payload_in_metadata = raw
        .payload_in_metadata
        .as_deref()
        .map(|p| property_name("payloadInMetadata", p))
        .transpose()?;
    let header_in_metadata = raw
        .header_in_metadata
        .as_deref()
        .map(|p| property_name("headerInMetadata", p))
        .transpose()?;
    if header_in_metadata.is_some() && header_in_metadata == payload_in_metadata {
        return Err(InvalidConfig::at(
            "headerInMetadata",
            "must differ from payloadInMetadata",
        ));
    }
    let space_delimited_claims = match &raw.normalize_payload_in_metadata {
        None => Vec::new(),
        Some(normalize) => {
            let claims = normalize.space_delimited_claims.clone().unwrap_or_default();
            if payload_in_metadata.is_none() {
                return Err(InvalidConfig::at(
                    "normalizePayloadInMetadata",
                    "has no effect without payloadInMetadata",
                ));
            }
            if claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
                return Err(InvalidConfig::at(
                    "normalizePayloadInMetadata.spaceDelimitedClaims",
                    format!("at most {MAX_SPACE_DELIMITED_CLAIMS} claims"),
                ));
            }
            for (i, claim) in claims.iter().enumerate() {
                if claim.is_empty() {
                    return Err(InvalidConfig::at(
                        format!("normalizePayloadInMetadata.spaceDelimitedClaims[{i}]"),
                        "must not be empty",
                    ));
                }
            }
            claims
        }
    };
    let cache = raw.jwt_cache_config.unwrap_or_default();
    let cache_entries = cache.jwt_cache_size.unwrap_or(DEFAULT_CACHE_ENTRIES);
    if cache_entries > MAX_CACHE_ENTRIES {
        return Err(InvalidConfig::at(
            "jwtCacheConfig.jwtCacheSize",
            format!("must be at most {MAX_CACHE_ENTRIES}"),
        ));
    }
    let max_token_bytes = cache.jwt_max_token_size.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(64..=MAX_TOKEN_BYTES).contains(&max_token_bytes) {
        return Err(InvalidConfig::at(
            "jwtCacheConfig.jwtMaxTokenSize",
            format!("must be between 64 and {MAX_TOKEN_BYTES}"),
        ));
    }
    Ok(Provider {
        name: name.to_owned(),
        issuer: raw.issuer.filter(|s| !s.is_empty()),
        audiences: raw.audiences.unwrap_or_default(),
        subjects,
        require_expiration: raw.require_expiration.unwrap_or(true),
        max_lifetime_seconds,
        keys,
        remote,
        locations: locs,
        forward: raw.forward.unwrap_or(false),
        forward_payload_header,
        payload_in_metadata,
        header_in_metadata,
        space_delimited_claims,
        claim_to_headers,
        clock_skew_seconds: u64::from(clock_skew),
        clear_route_cache: raw.clear_route_cache.unwrap_or(false),
        cache_entries: cache_entries as usize,
        max_token_bytes: max_token_bytes as usize,
        algorithms,
    })
}

fn requirement(
    path: &str,
    raw: &RawRequirement,
    providers: &[Provider],
    depth: usize,
) -> Result<Requirement, InvalidConfig> {
    if depth > MAX_REQUIREMENT_DEPTH {
        return Err(InvalidConfig::at(
            path,
            format!("requirements nest deeper than {MAX_REQUIREMENT_DEPTH}"),
        ));
    }
    let find = |field: &str, name: &str| {
        providers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                InvalidConfig::at(
                    format!("{path}.{field}"),
                    format!("no provider is named `{name}`"),
                )
            })
    };
    let given = [
        raw.provider_name.is_some(),
        raw.provider_and_audiences.is_some(),
        raw.requires_any.is_some(),
        raw.requires_all.is_some(),
        raw.allow_missing.is_some(),
        raw.allow_missing_or_failed.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(InvalidConfig::at(
            path,
            "needs exactly one of providerName, providerAndAudiences, requiresAny, requiresAll, \
             allowMissing, allowMissingOrFailed",
        ));
    }
    let list = |field: &str, l: &RawRequirementList| -> Result<Vec<Requirement>, InvalidConfig> {
        if l.requirements.len() < 2 {
            return Err(InvalidConfig::at(
                format!("{path}.{field}.requirements"),
                "needs at least 2 requirements",
            ));
        }
        l.requirements
            .iter()
            .enumerate()
            .map(|(i, r)| {
                requirement(
                    &format!("{path}.{field}.requirements[{i}]"),
                    r,
                    providers,
                    depth + 1,
                )
            })
            .collect()
    };
    if let Some(name) = &raw.provider_name {
        return Ok(Requirement::Provider {
            provider: find("providerName", name)?,
            audiences: None,
        });
    }
    if let Some(pa) = &raw.provider_and_audiences {
        return Ok(Requirement::Provider {
            provider: find("providerAndAudiences.providerName", &pa.provider_name)?,
            audiences: Some(pa.audiences.clone()),
        });
    }
    if let Some(l) = &raw.requires_any {
        return Ok(Requirement::Any(list("requiresAny", l)?));
    }
    if let Some(l) = &raw.requires_all {
        return Ok(Requirement::All(list("requiresAll", l)?));
    }
    if raw.allow_missing.is_some() {
        return Ok(Requirement::AllowMissing);
    }
    Ok(Requirement::AllowMissingOrFailed)
}

impl TryFrom<RawConfig> for Config {
    type Error = InvalidConfig;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let raw_providers = raw.providers.unwrap_or_default().0;
        if raw_providers.len() > MAX_PROVIDERS {
            return Err(InvalidConfig::at(
                "providers",
                format!("at most {MAX_PROVIDERS} providers"),
            ));
        }
        let mut locations = Vec::new();
        let mut providers = Vec::with_capacity(raw_providers.len());
        for (name, raw) in raw_providers {
            if name.is_empty() {
                return Err(InvalidConfig::at("providers", "a provider name is empty"));
            }
            let p = provider(&name, raw, &mut locations)
                .map_err(|e| e.within(&format!("providers.{name}")))?;
            providers.push(p);
        }
        let mut output_headers: Vec<String> = Vec::new();
        for p in &providers {
            let owned = p
                .claim_to_headers
                .iter()
                .map(|c| &c.header)
                .chain(&p.forward_payload_header);
            for h in owned {
                let is_token_header = locations
                    .iter()
                    .any(|l| matches!(l, Location::Header { name, .. } if name == h));
                if is_token_header || h.starts_with(':') || h == "host" || h == "cookie" {
                    return Err(InvalidConfig::at(
                        format!("providers.{}", p.name),
                        format!("`{h}` cannot be written: it carries tokens or routing"),
                    ));
                }
                if !output_headers.contains(h) {
                    output_headers.push(h.clone());
                }
            }
        }
        if output_headers.len() > MAX_OUTPUT_HEADERS {
            return Err(InvalidConfig::at(
                "providers",
                format!(
                    "the providers write {} distinct headers; at most {MAX_OUTPUT_HEADERS}",
                    output_headers.len()
                ),
            ));
        }
        let mut named = Vec::new();
        for (name, q) in raw.requirement_map.iter().flatten() {
            let compiled = requirement(&format!("requirementMap.{name}"), q, &providers, 0)?;
            named.push((name.clone(), compiled));
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.unwrap_or_default().iter().enumerate() {
            let path = format!("rules[{i}]");
            let matcher = RouteMatcher::compile(&r.route_match).map_err(|e| {
                InvalidConfig::at(e.field_under(&format!("{path}.match")), e.reason)
            })?;
            let requires = match (&r.requires, &r.requirement_name) {
                (Some(_), Some(_)) => {
                    return Err(InvalidConfig::at(
                        path,
                        "give either requires or requirementName, not both",
                    ));
                }
                (Some(q), None) => {
                    Some(requirement(&format!("{path}.requires"), q, &providers, 0)?)
                }
                (None, Some(name)) => Some(
                    named
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, q)| q.clone())
                        .ok_or_else(|| {
                            InvalidConfig::at(
                                format!("{path}.requirementName"),
                                format!("no requirement in requirementMap is named `{name}`"),
                            )
                        })?,
                ),
                (None, None) => None,
            };
            rules.push(Rule { matcher, requires });
        }
        Ok(Self {
            providers,
            locations,
            rules,
            bypass_cors_preflight: raw.bypass_cors_preflight.unwrap_or(false),
            strip_failure_response: raw.strip_failure_response.unwrap_or(false),
            output_headers,
        })
    }
}

/// Parses and validates a plugin configuration.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    meshward_core::config::parse_config::<RawConfig, Config>(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    const JWKS: &str = r#"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"}]}"#;

    fn error(json: &str) -> String {
        parse(json.as_bytes()).err().unwrap().to_string()
    }

    fn with_provider(fields: &str) -> String {
        format!(
            r#"{{"providers": {{"p": {{"local_jwks": {{"inline_string": "{JWKS}"}}{fields}}}}}}}"#
        )
    }

    #[test]
    fn defaults_mirror_envoy_except_where_documented() {
        let config = parse(with_provider("").as_bytes()).unwrap();
        let p = &config.providers[0];
        assert_eq!(p.clock_skew_seconds, 60);
        assert!(p.require_expiration, "meshward requires exp by default");
        assert!(!p.forward);
        assert_eq!(p.cache_entries, 100);
        assert_eq!(
            config.locations,
            [
                Location::Header {
                    name: "authorization".to_owned(),
                    prefix: "Bearer ".to_owned()
                },
                Location::Param("access_token".to_owned())
            ]
        );
        // A 64-byte oct key without `alg` serves all three HMAC algorithms.
        assert_eq!(p.keys.keys.len(), 3);
        assert!(parse(b"").unwrap().providers.is_empty());
    }

    #[test]
    fn remote_jwks_in_envoys_shape_with_defaults() {
        let json = r#"{"providers": {"p": {"remoteJwks": {
            "httpUri": {"uri": "https://idp.example:8443/keys?x=1", "cluster": "idp", "timeout": "2s"},
            "async_fetch": {"fast_listener": true},
            "retry_policy": {"retry_back_off": {"base_interval": "0.5s"}}}}}}"#;
        let config = parse(json.as_bytes()).unwrap();
        let r = config.providers[0].remote.clone().unwrap();
        assert_eq!(
            (r.cluster.as_str(), r.authority.as_str(), r.path.as_str()),
            ("idp", "idp.example:8443", "/keys?x=1")
        );
        assert_eq!(r.timeout_ms, 2000);
        assert_eq!(r.cache_duration_ns, 600 * 1_000_000_000);
        assert!(r.fetch_at_start);
        assert_eq!(r.failed_refetch_ns, 1_000_000_000);
        assert_eq!(
            (r.retries, r.backoff_base_ns, r.backoff_max_ns),
            (1, 500_000_000, 5_000_000_000)
        );
        assert!(!r.allow_symmetric_keys);
        assert!(config.providers[0].keys.keys.is_empty());
        assert_eq!(
            error(
                r#"{"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "http://a/", "cluster": "c", "timeout": "1s"}, "retry_policy": {"retry_back_off": {"base_interval": "2s", "max_interval": "1s"}}}}}}"#
            ),
            "providers.p.remoteJwks.retryPolicy.retryBackOff.maxInterval: must not be less than baseInterval"
        );
        assert_eq!(
            error(r#"{"providers": {"p": {}}}"#),
            "providers.p.localJwks.inlineString: is required (or remoteJwks)"
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (json, expected) in [
            (with_provider(r#", "clockSkewSeconds": 301"#), "providers.p.clockSkewSeconds: must be at most 300"),
            (with_provider(r#", "allowed_algorithms": ["none"]"#), "providers.p.allowedAlgorithms[0]: `none` is not a supported algorithm (`none` never is)"),
            (with_provider(r#", "remote_jwks": {}"#), "providers.p: give either localJwks or remoteJwks, not both"),
            (with_provider(r#", "claim_to_headers": [{"header_name": "authorization", "claim_name": "sub"}]"#), "providers.p: `authorization` cannot be written: it carries tokens or routing"),
            (with_provider(r#", "claim_to_headers": [{"header_name": "x-a", "claim_name": "a..b"}]"#), "providers.p.claimToHeaders[0].claimName: must be a claim name or a dotted path of claim names"),
            (with_provider(r#", "jwt_cache_config": {"jwt_max_token_size": 10}"#), "providers.p.jwtCacheConfig.jwtMaxTokenSize: must be between 64 and 65536"),
            (r#"{"providers": {"p": {}}}"#.to_owned(), "providers.p.localJwks.inlineString: is required"),
            (r#"{"providers": {"p": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}"}}}}"#.to_owned(), "providers.p.localJwks.inlineString.keys[0].k: is shorter than 32 bytes, too short for any HMAC algorithm (RFC 7518 §3.2)"),
            (r#"{"providers": {"p": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"}]}"}}}}"#.to_owned(), "providers.p.localJwks.inlineString.keys[0].crv: `P-521` is not supported"),
            (r#"{"providers": {"p": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"ES256\",\"n\":\"AA\",\"e\":\"AQAB\"}]}"}}}}"#.to_owned(), "providers.p.localJwks.inlineString.keys[0].alg: `ES256` does not fit a `RSA` key"),
            (r#"{"providers": {"p": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}"}}}}"#.to_owned(), "providers.p.localJwks.inlineString.keys[0].n: RSA modulus of 17 bits; at least 2048 required"),
            (r#"{"providers": {"p": {}, "p": {}}}"#.to_owned(), "providers: duplicate provider `p`"),
            (r#"{"rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "x"}}]}"#.to_owned(), "rules[0].requires.providerName: no provider is named `x`"),
            (r#"{"rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [{"allow_missing": {}}]}}}]}"#.to_owned(), "rules[0].requires.requiresAny.requirements: needs at least 2 requirements"),
            (r#"{"rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing": {}, "allow_missing_or_failed": {}}}]}"#.to_owned(), "rules[0].requires: needs exactly one of providerName, providerAndAudiences, requiresAny, requiresAll, allowMissing, allowMissingOrFailed"),
            (r#"{"bypassCorsPreflight": true, "bypass_cors_preflight": true}"#.to_owned(), "bypassCorsPreflight: duplicate field `bypassCorsPreflight`"),
        ] {
            let error = error(&json);
            assert!(error.starts_with(expected), "{json}\n{error}");
        }
    }
}
