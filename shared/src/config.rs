//! Plugin configuration in two steps: strict JSON into a `Raw` type (serde derive), then
//! validation into typed values — every error names the JSON path and the reason.
//!
//! ```
//! use meshward_core::config::{parse_config, ConfigDuration, InvalidConfig};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
//! struct RawConfig {
//!     max_length: Option<u32>,           // absent or `null`: the default, applied below
//!     timeout: ConfigDuration,           // required
//!     #[serde(alias = "retry_on")]       // an Envoy-mirroring field: both protobuf spellings
//!     retry_on: Option<Vec<String>>,
//! }
//! meshward_core::object_only!(RawConfig); // objects only, never `[5, "1s"]`
//!
//! struct Config { max_length: u32, timeout_ns: u64, retry_on: Vec<String> }
//!
//! impl TryFrom<RawConfig> for Config {
//!     type Error = InvalidConfig;
//!     fn try_from(raw: RawConfig) -> Result<Self, InvalidConfig> {
//!         let max_length = raw.max_length.unwrap_or(64);
//!         if !(1..=1024).contains(&max_length) {
//!             return Err(InvalidConfig::at("maxLength", "must be between 1 and 1024"));
//!         }
//!         let retry_on = raw.retry_on.unwrap_or_default();
//!         Ok(Config { max_length, timeout_ns: raw.timeout.as_nanos(), retry_on })
//!     }
//! }
//!
//! let parse = |json: &str| parse_config::<RawConfig, Config>(json.as_bytes());
//! let config = parse(r#"{"maxLength": null, "timeout": "1.5s", "retry_on": ["5xx"]}"#).unwrap();
//! assert_eq!((config.max_length, config.timeout_ns), (64, 1_500_000_000));
//! let err = parse(r#"{"maxLength": 0, "timeout": "1s"}"#).err().unwrap();
//! assert_eq!(err.to_string(), "maxLength: must be between 1 and 1024");
//! let err = parse(r#"{"maxLength": 5, "timeout": "1x"}"#).err().unwrap();
//! assert_eq!(err.path(), "timeout");
//! let err = parse(r#"{"timeout": "1s", "retryOn": [], "retry_on": []}"#).err().unwrap();
//! assert_eq!(err.to_string(), "retryOn: duplicate field `retryOn`");
//! ```
//!
//! Step one is `serde_json` driven through `serde_path_to_error`, so a syntax error, a wrong
//! type, an unknown, missing or duplicate field names its JSON path (`requestId.maxLength`,
//! `rules[2].match`) rather than a line and column, which mean nothing in an Istio
//! `pluginConfig` rendered from YAML. Step two is the filter's `TryFrom<Raw>`, whose
//! [`InvalidConfig`] errors carry paths too ([`InvalidConfig::at`], [`InvalidConfig::within`]).
//!
//! Conventions every `Raw` type follows (the tests of this module pin each one):
//! - `#[serde(deny_unknown_fields)]` on every struct, so a typo fails loudly. Use structs, not
//!   maps: serde derive rejects a field given twice, a map would keep the last value silently.
//! - `#[serde(remote = "Self")]` on every struct plus [`object_only!`](crate::object_only) for
//!   all of them: serde derive would also read a struct from an array of its field values.
//! - Every field that may be left out is an `Option` (sections too: `Option<RawSection>`), and
//!   `TryFrom` applies the default. So `null` counts as absent (YAML `key:` with no value renders
//!   as `null`), and the JSON Schema generated from the same types says so. A field that must
//!   keep a non-`Option` type uses [`null_as_default`] instead.
//! - Field names are lowerCamelCase (`#[serde(rename_all = "camelCase")]`). Where a filter
//!   mirrors an Envoy API, each field also takes the protobuf-JSON snake_case spelling with
//!   `#[serde(alias = "snake_case")]`, as Envoy does; giving both spellings is a duplicate field.
//! - Durations are [`ConfigDuration`] (`"250ms"`, protobuf's `"1.5s"`); fractions in `[0, 1]`
//!   are [`Fraction`].
//!
//! An empty (or all-whitespace) configuration is read as `{}`: Envoy delivers an absent
//! `configuration` as empty bytes, and a filter whose fields all have defaults should start.
//!
//! With the `schema` feature (host-side only), [`ConfigDuration`] and [`Fraction`] implement
//! `schemars::JsonSchema`, so a filter can derive a JSON Schema of its configuration.

