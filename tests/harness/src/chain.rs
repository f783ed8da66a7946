//! Whole-request drivers: a [`Chain`] of plugins in filter order (decode in order, encode in
//! reverse, local replies sent back through the filters that saw the request), and the
//! single-plugin helper [`Plugin::http_request`] built on it.

use std::collections::BTreeMap;

use crate::grpc::{GrpcReply, PendingGrpcCall};
use crate::plugin::{Phase, Plugin};
use crate::shared::MetricValue;
use crate::types::{
    Action, FilterState, HeaderMap, HostError, HttpCallResponse, LocalReply, LogEntry,
    PendingHttpCall, PhaseOutcome, StreamEvent, StreamId, StreamInfo,
};

/// A request entering the proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// Headers with pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`).
    pub headers: HeaderMap,
    /// Body (one chunk; empty = none).
    pub body: Vec<u8>,
    /// Trailers (empty = none).
    pub trailers: HeaderMap,
    /// Connection/route facts.
    pub info: StreamInfo,
}

impl Request {
    /// A request with `:method`, `:path`, `:authority` and `:scheme: http`.
    pub fn new(method: &str, path: &str, authority: &str) -> Self {
        let headers = HeaderMap::from_pairs([
            (":authority", authority),
            (":path", path),
            (":method", method),
            (":scheme", "http"),
        ]);
        Self {
            headers,
            ..Self::default()
        }
    }

    /// `GET path` to `authority`.
    pub fn get(path: &str, authority: &str) -> Self {
        Self::new("GET", path, authority)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the stream info.
    pub fn with_info(mut self, info: StreamInfo) -> Self {
        self.info = info;
        self
    }
}

/// A response (from the upstream, or what the client finally receives).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Headers with `:status`.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: HeaderMap,
}

impl Response {
    /// A response with `:status`.
    pub fn new(status: u16) -> Self {
        Self {
            headers: HeaderMap::from_pairs([(":status", status.to_string())]),
            ..Self::default()
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The `:status` value.
    pub fn status(&self) -> Option<u16> {
        self.headers.get(":status").and_then(|s| s.parse().ok())
    }

    fn from_reply(reply: &LocalReply) -> Self {
        Self {
            headers: reply.response_headers(),
            body: reply.body.clone(),
            trailers: HeaderMap::new(),
        }
    }
}

/// What the upstream callback sees.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    /// Headers as forwarded (after every filter).
    pub headers: &'a HeaderMap,
    /// Headers as they entered the chain: Envoy picks the route from these unless a filter
    /// cleared the route cache.
    pub original_headers: &'a HeaderMap,
    /// Body as forwarded.
    pub body: &'a [u8],
    /// Trailers as forwarded.
    pub trailers: &'a HeaderMap,
    /// Some filter called `clear_route_cache` (or mutated headers in legacy mode): route on
    /// `headers` instead of `original_headers`.
    pub route_cache_cleared: bool,
}

/// How the caller answers an `http_call` seen by a driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallReply {
    /// Deliver this response.
    Respond(HttpCallResponse),
    /// Deliver a failure (reset: 0 headers, status 11 "reset").
    Fail,
    /// The call timed out: deliver Envoy's local 504 "upstream request timeout"
    /// ([`HttpCallResponse::upstream_timeout`]).
    Timeout,
    /// Leave it pending (it shows up in [`HttpOutcome::pending_calls`]).
    Leave,
}

/// One callback run by a driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseRecord {
    /// Index of the plugin in the chain.
    pub plugin: usize,
    /// Callback.
    pub phase: Phase,
    /// Its outcome.
    pub outcome: PhaseOutcome,
}

