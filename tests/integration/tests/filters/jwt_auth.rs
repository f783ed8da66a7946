//! jwt-auth through the real `dist/jwt-auth.wasm` in meshward-host.
//!
//! Tokens are minted here with `jsonwebtoken` (an implementation independent of the filter's
//! `jwt-simple`) from the keys in `tests/fixtures/jwt-auth` (`gen_keys.py`); hand-made tokens
//! cover what no library would sign (`alg: none`, bad JSON, duplicate claims). The clock is the
//! harness's fixed `FakeClock` (wall time 2026-01-01T00:00:00Z).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use meshward_host::{
    Action, FailPolicy, HostEngine, HttpOutcome, LoadError, Module, Plugin, PluginSpec, Request,
    Response, SharedState,
};
use serde_json::{Value, json};

/// The harness's fixed wall clock, in seconds.
const NOW: u64 = 1_767_225_600;
const ISSUER: &str = "https://issuer.example";
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/jwt-auth")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

fn module() -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/jwt-auth.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

/// The public keys of the fixture set plus the HMAC secret.
fn jwks() -> String {
    let mut set: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.push(json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode(HMAC_SECRET)}));
    set.to_string()
}

fn provider(extra: &Value) -> Value {
    let mut p = json!({
        "issuer": ISSUER,
        "audiences": ["api"],
        "local_jwks": {"inline_string": jwks()},
        "claim_to_headers": [
            {"header_name": "x-sub", "claim_name": "sub"},
            {"header_name": "x-roles", "claim_name": "realm.roles"}
        ],
        "forward_payload_header": "x-jwt-payload"
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn config_with(provider: &Value) -> String {
    json!({
        "providers": {"main": provider},
        "rules": [
            {"match": {"prefix": "/public"}},
            {"match": {"prefix": "/optional"}, "requires": {"allow_missing": {}}},
            {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}
        ]
    })
    .to_string()
}

pub(crate) fn config() -> String {
    config_with(&provider(&json!({})))
}

/// jwt-auth loaded with `config` on fresh shared state (one worker).
fn load_result(config: &str) -> Result<Plugin, LoadError> {
    let spec = PluginSpec::new("jwt-auth", "jwt_auth")
        .with_vm_id("meshward_jwt_auth")
        .with_configuration(config)
        .with_fail_policy(FailPolicy::FailClosed);
    Plugin::load(
        HostEngine::global().unwrap(),
        &module(),
        spec,
        &SharedState::new(),
    )
}

pub(crate) fn load(config: &str) -> Plugin {
    match load_result(config) {
        Ok(plugin) => plugin,
        Err(e) => panic!("config rejected: {e:?}"),
    }
}

fn try_load(config: &str) -> bool {
    load_result(config).is_ok()
}

/// The configure-time error the filter logged for `config` (panics if it loads).
pub(crate) fn rejection(config: &str) -> String {
    match load_result(config) {
        Ok(_) => panic!("accepted: {config:.300}"),
        Err(LoadError::Rejected { logs, .. }) => logs
            .iter()
            .map(|l| l.message.as_str())
            .find(|m| m.contains("invalid plugin config"))
            .unwrap_or_default()
            .to_owned(),
        Err(e) => panic!("not a configuration refusal: {e:?}"),
    }
}

pub(crate) fn claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "alice", "aud": "api",
        "iat": NOW - 10, "exp": NOW + 3600,
        "realm": {"roles": ["admin", "dev"]}
    })
}

fn key_for(alg: Algorithm) -> (EncodingKey, &'static str) {
    let pem = |name: &str| fixture(name).into_bytes();
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => (
            EncodingKey::from_rsa_pem(&pem("rsa-2048.pem")).unwrap(),
            "rsa-2048",
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&pem("ec-p256.pem")).unwrap(),
            "ec-p256",
        ),
        Algorithm::ES384 => (
            EncodingKey::from_ec_pem(&pem("ec-p384.pem")).unwrap(),
            "ec-p384",
        ),
        Algorithm::EdDSA => (
            EncodingKey::from_ed_pem(&pem("ed25519.pem")).unwrap(),
            "ed25519",
        ),
        _ => (EncodingKey::from_secret(HMAC_SECRET).unwrap(), "hmac"),
    }
}

