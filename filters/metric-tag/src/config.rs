//! The metric-tag configuration: strict JSON (`Raw*`, serde derive with the core's conventions,
//! see `meshward_core::config`) validated into [`Config`]; every error names its JSON path
//! (`tags[1].source.name`, `metrics[0].tags[2]`). With the `schema` feature, [`schema`] is the
//! JSON Schema of the same types (`filters/metric-tag/config.schema.json`, `make schemas`).
//!
//! ```json
//! {"tags": [{"name": "variant", "source": {"type": "header", "name": "x-variant"},
//!            "allowedValues": ["a", "b"]},
//!           {"name": "status_class", "source": {"type": "statusClass"}}],
//!  "metrics": [{"name": "app_requests_total", "type": "counter", "tags": ["variant", "status_class"]},
//!              {"name": "app_request_duration_ms", "type": "histogram", "value": "durationMs",
//!               "tags": ["status_class"]}],
//!  "properties": true}
//! ```

use meshward_core::config::InvalidConfig;
use meshward_core::metrics::{MAX_TAG_VALUE_LEN, sanitize_tag_value};
use serde::Deserialize;

/// Most tags in one configuration.
pub const MAX_TAGS: usize = 16;
/// Most metrics in one configuration.
pub const MAX_METRICS: usize = 16;
/// Most tags on one metric.
pub const MAX_TAGS_PER_METRIC: usize = 6;
/// Largest `maxValues` (distinct admitted values of an open tag, per proxy).
pub const MAX_VALUES_LIMIT: u32 = 1000;
/// Default `maxValues`.
pub const DEFAULT_MAX_VALUES: u32 = 50;
/// Default (and largest) `maxLength`: the core's tag value cap.
pub const DEFAULT_MAX_LENGTH: u32 = MAX_TAG_VALUE_LEN as u32;
/// Most series one metric may have: the product of its tags' value counts (each tag: its
/// values plus `other` and the default) must not exceed this.
pub const MAX_SERIES_PER_METRIC: usize = 4096;
/// Longest metric or tag name.
pub const MAX_NAME_LEN: usize = 100;
/// The value of a tag whose raw value is not allowed, unsafe, too long, or over the cap.
pub const OTHER: &str = "other";
/// Default `default` (the value when the source has nothing).
pub const DEFAULT_DEFAULT: &str = "unknown";
/// Most path templates of one tag.
pub const MAX_TEMPLATES: usize = 256;

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "MetricTagConfig")
)]
pub struct RawConfig {
    /// The tags (dimensions), each from one source, with bounded values.
    pub tags: Option<Vec<RawTag>>,
    /// The metrics, each with a list of tag names.
    pub metrics: Option<Vec<RawMetric>>,
    /// Also publish each tag's value as filter state `wasm.meshward_tag_<name>` (for Istio
    /// Telemetry `tagOverrides` and access logs). Default false.
    pub properties: Option<bool>,
}

/// One tag.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Tag")
)]
pub struct RawTag {
    /// Label name: `[a-z_][a-z0-9_]*`, at most 100 characters.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z_][a-z0-9_]*$")))]
    pub name: String,
    /// Where the value comes from.
    pub source: RawSource,
    /// The only raw values kept (each exported sanitized); anything else is `other`.
    pub allowed_values: Option<Vec<String>>,
    /// Without `allowedValues`: most distinct values per proxy (first come, first admitted);
    /// later ones are `other`. Default 50, at most 1000.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub max_values: Option<u32>,
    /// Longest value kept; longer values are `other`. Default and maximum 64.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 64)))]
    pub max_length: Option<u32>,
    /// The value when the source has none (header absent, no template matched). Default
    /// `unknown`.
    pub default: Option<String>,
}

/// A tag's source, by `type`; each type takes only its own fields.
// One flat object checked in `source()` rather than a serde-tagged enum: a tagged enum is
// buffered before it is read, and its errors would lose their path.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Source")
)]
pub struct RawSource {
    /// `method`, `status`, `statusClass`, `routeName`, `clusterName`, `header`, `query`,
    /// `pathTemplate`, `property` or `constant`.
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// With `header` and `query` (required): the header (case-insensitive) or query parameter.
    pub name: Option<String>,
    /// With `pathTemplate` (required): templates such as `/users/{id}` (`{x}` matches one
    /// non-empty segment), tried in order against the path without query.
    pub templates: Option<Vec<String>>,
    /// With `property` (required): the property path segments, e.g. `["wasm_ab_variant"]` or
    /// `["filter_state", "wasm.x"]`.
    pub path: Option<Vec<String>>,
    /// With `constant` (required): the value.
    pub value: Option<String>,
}

