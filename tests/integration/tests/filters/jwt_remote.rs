//! jwt-auth `remote_jwks` through the real `dist/jwt-auth.wasm` on 4 worker VMs with the
//! harness's fake clock and a fake IdP cluster `idp` (the tests answer its calls).
//!
//! What is checked across workers: one JWKS fetch in flight at a time (the shared lease), the
//! key set fetched once and picked up by every VM from shared data, requests that arrive before
//! any keys wait and are resumed from the root, last-known-good keys keep serving through an
//! IdP outage (no request fails), every bad answer (5xx, reset, timeout, empty, not JSON,
//! oversized, no usable key, an HMAC key) is refused and counted, an unknown-`kid` storm causes
//! at most one refetch per interval, and a dropped key stops verifying.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use meshward_host::{
    Action, FailPolicy, HeaderMap, HostEngine, HttpCallResponse, PendingHttpCall, Plugin,
    PluginSpec, SharedState, StreamEvent, StreamId,
};
use serde_json::{Value, json};

const WORKERS: usize = 4;
const NOW: u64 = 1_767_225_600;
const ISSUER: &str = "https://issuer.example";
const FETCHES_OK: &str = "provider=.=main;.;result=.=ok;.;meshward_jwt_auth_jwks_fetch_total";
const FETCHES_FAILED: &str =
    "provider=.=main;.;result=.=failed;.;meshward_jwt_auth_jwks_fetch_total";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/jwt-auth")
            .join(name),
    )
    .unwrap()
}

/// The fixture JWKS restricted to the keys with these `kid`s.
fn jwks(kids: &[&str]) -> String {
    let mut set: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| kids.contains(&k["kid"].as_str().unwrap_or_default()));
    assert_eq!(set["keys"].as_array().unwrap().len(), kids.len());
    set.to_string()
}

pub(crate) fn config(remote_extra: &Value) -> String {
    let mut remote = json!({
        "http_uri": {"uri": "http://idp.example/.well-known/jwks.json", "cluster": "idp", "timeout": "1s"},
        "cache_duration": "60s"
    });
    for (k, v) in remote_extra.as_object().unwrap() {
        remote[k] = v.clone();
    }
    json!({
        "providers": {"main": {
            "issuer": ISSUER,
            "remote_jwks": remote,
            "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}]
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}]
    })
    .to_string()
}

/// `kid` → (algorithm, PEM fixture).
fn signer(kid: &str) -> (Algorithm, EncodingKey) {
    match kid {
        "ed25519" => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(fixture("ed25519.pem").as_bytes()).unwrap(),
        ),
        _ => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(fixture("ec-p256.pem").as_bytes()).unwrap(),
        ),
    }
}

/// A token signed with the key of `signing_kid`, announcing `kid`; `n` makes it unique (no
/// verified-token cache hit).
fn token_as(signing_kid: &str, kid: &str, n: u64) -> String {
    let (alg, key) = signer(signing_kid);
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = json!({"iss": ISSUER, "sub": "alice", "iat": NOW - n, "exp": NOW + 7200});
    encode(&header, &claims, &key).unwrap()
}

fn token(kid: &str, n: u64) -> String {
    token_as(kid, kid, n)
}

/// How the fake IdP answers.
#[derive(Clone)]
enum Idp {
    Serve(String),
    Status(u16),
    Body(Vec<u8>),
    Reset,
    /// Never answers: the host times the call out (504).
    Slow,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Forwarded with this `x-sub`.
    Allowed(Option<String>),
    /// Local reply (status, body).
    Denied(u32, String),
}

struct World {
    shared: SharedState,
    plugin: Plugin,
    idp: Idp,
    /// Calls made to the IdP, in total.
    fetches: usize,
    /// Most IdP calls pending at once (across workers).
    most_in_flight: usize,
    waiting: Vec<StreamId>,
    done: Vec<(StreamId, Outcome)>,
}

