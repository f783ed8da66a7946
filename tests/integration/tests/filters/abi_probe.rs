//! `meshward_core::abi` through the real `dist/abi-probe.wasm` in meshward-host: every entry point
//! on success and with each non-success status the host (like Envoy) returns, read back as a
//! value or a typed `HostError`, never a trap.
//!
//! The probe (`tests/abi-probe-filter`) runs the script named by the request's `x-probe` header
//! (root scripts in `on_configure`/`on_tick`/`on_queue_ready`) and logs one line per call,
//! `probe <call> -> Ok(..)|Err(<HostError>)`; the tests compare those lines exactly. The last test
//! makes one read through the SDK's own `proxy_wasm::hostcalls` wrapper instead: it panics on the
//! BadArgument our wrapper returns as an error, and the VM fails closed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use meshward_host::{
    Action, CallReply, FailPolicy, HostEngine, HttpCallResponse, HttpOutcome, LogEntry, LogLevel,
    Module, Plugin, PluginSpec, Request, Response, SharedState,
};

const WORKERS: usize = 2;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module() -> Module {
    let path = repo().join("dist/abi-probe.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

fn spec() -> PluginSpec {
    PluginSpec {
        vm_configuration: b"vm-config".to_vec(),
        ..PluginSpec::new("abi-probe", "abi_probe")
            .with_vm_id("abi-probe-vm")
            .with_configuration("probe-config")
            .with_workers(WORKERS)
            .with_fail_policy(FailPolicy::FailClosed)
    }
}

fn load_spec(spec: PluginSpec, shared: &SharedState) -> Plugin {
    match Plugin::load(HostEngine::global().unwrap(), &module(), spec, shared) {
        Ok(plugin) => plugin,
        Err(e) => panic!("abi-probe rejected: {e:?}"),
    }
}

fn load() -> (SharedState, Plugin) {
    let shared = SharedState::new();
    shared.set_clusters(["upstream"]);
    let plugin = load_spec(spec(), &shared);
    (shared, plugin)
}

/// The probe's report lines, in order.
fn lines(logs: &[LogEntry]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.message.starts_with("probe "))
        .map(|l| l.message.clone())
        .collect()
}

#[track_caller]
fn assert_lines(logs: &[LogEntry], expected: &[&str]) {
    let actual = lines(logs);
    let expected: Vec<String> = expected.iter().map(|l| format!("probe {l}")).collect();
    assert!(
        actual == expected,
        "probe lines differ\n--- actual\n{}\n--- expected\n{}",
        actual.join("\n"),
        expected.join("\n")
    );
}

/// A request for `scenario` with the headers the scripts read.
fn request(scenario: &str) -> Request {
    Request::get("/probe", "probe.test")
        .with_header("x-probe", scenario)
        .with_header("x-present", "v")
        .with_header("x-empty", "")
        .with_header("x-dup", "first")
        .with_header("x-dup", "second")
        .with_header("x-bin", b"\xff\xfe ok")
}

fn upstream_response() -> Response {
    Response::new(200).with_header("x-upstream", "u")
}

/// Runs `request` on `worker` and checks that no VM trapped.
fn send(plugin: &mut Plugin, worker: usize, request: Request, response: Response) -> HttpOutcome {
    let out = plugin.http_request(worker, request, response).unwrap();
    assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
    assert!(plugin.failure(worker).is_none());
    out
}

fn run(plugin: &mut Plugin, worker: usize, scenario: &str) -> HttpOutcome {
    send(plugin, worker, request(scenario), upstream_response())
}

fn pairs(map: Option<&meshward_host::HeaderMap>) -> Vec<(String, Vec<u8>)> {
    map.map(|m| m.pairs().to_vec()).unwrap_or_default()
}

fn owned(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

// === headers ===

const HEADERS_SCRIPT: &[&str] = &[
    "scenario Headers",
    // on_http_request_headers: the request map is available and writable.
    r#"header(request, x-present) -> Ok(Some("v"))"#,
    r#"header(request, x-empty) -> Ok(Some(""))"#,
    "header(request, x-absent) -> Ok(None)",
    r#"header(request, x-dup) -> Ok(Some("first"))"#,
    r#"header(request, x-bin) -> Ok(Some("\xff\xfe ok"))"#,
    r#"header_map(request) -> Ok([":authority": "probe.test", ":path": "/probe", ":method": "GET", ":scheme": "http", "x-probe": "headers", "x-present": "v", "x-empty": "", "x-dup": "first", "x-dup": "second", "x-bin": "\xff\xfe ok"])"#,
    // Maps that do not exist now: BadArgument for a value, an empty map for the pairs.
    "header(HttpRequestTrailers, x-t) -> Err(BadArgument)",
    "header(response, :status) -> Err(BadArgument)",
    "header(HttpCallResponseHeaders, :status) -> Err(BadArgument)",
    "header_map(HttpCallResponseHeaders) -> Ok([])",
    "set_header(HttpCallResponseHeaders, x, 1) -> Err(BadArgument)",
    "add_header(response, x-early, 1) -> Err(BadArgument)",
    "set_header(request, x-set, 1) -> Ok(())",
    "set_header(request, x-dup, only) -> Ok(())",
    r"add_header(request, x-added, \xff) -> Ok(())",
    "add_header(request, x-added, 2) -> Ok(())",
    "remove_header(request, x-empty) -> Ok(())",
    "remove_header(request, x-absent) -> Ok(())",
    r#"header(request, x-dup) -> Ok(Some("only"))"#,
    "header(request, x-empty) -> Ok(None)",
    // on_http_response_headers: the request went on, its map is gone (Envoy: BadArgument).
    "header(request, x-present) -> Err(BadArgument)",
    "header_map(request) -> Ok([])",
    "set_header(request, x-late, 1) -> Err(BadArgument)",
    "add_header(request, x-late, 1) -> Err(BadArgument)",
    "remove_header(request, x-present) -> Err(BadArgument)",
    "set_header_map(request, [x-late: 1]) -> Err(BadArgument)",
    r#"header(response, :status) -> Ok(Some("200"))"#,
    r#"header(response, x-upstream) -> Ok(Some("u"))"#,
    "set_header_map(response, [:status: 201, x-replaced: 1, x-replaced: 2]) -> Ok(())",
    r#"header_map(response) -> Ok([":status": "201", "x-replaced": "1", "x-replaced": "2"])"#,
    // on_log: request and response headers are readable again; absent request trailers are
    // NotFound there (not BadArgument), read as None.
    r#"header(request, x-present) -> Ok(Some("v"))"#,
    r#"header(request, x-set) -> Ok(Some("1"))"#,
    "header(HttpRequestTrailers, x-t) -> Ok(None)",
    r#"header(response, x-replaced) -> Ok(Some("1"))"#,
];

#[test]
fn header_maps_inside_and_outside_their_windows_on_every_worker() {
    let (_, mut plugin) = load();
    for worker in 0..WORKERS {
        let out = run(&mut plugin, worker, "headers");
        assert_lines(&out.logs, HEADERS_SCRIPT);
        assert_eq!(out.request_action, Action::Continue);
        assert_eq!(
            pairs(out.request_headers_after.as_ref()),
            owned(&[
                (":authority", b"probe.test"),
                (":path", b"/probe"),
                (":method", b"GET"),
                (":scheme", b"http"),
                ("x-probe", b"headers"),
                ("x-present", b"v"),
                ("x-dup", b"only"),
                ("x-bin", b"\xff\xfe ok"),
                ("x-set", b"1"),
                ("x-added", b"\xff"),
                ("x-added", b"2"),
            ])
        );
        assert_eq!(out.response.status(), Some(201));
        assert_eq!(
            out.response.headers.get_all("x-replaced"),
            vec![&b"1"[..], &b"2"[..]]
        );
        assert_eq!(out.response_header("x-upstream"), None);
    }
}

// === buffers ===

#[test]
fn buffers_inside_and_outside_their_windows() {
    let (_, mut plugin) = load();
    let out = send(
        &mut plugin,
        0,
        request("body").with_body("hello"),
        Response::new(200).with_body("world"),
    );
    assert_lines(
        &out.logs,
        &[
            "scenario Body",
            // on_http_request_headers: no body yet.
            "buffer(HttpRequestBody, 0, MAX) -> Ok(None)",
            // on_http_request_body.
            r#"buffer(HttpRequestBody, 0, MAX) -> Ok(Some("hello"))"#,
            r#"buffer(HttpRequestBody, 1, 3) -> Ok(Some("ell"))"#,
            // start + usize::MAX would overflow: the wrapper clips it.
            r#"buffer(HttpRequestBody, 2, MAX) -> Ok(Some("llo"))"#,
            "buffer(HttpRequestBody, 50, 10) -> Ok(None)",
            "buffer(HttpResponseBody, 0, MAX) -> Ok(None)",
            // NotFound outside their windows (configure, call response, gRPC, foreign call).
            "buffer(PluginConfiguration, 0, MAX) -> Ok(None)",
            "buffer(HttpCallResponseBody, 0, MAX) -> Ok(None)",
            "buffer(GrpcReceiveBuffer, 0, MAX) -> Ok(None)",
            "buffer(CallData, 0, MAX) -> Ok(None)",
            r#"buffer(VmConfiguration, 0, MAX) -> Ok(Some("vm-config"))"#,
            // on_http_response_body.
            r#"buffer(HttpResponseBody, 0, MAX) -> Ok(Some("world"))"#,
            "buffer(HttpRequestBody, 0, MAX) -> Ok(None)",
        ],
    );
    assert_eq!(out.request_body_after.as_deref(), Some(&b"hello"[..]));
    assert_eq!(out.response.body, b"world");
}

// === properties ===

#[test]
fn properties_and_filter_state() {
    let (_, mut plugin) = load();
    let out = run(&mut plugin, 1, "property");
    assert_lines(
        &out.logs,
        &[
            "scenario Property",
            r#"property(request.path) -> Ok(Some("/probe"))"#,
            "property(no.such.path) -> Ok(None)",
            // Envoy cannot serialize the CEL map `request`.
            "property(request) -> Err(SerializationFailure)",
            "property(response.code) -> Ok(None)",
            r#"property(plugin_name) -> Ok(Some("abi-probe"))"#,
            "set_property(probe_prop, v1) -> Ok(())",
            r#"property(probe_prop) -> Ok(Some("v1"))"#,
            r#"property(filter_state.wasm.probe_prop) -> Ok(Some("v1"))"#,
            r#"set_property(probe_empty, "") -> Ok(())"#,
            "property(probe_empty) -> Ok(None)",
            // Only once the stream completes.
            "property(request.duration) -> Ok(None)",
            // on_http_response_headers: an int64, little-endian.
            r#"property(response.code) -> Ok(Some("\xc8\x00\x00\x00\x00\x00\x00\x00"))"#,
            // on_log (the clock stands still: 0 ns): durations are int64 ns, sizes int64 bytes
            // of headers (Σ name + value, pseudo-headers included) plus body.
            r#"property(request.duration) -> Ok(Some("\x00\x00\x00\x00\x00\x00\x00\x00"))"#,
            r#"property(request.total_size) -> Ok(Some("s\x00\x00\x00\x00\x00\x00\x00"))"#,
            r#"property(response.total_size) -> Ok(Some("\x15\x00\x00\x00\x00\x00\x00\x00"))"#,
            r#"property(response.backend_latency) -> Ok(Some("\x00\x00\x00\x00\x00\x00\x00\x00"))"#,
        ],
    );
    assert_eq!(out.property("probe_prop").as_deref(), Some("v1"));
}

// === shared data and queues ===

#[test]
fn shared_data_compare_and_swap_across_worker_vms() {
    let (shared, mut plugin) = load();
    let out = run(&mut plugin, 0, "shared");
    assert_lines(
        &out.logs,
        &[
            "scenario Shared",
            "shared_data(probe-missing) -> Ok(value=None cas=None)",
            "set_shared_data(probe-k, v1, None) -> Ok(())",
            r#"shared_data(probe-k) -> Ok(value=Some("v1") cas=Some(1))"#,
            "set_shared_data(probe-k, v2, stale cas) -> Err(CasMismatch)",
            "set_shared_data(probe-k, v2, current cas) -> Ok(())",
            "set_shared_data(probe-k, v3, previous cas) -> Err(CasMismatch)",
            // A cas on a missing key is ignored (insert).
            "set_shared_data(probe-fresh, x, Some(12345)) -> Ok(())",
            // An empty value is stored (key kept, with a cas) and reads as None.
            r#"set_shared_data(probe-cleared, "", None) -> Ok(())"#,
            "shared_data(probe-cleared) -> Ok(value=None cas=Some(4))",
            r#"shared_data(probe-k) -> Ok(value=Some("v2") cas=Some(2))"#,
        ],
    );
    // The other worker VM shares the vm_id's store.
    let out = run(&mut plugin, 1, "shared-peek");
    assert_lines(
        &out.logs,
        &[
            "scenario SharedPeek",
            r#"shared_data(probe-k) -> Ok(value=Some("v2") cas=Some(2))"#,
        ],
    );
    let data = shared.shared_data("abi-probe-vm");
    assert_eq!(
        data.get("probe-k").map(|(v, _)| v.as_slice()),
        Some(&b"v2"[..])
    );
}

#[test]
fn shared_queues_tell_an_empty_item_from_an_empty_queue() {
    let (_, mut plugin) = load();
    let out = run(&mut plugin, 0, "queue");
    assert_lines(
        &out.logs,
        &[
            "scenario Queue",
            r#"resolve_queue("", probe-q) -> Ok(None)"#,
            "register_queue(probe-q) -> Ok(1)",
            r#"resolve_queue("", probe-q) -> Ok(Some(1))"#,
            "resolve_queue(abi-probe-vm, probe-q) -> Ok(Some(1))",
            "resolve_queue(other-vm, probe-q) -> Ok(None)",
            // Empty (7) reads as None.
            "dequeue(queue) -> Ok(None)",
            "enqueue(queue, item) -> Ok(())",
            r#"enqueue(queue, "") -> Ok(())"#,
            r#"dequeue(queue) -> Ok(Some("item"))"#,
            "enqueue(unknown, x) -> Err(NotFound)",
            "dequeue(unknown) -> Err(NotFound)",
        ],
    );
    // Two enqueues, two notifications to the registrant's root: the empty item, then empty.
    let ready = plugin.deliver_queue_ready();
    assert!(ready.trap.is_none(), "{:?}", ready.trap);
    assert_lines(
        &ready.logs,
        &[
            "on_queue_ready",
            r#"dequeue(queue) -> Ok(Some(""))"#,
            "on_queue_ready",
            "dequeue(queue) -> Ok(None)",
        ],
    );
}

// === contexts, time, foreign functions, gRPC tokens, stream control ===

#[test]
fn contexts_time_log_foreign_functions_and_grpc_tokens() {
    let (_, mut plugin) = load();
    let out = run(&mut plugin, 0, "misc");
    assert_lines(
        &out.logs,
        &[
            "scenario Misc",
            "log_level() -> Ok(Trace)",
            // The harness's FakeClock starts at 2026-01-01T00:00:00Z.
            "current_time_nanos() -> Ok(1767225600000000000)",
            "set_tick_period_millis(1000) -> Ok(())",
            "log(Trace)",
            "log(Debug)",
            "log(Info)",
            "log(Warn)",
            "log(Error)",
            "log(Critical)",
            "set_effective_context(root) -> Ok(())",
            // Acting on the root: the stream's request map is not there.
            "header(request, x-present) -> Err(BadArgument)",
            "set_effective_context(self) -> Ok(())",
            r#"header(request, x-present) -> Ok(Some("v"))"#,
            "set_effective_context(unknown) -> Err(BadArgument)",
            r#"call_foreign_function(clear_route_cache, "") -> Ok(None)"#,
            "call_foreign_function(no_such_function, x) -> Err(NotFound)",
            "grpc_cancel(4) -> Err(NotFound)",
            "grpc_close(4) -> Err(NotFound)",
            "call_status() -> Ok(code=0 message=None)",
            "continue_stream(Request) -> Ok(())",
            "continue_stream(Response) -> Ok(())",
        ],
    );
    let levels: Vec<LogLevel> = out
        .logs
        .iter()
        .filter(|l| l.message.starts_with("probe log("))
        .map(|l| l.level)
        .collect();
    assert_eq!(
        levels,
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical
        ]
    );
    assert!(out.route_cache_cleared);
    assert_eq!(out.request_action, Action::Continue);
    assert_eq!(out.response.status(), Some(200));
}

#[test]
fn close_stream_and_local_replies_early_late_and_in_log() {
    let (_, mut plugin) = load();

    let out = run(&mut plugin, 0, "close");
    assert_lines(
        &out.logs,
        &["scenario Close", "close_stream(Request) -> Ok(())"],
    );
    assert_eq!(out.request_action, Action::Reset);
    assert!(out.reset);

    let out = run(&mut plugin, 0, "reply");
    assert_lines(
        &out.logs,
        &[
            "scenario Reply",
            "send_local_response(403, probe denied, denied, [x-probe-reply: yes], 7) -> Ok(())",
        ],
    );
    let (_, reply) = out.local_reply.clone().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.details, "probe_denied");
    assert_eq!(reply.grpc_status, Some(7));
    assert_eq!(out.response.status(), Some(403));
    assert_eq!(out.response.body, b"denied");
    assert_eq!(out.response_header("x-probe-reply"), Some("yes"));
    assert!(!out.upstream_called);

    // From the response headers (replaces the response) and from on_log (Ok, nothing to send).
    let out = run(&mut plugin, 1, "reply-late");
    assert_lines(
        &out.logs,
        &[
            "scenario ReplyLate",
            "send_local_response(500, late reply, late, [x-late: 1], 99) -> Ok(())",
            r#"send_local_response(418, in log, "", [], None) -> Ok(())"#,
        ],
    );
    let (_, reply) = out.local_reply.clone().unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(reply.details, "late_reply");
    // 99 is no gRPC status: sent as -1.
    assert_eq!(reply.grpc_status, None);
    assert_eq!(out.response.status(), Some(500));
    assert_eq!(out.response.body, b"late");
}