/// `tags[].source.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SourceType {
    /// `:method`.
    Method,
    /// `response.code` (e.g. `200`; absent: the default).
    Status,
    /// `response.code` as `1xx`..`5xx`, with `429` apart.
    #[serde(alias = "status_class")]
    StatusClass,
    /// `xds.route_name`.
    #[serde(alias = "route_name")]
    RouteName,
    /// `xds.cluster_name`.
    #[serde(alias = "cluster_name")]
    ClusterName,
    /// A request header.
    Header,
    /// A query parameter (first occurrence, raw).
    Query,
    /// The first matching path template.
    #[serde(alias = "path_template")]
    PathTemplate,
    /// A property (e.g. filter state set by an earlier filter), read at the end of the stream.
    Property,
    /// A fixed value.
    Constant,
}

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum MetricValue {
    /// One per request (counters only).
    Requests,
    /// `request.duration` in milliseconds (from request headers to the end of the response).
    #[serde(alias = "duration_ms")]
    DurationMs,
    /// `request.total_size` (headers and body) in bytes.
    #[serde(alias = "request_bytes")]
    RequestBytes,
    /// `response.total_size` (headers, body and trailers) in bytes.
    #[serde(alias = "response_bytes")]
    ResponseBytes,
}

/// `metrics[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum MetricType {
    /// A counter (`requests`, or the sum of the value).
    Counter,
    /// A histogram of the value (Envoy's buckets are bootstrap-wide `histogram_bucket_settings`).
    Histogram,
}

/// One metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Metric")
)]
pub struct RawMetric {
    /// Metric name: `[a-z_][a-z0-9_]*`, at most 100 characters (exported as is, tags as labels).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z_][a-z0-9_]*$")))]
    pub name: String,
    /// `counter` or `histogram`.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// What is counted or recorded; default `requests` for counters, `durationMs` for histograms.
    pub value: Option<MetricValue>,
    /// Names of configured tags (at most 6), in label order.
    pub tags: Option<Vec<String>>,
}

meshward_core::object_only!(RawConfig, RawTag, RawSource, RawMetric);

/// The JSON Schema of the configuration (draft 2020-12), as committed in
/// `filters/metric-tag/config.schema.json`.
#[cfg(feature = "schema")]
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert(
        "$id".to_owned(),
        "https://meshward.invalid/schemas/metric-tag/config.schema.json".into(),
    );
    schema.to_value()
}

// === validated ===

/// A compiled path template: literal segments and `{x}` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// `None`: any one non-empty segment.
    pub segments: Vec<Option<String>>,
}

impl PathTemplate {
    /// Whether `path` (without query) matches segment by segment.
    pub fn matches(&self, path: &[u8]) -> bool {
        let path = path.strip_prefix(b"/").unwrap_or(path);
        let mut parts = path.split(|b| *b == b'/');
        for segment in &self.segments {
            match (parts.next(), segment) {
                (Some(part), None) if !part.is_empty() => {}
                (Some(part), Some(literal)) if part == literal.as_bytes() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// A validated source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `:method`.
    Method,
    /// `response.code`.
    Status,
    /// `response.code` class.
    StatusClass,
    /// `xds.route_name`.
    RouteName,
    /// `xds.cluster_name`.
    ClusterName,
    /// Lower-case request header name.
    Header(String),
    /// Query parameter name.
    Query(String),
    /// Templates (the value of a match is the template, sanitized).
    PathTemplate(Vec<PathTemplate>),
    /// Property path segments.
    Property(Vec<String>),
    /// A fixed value.
    Constant,
}

impl Source {
    /// Whether the value is known at request headers (else read at the end of the stream).
    pub const fn on_request(&self) -> bool {
        matches!(
            self,
            Self::Method | Self::Header(_) | Self::Query(_) | Self::PathTemplate(_)
        )
    }
}

/// Which raw values a tag keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// A closed set known at configure time: `(raw, label)` pairs; anything else is `other`.
    Closed(Vec<(Vec<u8>, String)>),
    /// Open: safe values admitted first come first served up to the cap, per proxy.
    Capped(usize),
}

/// A validated tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Label name.
    pub name: String,
    /// Source.
    pub source: Source,
    /// Value set.
    pub values: Values,
    /// Longest raw value kept.
    pub max_length: usize,
    /// Label when the source has nothing.
    pub default: String,
}

impl Tag {
    /// Number of distinct labels at most: default, `other`, and the values.
    pub fn domain(&self) -> usize {
        2 + match &self.values {
            Values::Closed(values) => values.len(),
            Values::Capped(cap) => *cap,
        }
    }
}

/// A validated metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Base name.
    pub name: String,
    /// Counter or histogram.
    pub kind: MetricType,
    /// What it measures.
    pub value: MetricValue,
    /// Indices into [`Config::tags`], in label order.
    pub tags: Vec<usize>,
    /// Product of the tags' domains (the most series the metric can have).
    pub series: usize,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Tags.
    pub tags: Vec<Tag>,
    /// Metrics.
    pub metrics: Vec<Metric>,
    /// Publish `wasm.meshward_tag_<name>`.
    pub properties: bool,
}

