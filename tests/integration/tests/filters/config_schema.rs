//! The JSON Schema shipped beside each filter (`filters/<name>/config.schema.json`): it is what
//! the filter's config types generate now (it cannot drift), every configuration we ship or
//! test with validates against it, and it rejects what the filter rejects as a typo.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::manifests::{envoy_config, istio_plugins};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn committed_schema() -> Value {
    let path = repo().join("filters/trace-id/config.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&committed_schema()).unwrap()
}

fn problems(validator: &jsonschema::Validator, config: &Value) -> Vec<String> {
    validator
        .iter_errors(config)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_what_the_config_types_generate() {
    assert!(
        committed_schema() == meshward_filter_trace_id::config::schema(),
        "filters/trace-id/config.schema.json is stale: run `make schemas` and commit it"
    );
}

#[test]
fn every_trace_id_configuration_validates_against_the_schema() {
    let validator = validator();
    let mut checked = Vec::new();
    let dir = repo().join("tests/fixtures/trace-id/config/valid");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // An empty configuration means `{}` to the filter.
        let config = if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&text).unwrap()
        };
        checked.push((path.display().to_string(), config));
    }
    for filter in envoy_config().wasm_filters {
        if filter
            .module_path
            .file_stem()
            .is_some_and(|s| s == "trace-id")
        {
            let config = if filter.configuration.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&filter.configuration).unwrap()
            };
            checked.push((filter.yaml_path.clone(), config));
        }
    }
    let istio_count = istio_plugins()
        .into_iter()
        .filter(|(_, filter, _, _)| filter == "trace-id")
        .map(|(file, _, _, config)| checked.push((format!("istio/{file}"), config)))
        .count();
    assert!(
        istio_count > 0 && checked.len() > istio_count + 3,
        "{checked:?}"
    );
    let mut wrong = Vec::new();
    for (source, config) in &checked {
        let errors = problems(&validator, config);
        if !errors.is_empty() {
            wrong.push(format!("{source}: {}", errors.join("; ")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_schema_rejects_unknown_fields_and_bad_values() {
    let validator = validator();
    for config in [
        json!({"requestID": {}}),
        json!({"requestId": {"hedaer": "x-id"}}),
        json!({"response": {"echoRequestID": true}}),
        json!({"traceContext": {"sampling": {"type": "fixed", "sampled": true, "x": 1}}}),
        json!({"b3": {"write": "both"}}),
        json!({"b3": [true, "multi"]}),
        json!({"requestId": {"maxLength": 0}}),
        json!({"traceContext": {"sampling": {"type": "ratio", "ratio": 1.5}}}),
        json!({"traceContext": {"tracestate": {"maxLength": 100}}}),
        json!({"requestId": {"header": "bad header"}}),
    ] {
        assert!(!validator.is_valid(&config), "schema accepted {config}");
        // The filter refuses each of them too.
        let bytes = serde_json::to_vec(&config).unwrap();
        assert!(
            meshward_filter_trace_id::config::parse(&bytes).is_err(),
            "filter accepted {config}"
        );
    }
    // `null` means "absent" to the filter, and the schema agrees.
    let nulls = json!({"requestId": {"header": null, "maxLength": null}, "b3": null});
    assert!(problems(&validator, &nulls).is_empty());
    assert!(meshward_filter_trace_id::config::parse(nulls.to_string().as_bytes()).is_ok());
}
