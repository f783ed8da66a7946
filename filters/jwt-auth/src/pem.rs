//! A PEM public key as a provider's `local_jwks.inline_string` (Envoy's `jwt_verify_lib` accepts
//! one there too): `BEGIN PUBLIC KEY` (X.509 SubjectPublicKeyInfo: RSA, EC P-256/P-384, Ed25519)
//! or `BEGIN RSA PUBLIC KEY` (PKCS#1).
//!
//! The armour is decoded by `pem-rfc7468` (RFC 7468's strict grammar), the DER by `spki` and
//! `pkcs1` (RustCrypto's decoders); the key material then goes through the same checks as a JWK
//! ([`jwks::add_key`]: RSA ≥ 2048 bits with `e` = 65537, points on the curve, no small-order
//! Ed25519 key) and is bound to the algorithms of its type. Configure-time only.

use spki::der::Decode as _;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::config::InvalidConfig;
use crate::jwks::{self, Algorithm, KeySet, KeySpec, Material};

/// `id-ecPublicKey` (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` (RFC 5480).
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` (RFC 5480).
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `id-Ed25519` (RFC 8410).
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Whether `text` is PEM rather than a JWKS (a JWKS is a JSON object).
pub fn looks_like_pem(text: &str) -> bool {
    text.trim_start().starts_with("-----BEGIN ")
}

fn invalid(reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig::root(reason)
}

/// The key material and the algorithms of its type, from the DER of a SubjectPublicKeyInfo.
fn from_spki(der: &[u8]) -> Result<(Material, &'static [Algorithm]), InvalidConfig> {
    let info = SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|_| invalid("is not a DER SubjectPublicKeyInfo"))?;
    let key = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| invalid("has a public key that is not a whole number of bytes"))?;
    let algorithm = &info.algorithm;
    if algorithm.oid == pkcs1::ALGORITHM_OID {
        return Ok((rsa_material(key)?, jwks::RSA_FAMILY));
    }
    if algorithm.oid == EC_PUBLIC_KEY {
        let curve = algorithm
            .parameters_oid()
            .map_err(|_| invalid("is an EC key without a named curve"))?;
        let family = if curve == P256 {
            jwks::P256_FAMILY
        } else if curve == P384 {
            jwks::P384_FAMILY
        } else {
            return Err(invalid(
                "is an EC key on another curve; only P-256 and P-384 are supported",
            ));
        };
        return Ok((
            Material::Ec {
                point: key.to_vec(),
            },
            family,
        ));
    }
    if algorithm.oid == ED25519 {
        if algorithm.parameters.is_some() {
            return Err(invalid(
                "is an Ed25519 key with parameters (RFC 8410 forbids them)",
            ));
        }
        return Ok((Material::Ed25519 { x: key.to_vec() }, jwks::ED25519_FAMILY));
    }
    Err(invalid(
        "is a public key of another algorithm; RSA, EC P-256/P-384 and Ed25519 are supported",
    ))
}

/// The modulus and exponent from the DER of a PKCS#1 `RSAPublicKey`.
fn rsa_material(der: &[u8]) -> Result<Material, InvalidConfig> {
    let key =
        pkcs1::RsaPublicKeyRef::from_der(der).map_err(|_| invalid("is not a DER RSAPublicKey"))?;
    Ok(Material::Rsa {
        n: key.modulus.as_bytes().to_vec(),
        e: key.public_exponent.as_bytes().to_vec(),
    })
}

/// The verification keys of one PEM public key, one per algorithm its type allows and
/// `allowed` holds. The key has no `kid`, so it verifies tokens whatever their `kid` (it is the
/// provider's only key: nothing to fall back to). Private keys, certificates and anything but
/// exactly one PEM block are refused.
pub fn parse(text: &str, allowed: &[Algorithm]) -> Result<KeySet, InvalidConfig> {
    if text.len() > jwks::MAX_JWKS_BYTES {
        return Err(invalid(format!(
            "is larger than {} bytes",
            jwks::MAX_JWKS_BYTES
        )));
    }
    let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
        .map_err(|_| invalid("is not one PEM public key (RFC 7468)"))?;
    let (material, family) = match label {
        "PUBLIC KEY" => from_spki(&der)?,
        "RSA PUBLIC KEY" => (rsa_material(&der)?, jwks::RSA_FAMILY),
        private if private.ends_with("PRIVATE KEY") => {
            return Err(invalid(format!(
                "is private key material (`{private}`): give the public key only"
            )));
        }
        other => {
            return Err(invalid(format!(
                "is a PEM `{other}`; a `PUBLIC KEY` or an `RSA PUBLIC KEY` is needed"
            )));
        }
    };
    let mut set = KeySet::default();
    let spec = KeySpec {
        kid: None,
        family,
        pinned: None,
        material,
        path: None,
        any_kid: true,
    };
    jwks::add_key(&mut set, &spec, allowed)?;
    if set.keys.is_empty() {
        return Err(invalid(format!(
            "is a key for {}, none of which allowedAlgorithms holds",
            family
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join("/")
        )));
    }
    Ok(set)
}
