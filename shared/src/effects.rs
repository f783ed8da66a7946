//! The one shape of every meshward filter: pure logic returns an [`Effects`] value, and
//! [`apply`] carries it out through [`Host`].
//!
//! A filter's logic is a per-stream state machine: each event (request headers, body, a
//! callout's answer, a tick, response headers) goes in as plain data, and what should happen
//! comes out as `Effects` — header operations borrowing their bytes from the stream's state or
//! the configuration, properties to publish, metric updates, a callout to start,
//! `clear_route_cache`, a local reply, and whether the stream continues or waits. The logic never
//! sees the proxy, so it runs natively in tests and could be driven by another host later.
//!
//! `Effects` lives on the stack: its lists have fixed capacities (no allocation per request), and
//! pushing beyond one marks the value as overflowed, which [`apply`] refuses with
//! [`ApplyError::Overflow`] rather than half-applying it (a filter bug, caught by its tests).
//!
//! Streams that wait on a callout started by the root context are kept in
//! [`crate::waiters::Waiters`] and resumed (or replied to) with [`resume`], which switches the
//! effective context first.

use arrayvec::ArrayVec;

use crate::host::{
    GrpcCall, Host, HostError, HttpCall, LocalReply, MapKind, PropertyPath, StreamKind,
};
use crate::metrics::Family;

/// Most header operations one event may produce.
pub const MAX_HEADER_OPS: usize = 16;
/// Most properties one event may publish.
pub const MAX_PROPERTIES: usize = 8;
/// Most metric updates one event may produce.
pub const MAX_METRIC_UPDATES: usize = 8;

/// One mutation of the current header map, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderOp<'a> {
    /// Replace every value of the header.
    Set(&'a str, &'a [u8]),
    /// Append a value, keeping existing ones.
    Add(&'a str, &'a [u8]),
    /// Remove every value of the header.
    Remove(&'a str),
}

/// A metric update, by family and series index (ids were resolved at configure time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricUpdate<'a> {
    /// The family.
    pub family: &'a Family,
    /// The series within it.
    pub series: usize,
    /// What to do to it.
    pub op: MetricOp,
}

/// The operation of a [`MetricUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricOp {
    /// Add to a counter (> 0) or gauge.
    Add(i64),
    /// Record a histogram sample or set a gauge.
    Record(u64),
}

/// A callout to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callout<'a> {
    /// `proxy_http_call`.
    Http(HttpCall<'a>),
    /// `proxy_grpc_call`.
    Grpc(GrpcCall<'a>),
}

/// Whether the stream goes on after this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    /// Let the stream continue.
    #[default]
    Continue,
    /// Hold it (until a callout answers or the root context resumes it).
    Pause,
}

/// Everything one event decided; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Effects<'a> {
    headers: ArrayVec<HeaderOp<'a>, MAX_HEADER_OPS>,
    properties: ArrayVec<(&'a PropertyPath, &'a [u8]), MAX_PROPERTIES>,
    metrics: ArrayVec<MetricUpdate<'a>, MAX_METRIC_UPDATES>,
    /// Call Envoy's `clear_route_cache` after the header operations (routes may match on them).
    pub clear_route_cache: bool,
    /// A callout to start; its token is returned by [`apply`].
    pub callout: Option<Callout<'a>>,
    /// A local reply instead of forwarding (the stream stops whatever `flow` says).
    pub local_reply: Option<LocalReply<'a>>,
    /// Continue or wait.
    pub flow: Flow,
    overflowed: bool,
}

impl<'a> Effects<'a> {
    /// Nothing to do; the stream continues.
    pub fn new() -> Self {
        Self::default()
    }

    fn push<T, const N: usize>(list: &mut ArrayVec<T, N>, overflowed: &mut bool, item: T) {
        if list.try_push(item).is_err() {
            *overflowed = true;
        }
    }

    /// Replace every value of `name` with `value`.
    pub fn set_header(&mut self, name: &'a str, value: &'a [u8]) {
        Self::push(
            &mut self.headers,
            &mut self.overflowed,
            HeaderOp::Set(name, value),
        );
    }

