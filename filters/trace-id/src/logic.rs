//! The filter's decisions as pure functions over plain data: a per-stream [`Decision`] made once
//! from the few request values the filter reads ([`Incoming`]) and 40 random bytes, then turned
//! into the core's [`Effects`] for the request ([`Decision::request_effects`]) and for the
//! response ([`Decision::response_effects`]). Nothing here touches the proxy.
//!
//! Cheap by construction: the ids and the `traceparent` are formatted once into fixed arrays of
//! the decision, effects borrow them, and the header operations of the common path allocate
//! nothing. Only optional features (a kept client id, `tracestate` rewriting, B3 writing, the
//! original-id copy) own heap data.

use std::net::IpAddr;

use meshward_core::effects::Effects;
use meshward_core::host::PropertyPath;
use meshward_core::ids::{UUID_LEN, uuid_v4};

use crate::b3::{self, B3, B3Headers};
use crate::config::{B3Write, Config, Mode, Policy, Sampling};
use crate::metrics::Metrics;
use crate::outcome::{IdOutcome, StateOutcome, TraceOutcome};
use crate::request_id::{self, InvalidRequestId};
use crate::traceparent::{self, FLAG_RANDOM, FLAG_SAMPLED, TraceParent, V00_LEN};
use crate::tracestate::TraceState;

/// Name of the `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// Name of the `tracestate` header.
pub const TRACESTATE: &str = "tracestate";
/// Response header carrying the forwarded context (Trace Context Level 2 draft).
pub const TRACERESPONSE: &str = "traceresponse";
/// Response header for `serverTiming`.
pub const SERVER_TIMING: &str = "server-timing";
/// Filter-state property holding the request id.
pub const PROPERTY_REQUEST_ID: &str = "meshward_request_id";
/// Filter-state property holding the trace id (32 hex).
pub const PROPERTY_TRACE_ID: &str = "meshward_trace_id";
/// [`PROPERTY_REQUEST_ID`] as a property path.
pub static REQUEST_ID_PROPERTY: PropertyPath = PropertyPath::from_static(PROPERTY_REQUEST_ID);
/// [`PROPERTY_TRACE_ID`] as a property path.
pub static TRACE_ID_PROPERTY: PropertyPath = PropertyPath::from_static(PROPERTY_TRACE_ID);

/// Random bytes one request consumes: a UUIDv4 (16), a trace id (16) and a parent id (8).
pub const RANDOM_BYTES: usize = 40;
/// Length of the `server-timing` value: `traceparent;desc="<55>"`.
pub const SERVER_TIMING_LEN: usize = 18 + V00_LEN + 1;

/// The request values trace-id reads. Each is the header's value as Envoy's
/// `request.headers.<name>` gives it: every occurrence joined by `,` (so a `,` in an id or a
/// `traceparent` means it was sent twice — neither may contain one — and `tracestate` arrives
/// already combined, as §3.3.2 requires).
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    /// The request id and where it was found: index 0 is `requestId.header`, `i` is
    /// `requestId.aliases[i - 1]` (the first present one is read).
    pub request_id: Option<(usize, &'a [u8])>,
    /// Whether `requestId.originalIdHeader` was sent (read only when configured).
    pub original_id_present: bool,
    /// `traceparent`.
    pub traceparent: Option<&'a [u8]>,
    /// `tracestate`.
    pub tracestate: Option<&'a [u8]>,
    /// B3 headers in [`B3_HEADERS`] order (read only when B3 is read or written).
    pub b3: [Option<&'a [u8]>; 6],
    /// The direct peer (`source.address`), read only for `keepIfTrusted`.
    pub source_ip: Option<IpAddr>,
}

/// The B3 headers, in the order of [`Incoming::b3`].
pub const B3_HEADERS: [&str; 6] = [
    b3::SINGLE,
    b3::TRACE_ID,
    b3::SPAN_ID,
    b3::PARENT_SPAN_ID,
    b3::SAMPLED,
    b3::FLAGS,
];

/// The request id now on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// Generated here (lower-case hyphenated UUIDv4).
    Generated([u8; UUID_LEN]),
    /// The client's, validated.
    Kept(Box<[u8]>),
}

