//! ab-routing through the real `dist/ab-routing.wasm` in meshward-host.
//!
//! Keys are generated here (sequential ids and a seeded splitmix64 stream), so every run sees
//! the same inputs; the harness clock is fixed, so cookies are reproducible too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshward_host::{
    Action, FailPolicy, HostEngine, HttpOutcome, LoadError, Module, Plugin, PluginSpec, Request,
    Response, SharedState, StreamInfo,
};

const SIGNING: &str = "integration-signing-key-0123456789";
const OLD_KEY: &str = "integration-retired-key-0123456789";
const SECRET: &str = "qa-secret-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module() -> Module {
    let path = repo().join("dist/ab-routing.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

fn spec(config: &str, workers: usize) -> PluginSpec {
    PluginSpec::new("ab-routing", "ab_routing")
        .with_vm_id("meshward_ab_routing")
        .with_configuration(config)
        .with_workers(workers)
        .with_fail_policy(FailPolicy::FailClosed)
}

fn load_spec(spec: PluginSpec) -> Plugin {
    match Plugin::load(
        HostEngine::global().unwrap(),
        &module(),
        spec,
        &SharedState::new(),
    ) {
        Ok(plugin) => plugin,
        Err(e) => panic!("config rejected: {e:?}"),
    }
}

fn load(config: &str, workers: usize) -> Plugin {
    load_spec(spec(config, workers))
}

fn config(weights: &[(&str, u64)], extra: &str) -> String {
    let variants: Vec<String> = weights
        .iter()
        .map(|(n, w)| format!(r#"{{"name": "{n}", "weight": {w}}}"#))
        .collect();
    format!(
        r#"{{"experiments": [{{"name": "checkout", "header": "x-variant",
            "variants": [{}], "key": {{"header": "x-user-id"}}{extra}}}],
          "cookieKeys": {{"signing": "{SIGNING}", "verification": ["{OLD_KEY}"]}},
          "override": {{"secret": "{SECRET}"}}}}"#,
        variants.join(", ")
    )
}

const STICKY: &str = r#", "sticky": {"maxAge": "1h"}, "responseHeader": "x-variant""#;

fn send_on(plugin: &mut Plugin, worker: usize, request: Request) -> HttpOutcome {
    let out = plugin
        .http_request(worker, request, Response::new(200))
        .unwrap();
    assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
    assert!(
        matches!(out.request_action, Action::Continue),
        "{:?}",
        out.request_action
    );
    out
}

fn user(id: &str) -> Request {
    Request::get("/shop", "example.com").with_header("x-user-id", id)
}

fn variant(out: &HttpOutcome) -> Option<String> {
    out.request_headers_after
        .as_ref()
        .and_then(|h| h.get("x-variant"))
        .map(str::to_owned)
}

fn set_cookie(out: &HttpOutcome) -> Option<String> {
    out.response
        .headers
        .get("set-cookie")
        .map(|c| c.split(';').next().unwrap().to_owned())
}

/// splitmix64: a reproducible stream of random keys (test input only).
struct Keys(u64);

impl Iterator for Keys {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Some(format!("{:016x}", z ^ (z >> 31)))
    }
}

fn shares(
    plugin: &mut Plugin,
    keys: impl Iterator<Item = String>,
) -> (usize, BTreeMap<String, usize>) {
    let mut counts = BTreeMap::new();
    let mut n = 0;
    for key in keys {
        let out = send_on(plugin, n % plugin.workers(), user(&key));
        *counts.entry(variant(&out).unwrap()).or_default() += 1;
        n += 1;
    }
    (n, counts)
}