    /// Append `value` to `name`.
    pub fn add_header(&mut self, name: &'a str, value: &'a [u8]) {
        Self::push(
            &mut self.headers,
            &mut self.overflowed,
            HeaderOp::Add(name, value),
        );
    }

    /// Remove every value of `name`.
    pub fn remove_header(&mut self, name: &'a str) {
        Self::push(
            &mut self.headers,
            &mut self.overflowed,
            HeaderOp::Remove(name),
        );
    }

    /// Publish a property (filter state) for later filters, access logs and telemetry.
    pub fn set_property(&mut self, path: &'a PropertyPath, value: &'a [u8]) {
        Self::push(&mut self.properties, &mut self.overflowed, (path, value));
    }

    /// Add `delta` to a series of a counter or gauge family.
    pub fn count(&mut self, family: &'a Family, series: usize, delta: i64) {
        let update = MetricUpdate {
            family,
            series,
            op: MetricOp::Add(delta),
        };
        Self::push(&mut self.metrics, &mut self.overflowed, update);
    }

    /// Record a histogram sample (or set a gauge) on a series.
    pub fn record(&mut self, family: &'a Family, series: usize, value: u64) {
        let update = MetricUpdate {
            family,
            series,
            op: MetricOp::Record(value),
        };
        Self::push(&mut self.metrics, &mut self.overflowed, update);
    }

    /// Reply locally (and stop the stream).
    pub fn reply(&mut self, reply: LocalReply<'a>) {
        self.local_reply = Some(reply);
        self.flow = Flow::Pause;
    }

    /// The header operations, in order.
    pub fn header_ops(&self) -> &[HeaderOp<'a>] {
        &self.headers
    }

    /// The properties to publish, in order.
    pub fn properties(&self) -> &[(&'a PropertyPath, &'a [u8])] {
        &self.properties
    }

    /// The metric updates, in order.
    pub fn metric_updates(&self) -> &[MetricUpdate<'a>] {
        &self.metrics
    }

    /// Whether a push went beyond a list's capacity (the value is then refused by [`apply`]).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// What the proxy callback should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `Action::Continue`.
    Continue,
    /// `Action::Pause`.
    Pause,
}

/// The result of [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// What the callback returns.
    pub action: Action,
    /// The token of the callout started, if any.
    pub callout_token: Option<u32>,
}

/// Why [`apply`] could not carry out an `Effects` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// More operations than the fixed capacities: a filter bug.
    #[error("effects overflowed their fixed capacity")]
    Overflow,
    /// A header operation, the callout or the local reply failed in the host.
    #[error("{what}: {error}")]
    Host {
        /// Which step failed.
        what: &'static str,
        /// The host's answer.
        error: HostError,
    },
}

impl ApplyError {
    /// A host failure while reading what the decision needs (headers, properties, randomness),
    /// before any effect was applied: `map_err(ApplyError::reading)`.
    pub const fn reading(error: HostError) -> Self {
        Self::Host {
            what: "read",
            error,
        }
    }
}

fn host_step<T>(what: &'static str, result: Result<T, HostError>) -> Result<T, ApplyError> {
    result.map_err(|error| ApplyError::Host { what, error })
}