/// Whether `raw` is kept unchanged as a label value: `[A-Za-z0-9_-]`, non-empty, at most
/// `max_length` bytes — exactly the values the core's sanitizer leaves alone, so distinct raw
/// values stay distinct labels.
pub fn is_safe_value(raw: &[u8], max_length: usize) -> bool {
    !raw.is_empty()
        && raw.len() <= max_length
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

fn check_name(path: &str, name: &str) -> Result<(), InvalidConfig> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(InvalidConfig::at(
            path,
            "must match [a-z_][a-z0-9_]* and be at most 100 characters",
        ));
    }
    Ok(())
}

fn required<T>(value: Option<T>, field: &str, kind: &str) -> Result<T, InvalidConfig> {
    value.ok_or_else(|| InvalidConfig::at(field, format!("required with type {kind}")))
}

fn compile_template(template: &str) -> Result<PathTemplate, String> {
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| "must start with /".to_owned())?;
    let segments = rest
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                let inner = segment
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .filter(|s| !s.is_empty() && !s.contains(['{', '}']));
                inner
                    .map(|_| None)
                    .ok_or_else(|| format!("bad wildcard segment `{segment}` (use {{name}})"))
            } else if segment.contains(['{', '}', '?', '#']) {
                Err(format!("bad segment `{segment}`"))
            } else {
                Ok(Some(segment.to_owned()))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PathTemplate { segments })
}

/// Checks that no two labels of a closed set (plus `other` and the default) are the same.
fn check_distinct(labels: &[(String, String)], default: &str) -> Result<(), InvalidConfig> {
    for (i, (path, label)) in labels.iter().enumerate() {
        if label == OTHER || label == default {
            return Err(InvalidConfig::at(
                path.as_str(),
                format!("becomes label `{label}`, which is reserved for other/default values"),
            ));
        }
        if let Some((earlier, _)) = labels.iter().take(i).find(|(_, l)| l == label) {
            return Err(InvalidConfig::at(
                path.as_str(),
                format!("becomes label `{label}`, like {earlier}: values must stay distinct"),
            ));
        }
    }
    Ok(())
}

