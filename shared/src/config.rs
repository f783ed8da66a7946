//! Plugin configuration in two steps: strict JSON into a `Raw` type, then validation into typed
//! values — every error names the JSON path and the reason.
//!
//! ```
//! use meshward_core::config::{parse_config, ConfigDuration, ConfigError, InvalidConfig};
//! use meshward_core::json::{Field, FromJson};
//!
//! struct RawConfig { max_length: u32, timeout: ConfigDuration }
//!
//! impl FromJson for RawConfig {
//!     fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
//!         let mut object = field.object()?;
//!         let raw = RawConfig {
//!             max_length: object.required("maxLength")?.parse()?,
//!             timeout: object.required("timeout")?.parse()?,
//!         };
//!         object.finish()?;
//!         Ok(raw)
//!     }
//! }
//!
//! struct Config { max_length: u32, timeout_ns: u64 }
//!
//! impl TryFrom<RawConfig> for Config {
//!     type Error = InvalidConfig;
//!     fn try_from(raw: RawConfig) -> Result<Self, InvalidConfig> {
//!         if !(1..=1024).contains(&raw.max_length) {
//!             return Err(InvalidConfig::at("maxLength", "must be between 1 and 1024"));
//!         }
//!         Ok(Config { max_length: raw.max_length, timeout_ns: raw.timeout.as_nanos() })
//!     }
//! }
//!
//! let err = parse_config::<RawConfig, Config>(br#"{"maxLength": 0, "timeout": "1s"}"#)
//!     .err().unwrap();
//! assert_eq!(err.to_string(), "maxLength: must be between 1 and 1024");
//! let err = parse_config::<RawConfig, Config>(br#"{"maxLength": 5, "timeout": "1x"}"#)
//!     .err().unwrap();
//! assert_eq!(err.path(), "timeout");
//! ```
//!
//! Step one reads the JSON with [`crate::json`] into the filter's `Raw` types ([`FromJson`]),
//! which deny unknown fields (every object read ends with [`json::Object::finish`]) so a typo
//! fails loudly, with a path rather than a line and column (which mean nothing in an Istio
//! `pluginConfig` rendered from YAML). Step two is the filter's `TryFrom<Raw>`, whose
//! [`InvalidConfig`] errors carry paths too ([`InvalidConfig::at`], [`InvalidConfig::within`]).
//!
//! An empty (or all-whitespace) configuration is read as `{}`: Envoy delivers an absent
//! `configuration` as empty bytes, and a filter whose fields all have defaults should start.

use std::fmt;

use crate::json::{self, Field, FromJson};

/// Why a plugin configuration was rejected: where (a JSON path such as `requestId.maxLength` or
/// `rules[2].match.host`; empty for the document itself) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", display_path(path))]
pub struct ConfigError {
    path: String,
    reason: String,
}

impl ConfigError {
    /// A failure at `path` (empty for the document) because of `reason`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The JSON path of the offending value (empty for the whole document).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why the value was rejected (lower-case, no trailing punctuation).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "(root)" } else { path }
}

/// A validation failure from a filter's `TryFrom<Raw>`, with the JSON path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", display_path(path))]
pub struct InvalidConfig {
    path: String,
    reason: String,
}

impl InvalidConfig {
    /// A failure at `path` (dotted camelCase keys, `[i]` for list items, e.g.
    /// `"requestId.maxLength"` or `"rules[0].path"`).
    pub fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A failure of the document as a whole.
    pub fn root(reason: impl Into<String>) -> Self {
        Self::at("", reason)
    }

    /// The same failure seen from a parent: `InvalidConfig::at("maxLength", r).within("requestId")`
    /// is at `requestId.maxLength`; `within("rules[3]")` works for list items.
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        self.path = join_path(parent, &self.path);
        self
    }

    /// The JSON path (empty for the whole document).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Joins a parent and child JSON path: `a` + `b` → `a.b`, `a` + `[0]` → `a[0]`.
pub fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (false, true) => parent.to_owned(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

impl From<InvalidConfig> for ConfigError {
    fn from(invalid: InvalidConfig) -> Self {
        Self {
            path: invalid.path,
            reason: invalid.reason,
        }
    }
}

/// Parses `bytes` as JSON into `Raw` (strictly), then validates it into `Cfg`.
///
/// # Errors
///
/// [`ConfigError`] with the JSON path and reason for malformed JSON, a wrong type, an unknown or
/// missing field, a bad duration, or whatever `Cfg::try_from` rejects.
pub fn parse_config<Raw, Cfg>(bytes: &[u8]) -> Result<Cfg, ConfigError>
where
    Raw: FromJson,
    Cfg: TryFrom<Raw>,
    Cfg::Error: Into<ConfigError>,
{
    let raw = parse_raw::<Raw>(bytes)?;
    Cfg::try_from(raw).map_err(Into::into)
}

/// Step one alone: strict JSON into `Raw`, errors with their path. Empty input reads as `{}`.
///
/// # Errors
///
/// As [`parse_config`], for the JSON step.
pub fn parse_raw<Raw: FromJson>(bytes: &[u8]) -> Result<Raw, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    let document = json::parse(bytes)?;
    Field::root(&document).parse()
}

