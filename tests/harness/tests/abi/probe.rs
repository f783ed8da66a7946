//! ABI edge cases through the multi-scenario WAT probe.

use std::time::Duration;

use meshward_host::{
    Action, CallReply, FailPolicy, HeaderMap, HttpCallResponse, LogLevel, Phase, Request, Response,
    SharedState, StatsTag, StreamInfo,
};

use crate::support::{messages, probe, probe_with, statuses};

#[test]
fn empty_results_come_back_as_null_without_allocating() {
    let (_, mut plugin) = probe("e");
    let out = plugin
        .http_request(
            0,
            Request::get("/", "a.test").with_header("x-empty", ""),
            Response::new(200),
        )
        .unwrap();
    // get x-empty: Ok + (0,0); empty body: Ok + (0,0); absent header: NotFound;
    // plugin configuration outside on_configure: NotFound; buffer type 9: BadArgument.
    assert_eq!(statuses(&out.logs), vec![0, 1, 0, 1, 1, 1, 2]);
    assert_eq!(out.response.status(), Some(200));
}

#[test]
fn oversized_map_is_parsed_as_empty_like_envoy() {
    let (_, mut plugin) = probe("b");
    let out = plugin
        .http_request(
            0,
            Request::get("/", "a.test").with_header("x-keep", "1"),
            Response::new(200),
        )
        .unwrap();
    assert_eq!(statuses(&out.logs), vec![0, 0]);
    let forwarded = out.request_headers_after.unwrap();
    assert_eq!(
        forwarded.to_string_pairs(),
        vec![("x-after".to_owned(), "1".to_owned())]
    );
    assert!(
        !out.route_cache_cleared,
        "Envoy >= 1.33 does not clear the route cache on header mutation"
    );
}

#[test]
fn legacy_mode_clears_route_cache_on_any_request_header_mutation() {
    let shared = SharedState::new();
    let spec = meshward_host::PluginSpec {
        legacy_clear_route_cache_on_header_mutation: true,
        ..meshward_host::PluginSpec::new("probe", "probe_root").with_configuration("b")
    };
    let module = crate::support::module("probe.wat");
    let mut plugin = meshward_host::Plugin::load(
        meshward_host::HostEngine::global().unwrap(),
        &module,
        spec,
        &shared,
    )
    .unwrap();
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert!(out.route_cache_cleared);
}

#[test]
fn bad_pointers_and_unknown_enums_get_envoy_status_codes() {
    let (_, mut plugin) = probe("p");
    let out = plugin
        .http_request(
            0,
            Request::get("/", "a.test").with_header("x-empty", ""),
            Response::new(200),
        )
        .unwrap();
    assert_eq!(statuses(&out.logs), vec![6, 6, 6, 2, 2, 2, 12, 2, 6]);
    assert!(out.traps.is_empty());
    assert_eq!(out.response.status(), Some(200));
}

#[test]
fn log_level_is_reported_from_the_spec_including_envoys_off() {
    for (level, abi) in [
        (LogLevel::Trace, 0),
        (LogLevel::Critical, 5),
        (LogLevel::Off, 6),
    ] {
        let shared = SharedState::new();
        let spec = meshward_host::PluginSpec {
            log_level: level,
            ..meshward_host::PluginSpec::new("probe", "probe_root").with_configuration("g")
        };
        let module = crate::support::module("probe.wat");
        let mut plugin = meshward_host::Plugin::load(
            meshward_host::HostEngine::global().unwrap(),
            &module,
            spec,
            &shared,
        )
        .unwrap();
        let out = plugin
            .http_request(0, Request::get("/", "a.test"), Response::new(200))
            .unwrap();
        // get_log_level: Ok, then the value it wrote.
        assert_eq!(statuses(&out.logs), vec![0, abi], "{level:?}");
    }
    // A line cannot be logged at "off": proxy_log(6) is a BadArgument (see the `p` scenario).
    assert_eq!(LogLevel::from_abi(6), None);
}

#[test]
fn shared_data_follows_envoy_cas_rules() {
    let (shared, mut plugin) = probe("c");
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    // set (cas 0) ok, get ok, set with stale cas: CasMismatch, set with current cas ok,
    // set with a cas on a missing key: inserted, get missing: NotFound.
    assert_eq!(statuses(&out.logs), vec![0, 0, 8, 0, 0, 1]);
    let data = shared.shared_data("");
    assert_eq!(data.get("k").map(|(v, _)| v.as_slice()), Some(&b"v2"[..]));
    assert_eq!(data.get("new").map(|(v, _)| v.as_slice()), Some(&b"x"[..]));
    assert_eq!(out.shared_data.get("").unwrap(), &data);
    assert_ne!(data["k"].1, data["new"].1, "every write gets a new cas");
}

