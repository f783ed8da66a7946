//! Metrics: tag-encoded names, bounded tag values, and metric ids defined once per VM.
//!
//! The proxy-wasm ABI has no labels, so tags are encoded in the name the Istio way,
//! `<tag1>=.=<v1>;.;<tag2>=.=<v2>;.;<base>`, and Envoy `stats_tags` regexes
//! `(<tag>=\.=(.*?);\.;)` (Istio `extraStatTags`) turn them back into labels:
//! `action=.=generated;.;meshward_trace_id_request_ids_total` is exported to Prometheus as
//! `meshward_trace_id_request_ids_total{action="generated"}`. [`stats_tags`] generates the
//! bootstrap entries from code so configs and docs cannot drift.
//!
//! Defining a metric takes a lock in Envoy, so each (name, tag values) pair is defined at most
//! once per VM and its id cached ([`Metrics`]). Cardinality is bounded twice: each tag keeps at
//! most `cap` distinct values (or only its declared values) and folds the rest into
//! [`OTHER`]; each family keeps at most [`MAX_SERIES_PER_FAMILY`] series. Values are sanitized to
//! `[A-Za-z0-9_-]` (other characters become `_`, so `a.b` and `a_b` share a series — tag values
//! should come from config-declared enumerations, never raw paths, IPs or user ids) and cut to
//! [`MAX_TAG_VALUE_LEN`] bytes. Caps are per worker VM: declare values up front
//! ([`TagSpec::with_values`]) when every worker must agree.
//!
//! Metrics are best effort: a failed metric call returns an error the filter may ignore, and
//! never affects the request.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host::{Host, HostError, HostResult, MetricKind};

/// The tag value that absorbs values beyond a tag's cap.
pub const OTHER: &str = "__other__";
/// The tag value used for an empty value.
pub const EMPTY: &str = "__empty__";
/// Longest tag value kept (longer values are cut).
pub const MAX_TAG_VALUE_LEN: usize = 64;
/// Series per metric family before every further tag combination maps to [`OTHER`].
pub const MAX_SERIES_PER_FAMILY: usize = 1024;
/// Default number of distinct values per tag.
pub const DEFAULT_TAG_CAP: usize = 32;

/// A metric definition that breaks the naming convention.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid metric `{name}`: {reason}")]
pub struct InvalidMetric {
    name: String,
    reason: &'static str,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Maps a raw value to `[A-Za-z0-9_-]`, at most [`MAX_TAG_VALUE_LEN`] bytes; empty → [`EMPTY`].
pub fn sanitize_tag_value(raw: &str) -> String {
    if raw.is_empty() {
        return EMPTY.to_owned();
    }
    raw.chars()
        .take(MAX_TAG_VALUE_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The tag-encoded metric name: `<t1>=.=<v1>;.;…;.;<base>` (values used as given).
pub fn tagged_name(base: &str, tags: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(
        base.len()
            + tags
                .iter()
                .map(|(t, v)| t.len() + v.len() + 6)
                .sum::<usize>(),
    );
    for (tag, value) in tags {
        name.push_str(tag);
        name.push_str("=.=");
        name.push_str(value);
        name.push_str(";.;");
    }
    name.push_str(base);
    name
}

/// One Envoy bootstrap `stats_config.stats_tags` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsTag {
    /// The Prometheus label name.
    pub tag_name: String,
    /// The extraction regex: the first group is cut from the name, the second is the value.
    pub regex: String,
}

/// The `stats_tags` entries that turn these tags into labels (Istio `extraStatTags` generates
/// the same regexes).
pub fn stats_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<StatsTag> {
    tags.into_iter()
        .map(|tag| StatsTag {
            tag_name: tag.to_owned(),
            regex: format!(r"({tag}=\.=(.*?);\.;)"),
        })
        .collect()
}

/// The `stats_tags` entries as a YAML list for an Envoy bootstrap `stats_config` (indented by
/// `indent` spaces).
pub fn stats_tags_yaml<'a>(tags: impl IntoIterator<Item = &'a str>, indent: usize) -> String {
    let pad = " ".repeat(indent);
    stats_tags(tags)
        .iter()
        .map(|t| {
            // Single-quoted YAML keeps backslashes literal.
            format!(
                "{pad}- tag_name: {}\n{pad}  regex: '{}'\n",
                t.tag_name, t.regex
            )
        })
        .collect()
}

/// A tag of a metric family and how its values are bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSpec {
    name: String,
    cap: usize,
    allowed: Option<Vec<String>>,
}