// === durations ===

/// A non-negative duration written in config as a string: `"250ms"`, `"10s"`, `"1m"`, `"1h"`,
/// `"1.5s"` (units `ns`, `us`, `ms`, `s`, `m`, `h`; decimals allowed, exact to the nanosecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration {
    nanos: u64,
}

/// A duration string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration `{input}`: {reason} (expected a number and a unit: ns, us, ms, s, m or h, e.g. \"250ms\", \"1.5s\")"
)]
pub struct InvalidDuration {
    input: String,
    reason: &'static str,
}

impl ConfigDuration {
    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self { nanos }
    }

    /// A duration of `millis` milliseconds (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            nanos: millis.saturating_mul(1_000_000),
        }
    }

    /// A duration of `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            nanos: secs.saturating_mul(1_000_000_000),
        }
    }

    /// Nanoseconds (the unit of [`crate::host::Nanos`]).
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Whole milliseconds, rounded down and saturated to `u32` (the unit of callout timeouts).
    pub const fn as_millis_u32(self) -> u32 {
        let millis = self.nanos / 1_000_000;
        if millis > u32::MAX as u64 {
            u32::MAX
        } else {
            millis as u32
        }
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(self) -> u64 {
        self.nanos / 1_000_000_000
    }

    /// As a `std::time::Duration`.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.nanos)
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.nanos == 0
    }
}

impl fmt::Display for ConfigDuration {
    /// Shortest exact form among `h`, `m`, `s`, `ms`, `us`, `ns`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 6] = [
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
            (1, "ns"),
        ];
        if self.nanos == 0 {
            return f.write_str("0s");
        }
        for (scale, unit) in UNITS {
            if self.nanos.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.nanos / scale);
            }
        }
        write!(f, "{}ns", self.nanos)
    }
}

impl std::str::FromStr for ConfigDuration {
    type Err = InvalidDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

/// Parses `"250ms"`, `"10s"`, `"1.5s"`, `"1m"`, `"1h"`, `"100us"`, `"5ns"`.
///
/// # Errors
///
/// [`InvalidDuration`] naming the input and what is wrong (no unit, unknown unit, negative,
/// too many decimals, overflow…).
pub fn parse_duration(input: &str) -> Result<ConfigDuration, InvalidDuration> {
    let fail = |reason| InvalidDuration {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(fail("empty"));
    }
    if s.starts_with('-') {
        return Err(fail("must not be negative"));
    }
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| fail("missing unit"))?;
    let (number, unit) = s.split_at(number_end);
    let scale: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(fail("unknown unit")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
        return Err(fail("missing digits"));
    }
    if fraction.contains('.') {
        return Err(fail("more than one decimal point"));
    }
    let whole: u64 = whole.parse().map_err(|_| fail("number too large"))?;
    let mut nanos = whole
        .checked_mul(scale)
        .ok_or_else(|| fail("number too large"))?;
    // Exact decimal arithmetic: each fraction digit is worth scale / 10^k nanoseconds, and a
    // digit finer than a nanosecond is an error rather than silently dropped.
    let mut digit_scale = scale;
    for digit in fraction.bytes() {
        let digit = u64::from(digit.wrapping_sub(b'0'));
        if !digit_scale.is_multiple_of(10) {
            if digit != 0 {
                return Err(fail("more precise than a nanosecond"));
            }
            continue;
        }
        digit_scale /= 10;
        nanos = nanos
            .checked_add(digit * digit_scale)
            .ok_or_else(|| fail("number too large"))?;
    }
    Ok(ConfigDuration { nanos })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[derive(Debug)]
    struct RawRequestId {
        header: String,
        max_length: Option<u32>,
    }

