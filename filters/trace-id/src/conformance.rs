//! The W3C Trace Context conformance table (`conformance_cases.rs`) against the decision logic.
//! Every case runs the full request decision in `hop` mode (what the suite's participant does)
//! and then checks the outgoing headers: exactly one valid version-00 `traceparent`, whether the
//! trace was continued, and the forwarded `tracestate`.

use proptest::prelude::*;

use crate::config::Config;
use crate::conformance_cases::{PARENT, TRACE, Trace, cases, problems};
use crate::logic::tests::{apply, counter, decide, get, headers};
use crate::outcome::TraceAction;
use crate::traceparent;
use crate::tracestate::TraceState;

#[test]
fn w3c_conformance_table() {
    let cfg = Config::default();
    let mut failures = Vec::new();
    for case in cases() {
        let input: Vec<(String, Vec<u8>)> = case
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        let mut random = counter();
        let decision = decide(&cfg, &input, None, &mut random);
        let out = apply(input, &decision.header_ops);
        let owned =
            |name| -> Vec<String> { get(&out, name).iter().map(|v| (*v).to_owned()).collect() };
        let mut found = problems(
            &case,
            &owned("traceparent"),
            &owned("tracestate"),
            |tp| {
                let parsed = traceparent::parse(tp.as_bytes());
                crate::conformance_cases::canonical_v00(
                    tp,
                    parsed.map(|p| p.needs_rewrite).map_err(|e| e.to_string()),
                )
            },
            |ts| matches!(TraceState::parse_headers(&[ts.as_bytes()]), Ok(Some(_))),
        );
        // The logic's own account must agree with the headers.
        if matches!(case.trace, Trace::New) && decision.trace_outcome.action == TraceAction::Kept {
            found.push(format!(
                "expected a new trace, decision was {:?}",
                decision.trace_outcome
            ));
        }
        failures.extend(found.into_iter().map(|p| format!("{}: {p}", case.spec)));
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_flag_is_preserved_when_the_trace_id_is_kept() {
    // §3.2.2.5.2 (Level 2): the random-trace-id flag MUST be propagated unchanged with the trace id.
    for flags in ["02", "03"] {
        let input = headers(&[(
            "traceparent",
            format!("00-{TRACE}-{PARENT}-{flags}").as_bytes(),
        )]);
        let decision = decide(&Config::default(), &input, None, &mut counter());
        assert!(decision.trace.random(), "{flags}");
    }
    let input = headers(&[("traceparent", format!("00-{TRACE}-{PARENT}-01").as_bytes())]);
    assert!(
        !decide(&Config::default(), &input, None, &mut counter())
            .trace
            .random()
    );
}

#[test]
fn duplicate_keys_are_counted_and_forwarded_per_mode() {
    use crate::outcome::{Outcome, StateAction};
    let input = headers(&[
        ("traceparent", format!("00-{TRACE}-{PARENT}-01").as_bytes()),
        ("tracestate", b"foo=1,bar=2,foo=3"),
    ]);
    // `hop`: the left-most entry is kept (§3.5 "vendors MAY also discard duplicate keys").
    let decision = decide(&Config::default(), &input, None, &mut counter());
    assert_eq!(
        decision.state_outcome,
        Some(Outcome {
            action: StateAction::Kept,
            reason: "deduplicated"
        })
    );
    let out = apply(input.clone(), &decision.header_ops);
    assert_eq!(get(&out, "tracestate"), ["foo=1,bar=2"]);
    // `passthrough`: the parent is unchanged, so tracestate MUST NOT change (§3.4).
    let passthrough =
        crate::config::parse(br#"{"traceContext": {"mode": "passthrough"}}"#).unwrap();
    let decision = decide(&passthrough, &input, None, &mut counter());
    let out = apply(input, &decision.header_ops);
    assert_eq!(get(&out, "tracestate"), ["foo=1,bar=2,foo=3"]);
}

fn configs() -> Vec<Config> {
    [
        "{}",
        r#"{"traceContext": {"mode": "passthrough"}, "b3": {"read": true, "write": "single"}}"#,
        r#"{"traceContext": {"mode": "restart", "sampling": {"type": "inherit"}}, "b3": {"read": true, "write": "multi"},
            "requestId": {"validation": "uuid", "aliases": ["x-correlation-id"], "originalIdHeader": "x-original-request-id",
                          "policy": "keepIfTrusted", "trustedCidrs": ["0.0.0.0/0"]}}"#,
    ]
    .iter()
    .map(|json| crate::config::parse(json.as_bytes()).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_yield_a_valid_outgoing_context(
        tp_values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..3),
        ts_values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..3),
        rid_values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..140), 0..3),
        b3_value in proptest::collection::vec(any::<u8>(), 0..80),
        seed in any::<u8>(),
    ) {
        let mut input = Vec::new();
        input.extend(tp_values.into_iter().map(|v| ("traceparent".to_owned(), v)));
        input.extend(ts_values.into_iter().map(|v| ("tracestate".to_owned(), v)));
        input.extend(rid_values.into_iter().map(|v| ("x-request-id".to_owned(), v)));
        input.push(("b3".to_owned(), b3_value));
        for cfg in configs() {
            let mut next = seed;
            let mut random = |buf: &mut [u8]| for b in buf { next = next.wrapping_mul(31).wrapping_add(7); *b = next; };
            let decision = decide(&cfg, &input, Some("10.0.0.1".parse().unwrap()), &mut random);
            let out = apply(input.clone(), &decision.header_ops);
            let tps = get_bytes(&out, "traceparent");
            prop_assert_eq!(tps.len(), 1);
            let parsed = traceparent::parse(tps[0]);
            prop_assert!(parsed.is_ok_and(|p| !p.needs_rewrite && !p.future_version), "{:?}", tps[0]);
            let rids = get_bytes(&out, "x-request-id");
            prop_assert_eq!(rids.len(), 1);
            prop_assert!(crate::request_id::validate(rids[0], cfg.request_id.max_length, cfg.request_id.validation).is_ok());
            let states = get_bytes(&out, "tracestate");
            if cfg.mode != crate::config::Mode::Passthrough {
                // An empty field reads as absent through Envoy's `request.headers` view and is
                // left alone (it carries nothing); anything else is one valid combined list.
                let states: Vec<&[u8]> = states.into_iter().filter(|s| !s.is_empty()).collect();
                prop_assert!(states.len() <= 1);
                if let Some(state) = states.first() {
                    let parsed = TraceState::parse_headers(&[*state]);
                    prop_assert!(matches!(parsed, Ok(Some(_))), "{:?}", state);
                    prop_assert!(state.len() <= cfg.tracestate_max_length);
                }
            } else {
                // Passthrough forwards tracestate unchanged, but only when it is valid.
                let parsed = TraceState::parse_headers(&states);
                prop_assert!(parsed.is_ok());
            }
            prop_assert!(!decision.request_id.is_empty());
        }
    }
}

fn get_bytes<'a>(map: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    map.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}