/// Carries out `effects` on `map` (the header map of the current event): header operations,
/// `clear_route_cache`, properties, metrics, the callout, then the local reply.
///
/// Property and metric failures are logged (`warn`) or ignored and never fail the request;
/// header, callout and reply failures return an error for the filter's failure mode to decide.
/// A local reply makes the callback pause (Envoy stops the stream regardless).
pub fn apply(
    host: &(impl Host + ?Sized),
    map: MapKind,
    effects: &Effects<'_>,
) -> Result<Applied, ApplyError> {
    if effects.overflowed {
        return Err(ApplyError::Overflow);
    }
    for op in &effects.headers {
        let result = match *op {
            HeaderOp::Set(name, value) => host.set_header(map, name, value),
            HeaderOp::Add(name, value) => host.add_header(map, name, value),
            HeaderOp::Remove(name) => host.remove_header(map, name),
        };
        host_step("header", result)?;
    }
    if effects.clear_route_cache {
        // Envoy < 1.33 has no such function and re-routes implicitly: NotFound is expected.
        let _ = host.call_foreign_function("clear_route_cache", &[]);
    }
    for (path, value) in &effects.properties {
        if let Err(error) = host.set_property(path, value) {
            ::log::warn!("cannot set a property: {error}");
        }
    }
    for update in &effects.metrics {
        match update.op {
            MetricOp::Add(delta) => update.family.add(host, update.series, delta),
            MetricOp::Record(value) => update.family.record(host, update.series, value),
        }
    }
    let callout_token = match &effects.callout {
        None => None,
        Some(Callout::Http(call)) => Some(host_step("http_call", host.http_call(call))?),
        Some(Callout::Grpc(call)) => Some(host_step("grpc_call", host.grpc_call(call))?),
    };
    if let Some(reply) = &effects.local_reply {
        host_step("local reply", host.send_local_response(reply))?;
        return Ok(Applied {
            action: Action::Pause,
            callout_token,
        });
    }
    let action = match effects.flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    };
    Ok(Applied {
        action,
        callout_token,
    })
}

/// Resumes (or replies to) a stream that waits on the root context: makes `context_id` the
/// effective context, applies `effects` to its request headers (still available while it is
/// paused), then continues its request unless the effects replied or keep it waiting.
///
/// The effective context stays on that stream afterwards: a root callback that then starts a
/// callout would have Envoy tie it to the stream (and cancel it when the stream ends). Use
/// [`resume_all`], which switches back to the root, or start root callouts first.
pub fn resume(
    host: &(impl Host + ?Sized),
    context_id: u32,
    effects: &Effects<'_>,
) -> Result<Applied, ApplyError> {
    host_step("effective context", host.set_effective_context(context_id))?;
    let applied = apply(host, MapKind::RequestHeaders, effects)?;
    if applied.action == Action::Continue {
        host_step("continue", host.continue_stream(StreamKind::Request))?;
    }
    Ok(applied)
}

