//! Zipkin B3 propagation (openzipkin/b3-propagation): read single and multi headers, write
//! either next to `traceparent`.
//!
//! Single header: `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]` or only a sampling
//! state (`b3: 0`, `1`, `d`). Multi headers: `x-b3-traceid` (16 or 32 hex), `x-b3-spanid`,
//! `x-b3-sampled` (`1`/`0`, leniently `true`/`false`), `x-b3-flags: 1` (debug, implies sampled).
//! A present `b3` header wins over the multi headers. 64-bit trace ids are left-padded with zeros
//! to 128 bits, as Zipkin does when it talks to W3C systems.

use meshward_core::ids::{decode_lower_hex, encode_hex_to};

use crate::traceparent::trim_ows;

/// Single-header name.
pub const SINGLE: &str = "b3";
/// Multi-header names.
pub const TRACE_ID: &str = "x-b3-traceid";
/// Span id header.
pub const SPAN_ID: &str = "x-b3-spanid";
/// Parent span id header.
pub const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
/// Sampling decision header.
pub const SAMPLED: &str = "x-b3-sampled";
/// Debug flag header.
pub const FLAGS: &str = "x-b3-flags";

/// A B3 sampling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// `0`: do not sample.
    Deny,
    /// `1`: sample.
    Accept,
    /// `d`: debug (sample and force).
    Debug,
}

impl Sampling {
    /// Whether the W3C `sampled` flag should be set.
    pub const fn sampled(self) -> bool {
        matches!(self, Self::Accept | Self::Debug)
    }
}

/// What the B3 headers of a request carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3 {
    /// Only a sampling decision (`b3: 0` or `x-b3-sampled` alone).
    SamplingOnly(Sampling),
    /// A trace context.
    Context {
        /// Trace id, left-padded to 128 bits.
        trace_id: [u8; 16],
        /// The caller's span id (becomes the W3C parent id).
        span_id: [u8; 8],
        /// Sampling state, when sent.
        sampling: Option<Sampling>,
    },
}

/// Why the B3 headers were ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidB3 {
    /// Not well-formed (field count, widths, characters, all-zero ids, duplicate headers).
    #[error("malformed b3 headers")]
    Malformed,
}

/// The raw B3 header values of a request (every occurrence, in order).
#[derive(Debug, Clone, Copy, Default)]
pub struct B3Headers<'a> {
    /// `b3` values.
    pub single: &'a [&'a [u8]],
    /// `x-b3-traceid` values.
    pub trace_id: &'a [&'a [u8]],
    /// `x-b3-spanid` values.
    pub span_id: &'a [&'a [u8]],
    /// `x-b3-sampled` values.
    pub sampled: &'a [&'a [u8]],
    /// `x-b3-flags` values.
    pub flags: &'a [&'a [u8]],
}

fn one<'a>(values: &[&'a [u8]]) -> Result<Option<&'a [u8]>, InvalidB3> {
    match values {
        [] => Ok(None),
        [value] => Ok(Some(trim_ows(value))),
        _ => Err(InvalidB3::Malformed),
    }
}

fn parse_trace_id(text: &[u8]) -> Result<[u8; 16], InvalidB3> {
    let id = match text.len() {
        32 => decode_lower_hex::<16>(text),
        16 => decode_lower_hex::<8>(text).map(|low| {
            let mut id = [0u8; 16];
            for (slot, byte) in id.iter_mut().skip(8).zip(low) {
                *slot = byte;
            }
            id
        }),
        _ => None,
    };
    id.filter(|id| *id != [0; 16]).ok_or(InvalidB3::Malformed)
}

fn parse_span_id(text: &[u8]) -> Result<[u8; 8], InvalidB3> {
    decode_lower_hex::<8>(text)
        .filter(|id| *id != [0; 8])
        .ok_or(InvalidB3::Malformed)
}

fn single_sampling(text: &[u8]) -> Result<Sampling, InvalidB3> {
    match text {
        b"0" => Ok(Sampling::Deny),
        b"1" => Ok(Sampling::Accept),
        b"d" => Ok(Sampling::Debug),
        _ => Err(InvalidB3::Malformed),
    }
}

fn parse_single(value: &[u8]) -> Result<B3, InvalidB3> {
    let mut parts = value.split(|b| *b == b'-');
    let first = parts.next().unwrap_or_default();
    let Some(second) = parts.next() else {
        return single_sampling(first).map(B3::SamplingOnly);
    };
    let trace_id = parse_trace_id(first)?;
    let span_id = parse_span_id(second)?;
    let sampling = parts.next().map(single_sampling).transpose()?;
    if let Some(parent) = parts.next() {
        parse_span_id(parent)?;
    }
    if parts.next().is_some() {
        return Err(InvalidB3::Malformed);
    }
    Ok(B3::Context {
        trace_id,
        span_id,
        sampling,
    })
}

