//! Request matching shaped like Envoy's `envoy.config.route.v3.RouteMatch`, shared by the filters'
//! rules and by the dev proxy's router.
//!
//! Operators already know Envoy's route match, and Istio users write it daily, so a filter rule
//! that says *which requests* uses the same JSON an Envoy route would: the config types here
//! ([`RouteMatch`], [`HeaderMatcher`], [`QueryParameterMatcher`], [`StringMatcher`],
//! [`RegexMatcher`]) are the protobuf-JSON form of Envoy's messages, field for field, and they
//! behave as Envoy's router does. Both protobuf-JSON spellings are accepted for every field
//! (`safeRegex` and `safe_regex`); giving both in one object is a duplicate-field error, and any
//! field outside the supported subset is refused by name.
//!
//! Supported: the path specifiers `prefix`, `path`, `safe_regex`, `path_separated_prefix`;
//! `case_sensitive`; `headers` (the legacy `*_match` specifiers, `string_match`, `present_match`,
//! `range_match`, `invert_match`, `treat_missing_header_as_empty`); `query_parameters`; `grpc`.
//! Not supported (refused at parse time): `connect_matcher`, `path_match_policy`,
//! `runtime_fraction`, `tls_context`, `dynamic_metadata`, `filter_state`, `cookies`, and the
//! `custom` string matcher.
//!
//! Use: deserialize a [`RouteMatch`] with any serde format, compile it once at configure time
//! with [`RouteMatcher::compile`] (which validates it and compiles its regexes), then call
//! [`RouteMatcher::matches`] per request with anything implementing [`MatchInput`]. Header
//! pair slices (`[(String, Vec<u8>)]`, `[(&str, &[u8])]`, …) and the proxy's whole
//! [`HeaderMap`] implement it already; a filter that reads a few headers one by one implements
//! it over what it read.
//!
//! # Semantics (as Envoy's `config_impl.cc`, `header_utility.cc`, `matchers.cc`)
//!
//! - `prefix`, `path`, `path_separated_prefix` and `safe_regex` compare against `:path` with the
//!   query string and fragment removed (everything from the first `?` or `#`). `case_sensitive:
//!   false` makes the first three ASCII-case-insensitive; it does not affect `safe_regex`.
//!   `path_separated_prefix: /api` matches `/api`, `/api/…`, `/api?…`, never `/apix`.
//! - A request without `:path` matches no route (Envoy skips such routes for path-less
//!   requests). `grpc` requires `content-type` to be `application/grpc` or to start with
//!   `application/grpc+`.
//! - Every regex is RE2-style full match (anchored at both ends).
//! - A header condition sees all values of that header joined with `,`. If the header is absent
//!   (and `treat_missing_header_as_empty` is not set), only `present_match` can hold: absent
//!   matches `present_match: false`, and inverted `present_match: true`; every other condition
//!   fails, inverted or not. With `treat_missing_header_as_empty`, an absent header is the empty
//!   value (and `present_match` then yields its own value, as in Envoy). The legacy
//!   `exact_match: ""` matches any value. A header matcher without a specifier is a presence
//!   check.
//! - Query parameters come from the raw query string (no percent-decoding, as Envoy's router);
//!   a parameter named twice is matched on its first value; `a` alone has the value `""`.
//!   `present_match: true|false` requires the parameter present|absent (Envoy's current
//!   behaviour); a matcher with neither `string_match` nor `present_match` is a presence check.
//! - All conditions are AND-ed: path, grpc, every header, every query parameter.
//!
//! Matching works on bytes (header values may be non-UTF-8) and allocates only when a header
//! is repeated and its values must be joined (and, once per regex, `regex-lite`'s search cache).
//!
//! Size (wasm32-wasip1, `opt-level = "z"`, LTO, `wasm-opt -Oz`, over a serde_json baseline):
//! the serde types ≈ 57 KB, `regex-lite` ≈ 55 KB, compiling and matching ≈ 10 KB.
//!
//! # Deviations from Envoy, deliberate
//!
//! - Regexes are compiled with `regex-lite` instead of RE2 (a fraction of RE2's or `regex`'s size
//!   in wasm). The syntax is RE2's minus Unicode classes (`\p{…}`) and `\Q…\E`, which are refused
//!   at configure time rather than misread; `(?i)` folds ASCII case only. A non-UTF-8 value never
//!   matches a regex — which is also RE2's answer for a full match, since its UTF-8 automaton
//!   cannot consume an invalid byte. Pattern length and compiled size are bounded
//!   ([`MAX_REGEX_LEN`], [`REGEX_SIZE_LIMIT`]) where Envoy bounds RE2's program size.
//! - A `#` ends the query string for `query_parameters` (RFC 3986). Envoy's router would read a
//!   fragment as part of the last parameter, but Envoy's connection manager strips fragments
//!   from `:path` before routing, so Envoy itself never sees one there.

use std::borrow::Cow;

use regex_lite::{Regex, RegexBuilder};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::header_map::HeaderMap;

/// Longest regex pattern accepted, in bytes.
pub const MAX_REGEX_LEN: usize = 4096;
/// Compiled-size limit of one regex, in bytes (`regex-lite`'s `size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Deepest nesting of groups/repetitions accepted in a regex.
const REGEX_NEST_LIMIT: u32 = 50;
/// Envoy's `HeaderMatcher.name` limit (`max_bytes: 16384`).
pub const MAX_HEADER_NAME_LEN: usize = 16384;
/// Envoy's `QueryParameterMatcher.name` limit (`max_bytes: 1024`).
pub const MAX_QUERY_PARAMETER_NAME_LEN: usize = 1024;

// ==== configuration (protobuf JSON) ==============================================================

/// `envoy.config.route.v3.RouteMatch` (the supported subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// The path (without query) starts with this.
    pub prefix: Option<String>,
    /// The path (without query) equals this.
    pub path: Option<String>,
    /// The path (without query) fully matches this regex.
    #[serde(alias = "safe_regex")]
    pub safe_regex: Option<RegexMatcher>,
    /// The path (without query) equals this or continues it with `/`.
    #[serde(alias = "path_separated_prefix")]
    pub path_separated_prefix: Option<String>,
    /// Whether `prefix`, `path` and `path_separated_prefix` compare case-sensitively (default true).
    #[serde(alias = "case_sensitive")]
    pub case_sensitive: Option<bool>,
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions, all of which must hold.
    #[serde(default, alias = "query_parameters")]
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Present: only gRPC requests match.
    pub grpc: Option<GrpcRouteMatchOptions>,
}

/// `envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions` (no fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRouteMatchOptions {}

/// `envoy.type.matcher.v3.RegexMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexMatcher {
    /// The engine marker Envoy configs carry (`google_re2: {}`); accepted and ignored.
    #[serde(alias = "google_re2")]
    pub google_re2: Option<GoogleRe2>,
    /// The pattern (RE2 syntax; see the module docs for what `regex-lite` refuses).
    pub regex: String,
}

