//! W3C Trace Context `traceparent` (Level 2): parse, validate, format.
//!
//! Section numbers cite the Trace Context Level 2 specification ("§3.2" = traceparent header).
//! The parser is deliberately strict where the spec is (lower-case hex only, exact field widths,
//! all-zero ids rejected, version `ff` rejected, version `00` exactly 55 characters) and lenient
//! where the spec asks for it (optional whitespace around the value, future versions parsed by
//! their first 55 characters and re-emitted as `00`).

use meshward_core::ids::{decode_lower_hex, encode_hex_to};

/// `sampled` flag (§3.2.2.5.1): the caller may have recorded trace data.
pub const FLAG_SAMPLED: u8 = 0x01;
/// `random-trace-id` flag (Level 2, §3.2.2.5.2): at least the right-most 7 bytes of the trace id
/// are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// Flags this implementation knows; all other bits MUST be zero on output (§3.2.2.5.3).
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// Length of a version-00 header: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
pub const V00_LEN: usize = 55;

/// A validated trace context as carried by `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16-byte trace id, never all zero.
    pub trace_id: [u8; 16],
    /// 8-byte parent (span) id, never all zero.
    pub parent_id: [u8; 8],
    /// Known flags only (`sampled`, `random-trace-id`); unknown bits are cleared on parse.
    pub flags: u8,
}

/// Why a `traceparent` value was rejected. Each variant maps to one bounded metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvalidTraceParent {
    /// The version is not two lower-case hex digits followed by `-` (§3.2.4).
    #[error("invalid version")]
    Version,
    /// Version `ff` is forbidden (§3.2.2.1).
    #[error("version ff is forbidden")]
    VersionFf,
    /// Version 00 must be exactly 55 characters; a future version at least 55 (§3.2.4).
    #[error("invalid length")]
    Length,
    /// The trace id is not 32 lower-case hex digits (§3.2.2.3).
    #[error("invalid trace id")]
    TraceId,
    /// The trace id is all zero (§3.2.2.3).
    #[error("all-zero trace id")]
    ZeroTraceId,
    /// The parent id is not 16 lower-case hex digits (§3.2.2.4).
    #[error("invalid parent id")]
    ParentId,
    /// The parent id is all zero (§3.2.2.4).
    #[error("all-zero parent id")]
    ZeroParentId,
    /// The flags are not two lower-case hex digits (§3.2.2.5).
    #[error("invalid trace flags")]
    Flags,
    /// A field is not followed by `-` (or, for the flags of a future version, by `-` or the end).
    #[error("invalid delimiter")]
    Delimiter,
    /// The header appeared more than once; which one is meant cannot be known, so restart.
    #[error("duplicated header")]
    Duplicated,
}

impl InvalidTraceParent {
    /// Every variant, in declaration order (metric series are defined for each up front).
    pub const ALL: [Self; 10] = [
        Self::Version,
        Self::VersionFf,
        Self::Length,
        Self::TraceId,
        Self::ZeroTraceId,
        Self::ParentId,
        Self::ZeroParentId,
        Self::Flags,
        Self::Delimiter,
        Self::Duplicated,
    ];

    /// Position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Bounded metric tag value.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Version => "invalid_version",
            Self::VersionFf => "version_ff",
            Self::Length => "invalid_length",
            Self::TraceId => "invalid_trace_id",
            Self::ZeroTraceId => "zero_trace_id",
            Self::ParentId => "invalid_parent_id",
            Self::ZeroParentId => "zero_parent_id",
            Self::Flags => "invalid_flags",
            Self::Delimiter => "invalid_delimiter",
            Self::Duplicated => "duplicated",
        }
    }
}

/// What parsing found besides the context itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The context.
    pub context: TraceParent,
    /// The input was a version other than `00` (it is re-emitted as `00`, §3.2.4).
    pub future_version: bool,
    /// The input differs from [`TraceParent::format`] of the context (whitespace, future
    /// version, unknown flag bits), so forwarding it needs a rewrite.
    pub needs_rewrite: bool,
}

/// Optional whitespace per RFC 9110 §5.6.3: space and horizontal tab.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

fn field(value: &[u8], start: usize, len: usize) -> &[u8] {
    value.get(start..start + len).unwrap_or_default()
}

fn byte_at(value: &[u8], index: usize) -> Option<u8> {
    value.get(index).copied()
}

/// A field must be followed by `-`; a hex digit there means the field itself is too long.
fn expect_dash(
    value: &[u8],
    index: usize,
    too_long: InvalidTraceParent,
) -> Result<(), InvalidTraceParent> {
    match byte_at(value, index) {
        Some(b'-') => Ok(()),
        Some(byte) if byte.is_ascii_hexdigit() => Err(too_long),
        _ => Err(InvalidTraceParent::Delimiter),
    }
}

/// Parses the values of every `traceparent` header of a request (in order).
///
/// More than one value is an error (the trace-context test suite's `test_traceparent_duplicated`:
/// the participant restarts).
///
/// # Errors
/// The first rule the value breaks.
pub fn parse_headers(values: &[&[u8]]) -> Result<Option<Parsed>, InvalidTraceParent> {
    match values {
        [] => Ok(None),
        [one] => parse(one).map(Some),
        _ => Err(InvalidTraceParent::Duplicated),
    }
}

