//! ab-routing's metrics, every series defined at configure time (`meshward_core::metrics::Family`)
//! and counted by index per request.
//!
//! Names carry Istio-style tags (`experiment=.=<e>;.;variant=.=<v>;.;source=.=<s>;.;<base>`);
//! Envoy `stats_tags` (or Istio `extraStatTags`) turn them into labels.

use meshward_core::host::{Host, MetricKind};
use meshward_core::metrics::Family;

use crate::config::Config;
use crate::cookie::CookieResult;
use crate::logic::Source;

/// Assignments by `experiment`, `variant` and `source` (hash/cookie/rule/override).
pub const EXPOSURES: &str = "meshward_ab_routing_exposures_total";
/// Sticky cookies read, by `experiment` and `result` (accepted/malformed/bad_signature/expired/
/// unknown_variant).
pub const COOKIES: &str = "meshward_ab_routing_cookies_total";
/// Requests where a hostcall failed, by `phase` (request/response).
pub const HOST_FAILURES: &str = "meshward_ab_routing_host_failures_total";

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
    /// [`EXPOSURES`], by [`Metrics::exposure`].
    pub exposures: Family,
    /// First exposure series of each experiment.
    exposure_offsets: Vec<usize>,
    /// [`COOKIES`], by [`Metrics::cookie`].
    pub cookies: Family,
    /// [`HOST_FAILURES`], by [`Phase`].
    pub host_failures: Family,
}

impl Metrics {
    /// Defines every series (call in `on_configure`; ids are per VM).
    pub fn define(host: &(impl Host + ?Sized), config: &Config) -> Self {
        let mut exposure_tags = Vec::new();
        let mut exposure_offsets = Vec::new();
        let mut cookie_tags = Vec::new();
        for exp in &config.experiments {
            exposure_offsets.push(exposure_tags.len());
            for variant in &exp.variants {
                for source in Source::ALL {
                    exposure_tags.push([
                        ("experiment", exp.name.as_str()),
                        ("variant", variant.name.as_str()),
                        ("source", source.as_str()),
                    ]);
                }
            }
            for result in CookieResult::ALL {
                cookie_tags.push([
                    ("experiment", exp.name.as_str()),
                    ("result", result.as_str()),
                ]);
            }
        }
        let counter = MetricKind::Counter;
        Self {
            exposures: Family::define(
                host,
                counter,
                EXPOSURES,
                exposure_tags.iter().map(|t| &t[..]),
            ),
            exposure_offsets,
            cookies: Family::define(host, counter, COOKIES, cookie_tags.iter().map(|t| &t[..])),
            host_failures: Family::define(
                host,
                counter,
                HOST_FAILURES,
                [&[("phase", "request")][..], &[("phase", "response")][..]],
            ),
        }
    }

    /// The exposure series of `experiment`'s `variant` from `source`.
    pub fn exposure(&self, experiment: usize, variant: usize, source: Source) -> usize {
        self.exposure_offsets
            .get(experiment)
            .copied()
            .unwrap_or(usize::MAX)
            .saturating_add(variant * Source::ALL.len() + source as usize)
    }

    /// The cookie series of `experiment` for `result`.
    pub const fn cookie(experiment: usize, result: CookieResult) -> usize {
        experiment * CookieResult::ALL.len() + result as usize
    }
}
