//! JSON Web Key Sets (RFC 7517) into verification keys, each bound to the algorithms its type
//! allows (RFC 8725 §3.1): RSA keys verify `RS*`/`PS*` only, P-256 `ES256`, P-384 `ES384`,
//! Ed25519 `EdDSA`, symmetric (`oct`) keys `HS*` only, so no token can pick a key of another
//! type by its `alg` (the HS256-with-an-RSA-public-key confusion). A key's own `alg` member
//! narrows it to that one algorithm.
//!
//! Configure-time only: errors name the key (`keys[2].n`) and are fatal for local keys.

use ct_codecs::{Base64UrlSafeNoPadding, Decoder as _};
use hmac::{Hmac, KeyInit as _};
use rsa::{BoxedUint, pkcs1v15, pss};
use serde::Deserialize;
use sha2::{Sha256, Sha384, Sha512};

use crate::config::InvalidConfig;

/// Smallest RSA modulus accepted, in bits (RFC 8725 / NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// Most keys in one set.
pub const MAX_KEYS: usize = 64;
/// Largest JWKS document, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A supported JWS algorithm (`none` is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// HMAC SHA-256.
    Hs256,
    /// HMAC SHA-384.
    Hs384,
    /// HMAC SHA-512.
    Hs512,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Self; 12] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
        Self::Hs256,
        Self::Hs384,
        Self::Hs512,
    ];

    /// The JOSE name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
        }
    }

    /// From the JOSE name (exact, case-sensitive as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    const fn hmac_min_key_bytes(self) -> usize {
        match self {
            Self::Hs384 => 48,
            Self::Hs512 => 64,
            _ => 32,
        }
    }
}

/// A key usable with exactly one algorithm. RSA-PSS keys expect the salt length equal to the
/// hash length (RFC 7518 §3.5). HMAC keys are kept keyed (the key block already absorbed), so a
/// verification clones the state instead of re-keying.
pub enum Verifier {
    /// RS256.
    Rs256(pkcs1v15::VerifyingKey<Sha256>),
    /// RS384.
    Rs384(pkcs1v15::VerifyingKey<Sha384>),
    /// RS512.
    Rs512(pkcs1v15::VerifyingKey<Sha512>),
    /// PS256.
    Ps256(pss::VerifyingKey<Sha256>),
    /// PS384.
    Ps384(pss::VerifyingKey<Sha384>),
    /// PS512.
    Ps512(pss::VerifyingKey<Sha512>),
    /// ES256.
    Es256(p256::ecdsa::VerifyingKey),
    /// ES384.
    Es384(p384::ecdsa::VerifyingKey),
    /// EdDSA (Ed25519).
    EdDsa(ed25519_dalek::VerifyingKey),
    /// HS256.
    Hs256(Hmac<Sha256>),
    /// HS384.
    Hs384(Hmac<Sha384>),
    /// HS512.
    Hs512(Hmac<Sha512>),
}

/// One verification key.
pub struct Key {
    /// `kid`, if the JWK had one.
    pub kid: Option<String>,
    /// Matches a token whatever its `kid` (a PEM provider's only key).
    pub any_kid: bool,
    /// The algorithm it verifies.
    pub algorithm: Algorithm,
    /// The key.
    pub verifier: Verifier,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys of one provider.
#[derive(Debug, Default)]
pub struct KeySet {
    /// One entry per (JWK, algorithm) pair.
    pub keys: Vec<Key>,
}

impl KeySet {
    /// The keys that may verify a token with `alg` and `kid`: with a `kid`, only keys with that
    /// `kid` (no fallback to other keys) or the single key of a PEM provider; without one, every
    /// key of that algorithm.
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| {
            k.algorithm == alg
                && match kid {
                    Some(kid) => k.any_kid || k.kid.as_deref() == Some(kid),
                    None => true,
                }
        })
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

// Unknown members are allowed (RFC 7517 §4: "MUST be ignored").
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
    d: Option<String>,
}

fn b64(path: &str, field: &str, value: Option<&String>) -> Result<Vec<u8>, InvalidConfig> {
    let value = value.ok_or_else(|| InvalidConfig::at(format!("{path}.{field}"), "is missing"))?;
    Base64UrlSafeNoPadding::decode_to_vec(value.trim_end_matches('='), None)
        .map_err(|_| InvalidConfig::at(format!("{path}.{field}"), "is not base64url"))
}

