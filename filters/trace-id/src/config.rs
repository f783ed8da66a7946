//! Plugin configuration: `RawConfig` (serde, exactly the JSON users write) → validated `Config`.
//!
//! Every object denies unknown fields so a typo in an Istio `pluginConfig` fails loudly; every
//! validation error names the JSON path of the offending field.

use meshward_core::json::{Field, Fraction, FromJson};

use crate::request_id::{Cidr, Validation};
use crate::tracestate::MIN_PROPAGATED_LEN;

/// Upper bound for `requestId.maxLength`: ids longer than this are not ids.
pub const MAX_REQUEST_ID_LEN: usize = 1024;
/// Upper bound for `traceContext.tracestate.maxLength` (32 members of 512 characters).
pub const MAX_TRACESTATE_LEN: usize = 16 * 1024;

pub use meshward_core::config::{ConfigError, InvalidConfig};

// === raw (serde) ===

/// The JSON document as written.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    /// `requestId`.
    pub request_id: RawRequestId,
    /// `traceContext`.
    pub trace_context: RawTraceContext,
    /// `b3`.
    pub b3: RawB3,
    /// `response`.
    pub response: RawResponse,
    /// `properties`: set `meshward_request_id` / `meshward_trace_id` filter state.
    pub properties: Option<bool>,
    /// `failureMode`.
    pub failure_mode: FailureMode,
}

/// `requestId` section.
#[derive(Debug, Clone, Default)]
pub struct RawRequestId {
    /// Header carrying the id.
    pub header: Option<String>,
    /// Headers read when `header` is absent, and written with the same id.
    pub aliases: Vec<String>,
    /// What to do with a client-supplied id.
    pub policy: Policy,
    /// How a client-supplied id is validated.
    pub validation: RawValidation,
    /// Longest id kept.
    pub max_length: Option<usize>,
    /// Networks trusted by `keepIfTrusted`.
    pub trusted_cidrs: Vec<String>,
    /// Where a replaced (valid) client id is copied.
    pub original_id_header: Option<String>,
}

/// What to do with a client-supplied request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Keep it when it passes validation, otherwise replace it.
    #[default]
    KeepIfValid,
    /// Always replace it (edge proxies that trust no client).
    AlwaysReplace,
    /// Keep it only when valid and the direct peer's address is in `trustedCidrs`.
    KeepIfTrusted,
}

/// `requestId.validation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RawValidation {
    /// Safe characters, bounded length.
    #[default]
    Token,
    /// Also a canonical UUID.
    Uuid,
}

/// `traceContext` section.
#[derive(Debug, Clone, Default)]
pub struct RawTraceContext {
    /// How an incoming context is treated.
    pub mode: Mode,
    /// Sampled flag of traces this filter starts.
    pub sampling: Option<RawSampling>,
    /// `tracestate` limits.
    pub tracestate: RawTraceState,
}

/// `traceContext.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Act as a participant: keep a valid trace id, issue a new parent id (§3.4 "update parent-id").
    #[default]
    Hop,
    /// Keep a valid context unchanged (only normalized); use next to an Envoy tracer.
    Passthrough,
    /// Trust boundary: always start a new trace and drop `tracestate` (§3.4 "restart trace").
    Restart,
}

/// `traceContext.sampling`, tagged by `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSampling {
    /// `{"type": "fixed", "sampled": false}`.
    Fixed {
        /// The flag value.
        sampled: bool,
    },
    /// `{"type": "ratio", "ratio": 0.1}`: decided from the random part of the new trace id.
    Ratio {
        /// Fraction in `[0, 1]`, exact.
        ratio: Fraction,
    },
    /// `{"type": "inherit", "fallback": false}`: B3 sampling state or the (discarded) incoming
    /// `traceparent`'s sampled flag, else `fallback`.
    Inherit {
        /// Used when nothing can be inherited.
        fallback: bool,
    },
}

/// `traceContext.tracestate`.
#[derive(Debug, Clone, Default)]
pub struct RawTraceState {
    /// Longest propagated `tracestate` (characters), at least 512.
    pub max_length: Option<usize>,
}