/// `envoy.type.matcher.v3.RegexMatcher.GoogleRE2`: only the empty form is accepted (its one
/// field, `max_program_size`, is deprecated in Envoy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleRe2 {}

/// `envoy.type.matcher.v3.StringMatcher`: exactly one of `exact`, `prefix`, `suffix`,
/// `contains`, `safe_regex`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatcher {
    /// The value equals this.
    pub exact: Option<String>,
    /// The value starts with this (non-empty).
    pub prefix: Option<String>,
    /// The value ends with this (non-empty).
    pub suffix: Option<String>,
    /// The value contains this (non-empty).
    pub contains: Option<String>,
    /// The value fully matches this regex.
    #[serde(alias = "safe_regex")]
    pub safe_regex: Option<RegexMatcher>,
    /// ASCII-case-insensitive `exact`/`prefix`/`suffix`/`contains` (refused with `safe_regex`,
    /// as Envoy does).
    #[serde(default, alias = "ignore_case")]
    pub ignore_case: bool,
}

/// `envoy.type.v3.Int64Range`: `[start, end)`. Protobuf JSON writes int64 as a string; a
/// number is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int64Range {
    /// Inclusive start.
    #[serde(default, deserialize_with = "int64_json")]
    pub start: i64,
    /// Exclusive end.
    #[serde(default, deserialize_with = "int64_json")]
    pub end: i64,
}

/// `envoy.config.route.v3.HeaderMatcher`: a header `name` and at most one specifier (none means
/// "present").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatcher {
    /// Header name (case-insensitive; pseudo-headers such as `:method` included).
    pub name: String,
    /// Legacy: the value equals this (`""` matches any value).
    #[serde(alias = "exact_match")]
    pub exact_match: Option<String>,
    /// Legacy: the value fully matches this regex.
    #[serde(alias = "safe_regex_match")]
    pub safe_regex_match: Option<RegexMatcher>,
    /// Legacy: the value is a decimal integer in this range.
    #[serde(alias = "range_match")]
    pub range_match: Option<Int64Range>,
    /// The header is present (`true`) or absent (`false`).
    #[serde(alias = "present_match")]
    pub present_match: Option<bool>,
    /// Legacy: the value starts with this (non-empty).
    #[serde(alias = "prefix_match")]
    pub prefix_match: Option<String>,
    /// Legacy: the value ends with this (non-empty).
    #[serde(alias = "suffix_match")]
    pub suffix_match: Option<String>,
    /// Legacy: the value contains this (non-empty).
    #[serde(alias = "contains_match")]
    pub contains_match: Option<String>,
    /// The value satisfies this string matcher.
    #[serde(alias = "string_match")]
    pub string_match: Option<StringMatcher>,
    /// Inverts the result (an absent header still fails unless `present_match` is used).
    #[serde(default, alias = "invert_match")]
    pub invert_match: bool,
    /// An absent header is matched as the empty value.
    #[serde(default, alias = "treat_missing_header_as_empty")]
    pub treat_missing_header_as_empty: bool,
}

/// `envoy.config.route.v3.QueryParameterMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParameterMatcher {
    /// Parameter name (case-sensitive, compared undecoded).
    pub name: String,
    /// The first value of the parameter satisfies this.
    #[serde(alias = "string_match")]
    pub string_match: Option<StringMatcher>,
    /// The parameter is present (`true`) or absent (`false`).
    #[serde(alias = "present_match")]
    pub present_match: Option<bool>,
}

/// Accepts a protobuf-JSON int64: a JSON number or a decimal string.
fn int64_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Int64Visitor;
    impl Visitor<'_> for Int64Visitor {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an int64 (a number or a decimal string)")
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::custom(format!("{value} is out of int64 range")))
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<i64, E> {
            value
                .parse()
                .map_err(|_| E::custom(format!("`{value}` is not an int64")))
        }
    }
    deserializer.deserialize_any(Int64Visitor)
}

// ==== errors ======================================================================================

/// A [`RouteMatch`] that cannot be compiled: `field` is the path of the offending field relative
/// to the `RouteMatch` (protobuf field names, e.g. `headers[1].string_match.safe_regex.regex`;
/// empty for the match itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if field.is_empty() { String::new() } else { format!("`{field}`: ") })]
pub struct RouteMatchError {
    /// Path of the offending field, relative to the `RouteMatch`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RouteMatchError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field path under `base` (e.g. the JSON path of the `RouteMatch` in a larger config).
    pub fn field_under(&self, base: &str) -> String {
        match (base.is_empty(), self.field.is_empty()) {
            (true, _) => self.field.clone(),
            (false, true) => base.to_owned(),
            (false, false) if self.field.starts_with('[') => format!("{base}{}", self.field),
            (false, false) => format!("{base}.{}", self.field),
        }
    }
}

fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_owned()
    } else {
        format!("{base}.{field}")
    }
}

// ==== the request ================================================================================

/// What a [`RouteMatcher`] reads from a request. Implement it over whatever the caller already
/// holds; nothing needs copying.
pub trait MatchInput {
    /// `:path` as received (with query string); `None` when the request has none.
    fn path(&self) -> Option<&[u8]>;

    /// Every value of header `name` (given lower-case; compare names ASCII-case-insensitively),
    /// joined with `,` in order; `None` when absent. [`join_header_values`] does this, borrowing
    /// when the header occurs once.
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>>;
}

/// Joins header values with `,` as Envoy does for matching; borrows when there is only one.
pub fn join_header_values<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = Vec::with_capacity(first.len() + 1 + second.len());
    joined.extend_from_slice(first);
    joined.push(b',');
    joined.extend_from_slice(second);
    for value in values {
        joined.push(b',');
        joined.extend_from_slice(value);
    }
    Some(Cow::Owned(joined))
}

/// Header pairs in the proxy's order, pseudo-headers included, duplicates kept.
impl<N: AsRef<str>, V: AsRef<[u8]>> MatchInput for [(N, V)] {
    fn path(&self) -> Option<&[u8]> {
        self.iter()
            .find(|(name, _)| name.as_ref() == ":path")
            .map(|(_, value)| value.as_ref())
    }

    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        join_header_values(
            self.iter()
                .filter(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_ref()),
        )
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> MatchInput for Vec<(N, V)> {
    fn path(&self) -> Option<&[u8]> {
        self.as_slice().path()
    }

    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.as_slice().header(name)
    }
}

/// A header map read whole from the proxy ([`crate::host::Host::header_map`]).
impl MatchInput for HeaderMap {
    fn path(&self) -> Option<&[u8]> {
        self.get(":path")
    }

    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        join_header_values(
            self.iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, value)| value),
        )
    }
}