fn multi_sampling(
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Result<Option<Sampling>, InvalidB3> {
    if flags == Some(b"1") {
        return Ok(Some(Sampling::Debug));
    }
    match sampled {
        None => Ok(None),
        Some(b"1" | b"true") => Ok(Some(Sampling::Accept)),
        Some(b"0" | b"false") => Ok(Some(Sampling::Deny)),
        Some(_) => Err(InvalidB3::Malformed),
    }
}

/// Reads the B3 headers of a request.
///
/// # Errors
/// [`InvalidB3::Malformed`] when the deciding header(s) are not well-formed.
pub fn read(headers: &B3Headers<'_>) -> Result<Option<B3>, InvalidB3> {
    if let Some(single) = one(headers.single)? {
        return parse_single(single).map(Some);
    }
    let sampling = multi_sampling(one(headers.sampled)?, one(headers.flags)?)?;
    match (one(headers.trace_id)?, one(headers.span_id)?) {
        (Some(trace), Some(span)) => Ok(Some(B3::Context {
            trace_id: parse_trace_id(trace)?,
            span_id: parse_span_id(span)?,
            sampling,
        })),
        (None, None) => Ok(sampling.map(B3::SamplingOnly)),
        _ => Err(InvalidB3::Malformed),
    }
}

/// Length of a `b3` single-header value this filter writes.
pub const SINGLE_LEN: usize = 32 + 1 + 16 + 2;

/// The `b3` single-header value for a context: `{trace32}-{span}-{0|1}`.
pub fn encode_single(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; SINGLE_LEN] {
    let mut out = [b'-'; SINGLE_LEN];
    if let Some(trace) = out.get_mut(0..32) {
        encode_hex_to(trace_id, trace);
    }
    if let Some(span) = out.get_mut(33..49) {
        encode_hex_to(span_id, span);
    }
    if let Some(flag) = out.get_mut(50) {
        *flag = if sampled { b'1' } else { b'0' };
    }
    out
}

/// The multi-header values for a context: `(x-b3-traceid, x-b3-spanid, x-b3-sampled)`.
pub fn encode_multi(
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    sampled: bool,
) -> ([u8; 32], [u8; 16], &'static [u8]) {
    let mut trace = [0u8; 32];
    encode_hex_to(trace_id, &mut trace);
    let mut span = [0u8; 16];
    encode_hex_to(span_id, &mut span);
    (trace, span, if sampled { b"1" } else { b"0" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(value: &str) -> Result<Option<B3>, InvalidB3> {
        let values = [value.as_bytes()];
        read(&B3Headers {
            single: &values,
            ..B3Headers::default()
        })
    }

    #[test]
    fn reads_single_header_with_all_fields() {
        let b3 =
            single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90").unwrap();
        let Some(B3::Context {
            trace_id,
            span_id,
            sampling,
        }) = b3
        else {
            panic!("{b3:?}")
        };
        assert_eq!(trace_id[0], 0x80);
        assert_eq!(span_id[0], 0xe4);
        assert_eq!(sampling, Some(Sampling::Accept));
    }

    #[test]
    fn pads_64_bit_trace_ids() {
        let b3 = single("a3ce929d0e0e4736-00f067aa0ba902b7").unwrap();
        let Some(B3::Context {
            trace_id, sampling, ..
        }) = b3
        else {
            panic!("{b3:?}")
        };
        assert_eq!(
            trace_id,
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36
            ]
        );
        assert_eq!(sampling, None);
    }

    #[test]
    fn reads_sampling_only_single_header() {
        assert_eq!(single("0"), Ok(Some(B3::SamplingOnly(Sampling::Deny))));
        assert_eq!(single("d"), Ok(Some(B3::SamplingOnly(Sampling::Debug))));
    }

    #[test]
    fn rejects_malformed_single_headers() {
        for bad in [
            "",
            "2",
            "80f198ee56343ba864fe8b2a57d3eff7",
            "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
            "00000000000000000000000000000000-e457b5a2e4d86bd1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
            "80f198ee56343ba8-0000000000000000",
        ] {
            assert_eq!(single(bad), Err(InvalidB3::Malformed), "{bad}");
        }
    }

    #[test]
    fn single_wins_over_multi() {
        let single_value: [&[u8]; 1] = [b"0"];
        let trace: [&[u8]; 1] = [b"463ac35c9f6413ad48485a3953bb6124"];
        let span: [&[u8]; 1] = [b"a2fb4a1d1a96d312"];
        let headers = B3Headers {
            single: &single_value,
            trace_id: &trace,
            span_id: &span,
            ..B3Headers::default()
        };
        assert_eq!(read(&headers), Ok(Some(B3::SamplingOnly(Sampling::Deny))));
    }

    #[test]
    fn reads_multi_headers_with_lenient_sampled_and_debug_flag() {
        let trace: [&[u8]; 1] = [b"463ac35c9f6413ad48485a3953bb6124"];
        let span: [&[u8]; 1] = [b"a2fb4a1d1a96d312"];
        let sampled: [&[u8]; 1] = [b"true"];
        let headers = B3Headers {
            trace_id: &trace,
            span_id: &span,
            sampled: &sampled,
            ..B3Headers::default()
        };
        assert!(matches!(
            read(&headers),
            Ok(Some(B3::Context {
                sampling: Some(Sampling::Accept),
                ..
            }))
        ));
        let flags: [&[u8]; 1] = [b"1"];
        let headers = B3Headers {
            trace_id: &trace,
            span_id: &span,
            flags: &flags,
            ..B3Headers::default()
        };
        assert!(matches!(
            read(&headers),
            Ok(Some(B3::Context {
                sampling: Some(Sampling::Debug),
                ..
            }))
        ));
        let headers = B3Headers {
            trace_id: &trace,
            ..B3Headers::default()
        };
        assert_eq!(read(&headers), Err(InvalidB3::Malformed));
    }

    #[test]
    fn formats_single_and_multi() {
        let trace = [0xab; 16];
        let span = [0x01; 8];
        assert_eq!(
            encode_single(&trace, &span, true).as_slice(),
            format!("{}-{}-1", "ab".repeat(16), "01".repeat(8)).as_bytes()
        );
        let (t, s, sampled) = encode_multi(&trace, &span, false);
        assert_eq!(
            (&t[..], &s[..], sampled),
            (
                "ab".repeat(16).as_bytes(),
                "01".repeat(8).as_bytes(),
                &b"0"[..]
            )
        );
    }
}
