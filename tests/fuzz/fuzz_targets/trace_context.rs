//! W3C `traceparent`/`tracestate`, B3 (single and multi) and request-id validation, with
//! round-trip properties: a parsed traceparent re-encodes to a value that parses to the same
//! context; a formatted tracestate parses back to the same members; truncation respects its bound.
//!
//! Input: a byte giving the number of values per header, then length-prefixed header values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_trace_id::b3::{self, B3Headers};
use meshward_filter_trace_id::request_id::{self, Validation};
use meshward_filter_trace_id::traceparent;
use meshward_filter_trace_id::tracestate::TraceState;
use meshward_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let shape = cursor.byte();
    let mut values = |n: u8| -> Vec<&[u8]> { (0..n % 3).map(|_| cursor.chunk()).collect() };
    let parents = values(shape);
    let states = values(shape >> 2);
    let single = values(shape >> 4);
    let trace_id = values(shape >> 6);
    let span_id = values(1);
    let sampled = values(shape);
    let flags = values(shape >> 1);
    let request_id = cursor.rest();

    for raw in &parents {
        if let Ok(parsed) = traceparent::parse(raw) {
            let encoded = parsed.context.encode();
            let again = traceparent::parse(&encoded).expect("re-encoded traceparent parses");
            assert_eq!(again.context, parsed.context, "traceparent round trip");
            assert_eq!(parsed.context.format().as_bytes(), &encoded[..]);
        }
    }
    let _ = traceparent::parse_headers(&parents);

    if let Ok(Some(mut state)) = TraceState::parse_headers(&states) {
        let formatted = state.format();
        let again = TraceState::parse_headers(&[formatted.as_bytes()])
            .expect("formatted tracestate parses")
            .expect("formatted tracestate is present");
        assert!(
            again.members().eq(state.members()),
            "tracestate round trip: {formatted:?}"
        );
        for bound in [0usize, 1, 128, 256, 512] {
            let mut truncated = again.clone();
            truncated.truncate(bound);
            assert!(
                truncated.format().len() <= bound,
                "tracestate truncated above {bound}"
            );
        }
        state.truncate(usize::from(shape));
        let _ = state.format();
    }

    let headers = B3Headers {
        single: &single,
        trace_id: &trace_id,
        span_id: &span_id,
        sampled: &sampled,
        flags: &flags,
    };
    let _ = b3::read(&headers);

    for validation in [Validation::Token, Validation::Uuid] {
        for max_len in [0usize, 1, 36, 128, 1024] {
            if let Ok(id) = request_id::validate(request_id, max_len, validation) {
                assert!(id.len() <= max_len, "request id longer than its bound");
                assert!(!id.is_empty());
            }
        }
    }
});
