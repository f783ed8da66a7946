//! rate-limit's metrics, every series defined at configure time (`meshward_core::metrics::Family`)
//! and counted by index: `rule` tags come from the configured rule names (bounded by
//! `MAX_RULES`), the others from closed lists.
//!
//! Names carry Istio-style tags (`rule=.=<r>;.;outcome=.=<o>;.;<base>`); Envoy `stats_tags` (or
//! Istio `extraStatTags`) `(rule=\.=(.*?);\.;)` and `(outcome=\.=(.*?);\.;)` make them labels.
//! The live-keys gauge is incremented and decremented by every VM: Envoy keeps one gauge per name
//! for the whole proxy, so it sums the entries held in shared data.

use meshward_core::host::{Host, MetricKind};
use meshward_core::metrics::{Family, sanitize_tag_value};

use crate::table::Eviction;

/// Requests by `rule` and `outcome`.
pub const REQUESTS: &str = "meshward_rate_limit_requests_total";
/// Key values held in shared data, by `rule` (gauge).
pub const LIVE_KEYS: &str = "meshward_rate_limit_live_keys";
/// Key values evicted, by `rule` and `reason` (`idle`: nothing lost; `lru`: a busy key).
pub const EVICTIONS: &str = "meshward_rate_limit_evictions_total";
/// Requests where a hostcall failed.
pub const HOST_FAILURES: &str = "meshward_rate_limit_host_failures_total";

/// What happened to a request that a rule took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Charged and forwarded.
    Allowed = 0,
    /// Refused (429).
    Limited = 1,
    /// Would have been refused; forwarded (shadow rule).
    ShadowLimited = 2,
    /// Compare-and-swap retries ran out (then allowed or denied per `contention.onExhausted`).
    ContentionExhausted = 3,
}

impl Outcome {
    /// Every outcome, by index.
    pub const ALL: [Self; 4] = [
        Self::Allowed,
        Self::Limited,
        Self::ShadowLimited,
        Self::ContentionExhausted,
    ];

    /// Tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::ShadowLimited => "shadow_limited",
            Self::ContentionExhausted => "contention_exhausted",
        }
    }
}

/// The families of one VM.
#[derive(Debug, Default)]
pub struct Metrics {
    /// [`REQUESTS`]: series `rule * 4 + outcome`.
    pub requests: Family,
    /// [`LIVE_KEYS`]: series `rule`.
    pub live_keys: Family,
    /// [`EVICTIONS`]: series `rule * 2 + (0 idle, 1 lru)`.
    pub evictions: Family,
    /// [`HOST_FAILURES`].
    pub host_failures: Family,
}

impl Metrics {
    /// Defines every series for rules named `rules` (call in `on_configure`).
    pub fn define<'a>(
        host: &(impl Host + ?Sized),
        rules: impl Iterator<Item = &'a str> + Clone,
    ) -> Self {
        let names: Vec<String> = rules.map(sanitize_tag_value).collect();
        let requests: Vec<[(&str, &str); 2]> = names
            .iter()
            .flat_map(|r| Outcome::ALL.map(|o| [("rule", r.as_str()), ("outcome", o.as_str())]))
            .collect();
        let live: Vec<[(&str, &str); 1]> = names.iter().map(|r| [("rule", r.as_str())]).collect();
        let evictions: Vec<[(&str, &str); 2]> = names
            .iter()
            .flat_map(|r| ["idle", "lru"].map(|why| [("rule", r.as_str()), ("reason", why)]))
            .collect();
        Self {
            requests: Family::define(
                host,
                MetricKind::Counter,
                REQUESTS,
                requests.iter().map(|t| &t[..]),
            ),
            live_keys: Family::define(
                host,
                MetricKind::Gauge,
                LIVE_KEYS,
                live.iter().map(|t| &t[..]),
            ),
            evictions: Family::define(
                host,
                MetricKind::Counter,
                EVICTIONS,
                evictions.iter().map(|t| &t[..]),
            ),
            host_failures: Family::single(host, MetricKind::Counter, HOST_FAILURES),
        }
    }

    /// Series of `outcome` for rule `rule`.
    pub const fn request_series(rule: usize, outcome: Outcome) -> usize {
        rule * 4 + outcome as usize
    }

    /// Series of an eviction for rule `rule`.
    pub const fn eviction_series(rule: usize, why: Eviction) -> usize {
        rule * 2
            + match why {
                Eviction::Idle => 0,
                Eviction::Lru => 1,
            }
    }
}
