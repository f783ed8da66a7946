//! Fault injection through the real `.wasm` filters in our host: a VM crashing in the middle of
//! its work and being replaced (Envoy's `FAIL_RELOAD`; the crash is a callback running out of
//! the test-only fuel budget, `Plugin::set_worker_fuel`, at every point of its work), the clock
//! jumping backwards and forwards, callouts that fail, time out, answer garbage or never answer,
//! and a configuration update while streams are in flight (Envoy starts new VMs with the new
//! configuration and lets the old ones finish their streams). Each filter's documented failure
//! mode must hold (README.md, "Crash policy").

use std::path::Path;
use std::time::Duration;

use meshward_host::{
    Action, FailPolicy, HeaderMap, HostEngine, HttpCallResponse, HttpOutcome, Module, Plugin,
    PluginSpec, Request, Response, SharedState, StreamEvent, StreamId,
};
use serde_json::json;

const WORKERS: usize = 4;
/// The harness clock's start, 2026-01-01T00:00:00Z, in seconds.
const START_SECS: u64 = 1_767_225_600;

fn module(name: &str) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../dist/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

fn load(name: &str, vm_id: &str, config: &str, policy: FailPolicy, shared: &SharedState) -> Plugin {
    let spec = PluginSpec::new(name, name)
        .with_vm_id(vm_id)
        .with_configuration(config)
        .with_workers(WORKERS)
        .with_fail_policy(policy);
    Plugin::load(HostEngine::global().unwrap(), &module(name), spec, shared)
        .unwrap_or_else(|e| panic!("{name}: {config} rejected: {e:?}"))
}

fn no_trap(out: &HttpOutcome) {
    assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
}

// ---- a VM crash in the middle of a bucket update ----------------------------------------------

fn user(name: &str) -> Request {
    Request::get("/api", "example.com").with_header("x-user-id", name)
}

/// Kills the VM of `worker` at every point of a rate-limit request (fuel budgets from 1 to the
/// full cost), replacing it each time (`FAIL_RELOAD`): the limit is never exceeded, a crashed
/// request is never forwarded (503 from the proxy), and the shared-data buckets stay readable —
/// after the crashes, requests are charged exactly against what is left.
#[test]
fn a_vm_crash_at_any_point_of_a_bucket_update_never_breaks_the_limit() {
    const MAX: u32 = 40;
    let config = json!({"rules": [{"name": "user", "key": {"type": "header", "name": "x-user-id"},
        "tokenBucket": {"maxTokens": MAX, "fillInterval": "3600s"}}]})
    .to_string();
    let shared = SharedState::new();
    let mut plugin = load(
        "rate-limit",
        "meshward_rate_limit",
        &config,
        FailPolicy::Reload,
        &shared,
    );
    // The cost of one ordinary request (first use of the slot: creation + charge).
    // The budget is per callback: the costliest callback of a steady-state request (the slot
    // exists) on a VM that has served before.
    for worker in 0..WORKERS {
        no_trap(
            &plugin
                .http_request(worker, user("probe"), Response::new(200))
                .unwrap(),
        );
    }
    let probe = plugin
        .http_request(0, user("probe"), Response::new(200))
        .unwrap();
    no_trap(&probe);
    let full = probe.phases.iter().map(|p| p.outcome.fuel).max().unwrap();
    let mut forwarded = 0u32;
    let mut crashed = 0u32;
    let steps = 24u64;
    for step in 0..steps {
        let worker = (step as usize) % WORKERS;
        let fuel = 1 + full * step / steps;
        plugin.set_worker_fuel(worker, fuel).unwrap();
        let out = plugin
            .http_request(worker, user("alice"), Response::new(200))
            .unwrap();
        match &out.request_action {
            Action::Failed(reply) => {
                crashed += 1;
                assert_eq!(reply.status, 503);
                assert!(!out.upstream_called, "a crashed request is never forwarded");
                assert!(plugin.failure(worker).is_some());
            }
            Action::Continue => {
                forwarded += 1;
                // The VM survived with this budget: give it back the normal one.
                plugin
                    .set_worker_fuel(worker, meshward_host::DEFAULT_FUEL_PER_CALLBACK)
                    .unwrap();
            }
            other => panic!("fuel {fuel}: {other:?}"),
        }
    }
    assert!(
        crashed >= steps as u32 / 3,
        "budgets below the cost crash the VM: {crashed} of {steps}"
    );
    // Every worker's next stream runs on a fresh VM; charge until the bucket is empty.
    let mut after = 0u32;
    for i in 0..(2 * MAX) {
        let out = plugin
            .http_request(i as usize % WORKERS, user("alice"), Response::new(200))
            .unwrap();
        no_trap(&out);
        match &out.request_action {
            Action::Continue => after += 1,
            Action::LocalReply(reply) => assert_eq!(reply.status, 429),
            other => panic!("{other:?}"),
        }
    }
    let charged = forwarded + after;
    assert!(charged <= MAX, "the limit was exceeded: {charged} > {MAX}");
    // A crash after the CAS write loses at most the token of the crashed request.
    assert!(
        charged + crashed >= MAX,
        "tokens vanished: {forwarded} + {after} forwarded, {crashed} crashed"
    );
    for worker in 0..WORKERS {
        assert_eq!(plugin.failure(worker), None, "worker {worker} was replaced");
    }
}