impl World {
    fn new(config: &str, idp: Idp) -> Self {
        let shared = SharedState::new();
        shared.set_clusters(["idp"]);
        let module = HostEngine::global()
            .unwrap()
            .load_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/jwt-auth.wasm"))
            .unwrap();
        let spec = PluginSpec::new("jwt-auth", "jwt_auth")
            .with_vm_id("meshward_jwt_auth")
            .with_configuration(config)
            .with_workers(WORKERS)
            .with_fail_policy(FailPolicy::FailClosed);
        let plugin = match Plugin::load(HostEngine::global().unwrap(), &module, spec, &shared) {
            Ok(p) => p,
            Err(e) => panic!("config rejected: {e:?}"),
        };
        Self {
            shared,
            plugin,
            idp,
            fetches: 0,
            most_in_flight: 0,
            waiting: Vec::new(),
            done: Vec::new(),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.shared.clock().advance(by);
    }

    /// Sends a request on `worker`; an answer in the request callback is recorded at once, a
    /// paused stream waits for [`World::settle`]. Returns the stream.
    fn send(&mut self, worker: usize, token: &str) -> StreamId {
        let stream = self.plugin.new_stream(worker).unwrap();
        let mut headers = HeaderMap::from_pairs([
            (":method", "GET"),
            (":path", "/api"),
            (":scheme", "http"),
            (":authority", "example.com"),
            ("authorization", &format!("Bearer {token}")),
            ("x-sub", "mallory"),
        ]);
        let out = self
            .plugin
            .request_headers(stream, &mut headers, true)
            .unwrap();
        assert_eq!(out.trap, None, "{:?}", out.logs);
        match out.action {
            Action::Continue => self.done.push((
                stream,
                Outcome::Allowed(headers.get("x-sub").map(str::to_owned)),
            )),
            Action::LocalReply(reply) | Action::Failed(reply) => self.done.push((
                stream,
                Outcome::Denied(reply.status, String::from_utf8_lossy(&reply.body).into()),
            )),
            Action::Pause => self.waiting.push(stream),
            Action::Reset => panic!("reset"),
        }
        stream
    }

    /// Sends and, if the request waits, settles; returns its outcome.
    fn outcome(&mut self, worker: usize, token: &str) -> Outcome {
        let stream = self.send(worker, token);
        self.settle();
        self.take(stream)
    }

    fn take(&mut self, stream: StreamId) -> Outcome {
        let i = self
            .done
            .iter()
            .position(|(s, _)| *s == stream)
            .unwrap_or_else(|| panic!("{stream:?} has no outcome"));
        self.done.remove(i).1
    }

    fn record(&mut self, events: Vec<StreamEvent>) {
        for event in events {
            let (stream, outcome) = match event {
                StreamEvent::Resumed {
                    stream,
                    request: true,
                    headers,
                    ..
                } => (
                    stream,
                    Outcome::Allowed(
                        headers
                            .as_ref()
                            .and_then(|h| h.get("x-sub"))
                            .map(str::to_owned),
                    ),
                ),
                StreamEvent::LocalReply { stream, reply } => (
                    stream,
                    Outcome::Denied(reply.status, String::from_utf8_lossy(&reply.body).into()),
                ),
                other => panic!("unexpected event {other:?}"),
            };
            self.waiting.retain(|s| *s != stream);
            self.done.push((stream, outcome));
        }
    }

    /// Runs the proxy's event loops in 1 ms steps (ticks, call timeouts) and answers the IdP's
    /// calls, until no stream waits and no call is pending (at most 5 s of fake time).
    fn settle(&mut self) {
        for _ in 0..5000 {
            let calls: Vec<PendingHttpCall> = self.plugin.pending_http_calls();
            self.most_in_flight = self.most_in_flight.max(calls.len());
            for call in calls {
                assert_eq!(call.cluster, "idp");
                assert_eq!(call.stream, None, "the root owns the fetch");
                let reply = match self.idp.clone() {
                    Idp::Serve(body) => Some(HttpCallResponse::new(200, body)),
                    Idp::Body(body) => Some(HttpCallResponse::new(200, body)),
                    Idp::Status(status) => Some(HttpCallResponse::new(status, "oops")),
                    Idp::Reset => None,
                    Idp::Slow => continue,
                };
                let out = self.plugin.deliver_http_response(call.id, reply).unwrap();
                assert_eq!(out.trap, None, "{:?}", out.logs);
                self.record(out.events);
            }
            if self.waiting.is_empty() && self.plugin.pending_http_calls().is_empty() {
                return;
            }
            self.advance(Duration::from_millis(1));
            let out = self.plugin.run_async();
            assert_eq!(out.trap, None, "{:?}", out.logs);
            self.record(out.events);
        }
        panic!("not settled: {:?} wait", self.waiting);
    }

    /// Runs ticks for `by` of fake time (answering calls as they come).
    fn idle(&mut self, by: Duration) {
        let end = self.shared.clock().monotonic_ns() + u64::try_from(by.as_nanos()).unwrap();
        while self.shared.clock().monotonic_ns() < end {
            self.advance(Duration::from_millis(10));
            let out = self.plugin.run_async();
            assert_eq!(out.trap, None, "{:?}", out.logs);
            self.record(out.events);
            self.settle();
        }
    }

    fn count_fetches(&mut self) {
        self.fetches = usize::try_from(
            self.shared.metric_value(FETCHES_OK) + self.shared.metric_value(FETCHES_FAILED),
        )
        .unwrap();
    }

    fn ok(&self) -> u64 {
        self.shared.metric_value(FETCHES_OK)
    }

    fn failed(&self) -> u64 {
        self.shared.metric_value(FETCHES_FAILED)
    }
}

fn allowed() -> Outcome {
    Outcome::Allowed(Some("alice".to_owned()))
}

#[test]
fn first_requests_on_every_worker_wait_for_one_shared_fetch() {
    let mut world = World::new(&config(&json!({})), Idp::Serve(jwks(&["ec-p256"])));
    let streams: Vec<StreamId> = (0..WORKERS)
        .map(|w| world.send(w, &token("ec-p256", w as u64)))
        .collect();
    assert_eq!(
        world.waiting.len(),
        WORKERS,
        "no keys yet: every request waits"
    );
    // The first kicked tick takes the lease and fetches; the other VMs find it held.
    world.advance(Duration::from_millis(1));
    world.plugin.run_due_ticks();
    let calls = world.plugin.pending_http_calls();
    assert_eq!(calls.len(), 1, "one fetch across workers: {calls:?}");
    assert_eq!(
        calls[0].headers.get(":path"),
        Some("/.well-known/jwks.json")
    );
    assert_eq!(calls[0].headers.get(":authority"), Some("idp.example"));
    assert_eq!(calls[0].timeout_ms, 1000);
    world.settle();
    for stream in streams {
        assert_eq!(
            world.take(stream),
            allowed(),
            "the client's x-sub is replaced"
        );
    }
    assert_eq!((world.ok(), world.failed()), (1, 0));
    assert_eq!(world.most_in_flight, 1);
    // Every VM now has the keys: no wait, no fetch.
    for w in 0..WORKERS {
        let stream = world.send(w, &token("ec-p256", 100 + w as u64));
        assert_eq!(world.take(stream), allowed());
    }
    assert!(world.plugin.pending_http_calls().is_empty());
    assert_eq!(world.ok(), 1);
    let age = "provider=.=main;.;meshward_jwt_auth_jwks_age_seconds";
    world.idle(Duration::from_secs(3));
    assert!(world.shared.metric(age).is_some());
}

#[test]
fn an_idp_outage_is_served_from_last_known_good_with_one_fetch_in_flight() {
    let mut world = World::new(
        &config(&json!({"async_fetch": {"failed_refetch_duration": "2s"}})),
        Idp::Serve(jwks(&["ec-p256"])),
    );
    // async_fetch: the keys are fetched at start-up, before any request.
    world.settle();
    world.idle(Duration::from_millis(20));
    assert_eq!(world.ok(), 1);
    let mut n = 0;
    let mut check_all_allowed = |world: &mut World| {
        for w in 0..WORKERS {
            n += 1;
            assert_eq!(
                world.outcome(w, &token("ec-p256", n)),
                allowed(),
                "worker {w}"
            );
        }
    };
    check_all_allowed(&mut world);
    // The IdP goes down in every way; refreshes (due from 54 s) fail, keys stay usable till 120 s.
    world.idle(Duration::from_secs(53));
    let bad = [
        Idp::Status(503),
        Idp::Reset,
        Idp::Slow,
        Idp::Body(Vec::new()),
        Idp::Body(b"{not json".to_vec()),
        Idp::Body(vec![b' '; 300 * 1024]),
        Idp::Serve(r#"{"keys": []}"#.to_owned()),
        Idp::Serve(
            r#"{"keys": [{"kty": "oct", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#
                .to_owned(),
        ),
    ];
    let mut failed = 0;
    for answer in bad {
        world.idp = answer;
        world.idle(Duration::from_millis(3500));
        assert!(world.failed() > failed, "a refused answer is counted");
        failed = world.failed();
        check_all_allowed(&mut world);
    }
    assert_eq!(world.ok(), 1, "no bad answer replaced the set");
    assert_eq!(world.most_in_flight, 1, "one fetch in flight at a time");
    world.count_fetches();
    assert!(
        world.fetches <= 16,
        "fetches spaced by failed_refetch_duration: {}",
        world.fetches
    );
    // Past the stale window (2 × cache_duration) the requests fail with Envoy's reason.
    world.idp = Idp::Status(500);
    world.idle(Duration::from_secs(60));
    assert_eq!(
        world.outcome(0, &token("ec-p256", 999)),
        Outcome::Denied(401, "Jwks remote fetch is failed".to_owned())
    );
    // The IdP is back: the next fetch restores service everywhere.
    world.idp = Idp::Serve(jwks(&["ec-p256"]));
    world.idle(Duration::from_secs(3));
    check_all_allowed(&mut world);
}

#[test]
fn key_rotation_an_unknown_kid_storm_and_a_dropped_key() {
    let mut world = World::new(&config(&json!({})), Idp::Serve(jwks(&["ec-p256"])));
    assert_eq!(world.outcome(0, &token("ec-p256", 1)), allowed());
    world.idle(Duration::from_millis(100));
    // Rotation: the IdP adds an Ed25519 key and signs with it. The first token with the new kid
    // waits for one refetch; every worker then verifies it.
    world.idp = Idp::Serve(jwks(&["ec-p256", "ed25519"]));
    world.advance(Duration::from_secs(31));
    let rotated: Vec<StreamId> = (0..WORKERS)
        .map(|w| world.send(w, &token("ed25519", w as u64)))
        .collect();
    world.settle();
    for stream in rotated {
        assert_eq!(world.take(stream), allowed());
    }
    assert_eq!(world.ok(), 2, "one refetch for the rotation");
    assert_eq!(world.most_in_flight, 1);
    // A storm of tokens with a kid the IdP does not have: within the interval no refetch at
    // all, every one is refused with Envoy's reason.
    for round in 0..5 {
        for w in 0..WORKERS {
            assert_eq!(
                world.outcome(
                    w,
                    &token_as("ec-p256", "no-such-kid", round * 10 + w as u64)
                ),
                Outcome::Denied(
                    401,
                    "Jwks doesn't have key to match kid or alg from Jwt".to_owned()
                )
            );
        }
    }
    world.count_fetches();
    assert_eq!(world.fetches, 2, "no refetch within 30 s of the last");
    // After the interval: at most one more refetch for the whole storm.
    world.advance(Duration::from_secs(31));
    for round in 0..5 {
        for w in 0..WORKERS {
            world.outcome(
                w,
                &token_as("ec-p256", "no-such-kid", 100 + round * 10 + w as u64),
            );
        }
    }
    world.count_fetches();
    assert_eq!(world.fetches, 3, "one refetch per interval");
    // The IdP drops the Ed25519 key while tokens still use it: after the next fetch every worker
    // refuses them (cached verifications included).
    let cached = token("ed25519", 500);
    for w in 0..WORKERS {
        assert_eq!(world.outcome(w, &cached), allowed());
    }
    world.idp = Idp::Serve(jwks(&["ec-p256"]));
    world.idle(Duration::from_secs(60));
    assert!(world.ok() >= 4, "refreshed");
    for w in 0..WORKERS {
        assert_eq!(
            world.outcome(w, &cached),
            Outcome::Denied(
                401,
                "Jwks doesn't have key to match kid or alg from Jwt".to_owned()
            ),
            "worker {w}"
        );
    }
    assert_eq!(world.most_in_flight, 1);
}

#[test]
fn remote_jwks_configuration_errors_name_the_field() {
    let cases = [
        (
            json!({"http_uri": {"uri": "ftp://x/", "cluster": "idp", "timeout": "1s"}}),
            "remoteJwks.httpUri.uri",
        ),
        (
            json!({"http_uri": {"uri": "http://x/", "cluster": "", "timeout": "1s"}}),
            "remoteJwks.httpUri.cluster",
        ),
        (
            json!({"http_uri": {"uri": "http://x/", "cluster": "idp"}}),
            "remoteJwks.httpUri.timeout",
        ),
        (json!({"cache_duration": "0s"}), "remoteJwks.cacheDuration"),
        (
            json!({"retry_policy": {"num_retries": 99}}),
            "remoteJwks.retryPolicy.numRetries",
        ),
        (json!({"cache_duartion": "1s"}), "cache_duartion"),
    ];
    for (extra, field) in cases {
        let shared = SharedState::new();
        let spec = PluginSpec::new("jwt-auth", "jwt_auth").with_configuration(config(&extra));
        let module = HostEngine::global()
            .unwrap()
            .load_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/jwt-auth.wasm"))
            .unwrap();
        match Plugin::load(HostEngine::global().unwrap(), &module, spec, &shared) {
            Ok(_) => panic!("accepted {extra}"),
            Err(e) => assert!(format!("{e:?}").contains(field), "{field}: {e:?}"),
        }
    }
}