impl RequestId {
    /// The id's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Generated(id) => id,
            Self::Kept(id) => id,
        }
    }
}

/// What happens to `tracestate` on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StateWrite {
    /// Leave it as it is (absent, or forwarded unchanged).
    Untouched,
    /// Remove it.
    Remove,
    /// Replace it with this combined, validated list.
    Set(String),
}

/// B3 headers to write next to `traceparent` (boxed in the decision: rare, and large).
#[derive(Debug, Clone, PartialEq, Eq)]
enum B3Out {
    Single([u8; b3::SINGLE_LEN]),
    Multi([u8; 32], [u8; 16], &'static [u8]),
}

/// Everything the request phase decided for one stream; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    request_id: RequestId,
    /// Index (as in [`Incoming::request_id`]) of the header that already holds the id.
    id_in_place: Option<usize>,
    /// A valid client id that was replaced, to copy to `originalIdHeader`.
    original_id: Option<Box<[u8]>>,
    remove_original_id: bool,
    trace: TraceParent,
    traceparent: [u8; V00_LEN],
    write_traceparent: bool,
    tracestate: StateWrite,
    b3_write: Option<Box<B3Out>>,
    /// Bit `i` set: B3 header `B3_HEADERS[i]` was sent and must go (it would contradict ours).
    b3_remove: u8,
    /// Request-id outcome.
    pub id: IdOutcome,
    /// Trace-context outcome.
    pub trace_outcome: TraceOutcome,
    /// `tracestate` outcome, when one was received.
    pub state: Option<StateOutcome>,
}

fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
    if bytes.iter().all(|b| *b == 0) {
        // An all-zero id is invalid (§3.2.2.3/4); a broken or fixed source must not produce one.
        if let Some(last) = bytes.last_mut() {
            *last = 1;
        }
    }
    bytes
}

/// Splits the 40 random bytes into (uuid, trace id, parent id).
fn split_random(random: &[u8; RANDOM_BYTES]) -> ([u8; 16], [u8; 16], [u8; 8]) {
    let mut uuid = [0u8; 16];
    let mut trace = [0u8; 16];
    let mut parent = [0u8; 8];
    let (a, rest) = random.split_at(16);
    let (b, c) = rest.split_at(16);
    uuid.copy_from_slice(a);
    trace.copy_from_slice(b);
    parent.copy_from_slice(c);
    (uuid, nonzero(trace), nonzero(parent))
}

fn sampled_for(cfg: &Config, trace_id: &[u8; 16], inherited: Option<bool>) -> bool {
    match cfg.sampling {
        Sampling::Fixed(sampled) => sampled,
        Sampling::Ratio { threshold } => {
            // The right-most 7 bytes are random (that is what FLAG_RANDOM promises), so the
            // decision is uniform and every hop that sees this trace id can repeat it.
            let mut low = [0u8; 8];
            for (slot, byte) in low.iter_mut().skip(1).zip(trace_id.iter().skip(9)) {
                *slot = *byte;
            }
            u64::from_be_bytes(low) < threshold
        }
        Sampling::Inherit { fallback } => inherited.unwrap_or(fallback),
    }
}

fn new_trace(
    cfg: &Config,
    inherited: Option<bool>,
    trace_id: [u8; 16],
    parent_id: [u8; 8],
) -> TraceParent {
    let sampled = sampled_for(cfg, &trace_id, inherited);
    TraceParent {
        trace_id,
        parent_id,
        flags: FLAG_RANDOM | if sampled { FLAG_SAMPLED } else { 0 },
    }
}

/// A joined header value as the list of its occurrences: `,` separates them (at most two are
/// kept: "more than one" is all the rules need to know).
#[derive(Debug, Clone, Copy)]
struct Occurrences<'a> {
    values: [&'a [u8]; 2],
    count: usize,
}

