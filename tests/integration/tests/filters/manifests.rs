//! envoy.yaml / istio consistency tests — they stand in for the Envoy and Istio runs our machines
//! cannot do:
//! - every `configuration` in `envoy-local/envoy.yaml` and every `pluginConfig` in `istio/*.yaml`
//!   configures the real `.wasm` in `meshward-host` (and a broken one is refused);
//! - every manifest in `istio/` validates against the Istio CRD schemas in
//!   `tests/fixtures/istio/crds.yaml` (istio/api's, trimmed to the kinds and versions we ship; its
//!   header says how), with unknown fields rejected as a typo would be in the cluster (structural
//!   schemas prune them silently; we fail instead);
//! - WasmPlugin and TrafficExtension twins agree, Istio's pluginConfig equals envoy.yaml's
//!   configuration, and the exported stat tags match envoy.yaml's `stats_tags`.
//!
//! Not checked: the CRDs' CEL rules (`x-kubernetes-validations`), which need a Kubernetes API
//! server; the ones that matter to us are asserted by hand in `wasm_plugin_and_traffic_extension_agree`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a test failure"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshward_host::{HostEngine, LoadError, Plugin, PluginSpec, SharedState, StatsTag};
use meshward_proxy::envoy_config::{self, ProxyConfig};
use serde_json::{Map, Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schemas_file() -> PathBuf {
    let path = repo_root().join("tests/fixtures/istio/crds.yaml");
    assert!(
        path.exists(),
        "{} missing: the Istio CRD schemas the manifests are validated against",
        path.display()
    );
    path
}

fn dist_module(name: &str) -> PathBuf {
    let path = repo_root().join("dist").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    path
}

pub(crate) fn envoy_config() -> ProxyConfig {
    envoy_config::load(&repo_root().join("envoy-local/envoy.yaml")).unwrap()
}

/// Every YAML document of a file, as JSON values.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The manifests in `istio/` (top level; `istio/snippets/` holds Helm values, not resources).
pub(crate) fn istio_manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("istio"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            yaml_documents(file)
                .into_iter()
                .map(move |doc| (name.clone(), doc))
        })
        .collect()
}

// ---- CRD schemas -------------------------------------------------------------------------------

/// `(apiVersion, kind)` → the CRD's `openAPIV3Schema`.
fn crd_schemas() -> BTreeMap<(String, String), Value> {
    let mut schemas = BTreeMap::new();
    for crd in yaml_documents(&schemas_file()) {
        if crd["kind"] != "CustomResourceDefinition" {
            continue;
        }
        let group = crd["spec"]["group"].as_str().unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            if version["served"] != true {
                continue;
            }
            let name = version["name"].as_str().unwrap();
            let schema = version["schema"]["openAPIV3Schema"].clone();
            schemas.insert((format!("{group}/{name}"), kind.to_owned()), schema);
        }
    }
    schemas
}

#[test]
fn the_crd_fixture_holds_the_kinds_we_ship_and_the_coming_filters_ship() {
    let versions: Vec<(String, String)> = crd_schemas().into_keys().collect();
    let expected = [
        ("extensions.istio.io/v1alpha1", "TrafficExtension"),
        ("extensions.istio.io/v1alpha1", "WasmPlugin"),
        ("networking.istio.io/v1", "DestinationRule"),
        ("networking.istio.io/v1", "ServiceEntry"),
        ("networking.istio.io/v1", "VirtualService"),
        ("telemetry.istio.io/v1", "Telemetry"),
    ]
    .map(|(api_version, kind)| (api_version.to_owned(), kind.to_owned()));
    assert_eq!(versions, expected, "{}", schemas_file().display());
}