fn modulus_bits(n: &[u8]) -> usize {
    let trimmed: &[u8] = match n.iter().position(|b| *b != 0) {
        Some(i) => n.get(i..).unwrap_or_default(),
        None => &[],
    };
    match trimmed.first() {
        Some(first) => trimmed.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn bad_key(path: &str, e: &impl std::fmt::Display) -> InvalidConfig {
    InvalidConfig::at(path, format!("is not a usable key: {e}"))
}

/// Public key material, decoded from a JWK or a PEM block, before it becomes verifiers.
pub enum Material {
    /// RSA modulus and public exponent (big-endian).
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// An uncompressed SEC1 point (`04 || x || y`) on the curve of the family (P-256 or P-384).
    Ec {
        /// The point.
        point: Vec<u8>,
    },
    /// An Ed25519 public key.
    Ed25519 {
        /// The 32-byte key.
        x: Vec<u8>,
    },
    /// An HMAC secret.
    Oct {
        /// The secret.
        k: Vec<u8>,
    },
}

/// The algorithms each key type may verify (RFC 8725 §3.1).
pub const RSA_FAMILY: &[Algorithm] = &[
    Algorithm::Rs256,
    Algorithm::Rs384,
    Algorithm::Rs512,
    Algorithm::Ps256,
    Algorithm::Ps384,
    Algorithm::Ps512,
];
/// P-256 keys.
pub const P256_FAMILY: &[Algorithm] = &[Algorithm::Es256];
/// P-384 keys.
pub const P384_FAMILY: &[Algorithm] = &[Algorithm::Es384];
/// Ed25519 keys.
pub const ED25519_FAMILY: &[Algorithm] = &[Algorithm::EdDsa];
/// Symmetric keys.
pub const OCT_FAMILY: &[Algorithm] = &[Algorithm::Hs256, Algorithm::Hs384, Algorithm::Hs512];

/// One key ready to become verifiers: who it is, what it may verify, and its material.
pub struct KeySpec<'a> {
    /// `kid`, if any.
    pub kid: Option<&'a str>,
    /// The algorithms of its type, narrowed to one by a JWK `alg`.
    pub family: &'a [Algorithm],
    /// Pinned by a JWK `alg`.
    pub pinned: Option<Algorithm>,
    /// The material.
    pub material: Material,
    /// Where a problem with a member of the key is reported: `keys[2]` + `.n` for a JWK; the
    /// PEM text itself for a PEM key (`None`).
    pub path: Option<&'a str>,
    /// Verifies tokens whatever their `kid` (the single key of a PEM provider: there is no other
    /// key to confuse it with).
    pub any_kid: bool,
}

impl KeySpec<'_> {
    fn at(&self, member: &str) -> String {
        self.path
            .map_or_else(String::new, |p| format!("{p}.{member}"))
    }
}

