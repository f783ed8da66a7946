//! A root callback resumes or answers a paused stream (`tests/fixtures/wat/root_resume.wat`):
//! the shape of every filter whose streams wait on data its root context fetches. Envoy
//! behaviour pinned here: `proxy_set_tick_period_milliseconds` called from a stream context
//! sets its root's timer and restarts it from now; inside `proxy_on_tick`,
//! `proxy_set_effective_context(stream)` makes header writes, `proxy_continue_stream` and
//! `proxy_send_local_response` act on that paused stream.

use std::time::Duration;

use meshward_host::{Action, HeaderMap, HostEngine, Plugin, PluginSpec, SharedState, StreamEvent};

use crate::support::module;

fn request() -> HeaderMap {
    HeaderMap::from_pairs([(":path", "/"), (":method", "GET"), (":authority", "a.test")])
}

#[test]
fn a_stream_kicks_its_roots_timer_and_the_tick_resumes_or_answers_it() {
    let shared = SharedState::new();
    let spec = PluginSpec::new("root-resume", "root_resume").with_workers(2);
    let mut plugin = Plugin::load(
        HostEngine::global().unwrap(),
        &module("root_resume.wat"),
        spec,
        &shared,
    )
    .unwrap();

    let first = plugin.new_stream(1).unwrap();
    let out = plugin.request_headers(first, &mut request(), true).unwrap();
    assert_eq!(out.action, Action::Pause);
    shared.clock().advance(Duration::from_millis(4));
    assert!(
        plugin.run_due_ticks().events.is_empty(),
        "5 ms from the stream's call, not yet"
    );
    shared.clock().advance(Duration::from_millis(1));
    let ticked = plugin.run_due_ticks();
    assert_eq!(ticked.trap, None);
    match &ticked.events[..] {
        [
            StreamEvent::Resumed {
                stream,
                request: true,
                headers: Some(headers),
                ..
            },
        ] => {
            assert_eq!(*stream, first);
            assert_eq!(headers.get("x-resumed"), Some("tick"));
        }
        other => panic!("worker 1's tick should resume its stream: {other:?}"),
    }
    assert_eq!(plugin.finish(first).unwrap().trap, None);

    let second = plugin.new_stream(1).unwrap();
    plugin
        .request_headers(second, &mut request(), true)
        .unwrap();
    shared.clock().advance(Duration::from_millis(5));
    let ticked = plugin.run_due_ticks();
    match &ticked.events[..] {
        [StreamEvent::LocalReply { stream, reply }] => {
            assert_eq!(*stream, second);
            assert_eq!((reply.status, reply.details.as_str()), (504, "late"));
        }
        other => panic!("expected the 504: {other:?}"),
    }
    // Ticks with nobody waiting (worker 0's at its configured 1000 ms) touch no stream.
    shared.clock().advance(Duration::from_millis(990));
    let ticked = plugin.run_due_ticks();
    assert!(ticked.events.is_empty() && ticked.trap.is_none());
    assert_eq!(plugin.failure(0), None);
    assert_eq!(plugin.failure(1), None);
}
