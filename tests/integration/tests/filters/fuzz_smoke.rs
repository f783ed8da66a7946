//! Wasm-level fuzzing: random and mutated inputs through the real `.wasm` filters in our host, on
//! 4 worker VMs with a fuel bound per callback (a loop that never ends traps instead of hanging
//! the test). Asserted everywhere: no trap, no failed VM, every request either forwarded or
//! answered with a well-formed local reply, and a configuration either accepted or refused by
//! `on_configure` returning false with a logged reason (never a trap).
//!
//! * every shipped filter alone: random requests (header names the filters read and random ones;
//!   values with separators, control and non-UTF-8 bytes, duplicates, empty, huge values, many
//!   headers), random peer addresses, random responses, the clock stepping forwards and back;
//! * the callout filter (`tests/callout-filter`, the async shape): random interleavings of new
//!   streams, ticks, callout answers (any status, headers, garbage bodies, failures, never
//!   answered) and streams reset while waiting; every waiter is answered by its deadline;
//! * mutated configurations (the shipped ones with fields deleted, retyped, added, truncated or
//!   byte-flipped) for every filter;
//! * the whole shipped chain of `envoy-local/envoy.yaml` (harness `Chain`).
//!
//! `make test` runs 10,000 requests per filter and per test from a fixed seed, so a failure
//! reproduces. `make fuzz-wasm` runs the same tests longer with a new seed:
//! `MESHWARD_FUZZ_REQUESTS` (requests per filter and test), `MESHWARD_FUZZ_SECONDS` (time per
//! test instead), `MESHWARD_FUZZ_SEED` (replay a failure: every message names the seed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshward_host::{
    Action, CallReply, Chain, FailPolicy, HeaderMap, HostEngine, HttpCallResponse, HttpOutcome,
    LoadError, LocalReply, Module, Plugin, PluginSpec, Request, Response, SharedState, StreamEvent,
    StreamId, StreamInfo,
};
use serde_json::Value;

const WORKERS: usize = 4;
/// Requests per filter and per test in `make test`.
const DEFAULT_REQUESTS: usize = 10_000;
/// Mutated configurations tried per filter for every this many requests of the budget.
const REQUESTS_PER_CONFIG: usize = 50;
/// Fuel (≈ wasm instructions) allowed per callback: ten times the costliest legitimate callback
/// (a fresh RS256 verification, ~20 M), far below the harness default, so a runaway loop traps
/// in well under a second.
const FUEL_PER_CALLBACK: u64 = 200_000_000;
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Each shipped filter with configurations that switch on its optional paths.
const FILTERS: &[(&str, &[&str])] = &[
    (
        "trace-id",
        &[
            "{}",
            r#"{"properties": true, "b3": {"read": true, "write": "multi"},
                "traceContext": {"mode": "passthrough", "sampling": {"type": "inherit"}},
                "response": {"traceresponse": true, "serverTiming": true},
                "requestId": {"aliases": ["x-correlation-id"], "originalIdHeader": "x-original-id",
                              "policy": "keepIfTrusted", "trustedCidrs": ["0.0.0.0/0", "::/0"]}}"#,
            r#"{"traceContext": {"mode": "restart", "sampling": {"type": "ratio", "ratio": 0.5}},
                "requestId": {"validation": "uuid", "policy": "alwaysReplace"}, "failureMode": "deny"}"#,
        ],
    ),
    (
        "metric-tag",
        &[r#"{"tags": [
                 {"name": "variant", "source": {"type": "header", "name": "x-request-id"}, "maxValues": 20},
                 {"name": "trace", "source": {"type": "header", "name": "traceparent"}, "allowedValues": ["a"]},
                 {"name": "class", "source": {"type": "statusClass"}},
                 {"name": "status", "source": {"type": "status"}},
                 {"name": "endpoint", "source": {"type": "pathTemplate", "templates": ["/api/v1/orders/{id}"]}},
                 {"name": "q", "source": {"type": "query", "name": "x"}, "maxValues": 5}],
               "metrics": [
                 {"name": "m_requests_total", "type": "counter", "tags": ["variant", "trace", "class"]},
                 {"name": "m_duration_ms", "type": "histogram", "tags": ["status", "endpoint", "q"]},
                 {"name": "m_bytes", "type": "histogram", "value": "requestBytes"}],
               "properties": true}"#],
    ),
    (
        "rate-limit",
        &[
            include_str!("../../../fixtures/rate-limit/bench.json"),
            r#"{"rules": [{"name": "tight", "key": {"type": "header", "name": "x-request-id"},
                           "tokenBucket": {"maxTokens": 2, "fillInterval": "1s"}, "maxKeys": 16,
                           "hitsAddend": {"header": "x-b3-flags", "max": 3}}],
                "defaultBucket": {"tokenBucket": {"maxTokens": 0, "fillInterval": "1s"}},
                "response": {"rateLimitHeaders": "both"}}"#,
        ],
    ),
    (
        "jwt-auth",
        &[include_str!("../../../fixtures/jwt-auth/bench.json")],
    ),
    (
        "ab-routing",
        &[include_str!("../../../fixtures/ab-routing/bench.json")],
    ),
];