#[test]
fn local_reply_is_deferred_and_reenters_the_same_filter_response_callbacks() {
    let (_, mut plugin) = probe("l");
    let mut upstream_called = false;
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    upstream_called |= out.upstream_called;
    assert!(!upstream_called);
    let (by, reply) = out.local_reply.clone().unwrap();
    assert_eq!(by, 0);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.details, "denied_by_probe");
    assert_eq!(reply.grpc_status, None);
    assert!(matches!(out.request_action, Action::LocalReply(_)));
    assert_eq!(out.response.status(), Some(403));
    assert_eq!(out.response.body, b"no");
    assert_eq!(out.response_header("content-length"), Some("2"));
    assert_eq!(out.response_header("content-type"), Some("text/plain"));
    assert_eq!(out.response_header("x-probe"), Some("yes"));
    let logs = messages(&out);
    let pos = |m: &str| {
        logs.iter()
            .position(|l| l == m)
            .unwrap_or_else(|| panic!("no log {m:?} in {logs:?}"))
    };
    assert!(
        pos("after-send") < pos("response-headers"),
        "the hostcall returned before the reply was sent"
    );
    assert!(pos("response-headers") < pos("403"));
    assert!(pos("on_log") < pos("on_done") && pos("on_done") < pos("on_delete"));
}

#[test]
fn trap_fails_closed_with_503_on_every_worker() {
    let shared = SharedState::new();
    let mut plugin = probe_with("t", 4, FailPolicy::FailClosed, &shared);
    for worker in 0..4 {
        let out = plugin
            .http_request(worker, Request::get("/", "a.test"), Response::new(200))
            .unwrap();
        let (_, reply) = out.local_reply.clone().unwrap();
        assert_eq!(
            (reply.status, reply.details.as_str(), reply.grpc_status),
            (503, "wasm_fail_stream", Some(14))
        );
        assert_eq!(out.response.status(), Some(503));
        assert!(!out.upstream_called);
        assert!(
            out.traps[0].contains("proxy_on_request_headers"),
            "{:?}",
            out.traps
        );
        assert!(plugin.failure(worker).is_some());
        // The failed VM gets no more callbacks, and new streams still fail closed.
        let again = plugin
            .http_request(worker, Request::get("/", "a.test"), Response::new(200))
            .unwrap();
        assert_eq!(again.response.status(), Some(503));
        assert!(again.traps.is_empty());
        assert_eq!(again.fuel, 0);
    }
}

#[test]
fn trap_fails_open_and_passes_the_request_on_every_worker() {
    let shared = SharedState::new();
    let mut plugin = probe_with("t", 4, FailPolicy::FailOpen, &shared);
    for worker in 0..4 {
        let out = plugin
            .http_request(worker, Request::get("/", "a.test"), Response::new(200))
            .unwrap();
        assert!(out.upstream_called);
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(out.traps.len(), 1);
        assert!(plugin.failure(worker).is_some());
        let again = plugin
            .http_request(worker, Request::get("/", "a.test"), Response::new(200))
            .unwrap();
        assert!(again.upstream_called);
        assert!(again.phases.iter().all(|p| p.outcome.skipped));
    }
}

#[test]
fn reload_policy_starts_a_fresh_vm_for_the_next_request() {
    let shared = SharedState::new();
    let mut plugin = probe_with("t", 1, FailPolicy::Reload, &shared);
    let starts = |p: &meshward_host::Plugin| {
        p.logs()
            .iter()
            .filter(|l| l.message == "initialized")
            .count()
    };
    assert_eq!(starts(&plugin), 2, "canary + one worker");
    let first = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(first.response.status(), Some(503));
    let second = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(starts(&plugin), 3, "the failed VM was replaced");
    assert_eq!(
        second.traps.len(),
        1,
        "the fresh VM ran (and trapped again)"
    );
}

#[test]
fn infinite_loop_is_stopped_by_the_test_only_fuel_guard() {
    let shared = SharedState::new();
    let spec = meshward_host::PluginSpec {
        fuel_per_callback: 5_000_000,
        ..meshward_host::PluginSpec::new("probe", "probe_root").with_configuration("i")
    };
    let module = crate::support::module("probe.wat");
    let mut plugin = meshward_host::Plugin::load(
        meshward_host::HostEngine::global().unwrap(),
        &module,
        spec,
        &shared,
    )
    .unwrap();
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(out.response.status(), Some(503));
    assert!(out.traps[0].contains("out of fuel"), "{:?}", out.traps);
}

