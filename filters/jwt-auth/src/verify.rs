//! Verifies one compact JWS token against one provider: pure, time given by the caller.
//!
//! Order (cheap and structural first, the signature last, as Envoy's `jwt_verify_lib`): size
//! cap → three base64url segments → header JSON (depth-capped, `alg` from the provider's
//! allow-list, never `none`, no `crit`) → claims JSON (depth-capped, no duplicate claim,
//! `exp`/`nbf`/`iat` numbers, `iss`/`sub` strings, `aud` a string or an array of strings) → time,
//! lifetime and issuer → the keys of this provider with the token's `alg` (and its `kid`, if any:
//! no fallback to another key) → the signature (`rsa`, `p256`/`p384`, `ed25519-dalek`, `hmac`;
//! see `jwks.rs`) → `sub` matcher. The key-bearing
//! header members `jku`, `x5u`, `jwk`, `x5c` are never read.

use std::fmt;

use ct_codecs::{Base64UrlSafeNoPadding, Decoder as _};
use rsa::signature::Verifier as _;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::config::{ClaimToHeader, Provider};
use crate::jwks::{Algorithm, Key, KeySet, Verifier};

/// Deepest JSON nesting accepted in a token's header or payload.
pub const MAX_JSON_DEPTH: usize = 16;
/// Largest decoded header, in bytes.
pub const MAX_HEADER_BYTES: usize = 2048;

/// Why a token (or its absence) is refused. `message` is the reply body and `error_description`
/// (Envoy's wording where Envoy has one); `code` tags metrics and `details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No token where the requirement looks.
    Missing,
    /// Tokens in more than one place (or a repeated token header).
    Multiple,
    /// Larger than `jwt_max_token_size`.
    TooLarge,
    /// Not three base64url segments, or header/payload not the JSON objects they must be.
    Malformed,
    /// JSON nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// A claim given twice.
    DuplicateClaim,
    /// `alg: none`.
    AlgorithmNone,
    /// An `alg` outside the provider's allow-list (or unknown).
    AlgorithmNotAllowed,
    /// A `crit` header.
    UnknownCritical,
    /// `exp`, `nbf`, `iat`, `iss`, `sub` or `aud` of the wrong JSON type.
    ClaimType,
    /// No `exp` while required.
    MissingExpiration,
    /// `exp` passed.
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// `exp - iat` above `max_lifetime`, or `iat`/`exp` missing with it.
    Lifetime,
    /// `iss` is not the provider's.
    Issuer,
    /// No key of the provider has the token's `alg` (and `kid`).
    UnknownKid,
    /// The signature does not verify.
    Signature,
    /// `sub` does not match `subjects`.
    Subject,
    /// `aud` holds none of the accepted audiences (403).
    Audience,
    /// A `remote_jwks` provider has no usable key set (fetch failed or still pending).
    JwksFetchFailed,
}

impl Failure {
    /// Every failure, in metric-series order.
    pub const ALL: [Self; 20] = [
        Self::Missing,
        Self::Multiple,
        Self::TooLarge,
        Self::Malformed,
        Self::TooDeep,
        Self::DuplicateClaim,
        Self::AlgorithmNone,
        Self::AlgorithmNotAllowed,
        Self::UnknownCritical,
        Self::ClaimType,
        Self::MissingExpiration,
        Self::Expired,
        Self::NotYetValid,
        Self::Lifetime,
        Self::Issuer,
        Self::UnknownKid,
        Self::Signature,
        Self::Subject,
        Self::Audience,
        Self::JwksFetchFailed,
    ];

