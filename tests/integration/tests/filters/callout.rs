//! The core's async shape through the real `dist/callout.wasm` (test-only filter,
//! `tests/callout-filter`) on 4 worker VMs: streams paused on a callout made by the **root**
//! context are resumed (or replied to) from the root's callbacks — `on_http_call_response` and
//! `on_tick` — through `proxy_set_effective_context`, as in Envoy.
//!
//! The clock is the harness's `FakeClock` and the upstream cluster `token-service` is fake: the
//! tests answer its calls with `deliver_http_response`. Every step checks that no VM trapped
//! (fail-closed would answer 503 `wasm_fail_stream`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshward_host::{
    Action, CalloutOutcome, FailPolicy, HeaderMap, HostEngine, HttpCallResponse, LocalReply,
    Module, PendingHttpCall, Plugin, PluginSpec, SharedState, StreamEvent, StreamId,
};

const WORKERS: usize = 4;
const TOKEN_HEADER: &str = "x-callout-token";

fn module() -> Module {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/callout.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

/// The plugin on 4 workers, with `token-service` as the only known cluster.
fn load(config: &str) -> (SharedState, Plugin) {
    let shared = SharedState::new();
    shared.set_clusters(["token-service"]);
    let spec = PluginSpec::new("callout", "callout")
        .with_vm_id("meshward_callout")
        .with_configuration(config)
        .with_workers(WORKERS)
        .with_fail_policy(FailPolicy::FailClosed);
    let plugin = match Plugin::load(HostEngine::global().unwrap(), &module(), spec, &shared) {
        Ok(plugin) => plugin,
        Err(e) => panic!("config {config} rejected: {e:?}"),
    };
    (shared, plugin)
}

fn request_headers() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/api"),
        (":scheme", "http"),
        (":authority", "example.com"),
    ])
}

/// Starts a request on `worker`; returns the stream, the callback's action and the request
/// headers as they left the callback.
fn start(plugin: &mut Plugin, worker: usize) -> (StreamId, Action, HeaderMap) {
    let stream = plugin.new_stream(worker).unwrap();
    let mut headers = request_headers();
    let out = plugin.request_headers(stream, &mut headers, true).unwrap();
    assert_eq!(out.trap, None);
    (stream, out.action, headers)
}

/// Starts a request that must pause (no token on that VM yet).
fn start_waiting(plugin: &mut Plugin, worker: usize) -> StreamId {
    let (stream, action, _) = start(plugin, worker);
    assert_eq!(action, Action::Pause, "worker {worker}");
    stream
}

/// The response side and the end of a stream, checking nothing traps.
fn finish(plugin: &mut Plugin, stream: StreamId, response: &mut HeaderMap) {
    let out = plugin.response_headers(stream, response, true).unwrap();
    assert_eq!(out.trap, None);
    assert_eq!(plugin.finish(stream).unwrap().trap, None);
}

fn no_trap(out: &CalloutOutcome) {
    assert_eq!(out.trap, None, "logs: {:?}", out.logs);
    for event in &out.events {
        assert!(
            !matches!(event, StreamEvent::Failed { .. }),
            "a VM failed: {event:?}"
        );
    }
}

fn no_vm_failed(plugin: &Plugin) {
    for worker in 0..WORKERS {
        assert_eq!(plugin.failure(worker), None, "worker {worker}");
    }
}

/// Fires the kicked ticks (1 ms) and returns the token fetches now pending, one per worker.
fn run_kicked_ticks(shared: &SharedState, plugin: &mut Plugin) -> Vec<PendingHttpCall> {
    shared.clock().advance(Duration::from_millis(1));
    let out = plugin.run_due_ticks();
    no_trap(&out);
    assert!(
        out.events.is_empty(),
        "a tick only dispatches: {:?}",
        out.events
    );
    plugin.pending_http_calls()
}

fn call_of(calls: &[PendingHttpCall], worker: usize) -> PendingHttpCall {
    let mine: Vec<&PendingHttpCall> = calls.iter().filter(|c| c.id.worker == worker).collect();
    assert_eq!(mine.len(), 1, "one token fetch per VM: {calls:?}");
    mine[0].clone()
}

/// Resumed streams with the token header they carry upstream.
fn resumed(out: &CalloutOutcome) -> Vec<(StreamId, String)> {
    out.events
        .iter()
        .map(|event| match event {
            StreamEvent::Resumed {
                stream,
                request: true,
                headers: Some(headers),
                ..
            } => (
                *stream,
                headers.get(TOKEN_HEADER).unwrap_or("(none)").to_owned(),
            ),
            other => panic!("expected a resumed request, got {other:?}"),
        })
        .collect()
}

