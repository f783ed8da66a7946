//! The probe's contexts and its scripted calls (see the crate docs for the log format).

use std::fmt::Write as _;
use std::time::Duration;

use meshward_core::abi::{self, BufferType, MapType};
use meshward_core::host::{HeaderMap, HostResult, LogLevel, MetricKind, SharedValue, StreamKind};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    meshward_core::plugin::install_panic_hook("abi-probe");
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(ProbeRoot { id }) });
}}

const REQUEST: MapType = MapType::HttpRequestHeaders;
const RESPONSE: MapType = MapType::HttpResponseHeaders;
const CALL: MapType = MapType::HttpCallResponseHeaders;
/// A context id no host ever hands out.
const UNKNOWN_CONTEXT: u32 = 0xdead;
/// A queue token no host ever hands out.
const UNKNOWN_QUEUE: u32 = 0xdead;
/// A metric id never defined (ids are `n*4 + type`; this one would be a counter).
const UNKNOWN_METRIC: u32 = 1000;

/// A value as it appears in a report line.
trait Show {
    fn show(&self, out: &mut String);
}

impl Show for () {
    fn show(&self, out: &mut String) {
        out.push_str("()");
    }
}

impl Show for u32 {
    fn show(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Show for u64 {
    fn show(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Show for [u8] {
    fn show(&self, out: &mut String) {
        let _ = write!(out, "\"{}\"", self.escape_ascii());
    }
}

impl Show for Vec<u8> {
    fn show(&self, out: &mut String) {
        self.as_slice().show(out);
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self, out: &mut String) {
        match self {
            Some(value) => {
                out.push_str("Some(");
                value.show(out);
                out.push(')');
            }
            None => out.push_str("None"),
        }
    }
}

impl Show for LogLevel {
    fn show(&self, out: &mut String) {
        let _ = write!(out, "{self:?}");
    }
}

impl Show for SharedValue {
    fn show(&self, out: &mut String) {
        out.push_str("value=");
        self.value.show(out);
        out.push_str(" cas=");
        self.cas.show(out);
    }
}

impl Show for HeaderMap {
    fn show(&self, out: &mut String) {
        out.push('[');
        for (index, (name, value)) in self.iter().enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            name.show(out);
            out.push_str(": ");
            value.show(out);
        }
        out.push(']');
    }
}

impl Show for (u32, Option<Vec<u8>>) {
    fn show(&self, out: &mut String) {
        let _ = write!(out, "code={} message=", self.0);
        self.1.show(out);
    }
}

/// Logs `probe <call> -> <result>` and hands the result back.
fn report<T: Show>(call: &str, result: HostResult<T>) -> HostResult<T> {
    let mut line = format!("probe {call} -> ");
    match &result {
        Ok(value) => {
            line.push_str("Ok(");
            value.show(&mut line);
            line.push(')');
        }
        Err(error) => {
            let _ = write!(line, "Err({error:?})");
        }
    }
    abi::log(LogLevel::Info, &line);
    result
}

fn note(message: &str) {
    abi::log(LogLevel::Info, &format!("probe {message}"));
}

/// Which script a stream runs (its `x-probe` header).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// Header reads and writes inside and outside their windows; `on_log` reads.
    Headers,
    /// Body and other buffers inside and outside their windows.
    Body,
    /// Properties and filter state.
    Property,
    /// Shared data with compare-and-swap.
    Shared,
    /// Reads the shared data `Shared` wrote (run on another worker VM).
    SharedPeek,
    /// Shared queues.
    Queue,
    /// Log level, time, tick, effective context, foreign functions, gRPC tokens, call status.
    Misc,
    /// Metrics.
    Metrics,
    /// An `http_call` whose response callback reads the call's maps and body and resumes.
    Callout,
    /// `close_stream`.
    Close,
    /// A local reply from the request headers.
    Reply,
    /// Local replies from the response headers and from `on_log`.
    ReplyLate,
    /// The SDK's wrapper on a read our wrapper answers with an error: it traps.
    SdkTrap,
    /// No `x-probe` header (or an unknown one): no calls.
    Nothing,
}

impl Scenario {
    fn from_header(value: &[u8]) -> Self {
        match value {
            b"headers" => Self::Headers,
            b"body" => Self::Body,
            b"property" => Self::Property,
            b"shared" => Self::Shared,
            b"shared-peek" => Self::SharedPeek,
            b"queue" => Self::Queue,
            b"misc" => Self::Misc,
            b"metrics" => Self::Metrics,
            b"callout" => Self::Callout,
            b"close" => Self::Close,
            b"reply" => Self::Reply,
            b"reply-late" => Self::ReplyLate,
            b"sdk-trap" => Self::SdkTrap,
            _ => Self::Nothing,
        }
    }
}

struct ProbeRoot {
    id: u32,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        note("on_configure");
        let _ = report(
            "buffer(PluginConfiguration, 0, MAX)",
            abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX),
        );
        let _ = report(
            "buffer(VmConfiguration, 0, MAX)",
            abi::buffer(BufferType::VmConfiguration, 0, usize::MAX),
        );
        let _ = report("log_level()", abi::log_level());
        let _ = report("current_time_nanos()", abi::current_time_nanos());
        let _ = report(
            "set_tick_period_millis(1000)",
            abi::set_tick_period_millis(1000),
        );
        let _ = report(
            "set_property(probe_prop, root)",
            abi::set_property(b"probe_prop", b"root"),
        );
        let _ = report(
            "set_effective_context(root)",
            abi::set_effective_context(self.id),
        );
        true
    }