// === metrics ===

#[test]
fn metrics_ids_per_vm_values_per_process() {
    let (_, mut plugin) = load();
    for (worker, counter) in [(0, 6), (1, 12)] {
        let out = run(&mut plugin, worker, "metrics");
        let counter_line = format!("metric(counter) -> Ok({counter})");
        let reopened_line = format!("metric(reopened counter) -> Ok({counter})");
        assert_lines(
            &out.logs,
            &[
                "scenario Metrics",
                // Ids are per VM (n*4 + type): the same on both workers.
                "define_metric(Counter, probe_counter) -> Ok(4)",
                "define_metric(Gauge, probe_gauge) -> Ok(5)",
                "define_metric(Histogram, probe_histogram) -> Ok(6)",
                "increment_metric(counter, 1) -> Ok(())",
                "increment_metric(counter, 0) -> Err(BadArgument)",
                "increment_metric(counter, -1) -> Err(BadArgument)",
                "increment_metric(gauge, -3) -> Ok(())",
                "increment_metric(histogram, 1) -> Err(BadArgument)",
                "increment_metric(unknown, 1) -> Err(NotFound)",
                "record_metric(counter, 5) -> Ok(())",
                "record_metric(gauge, 42) -> Ok(())",
                "record_metric(histogram, 7) -> Ok(())",
                "record_metric(unknown, 1) -> Err(NotFound)",
                // The stat is process-wide: worker 1 sees worker 0's increments.
                &counter_line,
                "metric(gauge) -> Ok(42)",
                "metric(histogram) -> Err(BadArgument)",
                "metric(unknown) -> Err(NotFound)",
                "define_metric(Counter, probe_counter) -> Ok(8)",
                &reopened_line,
            ],
        );
        assert_eq!(out.metrics["wasmcustom.probe_counter"].value, counter);
        assert_eq!(
            out.metrics["wasmcustom.probe_histogram"].samples.len(),
            worker + 1
        );
    }
}