    /// Short code: metric tag and `details` suffix.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Multiple => "multiple_tokens",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::TooDeep => "too_deep",
            Self::DuplicateClaim => "duplicate_claim",
            Self::AlgorithmNone => "alg_none",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::UnknownCritical => "crit",
            Self::ClaimType => "claim_type",
            Self::MissingExpiration => "missing_exp",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Lifetime => "lifetime",
            Self::Issuer => "issuer",
            Self::UnknownKid => "unknown_kid",
            Self::Signature => "signature",
            Self::Subject => "subject",
            Self::Audience => "audience",
            Self::JwksFetchFailed => "jwks_fetch_failed",
        }
    }

    /// Human-readable reason (reply body, `error_description`).
    pub const fn message(self) -> &'static str {
        match self {
            Self::Missing => "Jwt is missing",
            Self::Multiple => "More than one Jwt in the request",
            Self::TooLarge => "Jwt is too large",
            Self::Malformed => "Jwt is not in the form of Header.Payload.Signature",
            Self::TooDeep => "Jwt JSON is nested too deeply",
            Self::DuplicateClaim => "Jwt has a duplicate claim",
            Self::AlgorithmNone => "Jwt is not signed",
            Self::AlgorithmNotAllowed => "Jwt algorithm is not allowed",
            Self::UnknownCritical => "Jwt has an unsupported critical header",
            Self::ClaimType => "Jwt claim has a wrong type",
            Self::MissingExpiration => "Jwt has no expiration",
            Self::Expired => "Jwt is expired",
            Self::NotYetValid => "Jwt not yet valid",
            Self::Lifetime => "Jwt lifetime is too long",
            Self::Issuer => "Jwt issuer is not configured",
            Self::UnknownKid => "Jwks doesn't have key to match kid or alg from Jwt",
            Self::Signature => "Jwt verification fails",
            Self::Subject => "Jwt subject is not allowed",
            Self::Audience => "Audiences in Jwt are not allowed",
            Self::JwksFetchFailed => "Jwks remote fetch is failed",
        }
    }

    /// HTTP status: 403 for a token that verifies but is not allowed here, else 401.
    pub const fn status(self) -> u16 {
        match self {
            Self::Audience => 403,
            _ => 401,
        }
    }

    /// Index in [`Failure::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }

    /// How specific a failure is, to pick the one reported among alternatives (`requires_any`):
    /// a present-but-bad token says more than a missing one.
    pub const fn weight(self) -> u8 {
        match self {
            Self::Missing => 0,
            Self::UnknownKid | Self::Issuer => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// What a verified token yields for the request, computed once and cached with the token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// `exp` (seconds), if any.
    pub expires_at: Option<u64>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `aud` (a single string becomes one entry).
    pub audiences: Vec<String>,
    /// One value per `claim_to_headers` entry of the provider (None: claim absent or not
    /// representable).
    pub claim_values: Vec<Option<String>>,
    /// The payload segment (base64url JSON), when the provider forwards it.
    pub payload_b64: Option<String>,
    /// The payload JSON, when the provider publishes it as a property (with its
    /// `space_delimited_claims` split into arrays).
    pub payload_json: Option<Vec<u8>>,
    /// The header JSON (at most [`MAX_HEADER_BYTES`]), when the provider publishes it as a
    /// property.
    pub header_json: Option<Vec<u8>>,
}

impl Verified {
    /// Approximate heap bytes (cache accounting).
    pub fn heap_bytes(&self) -> usize {
        self.issuer.as_ref().map_or(0, String::len)
            + self.subject.as_ref().map_or(0, String::len)
            + self.audiences.iter().map(String::len).sum::<usize>()
            + self
                .claim_values
                .iter()
                .map(|v| v.as_ref().map_or(0, String::len) + 24)
                .sum::<usize>()
            + self.payload_b64.as_ref().map_or(0, String::len)
            + self.payload_json.as_ref().map_or(0, Vec::len)
            + self.header_json.as_ref().map_or(0, Vec::len)
    }

    /// Whether one of `accepted` is among the token's audiences (always true when `accepted` is
    /// empty).
    pub fn audience_allowed(&self, accepted: &[String]) -> bool {
        accepted.is_empty() || self.audiences.iter().any(|a| accepted.contains(a))
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Value,
    kid: Option<Value>,
    crit: Option<Value>,
}

/// A JSON object whose keys must be distinct (serde_json's `Map` keeps the last silently).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Value>()?;
                    if out.insert(key, value).is_some() {
                        return Err(de::Error::custom(DUPLICATE));
                    }
                }
                Ok(StrictObject(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

const DUPLICATE: &str = "duplicate claim";

/// Deepest bracket nesting of a JSON text (strings skipped); stops counting past `limit`.
fn json_depth_exceeds(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn decode(segment: &str) -> Result<Vec<u8>, Failure> {
    Base64UrlSafeNoPadding::decode_to_vec(segment, None).map_err(|_| Failure::Malformed)
}

/// A NumericDate: a non-negative JSON number (fractions truncated).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "checked non-negative and finite; truncation is the intent"
                    )]
                    Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
                    _ => Err(Failure::ClaimType),
                }
            }
        }
        Some(_) => Err(Failure::ClaimType),
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Failure::ClaimType),
    }
}

fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, Failure> {
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Failure::ClaimType),
            })
            .collect(),
        Some(_) => Err(Failure::ClaimType),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as header text: scalars as text, arrays of scalars joined with `,`; values with
/// control characters are not representable in a header and yield `None`.
pub fn claim_text(claims: &Map<String, Value>, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first.as_str())?;
    for segment in rest {
        value = value.as_object()?.get(segment.as_str())?;
    }
    let text = match value {
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
            parts?.join(",")
        }
        other => scalar_text(other)?,
    };
    (!text.bytes().any(|b| b.is_ascii_control())).then_some(text)
}

/// The payload as published by `payload_in_metadata`: the token's own JSON, or, with
/// `space_delimited_claims`, the claims re-serialized with each of those top-level claims that
/// is a string split on spaces into an array of its non-empty words (as Envoy).
fn published_payload(
    payload_json: Vec<u8>,
    mut claims: Map<String, Value>,
    space_delimited: &[String],
) -> Vec<u8> {
    let mut changed = false;
    for name in space_delimited {
        if let Some(value) = claims.get_mut(name.as_str())
            && let Value::String(text) = value
        {
            let words = text
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(|w| Value::String(w.to_owned()))
                .collect();
            *value = Value::Array(words);
            changed = true;
        }
    }
    if !changed {
        return payload_json;
    }
    serde_json::to_vec(&claims).unwrap_or(payload_json)
}

/// Whether `signature` over `signing_input` (`header.payload`, as sent) verifies with `key`.
/// A signature of the wrong length for the algorithm is simply a bad signature. HMAC tags are
/// compared in constant time (`Mac::verify_slice`).
fn signature_ok(key: &Key, signing_input: &[u8], signature: &[u8]) -> bool {
    fn hmac_ok<M: hmac::Mac + Clone>(keyed: &M, input: &[u8], tag: &[u8]) -> bool {
        let mut mac = keyed.clone();
        mac.update(input);
        mac.verify_slice(tag).is_ok()
    }
    let rsa_pkcs1 = || rsa::pkcs1v15::Signature::try_from(signature).ok();
    let rsa_pss = || rsa::pss::Signature::try_from(signature).ok();
    match &key.verifier {
        Verifier::Rs256(k) => rsa_pkcs1().is_some_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Rs384(k) => rsa_pkcs1().is_some_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Rs512(k) => rsa_pkcs1().is_some_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Ps256(k) => rsa_pss().is_some_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Ps384(k) => rsa_pss().is_some_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Ps512(k) => rsa_pss().is_some_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Es256(k) => p256::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::Es384(k) => p384::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|s| k.verify(signing_input, &s).is_ok()),
        Verifier::EdDsa(k) => ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|s| k.verify_strict(signing_input, &s).is_ok()),
        Verifier::Hs256(k) => hmac_ok(k, signing_input, signature),
        Verifier::Hs384(k) => hmac_ok(k, signing_input, signature),
        Verifier::Hs512(k) => hmac_ok(k, signing_input, signature),
    }
}