impl TagSpec {
    /// A tag keeping the first [`DEFAULT_TAG_CAP`] distinct values it sees (per VM).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            cap: DEFAULT_TAG_CAP,
            allowed: None,
        }
    }

    /// Keeps at most `cap` distinct values (at least 1).
    #[must_use]
    pub fn with_cap(mut self, cap: usize) -> Self {
        self.cap = cap.max(1);
        self
    }

    /// Accepts only these values (sanitized); anything else is [`OTHER`]. Identical in every VM.
    #[must_use]
    pub fn with_values<'a>(mut self, values: impl IntoIterator<Item = &'a str>) -> Self {
        let allowed: Vec<String> = values.into_iter().map(sanitize_tag_value).collect();
        self.cap = allowed.len().max(1);
        self.allowed = Some(allowed);
        self
    }

    /// The tag name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Bounded set of values seen for one tag.
#[derive(Debug, Clone)]
struct TagValues {
    spec: TagSpec,
    seen: Vec<String>,
}

impl TagValues {
    fn admit(&mut self, raw: &str) -> String {
        let value = sanitize_tag_value(raw);
        if let Some(allowed) = &self.spec.allowed {
            return if allowed.contains(&value) {
                value
            } else {
                OTHER.to_owned()
            };
        }
        if self.seen.contains(&value) {
            return value;
        }
        if self.seen.len() < self.spec.cap {
            self.seen.push(value.clone());
            return value;
        }
        OTHER.to_owned()
    }
}

#[derive(Debug, Clone)]
struct Family {
    base: String,
    kind: MetricKind,
    tags: Vec<TagValues>,
    ids: BTreeMap<Vec<String>, u32>,
}

/// A family registered in [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricHandle(usize);

/// A filter's metrics, built once in the root context at configure time and shared (e.g. in an
/// `Rc`) with its HTTP contexts.
#[derive(Debug)]
pub struct Metrics {
    prefix: String,
    families: RefCell<Vec<Family>>,
}

impl Metrics {
    /// Metrics of filter `filter` (e.g. `trace_id`): base names become
    /// `meshward_<filter>_<what>`.
    ///
    /// # Errors
    ///
    /// A filter name outside `[a-z0-9_]`.
    pub fn new(filter: &str) -> Result<Self, InvalidMetric> {
        if !is_name(filter) {
            return Err(InvalidMetric {
                name: filter.to_owned(),
                reason: "filter name must be lower-case letters, digits and underscores",
            });
        }
        Ok(Self {
            prefix: format!("meshward_{filter}_"),
            families: RefCell::new(Vec::new()),
        })
    }

    /// Registers a counter `meshward_<filter>_<what>` (by convention `what` ends in `_total`).
    ///
    /// # Errors
    ///
    /// A name or tag outside `[a-z0-9_]`, or a duplicate name.
    pub fn counter(&self, what: &str, tags: Vec<TagSpec>) -> Result<MetricHandle, InvalidMetric> {
        self.register(MetricKind::Counter, what, tags)
    }

    /// Registers a gauge `meshward_<filter>_<what>`.
    ///
    /// # Errors
    ///
    /// As [`counter`](Self::counter).
    pub fn gauge(&self, what: &str, tags: Vec<TagSpec>) -> Result<MetricHandle, InvalidMetric> {
        self.register(MetricKind::Gauge, what, tags)
    }

    /// Registers a histogram `meshward_<filter>_<what>`.
    ///
    /// # Errors
    ///
    /// As [`counter`](Self::counter).
    pub fn histogram(&self, what: &str, tags: Vec<TagSpec>) -> Result<MetricHandle, InvalidMetric> {
        self.register(MetricKind::Histogram, what, tags)
    }

    fn register(
        &self,
        kind: MetricKind,
        what: &str,
        tags: Vec<TagSpec>,
    ) -> Result<MetricHandle, InvalidMetric> {
        let base = format!("{}{what}", self.prefix);
        let fail = |reason| {
            Err(InvalidMetric {
                name: base.clone(),
                reason,
            })
        };
        if !is_name(what) {
            return fail("name must be lower-case letters, digits and underscores");
        }
        if let Some(tag) = tags.iter().find(|t| !is_name(&t.name)) {
            return Err(InvalidMetric {
                name: format!("{base} tag {}", tag.name),
                reason: "tag names must be lower-case letters, digits and underscores",
            });
        }
        let mut families = self.families.try_borrow_mut().map_err(|_| InvalidMetric {
            name: base.clone(),
            reason: "registry busy",
        })?;
        if families.iter().any(|f| f.base == base) {
            return fail("defined twice");
        }
        families.push(Family {
            base,
            kind,
            tags: tags
                .into_iter()
                .map(|spec| TagValues {
                    spec,
                    seen: Vec::new(),
                })
                .collect(),
            ids: BTreeMap::new(),
        });
        Ok(MetricHandle(families.len() - 1))
    }

