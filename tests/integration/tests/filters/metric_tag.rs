//! metric-tag through the real `dist/metric-tag.wasm` on 4 worker VMs: the Prometheus text our
//! host exports with the generated `stats_tags` shows the labels, values and histogram buckets;
//! random header values stay within the configured series per metric; memory per VM stays
//! bounded; bad configurations are refused naming the field; hostile values never trap.
//!
//! Also the host's `request.duration` / `request.total_size` / `response.total_size` (Envoy's
//! encodings and timing), observed through the filter's histograms.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshward_core::config::parse_config;
use meshward_filter_metric_tag::config::{Config, RawConfig};
use meshward_filter_metric_tag::stats_tags::stats_tags;
use meshward_host::{
    FailPolicy, FilterState, HeaderMap, HostEngine, LoadError, Plugin, PluginSpec, Request,
    Response, SharedState, StatsTag, StreamInfo,
};

const WORKERS: usize = 4;

const CONFIG: &str = r#"{
  "tags": [
    {"name": "method", "source": {"type": "method"}, "allowedValues": ["GET", "POST"]},
    {"name": "variant", "source": {"type": "header", "name": "x-variant"}, "maxValues": 5},
    {"name": "client", "source": {"type": "header", "name": "x-client"}, "maxValues": 7, "maxLength": 16},
    {"name": "status_class", "source": {"type": "statusClass"}},
    {"name": "route", "source": {"type": "routeName"}, "allowedValues": ["api", "web"]},
    {"name": "endpoint", "source": {"type": "pathTemplate", "templates": ["/users/{id}", "/health"]}}
  ],
  "metrics": [
    {"name": "app_requests_total", "type": "counter", "tags": ["method", "variant", "status_class"]},
    {"name": "app_clients_total", "type": "counter", "tags": ["client"]},
    {"name": "app_request_duration_ms", "type": "histogram", "tags": ["route", "status_class"]},
    {"name": "app_response_bytes", "type": "histogram", "value": "responseBytes", "tags": ["endpoint"]},
    {"name": "app_request_bytes_total", "type": "counter", "value": "requestBytes"}
  ],
  "properties": true
}"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(config: &str, shared: &SharedState) -> Result<Plugin, String> {
    let engine = HostEngine::global().unwrap();
    let path = repo().join("dist/metric-tag.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    let module = engine.load_file(&path).unwrap();
    let spec = PluginSpec::new("metric-tag", "metric-tag")
        .with_configuration(config)
        .with_workers(WORKERS)
        .with_fail_policy(FailPolicy::FailClosed);
    Plugin::load(engine, &module, spec, shared).map_err(|e| format!("{e:?}"))
}

fn generated_stats_tags(config: &str) -> Vec<StatsTag> {
    let config = parse_config::<RawConfig, Config>(config.as_bytes()).unwrap();
    stats_tags(&config)
        .into_iter()
        .map(|(name, regex)| StatsTag::new(name, regex))
        .collect()
}

/// One request on `worker`, with the clock advanced by `elapsed` between the request headers
/// and the end of the stream.
fn timed_request(
    plugin: &mut Plugin,
    shared: &SharedState,
    worker: usize,
    request: &[(&str, &[u8])],
    status: u16,
    route: &str,
    elapsed: Duration,
) {
    let info = StreamInfo {
        route_name: route.to_owned(),
        ..StreamInfo::default()
    };
    let stream = plugin
        .new_stream_with(worker, &info, &FilterState::new())
        .unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in request {
        headers.append(name, value);
    }
    plugin.request_headers(stream, &mut headers, true).unwrap();
    shared.clock().advance(elapsed);
    let mut response = HeaderMap::new();
    response.append(":status", status.to_string());
    response.append("content-type", "text/plain");
    let out = plugin
        .response_headers(stream, &mut response, true)
        .unwrap();
    assert!(out.trap.is_none(), "{:?}", out.trap);
    plugin.finish(stream).unwrap();
}