fn tag(raw: RawTag) -> Result<Tag, InvalidConfig> {
    check_name("name", &raw.name)?;
    let max_length = raw.max_length.unwrap_or(DEFAULT_MAX_LENGTH);
    if !(1..=DEFAULT_MAX_LENGTH).contains(&max_length) {
        return Err(InvalidConfig::at("maxLength", "must be between 1 and 64"));
    }
    let max_length = max_length as usize;
    let default = raw.default.unwrap_or_else(|| DEFAULT_DEFAULT.to_owned());
    if !is_safe_value(default.as_bytes(), max_length) || default == OTHER {
        return Err(InvalidConfig::at(
            "default",
            "must be 1..maxLength characters of [A-Za-z0-9_-] and not `other`",
        ));
    }
    let src = raw.source;
    let kind = src.kind;
    let allow_only = |field: &str, present: bool, wanted: bool| {
        if present && !wanted {
            Err(InvalidConfig::at(
                format!("source.{field}"),
                format!("not used by type {kind:?}"),
            ))
        } else {
            Ok(())
        }
    };
    allow_only(
        "name",
        src.name.is_some(),
        matches!(kind, SourceType::Header | SourceType::Query),
    )?;
    allow_only(
        "templates",
        src.templates.is_some(),
        kind == SourceType::PathTemplate,
    )?;
    allow_only("path", src.path.is_some(), kind == SourceType::Property)?;
    allow_only("value", src.value.is_some(), kind == SourceType::Constant)?;
    let mut closed: Option<Vec<(Vec<u8>, String)>> = None;
    let source = match kind {
        SourceType::Method => Source::Method,
        SourceType::Status => Source::Status,
        SourceType::StatusClass => {
            closed = Some(
                STATUS_CLASSES
                    .iter()
                    .map(|c| (c.as_bytes().to_vec(), (*c).to_owned()))
                    .collect(),
            );
            Source::StatusClass
        }
        SourceType::RouteName => Source::RouteName,
        SourceType::ClusterName => Source::ClusterName,
        SourceType::Header => {
            let name = required(src.name, "source.name", "header")?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(InvalidConfig::at("source.name", "not a header name"));
            }
            Source::Header(name.to_ascii_lowercase())
        }
        SourceType::Query => {
            let name = required(src.name, "source.name", "query")?;
            if name.is_empty() || name.contains(['&', '=', '#']) {
                return Err(InvalidConfig::at(
                    "source.name",
                    "not a query parameter name",
                ));
            }
            Source::Query(name)
        }
        SourceType::PathTemplate => {
            let templates = required(src.templates, "source.templates", "pathTemplate")?;
            if templates.is_empty() || templates.len() > MAX_TEMPLATES {
                return Err(InvalidConfig::at(
                    "source.templates",
                    "must list 1 to 256 templates",
                ));
            }
            let compiled = templates
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    compile_template(t).map_err(|reason| {
                        InvalidConfig::at(format!("source.templates[{i}]"), reason)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            closed = Some(
                templates
                    .iter()
                    .map(|t| (t.as_bytes().to_vec(), sanitize_tag_value(t)))
                    .collect(),
            );
            let labels: Vec<_> = templates
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("source.templates[{i}]"), sanitize_tag_value(t)))
                .collect();
            check_distinct(&labels, &default)?;
            Source::PathTemplate(compiled)
        }
        SourceType::Property => {
            let path = required(src.path, "source.path", "property")?;
            if path.is_empty() || path.iter().any(|s| s.is_empty() || s.contains('\0')) {
                return Err(InvalidConfig::at(
                    "source.path",
                    "must be non-empty segments without NUL",
                ));
            }
            Source::Property(path)
        }
        SourceType::Constant => {
            let value = required(src.value, "source.value", "constant")?;
            let label = sanitize_tag_value(&value);
            closed = Some(vec![(value.into_bytes(), label)]);
            Source::Constant
        }
    };
    let values = if let Some(allowed) = raw.allowed_values {
        if closed.is_some() {
            return Err(InvalidConfig::at(
                "allowedValues",
                "not used by a source with a fixed value set",
            ));
        }
        if allowed.is_empty() || allowed.len() > MAX_VALUES_LIMIT as usize {
            return Err(InvalidConfig::at(
                "allowedValues",
                "must list 1 to 1000 values",
            ));
        }
        let labels: Vec<_> = allowed
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("allowedValues[{i}]"), sanitize_tag_value(v)))
            .collect();
        check_distinct(&labels, &default)?;
        Values::Closed(
            allowed
                .into_iter()
                .zip(labels)
                .map(|(raw, (_, label))| (raw.into_bytes(), label))
                .collect(),
        )
    } else if let Some(closed) = closed {
        if raw.max_values.is_some() {
            return Err(InvalidConfig::at(
                "maxValues",
                "not used by a source with a fixed value set",
            ));
        }
        Values::Closed(closed)
    } else {
        let cap = raw.max_values.unwrap_or(DEFAULT_MAX_VALUES);
        if !(1..=MAX_VALUES_LIMIT).contains(&cap) {
            return Err(InvalidConfig::at("maxValues", "must be between 1 and 1000"));
        }
        Values::Capped(cap as usize)
    };
    Ok(Tag {
        name: raw.name,
        source,
        values,
        max_length,
        default,
    })
}