// ==== compiled matchers ==========================================================================

/// A compiled [`RouteMatch`]: validated, regexes compiled, names lower-cased.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    path: PathCondition,
    grpc: bool,
    headers: Vec<HeaderCondition>,
    query_parameters: Vec<QueryCondition>,
}

#[derive(Debug, Clone)]
enum PathCondition {
    Prefix { prefix: Vec<u8>, ignore_case: bool },
    Exact { path: Vec<u8>, ignore_case: bool },
    SeparatedPrefix { prefix: Vec<u8>, ignore_case: bool },
    Regex(FullMatchRegex),
}

#[derive(Debug, Clone)]
struct HeaderCondition {
    name: String,
    test: HeaderTest,
    invert: bool,
    treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
enum HeaderTest {
    Present(bool),
    /// Legacy `exact_match`: an empty expected value matches anything.
    LegacyExact(Vec<u8>),
    Range {
        start: i64,
        end: i64,
    },
    String(CompiledStringMatcher),
}

#[derive(Debug, Clone)]
struct QueryCondition {
    name: Vec<u8>,
    test: QueryTest,
}

#[derive(Debug, Clone)]
enum QueryTest {
    Present(bool),
    String(CompiledStringMatcher),
}

/// A compiled [`StringMatcher`].
#[derive(Debug, Clone)]
pub struct CompiledStringMatcher {
    kind: StringKind,
}

#[derive(Debug, Clone)]
enum StringKind {
    Exact { value: Vec<u8>, ignore_case: bool },
    Prefix { value: Vec<u8>, ignore_case: bool },
    Suffix { value: Vec<u8>, ignore_case: bool },
    Contains { value: Vec<u8>, ignore_case: bool },
    Regex(FullMatchRegex),
}

/// A regex anchored at both ends (RE2's `FullMatch`).
#[derive(Debug, Clone)]
struct FullMatchRegex(Regex);

impl FullMatchRegex {
    fn compile(config: &RegexMatcher, field: &str) -> Result<Self, RouteMatchError> {
        let field = join(field, "regex");
        let pattern = config.regex.as_str();
        if pattern.is_empty() {
            return Err(RouteMatchError::new(field, "must not be empty"));
        }
        if pattern.len() > MAX_REGEX_LEN {
            return Err(RouteMatchError::new(
                field,
                format!("longer than {MAX_REGEX_LEN} bytes"),
            ));
        }
        let build = |pattern: &str| {
            RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .nest_limit(REGEX_NEST_LIMIT)
                .build()
        };
        // Compiled alone first, so a pattern such as `a)|(b` cannot escape the anchoring group.
        build(pattern).map_err(|error| RouteMatchError::new(&field, format!("{error}")))?;
        build(&format!("^(?:{pattern})$"))
            .map(Self)
            .map_err(|error| RouteMatchError::new(&field, format!("{error}")))
    }

    fn is_full_match(&self, haystack: &[u8]) -> bool {
        std::str::from_utf8(haystack).is_ok_and(|text| self.0.is_match(text))
    }
}

impl RouteMatcher {
    /// Validates `config` and compiles it.
    ///
    /// # Errors
    ///
    /// The first invalid field, named by its path relative to the `RouteMatch`.
    pub fn compile(config: &RouteMatch) -> Result<Self, RouteMatchError> {
        let ignore_case = !config.case_sensitive.unwrap_or(true);
        let path = match (
            &config.prefix,
            &config.path,
            &config.safe_regex,
            &config.path_separated_prefix,
        ) {
            (Some(prefix), None, None, None) => PathCondition::Prefix {
                prefix: prefix.as_bytes().to_vec(),
                ignore_case,
            },
            (None, Some(path), None, None) => PathCondition::Exact {
                path: path.as_bytes().to_vec(),
                ignore_case,
            },
            (None, None, Some(regex), None) => {
                PathCondition::Regex(FullMatchRegex::compile(regex, "safe_regex")?)
            }
            (None, None, None, Some(prefix)) => {
                validate_path_separated_prefix(prefix)?;
                PathCondition::SeparatedPrefix {
                    prefix: prefix.as_bytes().to_vec(),
                    ignore_case,
                }
            }
            _ => {
                return Err(RouteMatchError::new(
                    "",
                    "needs exactly one of prefix, path, safe_regex, path_separated_prefix",
                ));
            }
        };
        let headers = config
            .headers
            .iter()
            .enumerate()
            .map(|(index, header)| compile_header(header, &format!("headers[{index}]")))
            .collect::<Result<_, _>>()?;
        let query_parameters = config
            .query_parameters
            .iter()
            .enumerate()
            .map(|(index, query)| compile_query(query, &format!("query_parameters[{index}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path,
            grpc: config.grpc.is_some(),
            headers,
            query_parameters,
        })
    }

    /// Whether `request` satisfies every condition.
    pub fn matches(&self, request: &(impl MatchInput + ?Sized)) -> bool {
        let Some(full_path) = request.path() else {
            return false;
        };
        self.path.matches(path_without_query(full_path))
            && (!self.grpc || is_grpc(request))
            && self.headers.iter().all(|header| header.matches(request))
            && self
                .query_parameters
                .iter()
                .all(|query| query.matches(full_path))
    }
}

impl TryFrom<&RouteMatch> for RouteMatcher {
    type Error = RouteMatchError;

    fn try_from(config: &RouteMatch) -> Result<Self, RouteMatchError> {
        Self::compile(config)
    }
}

impl CompiledStringMatcher {
    /// Validates and compiles `config`; `field` prefixes the error's field path.
    ///
    /// # Errors
    ///
    /// Not exactly one specifier, an empty `prefix`/`suffix`/`contains`, `ignore_case` with
    /// `safe_regex`, or an invalid regex.
    pub fn compile(config: &StringMatcher, field: &str) -> Result<Self, RouteMatchError> {
        let ignore_case = config.ignore_case;
        let non_empty = |value: &String, name: &str| {
            if value.is_empty() {
                Err(RouteMatchError::new(join(field, name), "must not be empty"))
            } else {
                Ok(value.as_bytes().to_vec())
            }
        };
        let kind = match (
            &config.exact,
            &config.prefix,
            &config.suffix,
            &config.contains,
            &config.safe_regex,
        ) {
            (Some(exact), None, None, None, None) => StringKind::Exact {
                value: exact.as_bytes().to_vec(),
                ignore_case,
            },
            (None, Some(prefix), None, None, None) => StringKind::Prefix {
                value: non_empty(prefix, "prefix")?,
                ignore_case,
            },
            (None, None, Some(suffix), None, None) => StringKind::Suffix {
                value: non_empty(suffix, "suffix")?,
                ignore_case,
            },
            (None, None, None, Some(contains), None) => StringKind::Contains {
                value: non_empty(contains, "contains")?,
                ignore_case,
            },
            (None, None, None, None, Some(regex)) => {
                if ignore_case {
                    return Err(RouteMatchError::new(
                        join(field, "ignore_case"),
                        "has no effect with safe_regex (write (?i) in the regex)",
                    ));
                }
                StringKind::Regex(FullMatchRegex::compile(regex, &join(field, "safe_regex"))?)
            }
            _ => {
                return Err(RouteMatchError::new(
                    field,
                    "needs exactly one of exact, prefix, suffix, contains, safe_regex",
                ));
            }
        };
        Ok(Self { kind })
    }