#[test]
fn shares_match_weights_within_one_point_over_100k_keys() {
    let weights = [("v1", 10), ("v2", 30), ("v3", 60)];
    let mut plugin = load(&config(&weights, ""), 2);
    let sequential = (0..50_000).map(|i| i.to_string());
    let random = Keys(42).take(50_000);
    for (name, keys) in [
        (
            "sequential",
            Box::new(sequential) as Box<dyn Iterator<Item = String>>,
        ),
        ("random", Box::new(random)),
    ] {
        let (n, counts) = shares(&mut plugin, keys);
        for (v, w) in weights {
            let share = counts.get(v).copied().unwrap_or(0) as f64 / n as f64;
            let want = w as f64 / 100.0;
            assert!(
                (share - want).abs() < 0.01,
                "{name}: {v} got {share:.4}, want {want} ({counts:?})"
            );
        }
    }
}

#[test]
fn same_key_same_variant_on_every_worker_and_plugin_instance() {
    let cfg = config(&[("v1", 50), ("v2", 50)], "");
    let mut a = load(&cfg, 4);
    let mut b = load(&cfg, 1);
    for key in Keys(7).take(200) {
        let reference = variant(&send_on(&mut b, 0, user(&key)));
        for worker in 0..4 {
            assert_eq!(variant(&send_on(&mut a, worker, user(&key))), reference);
        }
    }
}

#[test]
fn a_ramp_moves_only_users_towards_the_ramped_variant() {
    let mut before = load(&config(&[("v1", 90), ("v2", 10)], ""), 1);
    let mut after = load(&config(&[("v1", 80), ("v2", 20)], ""), 1);
    let mut moved = 0;
    let n = 20_000;
    for i in 0..n {
        let key = format!("user-{i}");
        let old = variant(&send_on(&mut before, 0, user(&key))).unwrap();
        let new = variant(&send_on(&mut after, 0, user(&key))).unwrap();
        if old != new {
            assert_eq!((old.as_str(), new.as_str()), ("v1", "v2"), "{key}");
            moved += 1;
        }
    }
    let share = f64::from(moved) / f64::from(n);
    assert!((share - 0.10).abs() < 0.01, "{share}");
}

#[test]
fn client_headers_and_forged_cookies_do_not_change_the_variant() {
    let mut plugin = load(&config(&[("v1", 50), ("v2", 50)], STICKY), 2);
    for key in Keys(9).take(100) {
        let honest = send_on(&mut plugin, 0, user(&key));
        let assigned = variant(&honest).unwrap();
        let other = if assigned == "v1" { "v2" } else { "v1" };
        let cookie = set_cookie(&honest).unwrap();
        assert!(cookie.starts_with(&format!("ab_checkout={assigned}.")));
        let forged = cookie.replacen(&assigned, other, 1);
        let out = send_on(
            &mut plugin,
            1,
            user(&key)
                .with_header("x-variant", other)
                .with_header("cookie", &forged),
        );
        assert_eq!(variant(&out).unwrap(), assigned, "{key}");
        // The wrong secret does not unlock the override either, and never goes upstream.
        let out = send_on(
            &mut plugin,
            1,
            user(&key)
                .with_header("x-variant", other)
                .with_header("x-meshward-ab-secret", "qa-secret-0123456780"),
        );
        assert_eq!(variant(&out).unwrap(), assigned);
        let upstream = out.request_headers_after.as_ref().unwrap();
        assert!(!upstream.contains("x-meshward-ab-secret"));
    }
    let rejected = plugin_metric(
        &send_on(&mut plugin, 0, user("x")),
        "experiment=.=checkout;.;result=.=bad_signature;.;meshward_ab_routing_cookies_total",
    );
    assert_eq!(rejected, 100);
}

fn plugin_metric(out: &HttpOutcome, name: &str) -> u64 {
    let full = format!("wasmcustom.{name}");
    match out.metrics.get(&full) {
        Some(metric) => metric.value,
        None => panic!("{full} not in {:?}", out.metrics.keys()),
    }
}