    fn on_tick(&mut self) {
        note("on_tick");
        let _ = report("property(plugin_root_id)", abi::property(b"plugin_root_id"));
        let _ = report("property(request.path)", abi::property(b"request\0path"));
        let _ = report(
            "set_property(probe_prop, root)",
            abi::set_property(b"probe_prop", b"root"),
        );
        let _ = report(
            "header(request, x-present)",
            abi::header(REQUEST, "x-present"),
        );
        let _ = report("header_map(request)", abi::header_map(REQUEST));
        let _ = report(
            "set_header(request, x-root, 1)",
            abi::set_header(REQUEST, "x-root", b"1"),
        );
        let _ = report(
            "add_header(request, x-root, 1)",
            abi::add_header(REQUEST, "x-root", b"1"),
        );
        let _ = report(
            "remove_header(request, x-root)",
            abi::remove_header(REQUEST, "x-root"),
        );
        let _ = report(
            "set_header_map(request, [x-root: 1])",
            abi::set_header_map(REQUEST, &[("x-root", b"1")]),
        );
        let _ = report(
            "buffer(PluginConfiguration, 0, MAX)",
            abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX),
        );
        let _ = report("set_tick_period_millis(0)", abi::set_tick_period_millis(0));
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        note("on_queue_ready");
        let _ = report("dequeue(queue)", abi::dequeue(queue_id));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeStream {
            id: context_id,
            root_id: self.id,
            scenario: Scenario::Nothing,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeStream {
    id: u32,
    root_id: u32,
    scenario: Scenario,
}

impl ProbeStream {
    fn request_headers(&mut self) -> Action {
        match self.scenario {
            Scenario::Headers => headers_in_window(),
            Scenario::Body => {
                let _ = report(
                    "buffer(HttpRequestBody, 0, MAX)",
                    abi::buffer(BufferType::HttpRequestBody, 0, usize::MAX),
                );
            }
            Scenario::Property => properties(),
            Scenario::Shared => shared_data(),
            Scenario::SharedPeek => {
                let _ = report("shared_data(probe-k)", abi::shared_data("probe-k"));
            }
            Scenario::Queue => queues(),
            Scenario::Misc => self.misc(),
            Scenario::Metrics => metrics(),
            Scenario::Callout => return self.callout(),
            Scenario::Close => {
                let _ = report(
                    "close_stream(Request)",
                    abi::close_stream(StreamKind::Request),
                );
            }
            Scenario::Reply => {
                let _ = report(
                    "send_local_response(403, probe denied, denied, [x-probe-reply: yes], 7)",
                    abi::send_local_response(
                        403,
                        "probe denied",
                        b"denied",
                        &[("x-probe-reply", b"yes")],
                        Some(7),
                    ),
                );
            }
            Scenario::ReplyLate | Scenario::SdkTrap | Scenario::Nothing => {}
        }
        Action::Continue
    }

    fn misc(&self) {
        let _ = report("log_level()", abi::log_level());
        let _ = report("current_time_nanos()", abi::current_time_nanos());
        let _ = report(
            "set_tick_period_millis(1000)",
            abi::set_tick_period_millis(1000),
        );
        for level in [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical,
        ] {
            abi::log(level, &format!("probe log({level:?})"));
        }
        let _ = report(
            "set_effective_context(root)",
            abi::set_effective_context(self.root_id),
        );
        // Acting on the root now: the stream's maps are out of reach.
        let _ = report(
            "header(request, x-present)",
            abi::header(REQUEST, "x-present"),
        );
        let _ = report(
            "set_effective_context(self)",
            abi::set_effective_context(self.id),
        );
        let _ = report(
            "header(request, x-present)",
            abi::header(REQUEST, "x-present"),
        );
        let _ = report(
            "set_effective_context(unknown)",
            abi::set_effective_context(UNKNOWN_CONTEXT),
        );
        let _ = report(
            "call_foreign_function(clear_route_cache, \"\")",
            abi::call_foreign_function("clear_route_cache", b""),
        );
        let _ = report(
            "call_foreign_function(no_such_function, x)",
            abi::call_foreign_function("no_such_function", b"x"),
        );
        let _ = report("grpc_cancel(4)", abi::grpc_cancel(4));
        let _ = report("grpc_close(4)", abi::grpc_close(4));
        let _ = report("call_status()", abi::call_status());
        let _ = report(
            "continue_stream(Request)",
            abi::continue_stream(StreamKind::Request),
        );
        let _ = report(
            "continue_stream(Response)",
            abi::continue_stream(StreamKind::Response),
        );
    }

    fn callout(&self) -> Action {
        let token = self.dispatch_http_call(
            "upstream",
            vec![
                (":method", "GET"),
                (":path", "/callout"),
                (":authority", "callout.test"),
            ],
            None,
            vec![],
            Duration::from_secs(1),
        );
        note(&format!("sdk dispatch_http_call -> {token:?}"));
        let _ = report(
            "header(HttpCallResponseHeaders, :status)",
            abi::header(CALL, ":status"),
        );
        if token.is_ok() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn response_headers(&mut self) {
        match self.scenario {
            Scenario::Headers => headers_after_window(),
            Scenario::Property => {
                let _ = report("property(response.code)", abi::property(b"response\0code"));
            }
            Scenario::ReplyLate => {
                let _ = report(
                    "send_local_response(500, late reply, late, [x-late: 1], 99)",
                    abi::send_local_response(
                        500,
                        "late reply",
                        b"late",
                        &[("x-late", b"1")],
                        Some(99),
                    ),
                );
            }
            Scenario::SdkTrap => {
                let _ = report(
                    "header(request, x-present)",
                    abi::header(REQUEST, "x-present"),
                );
                note("sdk hostcalls::get_map_value(HttpRequestHeaders, x-present)");
                let value = proxy_wasm::hostcalls::get_map_value(
                    proxy_wasm::types::MapType::HttpRequestHeaders,
                    "x-present",
                );
                // Not reached: the SDK panics on BadArgument ("unexpected status: 2").
                note(&format!("sdk returned {value:?}"));
            }
            _ => {}
        }
    }
}

fn headers_in_window() {
    let _ = report(
        "header(request, x-present)",
        abi::header(REQUEST, "x-present"),
    );
    let _ = report("header(request, x-empty)", abi::header(REQUEST, "x-empty"));
    let _ = report(
        "header(request, x-absent)",
        abi::header(REQUEST, "x-absent"),
    );
    let _ = report("header(request, x-dup)", abi::header(REQUEST, "x-dup"));
    let _ = report("header(request, x-bin)", abi::header(REQUEST, "x-bin"));
    let _ = report("header_map(request)", abi::header_map(REQUEST));
    let _ = report(
        "header(HttpRequestTrailers, x-t)",
        abi::header(MapType::HttpRequestTrailers, "x-t"),
    );
    let _ = report(
        "header(response, :status)",
        abi::header(RESPONSE, ":status"),
    );
    let _ = report(
        "header(HttpCallResponseHeaders, :status)",
        abi::header(CALL, ":status"),
    );
    let _ = report("header_map(HttpCallResponseHeaders)", abi::header_map(CALL));
    let _ = report(
        "set_header(HttpCallResponseHeaders, x, 1)",
        abi::set_header(CALL, "x", b"1"),
    );
    let _ = report(
        "add_header(response, x-early, 1)",
        abi::add_header(RESPONSE, "x-early", b"1"),
    );
    let _ = report(
        "set_header(request, x-set, 1)",
        abi::set_header(REQUEST, "x-set", b"1"),
    );
    let _ = report(
        "set_header(request, x-dup, only)",
        abi::set_header(REQUEST, "x-dup", b"only"),
    );
    let _ = report(
        "add_header(request, x-added, \\xff)",
        abi::add_header(REQUEST, "x-added", b"\xff"),
    );
    let _ = report(
        "add_header(request, x-added, 2)",
        abi::add_header(REQUEST, "x-added", b"2"),
    );
    let _ = report(
        "remove_header(request, x-empty)",
        abi::remove_header(REQUEST, "x-empty"),
    );
    let _ = report(
        "remove_header(request, x-absent)",
        abi::remove_header(REQUEST, "x-absent"),
    );
    let _ = report("header(request, x-dup)", abi::header(REQUEST, "x-dup"));
    let _ = report("header(request, x-empty)", abi::header(REQUEST, "x-empty"));
}

fn headers_after_window() {
    let _ = report(
        "header(request, x-present)",
        abi::header(REQUEST, "x-present"),
    );
    let _ = report("header_map(request)", abi::header_map(REQUEST));
    let _ = report(
        "set_header(request, x-late, 1)",
        abi::set_header(REQUEST, "x-late", b"1"),
    );
    let _ = report(
        "add_header(request, x-late, 1)",
        abi::add_header(REQUEST, "x-late", b"1"),
    );
    let _ = report(
        "remove_header(request, x-present)",
        abi::remove_header(REQUEST, "x-present"),
    );
    let _ = report(
        "set_header_map(request, [x-late: 1])",
        abi::set_header_map(REQUEST, &[("x-late", b"1")]),
    );
    let _ = report(
        "header(response, :status)",
        abi::header(RESPONSE, ":status"),
    );
    let _ = report(
        "header(response, x-upstream)",
        abi::header(RESPONSE, "x-upstream"),
    );
    let _ = report(
        "set_header_map(response, [:status: 201, x-replaced: 1, x-replaced: 2])",
        abi::set_header_map(
            RESPONSE,
            &[
                (":status", b"201"),
                ("x-replaced", b"1"),
                ("x-replaced", b"2"),
            ],
        ),
    );
    let _ = report("header_map(response)", abi::header_map(RESPONSE));
}

fn headers_in_log() {
    let _ = report(
        "header(request, x-present)",
        abi::header(REQUEST, "x-present"),
    );
    let _ = report("header(request, x-set)", abi::header(REQUEST, "x-set"));
    let _ = report(
        "header(HttpRequestTrailers, x-t)",
        abi::header(MapType::HttpRequestTrailers, "x-t"),
    );
    let _ = report(
        "header(response, x-replaced)",
        abi::header(RESPONSE, "x-replaced"),
    );
}

fn bodies_in_request_body() {
    let body = BufferType::HttpRequestBody;
    let _ = report(
        "buffer(HttpRequestBody, 0, MAX)",
        abi::buffer(body, 0, usize::MAX),
    );
    let _ = report("buffer(HttpRequestBody, 1, 3)", abi::buffer(body, 1, 3));
    // start + max overflows: the wrapper clips instead of sending cpp-host a BadArgument.
    let _ = report(
        "buffer(HttpRequestBody, 2, MAX)",
        abi::buffer(body, 2, usize::MAX),
    );
    let _ = report("buffer(HttpRequestBody, 50, 10)", abi::buffer(body, 50, 10));
    let _ = report(
        "buffer(HttpResponseBody, 0, MAX)",
        abi::buffer(BufferType::HttpResponseBody, 0, usize::MAX),
    );
    for (name, kind) in [
        ("PluginConfiguration", BufferType::PluginConfiguration),
        ("HttpCallResponseBody", BufferType::HttpCallResponseBody),
        ("GrpcReceiveBuffer", BufferType::GrpcReceiveBuffer),
        ("CallData", BufferType::CallData),
        ("VmConfiguration", BufferType::VmConfiguration),
    ] {
        let _ = report(
            &format!("buffer({name}, 0, MAX)"),
            abi::buffer(kind, 0, usize::MAX),
        );
    }
}

fn bodies_in_response_body() {
    let _ = report(
        "buffer(HttpResponseBody, 0, MAX)",
        abi::buffer(BufferType::HttpResponseBody, 0, usize::MAX),
    );
    let _ = report(
        "buffer(HttpRequestBody, 0, MAX)",
        abi::buffer(BufferType::HttpRequestBody, 0, usize::MAX),
    );
}

fn properties() {
    let _ = report("property(request.path)", abi::property(b"request\0path"));
    let _ = report("property(no.such.path)", abi::property(b"no\0such\0path"));
    let _ = report("property(request)", abi::property(b"request"));
    let _ = report("property(response.code)", abi::property(b"response\0code"));
    let _ = report("property(plugin_name)", abi::property(b"plugin_name"));
    let _ = report(
        "set_property(probe_prop, v1)",
        abi::set_property(b"probe_prop", b"v1"),
    );
    let _ = report("property(probe_prop)", abi::property(b"probe_prop"));
    let _ = report(
        "property(filter_state.wasm.probe_prop)",
        abi::property(b"filter_state\0wasm.probe_prop"),
    );
    let _ = report(
        "set_property(probe_empty, \"\")",
        abi::set_property(b"probe_empty", b""),
    );
    let _ = report("property(probe_empty)", abi::property(b"probe_empty"));
    // Not complete yet: Envoy has no `requestComplete()` before the end of the stream.
    let _ = report(
        "property(request.duration)",
        abi::property(b"request\0duration"),
    );
}

/// In `on_log`: the end-of-stream measurements (Envoy's int64 / duration encodings).
fn properties_in_log() {
    for (name, path) in [
        ("request.duration", &b"request\0duration"[..]),
        ("request.total_size", b"request\0total_size"),
        ("response.total_size", b"response\0total_size"),
        ("response.backend_latency", b"response\0backend_latency"),
    ] {
        let _ = report(&format!("property({name})"), abi::property(path));
    }
}

fn shared_data() {
    let _ = report(
        "shared_data(probe-missing)",
        abi::shared_data("probe-missing"),
    );
    let _ = report(
        "set_shared_data(probe-k, v1, None)",
        abi::set_shared_data("probe-k", b"v1", None),
    );
    let cas = report("shared_data(probe-k)", abi::shared_data("probe-k"))
        .ok()
        .and_then(|shared| shared.cas)
        .unwrap_or_default();
    let _ = report(
        "set_shared_data(probe-k, v2, stale cas)",
        abi::set_shared_data("probe-k", b"v2", Some(cas.wrapping_add(1000))),
    );
    let _ = report(
        "set_shared_data(probe-k, v2, current cas)",
        abi::set_shared_data("probe-k", b"v2", Some(cas)),
    );
    let _ = report(
        "set_shared_data(probe-k, v3, previous cas)",
        abi::set_shared_data("probe-k", b"v3", Some(cas)),
    );
    let _ = report(
        "set_shared_data(probe-fresh, x, Some(12345))",
        abi::set_shared_data("probe-fresh", b"x", Some(12345)),
    );
    let _ = report(
        "set_shared_data(probe-cleared, \"\", None)",
        abi::set_shared_data("probe-cleared", b"", None),
    );
    let _ = report(
        "shared_data(probe-cleared)",
        abi::shared_data("probe-cleared"),
    );
    let _ = report("shared_data(probe-k)", abi::shared_data("probe-k"));
}

fn queues() {
    let _ = report(
        "resolve_queue(\"\", probe-q)",
        abi::resolve_queue("", "probe-q"),
    );
    let queue =
        report("register_queue(probe-q)", abi::register_queue("probe-q")).unwrap_or_default();
    let _ = report(
        "resolve_queue(\"\", probe-q)",
        abi::resolve_queue("", "probe-q"),
    );
    let _ = report(
        "resolve_queue(abi-probe-vm, probe-q)",
        abi::resolve_queue("abi-probe-vm", "probe-q"),
    );
    let _ = report(
        "resolve_queue(other-vm, probe-q)",
        abi::resolve_queue("other-vm", "probe-q"),
    );
    let _ = report("dequeue(queue)", abi::dequeue(queue));
    let _ = report("enqueue(queue, item)", abi::enqueue(queue, b"item"));
    let _ = report("enqueue(queue, \"\")", abi::enqueue(queue, b""));
    let _ = report("dequeue(queue)", abi::dequeue(queue));
    let _ = report("enqueue(unknown, x)", abi::enqueue(UNKNOWN_QUEUE, b"x"));
    let _ = report("dequeue(unknown)", abi::dequeue(UNKNOWN_QUEUE));
}

fn metrics() {
    let counter = report(
        "define_metric(Counter, probe_counter)",
        abi::define_metric(MetricKind::Counter, "probe_counter"),
    )
    .unwrap_or_default();
    let gauge = report(
        "define_metric(Gauge, probe_gauge)",
        abi::define_metric(MetricKind::Gauge, "probe_gauge"),
    )
    .unwrap_or_default();
    let histogram = report(
        "define_metric(Histogram, probe_histogram)",
        abi::define_metric(MetricKind::Histogram, "probe_histogram"),
    )
    .unwrap_or_default();
    let _ = report(
        "increment_metric(counter, 1)",
        abi::increment_metric(counter, 1),
    );
    let _ = report(
        "increment_metric(counter, 0)",
        abi::increment_metric(counter, 0),
    );
    let _ = report(
        "increment_metric(counter, -1)",
        abi::increment_metric(counter, -1),
    );
    let _ = report(
        "increment_metric(gauge, -3)",
        abi::increment_metric(gauge, -3),
    );
    let _ = report(
        "increment_metric(histogram, 1)",
        abi::increment_metric(histogram, 1),
    );
    let _ = report(
        "increment_metric(unknown, 1)",
        abi::increment_metric(UNKNOWN_METRIC, 1),
    );
    let _ = report("record_metric(counter, 5)", abi::record_metric(counter, 5));
    let _ = report("record_metric(gauge, 42)", abi::record_metric(gauge, 42));
    let _ = report(
        "record_metric(histogram, 7)",
        abi::record_metric(histogram, 7),
    );
    let _ = report(
        "record_metric(unknown, 1)",
        abi::record_metric(UNKNOWN_METRIC, 1),
    );
    let _ = report("metric(counter)", abi::metric(counter));
    let _ = report("metric(gauge)", abi::metric(gauge));
    let _ = report("metric(histogram)", abi::metric(histogram));
    let _ = report("metric(unknown)", abi::metric(UNKNOWN_METRIC));
    let reopened = report(
        "define_metric(Counter, probe_counter)",
        abi::define_metric(MetricKind::Counter, "probe_counter"),
    )
    .unwrap_or_default();
    let _ = report("metric(reopened counter)", abi::metric(reopened));
}

impl Context for ProbeStream {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        note(&format!(
            "on_http_call_response headers={num_headers} body={body_size} trailers={num_trailers}"
        ));
        let _ = report("call_status()", abi::call_status());
        let _ = report(
            "header(HttpCallResponseHeaders, :status)",
            abi::header(CALL, ":status"),
        );
        let _ = report(
            "header(HttpCallResponseHeaders, x-absent)",
            abi::header(CALL, "x-absent"),
        );
        let _ = report("header_map(HttpCallResponseHeaders)", abi::header_map(CALL));
        let _ = report(
            "header_map(HttpCallResponseTrailers)",
            abi::header_map(MapType::HttpCallResponseTrailers),
        );
        let _ = report(
            "buffer(HttpCallResponseBody, 0, MAX)",
            abi::buffer(BufferType::HttpCallResponseBody, 0, usize::MAX),
        );
        let _ = report(
            "set_header(HttpCallResponseHeaders, x, 1)",
            abi::set_header(CALL, "x", b"1"),
        );
        // The stream is paused, so its request headers are still there.
        let _ = report(
            "header(request, x-present)",
            abi::header(REQUEST, "x-present"),
        );
        let _ = report(
            "set_header(request, x-callout, done)",
            abi::set_header(REQUEST, "x-callout", b"done"),
        );
        let _ = report(
            "continue_stream(Request)",
            abi::continue_stream(StreamKind::Request),
        );
    }
}

impl HttpContext for ProbeStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.scenario = match abi::header(REQUEST, "x-probe") {
            Ok(Some(value)) => Scenario::from_header(&value),
            _ => Scenario::Nothing,
        };
        note(&format!("scenario {:?}", self.scenario));
        self.request_headers()
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.scenario == Scenario::Body {
            bodies_in_request_body();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response_headers();
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.scenario == Scenario::Body {
            bodies_in_response_body();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        match self.scenario {
            Scenario::Headers => headers_in_log(),
            Scenario::Property => properties_in_log(),
            Scenario::ReplyLate => {
                let _ = report(
                    "send_local_response(418, in log, \"\", [], None)",
                    abi::send_local_response(418, "in log", b"", &[], None),
                );
            }
            _ => {}
        }
    }
}