#[test]
fn http_call_pauses_and_the_response_resumes_the_stream() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    let out = plugin
        .http_request_with(0, Request::get("/", "a.test"), Response::new(200), |call| {
            assert_eq!(call.cluster, "upstream-cluster");
            CallReply::Respond(HttpCallResponse::new(200, "ok"))
        })
        .unwrap();
    // unknown cluster: BadArgument; missing :authority: BadArgument; ok; then in the
    // callback: set_effective_context ok, add header ok, continue ok.
    assert_eq!(statuses(&out.logs), vec![2, 2, 0, 0, 0, 0]);
    assert!(out.upstream_called);
    assert_eq!(out.request_header("x-call"), Some("done"));
    assert_eq!(out.calls_made.len(), 1);
    let call = &out.calls_made[0];
    assert_eq!(call.id.token, 4);
    assert_eq!(call.timeout_ms, 1000);
    assert_eq!(call.headers.get(":path"), Some("/check"));
    assert!(out.pending_calls.is_empty());
}

#[test]
fn an_http_call_response_is_tallied_as_its_own_export() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    plugin.reset_export_costs();
    let out = plugin
        .http_request_with(0, Request::get("/", "a.test"), Response::new(200), |_| {
            CallReply::Respond(HttpCallResponse::new(200, "ok"))
        })
        .unwrap();
    let costs = plugin.export_costs();
    let response = costs.get("proxy_on_http_call_response");
    assert_eq!(response.calls, 1);
    assert!(response.hostcalls >= 3, "{response:?}");
    assert_eq!(costs.total().fuel, out.fuel);
    assert_eq!(costs.total().hostcalls, out.hostcalls);
}

#[test]
fn failed_http_call_is_delivered_with_zero_headers() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    let out = plugin
        .http_request_with(0, Request::get("/", "a.test"), Response::new(200), |_| {
            CallReply::Fail
        })
        .unwrap();
    assert!(!out.upstream_called);
    // Three http_calls (unknown cluster, no :authority, ok), set_effective_context, then in the
    // failure delivery: call response header BadArgument, call response body NotFound (Envoy
    // keeps no response object for a failed call).
    assert_eq!(statuses(&out.logs), vec![2, 2, 0, 0, 2, 1]);
    assert_eq!(out.response.status(), Some(502));
    assert_eq!(out.response.body, b"callout failed");
}

#[test]
fn unanswered_http_call_leaves_the_stream_paused_and_the_call_pending() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(out.stalled, Some(0));
    assert_eq!(out.request_action, Action::Pause);
    assert!(!out.upstream_called);
    assert_eq!(out.pending_calls.len(), 1);
    // The call is owned by the root: it can still be answered after the stream ended.
    let late = plugin
        .deliver_http_response(
            out.pending_calls[0].id,
            Some(HttpCallResponse::new(200, "")),
        )
        .unwrap();
    assert_eq!(
        statuses(&late.logs).first(),
        Some(&2),
        "the stream's context is gone: set_effective_context fails"
    );
}

#[test]
fn a_call_past_its_timeout_gets_envoys_local_504_when_the_clock_advances() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    let stream = plugin.new_stream(0).unwrap();
    let mut headers =
        HeaderMap::from_pairs([(":path", "/"), (":method", "GET"), (":authority", "a.test")]);
    let out = plugin.request_headers(stream, &mut headers, true).unwrap();
    assert_eq!(out.action, Action::Pause);
    assert_eq!(plugin.pending_http_calls()[0].timeout_ms, 1000);

    shared.clock().advance(Duration::from_millis(999));
    let early = plugin.run_async();
    assert!(early.events.is_empty(), "{:?}", early.events);
    assert_eq!(plugin.pending_http_calls().len(), 1, "not yet due");

    shared.clock().advance(Duration::from_millis(1));
    let expired = plugin.expire_calls();
    assert_eq!(expired.trap, None);
    assert!(plugin.pending_http_calls().is_empty());
    // Delivered as a response (the probe resumes and tags the request), not as a reset (which
    // the probe answers with a 502): Envoy's router turns a timeout into a local 504.
    match &expired.events[..] {
        [
            meshward_host::StreamEvent::Resumed {
                stream: s,
                headers: Some(h),
                ..
            },
        ] => {
            assert_eq!(*s, stream);
            assert_eq!(h.get("x-call"), Some("done"));
        }
        other => panic!("unexpected events {other:?}"),
    }
    assert_eq!(statuses(&expired.logs), vec![0, 0, 0]);
    let timeout = HttpCallResponse::upstream_timeout();
    assert_eq!(timeout.headers.get(":status"), Some("504"));
    assert_eq!(timeout.headers.get("content-length"), Some("24"));
    assert_eq!(timeout.body, b"upstream request timeout");
    assert!(plugin.expire_calls().events.is_empty(), "delivered once");
}

