//! The filter's decisions as pure functions over plain data.
//!
//! `decide_request` turns the request header map (read once), the peer address and a source of
//! randomness into the header mutations, the chosen ids, the properties to publish and the
//! outcome of each rule (for metrics). `decide_response` turns what the request phase remembered
//! into the response header mutations. Nothing here touches the proxy.

use std::net::IpAddr;

use meshward_core::host::HostResult;
use meshward_core::ids::{RandomSource, uuid_v4_from_bytes};
use meshward_core::request::RequestView;

use crate::b3::{self, B3, B3Headers};
use crate::config::{B3Write, Config, Mode, Policy, Sampling};
use crate::request_id::{self, InvalidRequestId};
use crate::traceparent::{self, FLAG_RANDOM, FLAG_SAMPLED, TraceParent};
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

/// One mutation of a header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value of the header.
    Set(String, String),
    /// Append a value, keeping existing ones.
    Add(String, String),
    /// Remove every value of the header.
    Remove(String),
}

/// Source of random bytes (WASI `random_get` in the proxy, seeded closures in tests).
pub type Random<'a> = &'a mut dyn RandomSource;

/// What happened to the request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdAction {
    /// None was sent; a new one was generated.
    Generated,
    /// The client's id was kept.
    Kept,
    /// The client's id was replaced.
    Replaced,
}

/// Why (bounded metric tag values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdReason {
    /// No id header (nor alias) was sent.
    Absent,
    /// The id passed validation.
    Valid,
    /// The id passed validation and came from a trusted peer.
    Trusted,
    /// The id was valid but the peer is not trusted.
    Untrusted,
    /// The policy replaces every id.
    Policy,
    /// The id failed validation.
    Invalid(InvalidRequestId),
}

impl IdAction {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Kept => "kept",
            Self::Replaced => "replaced",
        }
    }
}

impl IdReason {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Valid => "valid",
            Self::Trusted => "trusted",
            Self::Untrusted => "untrusted",
            Self::Policy => "policy",
            Self::Invalid(e) => e.reason(),
        }
    }
}

/// What happened to the trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceAction {
    /// A valid incoming context was continued.
    Kept,
    /// There was none; a new trace was started.
    Started,
    /// There was one but it was invalid or not trusted; a new trace was started.
    Restarted,
}

impl TraceAction {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Started => "started",
            Self::Restarted => "restarted",
        }
    }
}

/// What happened to `tracestate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAction {
    /// Forwarded (unchanged in `passthrough`, combined into one header in `hop`).
    Kept,
    /// Entries were removed to fit `maxLength`.
    Truncated,
    /// Removed (invalid, or the trace restarted).
    Dropped,
}

impl StateAction {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Truncated => "truncated",
            Self::Dropped => "dropped",
        }
    }
}

/// The outcome of one rule, for metrics: an action and a bounded reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<A> {
    /// What was done.
    pub action: A,
    /// Why (a `&'static str` from a closed set).
    pub reason: &'static str,
}

/// Everything the request phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDecision {
    /// Mutations of the request headers, in order.
    pub header_ops: Vec<HeaderOp>,
    /// The request id now on the request.
    pub request_id: String,
    /// The context forwarded upstream.
    pub trace: TraceParent,
    /// Request-id outcome.
    pub id_outcome: Outcome<IdAction>,
    /// Trace-context outcome.
    pub trace_outcome: Outcome<TraceAction>,
    /// `tracestate` outcome, when one was received.
    pub state_outcome: Option<Outcome<StateAction>>,
    /// Filter-state properties to set (`name`, value).
    pub properties: Vec<(&'static str, String)>,
}

impl RequestDecision {
    /// What the response phase needs (request headers are gone by then).
    pub fn memo(&self) -> ResponseMemo {
        ResponseMemo {
            request_id: self.request_id.clone(),
            traceparent: self.trace.format(),
        }
    }
}

/// What the request phase leaves for the response phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMemo {
    /// The request id.
    pub request_id: String,
    /// The forwarded `traceparent`.
    pub traceparent: String,
}

fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn random_nonzero<const N: usize>(random: Random<'_>) -> HostResult<[u8; N]> {
    let mut bytes = [0u8; N];
    random.fill_random(&mut bytes)?;
    if bytes.iter().all(|b| *b == 0) {
        // An all-zero id is invalid (§3.2.2.3/4); a broken or seeded source must not produce one.
        if let Some(last) = bytes.last_mut() {
            *last = 1;
        }
    }
    Ok(bytes)
}

// === request id ===

fn decide_request_id(
    cfg: &Config,
    headers: &[(String, Vec<u8>)],
    source_ip: Option<IpAddr>,
    random: Random<'_>,
    ops: &mut Vec<HeaderOp>,
) -> HostResult<(String, Outcome<IdAction>)> {
    let rid = &cfg.request_id;
    let main = values(headers, &rid.header);
    let incoming = if main.is_empty() {
        rid.aliases
            .iter()
            .map(|alias| values(headers, alias))
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    } else {
        main.clone()
    };
    let checked = match incoming.as_slice() {
        [] => None,
        [one] => Some(request_id::validate(one, rid.max_length, rid.validation)),
        _ => Some(Err(InvalidRequestId::Duplicated)),
    };
    let trusted = || source_ip.is_some_and(|ip| rid.trusted_cidrs.iter().any(|c| c.contains(ip)));
    let (kept, action, reason) = match checked {
        None => (None, IdAction::Generated, IdReason::Absent),
        Some(Err(e)) => (None, IdAction::Replaced, IdReason::Invalid(e)),
        Some(Ok(id)) => match rid.policy {
            Policy::KeepIfValid => (Some(id), IdAction::Kept, IdReason::Valid),
            Policy::AlwaysReplace => (Some(id), IdAction::Replaced, IdReason::Policy),
            Policy::KeepIfTrusted if trusted() => (Some(id), IdAction::Kept, IdReason::Trusted),
            Policy::KeepIfTrusted => (Some(id), IdAction::Replaced, IdReason::Untrusted),
        },
    };
    let (id, copy) = match (action, kept) {
        (IdAction::Kept, Some(id)) => (id, None),
        // Only a valid id is copied: an invalid one is exactly what must not reach the logs.
        (_, original) => (uuid_v4_from_bytes(random_nonzero(random)?), original),
    };
    if let Some(header) = &rid.original_id_header {
        match copy {
            Some(original) => ops.push(HeaderOp::Set(header.clone(), original)),
            // A client must not be able to forge the "original id" header.
            None if !values(headers, header).is_empty() => {
                ops.push(HeaderOp::Remove(header.clone()))
            }
            None => {}
        }
    }
    for name in std::iter::once(&rid.header).chain(&rid.aliases) {
        if values(headers, name) != [id.as_bytes()] {
            ops.push(HeaderOp::Set(name.clone(), id.clone()));
        }
    }
    Ok((
        id,
        Outcome {
            action,
            reason: reason.as_str(),
        },
    ))
}

// === trace context ===

fn new_trace(cfg: &Config, inherited: Option<bool>, random: Random<'_>) -> HostResult<TraceParent> {
    let trace_id: [u8; 16] = random_nonzero(random)?;
    let parent_id: [u8; 8] = random_nonzero(random)?;
    let sampled = match cfg.sampling {
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
    };
    Ok(TraceParent {
        trace_id,
        parent_id,
        flags: FLAG_RANDOM | if sampled { FLAG_SAMPLED } else { 0 },
    })
}

fn b3_headers_of(headers: &[(String, Vec<u8>)]) -> [Vec<&[u8]>; 5] {
    [
        values(headers, b3::SINGLE),
        values(headers, b3::TRACE_ID),
        values(headers, b3::SPAN_ID),
        values(headers, b3::SAMPLED),
        values(headers, b3::FLAGS),
    ]
}

