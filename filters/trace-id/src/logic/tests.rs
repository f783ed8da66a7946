//! Unit tests of the decisions, through a small adapter that gives each test the request as
//! header pairs (joined per name like Envoy's `request.headers.<name>` view) and the outcome as
//! owned header operations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a test failure"
)]

use super::*;
use crate::config::{self, FailureMode};
use crate::outcome::{IdAction, Outcome, StateAction, TraceAction};
use crate::request_id::Validation;
use meshward_core::effects::HeaderOp as Op;

/// An owned header operation, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderOp {
    Set(String, String),
    Add(String, String),
    Remove(String),
}

/// What one request decided, owned, as the tests inspect it.
#[derive(Debug, Clone)]
pub(crate) struct RequestDecision {
    pub(crate) header_ops: Vec<HeaderOp>,
    pub(crate) request_id: String,
    pub(crate) trace: TraceParent,
    pub(crate) id_outcome: Outcome<IdAction>,
    pub(crate) trace_outcome: Outcome<TraceAction>,
    pub(crate) state_outcome: Option<Outcome<StateAction>>,
    pub(crate) properties: Vec<(&'static str, String)>,
}

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

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Every value of `name` joined by `,`, as Envoy's `request.headers.<name>` gives it.
fn joined(input: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    let values: Vec<&[u8]> = input
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect();
    (!values.is_empty()).then(|| values.join(&b","[..]))
}

/// Runs the request phase on header pairs, as the glue would over the proxy.
pub(crate) fn decide(
    cfg: &Config,
    input: &[(String, Vec<u8>)],
    source_ip: Option<IpAddr>,
    random: &mut dyn FnMut(&mut [u8]),
) -> RequestDecision {
    let rid = &cfg.request_id;
    // Like the proxy: an empty value reads as absent.
    let request_id = std::iter::once(&rid.header)
        .chain(&rid.aliases)
        .enumerate()
        .find_map(|(i, name)| {
            joined(input, name)
                .filter(|v| !v.is_empty())
                .map(|v| (i, v))
        });
    let original_id_present = rid
        .original_id_header
        .as_ref()
        .is_some_and(|name| joined(input, name).is_some());
    let traceparent = joined(input, TRACEPARENT).filter(|v| !v.is_empty());
    let tracestate = joined(input, TRACESTATE).filter(|v| !v.is_empty());
    let b3 = B3_HEADERS.map(|name| joined(input, name).filter(|v| !v.is_empty()));
    let incoming = Incoming {
        request_id: request_id.as_ref().map(|(i, v)| (*i, v.as_slice())),
        original_id_present,
        traceparent: traceparent.as_deref(),
        tracestate: tracestate.as_deref(),
        b3: [0, 1, 2, 3, 4, 5].map(|i| b3[i].as_deref()),
        source_ip,
    };
    let mut bytes = [0u8; RANDOM_BYTES];
    random(&mut bytes);
    let decision = Decision::new(cfg, &incoming, &bytes);
    let metrics = crate::metrics::Metrics::default();
    let mut effects = Effects::new();
    decision.request_effects(cfg, &metrics, &mut effects);
    assert!(!effects.overflowed());
    let header_ops = effects
        .header_ops()
        .iter()
        .map(|op| match *op {
            Op::Set(n, v) => HeaderOp::Set(n.to_owned(), text(v)),
            Op::Add(n, v) => HeaderOp::Add(n.to_owned(), text(v)),
            Op::Remove(n) => HeaderOp::Remove(n.to_owned()),
        })
        .collect();
    let properties = effects
        .properties()
        .iter()
        .map(|(path, value)| {
            let name = if path.as_bytes() == PROPERTY_REQUEST_ID.as_bytes() {
                PROPERTY_REQUEST_ID
            } else {
                PROPERTY_TRACE_ID
            };
            (name, text(value))
        })
        .collect();
    RequestDecision {
        header_ops,
        request_id: text(decision.request_id()),
        trace: *decision.trace(),
        id_outcome: decision.id.outcome(),
        trace_outcome: decision.trace_outcome.outcome(),
        state_outcome: decision.state.map(StateOutcome::outcome),
        properties,
    }
}

pub(crate) fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect()
}

/// Applies ops like the proxy would.
pub(crate) fn apply(mut map: Vec<(String, Vec<u8>)>, ops: &[HeaderOp]) -> Vec<(String, Vec<u8>)> {
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
    assert!(
        run(&Config::default(), &[]).0.properties.is_empty(),
        "properties are opt-in"
    );
    let (d, out) = run(&cfg(r#"{"properties": true}"#), &[]);
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
    let cfg = cfg(r#"{"requestId": {"policy": "keepIfTrusted", "trustedCidrs": ["10.0.0.0/8"]}}"#);
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
    let cfg = cfg(r#"{"b3": {"read": true}, "traceContext": {"sampling": {"type": "inherit"}}}"#);
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
    let decision = Decision::new(&cfg, &Incoming::default(), &[7; RANDOM_BYTES]);
    let tp = text(decision.traceparent());
    let server_timing = decision.server_timing();
    let mut effects = Effects::new();
    decision.response_effects(&cfg, &server_timing, &mut effects);
    let id = decision.request_id();
    let timing = format!("traceparent;desc=\"{tp}\"");
    assert_eq!(
        effects.header_ops(),
        [
            Op::Set("x-request-id", id),
            Op::Set("traceresponse", tp.as_bytes()),
            Op::Add("server-timing", timing.as_bytes()),
        ]
    );
    let quiet = config::parse(br#"{"response": {"echoRequestId": false}}"#).unwrap();
    let mut effects = Effects::new();
    decision.response_effects(&quiet, &server_timing, &mut effects);
    assert!(effects.header_ops().is_empty());
    assert_eq!(quiet.failure_mode, FailureMode::Allow);
}

#[test]
fn all_zero_randomness_still_yields_valid_ids() {
    let mut zeros = |buf: &mut [u8]| buf.fill(0);

    let d = decide(&Config::default(), &[], None, &mut zeros);
    assert!(traceparent::parse(d.trace.format().as_bytes()).is_ok());
}