// ---- the clock jumping --------------------------------------------------------------------------

/// rate-limit: a step back adds nothing and restarts the interval; a step forward by any amount
/// fills the bucket at most to `maxTokens`.
#[test]
fn rate_limit_buckets_survive_clock_jumps() {
    let config = json!({"rules": [{"name": "user", "key": {"type": "header", "name": "x-user-id"},
        "tokenBucket": {"maxTokens": 3, "tokensPerFill": 1, "fillInterval": "10s"}}]})
    .to_string();
    let shared = SharedState::new();
    let mut plugin = load(
        "rate-limit",
        "meshward_rate_limit",
        &config,
        FailPolicy::FailClosed,
        &shared,
    );
    let allowed = |plugin: &mut Plugin, n: usize| -> usize {
        (0..n)
            .filter(|i| {
                let out = plugin
                    .http_request(i % WORKERS, user("bob"), Response::new(200))
                    .unwrap();
                no_trap(&out);
                out.upstream_called
            })
            .count()
    };
    assert_eq!(allowed(&mut plugin, 5), 3, "a new bucket is full");
    let clock = shared.clock();
    let now = clock.wall_ns();
    clock.set_wall_ns(now - 3600 * 1_000_000_000);
    assert_eq!(allowed(&mut plugin, 3), 0, "a step back adds nothing");
    clock.set_wall_ns(clock.wall_ns() + 9_000_000_000);
    assert_eq!(
        allowed(&mut plugin, 3),
        0,
        "the interval restarted at the step back"
    );
    clock.set_wall_ns(clock.wall_ns() + 1_000_000_000);
    assert_eq!(allowed(&mut plugin, 3), 1, "one fill after one interval");
    clock.set_wall_ns(u64::MAX / 2);
    assert_eq!(
        allowed(&mut plugin, 6),
        3,
        "a huge step forward fills to maxTokens, no more"
    );
}

const HMAC_KEY: &[u8] = b"meshward-faults-hs256-key-0123456789";

fn jwt_config() -> String {
    use base64::Engine as _;
    let jwks = json!({"keys": [{"kty": "oct", "kid": "k", "alg": "HS256",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(HMAC_KEY)}]});
    json!({
        "providers": {"p": {"issuer": "https://issuer.example", "clock_skew_seconds": 60,
            "local_jwks": {"inline_string": jwks.to_string()}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]
    })
    .to_string()
}

fn jwt(nbf: u64, exp: u64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k".to_owned());
    let claims =
        json!({"iss": "https://issuer.example", "sub": "u", "nbf": nbf, "iat": nbf, "exp": exp});
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HMAC_KEY).unwrap(),
    )
    .unwrap()
}