impl<'a> Occurrences<'a> {
    fn as_slice(&self) -> &[&'a [u8]] {
        self.values.get(..self.count).unwrap_or_default()
    }
}

fn occurrences(joined: Option<&[u8]>) -> Occurrences<'_> {
    let (values, count) = match joined {
        None => ([&[][..], &[]], 0),
        Some(value) => match value.iter().position(|b| *b == b',') {
            None => ([value, &[]], 1),
            Some(at) => (
                [
                    value.get(..at).unwrap_or_default(),
                    value.get(at + 1..).unwrap_or_default(),
                ],
                2,
            ),
        },
    };
    Occurrences { values, count }
}

// === request id ===

fn decide_request_id(
    cfg: &Config,
    incoming: &Incoming<'_>,
    uuid: [u8; 16],
) -> (RequestId, Option<usize>, Option<Box<[u8]>>, IdOutcome) {
    let rid = &cfg.request_id;
    let checked = incoming.request_id.map(|(source, value)| {
        let validated = if value.contains(&b',') {
            Err(InvalidRequestId::Duplicated)
        } else {
            request_id::validate(value, rid.max_length, rid.validation)
        };
        (source, validated)
    });
    let trusted = || {
        incoming
            .source_ip
            .is_some_and(|ip| rid.trusted_cidrs.iter().any(|c| c.contains(ip)))
    };
    let (valid, source, outcome) = match checked {
        None => (None, None, IdOutcome::GeneratedAbsent),
        Some((_, Err(e))) => (None, None, IdOutcome::ReplacedInvalid(e)),
        Some((source, Ok(id))) => {
            let outcome = match rid.policy {
                Policy::KeepIfValid => IdOutcome::KeptValid,
                Policy::AlwaysReplace => IdOutcome::ReplacedPolicy,
                Policy::KeepIfTrusted if trusted() => IdOutcome::KeptTrusted,
                Policy::KeepIfTrusted => IdOutcome::ReplacedUntrusted,
            };
            (
                Some(id.into_bytes().into_boxed_slice()),
                Some(source),
                outcome,
            )
        }
    };
    match valid {
        Some(id) if outcome.kept() => {
            // Kept as sent only when the header held exactly the validated id (no whitespace).
            let in_place = incoming
                .request_id
                .filter(|(_, raw)| *raw == &*id)
                .and(source);
            (RequestId::Kept(id), in_place, None, outcome)
        }
        // Only a valid id is copied: an invalid one is exactly what must not reach the logs.
        original => (RequestId::Generated(uuid_v4(uuid)), None, original, outcome),
    }
}

// === trace context ===

enum Received {
    /// A valid `traceparent`.
    W3c(traceparent::Parsed),
    /// A B3 context (no `traceparent` was sent).
    B3(TraceParent),
    /// Nothing usable was sent.
    Absent,
    /// `traceparent` was sent but is invalid.
    Invalid(traceparent::InvalidTraceParent),
    /// No `traceparent`, malformed B3.
    InvalidB3,
}

fn read_b3(cfg: &Config, incoming: &Incoming<'_>) -> Result<Option<B3>, b3::InvalidB3> {
    if !cfg.b3_read {
        return Ok(None);
    }
    let [single, trace, span, _parent, sampled, flags] = incoming.b3.map(occurrences);
    b3::read(&B3Headers {
        single: single.as_slice(),
        trace_id: trace.as_slice(),
        span_id: span.as_slice(),
        sampled: sampled.as_slice(),
        flags: flags.as_slice(),
    })
}

