//! rate-limit through the real `dist/rate-limit.wasm` in meshward-host, on several worker VMs
//! sharing one `SharedState` (shared data is per process, as in Envoy) with its frozen
//! `FakeClock`; `SharedState::inject_cas_races` makes another worker's write land between a
//! filter's shared-data read and its compare-and-swap write.

use std::path::Path;
use std::time::{Duration, Instant};

use meshward_host::{
    Action, FailPolicy, FilterState, HeaderMap, HostEngine, HttpOutcome, LoadError, Module, Plugin,
    PluginSpec, Request, Response, SharedState, StreamInfo,
};

const VM_ID: &str = "meshward_rate_limit";
const WORKERS: usize = 4;

fn module() -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/rate-limit.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

fn spec(config: &str, workers: usize) -> PluginSpec {
    PluginSpec::new("rate-limit", "rate_limit")
        .with_vm_id(VM_ID)
        .with_configuration(config)
        .with_workers(workers)
        .with_fail_policy(FailPolicy::FailClosed)
}

fn load(config: &str, shared: &SharedState) -> Plugin {
    match Plugin::load(
        HostEngine::global().unwrap(),
        &module(),
        spec(config, WORKERS),
        shared,
    ) {
        Ok(plugin) => plugin,
        Err(e) => panic!("config {config} rejected: {e:?}"),
    }
}

fn from(peer: &str) -> Request {
    Request::get("/api", "example.com").with_info(StreamInfo {
        source_address: peer.to_owned(),
        ..StreamInfo::default()
    })
}

fn send(plugin: &mut Plugin, worker: usize, request: Request) -> HttpOutcome {
    let out = plugin
        .http_request(worker, request, Response::new(200))
        .unwrap();
    assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
    out
}

fn allowed(out: &HttpOutcome) -> bool {
    match &out.request_action {
        Action::Continue => true,
        Action::LocalReply(reply) => {
            assert_eq!(reply.details, "meshward_rate_limited", "{reply:?}");
            false
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// `n` requests from `request()`, round-robin over the workers; how many were admitted.
fn admitted(plugin: &mut Plugin, n: usize, request: impl Fn(usize) -> Request) -> usize {
    (0..n)
        .filter(|i| allowed(&send(plugin, i % WORKERS, request(*i))))
        .count()
}

fn counter(shared: &SharedState, rule: &str, outcome: &str) -> u64 {
    shared.metric_value(&format!(
        "rule=.={rule};.;outcome=.={outcome};.;meshward_rate_limit_requests_total"
    ))
}

const PER_IP: &str = r#"{"rules": [{"name": "ip", "key": {"type": "clientAddress"},
    "tokenBucket": {"maxTokens": 10, "tokensPerFill": 3, "fillInterval": "1s"}}],
    "response": {"rateLimitHeaders": "both"}}"#;

#[test]
fn exactly_max_tokens_across_four_workers_then_tokens_per_fill() {
    let shared = SharedState::new();
    let mut plugin = load(PER_IP, &shared);
    assert_eq!(admitted(&mut plugin, 40, |_| from("198.51.100.7:4000")), 10);
    assert_eq!(counter(&shared, "ip", "allowed"), 10);
    assert_eq!(counter(&shared, "ip", "limited"), 30);
    shared.clock().advance(Duration::from_secs(1));
    assert_eq!(admitted(&mut plugin, 40, |_| from("198.51.100.7:4000")), 3);
    // Another client has its own bucket.
    assert_eq!(admitted(&mut plugin, 12, |_| from("198.51.100.8:4000")), 10);
}