/// Everything observable after one request went through a plugin or chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOutcome {
    /// The decisive request-path action: Continue when the request reached the upstream, else
    /// the Pause/LocalReply/Failed/Reset that stopped it.
    pub request_action: Action,
    /// Request headers as forwarded upstream (`None` if the request was not forwarded).
    pub request_headers_after: Option<HeaderMap>,
    /// Request body as forwarded.
    pub request_body_after: Option<Vec<u8>>,
    /// The upstream callback ran.
    pub upstream_called: bool,
    /// The local reply sent (by a filter, or the 503 of a failed VM), and which plugin sent it.
    pub local_reply: Option<(usize, LocalReply)>,
    /// What the client receives (after the encoder filters). Empty when reset or stalled.
    pub response: Response,
    /// The stream was reset (`proxy_close_stream`, or a local reply after headers were sent).
    pub reset: bool,
    /// Index of the plugin that paused and was never resumed (nothing answered its callouts).
    pub stalled: Option<usize>,
    /// Some filter cleared the route cache during the request path.
    pub route_cache_cleared: bool,
    /// Log lines of every callback of this request (including async deliveries).
    pub logs: Vec<LogEntry>,
    /// All stats after the request (full names `wasmcustom.<name>`).
    pub metrics: BTreeMap<String, MetricValue>,
    /// Shared data after the request, per vm_id of the chain's plugins.
    pub shared_data: BTreeMap<String, BTreeMap<String, (Vec<u8>, u32)>>,
    /// `http_call`s still unanswered.
    pub pending_calls: Vec<PendingHttpCall>,
    /// Every `http_call` made during the request (answered or not).
    pub calls_made: Vec<PendingHttpCall>,
    /// Filter state after the request (`wasm.<name>` keys from `set_property`).
    pub properties_set: BTreeMap<String, Vec<u8>>,
    /// Every callback with its outcome, in order.
    pub phases: Vec<PhaseRecord>,
    /// Fuel consumed by every callback of the request (end-of-stream ones included).
    pub fuel: u64,
    /// Hostcalls made by every callback of the request.
    pub hostcalls: u64,
    /// Trap messages of VMs that failed during the request.
    pub traps: Vec<String>,
}

impl HttpOutcome {
    /// A header of the final response.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response.headers.get(name)
    }

    /// A forwarded request header.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers_after
            .as_ref()
            .and_then(|h| h.get(name))
    }

    /// A property set with `set_property(name)` (filter state `wasm.<name>`), as UTF-8.
    pub fn property(&self, name: &str) -> Option<String> {
        self.properties_set
            .get(&format!("wasm.{name}"))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Log messages only.
    pub fn log_messages(&self) -> Vec<&str> {
        self.logs.iter().map(|l| l.message.as_str()).collect()
    }
}

/// Answers the chain's unary gRPC calls (see [`Chain::with_grpc`]).
pub type GrpcHandler = Box<dyn FnMut(&PendingGrpcCall) -> GrpcReply + Send>;

/// A gRPC answerer for one `drive`: `None` leaves gRPC calls pending.
type GrpcAnswer<'a> = &'a mut dyn FnMut(&PendingGrpcCall) -> Option<GrpcReply>;

/// Filters in filter-chain order, like `http_filters` in Envoy's HCM.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Plugin>,
    grpc: Option<GrpcHandler>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("plugins", &self.plugins)
            .field("grpc", &self.grpc.is_some())
            .finish()
    }
}

impl Chain {
    /// A chain in filter order.
    pub fn new(plugins: Vec<Plugin>) -> Self {
        Self {
            plugins,
            grpc: None,
        }
    }

    /// Answers unary gRPC calls with `handler` when the filter that made them pauses (the dev
    /// proxy sends them over HTTP/2 with [`crate::grpc::GrpcClient`]); without one they stay
    /// pending.
    #[must_use]
    pub fn with_grpc(mut self, handler: GrpcHandler) -> Self {
        self.grpc = Some(handler);
        self
    }

    /// The plugins.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// The plugins, mutably (for ticks, queue deliveries, inspection).
    pub fn plugins_mut(&mut self) -> &mut [Plugin] {
        &mut self.plugins
    }

    /// Runs one request through the chain on `worker`: request callbacks in filter order,
    /// `upstream` (unless a filter replied), response callbacks in reverse order; a local reply
    /// goes back through the filters that already saw the request; `http_call`s are answered by
    /// `http_call` when the filter that made them pauses (and at the end for fire-and-forget
    /// calls); then `on_log` → `on_done` → `on_delete` for every filter.
    ///
    /// # Errors
    /// Unknown worker in some plugin.
    pub fn run(
        &mut self,
        worker: usize,
        request: Request,
        upstream: impl FnMut(&UpstreamRequest<'_>) -> Response,
        http_call: impl FnMut(&PendingHttpCall) -> CallReply,
    ) -> Result<HttpOutcome, HostError> {
        let mut refs: Vec<&mut Plugin> = self.plugins.iter_mut().collect();
        let grpc = &mut self.grpc;
        let mut answer = |call: &PendingGrpcCall| grpc.as_mut().map(|handler| handler(call));
        drive(&mut refs, worker, request, upstream, http_call, &mut answer)
    }
}

impl Plugin {
    /// Sends one request through this plugin alone and `response` back (the upstream is not
    /// called if the filter replies locally). `http_call`s are left pending.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn http_request(
        &mut self,
        worker: usize,
        request: Request,
        response: Response,
    ) -> Result<HttpOutcome, HostError> {
        self.http_request_with(worker, request, response, |_| CallReply::Leave)
    }

