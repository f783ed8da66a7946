//! meshward metric-tag filter: request metrics (counters and histograms) whose tags Prometheus
//! sees as labels, with bounded cardinality.
//!
//! See `README.md` for the behaviour and config reference. In short, each configured tag takes
//! its value from one source (method, status, status class, route, cluster, header, query
//! parameter, path template, property, constant); values are kept only from an allow-list or up
//! to a per-proxy cap of distinct safe values, anything else is `other`; each metric's series
//! name carries its tags the Istio way (`tag=.=value;.;name`), which the generated Envoy
//! `stats_tags` / Istio `extraStatTags` turn into labels ([`stats_tags`]). Optionally each tag's
//! value is published as filter state `wasm.meshward_tag_<name>` for Istio `tagOverrides`.
//!
//! Everything except `plugin` runs natively in tests.

pub mod config;
pub mod filter;
pub mod stats_tags;

#[cfg(target_arch = "wasm32")]
mod plugin;