/// jwt-auth: `exp` and `nbf` hold (with `clock_skew_seconds` each way) whatever the clock does,
/// also for a token the verified-token cache already holds.
#[test]
fn jwt_expiry_and_not_before_hold_across_clock_jumps() {
    let shared = SharedState::new();
    let mut plugin = load(
        "jwt-auth",
        "meshward_jwt_auth",
        &jwt_config(),
        FailPolicy::FailClosed,
        &shared,
    );
    let token = jwt(START_SECS, START_SECS + 3600);
    let clock = shared.clock();
    let status_at = |plugin: &mut Plugin, secs: u64| -> Option<u16> {
        clock.set_wall_ns(secs * 1_000_000_000);
        let request = Request::get("/", "example.com")
            .with_header("authorization", format!("Bearer {token}"));
        let statuses: Vec<Option<u16>> = (0..WORKERS)
            .map(|w| {
                let out = plugin
                    .http_request(w, request.clone(), Response::new(200))
                    .unwrap();
                no_trap(&out);
                out.response.status()
            })
            .collect();
        assert!(
            statuses.windows(2).all(|w| w[0] == w[1]),
            "every VM agrees at {secs}: {statuses:?}"
        );
        statuses[0]
    };
    assert_eq!(
        status_at(&mut plugin, START_SECS + 10),
        Some(200),
        "valid (and now cached)"
    );
    assert_eq!(
        status_at(&mut plugin, START_SECS + 3600 + 61),
        Some(401),
        "expired after a jump forward"
    );
    assert_eq!(
        status_at(&mut plugin, START_SECS + 3600 + 59),
        Some(200),
        "within the skew again"
    );
    assert_eq!(
        status_at(&mut plugin, START_SECS - 61),
        Some(401),
        "not yet valid after a jump back"
    );
    assert_eq!(
        status_at(&mut plugin, START_SECS - 59),
        Some(200),
        "within the skew"
    );
    assert_eq!(status_at(&mut plugin, 0), Some(401), "the epoch");
    assert_eq!(
        status_at(&mut plugin, u64::MAX / 1_000_000_000),
        Some(401),
        "the far future"
    );
    assert_eq!(
        status_at(&mut plugin, START_SECS + 100),
        Some(200),
        "and back to normal"
    );
}

/// ab-routing: an experiment with a window takes part only inside it, whatever order the clock
/// visits the times in; a sticky cookie issued "in the future" (the clock stepped back) is not
/// honoured beyond the documented 300 s skew.
#[test]
fn ab_experiment_windows_hold_across_clock_jumps() {
    let start = START_SECS + 3600;
    let end = start + 3600;
    let config = json!({
        "experiments": [{"name": "checkout", "header": "x-variant",
            "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
            "key": {"header": "x-user-id"}, "startTime": start, "endTime": end,
            "sticky": {"cookie": "ab_checkout", "maxAge": "24h"}}],
        "cookieKeys": {"signing": "faults-signing-key-0123456789abcdef"}
    })
    .to_string();
    let shared = SharedState::new();
    let mut plugin = load(
        "ab-routing",
        "meshward_ab_routing",
        &config,
        FailPolicy::FailClosed,
        &shared,
    );
    let clock = shared.clock();
    let at = |plugin: &mut Plugin, secs: u64, cookie: Option<&str>| -> HttpOutcome {
        clock.set_wall_ns(secs * 1_000_000_000);
        let mut request = user("carol");
        if let Some(cookie) = cookie {
            request = request.with_header("cookie", cookie);
        }
        let out = plugin.http_request(0, request, Response::new(200)).unwrap();
        no_trap(&out);
        assert!(out.upstream_called);
        out
    };
    for secs in [start - 1, end, end + 86_400, 0, start - 3600] {
        assert_eq!(
            at(&mut plugin, secs, None).request_header("x-variant"),
            None,
            "outside the window at {secs}"
        );
    }
    let issued = start + 1000;
    let inside = at(&mut plugin, issued, None);
    let variant = inside
        .request_header("x-variant")
        .expect("a variant inside the window")
        .to_owned();
    let set_cookie = inside
        .response_header("set-cookie")
        .expect("a sticky cookie")
        .to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert_eq!(
        at(&mut plugin, end - 1, Some(&cookie)).request_header("x-variant"),
        Some(variant.as_str())
    );
    // Back before the cookie was issued, still inside the window: the user keeps a variant
    // (within the 300 s skew from the cookie, beyond it from the hash of the same key).
    for back in [200, 400] {
        let out = at(&mut plugin, issued - back, Some(&cookie));
        assert_eq!(
            out.request_header("x-variant"),
            Some(variant.as_str()),
            "{back} s back"
        );
    }
    assert_eq!(
        at(&mut plugin, end, Some(&cookie)).request_header("x-variant"),
        None,
        "the window closes even for a sticky user"
    );
}

