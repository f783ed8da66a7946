//! Prints the Envoy `stats_tags` and Istio `extraStatTags` / `proxyStatsMatcher` YAML for a
//! metric-tag configuration file (JSON, as given to the plugin):
//! `cargo run -p meshward-filter-metric-tag --features schema --bin metric-tag-stats-tags -- config.json`.

use std::process::ExitCode;

use meshward_core::config::parse_config;
use meshward_filter_metric_tag::config::{Config, RawConfig};
use meshward_filter_metric_tag::stats_tags::snippets;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: metric-tag-stats-tags <config.json>");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("{path}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match parse_config::<RawConfig, Config>(&bytes) {
        Ok(config) => {
            print!("{}", snippets(&config));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{path}: invalid config: {error}");
            ExitCode::FAILURE
        }
    }
}