fn decide_trace(
    cfg: &Config,
    incoming: &Incoming<'_>,
    trace_id: [u8; 16],
    parent_id: [u8; 8],
) -> (TraceParent, TraceOutcome, bool) {
    let b3 = read_b3(cfg, incoming);
    let b3_sampling = match b3 {
        Ok(Some(
            B3::SamplingOnly(s)
            | B3::Context {
                sampling: Some(s), ..
            },
        )) => Some(s.sampled()),
        _ => None,
    };
    let received = match traceparent::parse_headers(occurrences(incoming.traceparent).as_slice()) {
        Ok(Some(parsed)) => Received::W3c(parsed),
        Err(e) => Received::Invalid(e),
        Ok(None) => match b3 {
            Ok(Some(B3::Context {
                trace_id,
                span_id,
                sampling,
            })) => Received::B3(TraceParent {
                trace_id,
                parent_id: span_id,
                // B3 says nothing about how the trace id was made, so the random flag stays off.
                flags: if sampling.is_some_and(b3::Sampling::sampled) {
                    FLAG_SAMPLED
                } else {
                    0
                },
            }),
            Err(_) => Received::InvalidB3,
            Ok(_) => Received::Absent,
        },
    };
    let received_sampled = match &received {
        Received::W3c(p) => Some(p.context.sampled()),
        Received::B3(tp) => Some(tp.sampled()),
        Received::Absent | Received::Invalid(_) | Received::InvalidB3 => None,
    };
    let fresh = |inherited| new_trace(cfg, inherited, trace_id, parent_id);
    match (cfg.mode, received) {
        (_, Received::Absent) => (fresh(b3_sampling), TraceOutcome::StartedAbsent, true),
        (Mode::Restart, Received::W3c(_) | Received::B3(_)) => (
            fresh(b3_sampling.or(received_sampled)),
            TraceOutcome::RestartedTrustBoundary,
            true,
        ),
        (_, Received::Invalid(e)) => (fresh(b3_sampling), TraceOutcome::RestartedInvalid(e), true),
        (_, Received::InvalidB3) => (fresh(b3_sampling), TraceOutcome::RestartedInvalidB3, true),
        (Mode::Hop | Mode::Passthrough, Received::W3c(parsed)) => {
            let outcome = if parsed.future_version {
                TraceOutcome::KeptFutureVersion
            } else {
                TraceOutcome::KeptValid
            };
            if cfg.mode == Mode::Hop {
                let trace = TraceParent {
                    parent_id,
                    ..parsed.context
                };
                (trace, outcome, true)
            } else {
                (parsed.context, outcome, parsed.needs_rewrite)
            }
        }
        (Mode::Hop, Received::B3(context)) => (
            TraceParent {
                parent_id,
                ..context
            },
            TraceOutcome::KeptB3,
            true,
        ),
        (Mode::Passthrough, Received::B3(context)) => (context, TraceOutcome::KeptB3, true),
    }
}

fn decide_tracestate(
    cfg: &Config,
    raw: Option<&[u8]>,
    trace: TraceOutcome,
) -> (StateWrite, Option<StateOutcome>) {
    let Some(raw) = raw else {
        return (StateWrite::Untouched, None);
    };
    let drop = |outcome| (StateWrite::Remove, Some(outcome));
    match trace {
        TraceOutcome::KeptValid | TraceOutcome::KeptFutureVersion => {}
        // §3.3: tracestate belongs to the traceparent it came with; without that parent (absent,
        // invalid, restarted, or a B3-only context) it must not be parsed or forwarded.
        TraceOutcome::RestartedTrustBoundary
        | TraceOutcome::RestartedInvalidB3
        | TraceOutcome::RestartedInvalid(_) => return drop(StateOutcome::DroppedRestarted),
        TraceOutcome::StartedAbsent | TraceOutcome::KeptB3 => {
            return drop(StateOutcome::DroppedNoTraceparent);
        }
    }
    let mut state = match TraceState::parse_headers(&[raw]) {
        Ok(Some(state)) => state,
        // Empty and blank headers are accepted, but SHOULD NOT be sent on (§3.3.2).
        Ok(None) => return drop(StateOutcome::DroppedEmpty),
        Err(e) => return drop(StateOutcome::DroppedInvalid(e)),
    };
    if cfg.mode == Mode::Passthrough {
        // §3.4: the parent is unchanged, so tracestate MUST NOT change either.
        return (StateWrite::Untouched, Some(StateOutcome::KeptUnchanged));
    }
    let truncated = state.truncate(cfg.tracestate_max_length);
    if state.is_empty() {
        return drop(StateOutcome::DroppedTooLong);
    }
    let outcome = if truncated {
        StateOutcome::Truncated
    } else if state.removed_duplicates() > 0 {
        StateOutcome::KeptDeduplicated
    } else {
        StateOutcome::KeptValid
    };
    // Always written: the proxy's joined view cannot tell one field from several, and §3.3.2
    // wants them combined into one.
    (StateWrite::Set(state.format()), Some(outcome))
}