/// `b3` section.
#[derive(Debug, Clone, Default)]
pub struct RawB3 {
    /// Read B3 headers when there is no `traceparent`.
    pub read: bool,
    /// Write B3 headers next to `traceparent`.
    pub write: B3Write,
}

/// `b3.write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum B3Write {
    /// Leave B3 headers alone.
    #[default]
    None,
    /// `b3: {trace}-{span}-{sampled}`; removes the multi headers.
    Single,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`; removes `b3`.
    Multi,
}

/// `response` section.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// Echo the request id in the response.
    pub echo_request_id: Option<bool>,
    /// Send the forwarded context as a `traceresponse` header.
    pub traceresponse: bool,
    /// Append `server-timing: traceparent;desc="…"`.
    pub server_timing: bool,
}

/// What to do when the proxy fails a hostcall the filter needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Let the request through untouched (an id is never worth an outage).
    #[default]
    Allow,
    /// Reply 500.
    Deny,
}

impl FromJson for RawConfig {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        let mut object = field.object()?;
        let raw = Self {
            request_id: object.or_default("requestId")?,
            trace_context: object.or_default("traceContext")?,
            b3: object.or_default("b3")?,
            response: object.or_default("response")?,
            properties: object.optional("properties")?,
            failure_mode: object.or_default("failureMode")?,
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for RawRequestId {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        let mut object = field.object()?;
        let raw = Self {
            header: object.optional("header")?,
            aliases: object.or_default("aliases")?,
            policy: object.or_default("policy")?,
            validation: object.or_default("validation")?,
            max_length: object.optional("maxLength")?,
            trusted_cidrs: object.or_default("trustedCidrs")?,
            original_id_header: object.optional("originalIdHeader")?,
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for Policy {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        field.variant(&[
            ("keepIfValid", Self::KeepIfValid),
            ("alwaysReplace", Self::AlwaysReplace),
            ("keepIfTrusted", Self::KeepIfTrusted),
        ])
    }
}

impl FromJson for RawValidation {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        field.variant(&[("token", Self::Token), ("uuid", Self::Uuid)])
    }
}

impl FromJson for RawTraceContext {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        let mut object = field.object()?;
        let raw = Self {
            mode: object.or_default("mode")?,
            sampling: object.optional("sampling")?,
            tracestate: object.or_default("tracestate")?,
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for Mode {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        field.variant(&[
            ("hop", Self::Hop),
            ("passthrough", Self::Passthrough),
            ("restart", Self::Restart),
        ])
    }
}

impl FromJson for RawSampling {
    /// Tagged by `type`; each type allows only its own fields.
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        #[derive(Clone, Copy)]
        enum Kind {
            Fixed,
            Ratio,
            Inherit,
        }
        let mut object = field.object()?;
        let kind = object.required("type")?.variant(&[
            ("fixed", Kind::Fixed),
            ("ratio", Kind::Ratio),
            ("inherit", Kind::Inherit),
        ])?;
        let raw = match kind {
            Kind::Fixed => Self::Fixed {
                sampled: object.required("sampled")?.parse()?,
            },
            Kind::Ratio => Self::Ratio {
                ratio: object.required("ratio")?.fraction()?,
            },
            Kind::Inherit => Self::Inherit {
                fallback: object.or_default("fallback")?,
            },
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for RawTraceState {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        let mut object = field.object()?;
        let raw = Self {
            max_length: object.optional("maxLength")?,
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for RawB3 {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        let mut object = field.object()?;
        let raw = Self {
            read: object.or_default("read")?,
            write: object.or_default("write")?,
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for B3Write {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        field.variant(&[
            ("none", Self::None),
            ("single", Self::Single),
            ("multi", Self::Multi),
        ])
    }
}

impl FromJson for RawResponse {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        let mut object = field.object()?;
        let raw = Self {
            echo_request_id: object.optional("echoRequestId")?,
            traceresponse: object.or_default("traceresponse")?,
            server_timing: object.or_default("serverTiming")?,
        };
        object.finish()?;
        Ok(raw)
    }
}

impl FromJson for FailureMode {
    fn from_json(field: Field<'_>) -> Result<Self, ConfigError> {
        field.variant(&[("allow", Self::Allow), ("deny", Self::Deny)])
    }
}

// === validated ===

/// Sampling of traces this filter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Always this flag.
    Fixed(bool),
    /// Sampled when the random low 56 bits of the trace id are below `threshold`.
    Ratio {
        /// `ratio * 2^56`, saturated.
        threshold: u64,
    },
    /// From B3 or the incoming flag, else the fallback.
    Inherit {
        /// Flag when nothing can be inherited.
        fallback: bool,
    },
}

/// Validated `requestId` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestIdConfig {
    /// Lower-case header name.
    pub header: String,
    /// Lower-case alias names.
    pub aliases: Vec<String>,
    /// Policy.
    pub policy: Policy,
    /// Validation mode.
    pub validation: Validation,
    /// Longest id kept.
    pub max_length: usize,
    /// Trusted networks (non-empty exactly when the policy is `KeepIfTrusted`).
    pub trusted_cidrs: Vec<Cidr>,
    /// Copy target for a replaced id.
    pub original_id_header: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Request id.
    pub request_id: RequestIdConfig,
    /// Trace context mode.
    pub mode: Mode,
    /// Sampling of new traces.
    pub sampling: Sampling,
    /// Longest propagated `tracestate`.
    pub tracestate_max_length: usize,
    /// Read B3.
    pub b3_read: bool,
    /// Write B3.
    pub b3_write: B3Write,
    /// Echo the request id in responses.
    pub echo_request_id: bool,
    /// Send `traceresponse`.
    pub traceresponse: bool,
    /// Send `server-timing`.
    pub server_timing: bool,
    /// Set filter-state properties.
    pub properties: bool,
    /// Hostcall failure policy.
    pub failure_mode: FailureMode,
}

impl Default for Config {
    fn default() -> Self {
        // The default raw config is valid by construction (checked by a test).
        Self::try_from(RawConfig::default()).unwrap_or_else(|_| Self {
            request_id: RequestIdConfig {
                header: "x-request-id".to_owned(),
                aliases: Vec::new(),
                policy: Policy::KeepIfValid,
                validation: Validation::Token,
                max_length: 128,
                trusted_cidrs: Vec::new(),
                original_id_header: None,
            },
            mode: Mode::Hop,
            sampling: Sampling::Fixed(false),
            tracestate_max_length: MIN_PROPAGATED_LEN,
            b3_read: false,
            b3_write: B3Write::None,
            echo_request_id: true,
            traceresponse: false,
            server_timing: false,
            properties: true,
            failure_mode: FailureMode::Allow,
        })
    }
}

/// Headers this filter owns for the trace context; a request-id header may not reuse them.
const RESERVED_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

fn header_name(path: &str, name: &str) -> Result<String, InvalidConfig> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(InvalidConfig::at(
            path,
            format!("`{name}` is not a valid http header name"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(InvalidConfig::at(
            path,
            format!("`{name}` is a trace context header"),
        ));
    }
    Ok(lower)
}

impl TryFrom<RawConfig> for Config {
    type Error = InvalidConfig;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let rid = raw.request_id;
        let header = header_name(
            "requestId.header",
            rid.header.as_deref().unwrap_or("x-request-id"),
        )?;
        let mut aliases: Vec<String> = Vec::with_capacity(rid.aliases.len());
        for (i, alias) in rid.aliases.iter().enumerate() {
            let path = format!("requestId.aliases[{i}]");
            let alias = header_name(&path, alias)?;
            if alias == header || aliases.contains(&alias) {
                return Err(InvalidConfig::at(
                    path,
                    format!("`{alias}` is listed twice"),
                ));
            }
            aliases.push(alias);
        }
        let original_id_header = match rid.original_id_header.as_deref() {
            None => None,
            Some(name) => {
                let name = header_name("requestId.originalIdHeader", name)?;
                if name == header || aliases.contains(&name) {
                    return Err(InvalidConfig::at(
                        "requestId.originalIdHeader",
                        format!("`{name}` is already the request id header or an alias"),
                    ));
                }
                Some(name)
            }
        };
        let validation = match rid.validation {
            RawValidation::Token => Validation::Token,
            RawValidation::Uuid => Validation::Uuid,
        };
        let min_len = if validation == Validation::Uuid {
            36
        } else {
            1
        };
        let max_length = rid.max_length.unwrap_or(128);
        if !(min_len..=MAX_REQUEST_ID_LEN).contains(&max_length) {
            return Err(InvalidConfig::at(
                "requestId.maxLength",
                format!("must be between {min_len} and {MAX_REQUEST_ID_LEN}, got {max_length}"),
            ));
        }
        let mut trusted_cidrs = Vec::with_capacity(rid.trusted_cidrs.len());
        for (i, cidr) in rid.trusted_cidrs.iter().enumerate() {
            let cidr = Cidr::try_new(cidr).map_err(|e| {
                InvalidConfig::at(format!("requestId.trustedCidrs[{i}]"), e.to_string())
            })?;
            trusted_cidrs.push(cidr);
        }
        match (rid.policy, trusted_cidrs.is_empty()) {
            (Policy::KeepIfTrusted, true) => {
                return Err(InvalidConfig::at(
                    "requestId.trustedCidrs",
                    "policy keepIfTrusted needs at least one cidr",
                ));
            }
            (Policy::KeepIfValid | Policy::AlwaysReplace, false) => {
                return Err(InvalidConfig::at(
                    "requestId.trustedCidrs",
                    "only used with policy keepIfTrusted",
                ));
            }
            _ => {}
        }

        let sampling = match raw
            .trace_context
            .sampling
            .unwrap_or(RawSampling::Fixed { sampled: false })
        {
            RawSampling::Fixed { sampled } => Sampling::Fixed(sampled),
            RawSampling::Ratio { ratio } => Sampling::Ratio {
                threshold: ratio.scale(1 << 56),
            },
            RawSampling::Inherit { fallback } => Sampling::Inherit { fallback },
        };
        let tracestate_max_length = raw
            .trace_context
            .tracestate
            .max_length
            .unwrap_or(MIN_PROPAGATED_LEN);
        if !(MIN_PROPAGATED_LEN..=MAX_TRACESTATE_LEN).contains(&tracestate_max_length) {
            return Err(InvalidConfig::at(
                "traceContext.tracestate.maxLength",
                format!(
                    "must be between {MIN_PROPAGATED_LEN} and {MAX_TRACESTATE_LEN}, got {tracestate_max_length}"
                ),
            ));
        }
        Ok(Self {
            request_id: RequestIdConfig {
                header,
                aliases,
                policy: rid.policy,
                validation,
                max_length,
                trusted_cidrs,
                original_id_header,
            },
            mode: raw.trace_context.mode,
            sampling,
            tracestate_max_length,
            b3_read: raw.b3.read,
            b3_write: raw.b3.write,
            echo_request_id: raw.response.echo_request_id.unwrap_or(true),
            traceresponse: raw.response.traceresponse,
            server_timing: raw.response.server_timing,
            properties: raw.properties.unwrap_or(true),
            failure_mode: raw.failure_mode,
        })
    }
}

/// Parses the plugin configuration bytes. Empty or whitespace-only input means all defaults.
///
/// # Errors
/// [`ConfigError`] with the JSON path of the first problem.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    meshward_core::config::parse_config::<RawConfig, Config>(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_means_defaults() {
        let cfg = parse(b"").unwrap();
        assert_eq!(cfg, parse(b"{}").unwrap());
        assert_eq!(cfg, Config::try_from(RawConfig::default()).unwrap());
        assert_eq!(cfg.request_id.header, "x-request-id");
        assert_eq!(cfg.request_id.max_length, 128);
        assert_eq!(cfg.mode, Mode::Hop);
        assert_eq!(cfg.sampling, Sampling::Fixed(false));
        assert_eq!(cfg.tracestate_max_length, 512);
        assert!(cfg.echo_request_id && cfg.properties);
        assert!(!cfg.b3_read && !cfg.traceresponse && !cfg.server_timing);
    }

    #[test]
    fn parses_a_full_config() {
        let cfg = parse(
            br#"{
              "requestId": {"header": "X-Request-Id", "aliases": ["x-correlation-id"], "policy": "keepIfTrusted",
                            "validation": "uuid", "maxLength": 64, "trustedCidrs": ["10.0.0.0/8"],
                            "originalIdHeader": "x-original-request-id"},
              "traceContext": {"mode": "restart", "sampling": {"type": "ratio", "ratio": 0.5},
                               "tracestate": {"maxLength": 1024}},
              "b3": {"read": true, "write": "multi"},
              "response": {"echoRequestId": false, "traceresponse": true, "serverTiming": true},
              "properties": false,
              "failureMode": "deny"
            }"#,
        )
        .unwrap();
        assert_eq!(cfg.request_id.header, "x-request-id");
        assert_eq!(cfg.request_id.aliases, ["x-correlation-id"]);
        assert_eq!(cfg.request_id.trusted_cidrs.len(), 1);
        assert_eq!(cfg.sampling, Sampling::Ratio { threshold: 1 << 55 });
        assert_eq!(cfg.mode, Mode::Restart);
        assert_eq!(cfg.b3_write, B3Write::Multi);
        assert_eq!(cfg.failure_mode, FailureMode::Deny);
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases: [(&str, &str); 14] = [
            (r#"[]"#, ""),
            (r#"{"requestid": {}}"#, "requestid"),
            (r#"{"requestId": {"hedaer": "x"}}"#, "requestId.hedaer"),
            (
                r#"{"requestId": {"header": "bad header"}}"#,
                "requestId.header",
            ),
            (
                r#"{"requestId": {"header": "traceparent"}}"#,
                "requestId.header",
            ),
            (
                r#"{"requestId": {"aliases": ["x-a", "X-A"]}}"#,
                "requestId.aliases[1]",
            ),
            (r#"{"requestId": {"maxLength": 0}}"#, "requestId.maxLength"),
            (
                r#"{"requestId": {"validation": "uuid", "maxLength": 20}}"#,
                "requestId.maxLength",
            ),
            (
                r#"{"requestId": {"policy": "keepIfTrusted"}}"#,
                "requestId.trustedCidrs",
            ),
            (
                r#"{"requestId": {"policy": "keepIfTrusted", "trustedCidrs": ["10.0.0.0/40"]}}"#,
                "requestId.trustedCidrs[0]",
            ),
            (
                r#"{"traceContext": {"sampling": {"type": "ratio", "ratio": 1.5}}}"#,
                "traceContext.sampling.ratio",
            ),
            (
                r#"{"traceContext": {"sampling": {"type": "fixed", "sampled": true, "x": 1}}}"#,
                "traceContext.sampling.x",
            ),
            (
                r#"{"traceContext": {"tracestate": {"maxLength": 100}}}"#,
                "traceContext.tracestate.maxLength",
            ),
            (r#"{"b3": {"write": "both"}}"#, "b3.write"),
        ];
        let mut wrong = Vec::new();
        for (json, path) in cases {
            let Err(err) = parse(json.as_bytes()) else {
                panic!("{json} was accepted")
            };
            if err.path() != path {
                wrong.push(format!("{json}: want {path}, got {err}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
        let dir = format!(
            "{}/../../tests/fixtures/trace-id/config/{kind}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .map(|path| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&path).unwrap(),
                )
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no fixtures in {dir}");
        files
    }

    #[test]
    fn valid_fixtures_parse() {
        for (name, bytes) in fixtures("valid") {
            assert!(parse(&bytes).is_ok(), "{name}: {:?}", parse(&bytes).err());
        }
    }

    #[test]
    fn invalid_fixtures_fail_at_the_path_in_their_name() {
        let mut wrong = Vec::new();
        for (name, bytes) in fixtures("invalid") {
            let (path, _) = name.split_once("--").unwrap();
            let path = if path == "_root" { "" } else { path };
            match parse(&bytes) {
                Ok(_) => wrong.push(format!("{name}: accepted")),
                Err(e) if e.path() != path => wrong.push(format!("{name}: {e}")),
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