/// Local replies sent to waiting streams.
fn replies(out: &CalloutOutcome) -> Vec<(StreamId, LocalReply)> {
    out.events
        .iter()
        .map(|event| match event {
            StreamEvent::LocalReply { stream, reply } => (*stream, reply.clone()),
            other => panic!("expected a local reply, got {other:?}"),
        })
        .collect()
}

#[test]
fn waiters_on_every_vm_are_resumed_from_their_roots_callout_response() {
    let (shared, mut plugin) = load("");
    // (1) No VM has a token: two requests per VM pause; nothing is fetched before a root runs.
    let waiting: Vec<[StreamId; 2]> = (0..WORKERS)
        .map(|w| [start_waiting(&mut plugin, w), start_waiting(&mut plugin, w)])
        .collect();
    assert!(plugin.pending_http_calls().is_empty());

    // The first waiter kicked its root's timer: 1 ms later each root dispatches one fetch.
    let calls = run_kicked_ticks(&shared, &mut plugin);
    assert_eq!(calls.len(), WORKERS);
    for call in &calls {
        assert_eq!(call.cluster, "token-service");
        assert_eq!(call.headers.get(":path"), Some("/token"));
        assert_eq!(call.headers.get(":authority"), Some("token-service"));
        assert_eq!(call.timeout_ms, 1000);
        assert_eq!(call.stream, None, "made by the root, not by a stream");
    }

    // (2) Each answer, delivered to that VM's root, resumes exactly that VM's waiters with
    // the header (tokens differ per VM: the cache is per VM).
    for (worker, streams) in waiting.iter().enumerate() {
        let token = format!("token-{worker}");
        let call = call_of(&calls, worker);
        let out = plugin
            .deliver_http_response(call.id, Some(HttpCallResponse::new(200, token.clone())))
            .unwrap();
        no_trap(&out);
        assert_eq!(
            resumed(&out),
            [(streams[0], token.clone()), (streams[1], token)]
        );
        for stream in streams {
            finish(
                &mut plugin,
                *stream,
                &mut HeaderMap::from_pairs([(":status", "200")]),
            );
        }
    }
    assert!(plugin.pending_http_calls().is_empty());

    // (5) With the token cached, a request continues at once, and no callout follows.
    for worker in 0..WORKERS {
        let (stream, action, headers) = start(&mut plugin, worker);
        assert_eq!(action, Action::Continue);
        let token = format!("token-{worker}");
        assert_eq!(headers.get(TOKEN_HEADER), Some(token.as_str()));
        finish(
            &mut plugin,
            stream,
            &mut HeaderMap::from_pairs([(":status", "200")]),
        );
    }
    shared.clock().advance(Duration::from_secs(1));
    no_trap(&plugin.run_due_ticks());
    assert!(plugin.pending_http_calls().is_empty());
    no_vm_failed(&plugin);
}

#[test]
fn a_failed_callout_answers_every_waiter_503_and_the_next_request_asks_again() {
    let (shared, mut plugin) = load("");
    let waiting: Vec<[StreamId; 2]> = (0..3)
        .map(|w| [start_waiting(&mut plugin, w), start_waiting(&mut plugin, w)])
        .collect();
    let calls = run_kicked_ticks(&shared, &mut plugin);
    // (3) Reset (Envoy delivers 0 headers, status 11 "reset"), a 500, a 200 with no token.
    let answers = [
        None,
        Some(HttpCallResponse::new(500, "down")),
        Some(HttpCallResponse::new(200, "")),
    ];
    for (worker, answer) in answers.into_iter().enumerate() {
        let out = plugin
            .deliver_http_response(call_of(&calls, worker).id, answer)
            .unwrap();
        no_trap(&out);
        let replied = replies(&out);
        let streams: Vec<StreamId> = replied.iter().map(|(s, _)| *s).collect();
        assert_eq!(streams, waiting[worker], "worker {worker}");
        for (stream, reply) in replied {
            assert_eq!(
                (reply.status, reply.details.as_str()),
                (503, "meshward_callout_failed"),
                "worker {worker}"
            );
            // The client gets the 503: the reply runs through the filter's response side.
            finish(&mut plugin, stream, &mut reply.response_headers());
        }
    }
    // No token was cached: the next request on such a VM waits and a new fetch leaves.
    let again = start_waiting(&mut plugin, 0);
    let calls = run_kicked_ticks(&shared, &mut plugin);
    let out = plugin
        .deliver_http_response(call_of(&calls, 0).id, Some(HttpCallResponse::new(200, "t")))
        .unwrap();
    assert_eq!(resumed(&out), [(again, "t".to_owned())]);
    no_vm_failed(&plugin);
}