/// [`resume`] for every stream in `context_ids` with the same `effects`, then makes the root
/// context (`root_context_id`) effective again. Failures are logged per stream (a stream may have
/// ended meanwhile) and counted: the result is how many streams were resumed or answered.
pub fn resume_all(
    host: &(impl Host + ?Sized),
    root_context_id: u32,
    context_ids: impl IntoIterator<Item = u32>,
    effects: &Effects<'_>,
) -> usize {
    let mut done = 0;
    for context_id in context_ids {
        match resume(host, context_id, effects) {
            Ok(_) => done += 1,
            Err(error) => ::log::warn!("cannot resume stream {context_id}: {error}"),
        }
    }
    if let Err(error) = host.set_effective_context(root_context_id) {
        ::log::warn!("cannot switch back to the root context: {error}");
    }
    done
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::MetricKind;
    use crate::host::mock::{Hostcall, MockHost};

    #[test]
    fn applies_headers_properties_metrics_in_order_and_continues() {
        let host = MockHost::new()
            .with_request_header("x-old", "1")
            .with_request_header("x-keep", "1");
        let family = Family::single(&host, MetricKind::Counter, "seen_total");
        let path = PropertyPath::from_static("meshward_thing");
        let mut effects = Effects::new();
        effects.set_header("x-new", b"v");
        effects.add_header("x-keep", b"2");
        effects.remove_header("x-old");
        effects.set_property(&path, b"p");
        effects.count(&family, 0, 1);
        effects.clear_route_cache = true;
        let applied = apply(&host, MapKind::RequestHeaders, &effects).unwrap();
        assert_eq!(
            applied,
            Applied {
                action: Action::Continue,
                callout_token: None
            }
        );
        assert_eq!(host.request_header("x-new").as_deref(), Some("v"));
        assert_eq!(
            host.header_values(MapKind::RequestHeaders, "x-keep"),
            ["1", "2"]
        );
        assert_eq!(host.request_header("x-old"), None);
        assert_eq!(
            host.property_value(&["meshward_thing"]).as_deref(),
            Some(&b"p"[..])
        );
        assert_eq!(host.metric_value("seen_total"), Some(1));
        assert_eq!(host.foreign_calls()[0].0, "clear_route_cache");
    }

    #[test]
    fn a_local_reply_pauses_and_carries_details() {
        let host = MockHost::new();
        let mut effects = Effects::new();
        effects.reply(LocalReply {
            status: 401,
            details: "meshward_jwt_missing",
            body: b"no token",
            ..LocalReply::default()
        });
        let applied = apply(&host, MapKind::RequestHeaders, &effects).unwrap();
        assert_eq!(applied.action, Action::Pause);
        let sent = host.local_response().unwrap();
        assert_eq!(
            (sent.status, sent.details.as_str()),
            (401, "meshward_jwt_missing")
        );
    }

    #[test]
    fn a_callout_returns_its_token_and_a_pause() {
        let host = MockHost::new();
        let headers: [(&str, &[u8]); 3] = [
            (":method", b"GET"),
            (":path", b"/k"),
            (":authority", b"idp"),
        ];
        let mut effects = Effects::new();
        effects.callout = Some(Callout::Http(HttpCall {
            cluster: "idp",
            headers: &headers,
            timeout_ms: 500,
            ..HttpCall::default()
        }));
        effects.flow = Flow::Pause;
        let applied = apply(&host, MapKind::RequestHeaders, &effects).unwrap();
        assert_eq!(applied.action, Action::Pause);
        assert!(applied.callout_token.is_some());
        assert_eq!(host.http_calls().len(), 1);
    }

    #[test]
    fn overflow_is_refused_before_anything_happens() {
        let host = MockHost::new();
        let mut effects = Effects::new();
        for _ in 0..=MAX_HEADER_OPS {
            effects.set_header("x", b"1");
        }
        assert!(effects.overflowed());
        assert_eq!(
            apply(&host, MapKind::RequestHeaders, &effects),
            Err(ApplyError::Overflow)
        );
        assert_eq!(host.request_header("x"), None);
    }

    #[test]
    fn header_failures_are_errors_but_property_failures_are_not() {
        let host = MockHost::new().failing_always(Hostcall::SetProperty, HostError::NotFound);
        let path = PropertyPath::from_static("p");
        let mut effects = Effects::new();
        effects.set_property(&path, b"v");
        assert!(apply(&host, MapKind::RequestHeaders, &effects).is_ok());
        let host = MockHost::new().failing_always(Hostcall::SetHeader, HostError::BadArgument);
        let mut effects = Effects::new();
        effects.set_header("x", b"v");
        assert_eq!(
            apply(&host, MapKind::RequestHeaders, &effects),
            Err(ApplyError::Host {
                what: "header",
                error: HostError::BadArgument
            })
        );
    }

    #[test]
    fn resume_all_switches_back_to_the_root_context() {
        let host = MockHost::new();
        let mut effects = Effects::new();
        effects.set_header("x-token", b"t");
        assert_eq!(resume_all(&host, 1, [7, 8], &effects), 2);
        assert_eq!(host.effective_contexts(), [7, 8, 1]);
        assert_eq!(host.resumed_requests(), 2);
    }

    #[test]
    fn resume_switches_context_then_continues_the_request() {
        let host = MockHost::new();
        let mut effects = Effects::new();
        effects.set_header("x-resumed", b"1");
        resume(&host, 42, &effects).unwrap();
        assert_eq!(host.effective_contexts(), [42]);
        assert_eq!(host.resumed_requests(), 1);
        let mut reply = Effects::new();
        reply.reply(LocalReply {
            status: 504,
            ..LocalReply::default()
        });
        resume(&host, 43, &reply).unwrap();
        assert_eq!(
            host.resumed_requests(),
            1,
            "a reply does not continue the request"
        );
        assert_eq!(host.local_response().map(|r| r.status), Some(504));
    }
}