#[test]
fn prometheus_text_shows_labels_values_and_histogram_buckets() {
    let shared = SharedState::new();
    let mut plugin = load(CONFIG, &shared).unwrap();
    let request: &[(&str, &[u8])] = &[
        (":method", b"GET"),
        (":path", b"/users/42?x=1"),
        (":authority", b"shop.test"),
        ("x-variant", b"blue"),
        ("x-client", b"ios"),
    ];
    for worker in 0..WORKERS {
        timed_request(
            &mut plugin,
            &shared,
            worker,
            request,
            200,
            "api",
            Duration::from_millis(7),
        );
    }
    timed_request(
        &mut plugin,
        &shared,
        1,
        &[(":method", b"PATCH"), (":path", b"/nope")],
        429,
        "outbound|80||svc.ns.svc.cluster.local",
        Duration::from_millis(2500),
    );
    let text = shared.prometheus(&generated_stats_tags(CONFIG)).unwrap();
    for expected in [
        "# TYPE app_requests_total counter",
        r#"app_requests_total{method="GET",variant="blue",status_class="2xx"} 4"#,
        r#"app_requests_total{method="other",variant="unknown",status_class="429"} 1"#,
        r#"app_clients_total{client="ios"} 4"#,
        r#"app_clients_total{client="unknown"} 1"#,
        // Labels come out in the order of the generated stats_tags (first use across metrics).
        "# TYPE app_request_duration_ms histogram",
        r#"app_request_duration_ms_bucket{status_class="2xx",route="api",le="10"} 4"#,
        r#"app_request_duration_ms_count{status_class="2xx",route="api"} 4"#,
        r#"app_request_duration_ms_sum{status_class="2xx",route="api"} 28"#,
        r#"app_request_duration_ms_count{status_class="429",route="other"} 1"#,
        r#"app_request_duration_ms_sum{status_class="429",route="other"} 2500"#,
        r#"app_response_bytes_count{endpoint="_users__id_"} 4"#,
        r#"app_response_bytes_count{endpoint="unknown"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}\n{text}");
    }
    // response.total_size = response header bytes (":status" + "200" + "content-type" +
    // "text/plain") with no body.
    let header_bytes = ":status".len() + 3 + "content-type".len() + "text/plain".len();
    assert!(
        text.contains(&format!(
            r#"app_response_bytes_sum{{endpoint="_users__id_"}} {}"#,
            4 * header_bytes
        )),
        "{text}"
    );
    // request.total_size: the request header bytes of the five requests.
    let first: usize = request.iter().map(|(k, v)| k.len() + v.len()).sum();
    let second = ":method".len() + 5 + ":path".len() + 5;
    assert!(
        text.contains(&format!(
            "app_request_bytes_total{{}} {}",
            4 * first + second
        )) || text.contains(&format!("app_request_bytes_total {}", 4 * first + second)),
        "{text}"
    );
}