use std::fmt;

use serde::Deserialize as _;
use serde::de::{self, DeserializeOwned, Deserializer, Unexpected, Visitor};

/// Largest configuration accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

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
/// [`ConfigError`] with the JSON path and reason for malformed JSON, a wrong type, an unknown,
/// missing or duplicate field, a bad duration, or whatever `Cfg::try_from` rejects.
pub fn parse_config<Raw, Cfg>(bytes: &[u8]) -> Result<Cfg, ConfigError>
where
    Raw: DeserializeOwned,
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
pub fn parse_raw<Raw: DeserializeOwned>(bytes: &[u8]) -> Result<Raw, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            "",
            format!("invalid json: larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = json_path(error.path());
        // serde_json reports a valid value of the wrong JSON type for an enum (`true` for
        // `"mode"`) as a syntax error ("expected value"): say what is wrong instead.
        if error.inner().is_syntax() && serde_json::from_slice::<de::IgnoredAny>(bytes).is_ok() {
            return ConfigError::new(path, "invalid value: not one of the accepted forms");
        }
        config_error(path, error.inner())
    })?;
    // Trailing characters after the document.
    deserializer
        .end()
        .map_err(|error| config_error(String::new(), &error))?;
    Ok(raw)
}

/// A deserializer that reads a struct from a JSON object only. serde derive also accepts a
/// struct written as an array of its field values in order (`"b3": [true, "multi"]`), a form
/// nobody means to write; [`object_only!`](crate::object_only) routes each `Raw` struct
/// through this.
#[derive(Debug)]
pub struct ObjectOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Implements `Deserialize` for `Raw` structs derived with `#[serde(remote = "Self")]` (which
/// turns serde's derive into an inherent `deserialize` function) so that each reads from a JSON
/// object only: see [`ObjectOnly`]. With the `schema` feature, give each such struct a
/// `#[schemars(rename = "…")]` (schemars would call them all `Self`).
///
/// ```
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize)]
/// #[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
/// struct RawB3 { read: Option<bool> }
///
/// meshward_core::object_only!(RawB3);
///
/// let parse = meshward_core::config::parse_raw::<RawB3>;
/// assert_eq!(parse(br#"{"read": true}"#).unwrap().read, Some(true));
/// assert_eq!(parse(b"[true]").unwrap_err().to_string(),
///            "(root): invalid type: array, expected an object");
/// ```
#[macro_export]
macro_rules! object_only {
    ($($raw:ty),+ $(,)?) => {$(
        impl<'de> ::serde::Deserialize<'de> for $raw {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <$raw>::deserialize($crate::config::ObjectOnly(deserializer))
            }
        }
    )+};
}

/// `#[serde(default, deserialize_with = "null_as_default")]`: for a `Raw` field that keeps a
/// non-`Option` type (say a public `Vec` other code builds directly), reads `null` as absent,
/// like an `Option` field. A derived JSON Schema still shows the field's own type (schemars
/// ignores `deserialize_with`): add `#[schemars(with = "Option<T>")]` where a schema is derived.
///
/// # Errors
///
/// Whatever `T`'s own deserialization reports.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: de::Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `requestId.aliases[1]` from serde_path_to_error's segments (which it would print as `.` for
/// the root).
fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            // A key that could not be read (a syntax error where a key belongs): the error is
            // the enclosing object's.
            Segment::Unknown => {}
        }
    }
    out
}

/// serde_json's error as a [`ConfigError`]: syntax errors keep their line and column (the only
/// way to find a stray comma), data errors drop them (the path says where), and serde's Rust
/// vocabulary is put in JSON terms.
fn config_error(mut path: String, error: &serde_json::Error) -> ConfigError {
    let text = error.to_string();
    if error.is_syntax() || error.is_eof() || error.is_io() {
        let text = text.replace("EOF", "end of input");
        return ConfigError::new(path, format!("invalid json: {text}"));
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    let mut reason = text.strip_suffix(&position).unwrap_or(&text).to_owned();
    // serde derive reports a field given twice once it has read both, at the enclosing object:
    // point at the field itself.
    if let Some(field) = reason
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path = join_path(&path, field);
    }
    for (rust, json) in [
        ("invalid type: map,", "invalid type: object,"),
        ("invalid type: sequence,", "invalid type: array,"),
        ("expected a sequence", "expected an array"),
        ("expected variant identifier", "expected a string"),
    ] {
        if reason.contains(rust) {
            reason = reason.replace(rust, json);
        }
    }
    // `expected struct RawRequestId` names a Rust type the user never wrote.
    if let Some(at) = reason.find("expected struct ") {
        reason.truncate(at);
        reason.push_str("expected an object");
    }
    ConfigError::new(path, reason)
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

impl<'de> de::Deserialize<'de> for ConfigDuration {
    /// A duration string (see [`parse_duration`]); the error names the input and what is wrong.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\" or \"1.5s\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                parse_duration(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ConfigDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h)\s*$",
            "description": "A duration: a number and a unit (ns, us, ms, s, m, h), e.g. \"250ms\", \"1.5s\"."
        })
    }
}