fn decide_b3(
    cfg: &Config,
    trace: &TraceParent,
    incoming: &Incoming<'_>,
) -> (Option<Box<B3Out>>, u8) {
    // Headers of the other B3 form (and a stale parent span id) would contradict ours: remove
    // the ones that were sent.
    let sent = |names: &[usize]| {
        names
            .iter()
            .filter(|i| incoming.b3.get(**i).is_some_and(Option::is_some))
            .fold(0u8, |bits, i| bits | (1 << i))
    };
    let (id, span, sampled) = (&trace.trace_id, &trace.parent_id, trace.sampled());
    match cfg.b3_write {
        B3Write::None => (None, 0),
        B3Write::Single => (
            Some(Box::new(B3Out::Single(b3::encode_single(
                id, span, sampled,
            )))),
            sent(&[1, 2, 3, 4, 5]),
        ),
        B3Write::Multi => {
            let (trace_hex, span_hex, flag) = b3::encode_multi(id, span, sampled);
            (
                Some(Box::new(B3Out::Multi(trace_hex, span_hex, flag))),
                sent(&[0, 3, 5]),
            )
        }
    }
}

impl Default for Decision {
    fn default() -> Self {
        Self {
            request_id: RequestId::Generated([b'0'; UUID_LEN]),
            id_in_place: None,
            original_id: None,
            remove_original_id: false,
            trace: TraceParent {
                trace_id: [0; 16],
                parent_id: [0; 8],
                flags: 0,
            },
            traceparent: [b'0'; V00_LEN],
            write_traceparent: false,
            tracestate: StateWrite::Untouched,
            b3_write: None,
            b3_remove: 0,
            id: IdOutcome::GeneratedAbsent,
            trace_outcome: TraceOutcome::StartedAbsent,
            state: None,
        }
    }
}

impl Decision {
    /// Decides the request phase (tests and tools; the filter reuses its stream's decision with
    /// [`Decision::decide`]).
    pub fn new(cfg: &Config, incoming: &Incoming<'_>, random: &[u8; RANDOM_BYTES]) -> Self {
        let mut decision = Self::default();
        decision.decide(cfg, incoming, random);
        decision
    }

    /// Decides the request phase in place (the decision lives in the stream context; building
    /// it elsewhere and moving it in would copy it).
    pub fn decide(&mut self, cfg: &Config, incoming: &Incoming<'_>, random: &[u8; RANDOM_BYTES]) {
        let (uuid, trace_id, parent_id) = split_random(random);
        let (request_id, id_in_place, original, id) = decide_request_id(cfg, incoming, uuid);
        let (original_id, remove_original_id) = match &cfg.request_id.original_id_header {
            Some(_) => {
                let copy = original.filter(|_| !id.kept());
                // A client must not be able to forge the "original id" header.
                let remove = copy.is_none() && incoming.original_id_present;
                (copy, remove)
            }
            None => (None, false),
        };
        let (trace, trace_outcome, write_traceparent) =
            decide_trace(cfg, incoming, trace_id, parent_id);
        let (tracestate, state) = decide_tracestate(cfg, incoming.tracestate, trace_outcome);
        let (b3_write, b3_remove) = decide_b3(cfg, &trace, incoming);
        self.request_id = request_id;
        self.id_in_place = id_in_place;
        self.original_id = original_id;
        self.remove_original_id = remove_original_id;
        trace.encode_into(&mut self.traceparent);
        self.trace = trace;
        self.write_traceparent = write_traceparent;
        self.tracestate = tracestate;
        self.b3_write = b3_write;
        self.b3_remove = b3_remove;
        self.id = id;
        self.trace_outcome = trace_outcome;
        self.state = state;
    }

