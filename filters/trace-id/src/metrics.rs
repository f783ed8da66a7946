//! trace-id's metrics: one counter family per header it manages, every series defined at
//! configure time (`meshward_core::metrics::Family`) and counted by the outcome's index.
//!
//! Names carry Istio-style tags (`action=.=<a>;.;reason=.=<r>;.;<base>`); Envoy `stats_tags` (or
//! Istio `extraStatTags`) `(action=\.=(.*?);\.;)` and `(reason=\.=(.*?);\.;)` turn them into
//! labels. Tag values come from the closed enumerations in [`crate::outcome`].

use meshward_core::host::{Host, MetricKind};
use meshward_core::metrics::Family;

use crate::outcome::{IdOutcome, StateOutcome, TraceOutcome};

/// Request ids by `action` (generated/kept/replaced) and `reason`.
pub const REQUEST_IDS: &str = "meshward_trace_id_request_ids_total";
/// Trace contexts by `action` (kept/started/restarted) and `reason`.
pub const TRACE_CONTEXTS: &str = "meshward_trace_id_trace_contexts_total";
/// `tracestate` headers by `action` (kept/truncated/dropped) and `reason`.
pub const TRACESTATES: &str = "meshward_trace_id_tracestates_total";
/// Requests where a hostcall failed, by `phase` (request/response).
pub const HOST_FAILURES: &str = "meshward_trace_id_host_failures_total";

/// Series of [`HOST_FAILURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The request headers phase.
    Request = 0,
    /// The response headers phase.
    Response = 1,
}

/// The families of one VM.
#[derive(Debug, Default)]
pub struct Metrics {
    /// [`REQUEST_IDS`], by [`IdOutcome::series`].
    pub request_ids: Family,
    /// [`TRACE_CONTEXTS`], by [`TraceOutcome::series`].
    pub trace_contexts: Family,
    /// [`TRACESTATES`], by [`StateOutcome::series`].
    pub tracestates: Family,
    /// [`HOST_FAILURES`], by [`Phase`].
    pub host_failures: Family,
}

fn action_reason(action: &'static str, reason: &'static str) -> [(&'static str, &'static str); 2] {
    [("action", action), ("reason", reason)]
}

impl Metrics {
    /// Defines every series (call in `on_configure`; ids are per VM).
    pub fn define(host: &(impl Host + ?Sized)) -> Self {
        let ids: Vec<_> = IdOutcome::all()
            .map(|o| action_reason(o.outcome().action.as_str(), o.outcome().reason))
            .collect();
        let traces: Vec<_> = TraceOutcome::all()
            .map(|o| action_reason(o.outcome().action.as_str(), o.outcome().reason))
            .collect();
        let states: Vec<_> = StateOutcome::all()
            .map(|o| action_reason(o.outcome().action.as_str(), o.outcome().reason))
            .collect();
        let counter = MetricKind::Counter;
        Self {
            request_ids: Family::define(host, counter, REQUEST_IDS, ids.iter().map(|t| &t[..])),
            trace_contexts: Family::define(
                host,
                counter,
                TRACE_CONTEXTS,
                traces.iter().map(|t| &t[..]),
            ),
            tracestates: Family::define(host, counter, TRACESTATES, states.iter().map(|t| &t[..])),
            host_failures: Family::define(
                host,
                counter,
                HOST_FAILURES,
                [&[("phase", "request")][..], &[("phase", "response")][..]],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use meshward_core::host::mock::MockHost;

    use super::*;

    #[test]
    fn every_series_exists_at_zero_after_configure() {
        let host = MockHost::new();
        let metrics = Metrics::define(&host);
        assert_eq!(metrics.request_ids.len(), IdOutcome::COUNT);
        assert_eq!(
            host.metric_value(
                "action=.=generated;.;reason=.=absent;.;meshward_trace_id_request_ids_total"
            ),
            Some(0)
        );
        assert_eq!(
            host.metric_value(
                "action=.=restarted;.;reason=.=version_ff;.;meshward_trace_id_trace_contexts_total"
            ),
            Some(0)
        );
        assert_eq!(
            host.metric_value("phase=.=response;.;meshward_trace_id_host_failures_total"),
            Some(0)
        );
        metrics
            .host_failures
            .add(&host, Phase::Response as usize, 1);
        assert_eq!(
            host.metric_value("phase=.=response;.;meshward_trace_id_host_failures_total"),
            Some(1)
        );
    }
}