// === fractions ===

/// A number in `[0, 1]` (a ratio, a probability), kept as the exact decimal the user wrote.
///
/// JSON numbers arrive through serde_json as `f64`; the fraction is rebuilt from the shortest
/// decimal that rounds to that `f64`, which is what the user wrote for anything with up to 15
/// significant digits (`0.1` is exactly one tenth, not `0.1000000000000000055…`). Beyond that,
/// the value is the `f64`'s, a relative error below 10^-15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    numerator: u64,
    exponent: u32,
}

impl Fraction {
    /// Zero.
    pub const ZERO: Self = Self {
        numerator: 0,
        exponent: 0,
    };
    /// One.
    pub const ONE: Self = Self {
        numerator: 1,
        exponent: 0,
    };

    /// The fraction an `f64` in `[0, 1]` was written as; `None` outside `[0, 1]` or for NaN.
    pub fn from_f64(value: f64) -> Option<Self> {
        if !(0.0..=1.0).contains(&value) {
            return None;
        }
        // `{}` of an f64 is its shortest round-tripping decimal, never in exponent form.
        Self::parse(&value.to_string())
    }

    /// Parses decimal number text; `None` unless it is a number in `[0, 1]`. Digits beyond the
    /// 19th significant one are dropped (rounding toward zero).
    fn parse(text: &str) -> Option<Self> {
        let (mantissa, exp) = match text.find(['e', 'E']) {
            Some(at) => (text.get(..at)?, text.get(at + 1..)?.parse::<i32>().ok()?),
            None => (text, 0),
        };
        if mantissa.starts_with('-') {
            return mantissa
                .bytes()
                .all(|b| matches!(b, b'-' | b'0' | b'.'))
                .then_some(Self::ZERO);
        }
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut numerator: u64 = 0;
        let mut power: i64 = i64::from(exp);
        let mut significant = 0;
        for (i, digit) in whole.bytes().chain(fraction.bytes()).enumerate() {
            let digit = u64::from(digit.checked_sub(b'0').filter(|d| *d <= 9)?);
            let in_fraction = i >= whole.len();
            if significant >= 19 {
                // Too precise to matter; an integer digit still scales the value up.
                if !in_fraction {
                    power += 1;
                }
                continue;
            }
            if numerator > 0 || digit > 0 {
                significant += 1;
            }
            numerator = numerator * 10 + digit;
            if in_fraction {
                power -= 1;
            }
        }
        if numerator == 0 {
            return Some(Self::ZERO);
        }
        if power >= 0 {
            return (numerator == 1 && power == 0).then_some(Self::ONE);
        }
        let exponent = u32::try_from(-power).ok()?;
        if let Some(denominator) = 10u128.checked_pow(exponent)
            && u128::from(numerator) > denominator
        {
            return None;
        }
        Some(Self {
            numerator,
            exponent,
        })
    }

    /// `floor(self * space)`: e.g. a sampling threshold over `space` random values.
    pub fn scale(self, space: u64) -> u64 {
        let product = u128::from(self.numerator) * u128::from(space);
        match 10u128.checked_pow(self.exponent) {
            // product <= space when the fraction is <= 1, so the quotient fits.
            Some(denominator) => u64::try_from(product / denominator).unwrap_or(space),
            // A denominator above u128::MAX exceeds any product: the value rounds to zero.
            None => 0,
        }
    }
}

impl<'de> de::Deserialize<'de> for Fraction {
    /// A JSON number in `[0, 1]`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FractionVisitor;