fn is_base64url_or_dot(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Verifies `token` for `provider` at `now` (seconds since the epoch). Audiences are checked
/// by the caller ([`Verified::audience_allowed`]), since a requirement may replace them.
pub fn verify(provider: &Provider, token: &str, now: u64) -> Result<Verified, Failure> {
    verify_with(provider, &provider.keys, token, now)
}

/// [`verify`] with the keys given (a `remote_jwks` provider's current set).
pub fn verify_with(
    provider: &Provider,
    keys: &KeySet,
    token: &str,
    now: u64,
) -> Result<Verified, Failure> {
    if token.len() > provider.max_token_bytes {
        return Err(Failure::TooLarge);
    }
    if !token.bytes().all(is_base64url_or_dot) {
        return Err(Failure::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Malformed);
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Failure::Malformed);
    }
    let header_json = decode(header_b64)?;
    if header_json.len() > MAX_HEADER_BYTES {
        return Err(Failure::TooLarge);
    }
    if json_depth_exceeds(&header_json, MAX_JSON_DEPTH) {
        return Err(Failure::TooDeep);
    }
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| Failure::Malformed)?;
    if header.crit.is_some() {
        return Err(Failure::UnknownCritical);
    }
    let Value::String(alg_name) = &header.alg else {
        return Err(Failure::Malformed);
    };
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(Failure::AlgorithmNone);
    }
    let algorithm = Algorithm::from_name(alg_name)
        .filter(|a| provider.algorithms.contains(a))
        .ok_or(Failure::AlgorithmNotAllowed)?;
    let kid = match &header.kid {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(Failure::Malformed),
    };
    if signature_b64.is_empty() {
        return Err(Failure::Malformed);
    }
    let payload_json = decode(payload_b64)?;
    if json_depth_exceeds(&payload_json, MAX_JSON_DEPTH) {
        return Err(Failure::TooDeep);
    }
    let claims = match serde_json::from_slice::<StrictObject>(&payload_json) {
        Ok(StrictObject(claims)) => claims,
        Err(e) if e.to_string().starts_with(DUPLICATE) => return Err(Failure::DuplicateClaim),
        Err(_) => return Err(Failure::Malformed),
    };
    let expires_at = numeric_date(&claims, "exp")?;
    let not_before = numeric_date(&claims, "nbf")?;
    let issued_at = numeric_date(&claims, "iat")?;
    let issuer = string_claim(&claims, "iss")?;
    let subject = string_claim(&claims, "sub")?;
    let audiences = audiences(&claims)?;
    let skew = provider.clock_skew_seconds;
    match expires_at {
        None if provider.require_expiration => return Err(Failure::MissingExpiration),
        Some(exp) if now > exp.saturating_add(skew) => return Err(Failure::Expired),
        _ => {}
    }
    if not_before.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(Failure::NotYetValid);
    }
    if let Some(max) = provider.max_lifetime_seconds {
        match (issued_at, expires_at) {
            (Some(iat), Some(exp)) if exp.saturating_sub(iat) <= max => {}
            _ => return Err(Failure::Lifetime),
        }
    }
    if let Some(required) = &provider.issuer
        && issuer.as_ref() != Some(required)
    {
        return Err(Failure::Issuer);
    }
    let mut candidates = keys.candidates(algorithm, kid).peekable();
    if candidates.peek().is_none() {
        return Err(Failure::UnknownKid);
    }
    let signature = decode(signature_b64)?;
    let signing_input = token
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(Failure::Malformed)?
        .as_bytes();
    if !candidates.any(|key| signature_ok(key, signing_input, &signature)) {
        return Err(Failure::Signature);
    }
    if let Some(matcher) = &provider.subjects
        && !subject
            .as_deref()
            .is_some_and(|s| matcher.matches(s.as_bytes()))
    {
        return Err(Failure::Subject);
    }
    Ok(Verified {
        expires_at,
        claim_values: provider
            .claim_to_headers
            .iter()
            .map(|ClaimToHeader { claim, .. }| claim_text(&claims, claim))
            .collect(),
        payload_b64: provider
            .forward_payload_header
            .is_some()
            .then(|| payload_b64.to_owned()),
        payload_json: provider
            .payload_in_metadata
            .is_some()
            .then(|| published_payload(payload_json, claims, &provider.space_delimited_claims)),
        header_json: provider.header_in_metadata.is_some().then_some(header_json),
        issuer,
        subject,
        audiences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[["}"#, 2));
        assert!(json_depth_exceeds(br#"{"a":[[1]]}"#, 2));
        assert!(!json_depth_exceeds(br#"{"a":"\"[[["}"#, 1));
    }

    #[test]
    fn space_delimited_claims_split_into_words_and_nothing_else_changes() {
        let text = br#"{"scope":" read  write ","n":1,"sub":"a b"}"#.to_vec();
        let claims: Map<String, Value> = serde_json::from_slice(&text).unwrap_or_default();
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let published = published_payload(text.clone(), claims.clone(), &names(&["scope", "n"]));
        let value: Value = serde_json::from_slice(&published).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({"scope": ["read", "write"], "n": 1, "sub": "a b"})
        );
        // Nothing to split: the token's own bytes.
        assert_eq!(
            published_payload(text.clone(), claims, &names(&["n", "absent"])),
            text
        );
    }

    #[test]
    fn claims_render_as_header_text() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"a": {"b": ["x", 2, true]}, "n": 1.5, "o": {"p": 1}, "bad": "a\nb"}"#,
        )
        .unwrap_or_default();
        let path = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            claim_text(&claims, &path("a.b")).as_deref(),
            Some("x,2,true")
        );
        assert_eq!(claim_text(&claims, &path("n")).as_deref(), Some("1.5"));
        assert_eq!(claim_text(&claims, &path("o")), None);
        assert_eq!(claim_text(&claims, &path("bad")), None);
        assert_eq!(claim_text(&claims, &path("a.missing")), None);
    }
}

#[cfg(test)]
mod rfc_examples {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    /// RFC 7515 Appendix A.1 (HS256), key from A.1.1; its `exp` is 1300819380 (2011), so the
    /// clock is injected.
    const A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const A1_JWKS: &str = r#"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"}]}"#;
    const A1_EXP: u64 = 1_300_819_380;

    fn provider(fields: &str) -> Provider {
        let json = format!(
            r#"{{"providers": {{"rfc": {{"issuer": "joe", "local_jwks": {{"inline_string": "{A1_JWKS}"}},
                "claim_to_headers": [{{"header_name": "x-root", "claim_name": "http://example.com/is_root"}}]{fields}}}}}}}"#
        );
        crate::config::parse(json.as_bytes())
            .unwrap()
            .providers
            .remove(0)
    }

    #[test]
    fn rfc7515_a1_verifies_at_its_time_and_expires_after() {
        let p = provider("");
        let verified = verify(&p, A1_TOKEN, A1_EXP - 100).unwrap();
        assert_eq!(verified.issuer.as_deref(), Some("joe"));
        assert_eq!(verified.expires_at, Some(A1_EXP));
        // The claim name contains dots: a dotted path cannot reach it (documented).
        assert_eq!(verified.claim_values, [None]);
        assert_eq!(verify(&p, A1_TOKEN, A1_EXP + 60), Ok(verified));
        assert_eq!(verify(&p, A1_TOKEN, A1_EXP + 61), Err(Failure::Expired));
        let mut wrong_issuer = provider("");
        wrong_issuer.issuer = Some("bob".to_owned());
        assert_eq!(
            verify(&wrong_issuer, A1_TOKEN, A1_EXP),
            Err(Failure::Issuer)
        );
        let only_es256 = provider(r#", "allowed_algorithms": ["ES256"]"#);
        assert_eq!(
            verify(&only_es256, A1_TOKEN, A1_EXP),
            Err(Failure::AlgorithmNotAllowed)
        );
        let short_life = provider(r#", "max_lifetime": "60s""#);
        assert_eq!(
            verify(&short_life, A1_TOKEN, A1_EXP),
            Err(Failure::Lifetime)
        );
        // One flipped signature bit.
        let mut tampered = A1_TOKEN.to_owned();
        tampered.pop();
        tampered.push('Y');
        assert_eq!(verify(&p, &tampered, A1_EXP), Err(Failure::Signature));
    }
}