    /// Whether `value` satisfies the matcher.
    pub fn matches(&self, value: &[u8]) -> bool {
        match &self.kind {
            StringKind::Exact {
                value: want,
                ignore_case,
            } => {
                if *ignore_case {
                    value.eq_ignore_ascii_case(want)
                } else {
                    value == want.as_slice()
                }
            }
            StringKind::Prefix {
                value: want,
                ignore_case,
            } => starts_with(value, want, *ignore_case),
            StringKind::Suffix {
                value: want,
                ignore_case,
            } => {
                value.len() >= want.len()
                    && value
                        .get(value.len() - want.len()..)
                        .is_some_and(|tail| same(tail, want, *ignore_case))
            }
            StringKind::Contains {
                value: want,
                ignore_case,
            } => {
                want.is_empty()
                    || value
                        .windows(want.len())
                        .any(|window| same(window, want, *ignore_case))
            }
            StringKind::Regex(regex) => regex.is_full_match(value),
        }
    }
}

fn same(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn starts_with(value: &[u8], prefix: &[u8], ignore_case: bool) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|head| same(head, prefix, ignore_case))
}

/// Envoy's rule for `path_separated_prefix`: `^[^?#]+[^?#/]$`.
fn validate_path_separated_prefix(prefix: &str) -> Result<(), RouteMatchError> {
    let field = "path_separated_prefix";
    if prefix.len() < 2 {
        return Err(RouteMatchError::new(
            field,
            "needs at least two characters (use prefix: \"/\" to match every path)",
        ));
    }
    if prefix.contains(['?', '#']) {
        return Err(RouteMatchError::new(field, "must not contain `?` or `#`"));
    }
    if prefix.ends_with('/') {
        return Err(RouteMatchError::new(field, "must not end with `/`"));
    }
    Ok(())
}

fn compile_header(config: &HeaderMatcher, field: &str) -> Result<HeaderCondition, RouteMatchError> {
    let name = &config.name;
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
        return Err(RouteMatchError::new(
            join(field, "name"),
            format!("needs 1 to {MAX_HEADER_NAME_LEN} bytes"),
        ));
    }
    if name.contains(['\0', '\r', '\n']) {
        return Err(RouteMatchError::new(
            join(field, "name"),
            "must not contain NUL, CR or LF",
        ));
    }
    let legacy = |value: &String, specifier: &str| {
        if value.is_empty() {
            return Err(RouteMatchError::new(
                join(field, specifier),
                "must not be empty",
            ));
        }
        let string = match specifier {
            "prefix_match" => StringMatcher {
                prefix: Some(value.clone()),
                ..StringMatcher::default()
            },
            "suffix_match" => StringMatcher {
                suffix: Some(value.clone()),
                ..StringMatcher::default()
            },
            _ => StringMatcher {
                contains: Some(value.clone()),
                ..StringMatcher::default()
            },
        };
        CompiledStringMatcher::compile(&string, &join(field, specifier)).map(HeaderTest::String)
    };
    let specifiers = [
        config.exact_match.is_some(),
        config.safe_regex_match.is_some(),
        config.range_match.is_some(),
        config.present_match.is_some(),
        config.prefix_match.is_some(),
        config.suffix_match.is_some(),
        config.contains_match.is_some(),
        config.string_match.is_some(),
    ];
    if specifiers.iter().filter(|given| **given).count() > 1 {
        return Err(RouteMatchError::new(
            field,
            "needs at most one of exact_match, safe_regex_match, range_match, present_match, \
             prefix_match, suffix_match, contains_match, string_match",
        ));
    }
    let test = if let Some(exact) = &config.exact_match {
        HeaderTest::LegacyExact(exact.as_bytes().to_vec())
    } else if let Some(regex) = &config.safe_regex_match {
        HeaderTest::String(CompiledStringMatcher {
            kind: StringKind::Regex(FullMatchRegex::compile(
                regex,
                &join(field, "safe_regex_match"),
            )?),
        })
    } else if let Some(range) = &config.range_match {
        HeaderTest::Range {
            start: range.start,
            end: range.end,
        }
    } else if let Some(present) = config.present_match {
        HeaderTest::Present(present)
    } else if let Some(prefix) = &config.prefix_match {
        legacy(prefix, "prefix_match")?
    } else if let Some(suffix) = &config.suffix_match {
        legacy(suffix, "suffix_match")?
    } else if let Some(contains) = &config.contains_match {
        legacy(contains, "contains_match")?
    } else if let Some(string) = &config.string_match {
        HeaderTest::String(CompiledStringMatcher::compile(
            string,
            &join(field, "string_match"),
        )?)
    } else {
        HeaderTest::Present(true)
    };
    Ok(HeaderCondition {
        name: name.to_ascii_lowercase(),
        test,
        invert: config.invert_match,
        treat_missing_as_empty: config.treat_missing_header_as_empty,
    })
}

fn compile_query(
    config: &QueryParameterMatcher,
    field: &str,
) -> Result<QueryCondition, RouteMatchError> {
    if config.name.is_empty() || config.name.len() > MAX_QUERY_PARAMETER_NAME_LEN {
        return Err(RouteMatchError::new(
            join(field, "name"),
            format!("needs 1 to {MAX_QUERY_PARAMETER_NAME_LEN} bytes"),
        ));
    }
    let test = match (&config.string_match, config.present_match) {
        (Some(string), None) => QueryTest::String(CompiledStringMatcher::compile(
            string,
            &join(field, "string_match"),
        )?),
        (None, Some(present)) => QueryTest::Present(present),
        (None, None) => QueryTest::Present(true),
        (Some(_), Some(_)) => {
            return Err(RouteMatchError::new(
                field,
                "needs at most one of string_match, present_match",
            ));
        }
    };
    Ok(QueryCondition {
        name: config.name.as_bytes().to_vec(),
        test,
    })
}

impl PathCondition {
    fn matches(&self, path: &[u8]) -> bool {
        match self {
            Self::Prefix {
                prefix,
                ignore_case,
            } => starts_with(path, prefix, *ignore_case),
            Self::Exact {
                path: want,
                ignore_case,
            } => same(path, want, *ignore_case),
            Self::SeparatedPrefix {
                prefix,
                ignore_case,
            } => {
                starts_with(path, prefix, *ignore_case)
                    && matches!(path.get(prefix.len()), None | Some(b'/'))
            }
            Self::Regex(regex) => regex.is_full_match(path),
        }
    }
}