// === http_call response callback ===

fn callout_script(success: bool) -> Vec<String> {
    let token = if success { 4 } else { 8 };
    let mut script = vec![
        "scenario Callout".to_owned(),
        format!("sdk dispatch_http_call -> Ok({token})"),
        "header(HttpCallResponseHeaders, :status) -> Err(BadArgument)".to_owned(),
    ];
    let delivery: &[&str] = if success {
        &[
            "on_http_call_response headers=1 body=12 trailers=0",
            "call_status() -> Ok(code=0 message=None)",
            r#"header(HttpCallResponseHeaders, :status) -> Ok(Some("200"))"#,
            "header(HttpCallResponseHeaders, x-absent) -> Ok(None)",
            r#"header_map(HttpCallResponseHeaders) -> Ok([":status": "200"])"#,
            "header_map(HttpCallResponseTrailers) -> Ok([])",
            r#"buffer(HttpCallResponseBody, 0, MAX) -> Ok(Some("callout body"))"#,
        ]
    } else {
        &[
            "on_http_call_response headers=0 body=0 trailers=0",
            // Envoy: BrokenConnection (11) "reset"; no response object, so no maps or body.
            r#"call_status() -> Ok(code=11 message=Some("reset"))"#,
            "header(HttpCallResponseHeaders, :status) -> Err(BadArgument)",
            "header(HttpCallResponseHeaders, x-absent) -> Err(BadArgument)",
            "header_map(HttpCallResponseHeaders) -> Ok([])",
            "header_map(HttpCallResponseTrailers) -> Ok([])",
            "buffer(HttpCallResponseBody, 0, MAX) -> Ok(None)",
        ]
    };
    script.extend(delivery.iter().map(|l| (*l).to_owned()));
    script.extend(
        [
            // Read-only map.
            "set_header(HttpCallResponseHeaders, x, 1) -> Err(BadArgument)",
            // The stream is paused: its request headers are still available and writable.
            r#"header(request, x-present) -> Ok(Some("v"))"#,
            "set_header(request, x-callout, done) -> Ok(())",
            "continue_stream(Request) -> Ok(())",
        ]
        .map(str::to_owned),
    );
    script
}