pub(crate) fn mint(alg: Algorithm, claims: &Value, kid: Option<&str>) -> String {
    let (key, default_kid) = key_for(alg);
    let mut header = Header::new(alg);
    header.kid = Some(kid.unwrap_or(default_kid).to_owned());
    encode(&header, claims, &key).unwrap()
}

fn token(alg: Algorithm) -> String {
    mint(alg, &claims(), None)
}

/// A token from raw header/payload JSON text and a signature (none verifies).
fn handmade(header: &str, payload: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(b"not-a-signature")
    )
}

fn send(plugin: &mut Plugin, request: Request) -> HttpOutcome {
    let out = plugin.http_request(0, request, Response::new(200)).unwrap();
    assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
    out
}

fn bearer(token: &str) -> Request {
    Request::get("/api", "example.com").with_header("authorization", format!("Bearer {token}"))
}

fn upstream(out: &HttpOutcome, name: &str) -> Option<String> {
    out.request_headers_after
        .as_ref()
        .and_then(|h| h.get(name).map(str::to_owned))
}

#[track_caller]
fn assert_allowed(out: &HttpOutcome) {
    assert!(
        matches!(out.request_action, Action::Continue) && out.local_reply.is_none(),
        "denied: {:?}",
        out.local_reply
    );
}

/// Checks the reply: status, reason in the body, `details`, and `WWW-Authenticate`.
#[track_caller]
fn assert_denied(out: &HttpOutcome, status: u32, reason: &str) {
    let Some((_, reply)) = out.local_reply.as_ref() else {
        panic!("no local reply, expected {status} {reason}");
    };
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!((reply.status, body.as_ref()), (status, reason), "{reply:?}");
    assert_eq!(
        reply.details,
        format!("jwt_authn_access_denied{{{}}}", reason.replace(' ', "_"))
    );
    let www = reply.headers.get("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer realm=\"http://example.com/"),
        "{www}"
    );
    if reason == "Jwt is missing" {
        assert!(!www.contains("error="), "{www}");
    } else {
        assert!(
            www.ends_with(&format!(
                ", error=\"invalid_token\", error_description=\"{reason}\""
            )),
            "{www}"
        );
    }
    assert!(!out.upstream_called);
}

#[test]
fn every_algorithm_verifies_and_writes_claims() {
    let mut plugin = load(&config());
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ] {
        let token = token(alg);
        let out = send(
            &mut plugin,
            bearer(&token)
                .with_header("x-sub", "mallory")
                .with_header("x-roles", "root"),
        );
        assert_allowed(&out);
        assert_eq!(upstream(&out, "x-sub").as_deref(), Some("alice"), "{alg:?}");
        assert_eq!(upstream(&out, "x-roles").as_deref(), Some("admin,dev"));
        assert_eq!(
            upstream(&out, "x-jwt-payload").as_deref(),
            token.split('.').nth(1)
        );
        assert_eq!(upstream(&out, "authorization"), None, "token stripped");
        assert!(out.route_cache_cleared);
        // The cached path gives the same answer.
        let again = send(&mut plugin, bearer(&token));
        assert_allowed(&again);
        assert_eq!(upstream(&again, "x-sub").as_deref(), Some("alice"));
    }
    let metrics = plugin.shared().metrics();
    let allowed = metrics
        .iter()
        .find(|(k, _)| k.contains("provider=.=main;.;meshward_jwt_auth_allowed_total"))
        .map(|(_, v)| format!("{v:?}"));
    assert!(allowed.unwrap().contains("24"), "{metrics:?}");
}

