//! The W3C Trace Context Level 2 conformance table, written from the spec (our own cases, in the
//! categories of the w3c/trace-context test suite); each case cites the section it checks.
//!
//! Plain data on purpose: the filter's unit tests run it against the decision logic
//! (`conformance.rs`), and the integration tests include this same file to run it through the
//! built `dist/trace-id.wasm` in our host, so the two can never drift apart.

#![allow(
    dead_code,
    reason = "each includer uses a different subset of the helpers"
)]

pub(crate) const TRACE: &str = "12345678901234567890123456789012";
pub(crate) const PARENT: &str = "1234567890123456";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Trace {
    /// The incoming trace id is continued under a new parent id.
    Continued,
    /// A new trace id (no valid incoming context).
    New,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum State<'a> {
    /// No `tracestate` on the outgoing request.
    Absent,
    /// Exactly this combined value.
    Is(&'a str),
    /// Some value no longer than this.
    AtMost(usize),
}

pub(crate) struct Case<'a> {
    pub(crate) spec: &'a str,
    pub(crate) headers: Vec<(&'a str, Vec<u8>)>,
    pub(crate) trace: Trace,
    pub(crate) state: State<'a>,
}

fn tp(value: &str) -> (&'static str, Vec<u8>) {
    ("traceparent", value.as_bytes().to_vec())
}

fn ts(value: &str) -> (&'static str, Vec<u8>) {
    ("tracestate", value.as_bytes().to_vec())
}

fn valid() -> (&'static str, Vec<u8>) {
    tp(&format!("00-{TRACE}-{PARENT}-01"))
}

fn case<'a>(spec: &'a str, headers: Vec<(&'a str, Vec<u8>)>, trace: Trace) -> Case<'a> {
    Case {
        spec,
        headers,
        trace,
        state: State::Absent,
    }
}

fn state_case<'a>(spec: &'a str, states: Vec<(&'a str, Vec<u8>)>, state: State<'a>) -> Case<'a> {
    let mut headers = vec![valid()];
    headers.extend(states);
    Case {
        spec,
        headers,
        trace: Trace::Continued,
        state,
    }
}

#[allow(clippy::too_many_lines, reason = "one table")]
pub(crate) fn cases() -> Vec<Case<'static>> {
    use State::{Absent, AtMost, Is};
    use Trace::{Continued, New};
    let long_key_ok = format!("{}=1", "z".repeat(256));
    let long_key_at = format!("{}@=1", "z".repeat(255));
    let long_key_bad = format!("{}=1", "z".repeat(257));
    let level1_tenant_system = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let level1_tenant_too_long = format!("{}@v=1", "t".repeat(242));
    let level1_system_too_long = format!("t@{}=1", "v".repeat(15));
    let every_key_char = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@=1";
    let every_value_char = format!(
        "foo={}",
        (0x20_u8..=0x7e)
            .filter(|b| *b != b',' && *b != b'=')
            .map(char::from)
            .collect::<String>()
    );
    let value_ok = format!("foo={}", "v".repeat(256));
    let value_bad = format!("foo={}", "v".repeat(257));
    let member_list = |n: usize| {
        (1..=n)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
    };
    let members = |n: usize| member_list(n).join(",");
    // Over four header fields: 10 + 10 + 10 + the rest.
    let member_fields = |n: usize| {
        member_list(n)
            .chunks(10)
            .map(|chunk| ts(&chunk.join(",")))
            .collect::<Vec<_>>()
    };
    // 32 entries of 26 characters: 19 of them make exactly 512 (19 × 26 + 18 commas).
    let big_list = (1..=32)
        .map(|i| format!("key{i:02}={}", "x".repeat(20)))
        .collect::<Vec<_>>();
    let big = big_list.join(",");
    // 20-character entries after one of 204: 624 in all, 419 without the large one.
    let large = format!("big={}", "x".repeat(200));
    let small = (1..=20)
        .map(|i| format!("k{i:02}={}", "v".repeat(16)))
        .collect::<Vec<_>>()
        .join(",");
    // An entry of exactly 128 characters is not "larger than 128": 25 entries of 14 fit after it
    // (128 + 25 × 15 = 503), the 26th does not.
    let edge = format!("edge={}", "x".repeat(123));
    let short_list = (1..=30)
        .map(|i| format!("k{i:02}={}", "v".repeat(10)))
        .collect::<Vec<_>>();
    let wide = |name: &str| format!("{name}={}", "x".repeat(200));
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        // --- traceparent (§3.2) ---
        case(
            "§3.2.2 valid traceparent is continued with a new parent-id",
            vec![valid()],
            Continued,
        ),
        case("§3.2 missing traceparent starts a trace", vec![], New),
        case(
            "§3.2.1 wrong header name is not traceparent",
            vec![("trace-parent", valid().1)],
            New,
        ),
        case(
            "§3.2 duplicated traceparent restarts",
            vec![
                tp(&format!("00-{TRACE}-{PARENT}-01")),
                tp(&format!("00-{}-{PARENT}-01", "1".repeat(32))),
            ],
            New,
        ),
        case(
            "§3.2 duplicated identical traceparent restarts",
            vec![valid(), valid()],
            New,
        ),
        case(
            "§3.2.4 version 00 with trailing dot restarts",
            vec![tp(&format!("00-{TRACE}-{PARENT}-01."))],
            New,
        ),
        case(
            "§3.2.4 version 00 with trailing fields restarts",
            vec![tp(&format!(
                "00-{TRACE}-{PARENT}-01-what-the-future-will-be-like"
            ))],
            New,
        ),
        case(
            "§3.2.4 future version of exactly 55 chars is parsed",
            vec![tp(&format!("cc-{TRACE}-{PARENT}-01"))],
            Continued,
        ),
        case(
            "§3.2.4 future version with extra fields is parsed",
            vec![tp(&format!(
                "cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like"
            ))],
            Continued,
        ),
        case(
            "§3.2.4 future version without dash after flags restarts",
            vec![tp(&format!(
                "cc-{TRACE}-{PARENT}-01.what-the-future-will-be-like"
            ))],
            New,
        ),
        case(
            "§3.2.4 future version shorter than 55 restarts",
            vec![tp(&format!("cc-{TRACE}-{PARENT}-1"))],
            New,
        ),
        case(
            "§3.2.2.1 version ff is invalid",
            vec![tp(&format!("ff-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.1 illegal version char (first)",
            vec![tp(&format!(".0-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.1 illegal version char (second)",
            vec![tp(&format!("0.-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.1 upper-case version",
            vec![tp(&format!("0A-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.1 version too long (3)",
            vec![tp(&format!("000-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.1 version too long (4)",
            vec![tp(&format!("0000-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.1 version too short",
            vec![tp(&format!("0-{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.3 all-zero trace-id is invalid",
            vec![tp(&format!("00-{}-{PARENT}-01", "0".repeat(32)))],
            New,
        ),
        case(
            "§3.2.2.3 illegal trace-id char (first)",
            vec![tp(&format!("00-.{}-{PARENT}-01", &TRACE[1..]))],
            New,
        ),
        case(
            "§3.2.2.3 illegal trace-id char (last)",
            vec![tp(&format!("00-{}.-{PARENT}-01", &TRACE[..31]))],
            New,
        ),
        case(
            "§3.2.2.3 upper-case trace-id",
            vec![tp(&format!("00-{}-{PARENT}-01", "ABCDEF".repeat(5) + "AB"))],
            New,
        ),
        case(
            "§3.2.2.3 trace-id too long",
            vec![tp(&format!("00-{TRACE}3-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2.3 trace-id too short",
            vec![tp(&format!("00-{}-{PARENT}-01", &TRACE[..31]))],
            New,
        ),
        case(
            "§3.2.2.4 all-zero parent-id is invalid",
            vec![tp(&format!("00-{TRACE}-{}-01", "0".repeat(16)))],
            New,
        ),
        case(
            "§3.2.2.4 illegal parent-id char (first)",
            vec![tp(&format!("00-{TRACE}-.{}-01", &PARENT[1..]))],
            New,
        ),
        case(
            "§3.2.2.4 illegal parent-id char (last)",
            vec![tp(&format!("00-{TRACE}-{}.-01", &PARENT[..15]))],
            New,
        ),
        case(
            "§3.2.2.4 upper-case parent-id",
            vec![tp(&format!("00-{TRACE}-ABCDEF0123456789-01"))],
            New,
        ),
        case(
            "§3.2.2.4 parent-id too long",
            vec![tp(&format!("00-{TRACE}-{PARENT}7-01"))],
            New,
        ),
        case(
            "§3.2.2.4 parent-id too short",
            vec![tp(&format!("00-{TRACE}-{}-01", &PARENT[..15]))],
            New,
        ),
        case(
            "§3.2.2.5 illegal flags char (first)",
            vec![tp(&format!("00-{TRACE}-{PARENT}-.0"))],
            New,
        ),
        case(
            "§3.2.2.5 illegal flags char (second)",
            vec![tp(&format!("00-{TRACE}-{PARENT}-0."))],
            New,
        ),
        case(
            "§3.2.2.5 upper-case flags",
            vec![tp(&format!("00-{TRACE}-{PARENT}-0A"))],
            New,
        ),
        case(
            "§3.2.2.5 flags too long",
            vec![tp(&format!("00-{TRACE}-{PARENT}-001"))],
            New,
        ),
        case(
            "§3.2.2.5 flags too short",
            vec![tp(&format!("00-{TRACE}-{PARENT}-1"))],
            New,
        ),
        case(
            "§3.2.2.5.3 unknown flag bits are accepted (and zeroed on output)",
            vec![tp(&format!("00-{TRACE}-{PARENT}-ff"))],
            Continued,
        ),
        case(
            "§3.2.2 wrong delimiter after version",
            vec![tp(&format!("00_{TRACE}-{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2 wrong delimiter after trace-id",
            vec![tp(&format!("00-{TRACE}_{PARENT}-01"))],
            New,
        ),
        case(
            "§3.2.2 wrong delimiter after parent-id",
            vec![tp(&format!("00-{TRACE}-{PARENT}_01"))],
            New,
        ),
        case(
            "§3.2.2 missing delimiters",
            vec![tp(&format!("00{TRACE}{PARENT}01"))],
            New,
        ),
        case("§3.2.2 empty value", vec![tp("")], New),
        case(
            "§3.2.2 non-ASCII bytes",
            vec![(
                "traceparent",
                [
                    b"00-".as_slice(),
                    "é".repeat(16).as_bytes(),
                    b"-1234567890123456-01",
                ]
                .concat(),
            )],
            New,
        ),
        case(
            "§3.2.2 invalid UTF-8",
            vec![(
                "traceparent",
                [format!("00-{TRACE}-{PARENT}-0").as_bytes(), &[0xff]].concat(),
            )],
            New,
        ),
        case(
            "§3.2 RFC 9110 OWS before and after are ignored",
            vec![tp(&format!(" \t00-{TRACE}-{PARENT}-01\t "))],
            Continued,
        ),
        case(
            "§3.2 OWS inside the value is invalid",
            vec![tp(&format!("00- {TRACE}-{PARENT}-01"))],
            New,
        ),
        // --- tracestate (§3.3; Level 2 section numbers) ---
        state_case(
            "§3.3.2 single member is forwarded",
            vec![ts("foo=1")],
            Is("foo=1"),
        ),
        // Multiple header fields (§3.3.2, RFC 9110 §5.3).
        state_case(
            "§3.3.2 multiple header fields are combined in order",
            vec![ts("foo=1"), ts("bar=2")],
            Is("foo=1,bar=2"),
        ),
        state_case(
            "§3.3.2 three header fields with several members each are combined in order",
            vec![ts("foo=1,bar=2"), ts("rojo=1,congo=2"), ts("baz=3")],
            Is("foo=1,bar=2,rojo=1,congo=2,baz=3"),
        ),
        state_case(
            "§3.3.2 empty header field with a member",
            vec![ts(""), ts("foo=1")],
            Is("foo=1"),
        ),
        state_case(
            "§3.3.2 member with an empty header field",
            vec![ts("foo=1"), ts("")],
            Is("foo=1"),
        ),
        state_case(
            "§3.3.2 empty header field between members",
            vec![ts("foo=1"), ts(""), ts("bar=2")],
            Is("foo=1,bar=2"),
        ),
        state_case(
            "§3.3.2 only empty header fields are not sent on",
            vec![ts(""), ts("")],
            Absent,
        ),
        state_case(
            "§3.3.2 a whitespace-only header field is not sent on",
            vec![ts(" \t ")],
            Absent,
        ),
        // Empty list members and OWS (§3.3.2).
        state_case(
            "§3.3.2 empty list members are skipped",
            vec![ts("foo=1,,bar=2")],
            Is("foo=1,bar=2"),
        ),
        state_case(
            "§3.3.2 whitespace-only list members are skipped",
            vec![ts(", \t ,foo=1, ,")],
            Is("foo=1"),
        ),
        state_case(
            "§3.3.2 OWS around members is dropped",
            vec![ts("foo=1 \t , \t bar=2, \t baz=3")],
            Is("foo=1,bar=2,baz=3"),
        ),
        state_case(
            "§3.3.2 tabs around members are dropped",
            vec![ts("foo=1\t \t,\t \tbar=2,\t \tbaz=3")],
            Is("foo=1,bar=2,baz=3"),
        ),
        state_case(
            "§3.3.2.2.2 leading spaces are part of the value, trailing ones are OWS",
            vec![ts("foo=  1  ,bar=2")],
            Is("foo=  1,bar=2"),
        ),
        // Keys (§3.3.2.2.1, Level 2 grammar).
        state_case(
            "§3.3.2.2.1 every key character",
            vec![ts(every_key_char)],
            Is(every_key_char),
        ),
        state_case(
            "§3.3.2.2.1 keys may start with a digit",
            vec![ts("1foo=1,0=2,9@=3")],
            Is("1foo=1,0=2,9@=3"),
        ),
        state_case(
            "§3.3.2.2.1 '@' at the end of a key",
            vec![ts("foo@=1,bar=2")],
            Is("foo@=1,bar=2"),
        ),
        state_case(
            "§3.3.2.2.1 '@@' inside a key",
            vec![ts("foo@@bar=1,bar=2")],
            Is("foo@@bar=1,bar=2"),
        ),
        state_case(
            "§3.3.2.2.1 two '@' in a key",
            vec![ts("foo@bar@baz=1,bar=2")],
            Is("foo@bar@baz=1,bar=2"),
        ),
        state_case(
            "§3.3.2.2.1 Level 1 tenant@system key at its limits",
            vec![ts("foo=1"), ts(&level1_tenant_system)],
            Is(leak(format!("foo=1,{level1_tenant_system}"))),
        ),
        state_case(
            "§3.3.2.2.1 no Level 1 limit before '@' (242 chars)",
            vec![ts("foo=1"), ts(&level1_tenant_too_long)],
            Is(leak(format!("foo=1,{level1_tenant_too_long}"))),
        ),
        state_case(
            "§3.3.2.2.1 no Level 1 limit after '@' (15 chars)",
            vec![ts("foo=1"), ts(&level1_system_too_long)],
            Is(leak(format!("foo=1,{level1_system_too_long}"))),
        ),
        state_case(
            "§3.3.2.2.1 key of 256 chars",
            vec![ts("foo=1"), ts(&long_key_ok)],
            Is(leak(format!("foo=1,{long_key_ok}"))),
        ),
        state_case(
            "§3.3.2.2.1 key of 256 chars ending in '@'",
            vec![ts(&long_key_at)],
            Is(leak(long_key_at.clone())),
        ),
        state_case(
            "§3.3.2.2.1 key of 257 chars discards the list",
            vec![ts("foo=1"), ts(&long_key_bad)],
            Absent,
        ),
        state_case(
            "§3.3.2.2.1 key starting with '@'",
            vec![ts("@foo=1,bar=2")],
            Absent,
        ),
        state_case(
            "§3.3.2.2.1 key starting with '_'",
            vec![ts("_foo=1,bar=2")],
            Absent,
        ),
        state_case(
            "§3.3.2.2.1 key starting with '-'",
            vec![ts("-foo=1,bar=2")],
            Absent,
        ),
        state_case(
            "§3.3.2.2.1 key starting with '*'",
            vec![ts("*foo=1,bar=2")],
            Absent,
        ),
        state_case(
            "§3.3.2.2.1 key starting with '/'",
            vec![ts("/foo=1,bar=2")],
            Absent,
        ),
        state_case("§3.3.2.2.1 empty key", vec![ts("=1,bar=2")], Absent),
        state_case("§3.3.2.2.1 space in key", vec![ts("foo =1")], Absent),
        state_case("§3.3.2.2.1 upper-case key", vec![ts("FOO=1")], Absent),
        state_case(
            "§3.3.2.2.1 illegal char in key",
            vec![ts("foo.bar=1")],
            Absent,
        ),
        // Values (§3.3.2.2.2).
        state_case(
            "§3.3.2.2.2 every value character",
            vec![ts(&every_value_char)],
            Is(leak(every_value_char.clone())),
        ),
        state_case("§3.3.2.2.2 value with =", vec![ts("foo=bar=baz")], Absent),
        state_case("§3.3.2.2.2 empty value", vec![ts("foo=,bar=3")], Absent),
        state_case(
            "§3.3.2.2.2 value of spaces only",
            vec![ts("foo=   ,bar=3")],
            Absent,
        ),
        state_case("§3.3.2.2 member without =", vec![ts("foo")], Absent),
        state_case(
            "§3.3.2.2.2 non-ASCII value",
            vec![("tracestate", "foo=é".as_bytes().to_vec())],
            Absent,
        ),
        state_case(
            "§3.3.2.2.2 control char in value",
            vec![ts("foo=a\tb")],
            Absent,
        ),
        state_case(
            "§3.3.2.2.2 value of 256 chars",
            vec![ts(&value_ok)],
            Is(leak(value_ok.clone())),
        ),
        state_case(
            "§3.3.2.2.2 value of 257 chars",
            vec![ts(&value_bad)],
            Absent,
        ),
        // One invalid member among valid ones (§5.1.2 step 3: "If the tracestate header cannot
        // be parsed the vendor MAY discard the entire header"; the W3C suite expects it).
        state_case(
            "§5.1.2 one invalid member among valid ones discards the whole header",
            vec![ts("foo=1,BAR=2,baz=3")],
            Absent,
        ),
        state_case(
            "§5.1.2 an invalid member in a later header field discards every field",
            vec![ts("foo=1"), ts("bar=2,baz")],
            Absent,
        ),
        // Duplicate keys (§3.3.3 "Only one entry per key is allowed"; §3.5 "vendors MAY also
        // discard duplicate keys"): the left-most entry is kept, the header never discarded.
        state_case(
            "§3.5 duplicate key: the left-most entry is kept",
            vec![ts("foo=1,foo=1")],
            Is("foo=1"),
        ),
        state_case(
            "§3.5 duplicate key with another value: the left-most entry is kept",
            vec![ts("foo=1,foo=2")],
            Is("foo=1"),
        ),
        state_case(
            "§3.5 duplicate key across header fields: the first field's entry is kept",
            vec![ts("foo=1"), ts("foo=2")],
            Is("foo=1"),
        ),
        state_case(
            "§3.5 duplicates among other members: the rest keep their order",
            vec![ts("foo=1,bar=2,foo=3,baz=4,bar=5")],
            Is("foo=1,bar=2,baz=4"),
        ),
        // At most 32 members (§3.3.2, §3.3.2.1).
        state_case(
            "§3.3.2 32 members are kept",
            vec![ts(&members(32))],
            Is(leak(members(32))),
        ),
        state_case(
            "§3.3.2 32 members over four header fields are kept",
            member_fields(32),
            Is(leak(members(32))),
        ),
        state_case(
            "§3.3.2 empty members do not count towards 32",
            vec![ts(&member_list(32).join(", ,")), ts("")],
            Is(leak(members(32))),
        ),
        state_case(
            "§3.3.2.1 33 members discard the list",
            vec![ts(&members(33))],
            Absent,
        ),
        state_case(
            "§3.3.2.1 33 members over four header fields discard the list",
            member_fields(33),
            Absent,
        ),
        state_case(
            "§3.3.2.1 33 members of which one is a duplicate discard the list",
            vec![ts(&members(32)), ts("bar01=01")],
            Absent,
        ),
        // Truncation (§3.3.3.1).
        state_case(
            "§3.3.3.1 oversized list is truncated to 512",
            vec![ts(&big)],
            AtMost(512),
        ),
        state_case(
            "§3.3.3.1 without large entries, entries go from the right",
            vec![ts(&big)],
            Is(leak(big_list.get(..19).unwrap_or_default().join(","))),
        ),
        state_case(
            "§3.3.3.1 entries over 128 chars are removed first",
            vec![ts(&large), ts(&small)],
            Is(leak(small.clone())),
        ),
        state_case(
            "§3.3.3.1 an entry of exactly 128 chars is not removed first",
            vec![ts(&edge), ts(&short_list.join(","))],
            Is(leak(format!(
                "{edge},{}",
                short_list.get(..25).unwrap_or_default().join(",")
            ))),
        ),
        state_case(
            "§3.3.3.1 only as many large entries as needed go, right-most first",
            vec![
                ts(&wide("a")),
                ts("m=1"),
                ts(&wide("b")),
                ts("z=1"),
                ts(&wide("c")),
            ],
            Is(leak(format!("{},m=1,{},z=1", wide("a"), wide("b")))),
        ),
        Case {
            spec: "§5.1.2 invalid traceparent: a new one is made and tracestate deleted",
            headers: vec![tp("ff-x"), ts("foo=1")],
            trace: New,
            state: Absent,
        },
        Case {
            spec: "§3.3 tracestate without traceparent is not parsed",
            headers: vec![ts("foo=1")],
            trace: New,
            state: Absent,
        },
    ]
}

/// What is wrong with the outgoing headers for `case` (empty when it passes): exactly one
/// canonical version-00 `traceparent`, continued or new as the case says, and the `tracestate` it
/// expects. The parsers are passed in because each includer reaches the filter's code its own way
/// (`crate::` in unit tests, the library in integration tests).
pub(crate) fn problems(
    case: &Case<'_>,
    traceparents: &[String],
    tracestates: &[String],
    canonical_v00: impl Fn(&str) -> Result<(), String>,
    valid_tracestate: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut found = Vec::new();
    match traceparents {
        [one] => {
            let trace = one.get(3..35);
            let parent = one.get(36..52);
            if let Err(e) = canonical_v00(one) {
                found.push(e);
            } else {
                match case.trace {
                    Trace::Continued if trace != Some(TRACE) || parent == Some(PARENT) => found
                        .push(format!(
                            "expected the trace continued under a new parent, got {one}"
                        )),
                    Trace::New if trace == Some(TRACE) => {
                        found.push(format!("expected a new trace, got {one}"));
                    }
                    _ => {}
                }
            }
        }
        other => found.push(format!("expected one traceparent, got {other:?}")),
    }
    let state_ok = match (case.state, tracestates) {
        (State::Absent, []) => true,
        (State::Is(want), [got]) => got == want,
        (State::AtMost(max), [got]) => got.len() <= max && valid_tracestate(got),
        _ => false,
    };
    if !state_ok {
        found.push(format!(
            "tracestate: expected {:?}, got {tracestates:?}",
            case.state
        ));
    }
    found
}

/// The `canonical_v00` check for [`problems`], given what the filter's parser said of `tp`
/// (`Ok(needs_rewrite)` or the parse error).
pub(crate) fn canonical_v00(tp: &str, parsed: Result<bool, String>) -> Result<(), String> {
    match parsed {
        Err(e) => Err(format!("forwarded invalid traceparent {tp}: {e}")),
        Ok(needs_rewrite) if needs_rewrite || !tp.starts_with("00-") => {
            Err(format!("not canonical v00: {tp}"))
        }
        Ok(_) => Ok(()),
    }
}