#[test]
fn a_drivers_timeout_reply_is_the_same_504_response() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    let out = plugin
        .http_request_with(0, Request::get("/", "a.test"), Response::new(200), |_| {
            CallReply::Timeout
        })
        .unwrap();
    assert_eq!(out.request_header("x-call"), Some("done"));
    assert!(out.upstream_called);
    assert_eq!(statuses(&out.logs), vec![2, 2, 0, 0, 0, 0]);
}

#[test]
fn stepping_api_reports_resume_with_the_mutated_held_headers() {
    let (shared, mut plugin) = probe("h");
    shared.set_clusters(["upstream-cluster"]);
    let stream = plugin.new_stream(0).unwrap();
    let mut headers =
        HeaderMap::from_pairs([(":path", "/"), (":method", "GET"), (":authority", "a.test")]);
    let out = plugin.request_headers(stream, &mut headers, true).unwrap();
    assert_eq!(out.action, Action::Pause);
    let calls = plugin.pending_http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].stream, Some(stream));
    let delivered = plugin
        .deliver_http_response(calls[0].id, Some(HttpCallResponse::new(200, "ok")))
        .unwrap();
    match &delivered.events[..] {
        [
            meshward_host::StreamEvent::Resumed {
                stream: s,
                request: true,
                headers: Some(h),
                ..
            },
        ] => {
            assert_eq!(*s, stream);
            assert_eq!(h.get("x-call"), Some("done"));
        }
        other => panic!("unexpected events {other:?}"),
    }
    let fin = plugin.finish(stream).unwrap();
    let order: Vec<&str> = fin.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(order, vec!["on_log", "on_done", "on_delete"]);
}

#[test]
fn metrics_follow_envoy_rules() {
    let (shared, mut plugin) = probe("m");
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(
        statuses(&out.logs),
        vec![0, 0, 2, 0, 0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 4, 5, 6]
    );
    assert_eq!(
        shared.metric_value("probe_requests_total"),
        6,
        "increment 1 + record 5 (record adds on counters)"
    );
    assert_eq!(shared.metric_value("probe_gauge"), 40);
    assert_eq!(shared.metric("probe_latency_ms").unwrap().samples, vec![7]);
    assert!(
        out.metrics
            .contains_key("wasmcustom.action=.=generated;.;probe_ids_total")
    );
}

#[test]
fn prometheus_export_matches_envoy_with_stats_tags() {
    let (shared, mut plugin) = probe("m");
    plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    let text = shared.prometheus(&[StatsTag::istio("action")]).unwrap();
    let mut expected = String::from(
        "# TYPE probe_ids_total counter\nprobe_ids_total{action=\"generated\"} 3\n\
         # TYPE probe_requests_total counter\nprobe_requests_total{} 6\n\
         # TYPE probe_gauge gauge\nprobe_gauge{} 40\n\
         # TYPE probe_latency_ms histogram\n",
    );
    for le in ["0.5", "1", "5"] {
        expected.push_str(&format!("probe_latency_ms_bucket{{le=\"{le}\"}} 0\n"));
    }
    for le in [
        "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000", "60000",
        "300000", "600000", "1800000", "3600000",
    ] {
        expected.push_str(&format!("probe_latency_ms_bucket{{le=\"{le}\"}} 1\n"));
    }
    expected.push_str("probe_latency_ms_bucket{le=\"+Inf\"} 1\nprobe_latency_ms_sum{} 7\nprobe_latency_ms_count{} 1\n");
    assert_eq!(text, expected);

    let untagged = shared.prometheus(&[]).unwrap();
    assert!(untagged.contains("# TYPE action___generated___probe_ids_total counter\naction___generated___probe_ids_total{} 3\n"));
    assert!(shared.prometheus(&[StatsTag::new("bad", "(")]).is_err());
}