#[test]
fn a_refused_dispatch_answers_the_waiters_503_from_the_tick() {
    // The proxy refuses calls to a cluster it does not know (BadArgument).
    let (shared, mut plugin) = load(r#"{"cluster": "nowhere"}"#);
    let stream = start_waiting(&mut plugin, 2);
    shared.clock().advance(Duration::from_millis(1));
    let out = plugin.run_due_ticks();
    no_trap(&out);
    let replied = replies(&out);
    assert_eq!(replied.len(), 1);
    assert_eq!(replied[0].0, stream);
    assert_eq!(replied[0].1.details, "meshward_callout_failed");
    assert!(plugin.pending_http_calls().is_empty());
    no_vm_failed(&plugin);
}

#[test]
fn a_waiter_past_its_deadline_gets_504_and_a_late_token_is_still_cached() {
    let (shared, mut plugin) = load(r#"{"waitMs": 200, "tickMs": 50}"#);
    let first = start_waiting(&mut plugin, 0);
    let second = start_waiting(&mut plugin, 1);
    let calls = run_kicked_ticks(&shared, &mut plugin);
    assert_eq!(calls.len(), 2);

    // (4) The token service is slow: ticks before the deadline answer nobody.
    shared.clock().advance(Duration::from_millis(150));
    let out = plugin.run_due_ticks();
    no_trap(&out);
    assert!(out.events.is_empty(), "{:?}", out.events);
    shared.clock().advance(Duration::from_millis(100));
    let out = plugin.run_due_ticks();
    no_trap(&out);
    let replied = replies(&out);
    let streams: Vec<StreamId> = replied.iter().map(|(s, _)| *s).collect();
    assert_eq!(streams, [first, second]);
    for (stream, reply) in replied {
        assert_eq!(
            (reply.status, reply.details.as_str()),
            (504, "meshward_callout_timeout")
        );
        finish(&mut plugin, stream, &mut reply.response_headers());
    }

    // The late answer resumes nobody but fills the cache for the next request.
    let out = plugin
        .deliver_http_response(
            call_of(&calls, 0).id,
            Some(HttpCallResponse::new(200, "late")),
        )
        .unwrap();
    no_trap(&out);
    assert!(out.events.is_empty(), "{:?}", out.events);
    let (stream, action, headers) = start(&mut plugin, 0);
    assert_eq!(action, Action::Continue);
    assert_eq!(headers.get(TOKEN_HEADER), Some("late"));
    finish(
        &mut plugin,
        stream,
        &mut HeaderMap::from_pairs([(":status", "200")]),
    );
    no_vm_failed(&plugin);
}

#[test]
fn a_stream_reset_while_waiting_is_never_resumed_or_answered() {
    let (shared, mut plugin) = load(r#"{"waitMs": 200, "tickMs": 50}"#);
    let gone = start_waiting(&mut plugin, 0);
    let stays = start_waiting(&mut plugin, 0);
    let alone = start_waiting(&mut plugin, 1);
    let calls = run_kicked_ticks(&shared, &mut plugin);

    // (6) The client goes away: on_log, on_done, on_delete while paused.
    assert_eq!(plugin.finish(gone).unwrap().trap, None);
    assert_eq!(plugin.finish(alone).unwrap().trap, None);

    let out = plugin
        .deliver_http_response(
            call_of(&calls, 0).id,
            Some(HttpCallResponse::new(200, "tok")),
        )
        .unwrap();
    no_trap(&out);
    assert_eq!(resumed(&out), [(stays, "tok".to_owned())]);

    // Worker 1's only waiter is gone: its deadline passes and nobody is answered.
    shared.clock().advance(Duration::from_millis(300));
    let out = plugin.run_due_ticks();
    no_trap(&out);
    assert!(out.events.is_empty(), "{:?}", out.events);
    let out = plugin
        .deliver_http_response(call_of(&calls, 1).id, None)
        .unwrap();
    no_trap(&out);
    assert!(out.events.is_empty(), "{:?}", out.events);
    finish(
        &mut plugin,
        stays,
        &mut HeaderMap::from_pairs([(":status", "200")]),
    );
    no_vm_failed(&plugin);
}

#[test]
fn beyond_max_waiters_a_request_gets_503_at_once() {
    let (_shared, mut plugin) = load(r#"{"maxWaiters": 2}"#);
    start_waiting(&mut plugin, 3);
    start_waiting(&mut plugin, 3);
    let (stream, action, _) = start(&mut plugin, 3);
    let Action::LocalReply(reply) = action else {
        panic!("expected a local reply, got {action:?}");
    };
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (503, "meshward_callout_overloaded")
    );
    finish(&mut plugin, stream, &mut reply.response_headers());
    // Other VMs have their own registry.
    start_waiting(&mut plugin, 0);
    no_vm_failed(&plugin);
}