#[test]
fn http_call_response_maps_body_and_status_on_success_and_failure() {
    let (_, mut plugin) = load();
    for success in [true, false] {
        let out = plugin
            .http_request_with(0, request("callout"), Response::new(200), |_| {
                if success {
                    CallReply::Respond(HttpCallResponse::new(200, "callout body"))
                } else {
                    CallReply::Fail
                }
            })
            .unwrap();
        assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
        let expected = callout_script(success);
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_lines(&out.logs, &expected);
        assert_eq!(out.request_header("x-callout"), Some("done"));
        assert_eq!(out.response.status(), Some(200));
    }
}

// === root context ===

const CONFIGURE_SCRIPT: &[&str] = &[
    "on_configure",
    r#"buffer(PluginConfiguration, 0, MAX) -> Ok(Some("probe-config"))"#,
    r#"buffer(VmConfiguration, 0, MAX) -> Ok(Some("vm-config"))"#,
    "log_level() -> Ok(Trace)",
    "current_time_nanos() -> Ok(1767225600000000000)",
    "set_tick_period_millis(1000) -> Ok(())",
    // No stream in a root context: Envoy has no stream info to store filter state in.
    "set_property(probe_prop, root) -> Err(NotFound)",
    "set_effective_context(root) -> Ok(())",
];