        impl Visitor<'_> for FractionVisitor {
            type Value = Fraction;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number between 0 and 1")
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Fraction, E> {
                Fraction::from_f64(value)
                    .ok_or_else(|| E::invalid_value(Unexpected::Float(value), &self))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Fraction, E> {
                match value {
                    0 => Ok(Fraction::ZERO),
                    1 => Ok(Fraction::ONE),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(value), &self)),
                }
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Fraction, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(value), &self)),
                }
            }
        }

        deserializer.deserialize_f64(FractionVisitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Fraction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fraction".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "number", "minimum": 0, "maximum": 1})
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
    struct RawRequestId {
        header: String,
        max_length: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
    struct RawConfig {
        request_id: RawRequestId,
        timeout: Option<ConfigDuration>,
        rules: Option<Vec<RawRequestId>>,
        mode: Option<Mode>,
    }

    crate::object_only!(RawConfig, RawRequestId);

    #[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Mode {
        Fast,
        Safe,
    }

    #[derive(Debug)]
    struct Config {
        header: String,
        max_length: u32,
        timeout: ConfigDuration,
        rules: usize,
        mode: Mode,
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
                rules: raw.rules.unwrap_or_default().len(),
                mode: raw.mode.unwrap_or(Mode::Safe),
            })
        }
    }

    fn parse(json: &str) -> Result<Config, ConfigError> {
        parse_config::<RawConfig, Config>(json.as_bytes())
    }

    #[test]
    fn accepts_a_valid_config() {
        let cfg = parse(
            r#"{"requestId": {"header": "x-request-id", "maxLength": 36}, "timeout": "1.5s", "mode": "fast"}"#,
        )
        .unwrap();
        assert_eq!(cfg.header, "x-request-id");
        assert_eq!(cfg.max_length, 36);
        assert_eq!(cfg.rules, 0);
        assert_eq!(cfg.timeout.as_nanos(), 1_500_000_000);
        assert_eq!(cfg.mode, Mode::Fast);
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
                r#"{"requestId": {"header": "x"}, "timeout": 10}"#,
                "timeout",
                "invalid type: integer `10`, expected a duration string such as \"250ms\" or \"1.5s\"",
            ),
            (
                r#"{"requestId": {"header": 7}}"#,
                "requestId.header",
                "invalid type: integer `7`, expected a string",
            ),
            (
                r#"{"requestId": {"header": "x", "maxLength": -1}}"#,
                "requestId.maxLength",
                "invalid value: integer `-1`, expected u32",
            ),
            (
                r#"{"requestId": {"header": "x", "maxLength": 1.5}}"#,
                "requestId.maxLength",
                "invalid type: floating point `1.5`, expected u32",
            ),
            (
                r#"{"requestId": {"header": "x", "maxLength": 4294967296}}"#,
                "requestId.maxLength",
                "invalid value: integer `4294967296`, expected u32",
            ),
            (
                r#"{"requestId": {}}"#,
                "requestId",
                "missing field `header`",
            ),
            (
                r#"{"requestId": []}"#,
                "requestId",
                "invalid type: array, expected an object",
            ),
            (
                r#"{"requestId": {"header": "x"}, "rules": {}}"#,
                "rules",
                "invalid type: object, expected an array",
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
            (
                r#"{"requestId": {"header": "x"}, "mode": "slow"}"#,
                "mode",
                "unknown variant `slow`, expected `fast` or `safe`",
            ),
            (
                r#"{"requestId": {"header": "x"}, "mode": true}"#,
                "mode",
                "invalid value: not one of the accepted forms",
            ),
            (
                r#"{"requestId": {"header": "x"}, "requestId": {"header": "y"}}"#,
                "requestId",
                "duplicate field `requestId`",
            ),
            (
                r#"{"requestId": {"header": "x", "header": "y"}}"#,
                "requestId.header",
                "duplicate field `header`",
            ),
            ("[]", "", "invalid type: array, expected an object"),
            (
                r#"{"requestId": ["x", 3]}"#,
                "requestId",
                "invalid type: array, expected an object",
            ),
            ("null", "", "invalid type: null, expected an object"),
            (
                r#"{"requestId": {"header": "x"},}"#,
                "",
                "invalid json: trailing comma at line 1 column 31",
            ),
            (
                r#"{"requestId": {"header": "x"}} trailing"#,
                "",
                "invalid json: trailing characters at line 1 column 32",
            ),
            // A cut-off document names the section it was cut off in.
            (
                r#"{"requestId": {"header": "x", "maxLength": "#,
                "requestId.maxLength",
                "invalid json: end of input while parsing a value at line 1 column 43",
            ),
            (
                r#"{"requestId": "#,
                "requestId",
                "invalid json: end of input",
            ),
            ("", "", "missing field `requestId`"),
            (" \n\t", "", "missing field `requestId`"),
        ];
        let mut wrong = Vec::new();
        for (json, path, reason) in cases {
            match parse(json) {
                Ok(cfg) => wrong.push(format!("{json}: accepted as {cfg:?}")),
                Err(err) => {
                    let good_reason = err.reason().starts_with(reason)
                        && (reason.starts_with("invalid json") || !err.reason().contains(" line "));
                    if err.path() != *path || !good_reason {
                        wrong.push(format!("{json}:\n  want {path}: {reason}\n  got  {err}"));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn null_counts_as_absent() {
        let cfg = parse(
            r#"{"requestId": {"header": "x", "maxLength": null}, "timeout": null, "rules": null, "mode": null}"#,
        )
        .unwrap();
        assert_eq!(cfg.max_length, 64);
        assert_eq!(cfg.timeout, ConfigDuration::from_millis(250));
        assert_eq!(cfg.rules, 0);
        assert_eq!(cfg.mode, Mode::Safe);
        // A required field is still required.
        let err = parse(r#"{"requestId": {"header": null}}"#).unwrap_err();
        assert_eq!(err.path(), "requestId.header");
    }

    #[test]
    fn null_as_default_reads_null_as_absent() {
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default, deserialize_with = "null_as_default")]
            hosts: Vec<String>,
            #[serde(default, deserialize_with = "null_as_default")]
            strict: bool,
        }
        let empty = Raw {
            hosts: Vec::new(),
            strict: false,
        };
        assert_eq!(parse_raw::<Raw>(b"{}"), Ok(empty));
        let nulls = parse_raw::<Raw>(br#"{"hosts": null, "strict": null}"#).unwrap();
        assert_eq!(nulls.hosts, Vec::<String>::new());
        let set = parse_raw::<Raw>(br#"{"hosts": ["a"], "strict": true}"#).unwrap();
        assert_eq!((set.hosts, set.strict), (vec!["a".to_owned()], true));
        let err = parse_raw::<Raw>(br#"{"hosts": [null]}"#).unwrap_err();
        assert_eq!(err.path(), "hosts[0]");
        let err = parse_raw::<Raw>(br#"{"strict": true, "strict": null}"#).unwrap_err();
        assert_eq!(err.to_string(), "strict: duplicate field `strict`");
    }

    #[test]
    fn empty_config_reads_as_an_empty_object() {
        #[derive(Debug, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AllOptional {
            limit: Option<u32>,
        }
        for empty in ["", " ", "\n\t\r ", "{}", " {} "] {
            assert_eq!(
                parse_raw::<AllOptional>(empty.as_bytes()),
                Ok(AllOptional::default()),
                "{empty:?}"
            );
        }
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        let err = parse_raw::<AllOptional>(&big).unwrap_err();
        assert!(err.reason().contains("larger than"), "{err}");
    }

    /// The convention for configs that mirror an Envoy API: Envoy's protobuf JSON accepts both
    /// lowerCamelCase and the proto's snake_case names.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct RawRetryPolicy {
        #[serde(alias = "retry_on")]
        retry_on: Option<String>,
        #[serde(alias = "per_try_timeout")]
        per_try_timeout: Option<ConfigDuration>,
        #[serde(alias = "num_retries")]
        num_retries: Option<u32>,
    }

    #[test]
    fn envoy_fields_take_both_protobuf_json_spellings() {
        let camel = parse_raw::<RawRetryPolicy>(
            br#"{"retryOn": "5xx", "perTryTimeout": "0.250s", "numRetries": 2}"#,
        )
        .unwrap();
        let snake = parse_raw::<RawRetryPolicy>(
            br#"{"retry_on": "5xx", "per_try_timeout": "0.250s", "num_retries": 2}"#,
        )
        .unwrap();
        let mixed = parse_raw::<RawRetryPolicy>(
            br#"{"retryOn": "5xx", "per_try_timeout": "0.250s", "numRetries": 2}"#,
        )
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(camel, mixed);
        assert_eq!(
            camel.per_try_timeout,
            Some(ConfigDuration::from_millis(250))
        );

        let err =
            parse_raw::<RawRetryPolicy>(br#"{"perTryTimeout": "1s", "per_try_timeout": "2s"}"#)
                .unwrap_err();
        assert_eq!(err.path(), "perTryTimeout");
        assert_eq!(err.reason(), "duplicate field `perTryTimeout`");
        // Any other spelling is a typo.
        let err = parse_raw::<RawRetryPolicy>(br#"{"PerTryTimeout": "1s"}"#).unwrap_err();
        assert_eq!(err.path(), "PerTryTimeout");
        assert!(
            err.reason().starts_with("unknown field `PerTryTimeout`"),
            "{err}"
        );
    }

    #[test]
    fn config_error_display_joins_path_and_reason() {
        let err = parse(r#"{"requestId": {"header": "x"}, "timeout": "-1s"}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("timeout: invalid duration `-1s`: must not be negative"),
            "{err}"
        );
        let err = ConfigError::from(InvalidConfig::root("no rules"));
        assert_eq!(err.to_string(), "(root): no rules");
    }

    #[test]
    fn protobuf_json_durations_are_read() {
        for (json, nanos) in [
            (r#""1.5s""#, 1_500_000_000),
            (r#""0.000000001s""#, 1),
            (r#""3600s""#, 3_600_000_000_000),
            (r#""250ms""#, 250_000_000),
        ] {
            let duration = parse_raw::<ConfigDuration>(json.as_bytes()).unwrap();
            assert_eq!(duration.as_nanos(), nanos, "{json}");
        }
    }

    #[test]
    fn fractions_are_exact_and_bounded() {
        let scaled = |text: &str| parse_raw::<Fraction>(text.as_bytes()).map(|f| f.scale(1 << 56));
        for (text, expected) in [
            ("0", 0),
            ("0.0", 0),
            ("-0", 0),
            ("-0.0", 0),
            ("1", 1 << 56),
            ("1.0", 1 << 56),
            ("10e-1", 1 << 56),
            ("0.5", 1 << 55),
            ("5e-1", 1 << 55),
            ("0.25", 1 << 54),
            ("25E-2", 1 << 54),
            ("0.1", (1u64 << 56) / 10),
            ("0.3", (1u64 << 56) * 3 / 10),
            ("1e-05", (1u64 << 56) / 100_000),
            ("0.00001", (1u64 << 56) / 100_000),
            ("0.123456789012345", 8_895_999_183_877_678),
            ("1e-400", 0),
            ("0.99999999999999999999999", 1 << 56),
        ] {
            assert_eq!(scaled(text), Ok(expected), "{text}");
        }
        for text in [
            "1.5",
            "2",
            "1e1",
            "1.0000000001",
            "-0.5",
            "-1",
            "11e-1",
            "\"0.5\"",
        ] {
            let err = scaled(text).unwrap_err();
            assert!(
                err.reason().ends_with("expected a number between 0 and 1"),
                "{text}: {err}"
            );
        }
        assert_eq!(Fraction::ONE.scale(u64::MAX), u64::MAX);
        assert_eq!(Fraction::ZERO.scale(u64::MAX), 0);
        assert_eq!(Fraction::from_f64(f64::NAN), None);
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
    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Arbitrary bytes never panic the reader; they parse or fail with a reason.
            #[test]
            fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let Err(err) = parse_raw::<RawConfig>(&bytes) {
                    prop_assert!(!err.reason().is_empty());
                }
            }

            /// JSON-looking text built from JSON tokens never panics either.
            #[test]
            fn token_soup_never_panics(tokens in proptest::collection::vec(
                prop::sample::select(vec!["{", "}", "[", "]", ",", ":", "\"requestId\"", "\"header\"",
                    "\"rules\"", "1", "-0.5e+3", "null", "true", " "]), 0..64)) {
                let text: String = tokens.concat();
                let _ = parse(&text);
            }

            /// Any f64 in [0, 1] scales to within one unit of the float computation.
            #[test]
            fn fractions_match_floats(value in 0.0f64..=1.0) {
                let fraction = Fraction::from_f64(value).unwrap();
                let space = 1u64 << 40;
                let exact = fraction.scale(space) as f64;
                prop_assert!((exact - value * space as f64).abs() <= 1.0, "{}", value);
            }
        }
    }
}