/// Adds one verifier per algorithm of `spec.family` that is `allowed` (and `spec.pinned`, if
/// any), refusing weak keys: RSA below [`MIN_RSA_BITS`] or with `e` ≠ 65537, points off the
/// curve, small-order Ed25519 keys, HMAC keys shorter than RFC 7518 §3.2 asks.
pub fn add_key(
    set: &mut KeySet,
    spec: &KeySpec<'_>,
    allowed: &[Algorithm],
) -> Result<(), InvalidConfig> {
    let algs: Vec<Algorithm> = spec
        .family
        .iter()
        .copied()
        .filter(|a| spec.pinned.is_none_or(|p| p == *a) && allowed.contains(a))
        .collect();
    let mut push = |algorithm: Algorithm, verifier: Verifier| {
        set.keys.push(Key {
            kid: spec.kid.map(str::to_owned),
            any_kid: spec.any_kid,
            algorithm,
            verifier,
        });
    };
    match &spec.material {
        Material::Rsa { n, e } => {
            let bits = modulus_bits(n);
            if bits < MIN_RSA_BITS {
                return Err(InvalidConfig::at(
                    spec.at("n"),
                    format!("RSA modulus of {bits} bits; at least {MIN_RSA_BITS} required"),
                ));
            }
            // RFC 8725 does not require it, but every IdP uses 65537 and small exponents
            // have a history of padding-check attacks: refuse anything else.
            if e.iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>()
                != [1, 0, 1]
            {
                return Err(InvalidConfig::at(
                    spec.at("e"),
                    "is not 65537 (AQAB), the only RSA public exponent accepted",
                ));
            }
            let key = rsa::PublicKey::new(
                BoxedUint::from_be_slice_vartime(n),
                BoxedUint::from_be_slice_vartime(e),
            )
            .map_err(|e| bad_key(&spec.at("n"), &e))?;
            for alg in algs {
                let key = key.clone();
                let v = match alg {
                    Algorithm::Rs256 => Verifier::Rs256(pkcs1v15::VerifyingKey::new(key)),
                    Algorithm::Rs384 => Verifier::Rs384(pkcs1v15::VerifyingKey::new(key)),
                    Algorithm::Rs512 => Verifier::Rs512(pkcs1v15::VerifyingKey::new(key)),
                    Algorithm::Ps256 => Verifier::Ps256(pss::VerifyingKey::new(key)),
                    Algorithm::Ps384 => Verifier::Ps384(pss::VerifyingKey::new(key)),
                    _ => Verifier::Ps512(pss::VerifyingKey::new(key)),
                };
                push(alg, v);
            }
        }
        Material::Ec { point } => {
            for alg in algs {
                let v = if alg == Algorithm::Es256 {
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map(Verifier::Es256)
                } else {
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map(Verifier::Es384)
                }
                .map_err(|_| {
                    InvalidConfig::at(
                        spec.at("x"),
                        "is not a usable key: not a point on the curve",
                    )
                })?;
                push(alg, v);
            }
        }
        Material::Ed25519 { x } => {
            for alg in algs {
                let bytes: [u8; 32] = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| InvalidConfig::at(spec.at("x"), "is not a 32-byte Ed25519 key"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| bad_key(&spec.at("x"), &e))?;
                if key.is_weak() {
                    return Err(InvalidConfig::at(
                        spec.at("x"),
                        "is a weak (small-order) Ed25519 key",
                    ));
                }
                let v = Verifier::EdDsa(key);
                push(alg, v);
            }
        }
        Material::Oct { k } => {
            let usable: Vec<Algorithm> = algs
                .iter()
                .copied()
                .filter(|a| spec.pinned.is_some() || k.len() >= a.hmac_min_key_bytes())
                .collect();
            if usable.is_empty() && !algs.is_empty() {
                return Err(InvalidConfig::at(
                    spec.at("k"),
                    "is shorter than 32 bytes, too short for any HMAC algorithm (RFC 7518 §3.2)",
                ));
            }
            for alg in usable {
                if k.len() < alg.hmac_min_key_bytes() {
                    return Err(InvalidConfig::at(
                        spec.at("k"),
                        format!(
                            "{} needs a key of at least {} bytes (RFC 7518 §3.2)",
                            alg.name(),
                            alg.hmac_min_key_bytes()
                        ),
                    ));
                }
                // HMAC takes keys of any length: these cannot fail.
                let hmac_error = |e: hmac::digest::InvalidLength| bad_key(&spec.at("k"), &e);
                let v = match alg {
                    Algorithm::Hs256 => {
                        Verifier::Hs256(Hmac::new_from_slice(k).map_err(hmac_error)?)
                    }
                    Algorithm::Hs384 => {
                        Verifier::Hs384(Hmac::new_from_slice(k).map_err(hmac_error)?)
                    }
                    _ => Verifier::Hs512(Hmac::new_from_slice(k).map_err(hmac_error)?),
                };
                push(alg, v);
            }
        }
    }
    Ok(())
}

/// Parses a local JWKS and keeps, per key, one verifier for each allowed algorithm its type
/// supports. Every problem is an error (these keys come from the operator).
pub fn parse_local(text: &str, allowed: &[Algorithm]) -> Result<KeySet, InvalidConfig> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(InvalidConfig::root(format!(
            "is larger than {MAX_JWKS_BYTES} bytes"
        )));
    }
    let raw: RawJwks = serde_json::from_str(text)
        .map_err(|e| InvalidConfig::root(format!("is not a JWKS: {e}")))?;
    if raw.keys.is_empty() {
        return Err(InvalidConfig::at("keys", "has no keys"));
    }
    if raw.keys.len() > MAX_KEYS {
        return Err(InvalidConfig::at(
            "keys",
            format!("has more than {MAX_KEYS} keys"),
        ));
    }
    let mut set = KeySet::default();
    for (i, jwk) in raw.keys.iter().enumerate() {
        let path = format!("keys[{i}]");
        if jwk.key_use.as_deref().is_some_and(|u| u != "sig") {
            // An encryption key: never used to verify.
            continue;
        }
        if jwk.d.is_some() && jwk.kty != "oct" {
            return Err(InvalidConfig::at(
                format!("{path}.d"),
                "is private key material: give the public key only",
            ));
        }
        let pinned = match jwk.alg.as_deref() {
            None => None,
            Some(name) => Some(Algorithm::from_name(name).ok_or_else(|| {
                InvalidConfig::at(format!("{path}.alg"), format!("`{name}` is not supported"))
            })?),
        };
        let family: &[Algorithm] = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => RSA_FAMILY,
            ("EC", Some("P-256")) => P256_FAMILY,
            ("EC", Some("P-384")) => P384_FAMILY,
            ("OKP", Some("Ed25519")) => ED25519_FAMILY,
            ("oct", _) => OCT_FAMILY,
            ("EC" | "OKP", crv) => {
                return Err(InvalidConfig::at(
                    format!("{path}.crv"),
                    format!("`{}` is not supported", crv.unwrap_or("(missing)")),
                ));
            }
            (kty, _) => {
                return Err(InvalidConfig::at(
                    format!("{path}.kty"),
                    format!("`{kty}` is not supported"),
                ));
            }
        };
        if let Some(alg) = pinned
            && !family.contains(&alg)
        {
            return Err(InvalidConfig::at(
                format!("{path}.alg"),
                format!("`{}` does not fit a `{}` key", alg.name(), jwk.kty),
            ));
        }
        let material = match jwk.kty.as_str() {
            "RSA" => Material::Rsa {
                n: b64(&path, "n", jwk.n.as_ref())?,
                e: b64(&path, "e", jwk.e.as_ref())?,
            },
            "EC" => {
                let x = b64(&path, "x", jwk.x.as_ref())?;
                let y = b64(&path, "y", jwk.y.as_ref())?;
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4u8);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Material::Ec { point }
            }
            "OKP" => Material::Ed25519 {
                x: b64(&path, "x", jwk.x.as_ref())?,
            },
            _ => Material::Oct {
                k: b64(&path, "k", jwk.k.as_ref())?,
            },
        };
        let spec = KeySpec {
            kid: jwk.kid.as_deref(),
            family,
            pinned,
            material,
            path: Some(&path),
            any_kid: false,
        };
        add_key(&mut set, &spec, allowed)?;
    }
    Ok(set)
}