#[test]
fn exact_with_injected_cas_races() {
    let shared = SharedState::new();
    let mut plugin = load(PER_IP, &shared);
    // Before every request, up to three other workers' writes land between its read and its
    // CAS write (default maxRetries 8): it must read again each time and still charge once.
    let mut n = 0;
    for i in 0..40 {
        shared.inject_cas_races(VM_ID, "mwrl.", 1 + (i % 3) as u32);
        n += usize::from(allowed(&send(
            &mut plugin,
            i % WORKERS,
            from("198.51.100.7:4000"),
        )));
        shared.clear_cas_races();
    }
    assert_eq!(
        shared.cas_races_fired(),
        19,
        "1+2+3+… over the 10 charging writes"
    );
    assert_eq!(n, 10, "races fired: {}", shared.cas_races_fired());
    assert_eq!(counter(&shared, "ip", "contention_exhausted"), 0);
    shared.clock().advance(Duration::from_secs(1));
    let mut n = 0;
    for i in 0..40 {
        shared.inject_cas_races(VM_ID, "mwrl.", 2);
        n += usize::from(allowed(&send(
            &mut plugin,
            i % WORKERS,
            from("198.51.100.7:4000"),
        )));
        shared.clear_cas_races();
    }
    assert_eq!(n, 3);
}

/// The first write of a slot races another worker's: this worker found the slot absent, then
/// (before its creation write) another worker created it and charged one token. A CAS-less or
/// Envoy-ignored-CAS creation would overwrite that charge and admit 10; the stale-token creation
/// fails, re-reads and charges on top.
#[test]
fn a_concurrent_first_write_is_never_lost() {
    let shared = SharedState::new();
    let mut plugin = load(PER_IP, &shared);
    let now = shared.clock().wall_ns();
    let mut theirs = vec![0x52, 5, b'4', 198, 51, 100, 7];
    theirs.extend_from_slice(&9u32.to_le_bytes());
    theirs.extend_from_slice(&now.to_le_bytes());
    theirs.extend_from_slice(&now.to_le_bytes());
    shared.inject_creation_race(VM_ID, "mwrl.", &theirs);
    assert_eq!(admitted(&mut plugin, 40, |_| from("198.51.100.7:4000")), 9);
    assert_eq!(shared.cas_races_fired(), 1);
}

#[test]
fn exhausted_retries_follow_the_configured_outcome() {
    for (on_exhausted, want) in [("deny", 0), ("allow", 5)] {
        let config = format!(
            r#"{{"rules": [{{"name": "f", "tokenBucket": {{"maxTokens": 100, "fillInterval": "1s"}}}}],
                 "contention": {{"maxRetries": 2, "onExhausted": "{on_exhausted}"}}}}"#
        );
        let shared = SharedState::new();
        let mut plugin = load(&config, &shared);
        // Create the slot first (one request), then make every CAS write lose.
        assert_eq!(admitted(&mut plugin, 1, |_| from("10.0.0.1:1")), 1);
        shared.inject_cas_races(VM_ID, "mwrl.", 1000);
        assert_eq!(
            admitted(&mut plugin, 5, |_| from("10.0.0.1:1")),
            want,
            "{on_exhausted}"
        );
        assert_eq!(shared.cas_races_fired(), 15, "3 attempts per request");
        assert_eq!(counter(&shared, "f", "contention_exhausted"), 5);
        // Allowed or not, nothing was charged: the races stop and 99 tokens are left.
        shared.clear_cas_races();
        assert_eq!(admitted(&mut plugin, 120, |_| from("10.0.0.1:1")), 99);
    }
}

#[test]
fn rotating_the_leftmost_forwarded_for_mints_no_tokens() {
    let config = r#"{"rules": [{"name": "xff", "key": {"type": "clientAddress", "trustedHops": 1},
        "tokenBucket": {"maxTokens": 5, "fillInterval": "1s"}}]}"#;
    let shared = SharedState::new();
    let mut plugin = load(config, &shared);
    let n = admitted(&mut plugin, 50, |i| {
        from("10.0.0.1:1").with_header("x-forwarded-for", format!("192.0.2.{i}, 203.0.113.9"))
    });
    assert_eq!(n, 5);
    // Garbage, zones, huge values: defined outcomes (the peer's bucket), never a trap.
    let huge = "9".repeat(60_000);
    for xff in [
        "garbage",
        "fe80::1%eth0",
        ",,,,",
        "[::1",
        huge.as_str(),
        "1.2.3.4, , ",
    ] {
        let out = send(
            &mut plugin,
            0,
            from("10.0.0.2:1").with_header("x-forwarded-for", xff),
        );
        assert!(matches!(
            out.request_action,
            Action::Continue | Action::LocalReply(_)
        ));
    }
    assert_eq!(counter(&shared, "xff", "allowed"), 10);
}