/// The labels of a status class tag.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "429", "5xx"];

fn metric(raw: RawMetric, tags: &[Tag]) -> Result<Metric, InvalidConfig> {
    check_name("name", &raw.name)?;
    let value = raw.value.unwrap_or(match raw.kind {
        MetricType::Counter => MetricValue::Requests,
        MetricType::Histogram => MetricValue::DurationMs,
    });
    if raw.kind == MetricType::Histogram && value == MetricValue::Requests {
        return Err(InvalidConfig::at(
            "value",
            "a histogram records durationMs, requestBytes or responseBytes",
        ));
    }
    let names = raw.tags.unwrap_or_default();
    if names.len() > MAX_TAGS_PER_METRIC {
        return Err(InvalidConfig::at("tags", "at most 6 tags per metric"));
    }
    let mut indices = Vec::with_capacity(names.len());
    let mut series = 1usize;
    for (i, name) in names.iter().enumerate() {
        let at = format!("tags[{i}]");
        let index = tags
            .iter()
            .position(|t| &t.name == name)
            .ok_or_else(|| InvalidConfig::at(at.as_str(), format!("unknown tag `{name}`")))?;
        if indices.contains(&index) {
            return Err(InvalidConfig::at(at, format!("tag `{name}` listed twice")));
        }
        indices.push(index);
        series = series.saturating_mul(tags.get(index).map_or(1, Tag::domain));
    }
    if series > MAX_SERIES_PER_METRIC {
        return Err(InvalidConfig::at(
            "tags",
            format!(
                "up to {series} series (product of each tag's values + other + default); at most \
                 {MAX_SERIES_PER_METRIC}: lower maxValues or use allowedValues"
            ),
        ));
    }
    Ok(Metric {
        name: raw.name,
        kind: raw.kind,
        value,
        tags: indices,
        series,
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = InvalidConfig;

    fn try_from(raw: RawConfig) -> Result<Self, InvalidConfig> {
        let raw_tags = raw.tags.unwrap_or_default();
        if raw_tags.len() > MAX_TAGS {
            return Err(InvalidConfig::at("tags", "at most 16 tags"));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(raw_tags.len());
        for (i, raw_tag) in raw_tags.into_iter().enumerate() {
            let at = format!("tags[{i}]");
            let tag = tag(raw_tag).map_err(|e| e.within(&at))?;
            if tags.iter().any(|t| t.name == tag.name) {
                return Err(InvalidConfig::at(
                    format!("{at}.name"),
                    format!("duplicate tag `{}`", tag.name),
                ));
            }
            tags.push(tag);
        }
        let raw_metrics = raw.metrics.unwrap_or_default();
        if raw_metrics.is_empty() || raw_metrics.len() > MAX_METRICS {
            return Err(InvalidConfig::at("metrics", "must list 1 to 16 metrics"));
        }
        let mut metrics: Vec<Metric> = Vec::with_capacity(raw_metrics.len());
        for (i, raw_metric) in raw_metrics.into_iter().enumerate() {
            let at = format!("metrics[{i}]");
            let metric = metric(raw_metric, &tags).map_err(|e| e.within(&at))?;
            if metrics.iter().any(|m| m.name == metric.name) {
                return Err(InvalidConfig::at(
                    format!("{at}.name"),
                    format!("duplicate metric `{}`", metric.name),
                ));
            }
            metrics.push(metric);
        }
        Ok(Self {
            tags,
            metrics,
            properties: raw.properties.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use meshward_core::config::parse_config;

    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        parse_config::<RawConfig, Config>(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn full_config_parses_with_defaults() {
        let config = parse(
            r#"{"tags": [
                 {"name": "variant", "source": {"type": "header", "name": "X-Variant"}, "allowedValues": ["a", "b.c"]},
                 {"name": "client", "source": {"type": "header", "name": "x-client"}, "maxValues": 10},
                 {"name": "class", "source": {"type": "status_class"}},
                 {"name": "route", "source": {"type": "pathTemplate", "templates": ["/users/{id}", "/health"]}},
                 {"name": "env", "source": {"type": "constant", "value": "prod"}}],
               "metrics": [
                 {"name": "app_requests_total", "type": "counter", "tags": ["variant", "class"]},
                 {"name": "app_duration_ms", "type": "histogram", "tags": ["client"]}],
               "properties": true}"#,
        )
        .unwrap();
        assert_eq!(config.tags[0].source, Source::Header("x-variant".into()));
        assert_eq!(
            config.tags[0].values,
            Values::Closed(vec![
                (b"a".to_vec(), "a".into()),
                (b"b.c".to_vec(), "b_c".into())
            ])
        );
        assert_eq!(config.tags[1].values, Values::Capped(10));
        assert_eq!(config.tags[1].default, "unknown");
        assert_eq!(config.metrics[0].tags, [0, 2]);
        assert_eq!(config.metrics[0].series, 4 * 8);
        assert_eq!(config.metrics[1].value, MetricValue::DurationMs);
        assert!(config.properties);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"metrics": []}"#, "metrics: must list 1 to 16 metrics"),
            (
                r#"{"metrics": [{"name": "a", "type": "counter", "tags": ["nope"]}]}"#,
                "metrics[0].tags[0]: unknown tag `nope`",
            ),
            (
                r#"{"metrics": [{"name": "A-b", "type": "counter"}]}"#,
                "metrics[0].name: must match [a-z_][a-z0-9_]* and be at most 100 characters",
            ),
            (
                r#"{"metrics": [{"name": "a", "type": "counter"}, {"name": "a", "type": "counter"}]}"#,
                "metrics[1].name: duplicate metric `a`",
            ),
            (
                r#"{"metrics": [{"name": "a", "type": "histogram", "value": "requests"}]}"#,
                "metrics[0].value: a histogram records durationMs, requestBytes or responseBytes",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "header"}}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].source.name: required with type header",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "method", "name": "x"}}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].source.name: not used by type Method",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "header", "name": "x"}, "allowedValues": ["a.b", "a_b"]}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].allowedValues[1]: becomes label `a_b`, like allowedValues[0]: values must stay distinct",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "header", "name": "x"}, "maxValues": 0}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].maxValues: must be between 1 and 1000",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "header", "name": "x"}, "maxLength": 65}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].maxLength: must be between 1 and 64",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "pathTemplate", "templates": ["users/{id}"]}}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].source.templates[0]: must start with /",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "cookie"}}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[0].source.type: unknown variant `cookie`",
            ),
            (
                r#"{"tags": [{"name": "t", "source": {"type": "method"}}, {"name": "t", "source": {"type": "status"}}], "metrics": [{"name": "a", "type": "counter"}]}"#,
                "tags[1].name: duplicate tag `t`",
            ),
            (
                r#"{"tags": [{"name": "a", "source": {"type": "header", "name": "a"}, "maxValues": 1000},
                             {"name": "b", "source": {"type": "header", "name": "b"}, "maxValues": 1000}],
                   "metrics": [{"name": "m", "type": "counter", "tags": ["a", "b"]}]}"#,
                "metrics[0].tags: up to 1004004 series",
            ),
            (
                r#"{"metrics": [{"name": "a", "type": "counter"}], "x": 1}"#,
                "x: unknown field `x`",
            ),
        ];
        for (json, expected) in cases {
            let error = parse(json).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{json}\n  got: {error}\n want: {expected}"
            );
        }
    }

    #[test]
    fn path_templates_match_segment_by_segment() {
        let t = compile_template("/users/{id}/orders").unwrap();
        assert!(t.matches(b"/users/42/orders"));
        assert!(!t.matches(b"/users//orders"));
        assert!(!t.matches(b"/users/42/orders/1"));
        assert!(!t.matches(b"/users/42"));
        assert!(compile_template("/").unwrap().matches(b"/"));
        assert!(compile_template("/a/{").is_err());
    }

    #[test]
    fn safe_values_are_exactly_those_the_sanitizer_keeps() {
        for raw in ["abc", "a-b_C9", "a.b", "", "ä", "a b"] {
            let safe = is_safe_value(raw.as_bytes(), 64);
            assert_eq!(
                safe,
                !raw.is_empty() && sanitize_tag_value(raw) == raw,
                "{raw}"
            );
        }
        assert!(!is_safe_value(&[b'a'; 65], 64));
    }
}