#[test]
fn root_context_calls_in_configure_and_tick() {
    let (_, mut plugin) = load();
    // The canary and each worker VM configure.
    for vm in [None, Some(0), Some(1)] {
        let logs: Vec<LogEntry> = plugin
            .logs()
            .iter()
            .filter(|l| l.worker == vm)
            .cloned()
            .collect();
        assert_lines(&logs, CONFIGURE_SCRIPT);
    }
    let tick = plugin.tick(1).unwrap();
    assert!(tick.trap.is_none(), "{:?}", tick.trap);
    assert_lines(
        &tick.logs,
        &[
            "on_tick",
            r#"property(plugin_root_id) -> Ok(Some("abi_probe"))"#,
            "property(request.path) -> Ok(None)",
            "set_property(probe_prop, root) -> Err(NotFound)",
            "header(request, x-present) -> Err(BadArgument)",
            "header_map(request) -> Ok([])",
            "set_header(request, x-root, 1) -> Err(BadArgument)",
            "add_header(request, x-root, 1) -> Err(BadArgument)",
            "remove_header(request, x-root) -> Err(BadArgument)",
            "set_header_map(request, [x-root: 1]) -> Err(BadArgument)",
            "buffer(PluginConfiguration, 0, MAX) -> Ok(None)",
            "set_tick_period_millis(0) -> Ok(())",
        ],
    );
}

