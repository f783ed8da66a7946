//! Counters with Istio-style tag-encoded names (`<tag>=.=<value>;.;…;<base>`), defined lazily and
//! cached per VM. Tag values come from closed sets in `logic`, so cardinality is bounded.
//!
//! Envoy `stats_tags` (or Istio `extraStatTags`) regexes that turn them into labels:
//! `action` → `(action=\.=(.*?);\.;)`, `reason` → `(reason=\.=(.*?);\.;)`.

use std::cell::RefCell;

use meshward_core::host::{Host, MetricKind};

use crate::logic::RequestDecision;

/// Request ids by `action` (generated/kept/replaced) and `reason`.
pub const REQUEST_IDS: &str = "meshward_trace_id_request_ids_total";
/// Trace contexts by `action` (kept/started/restarted) and `reason`.
pub const TRACE_CONTEXTS: &str = "meshward_trace_id_trace_contexts_total";
/// `tracestate` headers by `action` (kept/truncated/dropped) and `reason`.
pub const TRACESTATES: &str = "meshward_trace_id_tracestates_total";
/// Requests where a hostcall failed, by `phase` (request/response).
pub const HOST_FAILURES: &str = "meshward_trace_id_host_failures_total";

/// `tag=.=value;.;` prefixes followed by the base name (values sanitized by core).
pub fn encode_name(base: &str, tags: &[(&str, &str)]) -> String {
    let values: Vec<String> = tags
        .iter()
        .map(|(_, v)| meshward_core::metrics::sanitize_tag_value(v))
        .collect();
    let tags: Vec<(&str, &str)> = tags
        .iter()
        .zip(&values)
        .map(|((t, _), v)| (*t, v.as_str()))
        .collect();
    meshward_core::metrics::tagged_name(base, &tags)
}

/// Most metric ids cached per VM. The tag values are closed sets (about 40 combinations), so the
/// cap is never reached in practice; past it, names are defined again on each use, which Envoy
/// answers with the same id.
const MAX_CACHED: usize = 128;

/// Lazily defined counters of one VM. A linear list, not a `HashMap`: it holds a few dozen
/// entries, and std's `HashMap` would pull its random seeding and SipHash into the module.
/// Entries are keyed by the base name and tag values (all `&'static str` from closed sets), so a
/// hit compares a few short strings and allocates nothing; the tagged name is built on a miss only.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: RefCell<Vec<CachedMetric>>,
}

#[derive(Debug)]
struct CachedMetric {
    base: &'static str,
    values: Vec<&'static str>,
    id: u32,
}

impl Metrics {
    /// Adds one to the counter `base` with `tags`. Failures are ignored: a metric must never
    /// change what happens to a request.
    pub fn increment(
        &self,
        host: &(impl Host + ?Sized),
        base: &'static str,
        tags: &[(&'static str, &'static str)],
    ) {
        let cached = self
            .ids
            .borrow()
            .iter()
            .find(|m| {
                m.base == base
                    && m.values.len() == tags.len()
                    && m.values.iter().zip(tags).all(|(a, (_, b))| a == b)
            })
            .map(|m| m.id);
        let id = match cached {
            Some(id) => id,
            None => match host.define_metric(MetricKind::Counter, &encode_name(base, tags)) {
                Ok(id) => {
                    let mut ids = self.ids.borrow_mut();
                    if ids.len() < MAX_CACHED {
                        ids.push(CachedMetric {
                            base,
                            values: tags.iter().map(|(_, value)| *value).collect(),
                            id,
                        });
                    }
                    id
                }
                Err(_) => return,
            },
        };
        let _ = host.increment_metric(id, 1);
    }

    /// Records the outcomes of one request decision.
    pub fn record(&self, host: &(impl Host + ?Sized), decision: &RequestDecision) {
        let id = decision.id_outcome;
        self.increment(
            host,
            REQUEST_IDS,
            &[("action", id.action.as_str()), ("reason", id.reason)],
        );
        let trace = decision.trace_outcome;
        self.increment(
            host,
            TRACE_CONTEXTS,
            &[("action", trace.action.as_str()), ("reason", trace.reason)],
        );
        if let Some(state) = decision.state_outcome {
            self.increment(
                host,
                TRACESTATES,
                &[("action", state.action.as_str()), ("reason", state.reason)],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use meshward_core::host::mock::MockHost;

    use super::*;

    #[test]
    fn encodes_tags_the_istio_way_and_sanitizes_values() {
        assert_eq!(
            encode_name(REQUEST_IDS, &[("action", "generated"), ("reason", "a b")]),
            "action=.=generated;.;reason=.=a_b;.;meshward_trace_id_request_ids_total"
        );
    }

    #[test]
    fn defines_once_and_counts() {
        let host = MockHost::new();
        let metrics = Metrics::default();
        for _ in 0..3 {
            metrics.increment(
                &host,
                TRACE_CONTEXTS,
                &[("action", "started"), ("reason", "absent")],
            );
        }
        assert_eq!(
            host.metric_value(
                "action=.=started;.;reason=.=absent;.;meshward_trace_id_trace_contexts_total"
            ),
            Some(3)
        );
        assert_eq!(metrics.ids.borrow().len(), 1);
    }
}