#[test]
fn the_override_needs_the_secret() {
    let mut plugin = load(&config(&[("v1", 100), ("v2", 0)], ""), 1);
    let out = send_on(
        &mut plugin,
        0,
        user("alice")
            .with_header("x-variant", "v2")
            .with_header("x-meshward-ab-secret", SECRET),
    );
    // v2 has weight 0: not live, so even QA cannot force it.
    assert_eq!(variant(&out).as_deref(), Some("v1"));
    let mut plugin = load(&config(&[("v1", 99), ("v2", 1)], ""), 1);
    let forced = send_on(
        &mut plugin,
        0,
        user("alice")
            .with_header("x-variant", "v2")
            .with_header("x-meshward-ab-secret", SECRET),
    );
    assert_eq!(variant(&forced).as_deref(), Some("v2"));
    assert!(
        !forced
            .request_headers_after
            .as_ref()
            .unwrap()
            .contains("x-meshward-ab-secret")
    );
    let without = send_on(&mut plugin, 0, user("alice").with_header("x-variant", "v2"));
    assert_eq!(variant(&without).as_deref(), Some("v1"));
}

#[test]
fn sticky_cookie_survives_a_changing_key_and_key_rotation() {
    // Key: the request id (changes every request); the cookie keeps the variant.
    let cfg = config(&[("v1", 50), ("v2", 50)], STICKY).replace(
        r#""key": {"header": "x-user-id"}"#,
        r#""key": {"header": "x-session"}"#,
    );
    let mut plugin = load(&cfg, 2);
    let first = send_on(
        &mut plugin,
        0,
        Request::get("/", "example.com").with_header("x-request-id", "r-0"),
    );
    let assigned = variant(&first).unwrap();
    let cookie = set_cookie(&first).unwrap();
    assert_eq!(
        first.response.headers.get("x-variant"),
        Some(assigned.as_str())
    );
    for i in 1..50 {
        let out = send_on(
            &mut plugin,
            i % 2,
            Request::get("/", "example.com")
                .with_header("x-request-id", format!("r-{i}"))
                .with_header("cookie", format!("other=1; {cookie}")),
        );
        assert_eq!(variant(&out).unwrap(), assigned);
        assert_eq!(set_cookie(&out), None, "a valid cookie is not re-issued");
    }
    // Rotation: the old signing key moves to `verification`; its cookies still verify.
    let rotated = cfg.replace(
        &format!(r#""signing": "{SIGNING}", "verification": ["{OLD_KEY}"]"#),
        &format!(r#""signing": "{OLD_KEY}", "verification": ["{SIGNING}"]"#),
    );
    let mut plugin = load(&rotated, 1);
    let out = send_on(
        &mut plugin,
        0,
        Request::get("/", "example.com").with_header("cookie", cookie.clone()),
    );
    assert_eq!(variant(&out).unwrap(), assigned);
    // Retired: the key is gone; the cookie is ignored and a new one issued.
    let retired = cfg.replace(
        &format!(r#""signing": "{SIGNING}", "verification": ["{OLD_KEY}"]"#),
        &format!(r#""signing": "{OLD_KEY}""#),
    );
    let mut plugin = load(&retired, 1);
    let out = send_on(
        &mut plugin,
        0,
        Request::get("/", "example.com")
            .with_header("x-request-id", "r-x")
            .with_header("cookie", cookie),
    );
    assert!(set_cookie(&out).is_some());
}

#[test]
fn garbage_cookies_never_trap() {
    let mut plugin = load(&config(&[("v1", 50), ("v2", 50)], STICKY), 1);
    let long = "a".repeat(10_000);
    let garbage = [
        "ab_checkout=",
        "ab_checkout",
        "ab_checkout=v1",
        "ab_checkout=v1..",
        "ab_checkout=...",
        "ab_checkout=v9.1.AAAAAAAAAAAAAAAAAAAAAA",
        "ab_checkout=v1.99999999999999999999999.AAAAAAAAAAAAAAAAAAAAAA",
        "ab_checkout=\"\"",
        "=;=;;,,ab_checkout==",
        "ab_checkout=\u{00e9}\u{00e9}.1.\u{00ff}",
        &format!("ab_checkout={long}"),
    ];
    for cookie in garbage {
        let out = send_on(&mut plugin, 0, user("alice").with_header("cookie", cookie));
        assert!(variant(&out).is_some(), "{cookie}");
        assert!(set_cookie(&out).is_some(), "{cookie}");
    }
}

#[test]
fn route_cache_is_cleared_with_and_without_implicit_clearing() {
    let cfg = config(&[("v1", 50), ("v2", 50)], "");
    for legacy in [false, true] {
        let mut spec = spec(&cfg, 1);
        spec.legacy_clear_route_cache_on_header_mutation = legacy;
        let mut plugin = load_spec(spec);
        let out = send_on(&mut plugin, 0, user("alice"));
        assert!(out.route_cache_cleared, "legacy {legacy}");
        // Not taking part (no key, no fallback): the client's header is removed, and the route
        // cache cleared so a route chosen on it is dropped.
        let out = send_on(
            &mut plugin,
            0,
            Request::get("/", "example.com").with_header("x-variant", "v2"),
        );
        assert_eq!(variant(&out), None);
        assert!(out.route_cache_cleared);
    }
}

#[test]
fn targeting_by_client_cidr_and_time_window() {
    let cfg = config(
        &[("v1", 50), ("v2", 50)],
        r#", "clientCidrs": ["10.0.0.0/8"], "endTime": 4102444800"#,
    );
    let mut plugin = load(&cfg, 1);
    let inside = StreamInfo {
        source_address: "10.1.2.3:5555".to_owned(),
        ..StreamInfo::default()
    };
    let out = send_on(&mut plugin, 0, user("alice").with_info(inside));
    assert!(variant(&out).is_some());
    let out = send_on(&mut plugin, 0, user("alice").with_header("x-variant", "v2"));
    assert_eq!(variant(&out), None);
    let ended = config(&[("v1", 50), ("v2", 50)], r#", "endTime": 1000"#);
    let mut plugin = load(&ended, 1);
    assert_eq!(variant(&send_on(&mut plugin, 0, user("alice"))), None);
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let cases = [
        (
            config(&[("v1", 0), ("v2", 0)], ""),
            "experiments[0].variants: weights must sum to more than 0",
        ),
        (
            config(&[], ""),
            "experiments[0].variants: must list at least one variant",
        ),
        (
            config(&[("v1", 1), ("v1", 1)], ""),
            "experiments[0].variants[1].name: duplicate variant",
        ),
        (
            config(&[("v1", 1)], r#", "colour": "blue""#),
            "experiments[0].colour: unknown field",
        ),
    ];
    for (cfg, want) in cases {
        let prefix = format!("ab-routing: invalid plugin config: {want}");
        match Plugin::load(
            HostEngine::global().unwrap(),
            &module(),
            spec(&cfg, 1),
            &SharedState::new(),
        ) {
            Ok(_) => panic!("accepted: {cfg}"),
            Err(LoadError::Rejected { logs, .. }) => assert!(
                logs.iter().any(|l| l.message.starts_with(&prefix)),
                "want {prefix:?} in {logs:?}"
            ),
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn committed_schema() -> serde_json::Value {
    let path = repo().join("filters/ab-routing/config.schema.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_committed_schema_is_current_and_accepts_the_bench_config() {
    assert!(
        committed_schema() == meshward_filter_ab_routing::config::schema(),
        "filters/ab-routing/config.schema.json is stale: run `make schemas` and commit it"
    );
    let validator = jsonschema::validator_for(&committed_schema()).unwrap();
    let bench =
        std::fs::read_to_string(repo().join("tests/fixtures/ab-routing/bench.json")).unwrap();
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    assert!(validator.is_valid(&bench));
    let typo: serde_json::Value = serde_json::from_str(
        r#"{"experiments": [{"name": "e", "header": "x", "variants": [], "wieght": 1}]}"#,
    )
    .unwrap();
    assert!(!validator.is_valid(&typo));
    let ours: serde_json::Value = serde_json::from_str(&config(&[("v1", 1)], STICKY)).unwrap();
    assert!(validator.is_valid(&ours));
}