#[test]
fn missing_and_spoofed_headers() {
    let mut plugin = load(&config());
    let out = send(&mut plugin, Request::get("/api", "example.com"));
    assert_denied(&out, 401, "Jwt is missing");
    // No requirement: passes, but spoofed identity headers never reach the upstream.
    let out = send(
        &mut plugin,
        Request::get("/public/x", "example.com").with_header("x-sub", "mallory"),
    );
    assert_allowed(&out);
    assert_eq!(upstream(&out, "x-sub"), None);
    // allow_missing: missing passes, a bad token does not.
    let out = send(&mut plugin, Request::get("/optional", "example.com"));
    assert_allowed(&out);
    let mut expired = claims();
    expired["exp"] = json!(NOW - 3600);
    let req = Request::get("/optional", "example.com").with_header(
        "authorization",
        format!("Bearer {}", mint(Algorithm::ES256, &expired, None)),
    );
    assert_denied(&send(&mut plugin, req), 401, "Jwt is expired");
}

#[test]
fn bad_tokens_get_the_right_reason() {
    let mut plugin = load(&config());
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        c
    };
    let rsa_public_as_hmac = {
        let jwks: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
        let n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
        let header = Header {
            kid: Some("rsa-2048".to_owned()),
            ..Header::new(Algorithm::HS256)
        };
        encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(n.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let es256 = token(Algorithm::ES256);
    let mut parts: Vec<&str> = es256.split('.').collect();
    // A valid signature, but over other claims.
    let other_sig = mint(Algorithm::ES256, &with(&|c| c["sub"] = json!("bob")), None);
    let bad_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        other_sig.split('.').nth(2).unwrap()
    );
    parts[2] = "@@@";
    let bad_b64 = parts.join(".");
    let nested = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let ok_header = r#"{"alg":"ES256","kid":"ec-p256","typ":"JWT"}"#;
    let cases: Vec<(String, u32, &str)> = vec![
        (
            "abc.def".to_owned(),
            401,
            "Jwt is not in the form of Header.Payload.Signature",
        ),
        (
            format!("{es256}.x"),
            401,
            "Jwt is not in the form of Header.Payload.Signature",
        ),
        (
            bad_b64,
            401,
            "Jwt is not in the form of Header.Payload.Signature",
        ),
        ("a".repeat(9000), 401, "Jwt is too large"),
        (
            handmade(r#"{"alg":"none"}"#, &claims().to_string()),
            401,
            "Jwt is not signed",
        ),
        (
            handmade(
                ok_header,
                &format!(r#"{{"exp":{},"deep":{nested}}}"#, NOW + 60),
            ),
            401,
            "Jwt JSON is nested too deeply",
        ),
        (
            handmade(ok_header, &format!(r#"{{"exp":{0},"exp":{0}}}"#, NOW + 60)),
            401,
            "Jwt has a duplicate claim",
        ),
        (
            handmade(r#"{"alg":"ES256","crit":["exp"]}"#, &claims().to_string()),
            401,
            "Jwt has an unsupported critical header",
        ),
        (
            mint(
                Algorithm::ES256,
                &with(&|c| c["exp"] = json!("tomorrow")),
                None,
            ),
            401,
            "Jwt claim has a wrong type",
        ),
        (
            mint(Algorithm::ES256, &with(&|c| c["aud"] = json!(7)), None),
            401,
            "Jwt claim has a wrong type",
        ),
        (
            mint(
                Algorithm::ES256,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                None,
            ),
            401,
            "Jwt has no expiration",
        ),
        (
            mint(
                Algorithm::ES256,
                &with(&|c| c["exp"] = json!(NOW - 61)),
                None,
            ),
            401,
            "Jwt is expired",
        ),
        (
            mint(
                Algorithm::ES256,
                &with(&|c| c["nbf"] = json!(NOW + 61)),
                None,
            ),
            401,
            "Jwt not yet valid",
        ),
        (
            mint(
                Algorithm::ES256,
                &with(&|c| c["iss"] = json!("https://evil.example")),
                None,
            ),
            401,
            "Jwt issuer is not configured",
        ),
        (
            mint(
                Algorithm::ES256,
                &with(&|c| c["aud"] = json!(["other"])),
                None,
            ),
            403,
            "Audiences in Jwt are not allowed",
        ),
        (
            mint(Algorithm::ES256, &claims(), Some("unknown")),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        // An ES256 token naming the RSA key: no key of that kid has that alg, no fallback.
        (
            mint(Algorithm::ES256, &claims(), Some("rsa-2048")),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            rsa_public_as_hmac,
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (bad_sig, 401, "Jwt verification fails"),
    ];
    for (token, status, reason) in cases {
        let out = send(&mut plugin, bearer(&token));
        assert_denied(&out, status, reason);
    }
    // Within the leeway (60 s): accepted.
    let out = send(
        &mut plugin,
        bearer(&mint(
            Algorithm::ES256,
            &with(&|c| c["exp"] = json!(NOW - 59)),
            None,
        )),
    );
    assert_allowed(&out);
    // Never a token in the logs.
    let token = token(Algorithm::ES256);
    for entry in plugin.logs() {
        assert!(!entry.message.contains(&token[..20]), "{}", entry.message);
    }
}

#[test]
fn ambiguity_is_refused() {
    let mut plugin = load(&config());
    let t = token(Algorithm::ES256);
    let two_headers = bearer(&t).with_header("authorization", format!("Bearer {t}"));
    assert_denied(
        &send(&mut plugin, two_headers),
        401,
        "More than one Jwt in the request",
    );
    let header_and_param = Request::get(&format!("/api?access_token={t}"), "example.com")
        .with_header("authorization", format!("Bearer {t}"));
    assert_denied(
        &send(&mut plugin, header_and_param),
        401,
        "More than one Jwt in the request",
    );
    let param = Request::get(&format!("/api?access_token={t}"), "example.com");
    assert_allowed(&send(&mut plugin, param));
}

#[test]
fn algorithm_allow_list_and_forward() {
    let mut plugin = load(&config_with(&provider(&json!({
        "allowed_algorithms": ["ES256"],
        "forward": true
    }))));
    let t = token(Algorithm::ES256);
    let out = send(&mut plugin, bearer(&t));
    assert_allowed(&out);
    assert_eq!(upstream(&out, "authorization"), Some(format!("Bearer {t}")));
    assert_denied(
        &send(&mut plugin, bearer(&token(Algorithm::RS256))),
        401,
        "Jwt algorithm is not allowed",
    );
}

#[test]
fn configuration_errors_are_refused() {
    let weak = fixture("weak-jwks.json");
    for bad in [
        config_with(&provider(&json!({"local_jwks": {"inline_string": weak}}))),
        config_with(&provider(&json!({"local_jwks": {"inline_string": "{\"keys\": []}"}}))),
        config_with(&provider(&json!({"local_jwks": {"inline_string": "not json"}}))),
        config_with(&provider(&json!({"remote_jwks": {}}))),
        config_with(&provider(&json!({"clock_skew_seconds": 3600}))),
        config_with(&provider(&json!({"allowed_algorithms": ["none"]}))),
        json!({"providers": {"a": provider(&json!({}))}, "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "b"}}]}).to_string(),
    ] {
        assert!(!try_load(&bad), "accepted: {bad:.200}");
    }
    // Both protobuf-JSON spellings.
    let camel = json!({
        "providers": {"p": {"localJwks": {"inlineString": jwks()}, "fromHeaders": [{"name": "x-token", "valuePrefix": ""}]}},
        "bypassCorsPreflight": true,
        "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "p"}}]
    });
    let mut plugin = load(&camel.to_string());
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    let req =
        Request::get("/x", "example.com").with_header("x-token", mint(Algorithm::EdDSA, &c, None));
    assert_allowed(&send(&mut plugin, req));
    let preflight = Request::new("OPTIONS", "/x", "example.com")
        .with_header("origin", "https://a.example")
        .with_header("access-control-request-method", "POST");
    assert_allowed(&send(&mut plugin, preflight));
}

#[test]
fn requirements_locations_and_metrics() {
    let config = json!({
        "providers": {
            "ec": provider(&json!({"allowed_algorithms": ["ES256"]})),
            "ed": {
                "issuer": ISSUER,
                "local_jwks": {"inline_string": jwks()},
                "allowed_algorithms": ["EdDSA"],
                "from_cookies": ["session"]
            }
        },
        "rules": [
            {"match": {"prefix": "/any"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "ec"}, {"provider_name": "ed"}]}}},
            {"match": {"prefix": "/aud"}, "requires": {"provider_and_audiences": {
                "provider_name": "ec", "audiences": ["admin"]}}},
            {"match": {"prefix": "/soft"}, "requires": {"allow_missing_or_failed": {}}}
        ]
    })
    .to_string();
    let mut plugin = load(&config);
    // requires_any: either provider's token, from its own location.
    let ec = token(Algorithm::ES256);
    let ed = token(Algorithm::EdDSA);
    let out = send(
        &mut plugin,
        Request::get("/any", "example.com").with_header("cookie", format!("a=b; session={ed}")),
    );
    assert_allowed(&out);
    assert_eq!(upstream(&out, "x-sub"), None, "ed writes no claims");
    let out = send(
        &mut plugin,
        Request::get("/any", "example.com").with_header("authorization", format!("Bearer {ec}")),
    );
    assert_allowed(&out);
    assert_eq!(upstream(&out, "x-sub").as_deref(), Some("alice"));
    // An EdDSA token in the header: `ec` refuses its algorithm, `ed` does not read headers.
    let out = send(
        &mut plugin,
        Request::get("/any", "example.com").with_header("authorization", format!("Bearer {ed}")),
    );
    assert_denied(&out, 401, "Jwt algorithm is not allowed");
    // Both locations filled: refused.
    let out = send(
        &mut plugin,
        Request::get("/any", "example.com")
            .with_header("authorization", format!("Bearer {ec}"))
            .with_header("cookie", format!("session={ed}")),
    );
    assert_denied(&out, 401, "More than one Jwt in the request");
    // provider_and_audiences replaces the provider's audiences.
    let out = send(
        &mut plugin,
        Request::get("/aud", "example.com").with_header("authorization", format!("Bearer {ec}")),
    );
    assert_denied(&out, 403, "Audiences in Jwt are not allowed");
    // allow_missing_or_failed: a bad token passes, but it is stripped and writes nothing.
    let out = send(
        &mut plugin,
        Request::get("/soft", "example.com")
            .with_header("authorization", "Bearer not.a.jwt")
            .with_header("x-sub", "mallory"),
    );
    assert_allowed(&out);
    assert_eq!(upstream(&out, "x-sub"), None);
    assert_eq!(upstream(&out, "authorization"), None);
    let metrics = format!("{:?}", plugin.shared().metrics());
    for series in [
        "reason=.=audience;.;provider=.=ec;.;meshward_jwt_auth_denied_total",
        "reason=.=multiple_tokens;.;provider=.=none;.;meshward_jwt_auth_denied_total",
        "provider=.=ed;.;meshward_jwt_auth_allowed_total",
        "result=.=hit;.;meshward_jwt_auth_cache_total",
    ] {
        assert!(metrics.contains(series), "{series} missing in {metrics}");
    }
}

#[test]
fn the_committed_schema_is_current_and_accepts_what_the_filter_accepts() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../filters/jwt-auth/config.schema.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        committed == meshward_filter_jwt_auth::config::schema(),
        "filters/jwt-auth/config.schema.json is stale: run `make schemas` and commit it"
    );
    let validator = jsonschema::validator_for(&committed).unwrap();
    let bench: Value = serde_json::from_str(&fixture("bench.json")).unwrap();
    for config in [bench, serde_json::from_str(&config()).unwrap()] {
        let problems: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
    }
    assert!(!validator.is_valid(&json!({"providers": {"p": {"remote_jwks": {"cache": "1s"}}}})));
    let remote: Value = serde_json::from_str(&super::jwt_remote::config(&json!({}))).unwrap();
    let problems: Vec<String> = validator
        .iter_errors(&remote)
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn requirement_map_by_name_and_strip_failure_response() {
    let config = json!({
        "providers": {"main": provider(&json!({}))},
        "requirement_map": {
            "user": {"provider_name": "main"},
            "optional": {"allow_missing": {}}
        },
        "strip_failure_response": true,
        "rules": [
            {"match": {"prefix": "/open"}, "requirement_name": "optional"},
            {"match": {"prefix": "/"}, "requirementName": "user"}
        ]
    });
    let mut plugin = load(&config.to_string());
    assert_allowed(&send(&mut plugin, Request::get("/open/x", "example.com")));
    assert_allowed(&send(&mut plugin, bearer(&token(Algorithm::ES256))));
    let out = send(&mut plugin, Request::get("/api", "example.com"));
    let (_, reply) = out.local_reply.as_ref().unwrap();
    assert_eq!(reply.status, 401);
    assert!(reply.body.is_empty(), "stripped body: {:?}", reply.body);
    assert_eq!(reply.details, "jwt_authn_access_denied{Jwt_is_missing}");
    assert!(reply.headers.get("www-authenticate").is_some());
    for bad in [
        json!({"providers": {"main": provider(&json!({}))},
               "rules": [{"match": {"prefix": "/"}, "requirement_name": "nope"}]}),
        json!({"providers": {"main": provider(&json!({}))},
               "requirement_map": {"user": {"provider_name": "main"}},
               "rules": [{"match": {"prefix": "/"}, "requirement_name": "user", "requires": {"allow_missing": {}}}]}),
        json!({"providers": {"main": provider(&json!({}))},
               "requirement_map": {"user": {"provider_name": "other"}}}),
    ] {
        assert!(!try_load(&bad.to_string()), "accepted: {bad}");
    }
}

#[test]
fn header_and_payload_in_metadata_with_space_delimited_claims() {
    let mut plugin = load(&config_with(&provider(&json!({
        "payload_in_metadata": "jwt_payload",
        "header_in_metadata": "jwt_header",
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope", "num", "absent"]}
    }))));
    let mut c = claims();
    c["scope"] = json!(" read  write admin");
    c["num"] = json!(7);
    c["perm"] = json!("not listed");
    let token = mint(Algorithm::ES256, &c, None);
    let segment = |i: usize| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let mut expected_payload = c.clone();
    expected_payload["scope"] = json!(["read", "write", "admin"]);
    // Fresh verification, then the cached one: the same metadata.
    for round in ["fresh", "cached"] {
        let out = send(&mut plugin, bearer(&token));
        assert_allowed(&out);
        let header: Value = serde_json::from_str(&out.property("jwt_header").unwrap()).unwrap();
        assert_eq!(header, segment(0), "{round}");
        assert_eq!(header["kid"], json!("ec-p256"));
        let payload: Value = serde_json::from_str(&out.property("jwt_payload").unwrap()).unwrap();
        assert_eq!(payload, expected_payload, "{round}");
        // Claim headers see the token's own claims.
        assert_eq!(upstream(&out, "x-roles").as_deref(), Some("admin,dev"));
    }
    // A refused token publishes nothing.
    let mut expired = c.clone();
    expired["exp"] = json!(NOW - 3600);
    let out = send(&mut plugin, bearer(&mint(Algorithm::ES256, &expired, None)));
    assert_denied(&out, 401, "Jwt is expired");
    assert!(out.properties_set.is_empty(), "{:?}", out.properties_set);

    // Without normalization the payload property is the token's own JSON, byte for byte.
    let mut plain = load(&config_with(&provider(
        &json!({"payload_in_metadata": "jwt_payload"}),
    )));
    let out = send(&mut plain, bearer(&token));
    assert_allowed(&out);
    let own = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    assert_eq!(
        out.property("jwt_payload").unwrap().as_bytes(),
        own.as_slice()
    );
    assert_eq!(out.property("jwt_header"), None);

    for (fields, expected) in [
        (
            json!({"normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]}}),
            "providers.main.normalizePayloadInMetadata: has no effect without payloadInMetadata",
        ),
        (
            json!({"payload_in_metadata": "p", "normalizePayloadInMetadata": {"spaceDelimitedClaims": ["scope", ""]}}),
            "providers.main.normalizePayloadInMetadata.spaceDelimitedClaims[1]: must not be empty",
        ),
        (
            json!({"payload_in_metadata": "p", "normalize_payload_in_metadata": {"space_delimited_claims": vec!["c"; 17]}}),
            "providers.main.normalizePayloadInMetadata.spaceDelimitedClaims: at most 16 claims",
        ),
        (
            json!({"payload_in_metadata": "p", "normalize_payload_in_metadata": {"scope": []}}),
            "unknown field `scope`",
        ),
        (
            json!({"header_in_metadata": "a b"}),
            "providers.main.headerInMetadata: must be 1 to 128 characters",
        ),
        (
            json!({"header_in_metadata": "same", "payload_in_metadata": "same"}),
            "providers.main.headerInMetadata: must differ from payloadInMetadata",
        ),
    ] {
        let error = rejection(&config_with(&provider(&fields)));
        assert!(error.contains(expected), "{fields}: {error}");
    }
}

/// Runs the `openssl` command line (an implementation independent of the filter's RustCrypto
/// decoders; `make test` installs it when missing) and returns its standard output.
fn openssl(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command line (Debian package openssl; `make test` installs it)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh private key (PKCS#8 PEM) from `openssl genpkey`.
fn generate(options: &[&str]) -> String {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(options);
    openssl(&args, None)
}

/// Its public key as `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo).
fn public_spki(private: &str) -> String {
    openssl(&["pkey", "-pubout"], Some(private))
}

fn pem_provider(pem: &str, extra: &Value) -> Value {
    let mut p = json!({"issuer": ISSUER, "local_jwks": {"inline_string": pem}});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn mint_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims(), key).unwrap()
}

/// A PEM key under test: its name, the public key PEM, and private keys signing tokens for it.
type PemCase = (&'static str, String, Vec<(Algorithm, EncodingKey)>);

#[test]
fn pem_public_keys_generated_by_openssl_verify_their_tokens() {
    let rsa = generate(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let rsa_key = EncodingKey::from_rsa_pem(rsa.as_bytes()).unwrap();
    let rsa_pkcs1 = openssl(&["rsa", "-RSAPublicKey_out"], Some(&rsa));
    assert!(rsa_pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    let p256 = generate(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let p384 = generate(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]);
    let ed25519 = generate(&["-algorithm", "ED25519"]);
    let cases: Vec<PemCase> = vec![
        (
            "RSA SubjectPublicKeyInfo",
            public_spki(&rsa),
            vec![
                (Algorithm::RS256, rsa_key.clone()),
                (Algorithm::RS512, rsa_key.clone()),
                (Algorithm::PS256, rsa_key.clone()),
            ],
        ),
        (
            "RSA PKCS#1",
            rsa_pkcs1,
            vec![
                (Algorithm::RS384, rsa_key.clone()),
                (Algorithm::PS384, rsa_key.clone()),
            ],
        ),
        (
            "P-256",
            public_spki(&p256),
            vec![(
                Algorithm::ES256,
                EncodingKey::from_ec_pem(p256.as_bytes()).unwrap(),
            )],
        ),
        (
            "P-384",
            public_spki(&p384),
            vec![(
                Algorithm::ES384,
                EncodingKey::from_ec_pem(p384.as_bytes()).unwrap(),
            )],
        ),
        (
            "Ed25519",
            public_spki(&ed25519),
            vec![(
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(ed25519.as_bytes()).unwrap(),
            )],
        ),
    ];
    let other_p256 = EncodingKey::from_ec_pem(fixture("ec-p256.pem").as_bytes()).unwrap();
    for (name, pem, keys) in cases {
        let mut plugin = load(&config_with(&pem_provider(&pem, &json!({}))));
        for (alg, key) in keys {
            // With or without a `kid`: a PEM key has none, and it is the provider's only key.
            for kid in [None, Some("any-kid")] {
                let out = send(&mut plugin, bearer(&mint_with(alg, &key, kid)));
                assert_allowed(&out);
            }
            // The key is bound to its type: an HMAC token "signed" with the PEM text finds no
            // key, and a token of the same type signed by another key fails its signature.
            let hs = EncodingKey::from_secret(pem.as_bytes()).unwrap();
            assert_denied(
                &send(&mut plugin, bearer(&mint_with(Algorithm::HS256, &hs, None))),
                401,
                "Jwks doesn't have key to match kid or alg from Jwt",
            );
        }
        if name == "P-256" {
            let forged = mint_with(Algorithm::ES256, &other_p256, None);
            assert_denied(
                &send(&mut plugin, bearer(&forged)),
                401,
                "Jwt verification fails",
            );
        }
    }
    // allowed_algorithms narrows a PEM key like a JWK.
    let mut only_ps = load(&config_with(&pem_provider(
        &public_spki(&rsa),
        &json!({"allowed_algorithms": ["PS256"]}),
    )));
    assert_allowed(&send(
        &mut only_ps,
        bearer(&mint_with(Algorithm::PS256, &rsa_key, None)),
    ));
    assert_denied(
        &send(
            &mut only_ps,
            bearer(&mint_with(Algorithm::RS256, &rsa_key, None)),
        ),
        401,
        "Jwt algorithm is not allowed",
    );
}

#[test]
fn bad_pem_keys_fail_configuration_naming_the_field() {
    let field = "providers.main.localJwks.inlineString: ";
    let rsa_1024 = generate(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]);
    let rsa_e3 = generate(&[
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-pkeyopt",
        "rsa_keygen_pubexp:3",
    ]);
    let p521 = generate(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"]);
    let x25519 = generate(&["-algorithm", "X25519"]);
    let ed25519 = generate(&["-algorithm", "ED25519"]);
    let certificate = openssl(
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "/dev/stdin",
            "-subj",
            "/CN=meshward",
            "-days",
            "1",
        ],
        Some(&ed25519),
    );
    let good = public_spki(&ed25519);
    let mut corrupted = good.clone();
    corrupted.replace_range(40..44, "!!!!");
    let truncated: String = good.lines().take(2).collect::<Vec<_>>().join("\n");
    let two_keys = format!("{good}{}", public_spki(&p521));
    for (pem, expected, extra) in [
        (
            public_spki(&rsa_1024),
            "RSA modulus of 1024 bits; at least 2048 required",
            json!({}),
        ),
        (public_spki(&rsa_e3), "is not 65537 (AQAB)", json!({})),
        (
            public_spki(&p521),
            "only P-256 and P-384 are supported",
            json!({}),
        ),
        (
            public_spki(&x25519),
            "RSA, EC P-256/P-384 and Ed25519 are supported",
            json!({}),
        ),
        (
            ed25519,
            "is private key material (`PRIVATE KEY`)",
            json!({}),
        ),
        (certificate, "is a PEM `CERTIFICATE`", json!({})),
        (corrupted, "is not one PEM public key", json!({})),
        (truncated, "is not one PEM public key", json!({})),
        (two_keys, "is not one PEM public key", json!({})),
        (
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n".to_owned(),
            "is not a DER SubjectPublicKeyInfo",
            json!({}),
        ),
        (
            good,
            "none of which allowedAlgorithms holds",
            json!({"allowed_algorithms": ["ES256"]}),
        ),
    ] {
        let error = rejection(&config_with(&pem_provider(&pem, &extra)));
        assert!(
            error.contains(field) && error.contains(expected),
            "{expected}: {error}"
        );
    }
}