/// Turns a Kubernetes structural schema into a strict JSON Schema (draft 4, which OpenAPI v3
/// schemas follow):
/// - an object that lists `properties` rejects other fields unless it says
///   `x-kubernetes-preserve-unknown-fields: true` (the API server would prune them silently);
/// - `nullable: true` admits `null`;
/// - `x-kubernetes-int-or-string` admits both;
/// - other `x-kubernetes-*` keywords (list types, CEL validations) are left to the API server.
fn strict_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "properties" | "patternProperties" | "definitions" => match value {
                Value::Object(children) => Value::Object(
                    children
                        .iter()
                        .map(|(name, child)| (name.clone(), strict_schema(child)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => strict_schema(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(list) => Value::Array(list.iter().map(strict_schema).collect()),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    let preserves_unknown =
        map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !preserves_unknown
    {
        out.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    if map.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(kind)) = map.get("type")
    {
        out.insert("type".to_owned(), json!([kind, "null"]));
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        if !out.contains_key("anyOf") {
            out.insert(
                "anyOf".to_owned(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
    }
    Value::Object(out)
}

/// The schema of a whole resource: the CRD's schema plus the fields Kubernetes adds itself.
fn resource_schema(api_version: &str, kind: &str, openapi: &Value) -> Value {
    let mut schema = strict_schema(openapi);
    let dns_subdomain = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let properties = schema["properties"].as_object_mut().unwrap();
    properties.insert("apiVersion".to_owned(), json!({"enum": [api_version]}));
    properties.insert("kind".to_owned(), json!({"enum": [kind]}));
    properties.insert(
        "metadata".to_owned(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": dns_subdomain},
                "namespace": {"type": "string", "maxLength": 63, "pattern": dns_subdomain},
                "labels": string_map,
                "annotations": string_map,
            }
        }),
    );
    let mut required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
    required.extend([json!("apiVersion"), json!("kind"), json!("metadata")]);
    schema["required"] = Value::Array(required);
    schema
}

/// Validation errors of `manifest` against its CRD (empty = valid).
fn validate(manifest: &Value, schemas: &BTreeMap<(String, String), Value>) -> Vec<String> {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let kind = manifest["kind"].as_str().unwrap_or_default();
    let Some(openapi) = schemas.get(&(api_version.to_owned(), kind.to_owned())) else {
        return vec![format!(
            "no CRD schema for {api_version} {kind} in {}",
            schemas_file().display()
        )];
    };
    let schema = resource_schema(api_version, kind, openapi);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .unwrap();
    validator
        .iter_errors(manifest)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

#[test]
fn every_istio_manifest_validates_against_its_crd() {
    let schemas = crd_schemas();
    let manifests = istio_manifests();
    let mut kinds: Vec<&str> = manifests
        .iter()
        .filter_map(|(_, m)| m["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "DestinationRule",
            "Telemetry",
            "TrafficExtension",
            "VirtualService",
            "WasmPlugin"
        ],
        "kinds shipped in istio/"
    );
    for (file, manifest) in &manifests {
        let errors = validate(manifest, &schemas);
        assert!(
            errors.is_empty(),
            "istio/{file} ({}):\n{}",
            manifest["kind"],
            errors.join("\n")
        );
    }
}

fn manifest(file: &str) -> Value {
    istio_manifests()
        .into_iter()
        .find(|(name, _)| name == file)
        .map(|(_, m)| m)
        .unwrap()
}

#[test]
fn a_manifest_with_a_typo_or_a_bad_value_fails_validation() {
    let schemas = crd_schemas();
    type Mutation = fn(&mut Value);
    let cases: &[(&str, &str, Mutation)] = &[
        ("trace-id-wasmplugin.yaml", "spec.failStrategyy", |m| {
            m["spec"]["failStrategyy"] = json!("FAIL_OPEN")
        }),
        (
            "trace-id-wasmplugin.yaml",
            "spec.pluginconfig (case)",
            |m| m["spec"]["pluginconfig"] = json!({}),
        ),
        ("trace-id-wasmplugin.yaml", "metadata.namespce", |m| {
            m["metadata"]["namespce"] = json!("x")
        }),
        ("trace-id-wasmplugin.yaml", "phase FIRST", |m| {
            m["spec"]["phase"] = json!("FIRST")
        }),
        ("trace-id-wasmplugin.yaml", "match mode INBOUND", |m| {
            m["spec"]["match"][0]["mode"] = json!("INBOUND")
        }),
        ("trace-id-wasmplugin.yaml", "priority as string", |m| {
            m["spec"]["priority"] = json!("high")
        }),
        ("trace-id-wasmplugin.yaml", "missing url", |m| {
            m["spec"].as_object_mut().unwrap().remove("url");
        }),
        ("trace-id-wasmplugin.yaml", "sha256 not hex", |m| {
            m["spec"]["sha256"] = json!("abc")
        }),
        ("trace-id-trafficextension.yaml", "spec.wasm.urll", |m| {
            m["spec"]["wasm"]["urll"] = json!("oci://x")
        }),
        ("trace-id-trafficextension.yaml", "both wasm and lua", |m| {
            m["spec"]["lua"] = json!({"inlineCode": "x"});
        }),
        ("trace-id-telemetry.yaml", "formatter typo", |m| {
            m["spec"]["tracing"][0]["customTags"]["meshward.request_id"] =
                json!({"formater": {"value": "x"}});
        }),
        ("trace-id-telemetry.yaml", "wrong apiVersion", |m| {
            m["apiVersion"] = json!("telemetry.istio.io/v2")
        }),
    ];
    for (file, what, mutate) in cases {
        let mut broken = manifest(file);
        assert!(
            validate(&broken, &schemas).is_empty(),
            "istio/{file} must be valid before the mutation"
        );
        mutate(&mut broken);
        assert!(
            !validate(&broken, &schemas).is_empty(),
            "istio/{file} with {what} passed validation"
        );
    }
}

#[test]
fn preserve_unknown_fields_and_nullable_are_honoured() {
    let schema = strict_schema(&json!({
        "type": "object",
        "properties": {
            "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "count": {"type": "integer", "nullable": true},
            "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        }
    }));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .unwrap();
    assert!(
        validator.is_valid(&json!({"config": {"anything": [1]}, "count": null, "port": "http"}))
    );
    assert!(validator.is_valid(&json!({"port": 80})));
    assert!(!validator.is_valid(&json!({"extra": 1})));
    assert!(!validator.is_valid(&json!({"count": "1"})));
}

// ---- plugin configurations through the real .wasm ----------------------------------------------

fn configure(
    module_path: &Path,
    name: &str,
    root_id: &str,
    vm_id: &str,
    configuration: &[u8],
) -> Result<(), LoadError> {
    let engine = HostEngine::global().unwrap();
    let module = engine.load_file(module_path).unwrap();
    let spec = PluginSpec::new(name, root_id)
        .with_vm_id(vm_id)
        .with_configuration(configuration.to_vec());
    Plugin::load(engine, &module, spec, &SharedState::new()).map(drop)
}

fn explain(error: &LoadError) -> String {
    match error {
        LoadError::Rejected { reason, logs } | LoadError::StartFailed { reason, logs, .. } => {
            let lines: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
            format!("{reason}: {}", lines.join(" | "))
        }
        other => other.to_string(),
    }
}

#[test]
fn every_envoy_configuration_configures_the_real_wasm() {
    let config = envoy_config();
    assert!(!config.wasm_filters.is_empty());
    for filter in &config.wasm_filters {
        let stem = filter
            .module_path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let result = configure(
            &dist_module(&stem),
            &filter.plugin_name,
            &filter.root_id,
            &filter.vm_id,
            filter.configuration.as_bytes(),
        );
        if let Err(error) = result {
            panic!(
                "{} ({stem}) rejected its configuration: {}",
                filter.yaml_path,
                explain(&error)
            );
        }
    }
}

/// `(file, filter name from the image url, pluginName, pluginConfig)` of every Wasm resource.
pub(crate) fn istio_plugins() -> Vec<(String, String, String, Value)> {
    istio_manifests()
        .into_iter()
        .filter_map(|(file, manifest)| {
            let wasm = match manifest["kind"].as_str()? {
                "WasmPlugin" => manifest["spec"].clone(),
                "TrafficExtension" => manifest["spec"]["wasm"].clone(),
                _ => return None,
            };
            let url = wasm["url"].as_str().unwrap();
            // oci://registry/path/<filter>:<tag> (or @sha256:…)
            let image = url.rsplit('/').next().unwrap();
            let filter = image.split([':', '@']).next().unwrap().to_owned();
            let plugin_name = wasm["pluginName"].as_str().unwrap().to_owned();
            Some((file, filter, plugin_name, wasm["pluginConfig"].clone()))
        })
        .collect()
}

#[test]
fn every_istio_plugin_config_configures_the_real_wasm() {
    let plugins = istio_plugins();
    assert!(!plugins.is_empty());
    for (file, filter, plugin_name, plugin_config) in plugins {
        let bytes = serde_json::to_vec(&plugin_config).unwrap();
        if let Err(error) = configure(
            &dist_module(&filter),
            &plugin_name,
            &plugin_name,
            &plugin_name,
            &bytes,
        ) {
            panic!(
                "istio/{file}: pluginConfig rejected by dist/{filter}.wasm: {}",
                explain(&error)
            );
        }
    }
}

#[test]
fn a_plugin_config_with_an_unknown_field_is_refused_by_the_wasm() {
    for (file, filter, plugin_name, mut plugin_config) in istio_plugins() {
        plugin_config["unknownFieldFromATypo"] = json!(true);
        let bytes = serde_json::to_vec(&plugin_config).unwrap();
        let result = configure(
            &dist_module(&filter),
            &plugin_name,
            &plugin_name,
            &plugin_name,
            &bytes,
        );
        assert!(
            matches!(result, Err(LoadError::Rejected { .. })),
            "istio/{file}: typo accepted: {result:?}"
        );
    }
}

#[test]
fn istio_plugin_configs_equal_the_envoy_configuration() {
    let config = envoy_config();
    let envoy: BTreeMap<&str, Value> = config
        .wasm_filters
        .iter()
        .map(|f| {
            (
                f.root_id.as_str(),
                serde_json::from_str(&f.configuration).unwrap(),
            )
        })
        .collect();
    for (file, _, plugin_name, plugin_config) in istio_plugins() {
        let Some(expected) = envoy.get(plugin_name.as_str()) else {
            panic!(
                "istio/{file}: pluginName `{plugin_name}` is no root_id in envoy-local/envoy.yaml"
            );
        };
        assert_eq!(
            &plugin_config, expected,
            "istio/{file} pluginConfig differs from envoy.yaml"
        );
    }
    // And every filter of the local chain is packaged for Istio.
    let packaged: Vec<String> = istio_plugins()
        .into_iter()
        .map(|(_, _, name, _)| name)
        .collect();
    for root_id in envoy.keys() {
        assert!(
            packaged.iter().any(|p| p == root_id),
            "filter `{root_id}` has no manifest in istio/"
        );
    }
}

#[test]
fn wasm_plugin_and_traffic_extension_agree() {
    let manifests = istio_manifests();
    let plugins: Vec<&Value> = manifests
        .iter()
        .filter(|(_, m)| m["kind"] == "WasmPlugin")
        .map(|(_, m)| m)
        .collect();
    for plugin in plugins {
        let name = &plugin["metadata"]["name"];
        let twin = manifests
            .iter()
            .map(|(_, m)| m)
            .find(|m| m["kind"] == "TrafficExtension" && &m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("WasmPlugin {name} has no TrafficExtension twin"));
        let (spec, twin_spec) = (&plugin["spec"], &twin["spec"]);
        for field in ["selector", "targetRefs", "phase", "priority", "match"] {
            assert_eq!(spec[field], twin_spec[field], "{name}: {field}");
        }
        for field in [
            "url",
            "sha256",
            "imagePullPolicy",
            "pluginName",
            "pluginConfig",
            "failStrategy",
            "type",
        ] {
            assert_eq!(spec[field], twin_spec["wasm"][field], "{name}: {field}");
        }
        // The CEL rules the API server would check: selector xor targetRefs; an explicit
        // failStrategy and phase (never the defaults by accident).
        assert!(
            spec["selector"].is_null() || spec["targetRefs"].is_null(),
            "{name}: selector and targetRefs"
        );
        assert!(
            spec["failStrategy"].is_string() && spec["phase"].is_string(),
            "{name}: explicit failStrategy and phase"
        );
    }
}

#[test]
fn exported_stat_tags_equal_the_envoy_stats_tags() {
    let config = envoy_config();
    let envoy_tags: Vec<&str> = config
        .stats_tags
        .iter()
        .map(|t| t.tag_name.as_str())
        .collect();
    assert!(!envoy_tags.is_empty());
    // Every tag a filter's metric names carry must be extracted (metrics are defined at configure
    // time, so loading each filter of envoy.yaml exports all its series).
    let shared = SharedState::new();
    for filter in &config.wasm_filters {
        let stem = filter.module_path.file_stem().unwrap().to_string_lossy();
        let module = HostEngine::global()
            .unwrap()
            .load_file(dist_module(&stem))
            .unwrap();
        let spec = PluginSpec::new(filter.plugin_name.clone(), filter.root_id.clone())
            .with_configuration(filter.configuration.clone());
        Plugin::load(HostEngine::global().unwrap(), &module, spec, &shared).unwrap();
    }
    for metric in shared.metrics().keys() {
        for part in metric.trim_start_matches("wasmcustom.").split(";.;") {
            if let Some((tag, _)) = part.split_once("=.=") {
                assert!(
                    envoy_tags.contains(&tag),
                    "metric {metric} carries tag `{tag}`, which envoy.yaml stats_tags does not extract"
                );
            }
        }
    }
    for tag in &config.stats_tags {
        assert_eq!(
            tag.regex,
            StatsTag::istio(&tag.tag_name).regex,
            "envoy.yaml stats_tags must use Istio's form"
        );
    }
    let values_docs = yaml_documents(&repo_root().join("istio/snippets/meshconfig-values.yaml"));
    let mesh = &values_docs[0]["meshConfig"]["defaultConfig"];
    let annotation_docs = yaml_documents(&repo_root().join("istio/snippets/pod-annotation.yaml"));
    let annotation_doc = &annotation_docs[0];
    let annotation_text =
        annotation_doc["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
            .as_str()
            .unwrap();
    let annotation: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(annotation_text).unwrap())
            .unwrap();
    for (what, proxy_config) in [
        ("meshconfig-values.yaml", mesh),
        ("pod-annotation.yaml", &annotation),
    ] {
        let tags: Vec<&str> = proxy_config["extraStatTags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tags, envoy_tags, "istio/snippets/{what} extraStatTags");
        let regexps = proxy_config["proxyStatsMatcher"]["inclusionRegexps"]
            .as_array()
            .unwrap();
        let sample = "wasmcustom.action=.=generated;.;meshward_trace_id_request_ids_total";
        assert!(
            regexps.iter().any(
                |r| regex::Regex::new(&format!("^(?:{})$", r.as_str().unwrap()))
                    .unwrap()
                    .is_match(sample)
            ),
            "istio/snippets/{what}: proxyStatsMatcher does not include {sample}"
        );
    }
}
