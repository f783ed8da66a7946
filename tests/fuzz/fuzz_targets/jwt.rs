//! JWT parsing and verification (`meshward_filter_jwt_auth::verify::verify`) with a fixed key set
//! (RSA, EC P-256/P-384, Ed25519 from the test JWKS; an HS256 `oct` key), any token and any time.
//!
//! Input: a mode byte, a time (u64 seconds), then either a raw token or, in mint mode, a header
//! and a payload JSON chunk that are signed with the `oct` key: that reaches the claim checks
//! behind the signature, and a correctly signed HS256 token must never fail as `Signature`.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use meshward_filter_jwt_auth::config::Config;
use meshward_filter_jwt_auth::verify::{Failure, verify};
use meshward_fuzz::Cursor;
use sha2::Sha256;

const HMAC_KEY: &[u8] = b"meshward-fuzz-hs256-key-0123456789abcdef";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let jwks = include_str!("../../fixtures/jwt-auth/jwks.json");
        let oct = serde_json::json!({"keys": [{"kty": "oct", "kid": "hs", "alg": "HS256",
            "k": URL_SAFE_NO_PAD.encode(HMAC_KEY)}]});
        let config = serde_json::json!({
            "providers": {
                "asymmetric": {
                    "issuer": "https://issuer.example",
                    "audiences": ["api"],
                    "local_jwks": {"inline_string": jwks},
                    "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}],
                },
                "hmac": {
                    "issuer": "https://issuer.example",
                    "audiences": ["api", "other"],
                    "subjects": {"prefix": "user-"},
                    "max_lifetime": "86400s",
                    "clock_skew_seconds": 30,
                    "local_jwks": {"inline_string": oct.to_string()},
                    "forward_payload_header": "x-jwt-payload",
                    "payload_in_metadata": "jwt_payload",
                    "claim_to_headers": [
                        {"header_name": "x-jwt-sub", "claim_name": "sub"},
                        {"header_name": "x-jwt-tenant", "claim_name": "org.tenant.id"},
                        {"header_name": "x-jwt-scope", "claim_name": "scope"},
                    ],
                },
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "hmac"}}],
        });
        meshward_filter_jwt_auth::config::parse(config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("fuzz provider config refused: {e}"))
    })
}

fn mint(header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(HMAC_KEY).unwrap();
    mac.update(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut token);
    token
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let now = cursor.u64();
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(cursor.rest());
        for provider in &config.providers {
            let _ = verify(provider, &token, now);
        }
        return;
    }
    let header = cursor.chunk();
    let payload = cursor.rest();
    let token = mint(header, payload);
    let hmac = &config.providers[1];
    let result = verify(hmac, &token, now);
    let plain_hs256 = serde_json::from_slice::<serde_json::Value>(header).is_ok_and(|h| {
        h.as_object().is_some_and(|o| {
            o.get("alg") == Some(&serde_json::json!("HS256"))
                && o.get("kid").is_none_or(|k| k == "hs")
                && o.get("crit").is_none()
        })
    });
    if plain_hs256 && token.len() <= hmac.max_token_bytes {
        assert!(
            !matches!(result, Err(Failure::Signature)),
            "a correctly signed HS256 token failed its signature check: {token}"
        );
    }
    let _ = verify(&config.providers[0], &token, now);
});