/// Header names the filters read, so random values hit their parsers.
const INTERESTING: &[&str] = &[
    "x-request-id",
    "x-user-id",
    "x-correlation-id",
    "x-original-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "content-type",
];

/// How long each test runs: `MESHWARD_FUZZ_REQUESTS` / `MESHWARD_FUZZ_SECONDS`.
#[derive(Clone, Copy)]
struct Budget {
    requests: usize,
    deadline: Option<Instant>,
}

impl Budget {
    #[allow(
        clippy::disallowed_methods,
        reason = "the test's own run length (make fuzz-wasm), not filter configuration or time"
    )]
    fn from_env() -> Self {
        let seconds = std::env::var("MESHWARD_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let requests = std::env::var("MESHWARD_FUZZ_REQUESTS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(if seconds.is_some() {
                usize::MAX
            } else {
                DEFAULT_REQUESTS
            });
        Self {
            requests,
            deadline: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
        }
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the test's own time budget, not the filter's clock"
    )]
    /// Whether request `done` (0-based) of a share `1/parts` of the budget should run.
    fn more(&self, done: usize, parts: usize) -> bool {
        done < self.requests / parts.max(1) && self.deadline.is_none_or(|d| Instant::now() < d)
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test's seed (make fuzz-wasm), not filter configuration"
)]
fn seed() -> u64 {
    std::env::var("MESHWARD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// A small deterministic generator (xorshift64*), so a failing request can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Self((seed ^ stream.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn value(&mut self) -> Vec<u8> {
        const SHAPES: &[&[u8]] = &[
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            b"Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLXAyNTYifQ.eyJzdWIiOiJ4In0.AAAA",
            b"123e4567-e89b-12d3-a456-426614174000",
            b"10.0.0.1, 2001:db8::1, unknown",
            b"application/grpc",
            b"ab_checkout=b.1767225600.AAAAAAAAAAAAAAAAAAAAAA; session=x",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        ];
        let len = match self.below(40) {
            0..=3 => 0,
            4..=7 => 1_000 + self.below(7_000),
            8 => 16_000 + self.below(48_000),
            _ => self.below(80),
        };
        let mut value = if self.below(3) == 0 {
            self.pick(SHAPES).to_vec()
        } else {
            Vec::new()
        };
        let alphabet = b"0123456789abcdefABCDEF-_=,; \t@*/.:\"\\\x00\x01\x7f\xc3\xa9\xff";
        value.extend((0..len).map(|_| alphabet[self.below(alphabet.len())]));
        value
    }

    fn name(&mut self) -> String {
        if self.below(4) > 0 {
            return (*self.pick(INTERESTING)).to_owned();
        }
        let len = 1 + self.below(20);
        (0..len)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_"[self.below(38)]))
            .collect()
    }

    fn headers(&mut self, mut add: impl FnMut(&str, Vec<u8>), max: usize) {
        let count = if self.one_in(50) {
            200 + self.below(300)
        } else {
            self.below(max)
        };
        for _ in 0..count {
            let name = self.name();
            let value = self.value();
            add(&name, value);
        }
    }

    fn request(&mut self, paths: &[&str]) -> Request {
        let path = *self.pick(paths);
        let mut request = Request::get(path, "shop.example.com");
        let mut pairs = Vec::new();
        self.headers(|name, value| pairs.push((name.to_owned(), value)), 40);
        for (name, value) in pairs {
            request = request.with_header(&name, value);
        }
        let source = match self.below(6) {
            0 => "[2001:db8::7]:443".to_owned(),
            1 => String::new(),
            2 => format!(
                "{}.{}.0.1:{}",
                self.below(300),
                self.below(256),
                self.below(70_000)
            ),
            _ => format!(
                "10.{}.{}.{}:5000",
                self.below(4),
                self.below(256),
                self.below(256)
            ),
        };
        request.with_info(StreamInfo {
            source_address: source,
            ..StreamInfo::default()
        })
    }

    fn response(&mut self) -> Response {
        let statuses = [200, 204, 301, 404, 429, 500, 503];
        let mut response = Response::new(*self.pick(&statuses));
        let mut pairs = Vec::new();
        self.headers(|name, value| pairs.push((name.to_owned(), value)), 8);
        for (name, value) in pairs {
            response = response.with_header(&name, value);
        }
        response
    }

    /// Moves the shared clock: mostly forwards by up to a few seconds, sometimes back, sometimes
    /// by hours (expiry, experiment windows, bucket refills).
    fn step_clock(&mut self, shared: &SharedState) {
        let clock = shared.clock();
        let now = clock.wall_ns();
        let next = match self.below(20) {
            0 => now.saturating_sub(self.next() % 3_600_000_000_000),
            1 => now.saturating_add(self.next() % 86_400_000_000_000),
            _ => now.saturating_add(self.next() % 2_000_000_000),
        };
        clock.set_wall_ns(next);
        clock.advance(Duration::from_millis(self.next() % 50));
    }

    /// An answer to a callout: any status, random headers, a garbage or plausible body, a
    /// failure, or none at all.
    fn call_reply(&mut self) -> CallReply {
        match self.below(7) {
            0 => CallReply::Fail,
            1 => CallReply::Leave,
            2 => CallReply::Timeout,
            _ => CallReply::Respond(self.call_response()),
        }
    }

    fn call_response(&mut self) -> HttpCallResponse {
        let status = *self.pick(&[200, 200, 200, 204, 302, 400, 404, 500, 503, 0, 999]);
        let mut response = HttpCallResponse::new(status, Vec::new());
        if self.one_in(8) {
            response.headers = HeaderMap::new();
        } else if self.one_in(8) {
            response.headers = HeaderMap::from_pairs([(":status", self.value())]);
        }
        let mut pairs = Vec::new();
        self.headers(|name, value| pairs.push((name.to_owned(), value)), 6);
        for (name, value) in pairs {
            response.headers.append(&name, value);
        }
        response.body = match self.below(4) {
            0 => Vec::new(),
            1 => b"token-abc".to_vec(),
            _ => self.value(),
        };
        response
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module(name: &str) -> Module {
    let path = repo().join(format!("dist/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

fn spec(name: &str, root_id: &str, vm_id: &str, config: &[u8], workers: usize) -> PluginSpec {
    let mut spec = PluginSpec::new(name, root_id)
        .with_vm_id(vm_id)
        .with_configuration(config.to_vec())
        .with_workers(workers)
        .with_fail_policy(FailPolicy::FailClosed);
    spec.fuel_per_callback = FUEL_PER_CALLBACK;
    spec
}

/// A local reply a client can receive: a real status, header names that are lower-case tokens,
/// values without CR, LF or NUL, response details without whitespace.
fn assert_well_formed(reply: &LocalReply, what: &dyn Fn() -> String) {
    assert!((200..600).contains(&reply.status), "{}: {reply:?}", what());
    for (name, value) in reply.headers.iter() {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':'),
            "{}: reply header name {name:?}",
            what()
        );
        assert!(
            !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{}: reply header {name} value {value:?}",
            what()
        );
    }
    assert!(
        !reply.details.is_empty() && !reply.details.contains(char::is_whitespace),
        "{}: details {:?}",
        what(),
        reply.details
    );
}

/// No trap; the request was forwarded or answered locally (well formed); `may_stall` allows a
/// request still waiting on a callout nobody answered.
fn assert_outcome(out: &HttpOutcome, may_stall: bool, what: &dyn Fn() -> String) {
    assert!(out.traps.is_empty(), "{}: {:?}", what(), out.traps);
    match &out.request_action {
        Action::Continue => assert!(
            out.upstream_called && out.request_headers_after.is_some(),
            "{}: continued but not forwarded",
            what()
        ),
        Action::LocalReply(reply) => assert_well_formed(reply, what),
        Action::Pause if may_stall && out.stalled.is_some() => {}
        other => panic!("{}: {other:?}", what()),
    }
    if !out.reset && out.stalled.is_none() {
        let status = out.response.status();
        assert!(
            status.is_some_and(|s| (100..600).contains(&s)),
            "{}: client got status {status:?}",
            what()
        );
    }
}

fn assert_no_vm_failed(plugin: &Plugin, what: &str) {
    for worker in 0..plugin.workers() {
        assert!(
            plugin.failure(worker).is_none(),
            "{what}: worker {worker} failed: {:?}",
            plugin.failure(worker)
        );
    }
}

#[test]
fn random_requests_never_trap_any_filter() {
    let budget = Budget::from_env();
    let seed = seed();
    for (f, (filter, configs)) in FILTERS.iter().enumerate() {
        let module = module(filter);
        for (c, config) in configs.iter().enumerate() {
            let shared = SharedState::new();
            let spec = spec(filter, filter, filter, config.as_bytes(), WORKERS);
            let mut plugin = Plugin::load(HostEngine::global().unwrap(), &module, spec, &shared)
                .unwrap_or_else(|e| panic!("{filter} config {c} refused: {e:?}"));
            let mut rng = Rng::new(seed, (f * 16 + c) as u64);
            let mut i = 0;
            while budget.more(i, configs.len()) {
                rng.step_clock(&shared);
                let request = rng.request(&[
                    "/",
                    "/api/v1/orders/12345?expand=items",
                    "/%00?x=\u{ff}",
                    "//a/../b",
                ]);
                let response = rng.response();
                let out = plugin
                    .http_request(i % WORKERS, request.clone(), response)
                    .unwrap();
                assert_outcome(&out, false, &|| {
                    format!("seed {seed}: {filter} config {c} request {i}: {request:?}")
                });
                i += 1;
            }
            assert_no_vm_failed(&plugin, &format!("seed {seed}: {filter} config {c}"));
        }
    }
}

/// The shipped chain: every Wasm filter of `envoy-local/envoy.yaml`, in order, with its
/// configuration.
fn shipped_chain(shared: &SharedState) -> Chain {
    let config = crate::manifests::envoy_config();
    let plugins = config
        .wasm_filters
        .iter()
        .map(|filter| {
            let stem = filter
                .module_path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let spec = spec(
                &filter.plugin_name,
                &filter.root_id,
                &filter.vm_id,
                filter.configuration.as_bytes(),
                WORKERS,
            );
            Plugin::load(HostEngine::global().unwrap(), &module(&stem), spec, shared)
                .unwrap_or_else(|e| panic!("{}: {e:?}", filter.yaml_path))
        })
        .collect();
    Chain::new(plugins)
}

#[test]
fn random_requests_never_trap_the_shipped_chain() {
    let budget = Budget::from_env();
    let seed = seed();
    let shared = SharedState::new();
    let mut chain = shipped_chain(&shared);
    let paths = [
        "/",
        "/secure/orders",
        "/ab/",
        "/ab/home?variant=b",
        "/api/v1/orders/1",
        "/%ff",
    ];
    let mut rng = Rng::new(seed, 0xc4a1);
    let mut i = 0;
    while budget.more(i, 1) {
        rng.step_clock(&shared);
        let request = rng.request(&paths);
        let response = rng.response();
        let mut replies = Vec::new();
        for _ in 0..4 {
            replies.push(rng.call_reply());
        }
        let out = chain
            .run(
                i % WORKERS,
                request.clone(),
                |_| response.clone(),
                |_| replies.pop().unwrap_or(CallReply::Fail),
            )
            .unwrap();
        assert_outcome(&out, true, &|| {
            format!("seed {seed}: chain request {i}: {request:?}")
        });
        i += 1;
    }
    for plugin in chain.plugins() {
        assert_no_vm_failed(
            plugin,
            &format!("seed {seed}: chain {}", plugin.spec().name),
        );
    }
}

/// One random change to a JSON configuration.
fn mutate_value(rng: &mut Rng, value: &mut Value, depth: usize) {
    let replacement = |rng: &mut Rng| -> Value {
        match rng.below(9) {
            0 => Value::Null,
            1 => Value::Bool(rng.one_in(2)),
            2 => Value::from(rng.next() as i64),
            3 => Value::from(-(rng.below(3) as i64)),
            4 => Value::from(f64::from(rng.below(1000) as u32) / 7.0),
            5 => Value::from(String::from_utf8_lossy(&rng.value()).into_owned()),
            6 => {
                Value::from(*rng.pick(&["", "0s", "1s", "-1s", "10.0.0.0/33", "[", "^(a+)+$", "x"]))
            }
            7 => Value::Array(vec![Value::Null; rng.below(3)]),
            _ => serde_json::json!({}),
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() && (depth < 6 && !rng.one_in(4)) => {
            let key = map.keys().nth(rng.below(map.len())).unwrap().clone();
            match rng.below(6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}x"), replacement(rng));
                }
                2 => {
                    map.insert(key, replacement(rng));
                }
                _ => mutate_value(rng, map.get_mut(&key).unwrap(), depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && !rng.one_in(4) => {
            let at = rng.below(items.len());
            match rng.below(4) {
                0 => {
                    items.remove(at);
                }
                1 => {
                    let copy = items[at].clone();
                    items.push(copy);
                }
                _ => mutate_value(rng, &mut items[at], depth + 1),
            }
        }
        other => *other = replacement(rng),
    }
}

/// A mutated configuration: structural JSON edits, or the text truncated or byte-flipped.
fn mutate(rng: &mut Rng, base: &str) -> Vec<u8> {
    let mut value: Value = serde_json::from_str(base).unwrap();
    for _ in 0..1 + rng.below(3) {
        mutate_value(rng, &mut value, 0);
    }
    let mut text = value.to_string().into_bytes();
    match rng.below(10) {
        0 => text.truncate(rng.below(text.len() + 1)),
        1 => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(text.len().max(1));
                if let Some(byte) = text.get_mut(at) {
                    *byte = rng.next() as u8;
                }
            }
        }
        _ => {}
    }
    text
}

#[test]
fn mutated_configs_are_accepted_or_refused_with_a_logged_reason() {
    let budget = Budget::from_env();
    let seed = seed();
    let shipped = crate::manifests::envoy_config();
    let mut accepted_total = 0;
    for (f, (filter, configs)) in FILTERS.iter().enumerate() {
        let module = module(filter);
        let mut bases: Vec<String> = configs.iter().map(|c| (*c).to_owned()).collect();
        bases.extend(
            shipped
                .wasm_filters
                .iter()
                .filter(|w| w.module_path.file_stem().is_some_and(|s| s == *filter))
                .map(|w| w.configuration.clone()),
        );
        let mut rng = Rng::new(seed, 0xc0f1 + f as u64);
        let (mut accepted, mut refused) = (0, 0);
        let mut i = 0;
        while budget.more(i * REQUESTS_PER_CONFIG, 1) {
            let base = rng_pick_owned(&mut rng, &bases);
            let config = mutate(&mut rng, base);
            let what = || {
                format!(
                    "seed {seed}: {filter} config {i}: {}",
                    String::from_utf8_lossy(&config)
                )
            };
            let shared = SharedState::new();
            match Plugin::load(
                HostEngine::global().unwrap(),
                &module,
                spec(filter, filter, filter, &config, 2),
                &shared,
            ) {
                Ok(mut plugin) => {
                    accepted += 1;
                    for r in 0..4 {
                        rng.step_clock(&shared);
                        let request =
                            rng.request(&["/", "/api/v1/orders/1?x=1", "/secure/a", "/ab/"]);
                        let out = plugin.http_request(r % 2, request, rng.response()).unwrap();
                        assert_outcome(&out, false, &what);
                    }
                    assert_no_vm_failed(&plugin, &what());
                }
                Err(LoadError::Rejected { reason, logs }) => {
                    refused += 1;
                    assert_eq!(reason, "returned false", "{}: configure trapped", what());
                    assert!(
                        logs.iter().any(|l| l.message.contains(filter)),
                        "{}: refused without a log line naming the filter: {logs:?}",
                        what()
                    );
                }
                Err(other) => panic!("{}: {other:?}", what()),
            }
            i += 1;
        }
        // Refusals are exercised for every filter (most mutations break a config); acceptances
        // are counted over all filters below (a filter with many required fields may refuse
        // every mutation of a short run).
        assert!(
            refused > 0,
            "{filter}: accepted {accepted}, refused {refused}"
        );
        accepted_total += accepted;
    }
    assert!(accepted_total > 0, "some mutated configuration is accepted");
}

fn rng_pick_owned<'a>(rng: &mut Rng, items: &'a [String]) -> &'a str {
    rng.pick(items).as_str()
}

/// The async shape (`dist/callout.wasm`: streams paused on a root-context callout) under random
/// interleavings: new streams, ticks, answers of any shape, failures, calls never answered, and
/// streams reset while waiting. Each waiter is resumed or answered (503/504) by its deadline.
#[test]
fn random_callout_answers_never_trap_or_strand_a_waiter() {
    let budget = Budget::from_env();
    let seed = seed();
    let shared = SharedState::new();
    shared.set_clusters(["token-service"]);
    let config = br#"{"waitMs": 200, "maxWaiters": 6, "timeoutMs": 500}"#;
    let mut plugin = Plugin::load(
        HostEngine::global().unwrap(),
        &module("callout"),
        spec("callout", "callout", "meshward_callout", config, WORKERS),
        &shared,
    )
    .unwrap();
    let mut rng = Rng::new(seed, 0xca11);
    // Waiting streams with the (monotonic) time they started.
    let mut waiting: Vec<(StreamId, u64)> = Vec::new();
    let mut i = 0;
    let what = |i: usize| format!("seed {seed}: callout step {i}");
    let finish = |plugin: &mut Plugin, stream: StreamId, mut response: HeaderMap, i: usize| {
        let out = plugin
            .response_headers(stream, &mut response, true)
            .unwrap();
        assert_eq!(out.trap, None, "{}", what(i));
        assert_eq!(plugin.finish(stream).unwrap().trap, None, "{}", what(i));
    };
    while budget.more(i, 1) {
        match rng.below(6) {
            0..=2 => {
                let worker = rng.below(WORKERS);
                let stream = plugin.new_stream(worker).unwrap();
                let mut headers = HeaderMap::from_pairs([
                    (":method", "GET"),
                    (":path", "/api"),
                    (":scheme", "http"),
                    (":authority", "example.com"),
                ]);
                let out = plugin.request_headers(stream, &mut headers, true).unwrap();
                assert_eq!(out.trap, None, "{}", what(i));
                match out.action {
                    Action::Continue => finish(
                        &mut plugin,
                        stream,
                        HeaderMap::from_pairs([(":status", "200")]),
                        i,
                    ),
                    Action::Pause => waiting.push((stream, shared.clock().monotonic_ns())),
                    Action::LocalReply(reply) => {
                        assert_well_formed(&reply, &|| what(i));
                        finish(&mut plugin, stream, reply.response_headers(), i);
                    }
                    other => panic!("{}: {other:?}", what(i)),
                }
            }
            3 => {
                shared
                    .clock()
                    .advance(Duration::from_millis(rng.next() % 120));
                let out = plugin.run_due_ticks();
                assert_eq!(out.trap, None, "{}", what(i));
                settle(&mut plugin, out.events, &mut waiting, &finish, i, &what);
            }
            4 => {
                let calls = plugin.pending_http_calls();
                if !calls.is_empty() {
                    let call = calls[rng.below(calls.len())].clone();
                    let answer = match rng.call_reply() {
                        CallReply::Respond(response) => Some(response),
                        CallReply::Timeout => Some(HttpCallResponse::upstream_timeout()),
                        CallReply::Fail => None,
                        // Never answered: left pending for good.
                        CallReply::Leave => {
                            i += 1;
                            continue;
                        }
                    };
                    let out = plugin.deliver_http_response(call.id, answer).unwrap();
                    assert_eq!(out.trap, None, "{}", what(i));
                    settle(&mut plugin, out.events, &mut waiting, &finish, i, &what);
                }
            }
            _ => {
                // The client goes away while its stream waits.
                if !waiting.is_empty() {
                    let (stream, _) = waiting.swap_remove(rng.below(waiting.len()));
                    assert_eq!(plugin.finish(stream).unwrap().trap, None, "{}", what(i));
                }
            }
        }
        // No waiter outlives its deadline by more than a tick.
        let now = shared.clock().monotonic_ns();
        for (stream, since) in &waiting {
            assert!(
                now.saturating_sub(*since) <= 400_000_000,
                "{}: {stream:?} stranded since {since} (now {now})",
                what(i)
            );
        }
        i += 1;
    }
    assert_no_vm_failed(&plugin, &what(i));
}

/// Applies stream events from a root callback: resumed streams and replied ones leave `waiting`.
fn settle(
    plugin: &mut Plugin,
    events: Vec<StreamEvent>,
    waiting: &mut Vec<(StreamId, u64)>,
    finish: &dyn Fn(&mut Plugin, StreamId, HeaderMap, usize),
    i: usize,
    what: &dyn Fn(usize) -> String,
) {
    for event in events {
        let (stream, response) = match event {
            StreamEvent::Resumed { stream, .. } => {
                (stream, HeaderMap::from_pairs([(":status", "200")]))
            }
            StreamEvent::LocalReply { stream, reply } => {
                assert_well_formed(&reply, &|| what(i));
                (stream, reply.response_headers())
            }
            other => panic!("{}: {other:?}", what(i)),
        };
        let before = waiting.len();
        waiting.retain(|(s, _)| *s != stream);
        assert_eq!(
            waiting.len() + 1,
            before,
            "{}: event for a stream not waiting: {stream:?}",
            what(i)
        );
        finish(plugin, stream, response, i);
    }
}