enum Incoming {
    /// A valid `traceparent` (and whether forwarding it needs a rewrite).
    W3c(traceparent::Parsed),
    /// A B3 context (no `traceparent` was sent).
    B3(TraceParent),
    /// Nothing usable was sent.
    Absent,
    /// Something was sent but is invalid.
    Invalid(&'static str),
}

struct TraceDecision {
    trace: TraceParent,
    outcome: Outcome<TraceAction>,
    state_outcome: Option<Outcome<StateAction>>,
}

fn decide_trace(
    cfg: &Config,
    headers: &[(String, Vec<u8>)],
    random: Random<'_>,
    ops: &mut Vec<HeaderOp>,
) -> HostResult<TraceDecision> {
    let tp_values = values(headers, TRACEPARENT);
    let ts_values = values(headers, TRACESTATE);
    let [single, b3_trace, b3_span, b3_sampled, b3_flags] = b3_headers_of(headers);
    let b3 = if cfg.b3_read {
        b3::read(&B3Headers {
            single: &single,
            trace_id: &b3_trace,
            span_id: &b3_span,
            sampled: &b3_sampled,
            flags: &b3_flags,
        })
    } else {
        Ok(None)
    };
    let b3_sampling = match b3 {
        Ok(Some(
            B3::SamplingOnly(s)
            | B3::Context {
                sampling: Some(s), ..
            },
        )) => Some(s.sampled()),
        _ => None,
    };

    let incoming = match traceparent::parse_headers(&tp_values) {
        Ok(Some(parsed)) => Incoming::W3c(parsed),
        Err(e) => Incoming::Invalid(e.reason()),
        Ok(None) => match b3 {
            Ok(Some(B3::Context {
                trace_id,
                span_id,
                sampling,
            })) => Incoming::B3(TraceParent {
                trace_id,
                parent_id: span_id,
                // B3 says nothing about how the trace id was made, so the random flag stays off.
                flags: if sampling.is_some_and(b3::Sampling::sampled) {
                    FLAG_SAMPLED
                } else {
                    0
                },
            }),
            Err(_) => Incoming::Invalid("invalid_b3"),
            Ok(_) => Incoming::Absent,
        },
    };
    let incoming_sampled = match &incoming {
        Incoming::W3c(p) => Some(p.context.sampled()),
        Incoming::B3(tp) => Some(tp.sampled()),
        Incoming::Absent | Incoming::Invalid(_) => None,
    };

    let (trace, outcome, rewrite) = match (cfg.mode, incoming) {
        (Mode::Restart, Incoming::Absent) | (Mode::Hop | Mode::Passthrough, Incoming::Absent) => (
            new_trace(cfg, b3_sampling, random)?,
            Outcome {
                action: TraceAction::Started,
                reason: "absent",
            },
            true,
        ),
        (Mode::Restart, Incoming::W3c(_) | Incoming::B3(_)) => (
            new_trace(cfg, b3_sampling.or(incoming_sampled), random)?,
            Outcome {
                action: TraceAction::Restarted,
                reason: "trust_boundary",
            },
            true,
        ),
        (_, Incoming::Invalid(reason)) => (
            new_trace(cfg, b3_sampling, random)?,
            Outcome {
                action: TraceAction::Restarted,
                reason,
            },
            true,
        ),
        (Mode::Hop, Incoming::W3c(parsed)) => {
            let reason = if parsed.future_version {
                "future_version"
            } else {
                "valid"
            };
            let trace = TraceParent {
                parent_id: random_nonzero(random)?,
                ..parsed.context
            };
            (
                trace,
                Outcome {
                    action: TraceAction::Kept,
                    reason,
                },
                true,
            )
        }
        (Mode::Passthrough, Incoming::W3c(parsed)) => {
            let reason = if parsed.future_version {
                "future_version"
            } else {
                "valid"
            };
            (
                parsed.context,
                Outcome {
                    action: TraceAction::Kept,
                    reason,
                },
                parsed.needs_rewrite,
            )
        }
        (Mode::Hop, Incoming::B3(context)) => (
            TraceParent {
                parent_id: random_nonzero(random)?,
                ..context
            },
            Outcome {
                action: TraceAction::Kept,
                reason: "b3",
            },
            true,
        ),
        (Mode::Passthrough, Incoming::B3(context)) => (
            context,
            Outcome {
                action: TraceAction::Kept,
                reason: "b3",
            },
            true,
        ),
    };
    if rewrite {
        ops.push(HeaderOp::Set(TRACEPARENT.to_owned(), trace.format()));
    }

    let state_outcome = decide_tracestate(cfg, &ts_values, outcome, ops);
    write_b3(cfg, &trace, headers, ops);
    Ok(TraceDecision {
        trace,
        outcome,
        state_outcome,
    })
}

fn decide_tracestate(
    cfg: &Config,
    ts_values: &[&[u8]],
    trace_outcome: Outcome<TraceAction>,
    ops: &mut Vec<HeaderOp>,
) -> Option<Outcome<StateAction>> {
    if ts_values.is_empty() {
        return None;
    }
    let drop = |ops: &mut Vec<HeaderOp>, reason| {
        ops.push(HeaderOp::Remove(TRACESTATE.to_owned()));
        Some(Outcome {
            action: StateAction::Dropped,
            reason,
        })
    };
    if trace_outcome.action != TraceAction::Kept || trace_outcome.reason == "b3" {
        // §3.3: tracestate belongs to the traceparent it came with; without that parent (absent,
        // invalid, restarted, or a B3-only context) it must not be parsed or forwarded.
        return drop(
            ops,
            if trace_outcome.action == TraceAction::Restarted {
                "restarted"
            } else {
                "no_traceparent"
            },
        );
    }
    let mut state = match TraceState::parse_headers(ts_values) {
        Ok(Some(state)) => state,
        // Empty and blank headers are accepted, but SHOULD NOT be sent on (§3.3.2).
        Ok(None) => return drop(ops, "empty"),
        Err(e) => return drop(ops, e.reason()),
    };
    if cfg.mode == Mode::Passthrough {
        // §3.4: the parent is unchanged, so tracestate MUST NOT change either.
        return Some(Outcome {
            action: StateAction::Kept,
            reason: "unchanged",
        });
    }
    let truncated = state.truncate(cfg.tracestate_max_length);
    if state.is_empty() {
        return drop(ops, "too_long");
    }
    let formatted = state.format();
    if ts_values != [formatted.as_bytes()] {
        ops.push(HeaderOp::Set(TRACESTATE.to_owned(), formatted));
    }
    Some(if truncated {
        Outcome {
            action: StateAction::Truncated,
            reason: "too_long",
        }
    } else if state.removed_duplicates() > 0 {
        // §3.5: "vendors MAY also discard duplicate keys"; the left-most entry was kept.
        Outcome {
            action: StateAction::Kept,
            reason: "deduplicated",
        }
    } else {
        Outcome {
            action: StateAction::Kept,
            reason: "valid",
        }
    })
}

fn write_b3(
    cfg: &Config,
    trace: &TraceParent,
    headers: &[(String, Vec<u8>)],
    ops: &mut Vec<HeaderOp>,
) {
    let remove_if_present = |ops: &mut Vec<HeaderOp>, name: &str| {
        if !values(headers, name).is_empty() {
            ops.push(HeaderOp::Remove(name.to_owned()));
        }
    };
    match cfg.b3_write {
        B3Write::None => {}
        B3Write::Single => {
            ops.push(HeaderOp::Set(
                b3::SINGLE.to_owned(),
                b3::format_single(&trace.trace_id, &trace.parent_id, trace.sampled()),
            ));
            for name in [
                b3::TRACE_ID,
                b3::SPAN_ID,
                b3::PARENT_SPAN_ID,
                b3::SAMPLED,
                b3::FLAGS,
            ] {
                remove_if_present(ops, name);
            }
        }
        B3Write::Multi => {
            let (trace_id, span_id, sampled) =
                b3::format_multi(&trace.trace_id, &trace.parent_id, trace.sampled());
            ops.push(HeaderOp::Set(b3::TRACE_ID.to_owned(), trace_id));
            ops.push(HeaderOp::Set(b3::SPAN_ID.to_owned(), span_id));
            ops.push(HeaderOp::Set(b3::SAMPLED.to_owned(), sampled.to_owned()));
            for name in [b3::SINGLE, b3::PARENT_SPAN_ID, b3::FLAGS] {
                remove_if_present(ops, name);
            }
        }
    }
}

/// Decides the request phase.
///
/// `view` is the request header map as read once from the proxy (duplicates kept as separate
/// entries); `source_ip` is the direct peer (`source.address`), needed only by `keepIfTrusted`.
///
/// # Errors
/// Only when the random source fails: ids from a broken source would collide across requests.
pub fn decide_request(
    cfg: &Config,
    view: &RequestView,
    source_ip: Option<IpAddr>,
    random: Random<'_>,
) -> HostResult<RequestDecision> {
    let headers = view.headers();
    let mut header_ops = Vec::new();
    let (request_id, id_outcome) =
        decide_request_id(cfg, headers, source_ip, random, &mut header_ops)?;
    let TraceDecision {
        trace,
        outcome: trace_outcome,
        state_outcome,
    } = decide_trace(cfg, headers, random, &mut header_ops)?;
    let properties = if cfg.properties {
        vec![
            (PROPERTY_REQUEST_ID, request_id.clone()),
            (PROPERTY_TRACE_ID, trace.trace_id_hex()),
        ]
    } else {
        Vec::new()
    };
    Ok(RequestDecision {
        header_ops,
        request_id,
        trace,
        id_outcome,
        trace_outcome,
        state_outcome,
        properties,
    })
}

/// Decides the response phase from what the request phase remembered. `None` (the request phase
/// never ran for this stream, e.g. an earlier filter replied locally) means no changes.
pub fn decide_response(cfg: &Config, memo: Option<&ResponseMemo>) -> Vec<HeaderOp> {
    let Some(memo) = memo else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    if cfg.echo_request_id {
        ops.push(HeaderOp::Set(
            cfg.request_id.header.clone(),
            memo.request_id.clone(),
        ));
    }
    if cfg.traceresponse {
        ops.push(HeaderOp::Set(
            TRACERESPONSE.to_owned(),
            memo.traceparent.clone(),
        ));
    }
    if cfg.server_timing {
        ops.push(HeaderOp::Add(
            SERVER_TIMING.to_owned(),
            format!("traceparent;desc=\"{}\"", memo.traceparent),
        ));
    }
    ops
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{self, FailureMode};
    use crate::request_id::Validation;

    /// Deterministic "random" bytes: 1, 2, 3, … (wrapping, never all zero for short runs).
    pub(crate) fn counter() -> impl FnMut(&mut [u8]) {
        let mut next = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                next = next.wrapping_add(1);
                *b = next;
            }
        }
    }

    pub(crate) fn decide(
        cfg: &Config,
        input: &[(String, Vec<u8>)],
        source_ip: Option<IpAddr>,
        random: Random<'_>,
    ) -> RequestDecision {
        decide_request(
            cfg,
            &RequestView::from_pairs(input.to_vec()),
            source_ip,
            random,
        )
        .unwrap()
    }

    pub(crate) fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
            .collect()
    }

    /// Applies ops like the proxy would.
    pub(crate) fn apply(
        mut map: Vec<(String, Vec<u8>)>,
        ops: &[HeaderOp],
    ) -> Vec<(String, Vec<u8>)> {
        for op in ops {
            match op {
                HeaderOp::Set(name, value) => {
                    map.retain(|(n, _)| n != name);
                    map.push((name.clone(), value.clone().into_bytes()));
                }
                HeaderOp::Add(name, value) => map.push((name.clone(), value.clone().into_bytes())),
                HeaderOp::Remove(name) => map.retain(|(n, _)| n != name),
            }
        }
        map
    }

    pub(crate) fn get<'a>(map: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a str> {
        map.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect()
    }

    pub(crate) fn cfg(json: &str) -> Config {
        config::parse(json.as_bytes()).unwrap()
    }

    fn run(cfg: &Config, pairs: &[(&str, &[u8])]) -> (RequestDecision, Vec<(String, Vec<u8>)>) {
        let input = headers(pairs);
        let mut random = counter();
        let decision = decide(cfg, &input, None, &mut random);
        let out = apply(input, &decision.header_ops);
        (decision, out)
    }

    const TP: &[u8] = b"00-12345678901234567890123456789012-1234567890123456-01";

    #[test]
    fn generates_a_uuid_and_a_new_trace_when_nothing_is_sent() {
        let (d, out) = run(&Config::default(), &[]);
        assert_eq!(
            d.id_outcome,
            Outcome {
                action: IdAction::Generated,
                reason: "absent"
            }
        );
        assert_eq!(
            d.trace_outcome,
            Outcome {
                action: TraceAction::Started,
                reason: "absent"
            }
        );
        assert!(request_id::validate(d.request_id.as_bytes(), 36, Validation::Uuid).is_ok());
        assert_eq!(get(&out, "x-request-id"), [d.request_id.as_str()]);
        assert_eq!(get(&out, "traceparent"), [d.trace.format().as_str()]);
        assert_eq!(
            d.trace.flags, FLAG_RANDOM,
            "new traces are random and unsampled by default"
        );
        assert_eq!(
            d.properties,
            vec![
                (PROPERTY_REQUEST_ID, d.request_id.clone()),
                (PROPERTY_TRACE_ID, d.trace.trace_id_hex())
            ]
        );
    }

    #[test]
    fn keeps_a_valid_request_id_without_touching_the_header() {
        let (d, out) = run(&Config::default(), &[("x-request-id", b"abc-123")]);
        assert_eq!(
            d.id_outcome,
            Outcome {
                action: IdAction::Kept,
                reason: "valid"
            }
        );
        assert_eq!(d.request_id, "abc-123");
        assert!(
            !d.header_ops
                .iter()
                .any(|op| matches!(op, HeaderOp::Set(n, _) if n == "x-request-id"))
        );
        assert_eq!(get(&out, "x-request-id"), ["abc-123"]);
    }

    #[test]
    fn replaces_an_invalid_id_and_never_copies_it() {
        let cfg = cfg(r#"{"requestId": {"originalIdHeader": "x-original-request-id"}}"#);
        let (d, out) = run(
            &cfg,
            &[
                ("x-request-id", b"bad id\r\n"),
                ("x-original-request-id", b"forged"),
            ],
        );
        assert_eq!(
            d.id_outcome,
            Outcome {
                action: IdAction::Replaced,
                reason: "invalid_charset"
            }
        );
        assert_eq!(get(&out, "x-request-id"), [d.request_id.as_str()]);
        assert!(get(&out, "x-original-request-id").is_empty());
    }

    #[test]
    fn always_replace_copies_the_valid_original() {
        let cfg = cfg(
            r#"{"requestId": {"policy": "alwaysReplace", "originalIdHeader": "x-original-request-id"}}"#,
        );
        let (d, out) = run(&cfg, &[("x-request-id", b"client-1")]);
        assert_eq!(
            d.id_outcome,
            Outcome {
                action: IdAction::Replaced,
                reason: "policy"
            }
        );
        assert_ne!(d.request_id, "client-1");
        assert_eq!(get(&out, "x-original-request-id"), ["client-1"]);
    }

    #[test]
    fn keep_if_trusted_depends_on_the_peer_address() {
        let cfg =
            cfg(r#"{"requestId": {"policy": "keepIfTrusted", "trustedCidrs": ["10.0.0.0/8"]}}"#);
        let input = headers(&[("x-request-id", b"client-1")]);
        let mut random = counter();
        let trusted = decide(&cfg, &input, Some("10.1.2.3".parse().unwrap()), &mut random);
        assert_eq!(
            trusted.id_outcome,
            Outcome {
                action: IdAction::Kept,
                reason: "trusted"
            }
        );
        let untrusted = decide(
            &cfg,
            &input,
            Some("192.0.2.1".parse().unwrap()),
            &mut random,
        );
        assert_eq!(
            untrusted.id_outcome,
            Outcome {
                action: IdAction::Replaced,
                reason: "untrusted"
            }
        );
        let unknown = decide(&cfg, &input, None, &mut random);
        assert_eq!(unknown.id_outcome.action, IdAction::Replaced);
    }

    #[test]
    fn reads_aliases_and_writes_the_id_to_all_of_them() {
        let cfg = cfg(r#"{"requestId": {"aliases": ["x-correlation-id", "request-id"]}}"#);
        let (d, out) = run(&cfg, &[("request-id", b"from-alias")]);
        assert_eq!(d.request_id, "from-alias");
        for name in ["x-request-id", "x-correlation-id", "request-id"] {
            assert_eq!(get(&out, name), ["from-alias"], "{name}");
        }
    }

    #[test]
    fn duplicated_request_ids_are_replaced() {
        let (d, _) = run(
            &Config::default(),
            &[("x-request-id", b"a"), ("x-request-id", b"b")],
        );
        assert_eq!(
            d.id_outcome,
            Outcome {
                action: IdAction::Replaced,
                reason: "duplicated"
            }
        );
    }

    #[test]
    fn hop_keeps_trace_id_and_flags_with_a_new_parent() {
        let (d, out) = run(
            &Config::default(),
            &[(
                "traceparent",
                b"00-12345678901234567890123456789012-1234567890123456-03",
            )],
        );
        assert_eq!(
            d.trace_outcome,
            Outcome {
                action: TraceAction::Kept,
                reason: "valid"
            }
        );
        assert_eq!(d.trace.trace_id_hex(), "12345678901234567890123456789012");
        assert_ne!(d.trace.parent_id_hex(), "1234567890123456");
        assert_eq!(
            d.trace.flags, 0x03,
            "sampled and random flags are preserved"
        );
        assert_eq!(get(&out, "traceparent"), [d.trace.format().as_str()]);
    }

    #[test]
    fn passthrough_leaves_a_canonical_context_and_its_tracestate_alone() {
        let cfg = cfg(r#"{"traceContext": {"mode": "passthrough"}}"#);
        let (d, _) = run(
            &cfg,
            &[
                ("traceparent", TP),
                ("tracestate", b"b=1, a=2"),
                ("tracestate", b"c=3"),
            ],
        );
        assert_eq!(d.trace.format().as_bytes(), TP);
        assert!(!d.header_ops.iter().any(|op| matches!(op, HeaderOp::Set(n, _) | HeaderOp::Remove(n) if n == "traceparent" || n == "tracestate")));
        assert_eq!(
            d.state_outcome,
            Some(Outcome {
                action: StateAction::Kept,
                reason: "unchanged"
            })
        );
    }

    #[test]
    fn passthrough_normalizes_but_keeps_the_parent() {
        let cfg = cfg(r#"{"traceContext": {"mode": "passthrough"}}"#);
        let (d, out) = run(
            &cfg,
            &[(
                "traceparent",
                b"cc-12345678901234567890123456789012-1234567890123456-09-extra",
            )],
        );
        assert_eq!(
            d.trace_outcome,
            Outcome {
                action: TraceAction::Kept,
                reason: "future_version"
            }
        );
        assert_eq!(
            get(&out, "traceparent"),
            ["00-12345678901234567890123456789012-1234567890123456-01"]
        );
    }

    #[test]
    fn restart_mode_always_starts_a_new_trace_and_drops_tracestate() {
        let cfg = cfg(r#"{"traceContext": {"mode": "restart"}}"#);
        let (d, out) = run(&cfg, &[("traceparent", TP), ("tracestate", b"foo=1")]);
        assert_eq!(
            d.trace_outcome,
            Outcome {
                action: TraceAction::Restarted,
                reason: "trust_boundary"
            }
        );
        assert_ne!(d.trace.trace_id_hex(), "12345678901234567890123456789012");
        assert!(get(&out, "tracestate").is_empty());
        assert_eq!(
            d.state_outcome,
            Some(Outcome {
                action: StateAction::Dropped,
                reason: "restarted"
            })
        );
    }

    #[test]
    fn inherit_sampling_takes_the_discarded_flag_at_a_trust_boundary() {
        let cfg = cfg(r#"{"traceContext": {"mode": "restart", "sampling": {"type": "inherit"}}}"#);
        let (d, _) = run(&cfg, &[("traceparent", TP)]);
        assert!(d.trace.sampled());
        let (d, _) = run(&cfg, &[]);
        assert!(!d.trace.sampled());
    }

    #[test]
    fn ratio_sampling_is_decided_from_the_trace_id() {
        let always = cfg(r#"{"traceContext": {"sampling": {"type": "ratio", "ratio": 1.0}}}"#);
        let never = cfg(r#"{"traceContext": {"sampling": {"type": "ratio", "ratio": 0.0}}}"#);
        assert!(run(&always, &[]).0.trace.sampled());
        assert!(!run(&never, &[]).0.trace.sampled());
        // Counter bytes: the request id takes 01..10, the trace id 11..20, so its low 7 bytes
        // start with 1a: 0x1a/0x100 ≈ 0.1016 of the space.
        let low = cfg(r#"{"traceContext": {"sampling": {"type": "ratio", "ratio": 0.10}}}"#);
        let high = cfg(r#"{"traceContext": {"sampling": {"type": "ratio", "ratio": 0.11}}}"#);
        assert!(!run(&low, &[]).0.trace.sampled());
        assert!(run(&high, &[]).0.trace.sampled());
    }

    #[test]
    fn b3_is_read_only_without_traceparent_and_when_enabled() {
        let b3: &[u8] = b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let off = Config::default();
        assert_eq!(
            run(&off, &[("b3", b3)]).0.trace_outcome.action,
            TraceAction::Started
        );
        let on = cfg(r#"{"b3": {"read": true}}"#);
        let (d, _) = run(&on, &[("b3", b3)]);
        assert_eq!(
            d.trace_outcome,
            Outcome {
                action: TraceAction::Kept,
                reason: "b3"
            }
        );
        assert_eq!(d.trace.trace_id_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(d.trace.sampled());
        assert!(!d.trace.random());
        let (d, _) = run(&on, &[("b3", b3), ("traceparent", TP)]);
        assert_eq!(
            d.trace.trace_id_hex(),
            "12345678901234567890123456789012",
            "traceparent wins over b3"
        );
        let (d, _) = run(&on, &[("b3", b"garbage")]);
        assert_eq!(
            d.trace_outcome,
            Outcome {
                action: TraceAction::Restarted,
                reason: "invalid_b3"
            }
        );
    }

    #[test]
    fn b3_sampling_only_header_feeds_inherit() {
        let cfg =
            cfg(r#"{"b3": {"read": true}, "traceContext": {"sampling": {"type": "inherit"}}}"#);
        let (d, _) = run(&cfg, &[("b3", b"1")]);
        assert_eq!(d.trace_outcome.action, TraceAction::Started);
        assert!(d.trace.sampled());
    }

    #[test]
    fn writes_b3_single_or_multi_next_to_traceparent() {
        let single = cfg(r#"{"b3": {"write": "single"}}"#);
        let (d, out) = run(&single, &[("traceparent", TP), ("x-b3-traceid", b"stale")]);
        assert_eq!(
            get(&out, "b3"),
            [format!("{}-{}-1", d.trace.trace_id_hex(), d.trace.parent_id_hex()).as_str()]
        );
        assert!(get(&out, "x-b3-traceid").is_empty());
        let multi = cfg(r#"{"b3": {"write": "multi"}}"#);
        let (d, out) = run(&multi, &[("traceparent", TP), ("b3", b"stale")]);
        assert_eq!(get(&out, "x-b3-traceid"), [d.trace.trace_id_hex().as_str()]);
        assert_eq!(get(&out, "x-b3-spanid"), [d.trace.parent_id_hex().as_str()]);
        assert_eq!(get(&out, "x-b3-sampled"), ["1"]);
        assert!(get(&out, "b3").is_empty());
    }

    #[test]
    fn response_echoes_what_the_request_phase_decided() {
        let cfg = cfg(r#"{"response": {"traceresponse": true, "serverTiming": true}}"#);
        let memo = ResponseMemo {
            request_id: "rid".to_owned(),
            traceparent: "00-x".to_owned(),
        };
        assert_eq!(
            decide_response(&cfg, Some(&memo)),
            vec![
                HeaderOp::Set("x-request-id".to_owned(), "rid".to_owned()),
                HeaderOp::Set("traceresponse".to_owned(), "00-x".to_owned()),
                HeaderOp::Add(
                    "server-timing".to_owned(),
                    "traceparent;desc=\"00-x\"".to_owned()
                ),
            ]
        );
        assert!(decide_response(&cfg, None).is_empty());
        let quiet = config::parse(br#"{"response": {"echoRequestId": false}}"#).unwrap();
        assert!(decide_response(&quiet, Some(&memo)).is_empty());
        assert_eq!(quiet.failure_mode, FailureMode::Allow);
    }

    #[test]
    fn all_zero_randomness_still_yields_valid_ids() {
        let mut zeros = |buf: &mut [u8]| buf.fill(0);

        let d = decide(&Config::default(), &[], None, &mut zeros);
        assert!(traceparent::parse(d.trace.format().as_bytes()).is_ok());
    }
}