#[test]
fn random_header_values_stay_within_the_configured_series() {
    let shared = SharedState::new();
    let mut plugin = load(CONFIG, &shared).unwrap();
    let memory_before: Vec<usize> = (0..WORKERS)
        .map(|w| plugin.memory_bytes(w).unwrap())
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Wall time bounds the run on a loaded machine (the filter's clock is the host's FakeClock).
    #[allow(
        clippy::disallowed_methods,
        reason = "test wall-clock budget, not filter time"
    )]
    let started = Instant::now();
    let mut sent = 0usize;
    let statuses = [200, 201, 302, 404, 429, 500, 503];
    while sent < 100_000 && started.elapsed() < Duration::from_secs(20) {
        let r = next();
        let variant = format!("v{}", r % 1000);
        let mut client = (r >> 10).to_le_bytes().to_vec();
        if r % 3 == 0 {
            client = format!("c{}", (r >> 20) % 50).into_bytes();
        }
        let method: &[u8] = if r % 2 == 0 { b"GET" } else { b"DELETE" };
        let request = Request::get(&format!("/users/{r}"), "shop.test")
            .with_header(":method", method)
            .with_header("x-variant", variant.into_bytes())
            .with_header("x-client", client);
        let status = statuses[(r >> 40) as usize % statuses.len()];
        let out = plugin
            .http_request(sent % WORKERS, request, Response::new(status))
            .unwrap();
        assert!(out.traps.is_empty(), "{:?}", out.traps);
        sent += 1;
    }
    let memory_after: Vec<usize> = (0..WORKERS)
        .map(|w| plugin.memory_bytes(w).unwrap())
        .collect();
    let config = parse_config::<RawConfig, Config>(CONFIG.as_bytes()).unwrap();
    let metrics = shared.metrics();
    for metric in &config.metrics {
        let series = metrics
            .keys()
            .filter(|name| {
                name.ends_with(&format!(";.;{}", metric.name))
                    || **name == format!("wasmcustom.{}", metric.name)
            })
            .count();
        assert!(
            series <= metric.series,
            "{}: {series} series > {}",
            metric.name,
            metric.series
        );
        eprintln!("{}: {series} series (bound {})", metric.name, metric.series);
    }
    // The per-proxy caps: 5 variants and 7 clients admitted, over 4 VMs.
    let variants: std::collections::BTreeSet<_> = metrics
        .keys()
        .filter_map(|name| name.split(";.;").find(|p| p.starts_with("variant=.=")))
        .collect();
    assert!(variants.len() <= 5 + 2, "{variants:?}");
    let clients = metrics
        .keys()
        .filter(|name| name.ends_with("app_clients_total"))
        .count();
    assert!(clients <= 7 + 2, "{clients}");
    eprintln!(
        "{sent} requests in {:?}; memory per VM before {memory_before:?}, after {memory_after:?}",
        started.elapsed()
    );
    for (before, after) in memory_before.iter().zip(&memory_after) {
        assert!(
            *after <= before + 256 * 1024,
            "memory grew from {before} to {after}"
        );
    }
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    for (config, field) in [
        (
            r#"{"tags": [{"name": "a", "source": {"type": "header"}}], "metrics": [{"name": "m", "type": "counter"}]}"#,
            "tags[0].source.name",
        ),
        (
            r#"{"metrics": [{"name": "m", "type": "counter", "tags": ["nope"]}]}"#,
            "metrics[0].tags[0]",
        ),
        (
            r#"{"metrics": [{"name": "m", "type": "gauge"}]}"#,
            "metrics[0].type",
        ),
    ] {
        let engine = HostEngine::global().unwrap();
        let module = engine
            .load_file(repo().join("dist/metric-tag.wasm"))
            .unwrap();
        let spec = PluginSpec::new("metric-tag", "metric-tag")
            .with_configuration(config)
            .with_workers(1);
        match Plugin::load(engine, &module, spec, &SharedState::new()) {
            Err(LoadError::Rejected { logs, .. }) => assert!(
                logs.iter().any(|l| l.message.contains(field)),
                "{config}: no log naming {field}: {logs:?}"
            ),
            Err(other) => panic!("{config}: {other:?}"),
            Ok(_) => panic!("{config}: accepted"),
        }
    }
}

#[test]
fn the_committed_schema_is_current_and_accepts_the_shipped_configs() {
    let path = repo().join("filters/metric-tag/config.schema.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        committed == meshward_filter_metric_tag::config::schema(),
        "filters/metric-tag/config.schema.json is stale: run `make schemas` and commit it"
    );
    let validator = jsonschema::validator_for(&committed).unwrap();
    let bench =
        std::fs::read_to_string(repo().join("tests/fixtures/metric-tag/bench.json")).unwrap();
    for config in [CONFIG, bench.as_str()] {
        let value: serde_json::Value = serde_json::from_str(config).unwrap();
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        parse_config::<RawConfig, Config>(config.as_bytes()).unwrap();
    }
    let typo: serde_json::Value =
        serde_json::from_str(r#"{"metrics": [{"name": "m", "type": "counter", "tag": []}]}"#)
            .unwrap();
    assert!(!validator.is_valid(&typo));
}

#[test]
fn the_generated_snippets_name_every_tag_a_metric_carries() {
    let config = parse_config::<RawConfig, Config>(CONFIG.as_bytes()).unwrap();
    let yaml = meshward_filter_metric_tag::stats_tags::snippets(&config);
    let parsed: serde_yaml::Value =
        serde_yaml::from_str(yaml.split("\n# Istio").next().unwrap()).unwrap();
    let tags = parsed["stats_config"]["stats_tags"].as_sequence().unwrap();
    let names: Vec<&str> = tags
        .iter()
        .map(|t| t["tag_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "method",
            "variant",
            "status_class",
            "client",
            "route",
            "endpoint"
        ]
    );
    for tag in tags {
        let regex = regex::Regex::new(tag["regex"].as_str().unwrap()).unwrap();
        let name = tag["tag_name"].as_str().unwrap();
        let stat = format!("wasmcustom.{name}=.=v-1;.;app_requests_total");
        let captures = regex.captures(&stat).unwrap();
        assert_eq!(&captures[2], "v-1");
    }
    assert!(yaml.contains("extraStatTags:\n  - method\n"));
    assert!(yaml.contains("- '.*app_request_duration_ms.*'"));
}
