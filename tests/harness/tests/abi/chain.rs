//! Chains: decode in order, encode in reverse, local replies back through the filters that
//! saw the request, filter state shared along the chain.

use meshward_host::{CallReply, Chain, FailPolicy, Phase, Request, Response, SharedState};

use crate::support::{messages, probe_with};

#[test]
fn local_reply_goes_back_through_the_filters_that_saw_the_request() {
    let shared = SharedState::new();
    let first = probe_with("n", 1, FailPolicy::FailClosed, &shared);
    let replier = probe_with("l", 1, FailPolicy::FailClosed, &shared);
    let last = probe_with("n", 1, FailPolicy::FailClosed, &shared);
    let mut chain = Chain::new(vec![first, replier, last]);
    let out = chain
        .run(
            0,
            Request::get("/", "a.test"),
            |_| panic!("upstream must not be called"),
            |_| CallReply::Leave,
        )
        .unwrap();
    assert_eq!(out.response.status(), Some(403));
    assert_eq!(out.local_reply.as_ref().map(|(i, _)| *i), Some(1));
    let seen: Vec<(usize, Phase)> = out.phases.iter().map(|p| (p.plugin, p.phase)).collect();
    assert_eq!(
        seen,
        vec![
            (0, Phase::RequestHeaders),
            (1, Phase::RequestHeaders),
            (1, Phase::ResponseHeaders),
            (0, Phase::ResponseHeaders),
            (1, Phase::ResponseBody),
            (0, Phase::ResponseBody)
        ]
    );
    // The last filter never saw the request: its context is created at log time only.
    assert_eq!(messages(&out).iter().filter(|m| *m == "on_log").count(), 3);
}

#[test]
fn upstream_sees_forwarded_and_original_headers_and_route_cache_state() {
    let shared = SharedState::new();
    let mutator = probe_with("r", 1, FailPolicy::FailClosed, &shared);
    let mut chain = Chain::new(vec![mutator]);
    let out = chain
        .run(
            0,
            Request::get("/", "a.test"),
            |up| {
                assert!(up.route_cache_cleared);
                assert_eq!(up.headers.get("x-replaced"), Some("new-value"));
                assert_eq!(up.original_headers.get("x-replaced"), None);
                Response::new(204)
            },
            |_| CallReply::Leave,
        )
        .unwrap();
    assert_eq!(out.response.status(), Some(204));
    assert!(out.route_cache_cleared);
}

#[test]
fn filter_state_set_by_one_filter_is_visible_to_the_next() {
    let shared = SharedState::new();
    let a = probe_with("s", 1, FailPolicy::FailClosed, &shared);
    let b = probe_with("n", 1, FailPolicy::FailClosed, &shared);
    let mut chain = Chain::new(vec![a, b]);
    let out = chain
        .run(
            0,
            Request::get("/", "a.test"),
            |_| Response::new(200),
            |_| CallReply::Leave,
        )
        .unwrap();
    assert_eq!(out.property("probe_prop").as_deref(), Some("prop-value"));
}

#[test]
fn failed_vm_in_the_middle_of_a_chain_replies_503_fail_closed_and_is_skipped_fail_open() {
    let shared = SharedState::new();
    let mut closed = Chain::new(vec![
        probe_with("n", 1, FailPolicy::FailClosed, &shared),
        probe_with("t", 1, FailPolicy::FailClosed, &shared),
    ]);
    let out = closed
        .run(
            0,
            Request::get("/", "a.test"),
            |_| Response::new(200),
            |_| CallReply::Leave,
        )
        .unwrap();
    assert_eq!(out.response.status(), Some(503));
    assert_eq!(
        out.local_reply
            .as_ref()
            .map(|(i, r)| (*i, r.details.as_str())),
        Some((1, "wasm_fail_stream"))
    );

    let mut open = Chain::new(vec![
        probe_with("n", 1, FailPolicy::FailClosed, &shared),
        probe_with("t", 1, FailPolicy::FailOpen, &shared),
    ]);
    let out = open
        .run(
            0,
            Request::get("/", "a.test"),
            |_| Response::new(200),
            |_| CallReply::Leave,
        )
        .unwrap();
    assert_eq!(out.response.status(), Some(200));
    assert!(out.upstream_called);
}