#[test]
fn log_level_off_reads_as_critical() {
    let spec = PluginSpec {
        log_level: LogLevel::Off,
        ..spec()
    };
    let plugin = load_spec(spec, &SharedState::new());
    let levels: Vec<&str> = plugin
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("probe log_level()"))
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(levels, ["probe log_level() -> Ok(Critical)"; 1 + WORKERS]);
}

// === coverage and the SDK control ===

/// Every `pub fn` of `shared/src/abi.rs` is called by at least one script above.
#[test]
fn every_abi_entry_point_is_exercised() {
    let source = std::fs::read_to_string(repo().join("shared/src/abi.rs")).unwrap();
    let entry_points: BTreeSet<&str> = source
        .lines()
        .filter_map(|l| l.strip_prefix("pub fn "))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert!(entry_points.len() >= 30, "{entry_points:?}");

    let (_, mut plugin) = load();
    let mut logs = plugin.logs().to_vec();
    for scenario in [
        "headers", "body", "property", "shared", "queue", "misc", "metrics", "close", "reply",
    ] {
        logs.extend(run(&mut plugin, 0, scenario).logs);
    }
    logs.extend(
        plugin
            .http_request_with(0, request("callout"), Response::new(200), |_| {
                CallReply::Fail
            })
            .unwrap()
            .logs,
    );
    logs.extend(plugin.tick(0).unwrap().logs);
    let called: BTreeSet<&str> = logs
        .iter()
        .filter_map(|l| l.message.strip_prefix("probe "))
        .filter_map(|l| l.split('(').next())
        .collect();
    let missing: Vec<&&str> = entry_points.difference(&called).collect();
    assert!(
        missing.is_empty(),
        "abi entry points never called: {missing:?}"
    );
}