impl HeaderCondition {
    fn matches(&self, request: &(impl MatchInput + ?Sized)) -> bool {
        let value = match request.header(&self.name) {
            Some(value) => value,
            None if self.treat_missing_as_empty => Cow::Borrowed(&b""[..]),
            // Envoy: an absent header satisfies only a presence test, inverted or not.
            None => {
                return match self.test {
                    HeaderTest::Present(present) => present == self.invert,
                    _ => false,
                };
            }
        };
        let matched = match &self.test {
            HeaderTest::Present(present) => *present,
            HeaderTest::LegacyExact(want) => want.is_empty() || value.as_ref() == want.as_slice(),
            HeaderTest::Range { start, end } => {
                parse_decimal_i64(&value).is_some_and(|number| *start <= number && number < *end)
            }
            HeaderTest::String(matcher) => matcher.matches(&value),
        };
        matched != self.invert
    }
}

impl QueryCondition {
    fn matches(&self, full_path: &[u8]) -> bool {
        let value = first_query_value(full_path, &self.name);
        match &self.test {
            QueryTest::Present(present) => value.is_some() == *present,
            QueryTest::String(matcher) => value.is_some_and(|value| matcher.matches(value)),
        }
    }
}

/// `:path` up to the first `?` or `#` (Envoy's `PathUtil::removeQueryAndFragment`).
fn path_without_query(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|byte| matches!(byte, b'?' | b'#'))
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The raw (undecoded) value of the first `name` parameter of the query string.
fn first_query_value<'a>(full_path: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let before_fragment = full_path
        .split(|byte| *byte == b'#')
        .next()
        .unwrap_or_default();
    let start = before_fragment.iter().position(|byte| *byte == b'?')? + 1;
    let query = before_fragment.get(start..)?;
    query.split(|byte| *byte == b'&').find_map(|parameter| {
        let (key, value) = match parameter.iter().position(|byte| *byte == b'=') {
            Some(equals) => (
                parameter.get(..equals).unwrap_or_default(),
                parameter.get(equals + 1..).unwrap_or_default(),
            ),
            None => (parameter, &b""[..]),
        };
        (key == name).then_some(value)
    })
}

/// `absl::SimpleAtoi` for int64: optional ASCII whitespace around, optional sign, decimal digits,
/// no overflow.
fn parse_decimal_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value.trim_ascii()).ok()?.parse().ok()
}

