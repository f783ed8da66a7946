//! Random requests through every shipped filter's real `.wasm` on 4 worker VMs: no trap, no failed
//! VM, and every request either forwarded or answered with a well-formed local reply.
//!
//! The short run of the wasm-level fuzzing (issue "Robustness"): 10,000 requests per filter and
//! configuration set, generated from a fixed seed so a failure reproduces. Header names come from
//! the ones the filters read (so the interesting paths run) plus random ones; values mix valid
//! shapes, separators, control and non-UTF-8 bytes, duplicates, empty and long values.

use std::path::{Path, PathBuf};

use meshward_host::{
    Action, FailPolicy, HostEngine, Plugin, PluginSpec, Request, Response, SharedState,
};

const REQUESTS_PER_FILTER: usize = 10_000;
const WORKERS: usize = 4;

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

/// A small deterministic generator (xorshift64*), so a failing request can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn value(&mut self) -> Vec<u8> {
        const SHAPES: &[&[u8]] = &[
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            b"123e4567-e89b-12d3-a456-426614174000",
            b"10.0.0.1, 2001:db8::1, unknown",
            b"application/grpc",
        ];
        let len = match self.below(10) {
            0 => 0,
            1 => 1_000 + self.below(7_000),
            _ => self.below(80),
        };
        let mut value = if self.below(3) == 0 {
            SHAPES[self.below(SHAPES.len())].to_vec()
        } else {
            Vec::new()
        };
        let alphabet = b"0123456789abcdefABCDEF-_=,; \t@*/.:\"\\\x00\x01\x7f\xc3\xa9\xff";
        value.extend((0..len).map(|_| alphabet[self.below(alphabet.len())]));
        value
    }

    fn name(&mut self) -> String {
        if self.below(4) > 0 {
            return INTERESTING[self.below(INTERESTING.len())].to_owned();
        }
        let len = 1 + self.below(20);
        (0..len)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_"[self.below(38)]))
            .collect()
    }

    fn request(&mut self) -> Request {
        let paths = [
            "/",
            "/api/v1/orders/12345?expand=items",
            "/%00?x=\u{ff}",
            "//a/../b",
        ];
        let mut request = Request::get(paths[self.below(paths.len())], "shop.example.com");
        for _ in 0..self.below(60) {
            let name = self.name();
            let value = self.value();
            request = request.with_header(&name, value);
        }
        request
    }

    fn response(&mut self) -> Response {
        let statuses = [200, 204, 301, 404, 429, 500, 503];
        let mut response = Response::new(statuses[self.below(statuses.len())]);
        for _ in 0..self.below(8) {
            let name = self.name();
            let value = self.value();
            response = response.with_header(&name, value);
        }
        response
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn random_requests_never_trap_any_filter() {
    let engine = HostEngine::global().unwrap();
    for (filter, configs) in FILTERS {
        let path = repo().join(format!("dist/{filter}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: run `make dist`",
            path.display()
        );
        let module = engine.load_file(&path).unwrap();
        let per_config = REQUESTS_PER_FILTER / configs.len();
        for (c, config) in configs.iter().enumerate() {
            let spec = PluginSpec::new(*filter, *filter)
                .with_configuration(*config)
                .with_workers(WORKERS)
                .with_fail_policy(FailPolicy::FailClosed);
            let mut plugin = Plugin::load(engine, &module, spec, &SharedState::new())
                .unwrap_or_else(|e| panic!("{filter} config {c} refused: {e:?}"));
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1));
            for i in 0..per_config {
                let request = rng.request();
                let response = rng.response();
                let out = plugin
                    .http_request(i % WORKERS, request.clone(), response)
                    .unwrap();
                let what = || format!("{filter} config {c} request {i}: {request:?}");
                assert!(out.traps.is_empty(), "{}: {:?}", what(), out.traps);
                match &out.request_action {
                    Action::Continue => assert!(out.request_headers_after.is_some(), "{}", what()),
                    Action::LocalReply(reply) => {
                        assert!((200..600).contains(&reply.status), "{}: {reply:?}", what());
                    }
                    other => panic!("{}: {other:?}", what()),
                }
            }
            for worker in 0..WORKERS {
                assert!(
                    plugin.failure(worker).is_none(),
                    "{filter} config {c}: worker {worker} failed: {:?}",
                    plugin.failure(worker)
                );
            }
        }
    }
}
