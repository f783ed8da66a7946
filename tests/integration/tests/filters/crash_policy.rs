//! The crash-policy table of README.md states each filter's shipped `failStrategy` and
//! envoy.yaml `fail_open`: both must be what the manifests really ship.

use std::collections::BTreeMap;

use crate::manifests::{envoy_config, istio_manifests};

const FILTERS: [&str; 5] = [
    "trace-id",
    "metric-tag",
    "jwt-auth",
    "ab-routing",
    "rate-limit",
];

/// Rows of the README's crash-policy table: filter → (failStrategy, fail_open), backticks removed.
fn readme_table() -> BTreeMap<String, (String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("\n## Crash policy\n")
        .nth(1)
        .expect("README has a Crash policy section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|line| {
            line.starts_with("| ") && !line.starts_with("| filter") && !line.starts_with("|---")
        })
        .map(|line| {
            let cells: Vec<String> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            (cells[1].clone(), (cells[2].clone(), cells[3].clone()))
        })
        .collect()
}

#[test]
fn the_readme_crash_policy_table_matches_the_manifests() {
    let table = readme_table();
    assert_eq!(
        table.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut sorted = FILTERS.to_vec();
            sorted.sort_unstable();
            sorted
        },
        "one row per shipped filter"
    );
    let envoy = envoy_config();
    let manifests = istio_manifests();
    for filter in FILTERS {
        let (strategy, fail_open) = &table[filter];
        let shipped: Vec<(String, String)> = manifests
            .iter()
            .filter(|(file, _)| file.starts_with(&format!("{filter}-")))
            .filter_map(|(file, m)| {
                let value = match m["kind"].as_str()? {
                    "WasmPlugin" => &m["spec"]["failStrategy"],
                    "TrafficExtension" => &m["spec"]["wasm"]["failStrategy"],
                    _ => return None,
                };
                Some((file.clone(), value.as_str().unwrap_or("(none)").to_owned()))
            })
            .collect();
        assert_eq!(
            shipped.len(),
            2,
            "{filter}: a WasmPlugin and a TrafficExtension: {shipped:?}"
        );
        for (file, value) in &shipped {
            assert_eq!(value, strategy, "istio/{file} failStrategy vs README");
        }
        let in_envoy: Vec<bool> = envoy
            .wasm_filters
            .iter()
            .filter(|w| w.module_path.file_stem().is_some_and(|s| s == filter))
            .map(|w| w.fail_open)
            .collect();
        assert_eq!(in_envoy.len(), 1, "{filter} once in envoy.yaml");
        assert_eq!(
            in_envoy[0].to_string(),
            *fail_open,
            "{filter}: envoy.yaml fail_open vs README"
        );
        // The README's reasoning: only the authentication filter fails closed.
        assert_eq!(strategy == "FAIL_CLOSE", filter == "jwt-auth", "{filter}");
    }
}