/// Parses one `traceparent` value.
///
/// # Errors
/// The first rule the value breaks, checked left to right.
pub fn parse(raw: &[u8]) -> Result<Parsed, InvalidTraceParent> {
    let value = trim_ows(raw);
    // §3.2.4: "When the version prefix cannot be parsed (it's not 2 hex characters followed by a
    // dash), the implementation should restart the trace."
    let version = decode_lower_hex::<1>(field(value, 0, 2)).ok_or(InvalidTraceParent::Version)?;
    if byte_at(value, 2) != Some(b'-') {
        return Err(InvalidTraceParent::Version);
    }
    let [version] = version;
    if version == 0xff {
        return Err(InvalidTraceParent::VersionFf);
    }
    if value.len() < V00_LEN {
        return Err(InvalidTraceParent::Length);
    }
    let trace_id =
        decode_lower_hex::<16>(field(value, 3, 32)).ok_or(InvalidTraceParent::TraceId)?;
    expect_dash(value, 35, InvalidTraceParent::TraceId)?;
    let parent_id =
        decode_lower_hex::<8>(field(value, 36, 16)).ok_or(InvalidTraceParent::ParentId)?;
    expect_dash(value, 52, InvalidTraceParent::ParentId)?;
    let [flags] = decode_lower_hex::<1>(field(value, 53, 2)).ok_or(InvalidTraceParent::Flags)?;
    match (version, byte_at(value, V00_LEN)) {
        // §3.2.4: a higher version may carry more fields after a dash.
        (_, None) | (1.., Some(b'-')) => {}
        // Version 00 is exactly 55 characters: any trailing data is invalid.
        (0, Some(_)) => return Err(InvalidTraceParent::Length),
        (1.., Some(_)) => return Err(InvalidTraceParent::Delimiter),
    }
    if trace_id == [0; 16] {
        return Err(InvalidTraceParent::ZeroTraceId);
    }
    if parent_id == [0; 8] {
        return Err(InvalidTraceParent::ZeroParentId);
    }
    let context = TraceParent {
        trace_id,
        parent_id,
        flags: flags & KNOWN_FLAGS,
    };
    let future_version = version != 0;
    let needs_rewrite = future_version || value.len() != raw.len() || context.flags != flags;
    Ok(Parsed {
        context,
        future_version,
        needs_rewrite,
    })
}

impl TraceParent {
    /// Whether the `sampled` flag is set.
    pub const fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Whether the `random-trace-id` flag is set.
    pub const fn random(&self) -> bool {
        self.flags & FLAG_RANDOM != 0
    }

    /// The version-00 header value (unknown flag bits zeroed, §3.2.2.5.3), into a fixed array:
    /// `00-<trace id>-<parent id>-<flags>`.
    pub fn encode(&self) -> [u8; V00_LEN] {
        let mut out = [0; V00_LEN];
        self.encode_into(&mut out);
        out
    }

    /// [`TraceParent::encode`] into an existing array.
    pub fn encode_into(&self, out: &mut [u8; V00_LEN]) {
        let (version, rest) = out.split_at_mut(3);
        version.copy_from_slice(b"00-");
        let (trace_hex, rest) = rest.split_at_mut(32);
        encode_hex_to(&self.trace_id, trace_hex);
        let (dash, rest) = rest.split_at_mut(1);
        dash.copy_from_slice(b"-");
        let (parent_hex, rest) = rest.split_at_mut(16);
        encode_hex_to(&self.parent_id, parent_hex);
        let (dash, flags_hex) = rest.split_at_mut(1);
        dash.copy_from_slice(b"-");
        encode_hex_to(&[self.flags & KNOWN_FLAGS], flags_hex);
    }

    /// [`TraceParent::encode`] as a `String` (tests, logs).
    pub fn format(&self) -> String {
        String::from_utf8_lossy(&self.encode()).into_owned()
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        self.format().get(3..35).unwrap_or_default().to_owned()
    }

    /// The parent id as 16 lower-case hex digits.
    pub fn parent_id_hex(&self) -> String {
        self.format().get(36..52).unwrap_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let parsed = parse(VALID.as_bytes()).unwrap();
        assert_eq!(parsed.context.format(), VALID);
        assert_eq!(
            parsed.context.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.context.parent_id_hex(), "00f067aa0ba902b7");
        assert!(parsed.context.sampled());
        assert!(!parsed.context.random());
        assert!(!parsed.needs_rewrite);
        assert!(!parsed.future_version);
    }

    #[test]
    fn clears_unknown_flag_bits() {
        let parsed = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        assert_eq!(parsed.context.flags, 0x03);
        assert!(parsed.needs_rewrite);
        assert!(parsed.context.format().ends_with("-03"));
    }

    #[test]
    fn trims_optional_whitespace_and_asks_for_rewrite() {
        let parsed = parse(format!(" \t{VALID}\t ").as_bytes()).unwrap();
        assert_eq!(parsed.context.format(), VALID);
        assert!(parsed.needs_rewrite);
    }

    #[test]
    fn duplicated_headers_are_rejected_even_when_equal() {
        let values: [&[u8]; 2] = [VALID.as_bytes(), VALID.as_bytes()];
        assert_eq!(parse_headers(&values), Err(InvalidTraceParent::Duplicated));
        assert_eq!(parse_headers(&[]), Ok(None));
    }
}