    /// Every tag name used by any family, sorted and deduplicated (for [`stats_tags`]).
    pub fn tag_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .families
            .try_borrow()
            .map(|families| {
                families
                    .iter()
                    .flat_map(|f| f.tags.iter().map(|t| t.spec.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names
    }

    /// The full name a family gets for these tag values (after sanitizing and capping), e.g.
    /// for documentation; does not define anything.
    pub fn name_of(&self, handle: MetricHandle, tag_values: &[&str]) -> Option<String> {
        let mut families = self.families.try_borrow_mut().ok()?;
        let family = families.get_mut(handle.0)?;
        let values = admit(family, tag_values).ok()?;
        Some(full_name(family, &values))
    }

    /// Defines every family without tags now (at configure time), so they export as 0 before
    /// the first request.
    ///
    /// # Errors
    ///
    /// The first host error.
    pub fn define_untagged(&self, host: &(impl Host + ?Sized)) -> HostResult<()> {
        let count = self.families.try_borrow().map_or(0, |f| f.len());
        for index in 0..count {
            let untagged = self
                .families
                .try_borrow()
                .is_ok_and(|f| f.get(index).is_some_and(|family| family.tags.is_empty()));
            if untagged {
                self.id(host, MetricHandle(index), &[])?;
            }
        }
        Ok(())
    }

    /// Adds `n` to a counter (nothing happens for 0).
    ///
    /// # Errors
    ///
    /// [`HostError::BadArgument`] for a non-counter handle or the wrong number of tag values;
    /// otherwise the host's error.
    pub fn add(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        tag_values: &[&str],
        n: u64,
    ) -> HostResult<()> {
        self.expect_kind(handle, MetricKind::Counter)?;
        if n == 0 {
            return Ok(());
        }
        let id = self.id(host, handle, tag_values)?;
        host.increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// Adds 1 to a counter.
    ///
    /// # Errors
    ///
    /// As [`add`](Self::add).
    pub fn inc(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        tag_values: &[&str],
    ) -> HostResult<()> {
        self.add(host, handle, tag_values, 1)
    }

    /// Adds `delta` (possibly negative) to a gauge.
    ///
    /// # Errors
    ///
    /// [`HostError::BadArgument`] for a non-gauge handle or the wrong number of tag values;
    /// otherwise the host's error.
    pub fn gauge_add(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        tag_values: &[&str],
        delta: i64,
    ) -> HostResult<()> {
        self.expect_kind(handle, MetricKind::Gauge)?;
        if delta == 0 {
            return Ok(());
        }
        let id = self.id(host, handle, tag_values)?;
        host.increment_metric(id, delta)
    }

    /// Sets a gauge.
    ///
    /// # Errors
    ///
    /// As [`gauge_add`](Self::gauge_add).
    pub fn gauge_set(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        tag_values: &[&str],
        value: u64,
    ) -> HostResult<()> {
        self.record(host, handle, MetricKind::Gauge, tag_values, value)
    }

    /// Records a histogram sample.
    ///
    /// # Errors
    ///
    /// [`HostError::BadArgument`] for a non-histogram handle or the wrong number of tag values;
    /// otherwise the host's error.
    pub fn observe(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        tag_values: &[&str],
        value: u64,
    ) -> HostResult<()> {
        self.record(host, handle, MetricKind::Histogram, tag_values, value)
    }

    // Gauges and histograms share `proxy_record_metric`; only the kind check differs.
    fn record(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        kind: MetricKind,
        tag_values: &[&str],
        value: u64,
    ) -> HostResult<()> {
        self.expect_kind(handle, kind)?;
        let id = self.id(host, handle, tag_values)?;
        host.record_metric(id, value)
    }

    fn expect_kind(&self, handle: MetricHandle, kind: MetricKind) -> HostResult<()> {
        let families = self
            .families
            .try_borrow()
            .map_err(|_| HostError::InternalFailure)?;
        match families.get(handle.0) {
            Some(family) if family.kind == kind => Ok(()),
            _ => Err(HostError::BadArgument),
        }
    }

    /// The cached id for these tag values, defining the metric on first use.
    fn id(
        &self,
        host: &(impl Host + ?Sized),
        handle: MetricHandle,
        tag_values: &[&str],
    ) -> HostResult<u32> {
        // Never held across a hostcall that could re-enter: define_metric does not call back.
        let mut families = self
            .families
            .try_borrow_mut()
            .map_err(|_| HostError::InternalFailure)?;
        let family = families.get_mut(handle.0).ok_or(HostError::BadArgument)?;
        let mut values = admit(family, tag_values)?;
        if let Some(id) = family.ids.get(&values) {
            return Ok(*id);
        }
        if family.ids.len() >= MAX_SERIES_PER_FAMILY {
            values = vec![OTHER.to_owned(); values.len()];
            if let Some(id) = family.ids.get(&values) {
                return Ok(*id);
            }
        }
        let id = host.define_metric(family.kind, &full_name(family, &values))?;
        family.ids.insert(values, id);
        Ok(id)
    }
}

fn admit(family: &mut Family, tag_values: &[&str]) -> HostResult<Vec<String>> {
    if tag_values.len() != family.tags.len() {
        return Err(HostError::BadArgument);
    }
    Ok(family
        .tags
        .iter_mut()
        .zip(tag_values)
        .map(|(tag, raw)| tag.admit(raw))
        .collect())
}

fn full_name(family: &Family, values: &[String]) -> String {
    let tags: Vec<(&str, &str)> = family
        .tags
        .iter()
        .zip(values)
        .map(|(tag, value)| (tag.spec.name.as_str(), value.as_str()))
        .collect();
    tagged_name(&family.base, &tags)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::mock::{Hostcall, MockHost};

    #[test]
    fn names_are_tag_encoded_the_istio_way() {
        assert_eq!(
            tagged_name(
                "meshward_trace_id_request_ids_total",
                &[("action", "generated")]
            ),
            "action=.=generated;.;meshward_trace_id_request_ids_total"
        );
        assert_eq!(
            tagged_name("base", &[("a", "1"), ("b", "2")]),
            "a=.=1;.;b=.=2;.;base"
        );
        assert_eq!(tagged_name("base", &[]), "base");
    }

    #[test]
    fn tag_values_are_sanitized() {
        let cases = [
            ("generated", "generated"),
            ("Route-1_a", "Route-1_a"),
            ("a.b/c d", "a_b_c_d"),
            ("x=.=y;.;z", "x___y___z"),
            ("é", "_"),
            ("", EMPTY),
        ];
        for (raw, sanitized) in cases {
            assert_eq!(sanitize_tag_value(raw), sanitized, "{raw}");
        }
        assert_eq!(
            sanitize_tag_value(&"v".repeat(100)).len(),
            MAX_TAG_VALUE_LEN
        );
    }

    #[test]
    fn stats_tags_regexes_match_the_istio_form() {
        let tags = stats_tags(["action", "rule"]);
        assert_eq!(tags[0].tag_name, "action");
        assert_eq!(tags[0].regex, r"(action=\.=(.*?);\.;)");
        let yaml = stats_tags_yaml(["action"], 2);
        assert_eq!(
            yaml,
            "  - tag_name: action\n    regex: '(action=\\.=(.*?);\\.;)'\n"
        );
    }

    #[test]
    fn metrics_are_defined_once_per_tag_combination() {
        let host = MockHost::new();
        let metrics = Metrics::new("trace_id").unwrap();
        let ids = metrics
            .counter("request_ids_total", vec![TagSpec::new("action")])
            .unwrap();
        for _ in 0..3 {
            metrics.inc(&host, ids, &["generated"]).unwrap();
        }
        metrics.add(&host, ids, &["kept"], 2).unwrap();
        metrics.add(&host, ids, &["kept"], 0).unwrap();
        assert_eq!(host.metric_definitions(), 2);
        assert_eq!(
            host.metric_value("action=.=generated;.;meshward_trace_id_request_ids_total"),
            Some(3)
        );
        assert_eq!(
            host.metric_value("action=.=kept;.;meshward_trace_id_request_ids_total"),
            Some(2)
        );
        assert_eq!(metrics.tag_names(), ["action"]);
    }

    #[test]
    fn tag_values_beyond_the_cap_fold_into_other() {
        let host = MockHost::new();
        let metrics = Metrics::new("t").unwrap();
        let c = metrics
            .counter("hits_total", vec![TagSpec::new("route").with_cap(2)])
            .unwrap();
        for route in ["a", "b", "c", "d", "a"] {
            metrics.inc(&host, c, &[route]).unwrap();
        }
        let value = |v: &str| host.metric_value(&format!("route=.={v};.;meshward_t_hits_total"));
        assert_eq!(value("a"), Some(2));
        assert_eq!(value("b"), Some(1));
        assert_eq!(value(OTHER), Some(2));
        assert_eq!(value("c"), None);
    }

    #[test]
    fn declared_values_are_the_only_ones_kept() {
        let host = MockHost::new();
        let metrics = Metrics::new("t").unwrap();
        let c = metrics
            .counter(
                "decisions_total",
                vec![TagSpec::new("result").with_values(["allow", "deny"])],
            )
            .unwrap();
        metrics.inc(&host, c, &["surprise"]).unwrap();
        metrics.inc(&host, c, &["deny"]).unwrap();
        assert_eq!(
            host.metric_value("result=.=__other__;.;meshward_t_decisions_total"),
            Some(1)
        );
        assert_eq!(
            host.metric_value("result=.=deny;.;meshward_t_decisions_total"),
            Some(1)
        );
        assert_eq!(
            metrics.name_of(c, &["allow"]).as_deref(),
            Some("result=.=allow;.;meshward_t_decisions_total")
        );
    }

    #[test]
    fn series_per_family_are_bounded() {
        let host = MockHost::new();
        let metrics = Metrics::new("t").unwrap();
        let c = metrics
            .counter(
                "x_total",
                vec![
                    TagSpec::new("a").with_cap(64),
                    TagSpec::new("b").with_cap(64),
                ],
            )
            .unwrap();
        for a in 0..40 {
            for b in 0..40 {
                metrics
                    .inc(&host, c, &[&a.to_string(), &b.to_string()])
                    .unwrap();
            }
        }
        assert_eq!(host.metric_definitions(), MAX_SERIES_PER_FAMILY + 1);
        assert_eq!(
            host.metric_value("a=.=__other__;.;b=.=__other__;.;meshward_t_x_total"),
            Some(1600 - MAX_SERIES_PER_FAMILY as i64)
        );
    }

    #[test]
    fn kinds_and_arity_are_checked() {
        let host = MockHost::new();
        let metrics = Metrics::new("t").unwrap();
        let counter = metrics.counter("c_total", vec![TagSpec::new("a")]).unwrap();
        let gauge = metrics.gauge("g", vec![]).unwrap();
        let histogram = metrics.histogram("h_ns", vec![]).unwrap();
        assert_eq!(
            metrics.inc(&host, counter, &[]),
            Err(HostError::BadArgument)
        );
        assert_eq!(metrics.inc(&host, gauge, &[]), Err(HostError::BadArgument));
        metrics.gauge_set(&host, gauge, &[], 10).unwrap();
        metrics.gauge_add(&host, gauge, &[], -3).unwrap();
        metrics.observe(&host, histogram, &[], 42).unwrap();
        assert_eq!(host.metric_value("meshward_t_g"), Some(7));
        assert_eq!(host.histogram_samples("meshward_t_h_ns"), [42]);
    }

    #[test]
    fn untagged_families_can_be_defined_up_front() {
        let host = MockHost::new();
        let metrics = Metrics::new("t").unwrap();
        metrics.counter("errors_total", vec![]).unwrap();
        metrics
            .counter("tagged_total", vec![TagSpec::new("a")])
            .unwrap();
        metrics.define_untagged(&host).unwrap();
        assert_eq!(host.metric_value("meshward_t_errors_total"), Some(0));
        assert_eq!(host.metric_definitions(), 1);
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(Metrics::new("Trace-Id").is_err());
        let metrics = Metrics::new("t").unwrap();
        assert!(metrics.counter("Bad.Name", vec![]).is_err());
        assert!(
            metrics
                .counter("ok_total", vec![TagSpec::new("bad-tag")])
                .is_err()
        );
        metrics.counter("dup_total", vec![]).unwrap();
        let err = metrics.counter("dup_total", vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid metric `meshward_t_dup_total`: defined twice"
        );
    }

    #[test]
    fn a_failed_definition_is_retried_next_time() {
        let host =
            MockHost::new().failing_next(Hostcall::DefineMetric, HostError::InternalFailure, 1);
        let metrics = Metrics::new("t").unwrap();
        let c = metrics.counter("c_total", vec![]).unwrap();
        assert_eq!(metrics.inc(&host, c, &[]), Err(HostError::InternalFailure));
        metrics.inc(&host, c, &[]).unwrap();
        assert_eq!(host.metric_value("meshward_t_c_total"), Some(1));
    }
}