/// trace-id reads no time (its ids come from WASI `random_get` only, README "Crash policy"): with
/// the same random seed, the ids it mints and the decisions it takes are the same whatever the
/// clock does — frozen, stepping back an hour, jumping to 0 or far ahead — on every worker VM.
#[test]
fn trace_id_output_does_not_depend_on_the_clock() {
    let config =
        json!({"b3": {"read": true, "write": "single"}, "response": {"traceresponse": true}})
            .to_string();
    let incoming = [
        None,
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        Some("garbage"),
    ];
    let run = |clock_steps: &[u64]| -> Vec<(Option<String>, Option<String>, Option<String>)> {
        let shared = SharedState::new();
        shared.random().reseed(42);
        let mut plugin = load(
            "trace-id",
            "meshward_trace_id",
            &config,
            FailPolicy::FailClosed,
            &shared,
        );
        let clock = shared.clock();
        let mut seen = Vec::new();
        for (i, &secs) in clock_steps.iter().enumerate() {
            clock.set_wall_ns(secs.saturating_mul(1_000_000_000));
            for (j, traceparent) in incoming.iter().enumerate() {
                let mut request = Request::get("/", "example.com");
                if let Some(value) = traceparent {
                    request = request.with_header("traceparent", value);
                }
                let out = plugin
                    .http_request((i + j) % WORKERS, request, Response::new(200))
                    .unwrap();
                no_trap(&out);
                assert!(out.upstream_called, "{:?}", out.request_action);
                seen.push((
                    out.request_header("x-request-id").map(str::to_owned),
                    out.request_header("traceparent").map(str::to_owned),
                    out.response_header("traceresponse").map(str::to_owned),
                ));
            }
        }
        seen
    };
    let frozen = run(&[START_SECS; 6]);
    assert!(
        frozen
            .iter()
            .all(|(id, tp, _)| id.is_some() && tp.is_some()),
        "every request leaves with an id and a trace: {frozen:?}"
    );
    let mut ids: Vec<_> = frozen.iter().filter_map(|(id, _, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), frozen.len(), "ids are unique");
    let jumping = run(&[
        START_SECS,
        START_SECS - 3600,
        0,
        u64::MAX / 2_000_000_000,
        START_SECS + 1,
        START_SECS - 1,
    ]);
    assert_eq!(frozen, jumping);
}

// ---- callouts: failures, timeouts, garbage, silence; a VM reload in the middle ------------------

fn callout(policy: FailPolicy, shared: &SharedState) -> Plugin {
    shared.set_clusters(["token-service"]);
    load(
        "callout",
        "meshward_callout",
        r#"{"waitMs": 300, "tickMs": 50}"#,
        policy,
        shared,
    )
}

fn callout_request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/api"),
        (":scheme", "http"),
        (":authority", "example.com"),
    ])
}