    /// Like [`Plugin::http_request`], answering `http_call`s with `http_call`.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn http_request_with(
        &mut self,
        worker: usize,
        request: Request,
        response: Response,
        http_call: impl FnMut(&PendingHttpCall) -> CallReply,
    ) -> Result<HttpOutcome, HostError> {
        let mut refs = [self];
        // The upstream is called at most once per request.
        let mut response = Some(response);
        drive(
            &mut refs,
            worker,
            request,
            |_| response.take().unwrap_or_default(),
            http_call,
            &mut |_| None,
        )
    }
}

enum Flow {
    Continue,
    Reply(LocalReply),
    Reset,
    Stalled,
}

struct Acc {
    phases: Vec<PhaseRecord>,
    logs: Vec<LogEntry>,
    fuel: u64,
    hostcalls: u64,
    traps: Vec<String>,
    calls_made: Vec<PendingHttpCall>,
    route_cache_cleared: bool,
}

impl Acc {
    fn record(&mut self, plugin: usize, phase: Phase, outcome: &PhaseOutcome) {
        self.logs.extend(outcome.logs.iter().cloned());
        self.fuel += outcome.fuel;
        self.hostcalls += outcome.hostcalls;
        if let Some(t) = &outcome.trap {
            self.traps.push(t.clone());
        }
        if phase.is_request() {
            self.route_cache_cleared |= outcome.route_cache_cleared;
        }
        self.phases.push(PhaseRecord {
            plugin,
            phase,
            outcome: outcome.clone(),
        });
    }

    fn note_calls(&mut self, plugin: &Plugin, stream: StreamId) {
        for call in plugin.pending_http_calls() {
            if call.stream == Some(stream) && !self.calls_made.iter().any(|c| c.id == call.id) {
                self.calls_made.push(call);
            }
        }
    }
}