#[test]
fn properties_resolve_like_envoy_and_set_property_becomes_filter_state() {
    let (_, mut plugin) = probe("s");
    let info = StreamInfo {
        source_address: "10.0.0.1:1234".to_owned(),
        ..StreamInfo::default()
    };
    let out = plugin
        .http_request(
            0,
            Request::get("/p?q=1", "a.test").with_info(info),
            Response::new(200),
        )
        .unwrap();
    let logs = messages(&out);
    for expected in ["prop-value", "/p?q=1", "10.0.0.1:1234", "probe"] {
        assert!(
            logs.iter().any(|l| l == expected),
            "missing {expected:?} in {logs:?}"
        );
    }
    // set ok, get ok, filter_state get ok, request.path ok, source.address ok, plugin_name ok,
    // response.code before the response: NotFound; in on_response_headers: ok and == 200.
    assert_eq!(statuses(&out.logs), vec![0, 0, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(out.property("probe_prop").as_deref(), Some("prop-value"));
}

#[test]
fn clear_route_cache_foreign_function_is_reported() {
    let (_, mut plugin) = probe("r");
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(statuses(&out.logs), vec![0, 1, 0]);
    assert!(out.route_cache_cleared);
    assert_eq!(out.request_header("x-replaced"), Some("new-value"));
}

#[test]
fn wasi_functions_behave_like_envoy() {
    let shared = SharedState::new();
    let spec = meshward_host::PluginSpec {
        env: vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "2".to_owned()),
        ],
        ..meshward_host::PluginSpec::new("probe", "probe_root").with_configuration("w")
    };
    let module = crate::support::module("probe.wat");
    let mut plugin = meshward_host::Plugin::load(
        meshward_host::HostEngine::global().unwrap(),
        &module,
        spec,
        &shared,
    )
    .unwrap();
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    // stdout ok, stderr ok, fd 5: BADF, random 70000 bytes: INVAL, random 16: ok,
    // realtime clock ok, clock 7: NOTSUP, environ_sizes_get ok, 2 variables.
    assert_eq!(statuses(&out.logs), vec![0, 0, 8, 28, 0, 0, 58, 0, 2]);
    let stdout: Vec<_> = out
        .logs
        .iter()
        .filter(|l| l.message == "hello stdout")
        .map(|l| l.level)
        .collect();
    assert_eq!(stdout, vec![LogLevel::Info, LogLevel::Error]);
}

#[test]
fn proc_exit_traps_the_vm() {
    let (_, mut plugin) = probe("z");
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(out.response.status(), Some(503));
    assert!(out.traps[0].contains("proc_exit"), "{:?}", out.traps);
}

#[test]
fn shared_queue_notifies_the_last_registrant_and_ticks_fire_per_worker() {
    let shared = SharedState::new();
    let mut plugin = probe_with("q", 2, FailPolicy::FailClosed, &shared);
    let out = plugin
        .http_request(0, Request::get("/", "a.test"), Response::new(200))
        .unwrap();
    assert_eq!(statuses(&out.logs), vec![0]);
    assert!(
        !out.logs.iter().any(|l| l.message == "queue-ready"),
        "delivery is asynchronous"
    );
    let delivered = plugin.deliver_queue_ready();
    let ready: Vec<_> = delivered
        .logs
        .iter()
        .filter(|l| l.message == "queue-ready")
        .map(|l| l.worker)
        .collect();
    assert_eq!(ready, vec![Some(1)], "worker 1 registered last");
    let msgs: Vec<&str> = delivered.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(msgs, vec!["queue-ready", "0", "v1", "7"]);

    assert!(plugin.run_due_ticks().logs.is_empty(), "not due yet");
    shared.clock().advance(Duration::from_millis(1000));
    let ticks = plugin.run_due_ticks();
    assert_eq!(ticks.logs.iter().filter(|l| l.message == "tick").count(), 2);
    assert!(
        plugin.run_due_ticks().logs.is_empty(),
        "re-armed one period later"
    );
}

#[test]
fn every_phase_of_a_request_with_body_and_trailers_is_run() {
    let (_, mut plugin) = probe("n");
    let mut req = Request::new("POST", "/upload", "a.test").with_body("abc");
    req.trailers = HeaderMap::from_pairs([("x-checksum", "1")]);
    let resp = Response::new(200).with_body("done");
    let out = plugin.http_request(0, req, resp).unwrap();
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        vec![
            Phase::RequestHeaders,
            Phase::RequestBody,
            Phase::RequestTrailers,
            Phase::ResponseHeaders,
            Phase::ResponseBody
        ]
    );
    assert_eq!(out.request_body_after.as_deref(), Some(&b"abc"[..]));
    assert_eq!(out.response.body, b"done");
    assert!(out.fuel > 0);
    assert!(out.hostcalls >= 3, "on_log/on_done/on_delete log");
}