fn wait(plugin: &mut Plugin, worker: usize) -> StreamId {
    let stream = plugin.new_stream(worker).unwrap();
    let out = plugin
        .request_headers(stream, &mut callout_request(), true)
        .unwrap();
    assert_eq!(out.trap, None);
    assert_eq!(out.action, Action::Pause);
    stream
}

/// Fires ticks until the fetch of `worker` is pending.
fn fetch_of(
    shared: &SharedState,
    plugin: &mut Plugin,
    worker: usize,
) -> meshward_host::PendingHttpCall {
    for _ in 0..3 {
        shared.clock().advance(Duration::from_millis(1));
        let out = plugin.run_due_ticks();
        assert_eq!(out.trap, None);
        if let Some(call) = plugin
            .pending_http_calls()
            .into_iter()
            .find(|c| c.id.worker == worker)
        {
            return call;
        }
    }
    panic!("no fetch from worker {worker}");
}

/// The outcome of each waiting stream after a root callback: the token it was resumed with, or
/// the local reply it got.
/// A waiter's end: resumed with a token, or a local reply `(status, details)`.
type WaiterOutcome = Result<String, (u32, String)>;

fn outcomes(events: &[StreamEvent]) -> Vec<(StreamId, WaiterOutcome)> {
    events
        .iter()
        .map(|event| match event {
            StreamEvent::Resumed {
                stream,
                headers: Some(headers),
                ..
            } => (
                *stream,
                Ok(headers
                    .get("x-callout-token")
                    .unwrap_or("(none)")
                    .to_owned()),
            ),
            StreamEvent::LocalReply { stream, reply } => {
                (*stream, Err((reply.status, reply.details.clone())))
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// Garbage answers: whatever the upstream sends, a waiter is resumed with a token that is a valid
/// header value, or answered 503 `meshward_callout_failed`; nothing traps.
#[test]
fn garbage_callout_answers_resume_with_a_valid_token_or_fail_503() {
    let huge = vec![b'x'; 1 << 20];
    let mut no_status = HttpCallResponse::new(200, "tok");
    no_status.headers = HeaderMap::new();
    let mut bad_status = HttpCallResponse::new(200, "tok");
    bad_status.headers = HeaderMap::from_pairs([(":status", "two hundred")]);
    let answers = [
        HttpCallResponse::new(200, b"\xff\xfe\x00tok\r\nx-injected: 1".to_vec()),
        HttpCallResponse::new(200, huge),
        HttpCallResponse::new(200, "  "),
        HttpCallResponse::new(0, "tok"),
        HttpCallResponse::new(999, "tok"),
        no_status,
        bad_status,
    ];
    for (i, answer) in answers.into_iter().enumerate() {
        let shared = SharedState::new();
        let mut plugin = callout(FailPolicy::FailClosed, &shared);
        let stream = wait(&mut plugin, 1);
        let call = fetch_of(&shared, &mut plugin, 1);
        let out = plugin.deliver_http_response(call.id, Some(answer)).unwrap();
        assert_eq!(out.trap, None, "answer {i}");
        let got = outcomes(&out.events);
        assert_eq!(got.len(), 1, "answer {i}: {got:?}");
        assert_eq!(got[0].0, stream);
        match &got[0].1 {
            Ok(token) => assert!(
                !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                "answer {i}: forwarded token {token:?}"
            ),
            Err((status, details)) => {
                assert_eq!(
                    (*status, details.as_str()),
                    (503, "meshward_callout_failed"),
                    "answer {i}"
                );
            }
        }
        assert_eq!(plugin.failure(1), None);
    }
}

/// A callout that is never answered (the proxy's timeout lost): every waiter gets 504 at its
/// deadline; a late answer is still taken and the next request is served.
#[test]
fn a_callout_never_answered_times_out_its_waiters() {
    let shared = SharedState::new();
    let mut plugin = callout(FailPolicy::FailClosed, &shared);
    let waiting = [wait(&mut plugin, 2), wait(&mut plugin, 2)];
    let call = fetch_of(&shared, &mut plugin, 2);
    let mut answered = Vec::new();
    for _ in 0..10 {
        shared.clock().advance(Duration::from_millis(50));
        let out = plugin.run_due_ticks();
        assert_eq!(out.trap, None);
        answered.extend(outcomes(&out.events));
    }
    let mut streams: Vec<StreamId> = answered.iter().map(|(s, _)| *s).collect();
    streams.sort();
    assert_eq!(streams, waiting, "every waiter answered once");
    for (_, outcome) in &answered {
        assert_eq!(outcome, &Err((504, "meshward_callout_timeout".to_owned())));
    }
    let out = plugin
        .deliver_http_response(call.id, Some(HttpCallResponse::new(200, "late")))
        .unwrap();
    assert_eq!(out.trap, None);
    let stream = plugin.new_stream(2).unwrap();
    let mut headers = callout_request();
    let out = plugin.request_headers(stream, &mut headers, true).unwrap();
    assert_eq!(out.action, Action::Continue, "the late token is cached");
    assert_eq!(headers.get("x-callout-token"), Some("late"));
}

/// `FAIL_RELOAD` in the middle of a callout: the VM crashes while handling the answer (at every
/// point of that callback); the streams that waited on it are failed by the proxy (503), never
/// stranded, and the replacement VM fetches again and serves.
#[test]
fn a_vm_reload_in_the_middle_of_a_callout_strands_no_stream() {
    // The cost of handling an answer, measured once.
    let shared = SharedState::new();
    let mut plugin = callout(FailPolicy::Reload, &shared);
    wait(&mut plugin, 0);
    let call = fetch_of(&shared, &mut plugin, 0);
    let full = plugin
        .deliver_http_response(call.id, Some(HttpCallResponse::new(200, "t")))
        .unwrap()
        .fuel;
    let steps = 12;
    for step in 0..steps {
        let shared = SharedState::new();
        let mut plugin = callout(FailPolicy::Reload, &shared);
        let waiting = [wait(&mut plugin, 0), wait(&mut plugin, 0)];
        let call = fetch_of(&shared, &mut plugin, 0);
        plugin.set_worker_fuel(0, 1 + full * step / steps).unwrap();
        let out = plugin
            .deliver_http_response(call.id, Some(HttpCallResponse::new(200, "t")))
            .unwrap();
        assert!(out.trap.is_some(), "budget {step}/{steps} crashes the VM");
        let mut failed: Vec<StreamId> = out
            .events
            .iter()
            .map(|event| match event {
                StreamEvent::Failed {
                    stream,
                    action: Action::Failed(reply),
                } => {
                    assert_eq!(reply.status, 503);
                    *stream
                }
                other => panic!("step {step}: {other:?}"),
            })
            .collect();
        failed.sort();
        assert_eq!(
            failed, waiting,
            "step {step}: every waiter of the crashed VM is failed"
        );
        // The next stream on that worker gets a fresh VM, which fetches again.
        let again = wait(&mut plugin, 0);
        assert_eq!(plugin.failure(0), None, "replaced");
        let call = fetch_of(&shared, &mut plugin, 0);
        let out = plugin
            .deliver_http_response(call.id, Some(HttpCallResponse::new(200, "t2")))
            .unwrap();
        assert_eq!(
            outcomes(&out.events),
            [(again, Ok("t2".to_owned()))],
            "step {step}"
        );
    }
}

// ---- a configuration update while streams are in flight -----------------------------------------

/// Envoy applies a new plugin configuration by starting new VMs (new root contexts) and sending
/// new streams there, while streams in flight finish on the old VMs. The callout filter's waiters
/// on the old VMs are still answered by the old roots; rate-limit's old and new configurations
/// use separate shared-data keys, so neither corrupts the other's buckets.
#[test]
fn a_config_update_mid_traffic_lets_old_streams_finish() {
    let shared = SharedState::new();
    shared.set_clusters(["token-service", "token-service-v2"]);
    let mut old = load(
        "callout",
        "meshward_callout",
        r#"{"waitMs": 300}"#,
        FailPolicy::FailClosed,
        &shared,
    );
    let waiting: Vec<StreamId> = (0..WORKERS).map(|w| wait(&mut old, w)).collect();
    let calls: Vec<_> = (0..WORKERS)
        .map(|w| fetch_of(&shared, &mut old, w))
        .collect();
    let mut new = load(
        "callout",
        "meshward_callout",
        r#"{"waitMs": 300, "cluster": "token-service-v2"}"#,
        FailPolicy::FailClosed,
        &shared,
    );
    let fresh = wait(&mut new, 0);
    let new_call = fetch_of(&shared, &mut new, 0);
    assert_eq!(new_call.cluster, "token-service-v2");
    for (worker, call) in calls.into_iter().enumerate() {
        assert_eq!(call.cluster, "token-service");
        let out = old
            .deliver_http_response(call.id, Some(HttpCallResponse::new(200, "old")))
            .unwrap();
        assert_eq!(
            outcomes(&out.events),
            [(waiting[worker], Ok("old".to_owned()))]
        );
        let mut response = HeaderMap::from_pairs([(":status", "200")]);
        assert_eq!(
            old.response_headers(waiting[worker], &mut response, true)
                .unwrap()
                .trap,
            None
        );
        assert_eq!(old.finish(waiting[worker]).unwrap().trap, None);
    }
    let out = new
        .deliver_http_response(new_call.id, Some(HttpCallResponse::new(200, "new")))
        .unwrap();
    assert_eq!(outcomes(&out.events), [(fresh, Ok("new".to_owned()))]);
    let _ = old.shutdown();

    // rate-limit: a tighter limit takes effect for new streams at once, and the old VMs keep
    // charging their own buckets until they are gone.
    let shared = SharedState::new();
    let limit = |n: u32| {
        json!({"rules": [{"name": "user", "key": {"type": "header", "name": "x-user-id"},
            "tokenBucket": {"maxTokens": n, "fillInterval": "3600s"}}]})
        .to_string()
    };
    let mut old = load(
        "rate-limit",
        "meshward_rate_limit",
        &limit(5),
        FailPolicy::FailClosed,
        &shared,
    );
    let in_flight: Vec<StreamId> = (0..WORKERS)
        .map(|w| {
            let stream = old.new_stream(w).unwrap();
            let mut headers = HeaderMap::from_pairs([
                (":method", "GET"),
                (":path", "/"),
                (":authority", "a"),
                ("x-user-id", "dave"),
            ]);
            let out = old.request_headers(stream, &mut headers, true).unwrap();
            assert_eq!(out.action, Action::Continue);
            stream
        })
        .collect();
    let mut new = load(
        "rate-limit",
        "meshward_rate_limit",
        &limit(2),
        FailPolicy::FailClosed,
        &shared,
    );
    let allowed_new = (0..6)
        .filter(|i| {
            new.http_request(i % WORKERS, user("dave"), Response::new(200))
                .unwrap()
                .upstream_called
        })
        .count();
    assert_eq!(allowed_new, 2, "the new limit, on its own buckets");
    for stream in in_flight {
        let mut response = HeaderMap::from_pairs([(":status", "200")]);
        assert_eq!(
            old.response_headers(stream, &mut response, true)
                .unwrap()
                .trap,
            None
        );
        assert_eq!(old.finish(stream).unwrap().trap, None);
    }
    let allowed_old = (0..4)
        .filter(|i| {
            old.http_request(i % WORKERS, user("dave"), Response::new(200))
                .unwrap()
                .upstream_called
        })
        .count();
    assert_eq!(
        allowed_old, 1,
        "the old configuration's bucket: 5 - 4 in flight"
    );
}