/// Where the data of the phase being resolved lives, so a resume can hand back the held copy.
enum Held<'a> {
    Headers(&'a mut HeaderMap),
    Body(&'a mut Vec<u8>),
}

/// Resolves a Pause by answering the stream's callouts until it resumes, replies or stalls.
fn resolve(
    plugin: &mut Plugin,
    stream: StreamId,
    outcome: &PhaseOutcome,
    mut held: Held<'_>,
    http_call: &mut dyn FnMut(&PendingHttpCall) -> CallReply,
    grpc: GrpcAnswer<'_>,
    acc: &mut Acc,
) -> Flow {
    match &outcome.action {
        Action::Continue => return Flow::Continue,
        Action::LocalReply(r) | Action::Failed(r) => return Flow::Reply(r.clone()),
        Action::Reset => return Flow::Reset,
        Action::Pause if outcome.continue_requested => return Flow::Continue,
        Action::Pause => {}
    }
    acc.note_calls(plugin, stream);
    loop {
        let calls: Vec<PendingHttpCall> = plugin
            .pending_http_calls()
            .into_iter()
            .filter(|c| c.stream == Some(stream))
            .collect();
        let mut answered = false;
        let mut events = Vec::new();
        for call in calls {
            let reply = match http_call(&call) {
                CallReply::Respond(r) => Some(r),
                CallReply::Timeout => Some(HttpCallResponse::upstream_timeout()),
                CallReply::Fail => None,
                CallReply::Leave => continue,
            };
            answered = true;
            if let Ok(out) = plugin.deliver_http_response(call.id, reply) {
                acc.logs.extend(out.logs);
                acc.fuel += out.fuel;
                acc.hostcalls += out.hostcalls;
                if let Some(t) = out.trap {
                    acc.traps.push(t);
                }
                events.extend(out.events);
            }
            acc.note_calls(plugin, stream);
        }
        let grpc_calls: Vec<PendingGrpcCall> = plugin
            .pending_grpc_calls()
            .into_iter()
            .filter(|c| c.stream == Some(stream))
            .collect();
        for call in grpc_calls {
            let Some(reply) = grpc(&call) else { continue };
            answered = true;
            if let Ok(out) = plugin.deliver_grpc_reply(call.id, reply) {
                acc.logs.extend(out.logs);
                acc.fuel += out.fuel;
                acc.hostcalls += out.hostcalls;
                if let Some(t) = out.trap {
                    acc.traps.push(t);
                }
                events.extend(out.events);
            }
        }
        events.extend(plugin.take_events());
        for event in events {
            match event {
                StreamEvent::Resumed {
                    stream: s,
                    headers,
                    body,
                    ..
                } if s == stream => {
                    match (&mut held, headers, body) {
                        (Held::Headers(h), Some(new), _) => **h = new,
                        (Held::Body(b), _, Some(new)) => **b = new,
                        _ => {}
                    }
                    return Flow::Continue;
                }
                StreamEvent::LocalReply { stream: s, reply } if s == stream => {
                    return Flow::Reply(reply);
                }
                StreamEvent::Reset { stream: s } if s == stream => return Flow::Reset,
                StreamEvent::Failed { stream: s, action } if s == stream => {
                    return match action {
                        Action::Failed(r) | Action::LocalReply(r) => Flow::Reply(r),
                        _ => Flow::Continue,
                    };
                }
                _ => {}
            }
        }
        if !answered {
            return Flow::Stalled;
        }
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the request/response state machine reads best in one place"
)]
fn drive(
    plugins: &mut [&mut Plugin],
    worker: usize,
    request: Request,
    mut upstream: impl FnMut(&UpstreamRequest<'_>) -> Response,
    mut http_call: impl FnMut(&PendingHttpCall) -> CallReply,
    grpc: GrpcAnswer<'_>,
) -> Result<HttpOutcome, HostError> {
    let filter_state = FilterState::new();
    let mut ids = Vec::with_capacity(plugins.len());
    for p in plugins.iter_mut() {
        ids.push(p.new_stream_with(worker, &request.info, &filter_state)?);
    }
    let mut acc = Acc {
        phases: Vec::new(),
        logs: Vec::new(),
        fuel: 0,
        hostcalls: 0,
        traps: Vec::new(),
        calls_made: Vec::new(),
        route_cache_cleared: false,
    };
    let original = request.headers.clone();
    let Request {
        mut headers,
        mut body,
        mut trailers,
        ..
    } = request;
    let (has_body, has_trailers) = (!body.is_empty(), !trailers.is_empty());
    let mut reply: Option<(usize, LocalReply)> = None;
    let mut reset = false;
    let mut stalled = None;
    let mut request_action = Action::Continue;

    'decode: for phase in [
        Phase::RequestHeaders,
        Phase::RequestBody,
        Phase::RequestTrailers,
    ] {
        if (phase == Phase::RequestBody && !has_body)
            || (phase == Phase::RequestTrailers && !has_trailers)
        {
            continue;
        }
        for (i, (plugin, id)) in plugins.iter_mut().zip(ids.iter()).enumerate() {
            let out = match phase {
                Phase::RequestHeaders => {
                    plugin.request_headers(*id, &mut headers, !has_body && !has_trailers)?
                }
                Phase::RequestBody => plugin.request_body(*id, &mut body, !has_trailers)?,
                _ => plugin.request_trailers(*id, &mut trailers)?,
            };
            acc.record(i, phase, &out);
            acc.note_calls(plugin, *id);
            let held = if phase == Phase::RequestBody {
                Held::Body(&mut body)
            } else if phase == Phase::RequestHeaders {
                Held::Headers(&mut headers)
            } else {
                Held::Headers(&mut trailers)
            };
            match resolve(plugin, *id, &out, held, &mut http_call, grpc, &mut acc) {
                Flow::Continue => {}
                Flow::Reply(r) => {
                    request_action = out.action.clone();
                    if matches!(request_action, Action::Pause) {
                        request_action = Action::LocalReply(r.clone());
                    }
                    reply = Some((i, r));
                    break 'decode;
                }
                Flow::Reset => {
                    request_action = Action::Reset;
                    reset = true;
                    break 'decode;
                }
                Flow::Stalled => {
                    request_action = Action::Pause;
                    stalled = Some(i);
                    break 'decode;
                }
            }
        }
    }

    let mut upstream_called = false;
    let mut forwarded = None;
    let mut response = Response::default();
    if let Some((_, r)) = &reply {
        response = Response::from_reply(r);
    } else if !reset && stalled.is_none() {
        response = upstream(&UpstreamRequest {
            headers: &headers,
            original_headers: &original,
            body: &body,
            trailers: &trailers,
            route_cache_cleared: acc.route_cache_cleared,
        });
        upstream_called = true;
        forwarded = Some((headers.clone(), body.clone()));
    }

    if !reset && stalled.is_none() {
        let (resp_has_body, resp_has_trailers) =
            (!response.body.is_empty(), !response.trailers.is_empty());
        'encode: for phase in [
            Phase::ResponseHeaders,
            Phase::ResponseBody,
            Phase::ResponseTrailers,
        ] {
            if (phase == Phase::ResponseBody && !resp_has_body)
                || (phase == Phase::ResponseTrailers && !resp_has_trailers)
            {
                continue;
            }
            for (i, (plugin, id)) in plugins.iter_mut().zip(ids.iter()).enumerate().rev() {
                let out = match phase {
                    Phase::ResponseHeaders => plugin.response_headers(
                        *id,
                        &mut response.headers,
                        !resp_has_body && !resp_has_trailers,
                    )?,
                    Phase::ResponseBody => {
                        plugin.response_body(*id, &mut response.body, !resp_has_trailers)?
                    }
                    _ => plugin.response_trailers(*id, &mut response.trailers)?,
                };
                if out.skipped && out.fuel == 0 {
                    continue;
                }
                acc.record(i, phase, &out);
                acc.note_calls(plugin, *id);
                let held = if phase == Phase::ResponseBody {
                    Held::Body(&mut response.body)
                } else if phase == Phase::ResponseHeaders {
                    Held::Headers(&mut response.headers)
                } else {
                    Held::Headers(&mut response.trailers)
                };
                match resolve(plugin, *id, &out, held, &mut http_call, grpc, &mut acc) {
                    Flow::Continue => {}
                    Flow::Reply(r) => {
                        if phase == Phase::ResponseHeaders {
                            // Response headers exist already: Envoy sends the reply directly,
                            // bypassing the remaining encoder filters.
                            response = Response::from_reply(&r);
                            reply = Some((i, r));
                        } else {
                            reset = true;
                        }
                        break 'encode;
                    }
                    Flow::Reset => {
                        reset = true;
                        break 'encode;
                    }
                    Flow::Stalled => {
                        stalled = Some(i);
                        break 'encode;
                    }
                }
            }
        }
    }
    if reset || stalled.is_some() {
        response = Response::default();
    }

    // Fire-and-forget calls still pending: offer them to the caller before the stream ends.
    for (plugin, id) in plugins.iter_mut().zip(ids.iter()) {
        for call in plugin
            .pending_http_calls()
            .into_iter()
            .filter(|c| c.stream == Some(*id))
        {
            let answer = match http_call(&call) {
                CallReply::Respond(r) => Some(r),
                CallReply::Timeout => Some(HttpCallResponse::upstream_timeout()),
                CallReply::Fail => None,
                CallReply::Leave => continue,
            };
            if let Ok(out) = plugin.deliver_http_response(call.id, answer) {
                acc.logs.extend(out.logs);
                acc.fuel += out.fuel;
                acc.hostcalls += out.hostcalls;
            }
            acc.note_calls(plugin, *id);
        }
    }

    for (plugin, id) in plugins.iter_mut().zip(ids.iter()) {
        let fin = plugin.finish(*id)?;
        acc.logs.extend(fin.logs);
        acc.fuel += fin.fuel;
        acc.hostcalls += fin.hostcalls;
        if let Some(t) = fin.trap {
            acc.traps.push(t);
        }
        let _ = plugin.take_events();
    }

    let mut shared_data = BTreeMap::new();
    let mut pending_calls = Vec::new();
    let mut metrics = BTreeMap::new();
    for plugin in plugins.iter() {
        let vm_id = plugin.spec().vm_id.clone();
        let data = plugin.shared().shared_data(&vm_id);
        shared_data.insert(vm_id, data);
        pending_calls.extend(
            plugin
                .pending_http_calls()
                .into_iter()
                .filter(|c| acc.calls_made.iter().any(|m| m.id == c.id)),
        );
        metrics = plugin.shared().metrics();
    }
    let (request_headers_after, request_body_after) = match forwarded {
        Some((h, b)) => (Some(h), Some(b)),
        None => (None, None),
    };
    Ok(HttpOutcome {
        request_action,
        request_headers_after,
        request_body_after,
        upstream_called,
        local_reply: reply,
        response,
        reset,
        stalled,
        route_cache_cleared: acc.route_cache_cleared,
        logs: acc.logs,
        metrics,
        shared_data,
        pending_calls,
        calls_made: acc.calls_made,
        properties_set: filter_state.snapshot(),
        phases: acc.phases,
        fuel: acc.fuel,
        hostcalls: acc.hostcalls,
        traps: acc.traps,
    })
}