#[test]
fn huge_header_keys_and_costs_never_trap() {
    let config = r#"{"rules": [{"name": "h", "key": {"type": "header", "name": "x-api-key"},
        "hitsAddend": {"header": "x-cost", "max": 2},
        "tokenBucket": {"maxTokens": 4, "fillInterval": "1s"}}]}"#;
    let shared = SharedState::new();
    let mut plugin = load(config, &shared);
    let huge = "k".repeat(60_000);
    let n = admitted(&mut plugin, 10, |i| {
        from("10.0.0.1:1")
            .with_header("x-api-key", format!("{huge}{i}"))
            .with_header("x-cost", "999999999999999999999")
    });
    // Every oversized key shares one bucket: 4 tokens at 1 (unparsable cost) each.
    assert_eq!(n, 4);
}

#[test]
fn limited_and_allowed_responses_carry_the_headers() {
    let shared = SharedState::new();
    let mut plugin = load(PER_IP, &shared);
    let out = send(&mut plugin, 1, from("10.1.1.1:1"));
    assert_eq!(out.response_header("x-ratelimit-limit"), Some("10"));
    assert_eq!(out.response_header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(out.response_header("x-ratelimit-reset"), Some("1"));
    assert_eq!(
        out.response_header("ratelimit-policy"),
        Some("\"ip\";q=10;w=4")
    );
    assert_eq!(out.response_header("ratelimit"), Some("\"ip\";r=9;t=1"));
    admitted(&mut plugin, 9, |_| from("10.1.1.1:1"));
    let out = send(&mut plugin, 2, from("10.1.1.1:1"));
    let Action::LocalReply(reply) = &out.request_action else {
        panic!("{:?}", out.request_action)
    };
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, b"local_rate_limited");
    assert_eq!(reply.headers.get("retry-after"), Some("1"));
    assert_eq!(reply.headers.get("x-ratelimit-remaining"), Some("0"));
    let grpc = from("10.1.1.1:1").with_header("content-type", "application/grpc");
    let out = send(&mut plugin, 3, grpc);
    let Action::LocalReply(reply) = &out.request_action else {
        panic!("{:?}", out.request_action)
    };
    assert_eq!(reply.grpc_status, Some(8));
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let bucket = |b: &str| format!(r#"{{"rules": [{{"tokenBucket": {b}}}]}}"#);
    for (config, path) in [
        (
            bucket(r#"{"maxTokens": 1, "fillInterval": "0s"}"#),
            "rules[0].tokenBucket.fillInterval",
        ),
        (
            bucket(r#"{"maxTokens": 1, "fillInterval": "49ms"}"#),
            "rules[0].tokenBucket.fillInterval",
        ),
        (
            bucket(r#"{"maxTokens": 1, "fillInterval": "1s", "burst": 1}"#),
            "rules[0].tokenBucket.burst",
        ),
        (r#"{"rules": [], "typo": 1}"#.to_owned(), "typo"),
    ] {
        let prefix = format!("rate-limit: invalid plugin config: {path}: ");
        match Plugin::load(
            HostEngine::global().unwrap(),
            &module(),
            spec(&config, 1),
            &SharedState::new(),
        ) {
            Ok(_) => panic!("{config}: accepted"),
            Err(LoadError::Rejected { logs, .. }) => assert!(
                logs.iter().any(|l| l.message.starts_with(&prefix)),
                "want {prefix:?} in {logs:?}"
            ),
            Err(e) => panic!("{config}: {e:?}"),
        }
    }
}

// === a verified identity as the key (jwt-auth → rate-limit in one chain) ===

/// jwt-auth then rate-limit, as in a filter chain: the per-user rule keys on the subject jwt-auth
/// publishes after verifying the token; requests without one fall through to the per-address
/// rule. A client-sent header cannot pose as the subject.
#[test]
fn a_verified_jwt_subject_keys_the_bucket_and_its_absence_falls_through() {
    use jsonwebtoken::Algorithm;

    let shared = SharedState::new();
    let jwt = super::jwt_auth::load(&super::jwt_auth::config());
    let limiter = Plugin::load(
        HostEngine::global().unwrap(),
        &module(),
        spec(
            r#"{"rules": [
                {"name": "user", "key": {"type": "property", "path": ["meshward_jwt_subject"]},
                 "tokenBucket": {"maxTokens": 2, "fillInterval": "1s"}},
                {"name": "anon", "key": {"type": "clientAddress"},
                 "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]}"#,
            1,
        ),
        &shared,
    )
    .unwrap();
    let mut chain = meshward_host::Chain::new(vec![jwt, limiter]);
    let token = |sub: &str| {
        let mut claims = super::jwt_auth::claims();
        claims["sub"] = sub.into();
        super::jwt_auth::mint(Algorithm::HS256, &claims, None)
    };
    let (alice, bob) = (token("alice"), token("bob"));
    // One worker: `jwt_auth::load` starts one (exactness across workers is tested above).
    let mut status = |token: Option<&str>, spoof: Option<&str>| {
        // `/optional` lets requests without a token through jwt-auth.
        let mut request = Request::get("/optional/x", "example.com").with_info(StreamInfo {
            source_address: "10.0.0.1:5000".to_owned(),
            ..StreamInfo::default()
        });
        if let Some(token) = token {
            request = request.with_header("authorization", format!("Bearer {token}"));
        }
        if let Some(sub) = spoof {
            request = request.with_header("x-sub", sub);
        }
        let out = chain
            .run(
                0,
                request,
                |_| Response::new(200),
                |_| panic!("no callouts expected"),
            )
            .unwrap();
        assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
        out.response.status().unwrap()
    };
    // Alice's two tokens, then 429.
    assert_eq!(status(Some(&alice), None), 200);
    assert_eq!(status(Some(&alice), None), 200);
    assert_eq!(status(Some(&alice), None), 429);
    // Bob has his own bucket, from the same address.
    assert_eq!(status(Some(&bob), None), 200);
    // No token: the property is absent, the per-address rule takes the request (1 token), and
    // a header claiming to be bob changes nothing.
    assert_eq!(status(None, Some("bob")), 200);
    assert_eq!(status(None, Some("bob")), 429);
    assert_eq!(status(Some(&bob), None), 200);
    assert_eq!(status(Some(&bob), None), 429);
    assert_eq!(counter(&shared, "user", "allowed"), 4);
    assert_eq!(counter(&shared, "user", "limited"), 2);
    assert_eq!(counter(&shared, "anon", "allowed"), 1);
    assert_eq!(counter(&shared, "anon", "limited"), 1);
}

/// Sends `limit` distinct client addresses (or as many as `budget` allows) through 4 VMs and
/// checks that the shared-data key count never exceeds the configured bound and linear memory
/// stays flat after the first 10,000 keys; returns how many were sent.
fn distinct_keys_bounded(limit: u32) -> u32 {
    let config = r#"{"rules": [{"name": "ip", "key": {"type": "clientAddress"},
        "maxKeys": 4096, "entriesPerSlot": 8,
        "tokenBucket": {"maxTokens": 10, "fillInterval": "1s"}}]}"#;
    let shared = SharedState::new();
    let mut plugin = load(config, &shared);
    let headers = HeaderMap::from_pairs([(":method", "GET"), (":path", "/"), (":authority", "x")]);
    #[allow(
        clippy::disallowed_methods,
        reason = "reported, never asserted: the wall time of the run"
    )]
    let started = Instant::now();
    let mut memory_after_warmup = 0;
    let mut sent = 0u32;
    while sent < limit {
        let worker = (sent as usize) % WORKERS;
        let info = StreamInfo {
            source_address: format!(
                "{}.{}.{}.{}:1",
                10 + (sent >> 24),
                (sent >> 16) & 0xff,
                (sent >> 8) & 0xff,
                sent & 0xff
            ),
            ..StreamInfo::default()
        };
        let stream = plugin
            .new_stream_with(worker, &info, &FilterState::new())
            .unwrap();
        let out = plugin
            .request_headers(stream, &mut headers.clone(), true)
            .unwrap();
        assert!(matches!(out.action, Action::Continue), "{:?}", out.action);
        plugin.finish(stream).unwrap();
        sent += 1;
        if sent == 10_000 {
            memory_after_warmup = (0..WORKERS)
                .map(|w| plugin.memory_bytes(w).unwrap())
                .max()
                .unwrap();
        }
    }
    let keys = shared.shared_data(VM_ID).len();
    let memory = (0..WORKERS)
        .map(|w| plugin.memory_bytes(w).unwrap())
        .max()
        .unwrap();
    let bytes: usize = shared
        .shared_data(VM_ID)
        .values()
        .map(|(v, _)| v.len())
        .sum();
    eprintln!(
        "rate-limit: {sent} distinct keys in {:?}: {keys} shared-data keys ({bytes} bytes), \
         linear memory {memory} bytes per VM (after 10,000 keys: {memory_after_warmup}), \
         live keys {}, lru evictions {}",
        started.elapsed(),
        shared.metric_value("rule=.=ip;.;meshward_rate_limit_live_keys"),
        shared.metric_value("rule=.=ip;.;reason=.=lru;.;meshward_rate_limit_evictions_total"),
    );
    assert!(keys <= 1 + 512, "{keys} keys");
    assert!(bytes <= 1 + 512 * (1 + 8 * (1 + 5 + 20)), "{bytes} bytes");
    assert!(memory <= 4 << 20, "{memory} bytes of linear memory");
    if memory_after_warmup > 0 {
        assert_eq!(memory, memory_after_warmup, "memory grew with keys");
    }
    assert_eq!(
        shared.metric_value("rule=.=ip;.;meshward_rate_limit_live_keys"),
        4096.min(u64::from(sent))
    );
    sent
}

/// 30,000 distinct client addresses: the key space (4,096 keys) is full after the first 4,096, and
/// memory is compared between 10,000 and 30,000 keys. A fixed count, not a time budget, so a
/// loaded machine cannot make it fail (the 1,000,000 run below is the acceptance run).
#[test]
fn distinct_keys_keep_the_key_space_and_memory_bounded() {
    distinct_keys_bounded(30_000);
}

/// The acceptance run of issue #11: 1,000,000 distinct client addresses (several minutes in a
/// debug build, so outside `make test`):
/// `cargo test -p meshward-integration-tests --test filters -- --ignored --nocapture one_million`.
#[test]
#[ignore = "1,000,000 requests take minutes: run explicitly with --ignored"]
fn one_million_distinct_keys_keep_the_key_space_and_memory_bounded() {
    let sent = distinct_keys_bounded(1_000_000);
    assert_eq!(sent, 1_000_000);
}

// === the JSON Schema ===

fn committed_schema() -> serde_json::Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../filters/rate-limit/config.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_committed_schema_is_current_and_accepts_the_shipped_configs() {
    assert!(
        committed_schema() == meshward_filter_rate_limit::config::schema(),
        "filters/rate-limit/config.schema.json is stale: run `make schemas` and commit it"
    );
    let validator = jsonschema::validator_for(&committed_schema()).unwrap();
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/rate-limit/bench.json");
    let bench = std::fs::read_to_string(bench).unwrap();
    for config in [bench.as_str(), PER_IP] {
        let value: serde_json::Value = serde_json::from_str(config).unwrap();
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(meshward_filter_rate_limit::config::parse(config.as_bytes()).is_ok());
    }
    let typo = serde_json::json!({"rules": [{"tokenBucket": {"maxTokens": 1, "fillInterval": "1s", "burst": 2}}]});
    assert!(!validator.is_valid(&typo));
}