/// Envoy's `Grpc::Common::hasGrpcContentType`: `application/grpc` or `application/grpc+…`.
fn is_grpc(request: &(impl MatchInput + ?Sized)) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    request.header("content-type").is_some_and(|content_type| {
        content_type.starts_with(GRPC) && matches!(content_type.get(GRPC.len()), None | Some(b'+'))
    })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn compile(json: &str) -> RouteMatcher {
        let config: RouteMatch =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        RouteMatcher::compile(&config).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn compile_error(json: &str) -> RouteMatchError {
        let config: RouteMatch =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        RouteMatcher::compile(&config).unwrap_err()
    }

    fn request<'a>(path: &'a str, headers: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
        let mut pairs = vec![(":path", path.as_bytes())];
        pairs.extend_from_slice(headers);
        pairs
    }

    /// `(route match JSON, [(path, headers, expected)])`.
    type Table<'a> = &'a [(&'a str, &'a [(&'a str, &'a [(&'a str, &'a [u8])], bool)])];

    fn run(table: Table<'_>) {
        for (json, cases) in table {
            let matcher = compile(json);
            for (path, headers, expected) in *cases {
                assert_eq!(
                    matcher.matches(request(path, headers).as_slice()),
                    *expected,
                    "{json} on {path:?} {headers:?}"
                );
            }
        }
    }

    #[test]
    fn path_specifiers() {
        run(&[
            (
                r#"{"prefix": "/api"}"#,
                &[
                    ("/api", &[], true),
                    ("/api/x", &[], true),
                    ("/apix", &[], true),
                    ("/API", &[], false),
                    ("/ap", &[], false),
                    ("", &[], false),
                    ("/ap?i", &[], false),
                ],
            ),
            (
                r#"{"prefix": ""}"#,
                &[("", &[], true), ("/anything?q", &[], true)],
            ),
            (
                r#"{"prefix": "/api", "caseSensitive": false}"#,
                &[
                    ("/API/x", &[], true),
                    ("/aPi", &[], true),
                    ("/ap", &[], false),
                ],
            ),
            (
                r#"{"path": "/hello"}"#,
                &[
                    ("/hello", &[], true),
                    ("/hello?x=1", &[], true),
                    ("/hello#frag", &[], true),
                    ("/hello/", &[], false),
                    ("/Hello", &[], false),
                    ("/hell", &[], false),
                ],
            ),
            (
                r#"{"path": "/hello", "case_sensitive": false}"#,
                &[("/HELLO?x", &[], true), ("/hellO", &[], true)],
            ),
            (
                r#"{"path": ""}"#,
                &[("", &[], true), ("?x=1", &[], true), ("/", &[], false)],
            ),
            (
                r#"{"pathSeparatedPrefix": "/api/dev"}"#,
                &[
                    ("/api/dev", &[], true),
                    ("/api/dev/", &[], true),
                    ("/api/dev/v1", &[], true),
                    ("/api/dev?param=true", &[], true),
                    ("/api/dev#x", &[], true),
                    ("/api/developer", &[], false),
                    ("/api/de", &[], false),
                    ("/API/dev", &[], false),
                ],
            ),
            (
                r#"{"path_separated_prefix": "/api", "caseSensitive": false}"#,
                &[("/API/x", &[], true), ("/Apix", &[], false)],
            ),
            (
                r#"{"safeRegex": {"regex": "/v[0-9]+/.*"}}"#,
                &[
                    ("/v1/x", &[], true),
                    ("/v12/", &[], true),
                    ("/v1/x?q=/v", &[], true),
                    ("/x/v1/x", &[], false),
                    ("/v/x", &[], false),
                ],
            ),
            (
                // case_sensitive does not apply to regexes (Envoy).
                r#"{"safe_regex": {"google_re2": {}, "regex": "/a"}, "case_sensitive": false}"#,
                &[("/a", &[], true), ("/A", &[], false), ("/a/b", &[], false)],
            ),
            (
                // full match: an alternation cannot match a part.
                r#"{"safeRegex": {"regex": "/a|/b"}}"#,
                &[("/a", &[], true), ("/b", &[], true), ("/ab", &[], false)],
            ),
        ]);
    }

    #[test]
    fn a_request_without_path_matches_nothing() {
        let matcher = compile(r#"{"prefix": ""}"#);
        let headers: &[(&str, &[u8])] = &[(":method", b"CONNECT")];
        assert!(!matcher.matches(headers));
    }

    #[test]
    fn non_utf8_paths_and_values() {
        let prefix = compile(r#"{"prefix": "/a"}"#);
        assert!(prefix.matches(request("/a", &[]).as_slice()));
        let raw: &[(&str, &[u8])] = &[(":path", b"/a\xff\xfe")];
        assert!(prefix.matches(raw));
        // RE2 cannot consume an invalid byte in a full match; neither do we.
        let regex = compile(r#"{"safeRegex": {"regex": "/a.*"}}"#);
        assert!(!regex.matches(raw));
        let header = compile(
            r#"{"prefix": "/", "headers": [{"name": "x-bin", "string_match": {"prefix": "ab"}}]}"#,
        );
        assert!(header.matches(request("/", &[("x-bin", b"ab\xff")]).as_slice()));
        let inverted_regex = compile(
            r#"{"prefix": "/", "headers": [{"name": "x-bin", "safe_regex_match": {"regex": ".*"}, "invert_match": true}]}"#,
        );
        assert!(inverted_regex.matches(request("/", &[("x-bin", b"\xff")]).as_slice()));
        assert!(!inverted_regex.matches(request("/", &[("x-bin", b"ok")]).as_slice()));
    }

    #[test]
    fn header_string_matchers() {
        run(&[
            (
                r#"{"prefix": "/", "headers": [{"name": "X-A", "stringMatch": {"exact": "b"}}]}"#,
                &[
                    ("/", &[("x-a", b"b")], true),
                    ("/", &[("X-A", b"b")], true),
                    ("/", &[("x-a", b"B")], false),
                    ("/", &[("x-a", b"")], false),
                    ("/", &[], false),
                    // all values joined with ","
                    ("/", &[("x-a", b"b"), ("x-a", b"b")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": "b,c"}}]}"#,
                &[
                    (
                        "/",
                        &[("x-a", b"b"), ("x-other", b"z"), ("x-a", b"c")],
                        true,
                    ),
                    ("/", &[("x-a", b"b,c")], true),
                    ("/", &[("x-a", b"c"), ("x-a", b"b")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": "AbC", "ignoreCase": true}}]}"#,
                &[
                    ("/", &[("x-a", b"abc")], true),
                    ("/", &[("x-a", b"abcd")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": ""}}]}"#,
                &[
                    ("/", &[("x-a", b"")], true),
                    ("/", &[("x-a", b"x")], false),
                    ("/", &[], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"prefix": "ab", "ignore_case": true}}]}"#,
                &[
                    ("/", &[("x-a", b"ABc")], true),
                    ("/", &[("x-a", b"a")], false),
                    ("/", &[("x-a", b"xab")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"suffix": "bc"}}]}"#,
                &[
                    ("/", &[("x-a", b"abc")], true),
                    ("/", &[("x-a", b"bc")], true),
                    ("/", &[("x-a", b"c")], false),
                    ("/", &[("x-a", b"aBC")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"contains": "Zz", "ignoreCase": true}}]}"#,
                &[
                    ("/", &[("x-a", b"aazZaa")], true),
                    ("/", &[("x-a", b"z")], false),
                    ("/", &[("x-a", b"")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"safe_regex": {"regex": "[0-9]{3}"}}}]}"#,
                &[
                    ("/", &[("x-a", b"123")], true),
                    ("/", &[("x-a", b"1234")], false),
                    ("/", &[("x-a", b"12")], false),
                ],
            ),
            (
                // the headers of a pseudo-header are matched like any other
                r#"{"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]}"#,
                &[
                    ("/", &[(":method", b"POST")], true),
                    ("/", &[(":method", b"GET")], false),
                ],
            ),
        ]);
    }

    #[test]
    fn header_legacy_matchers() {
        run(&[
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "exact_match": "b"}]}"#,
                &[
                    ("/", &[("x-a", b"b")], true),
                    ("/", &[("x-a", b"c")], false),
                ],
            ),
            (
                // legacy quirk: an empty exact_match matches any present value
                r#"{"prefix": "/", "headers": [{"name": "x-a", "exactMatch": ""}]}"#,
                &[("/", &[("x-a", b"anything")], true), ("/", &[], false)],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "prefixMatch": "ab"}]}"#,
                &[
                    ("/", &[("x-a", b"abc")], true),
                    ("/", &[("x-a", b"ABc")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "suffix_match": "bc"}]}"#,
                &[
                    ("/", &[("x-a", b"abc")], true),
                    ("/", &[("x-a", b"ab")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "contains_match": "b"}]}"#,
                &[
                    ("/", &[("x-a", b"abc")], true),
                    ("/", &[("x-a", b"ac")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "safeRegexMatch": {"regex": "a+"}}]}"#,
                &[
                    ("/", &[("x-a", b"aaa")], true),
                    ("/", &[("x-a", b"aab")], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "range_match": {"start": "-10", "end": 10}}]}"#,
                &[
                    ("/", &[("x-a", b"-10")], true),
                    ("/", &[("x-a", b"9")], true),
                    ("/", &[("x-a", b" +5 ")], true),
                    ("/", &[("x-a", b"10")], false),
                    ("/", &[("x-a", b"-11")], false),
                    ("/", &[("x-a", b"5x")], false),
                    ("/", &[("x-a", b"0x5")], false),
                    ("/", &[("x-a", b"")], false),
                    ("/", &[("x-a", b"99999999999999999999")], false),
                    ("/", &[("x-a", b"\xff")], false),
                ],
            ),
        ]);
    }

    #[test]
    fn header_presence_inversion_and_missing() {
        run(&[
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "presentMatch": true}]}"#,
                &[("/", &[("x-a", b"")], true), ("/", &[], false)],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "present_match": false}]}"#,
                &[("/", &[("x-a", b"")], false), ("/", &[], true)],
            ),
            (
                // no specifier: presence
                r#"{"prefix": "/", "headers": [{"name": "x-a"}]}"#,
                &[("/", &[("x-a", b"v")], true), ("/", &[], false)],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "present_match": true, "invert_match": true}]}"#,
                &[("/", &[("x-a", b"")], false), ("/", &[], true)],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "present_match": false, "invertMatch": true}]}"#,
                &[("/", &[("x-a", b"")], true), ("/", &[], false)],
            ),
            (
                // an absent header fails a value test even inverted (Envoy)
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": "1"}, "invert_match": true}]}"#,
                &[
                    ("/", &[("x-a", b"1")], false),
                    ("/", &[("x-a", b"2")], true),
                    ("/", &[], false),
                ],
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": ""}, "treatMissingHeaderAsEmpty": true}]}"#,
                &[
                    ("/", &[], true),
                    ("/", &[("x-a", b"")], true),
                    ("/", &[("x-a", b"v")], false),
                ],
            ),
            (
                // Envoy's example: range [0, 10) inverted, missing treated as empty -> matches
                r#"{"prefix": "/", "headers": [{"name": "x-a", "range_match": {"start": 0, "end": 10}, "invert_match": true, "treat_missing_header_as_empty": true}]}"#,
                &[("/", &[], true), ("/", &[("x-a", b"5")], false)],
            ),
            (
                // with treat_missing_header_as_empty, present_match yields its own value
                r#"{"prefix": "/", "headers": [{"name": "x-a", "present_match": true, "treat_missing_header_as_empty": true}]}"#,
                &[("/", &[], true)],
            ),
            (
                // all header conditions must hold
                r#"{"prefix": "/", "headers": [{"name": "x-a", "exact_match": "1"}, {"name": "x-b", "present_match": false}]}"#,
                &[
                    ("/", &[("x-a", b"1")], true),
                    ("/", &[("x-a", b"1"), ("x-b", b"")], false),
                    ("/", &[], false),
                ],
            ),
        ]);
    }

    #[test]
    fn query_parameters() {
        run(&[
            (
                r#"{"prefix": "/", "queryParameters": [{"name": "debug", "stringMatch": {"exact": "1"}}]}"#,
                &[
                    ("/?debug=1", &[], true),
                    ("/x?a=2&debug=1", &[], true),
                    ("/x?debug=1&debug=2", &[], true),
                    // first occurrence only
                    ("/x?debug=2&debug=1", &[], false),
                    ("/x?debug=1#frag", &[], true),
                    ("/x#?debug=1", &[], false),
                    ("/x?Debug=1", &[], false),
                    ("/x?debug=%31", &[], false),
                    ("/x?debug", &[], false),
                    ("/x", &[], false),
                    ("/debug=1", &[], false),
                ],
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": "debug"}]}"#,
                &[
                    ("/?debug", &[], true),
                    ("/?debug=", &[], true),
                    ("/?x=1&debug=0", &[], true),
                    ("/?debugx=1", &[], false),
                    ("/", &[], false),
                ],
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": "debug", "present_match": false}]}"#,
                &[
                    ("/?debug", &[], false),
                    ("/?x", &[], true),
                    ("/", &[], true),
                ],
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": "a%20b", "string_match": {"exact": ""}}]}"#,
                &[
                    ("/?a%20b", &[], true),
                    ("/?a%20b=", &[], true),
                    ("/?a b", &[], false),
                ],
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": "v", "string_match": {"safe_regex": {"regex": "[0-9]+"}}}, {"name": "w", "presentMatch": true}]}"#,
                &[
                    ("/?v=12&w", &[], true),
                    ("/?v=12", &[], false),
                    ("/?v=1a&w", &[], false),
                ],
            ),
        ]);
    }

    #[test]
    fn grpc() {
        run(&[(
            r#"{"prefix": "/", "grpc": {}}"#,
            &[
                (
                    "/svc/Method",
                    &[("content-type", b"application/grpc")],
                    true,
                ),
                (
                    "/svc/Method",
                    &[("content-type", b"application/grpc+proto")],
                    true,
                ),
                (
                    "/svc/Method",
                    &[("content-type", b"application/grpc-web")],
                    false,
                ),
                (
                    "/svc/Method",
                    &[("content-type", b"Application/grpc")],
                    false,
                ),
                (
                    "/svc/Method",
                    &[("content-type", b"application/json")],
                    false,
                ),
                ("/svc/Method", &[], false),
            ],
        )]);
    }

    #[test]
    fn both_spellings_are_one_field() {
        let camel: RouteMatch = serde_json::from_str(
            r#"{"pathSeparatedPrefix": "/a", "caseSensitive": false,
                "headers": [{"name": "x", "stringMatch": {"safeRegex": {"googleRe2": {}, "regex": "y"}},
                             "invertMatch": true, "treatMissingHeaderAsEmpty": true}],
                "queryParameters": [{"name": "q", "presentMatch": true}]}"#,
        )
        .unwrap();
        let snake: RouteMatch = serde_json::from_str(
            r#"{"path_separated_prefix": "/a", "case_sensitive": false,
                "headers": [{"name": "x", "string_match": {"safe_regex": {"google_re2": {}, "regex": "y"}},
                             "invert_match": true, "treat_missing_header_as_empty": true}],
                "query_parameters": [{"name": "q", "present_match": true}]}"#,
        )
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(snake.path_separated_prefix.as_deref(), Some("/a"));
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases = [
            (
                r#"{"prefix": "/", "safeRegex": {"regex": "a"}, "safe_regex": {"regex": "b"}}"#,
                "duplicate field `safeRegex`",
            ),
            (
                r#"{"caseSensitive": true, "case_sensitive": false}"#,
                "duplicate field `caseSensitive`",
            ),
            (
                r#"{"prefix": "/", "runtime_fraction": {}}"#,
                "unknown field `runtime_fraction`",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "exactMatch": "1", "exact_match": "2"}]}"#,
                "duplicate field `exactMatch`",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "string_match": {"custom": {}}}]}"#,
                "unknown field `custom`",
            ),
            (r#"{"prefix": "/", "grpc": {"x": 1}}"#, "unknown field `x`"),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "range_match": {"start": "1.5"}}]}"#,
                "`1.5` is not an int64",
            ),
            (
                r#"{"safe_regex": {"regex": "a", "google_re2": {"max_program_size": 1}}}"#,
                "unknown field `max_program_size`",
            ),
        ];
        for (json, expected) in cases {
            let error = serde_json::from_str::<RouteMatch>(json)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (
                r#"{}"#,
                "",
                "exactly one of prefix, path, safe_regex, path_separated_prefix",
            ),
            (
                r#"{"prefix": "/", "path": "/"}"#,
                "",
                "exactly one of prefix, path, safe_regex, path_separated_prefix",
            ),
            (r#"{"safe_regex": {"regex": "("}}"#, "safe_regex.regex", ""),
            (
                r#"{"safe_regex": {"regex": ""}}"#,
                "safe_regex.regex",
                "must not be empty",
            ),
            (
                r#"{"safe_regex": {"regex": "a)|(b"}}"#,
                "safe_regex.regex",
                "",
            ),
            (
                r#"{"safe_regex": {"regex": "\\p{Greek}"}}"#,
                "safe_regex.regex",
                "",
            ),
            (
                r#"{"safe_regex": {"regex": "\\Qa.b\\E"}}"#,
                "safe_regex.regex",
                "",
            ),
            (
                r#"{"safe_regex": {"regex": "a{1000}{1000}"}}"#,
                "safe_regex.regex",
                "",
            ),
            (
                r#"{"path_separated_prefix": "/api/"}"#,
                "path_separated_prefix",
                "must not end with `/`",
            ),
            (
                r#"{"path_separated_prefix": "/a?b"}"#,
                "path_separated_prefix",
                "`?` or `#`",
            ),
            (
                r#"{"path_separated_prefix": "/a#b"}"#,
                "path_separated_prefix",
                "`?` or `#`",
            ),
            (
                r#"{"path_separated_prefix": "/"}"#,
                "path_separated_prefix",
                "two characters",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": ""}]}"#,
                "headers[0].name",
                "1 to 16384",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "a\nb"}]}"#,
                "headers[0].name",
                "CR or LF",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x"}, {"name": "y", "exact_match": "1", "present_match": true}]}"#,
                "headers[1]",
                "at most one of",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "string_match": {}}]}"#,
                "headers[0].string_match",
                "exactly one of exact, prefix, suffix, contains, safe_regex",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "string_match": {"exact": "a", "prefix": "b"}}]}"#,
                "headers[0].string_match",
                "exactly one of",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "string_match": {"prefix": ""}}]}"#,
                "headers[0].string_match.prefix",
                "must not be empty",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "string_match": {"safe_regex": {"regex": "a"}, "ignore_case": true}}]}"#,
                "headers[0].string_match.ignore_case",
                "no effect",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "string_match": {"safe_regex": {"regex": "["}}}]}"#,
                "headers[0].string_match.safe_regex.regex",
                "",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "safe_regex_match": {"regex": "["}}]}"#,
                "headers[0].safe_regex_match.regex",
                "",
            ),
            (
                r#"{"prefix": "/", "headers": [{"name": "x", "suffix_match": ""}]}"#,
                "headers[0].suffix_match",
                "must not be empty",
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": ""}]}"#,
                "query_parameters[0].name",
                "1 to 1024",
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": "q", "present_match": true, "string_match": {"exact": ""}}]}"#,
                "query_parameters[0]",
                "at most one of",
            ),
            (
                r#"{"prefix": "/", "query_parameters": [{"name": "q", "string_match": {"contains": ""}}]}"#,
                "query_parameters[0].string_match.contains",
                "must not be empty",
            ),
        ];
        for (json, field, reason) in cases {
            let error = compile_error(json);
            assert_eq!(error.field, field, "{json}: {error}");
            assert!(error.reason.contains(reason), "{json}: {error}");
        }
        let long = format!(
            r#"{{"safe_regex": {{"regex": "{}"}}}}"#,
            "a".repeat(MAX_REGEX_LEN + 1)
        );
        assert_eq!(compile_error(&long).field, "safe_regex.regex");
    }

    #[test]
    fn error_paths_nest_under_a_base() {
        let error = compile_error(r#"{"prefix": "/", "headers": [{"name": ""}]}"#);
        assert_eq!(
            error.field_under("rules[2].match"),
            "rules[2].match.headers[0].name"
        );
        assert_eq!(
            error.to_string(),
            "`headers[0].name`: needs 1 to 16384 bytes"
        );
        let whole = compile_error("{}");
        assert_eq!(whole.field_under("rules[2].match"), "rules[2].match");
        assert!(!whole.to_string().starts_with('`'));
    }

    #[test]
    fn every_input_shape_agrees() {
        let matcher = compile(
            r#"{"prefix": "/a", "headers": [{"name": "x-a", "string_match": {"exact": "1,2"}}]}"#,
        );
        let owned: Vec<(String, Vec<u8>)> = vec![
            (":path".to_owned(), b"/a".to_vec()),
            ("x-a".to_owned(), b"1".to_vec()),
            ("x-a".to_owned(), b"2".to_vec()),
        ];
        assert!(matcher.matches(&owned));
        assert!(matcher.matches(owned.as_slice()));
        let strings: Vec<(String, String)> = vec![
            (":path".to_owned(), "/a".to_owned()),
            ("X-A".to_owned(), "1,2".to_owned()),
        ];
        assert!(matcher.matches(&strings));
        let map = HeaderMap::from_pairs([
            (&b":path"[..], &b"/a?x"[..]),
            (b"x-a", b"1"),
            (b"x-a", b"2"),
        ]);
        assert!(matcher.matches(&map));
    }

    #[test]
    fn single_header_values_are_borrowed() {
        let pairs: &[(&str, &[u8])] = &[("x-a", b"1"), ("x-b", b"2"), ("x-b", b"3")];
        assert!(matches!(pairs.header("x-a"), Some(Cow::Borrowed(b"1"))));
        assert_eq!(pairs.header("x-b").as_deref(), Some(&b"2,3"[..]));
        assert_eq!(pairs.header("x-c"), None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn matchers() -> Vec<RouteMatcher> {
            [
                r#"{"prefix": "/a", "caseSensitive": false}"#,
                r#"{"path": "/a/b"}"#,
                r#"{"path_separated_prefix": "/a"}"#,
                r#"{"safe_regex": {"regex": "/[a-z]+(/.*)?"}, "grpc": {}}"#,
                r#"{"prefix": "/", "headers": [
                    {"name": "x-a", "string_match": {"contains": "b", "ignore_case": true}},
                    {"name": "x-b", "range_match": {"start": -5, "end": 5}, "invert_match": true},
                    {"name": "x-c", "suffix_match": "z", "treat_missing_header_as_empty": true},
                    {"name": "x-d", "safe_regex_match": {"regex": ".*"}}]}"#,
                r#"{"prefix": "", "query_parameters": [
                    {"name": "a", "string_match": {"suffix": "1"}}, {"name": "b", "present_match": false}]}"#,
            ]
            .iter()
            .map(|json| compile(json))
            .collect()
        }

        proptest! {
            /// Arbitrary paths, header names and byte values never panic, and the answer does not
            /// depend on the input's representation.
            #[test]
            fn arbitrary_requests_never_panic(
                path in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                headers in proptest::collection::vec(
                    ("x-[a-e]|content-type|X-A", proptest::collection::vec(any::<u8>(), 0..20)),
                    0..6,
                ),
            ) {
                let mut pairs: Vec<(String, Vec<u8>)> = headers;
                if let Some(path) = path {
                    pairs.insert(0, (":path".to_owned(), path));
                }
                let borrowed: Vec<(&str, &[u8])> =
                    pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
                for matcher in matchers() {
                    prop_assert_eq!(matcher.matches(&pairs), matcher.matches(borrowed.as_slice()));
                }
            }

            /// Text paths with the characters that matter to the parser never panic.
            #[test]
            fn structured_paths_never_panic(path in "[/a-zA-Z1?#&=%]{0,30}") {
                let pairs = [(":path", path.as_bytes())];
                for matcher in matchers() {
                    let _ = matcher.matches(pairs.as_slice());
                }
            }
        }
    }
}