    /// The request id now on the request.
    pub fn request_id(&self) -> &[u8] {
        self.request_id.as_bytes()
    }

    /// The context forwarded upstream.
    pub const fn trace(&self) -> &TraceParent {
        &self.trace
    }

    /// The forwarded `traceparent` value.
    pub const fn traceparent(&self) -> &[u8; V00_LEN] {
        &self.traceparent
    }

    /// The request's effects: header writes, properties and metrics, added to `effects` (built
    /// in place by the caller: the value is large, and moving it would cost a copy per request).
    pub fn request_effects<'a>(
        &'a self,
        cfg: &'a Config,
        metrics: &'a Metrics,
        effects: &mut Effects<'a>,
    ) {
        let id = self.request_id.as_bytes();
        let rid = &cfg.request_id;
        if let (Some(header), Some(original)) = (&rid.original_id_header, &self.original_id) {
            effects.set_header(header, original);
        }
        if let (Some(header), true) = (&rid.original_id_header, self.remove_original_id) {
            effects.remove_header(header);
        }
        for (i, name) in std::iter::once(&rid.header).chain(&rid.aliases).enumerate() {
            if self.id_in_place != Some(i) {
                effects.set_header(name, id);
            }
        }
        if self.write_traceparent {
            effects.set_header(TRACEPARENT, &self.traceparent);
        }
        match &self.tracestate {
            StateWrite::Untouched => {}
            StateWrite::Remove => effects.remove_header(TRACESTATE),
            StateWrite::Set(list) => effects.set_header(TRACESTATE, list.as_bytes()),
        }
        match self.b3_write.as_deref() {
            None => {}
            Some(B3Out::Single(value)) => effects.set_header(b3::SINGLE, value),
            Some(B3Out::Multi(trace_id, span_id, sampled)) => {
                effects.set_header(b3::TRACE_ID, trace_id);
                effects.set_header(b3::SPAN_ID, span_id);
                effects.set_header(b3::SAMPLED, sampled);
            }
        }
        for (i, name) in B3_HEADERS.iter().enumerate() {
            if self.b3_remove & (1 << i) != 0 {
                effects.remove_header(name);
            }
        }
        if cfg.properties {
            effects.set_property(&REQUEST_ID_PROPERTY, id);
            // The trace id's hex is bytes 3..35 of the formatted traceparent.
            effects.set_property(
                &TRACE_ID_PROPERTY,
                self.traceparent.get(3..35).unwrap_or_default(),
            );
        }
        effects.count(&metrics.request_ids, self.id.series(), 1);
        effects.count(&metrics.trace_contexts, self.trace_outcome.series(), 1);
        if let Some(state) = self.state {
            effects.count(&metrics.tracestates, state.series(), 1);
        }
    }

    /// The `server-timing` value for this trace: `traceparent;desc="<traceparent>"`.
    pub fn server_timing(&self) -> [u8; SERVER_TIMING_LEN] {
        let mut out = [b'"'; SERVER_TIMING_LEN];
        let (prefix, rest) = out.split_at_mut(18);
        prefix.copy_from_slice(b"traceparent;desc=\"");
        if let Some(tp) = rest.get_mut(..V00_LEN) {
            tp.copy_from_slice(&self.traceparent);
        }
        out
    }

    /// The response's effects (also on local replies of later filters): echo what was decided.
    /// `server_timing` is [`Decision::server_timing`], made by the caller so the effects can
    /// borrow it.
    pub fn response_effects<'a>(
        &'a self,
        cfg: &'a Config,
        server_timing: &'a [u8],
        effects: &mut Effects<'a>,
    ) {
        if cfg.echo_request_id {
            effects.set_header(&cfg.request_id.header, self.request_id.as_bytes());
        }
        if cfg.traceresponse {
            effects.set_header(TRACERESPONSE, &self.traceparent);
        }
        if cfg.server_timing {
            effects.add_header(SERVER_TIMING, server_timing);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
