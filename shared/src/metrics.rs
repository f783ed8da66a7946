//! Metrics: tag-encoded names, every series defined at configure time, updated by index.
//!
//! The proxy-wasm ABI has no labels, so tags are encoded in the name the Istio way,
//! `<tag1>=.=<v1>;.;<tag2>=.=<v2>;.;<base>`, and Envoy `stats_tags` regexes
//! `(<tag>=\.=(.*?);\.;)` (Istio `extraStatTags`) turn them back into labels:
//! `action=.=generated;.;meshward_trace_id_request_ids_total` is exported to Prometheus as
//! `meshward_trace_id_request_ids_total{action="generated"}`.
//!
//! A filter lists every series of a family up front (tag values from closed sets: outcomes,
//! reasons, configured rule names — never raw request data) and [`Family::define`] resolves all
//! their ids once per VM in `on_configure`. Per request, [`Family::add`] is one bounds-checked
//! array read and one hostcall: no names, no strings, no lookups. Defining every series at start-up
//! also means each one is exported (at zero) from the first scrape, so dashboards and alerts see
//! a series before its first event.
//!
//! Metrics are best effort: a series whose definition failed is skipped, and a failed update is
//! ignored; a metric never changes what happens to a request.

use crate::host::{Host, MetricKind};

/// Longest tag value kept (longer values are cut).
pub const MAX_TAG_VALUE_LEN: usize = 64;
/// The tag value written for an empty value.
pub const EMPTY: &str = "__empty__";

/// Maps a value to `[A-Za-z0-9_-]` (other characters become `_`), at most
/// [`MAX_TAG_VALUE_LEN`] characters; empty becomes [`EMPTY`]. Tag values should come from closed
/// sets, so two values that sanitize alike are a configuration mistake to avoid, not a risk.
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

/// The tag-encoded metric name `<t1>=.=<v1>;.;…;.;<base>`, values sanitized.
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
        name.push_str(&sanitize_tag_value(value));
        name.push_str(";.;");
    }
    name.push_str(base);
    name
}

/// The Envoy `stats_config.stats_tags` regex (and Istio `extraStatTags` equivalent) that turns
/// `tag` into a Prometheus label.
pub fn stats_tag_regex(tag: &str) -> String {
    format!(r"({tag}=\.=(.*?);\.;)")
}

/// The ids of one metric family on this VM, in the order the filter listed its series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Family {
    kind: Option<MetricKind>,
    /// Proxy metric id per series; 0 where the definition failed (Envoy never hands out 0).
    ids: Box<[u32]>,
}

impl Family {
    /// Defines every series of the family `base` (one per entry of `series`, each the tag values
    /// of that series) and keeps their ids in that order. A failed definition is logged once and
    /// leaves that series silent.
    pub fn define<'a>(
        host: &(impl Host + ?Sized),
        kind: MetricKind,
        base: &str,
        series: impl IntoIterator<Item = &'a [(&'a str, &'a str)]>,
    ) -> Self {
        let ids = series
            .into_iter()
            .map(|tags| {
                let name = tagged_name(base, tags);
                host.define_metric(kind, &name).unwrap_or_else(|error| {
                    ::log::warn!("cannot define metric {name}: {error}");
                    0
                })
            })
            .collect();
        Self {
            kind: Some(kind),
            ids,
        }
    }

    /// A family with one untagged series.
    pub fn single(host: &(impl Host + ?Sized), kind: MetricKind, name: &str) -> Self {
        Self::define(host, kind, name, [&[][..]])
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the family has no series (e.g. not defined yet).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn id(&self, series: usize) -> Option<u32> {
        self.ids.get(series).copied().filter(|id| *id != 0)
    }

    /// Adds `delta` to series `series` (counters: must be > 0; gauges: may be negative).
    pub fn add(&self, host: &(impl Host + ?Sized), series: usize, delta: i64) {
        if let Some(id) = self.id(series) {
            let _ = host.increment_metric(id, delta);
        }
    }

    /// Records a histogram sample, or sets a gauge, on series `series`.
    pub fn record(&self, host: &(impl Host + ?Sized), series: usize, value: u64) {
        if let Some(id) = self.id(series) {
            let _ = host.record_metric(id, value);
        }
    }

    /// The kind the family was defined with.
    pub fn kind(&self) -> Option<MetricKind> {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::HostError;
    use crate::host::mock::{Hostcall, MockHost};

    #[test]
    fn encodes_tags_the_istio_way_and_sanitizes_values() {
        assert_eq!(
            tagged_name("x_total", &[("action", "generated"), ("reason", "a b")]),
            "action=.=generated;.;reason=.=a_b;.;x_total"
        );
        assert_eq!(
            tagged_name("x_total", &[("t", "")]),
            "t=.=__empty__;.;x_total"
        );
        assert_eq!(stats_tag_regex("action"), r"(action=\.=(.*?);\.;)");
        let long = "v".repeat(100);
        assert_eq!(sanitize_tag_value(&long).len(), MAX_TAG_VALUE_LEN);
    }

    #[test]
    fn every_series_is_defined_up_front_and_updated_by_index() {
        let host = MockHost::new();
        let family = Family::define(
            &host,
            MetricKind::Counter,
            "requests_total",
            [&[("action", "allowed")][..], &[("action", "denied")][..]],
        );
        assert_eq!(family.len(), 2);
        assert_eq!(
            host.metric_value("action=.=denied;.;requests_total"),
            Some(0)
        );
        let defined = host.metric_definitions();
        family.add(&host, 1, 1);
        family.add(&host, 1, 1);
        family.add(&host, 7, 1); // out of range: ignored, never a panic
        assert_eq!(
            host.metric_value("action=.=denied;.;requests_total"),
            Some(2)
        );
        assert_eq!(
            host.metric_value("action=.=allowed;.;requests_total"),
            Some(0)
        );
        assert_eq!(
            host.metric_definitions(),
            defined,
            "no definition per request"
        );
    }

    #[test]
    fn a_failed_definition_silences_only_that_series() {
        let host = MockHost::new().failing_next(Hostcall::DefineMetric, HostError::BadArgument, 1);
        let family = Family::define(
            &host,
            MetricKind::Histogram,
            "latency",
            [&[("r", "a")][..], &[("r", "b")][..]],
        );
        family.record(&host, 0, 5);
        family.record(&host, 1, 7);
        assert_eq!(host.histogram_samples("r=.=b;.;latency"), [7]);
        assert_eq!(family.kind(), Some(MetricKind::Histogram));
        let single = Family::single(&host, MetricKind::Gauge, "live");
        single.record(&host, 0, 3);
        assert_eq!(host.metric_value("live"), Some(3));
    }
}