/// Parses a JWKS fetched from an IdP with the same rules as [`parse_local`] (size and key-count
/// caps, key/algorithm binding, weak keys refused), except that symmetric (`oct`) keys are
/// ignored unless `allow_symmetric` (a published JWKS is public: an HMAC key in it would let
/// anyone sign). A set left without any usable key is an error, so a bad answer never replaces
/// a working set.
pub fn parse_remote(
    text: &str,
    allowed: &[Algorithm],
    allow_symmetric: bool,
) -> Result<KeySet, InvalidConfig> {
    let allowed: Vec<Algorithm> = allowed
        .iter()
        .copied()
        .filter(|a| allow_symmetric || a.hmac_min_key_bytes_if_symmetric().is_none())
        .collect();
    let set = parse_local(text, &allowed)?;
    if set.keys.is_empty() {
        return Err(InvalidConfig::at("keys", "has no usable verification key"));
    }
    Ok(set)
}

impl Algorithm {
    /// For the HMAC algorithms, their shortest key; `None` for asymmetric ones.
    const fn hmac_min_key_bytes_if_symmetric(self) -> Option<usize> {
        match self {
            Self::Hs256 | Self::Hs384 | Self::Hs512 => Some(self.hmac_min_key_bytes()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    const N_2048: &str = "3QzXBjXpfdYr2uyTTvJmYioiR4JUowM3o7RAHznGWoCbZ_fyPHV_-igTeicUNMQEzh1dnfJO7NG4_fzEbaHW_NCzBRESavG7rLdClMER-59gEID77lRMf-94NZuyTlB2mvk8vLn9MW5kyFDJr5oVl03jpwF94AbOyk5fmxqtWHtnQ8ItAYODF8MFkU6_Fua_hoqWfDGhOYSXtn_qLxadK_VrSShu0VvoHNl2Jlrj7uCb8lyyJkTdi964jpQyZTwbcyYA3a9RaikHI2MfXuw7-nqZCOcAx2KePf7drmur9d7Oj0aaDoI50HTSiBk5wXDSIp8NnFwOObEjiRS-vj8IbQ";

    fn error_of(jwks: &str) -> String {
        parse_local(jwks, &Algorithm::ALL).unwrap_err().to_string()
    }

    #[test]
    fn rsa_exponent_other_than_65537_is_refused() {
        let ok = format!(r#"{{"keys":[{{"kty":"RSA","n":"{N_2048}","e":"AQAB"}}]}}"#);
        assert_eq!(parse_local(&ok, &Algorithm::ALL).unwrap().keys.len(), 6);
        let e3 = format!(r#"{{"keys":[{{"kty":"RSA","n":"{N_2048}","e":"Aw"}}]}}"#);
        let error = error_of(&e3);
        assert!(
            error.contains("keys[0].e") && error.contains("65537"),
            "{error}"
        );
    }

    #[test]
    fn weak_ed25519_key_is_refused() {
        let error = error_of(
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#,
        );
        assert!(
            error.contains("keys[0].x") && error.contains("weak"),
            "{error}"
        );
        let short = error_of(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#);
        assert!(
            short.contains("keys[0].x") && short.contains("32-byte"),
            "{short}"
        );
    }
}