/// The control: the same read (request headers after the request went on) through the SDK's
/// `proxy_wasm::hostcalls::get_map_value` panics on Envoy's BadArgument, the VM traps and fails
/// closed; our wrapper answered `Err(BadArgument)` just before.
#[test]
fn sdk_wrapper_traps_where_the_abi_module_returns_an_error() {
    let (_, mut plugin) = load();
    let out = plugin
        .http_request(1, request("sdk-trap"), upstream_response())
        .unwrap();
    assert_lines(
        &out.logs,
        &[
            "scenario SdkTrap",
            "header(request, x-present) -> Err(BadArgument)",
            "sdk hostcalls::get_map_value(HttpRequestHeaders, x-present)",
        ],
    );
    assert!(
        out.logs
            .iter()
            .any(|l| l.level == LogLevel::Critical
                && l.message.contains("panic: unexpected status: 2")),
        "{:?}",
        out.logs
    );
    assert_eq!(out.traps.len(), 1, "{:?}", out.traps);
    assert!(
        out.traps[0].contains("proxy_on_response_headers"),
        "{}",
        out.traps[0]
    );
    assert!(plugin.failure(1).is_some());
    let (_, reply) = out.local_reply.clone().unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.details, "wasm_fail_stream");
    assert_eq!(out.response.status(), Some(503));

    // Fail-closed: that worker's VM is gone; the other one still runs the same script clean.
    let out = plugin
        .http_request(1, request("headers"), upstream_response())
        .unwrap();
    assert!(matches!(out.request_action, Action::Failed(ref r) if r.status == 503));
    let out = run(&mut plugin, 0, "headers");
    assert_lines(&out.logs, HEADERS_SCRIPT);
}