    impl FromJson for RawRequestId {
        fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
            let mut object = field.object()?;
            let raw = Self {
                header: object.required("header")?.parse()?,
                max_length: object.optional("maxLength")?,
            };
            object.finish()?;
            Ok(raw)
        }
    }

    #[derive(Debug)]
    struct RawConfig {
        request_id: RawRequestId,
        timeout: Option<ConfigDuration>,
        rules: Vec<RawRequestId>,
    }

    impl FromJson for RawConfig {
        fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
            let mut object = field.object()?;
            let raw = Self {
                request_id: object.required("requestId")?.parse()?,
                timeout: object.optional("timeout")?,
                rules: object.or_default("rules")?,
            };
            object.finish()?;
            Ok(raw)
        }
    }

    #[derive(Debug)]
    struct Config {
        header: String,
        max_length: u32,
        timeout: ConfigDuration,
        rules: usize,
    }

    impl TryFrom<RawConfig> for Config {
        type Error = InvalidConfig;
        fn try_from(raw: RawConfig) -> Result<Self, InvalidConfig> {
            let max_length = raw.request_id.max_length.unwrap_or(64);
            if !(1..=1024).contains(&max_length) {
                return Err(InvalidConfig::at("maxLength", "must be between 1 and 1024")
                    .within("requestId"));
            }
            Ok(Config {
                header: raw.request_id.header,
                max_length,
                timeout: raw.timeout.unwrap_or(ConfigDuration::from_millis(250)),
                rules: raw.rules.len(),
            })
        }
    }

    fn parse(json: &str) -> Result<Config, ConfigError> {
        parse_config::<RawConfig, Config>(json.as_bytes())
    }

    #[test]
    fn accepts_a_valid_config() {
        let cfg = parse(
            r#"{"requestId": {"header": "x-request-id", "maxLength": 36}, "timeout": "1.5s"}"#,
        )
        .unwrap();
        assert_eq!(cfg.header, "x-request-id");
        assert_eq!(cfg.max_length, 36);
        assert_eq!(cfg.rules, 0);
        assert_eq!(cfg.timeout.as_nanos(), 1_500_000_000);
    }

    #[test]
    fn config_errors_name_path_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"requestId": {"header": "x", "maxLenght": 3}}"#,
                "requestId.maxLenght",
                "unknown field `maxLenght`, expected `header` or `maxLength`",
            ),
            (
                r#"{"requestId": {"header": "x"}, "timeout": "10x"}"#,
                "timeout",
                "invalid duration `10x`: unknown unit",
            ),
            (
                r#"{"requestId": {"header": 7}}"#,
                "requestId.header",
                "invalid type: number `7`, expected a string",
            ),
            (
                r#"{"requestId": {}}"#,
                "requestId",
                "missing field `header`",
            ),
            (
                r#"{"requestId": {"header": "x", "maxLength": 0}}"#,
                "requestId.maxLength",
                "must be between 1 and 1024",
            ),
            (
                r#"{"requestId": {"header": "x"}, "rules": [{"header": "a"}, {"header": "b", "bad": 1}]}"#,
                "rules[1].bad",
                "unknown field `bad`, expected `header` or `maxLength`",
            ),
            (r#"{"requestId": {"header": "x"},}"#, "", "invalid json"),
            (
                r#"{"requestId": {"header": "x"}} trailing"#,
                "",
                "invalid json",
            ),
            ("", "", "missing field `requestId`"),
        ];
        for (json, path, reason) in cases {
            let err = parse(json).unwrap_err();
            assert_eq!(err.path(), *path, "{json}: {err}");
            assert!(err.reason().starts_with(reason), "{json}: {err}");
            if !reason.starts_with("invalid json") {
                assert!(!err.reason().contains(" at line "), "{json}: {err}");
            }
        }
    }

    #[test]
    fn config_error_display_joins_path_and_reason() {
        let err = parse(r#"{"requestId": {"header": "x"}, "timeout": "-1s"}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("timeout: invalid duration `-1s`: must not be negative")
        );
        let err = ConfigError::from(InvalidConfig::root("no rules"));
        assert_eq!(err.to_string(), "(root): no rules");
    }

    #[test]
    fn invalid_config_paths_nest() {
        let err = InvalidConfig::at("path", "bad pattern")
            .within("[2]")
            .within("rules");
        assert_eq!(err.path(), "rules[2].path");
        assert_eq!(InvalidConfig::root("x").within("a").path(), "a");
    }

    #[test]
    fn durations_parse_exactly() {
        let cases: &[(&str, u64)] = &[
            ("250ms", 250_000_000),
            ("10s", 10_000_000_000),
            ("1m", 60_000_000_000),
            ("1h", 3_600_000_000_000),
            ("1.5s", 1_500_000_000),
            ("0.001s", 1_000_000),
            ("1.25ms", 1_250_000),
            ("100us", 100_000),
            ("7ns", 7),
            ("0s", 0),
            (" 2s ", 2_000_000_000),
            ("1.5000000000s", 1_500_000_000),
        ];
        for (input, nanos) in cases {
            assert_eq!(
                parse_duration(input).map(ConfigDuration::as_nanos),
                Ok(*nanos),
                "{input}"
            );
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("10", "missing unit"),
            ("10x", "unknown unit"),
            ("10 s", "unknown unit"),
            ("-1s", "must not be negative"),
            (".5s", "missing digits"),
            ("5.s", "missing digits"),
            ("1.2.3s", "more than one decimal point"),
            ("1.5ns", "more precise than a nanosecond"),
            ("99999999999999999999s", "number too large"),
            ("6000000h", "number too large"),
            ("ms", "missing digits"),
        ];
        for (input, reason) in cases {
            let err = parse_duration(input).unwrap_err();
            assert_eq!(err.reason, *reason, "{input}");
            assert!(err.to_string().contains(&format!("`{input}`")), "{err}");
        }
    }

    #[test]
    fn durations_display_in_their_shortest_exact_unit() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500_000_000, "1500ms"),
            (60_000_000_000, "1m"),
            (7, "7ns"),
        ] {
            let duration = ConfigDuration::from_nanos(nanos);
            assert_eq!(duration.to_string(), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
        assert_eq!(ConfigDuration::from_secs(2).as_millis_u32(), 2000);
    }
}
