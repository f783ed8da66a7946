//! The Envoy `stats_config.stats_tags` and Istio `extraStatTags` / `proxyStatsMatcher` snippets
//! for a configuration, generated from the same names the filter defines (so they cannot
//! drift): `cargo run -p meshward-filter-metric-tag --features schema --bin
//! metric-tag-stats-tags -- <config.json>`.

use meshward_core::metrics::stats_tag_regex;

use crate::config::Config;

/// The tag names the configuration's metrics carry, in first-use order, without duplicates.
pub fn tag_names(config: &Config) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for metric in &config.metrics {
        for &tag in &metric.tags {
            if let Some(tag) = config.tags.get(tag)
                && !names.contains(&tag.name.as_str())
            {
                names.push(&tag.name);
            }
        }
    }
    names
}

/// `(tag_name, regex)` pairs for Envoy's `stats_tags`.
pub fn stats_tags(config: &Config) -> Vec<(String, String)> {
    tag_names(config)
        .into_iter()
        .map(|name| (name.to_owned(), stats_tag_regex(name)))
        .collect()
}

fn yaml_single_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The YAML snippets: Envoy bootstrap `stats_config`, Istio `extraStatTags` and
/// `proxyStatsMatcher` (the metric names, so Istio exports them).
pub fn snippets(config: &Config) -> String {
    let mut out = String::from("# Envoy bootstrap (envoy.yaml)\nstats_config:\n  stats_tags:\n");
    for (name, regex) in stats_tags(config) {
        out.push_str(&format!(
            "  - tag_name: {name}\n    regex: {}\n",
            yaml_single_quoted(&regex)
        ));
    }
    out.push_str("\n# Istio: meshConfig.defaultConfig (or the proxy.istio.io/config annotation)\n");
    out.push_str("proxyStatsMatcher:\n  inclusionRegexps:\n");
    for metric in &config.metrics {
        out.push_str(&format!(
            "  - {}\n",
            yaml_single_quoted(&format!(".*{}.*", metric.name))
        ));
    }
    out.push_str("extraStatTags:\n");
    for name in tag_names(config) {
        out.push_str(&format!("  - {name}\n"));
    }
    out
}
