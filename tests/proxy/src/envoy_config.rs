//! The subset of Envoy's bootstrap that the dev proxy understands, read from `envoy-local/envoy.yaml`.
//!
//! Every struct denies unknown fields, and `typed_config` blocks are dispatched on their `@type`, so a
//! field or extension the dev proxy would not honour stops it at start with the field's YAML path —
//! the dev proxy never serves a config it silently misreads. [`load`] turns the raw document into a
//! validated [`ProxyConfig`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshward_core::route_match::{RouteMatch, RouteMatcher};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const ROUTER_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const STDOUT_ACCESS_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// A config the dev proxy refuses, with the YAML path of the offending field.
#[derive(Debug)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "envoy config: at `{}`: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        reason: reason.into(),
    }
}

fn join(prefix: &str, suffix: &str) -> String {
    match (prefix.is_empty(), suffix.is_empty() || suffix == ".") {
        (true, _) => suffix.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if suffix.starts_with('[') => format!("{prefix}{suffix}"),
        (false, false) => format!("{prefix}.{suffix}"),
    }
}

/// Deserializes `value` into `T`, naming the full YAML path of the first field that does not fit.
fn decode<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let inner = error.path().to_string();
        err(join(path, &inner), error.into_inner().to_string())
    })
}

/// Splits a `typed_config` into its `@type` and the remaining fields.
fn split_typed(value: Value, path: &str) -> Result<(String, Value), ConfigError> {
    let Value::Mapping(mut map) = value else {
        return Err(err(path, "expected a mapping with an `@type` field"));
    };
    let type_url = match map.remove("@type") {
        Some(Value::String(type_url)) => type_url,
        Some(_) => return Err(err(join(path, "@type"), "expected a string")),
        None => return Err(err(path, "missing `@type`")),
    };
    Ok((type_url, Value::Mapping(map)))
}

// ---- raw Envoy structures (snake_case proto JSON names) ----------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    admin: Option<Admin>,
    stats_config: Option<StatsConfig>,
    static_resources: StaticResources,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Admin {
    address: Address,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Address {
    socket_address: SocketAddress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketAddress {
    address: String,
    port_value: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsConfig {
    #[serde(default)]
    stats_tags: Vec<RawStatsTag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatsTag {
    tag_name: String,
    regex: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticResources {
    listeners: Vec<Listener>,
    #[serde(default)]
    clusters: Vec<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listener {
    #[expect(
        dead_code,
        reason = "accepted as Envoy writes it; the dev proxy has no use for it"
    )]
    #[serde(default)]
    name: String,
    address: Address,
    filter_chains: Vec<FilterChain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterChain {
    filters: Vec<NamedTypedConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedTypedConfig {
    name: String,
    typed_config: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConnectionManager {
    #[expect(
        dead_code,
        reason = "accepted as Envoy writes it; the dev proxy has no use for it"
    )]
    stat_prefix: String,
    generate_request_id: Option<bool>,
    #[serde(default)]
    access_log: Vec<NamedTypedConfig>,
    route_config: RouteConfiguration,
    http_filters: Vec<NamedTypedConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StdoutAccessLog {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Router {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfiguration {
    #[expect(
        dead_code,
        reason = "accepted as Envoy writes it; the dev proxy has no use for it"
    )]
    #[serde(default)]
    name: String,
    virtual_hosts: Vec<RawVirtualHost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualHost {
    name: String,
    domains: Vec<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    name: String,
    /// Exactly Envoy's `RouteMatch`: the core's types, which the filters' rules use too.
    #[serde(rename = "match")]
    route_match: RouteMatch,
    route: Option<RawRouteAction>,
    direct_response: Option<RawDirectResponse>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteAction {
    cluster: Option<String>,
    weighted_clusters: Option<RawWeightedClusters>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeightedClusters {
    clusters: Vec<RawClusterWeight>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterWeight {
    name: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectResponse {
    status: u16,
    body: Option<RawInlineData>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInlineData {
    inline_string: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWasm {
    config: RawPluginConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPluginConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    root_id: String,
    vm_config: RawVmConfig,
    configuration: Option<Value>,
    #[serde(default)]
    fail_open: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVmConfig {
    #[serde(default)]
    vm_id: String,
    runtime: String,
    code: RawAsyncDataSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsyncDataSource {
    local: RawLocalFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalFile {
    filename: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStringValue {
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    #[serde(rename = "type")]
    discovery_type: Option<String>,
    connect_timeout: Option<String>,
    lb_policy: Option<String>,
    load_assignment: RawLoadAssignment,
    /// Either form switches the cluster to HTTP/2 (what gRPC services need); their contents
    /// (window sizes…) do not matter to the dev proxy.
    http2_protocol_options: Option<serde_yaml::Value>,
    typed_extension_protocol_options: Option<serde_yaml::Value>,
}

/// Whether a YAML tree has the key `name` anywhere (e.g. `http2_protocol_options` inside
/// `typed_extension_protocol_options.<HttpProtocolOptions>.explicit_http_config`).
fn mentions_key(value: &serde_yaml::Value, name: &str) -> bool {
    match value {
        serde_yaml::Value::Mapping(map) => map
            .iter()
            .any(|(k, v)| k.as_str() == Some(name) || mentions_key(v, name)),
        serde_yaml::Value::Sequence(items) => items.iter().any(|v| mentions_key(v, name)),
        serde_yaml::Value::Tagged(tagged) => mentions_key(&tagged.value, name),
        _ => false,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoadAssignment {
    cluster_name: String,
    endpoints: Vec<RawLocalityEndpoints>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalityEndpoints {
    lb_endpoints: Vec<RawLbEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLbEndpoint {
    endpoint: RawEndpoint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: Address,
}

// ---- validated model ---------------------------------------------------------------------------

/// Everything the dev proxy serves, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listener_port: u16,
    pub admin_port: Option<u16>,
    pub stats_tags: Vec<StatsTag>,
    /// The `envoy.filters.http.wasm` filters in chain order (decode order).
    pub wasm_filters: Vec<WasmFilterConfig>,
    pub virtual_hosts: Vec<VirtualHostConfig>,
    pub clusters: BTreeMap<String, ClusterConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsTag {
    pub tag_name: String,
    pub regex: String,
}

#[derive(Debug, Clone)]
pub struct WasmFilterConfig {
    /// `config.name` (Envoy's plugin name, the `plugin_name` property).
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    /// `vm_config.code.local.filename` as written in envoy.yaml.
    pub module_path: PathBuf,
    /// The plugin `configuration` string (a `google.protobuf.StringValue`), empty when absent.
    pub configuration: String,
    pub fail_open: bool,
    /// YAML path of this filter, for messages.
    pub yaml_path: String,
}

#[derive(Debug, Clone)]
pub struct VirtualHostConfig {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// The route's `match` as written.
    pub route_match: RouteMatch,
    /// The same, validated and compiled.
    pub matcher: RouteMatcher,
    pub action: RouteActionConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteActionConfig {
    Cluster {
        name: String,
        timeout: Duration,
    },
    Weighted {
        clusters: Vec<(String, u32)>,
        timeout: Duration,
    },
    Direct {
        status: u16,
        body: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    /// `host:port` of the first endpoint, as written in envoy.yaml (docker service names).
    pub address: String,
    pub connect_timeout: Duration,
    /// Upstream speaks HTTP/2 (`http2_protocol_options`, directly or in
    /// `typed_extension_protocol_options`): filters' gRPC callouts go there.
    pub http2: bool,
}

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default cluster connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and validates an envoy.yaml file.
pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
    parse(&text)
}

/// Parses and validates envoy.yaml text.
pub fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
    let document: Value =
        serde_yaml::from_str(text).map_err(|e| err("", format!("not valid YAML: {e}")))?;
    let bootstrap: Bootstrap = decode(document, "")?;
    validate(bootstrap)
}

/// Parses a duration the way proto3 JSON writes `google.protobuf.Duration`: seconds with an `s`
/// suffix and optional fraction ("1s", "0.250s").
pub fn parse_proto_duration(text: &str) -> Option<Duration> {
    let seconds = text.strip_suffix('s')?;
    if seconds.is_empty() || seconds.starts_with('-') || seconds.starts_with('+') {
        return None;
    }
    let value: f64 = seconds.parse().ok()?;
    if !value.is_finite() || value > 315_576_000_000.0 {
        return None;
    }
    Some(Duration::from_secs_f64(value))
}

fn duration_field(
    text: Option<&String>,
    path: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => parse_proto_duration(text).ok_or_else(|| {
            err(
                path,
                format!("`{text}` is not a protobuf Duration (e.g. \"1s\", \"0.25s\")"),
            )
        }),
    }
}

fn validate(bootstrap: Bootstrap) -> Result<ProxyConfig, ConfigError> {
    let admin_port = bootstrap
        .admin
        .map(|admin| admin.address.socket_address.port_value);
    let stats_tags = validate_stats_tags(bootstrap.stats_config)?;

    let resources = bootstrap.static_resources;
    let clusters = validate_clusters(resources.clusters)?;

    let [listener] = <[Listener; 1]>::try_from(resources.listeners).map_err(|listeners| {
        err(
            "static_resources.listeners",
            format!(
                "the dev proxy serves exactly one listener, found {}",
                listeners.len()
            ),
        )
    })?;
    let listener_path = "static_resources.listeners[0]";
    let listener_port = listener.address.socket_address.port_value;
    let [chain] = <[FilterChain; 1]>::try_from(listener.filter_chains).map_err(|chains| {
        err(
            format!("{listener_path}.filter_chains"),
            format!(
                "the dev proxy serves exactly one filter chain, found {}",
                chains.len()
            ),
        )
    })?;
    let chain_path = format!("{listener_path}.filter_chains[0].filters");
    let [network_filter] = <[NamedTypedConfig; 1]>::try_from(chain.filters).map_err(|filters| {
        err(
            &chain_path,
            format!(
                "the dev proxy expects exactly one network filter (the http_connection_manager), found {}",
                filters.len()
            ),
        )
    })?;
    let hcm_path = format!("{chain_path}[0].typed_config");
    let (type_url, body) = split_typed(network_filter.typed_config, &hcm_path)?;
    if type_url != HCM_TYPE {
        return Err(err(
            join(&hcm_path, "@type"),
            format!("unsupported network filter `{type_url}`; the dev proxy only runs {HCM_TYPE}"),
        ));
    }
    let hcm: HttpConnectionManager = decode(body, &hcm_path)?;
    if hcm.generate_request_id != Some(false) {
        return Err(err(
            join(&hcm_path, "generate_request_id"),
            "must be set to false: Envoy would otherwise generate x-request-id before the filters \
             run, and the dev proxy does not emulate that",
        ));
    }
    for (index, log) in hcm.access_log.into_iter().enumerate() {
        let log_path = format!("{hcm_path}.access_log[{index}].typed_config");
        let (type_url, body) = split_typed(log.typed_config, &log_path)?;
        if type_url != STDOUT_ACCESS_LOG_TYPE {
            return Err(err(
                join(&log_path, "@type"),
                format!("unsupported access logger `{type_url}`; only {STDOUT_ACCESS_LOG_TYPE}"),
            ));
        }
        let _: StdoutAccessLog = decode(body, &log_path)?;
    }
    let wasm_filters = validate_http_filters(hcm.http_filters, &hcm_path)?;
    let virtual_hosts = validate_route_config(
        hcm.route_config,
        &format!("{hcm_path}.route_config"),
        &clusters,
    )?;

    Ok(ProxyConfig {
        listener_port,
        admin_port,
        stats_tags,
        wasm_filters,
        virtual_hosts,
        clusters,
    })
}

fn validate_stats_tags(config: Option<StatsConfig>) -> Result<Vec<StatsTag>, ConfigError> {
    let mut tags = Vec::new();
    for (index, raw) in config
        .map(|c| c.stats_tags)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = format!("stats_config.stats_tags[{index}].regex");
        regex::Regex::new(&raw.regex).map_err(|e| err(&path, format!("invalid regex: {e}")))?;
        tags.push(StatsTag {
            tag_name: raw.tag_name,
            regex: raw.regex,
        });
    }
    Ok(tags)
}

fn validate_http_filters(
    filters: Vec<NamedTypedConfig>,
    hcm_path: &str,
) -> Result<Vec<WasmFilterConfig>, ConfigError> {
    let count = filters.len();
    let mut wasm_filters = Vec::new();
    let mut saw_router = false;
    for (index, filter) in filters.into_iter().enumerate() {
        let path = format!("{hcm_path}.http_filters[{index}]");
        let typed_path = format!("{path}.typed_config");
        let (type_url, body) = split_typed(filter.typed_config, &typed_path)?;
        match type_url.as_str() {
            WASM_FILTER_TYPE => {
                let wasm: RawWasm = decode(body, &typed_path)?;
                wasm_filters.push(validate_wasm(wasm.config, &filter.name, &typed_path)?);
            }
            ROUTER_FILTER_TYPE => {
                let _: Router = decode(body, &typed_path)?;
                if index + 1 != count {
                    return Err(err(path, "the router must be the last HTTP filter"));
                }
                saw_router = true;
            }
            other => {
                return Err(err(
                    join(&typed_path, "@type"),
                    format!(
                        "unsupported HTTP filter `{other}` (filter `{}`); the dev proxy runs only \
                         {WASM_FILTER_TYPE} and the router",
                        filter.name
                    ),
                ));
            }
        }
    }
    if !saw_router {
        return Err(err(
            format!("{hcm_path}.http_filters"),
            "the last HTTP filter must be the router",
        ));
    }
    Ok(wasm_filters)
}

fn validate_wasm(
    config: RawPluginConfig,
    filter_name: &str,
    typed_path: &str,
) -> Result<WasmFilterConfig, ConfigError> {
    let config_path = format!("{typed_path}.config");
    let runtime = &config.vm_config.runtime;
    if runtime != "envoy.wasm.runtime.v8" && runtime != "envoy.wasm.runtime.wasmtime" {
        return Err(err(
            format!("{config_path}.vm_config.runtime"),
            format!(
                "unsupported runtime `{runtime}`; use envoy.wasm.runtime.v8 (the dev proxy runs it on wasmtime)"
            ),
        ));
    }
    let configuration = match config.configuration {
        None => String::new(),
        Some(any) => {
            let any_path = format!("{config_path}.configuration");
            let (type_url, body) = split_typed(any, &any_path)?;
            if type_url != STRING_VALUE_TYPE {
                return Err(err(
                    join(&any_path, "@type"),
                    format!(
                        "unsupported configuration type `{type_url}`; use {STRING_VALUE_TYPE} holding JSON"
                    ),
                ));
            }
            let value: RawStringValue = decode(body, &any_path)?;
            value.value
        }
    };
    let plugin_name = if config.name.is_empty() {
        filter_name.to_owned()
    } else {
        config.name
    };
    Ok(WasmFilterConfig {
        plugin_name,
        root_id: config.root_id,
        vm_id: config.vm_config.vm_id,
        module_path: PathBuf::from(config.vm_config.code.local.filename),
        configuration,
        fail_open: config.fail_open,
        yaml_path: typed_path.to_owned(),
    })
}

fn validate_route_config(
    config: RouteConfiguration,
    path: &str,
    clusters: &BTreeMap<String, ClusterConfig>,
) -> Result<Vec<VirtualHostConfig>, ConfigError> {
    let mut virtual_hosts = Vec::new();
    for (vh_index, raw_vh) in config.virtual_hosts.into_iter().enumerate() {
        let vh_path = format!("{path}.virtual_hosts[{vh_index}]");
        if raw_vh.domains.is_empty() {
            return Err(err(
                format!("{vh_path}.domains"),
                "needs at least one domain",
            ));
        }
        let mut routes = Vec::new();
        for (route_index, raw_route) in raw_vh.routes.into_iter().enumerate() {
            let route_path = format!("{vh_path}.routes[{route_index}]");
            routes.push(validate_route(raw_route, &route_path, clusters)?);
        }
        virtual_hosts.push(VirtualHostConfig {
            name: raw_vh.name,
            domains: raw_vh.domains,
            routes,
        });
    }
    Ok(virtual_hosts)
}

fn validate_route(
    raw: RawRoute,
    path: &str,
    clusters: &BTreeMap<String, ClusterConfig>,
) -> Result<RouteConfig, ConfigError> {
    let matcher = RouteMatcher::compile(&raw.route_match)
        .map_err(|error| err(error.field_under(&format!("{path}.match")), error.reason))?;
    let action = match (raw.route, raw.direct_response) {
        (Some(action), None) => {
            let action_path = format!("{path}.route");
            let timeout = duration_field(
                action.timeout.as_ref(),
                &format!("{action_path}.timeout"),
                DEFAULT_ROUTE_TIMEOUT,
            )?;
            match (action.cluster, action.weighted_clusters) {
                (Some(name), None) => {
                    require_cluster(clusters, &name, &format!("{action_path}.cluster"))?;
                    RouteActionConfig::Cluster { name, timeout }
                }
                (None, Some(weighted)) => {
                    let weighted_path = format!("{action_path}.weighted_clusters.clusters");
                    if weighted.clusters.is_empty() {
                        return Err(err(weighted_path, "needs at least one cluster"));
                    }
                    let mut total: u64 = 0;
                    let mut list = Vec::new();
                    for (index, entry) in weighted.clusters.into_iter().enumerate() {
                        require_cluster(
                            clusters,
                            &entry.name,
                            &format!("{weighted_path}[{index}].name"),
                        )?;
                        total += u64::from(entry.weight);
                        list.push((entry.name, entry.weight));
                    }
                    if total == 0 {
                        return Err(err(weighted_path, "the weights add up to zero"));
                    }
                    RouteActionConfig::Weighted {
                        clusters: list,
                        timeout,
                    }
                }
                _ => {
                    return Err(err(
                        action_path,
                        "needs exactly one of `cluster`, `weighted_clusters`",
                    ));
                }
            }
        }
        (None, Some(direct)) => RouteActionConfig::Direct {
            status: direct.status,
            body: direct.body.map(|b| b.inline_string).unwrap_or_default(),
        },
        _ => return Err(err(path, "needs exactly one of `route`, `direct_response`")),
    };
    Ok(RouteConfig {
        name: raw.name,
        route_match: raw.route_match,
        matcher,
        action,
    })
}

fn require_cluster(
    clusters: &BTreeMap<String, ClusterConfig>,
    name: &str,
    path: &str,
) -> Result<(), ConfigError> {
    if clusters.contains_key(name) {
        Ok(())
    } else {
        Err(err(
            path,
            format!("unknown cluster `{name}` (not in static_resources.clusters)"),
        ))
    }
}

fn validate_clusters(raw: Vec<RawCluster>) -> Result<BTreeMap<String, ClusterConfig>, ConfigError> {
    let mut clusters = BTreeMap::new();
    for (index, cluster) in raw.into_iter().enumerate() {
        let path = format!("static_resources.clusters[{index}]");
        match cluster.discovery_type.as_deref() {
            None | Some("STATIC" | "STRICT_DNS" | "LOGICAL_DNS") => {}
            Some(other) => {
                return Err(err(
                    format!("{path}.type"),
                    format!(
                        "unsupported cluster type `{other}`; use STATIC, STRICT_DNS or LOGICAL_DNS"
                    ),
                ));
            }
        }
        match cluster.lb_policy.as_deref() {
            None | Some("ROUND_ROBIN") => {}
            Some(other) => {
                return Err(err(
                    format!("{path}.lb_policy"),
                    format!(
                        "unsupported lb_policy `{other}`; the dev proxy uses the first endpoint"
                    ),
                ));
            }
        }
        let connect_timeout = duration_field(
            cluster.connect_timeout.as_ref(),
            &format!("{path}.connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        if cluster.load_assignment.cluster_name != cluster.name {
            return Err(err(
                format!("{path}.load_assignment.cluster_name"),
                format!(
                    "`{}` differs from the cluster name `{}`",
                    cluster.load_assignment.cluster_name, cluster.name
                ),
            ));
        }
        let first = cluster
            .load_assignment
            .endpoints
            .into_iter()
            .flat_map(|locality| locality.lb_endpoints)
            .next()
            .ok_or_else(|| {
                err(
                    format!("{path}.load_assignment.endpoints"),
                    "needs at least one endpoint",
                )
            })?;
        let socket = first.endpoint.address.socket_address;
        let address = format!("{}:{}", socket.address, socket.port_value);
        if clusters.contains_key(&cluster.name) {
            return Err(err(
                format!("{path}.name"),
                format!("duplicate cluster `{}`", cluster.name),
            ));
        }
        let http2 = cluster.http2_protocol_options.is_some()
            || cluster
                .typed_extension_protocol_options
                .as_ref()
                .is_some_and(|v| mentions_key(v, "http2_protocol_options"));
        clusters.insert(
            cluster.name.clone(),
            ClusterConfig {
                name: cluster.name,
                address,
                connect_timeout,
                http2,
            },
        );
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_envoy_yaml() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy-local/envoy.yaml");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn shipped_envoy_yaml_is_understood() {
        let config = parse(&repo_envoy_yaml()).unwrap();
        assert_eq!(config.listener_port, 10000);
        assert_eq!(config.admin_port, Some(9901));
        assert!(config.stats_tags.iter().any(|t| t.tag_name == "action"));
        let first = config.wasm_filters.first().unwrap();
        assert_eq!(
            first.module_path,
            PathBuf::from("/etc/envoy/wasm/trace-id.wasm")
        );
        assert!(first.fail_open);
        serde_json::from_str::<serde_json::Value>(&first.configuration).unwrap();
        assert!(config.clusters.contains_key("echo-v1"));
        assert!(config.clusters.contains_key("jwks"));
        let routes = &config.virtual_hosts.first().unwrap().routes;
        assert!(
            routes
                .iter()
                .any(|r| matches!(r.action, RouteActionConfig::Direct { .. }))
        );
        assert!(
            routes
                .iter()
                .any(|r| matches!(r.action, RouteActionConfig::Weighted { .. }))
        );
    }

    #[test]
    fn clusters_with_http2_options_are_http2() {
        let base = repo_envoy_yaml();
        let from = "        cluster_name: echo-v1\n";
        assert!(base.contains(from));
        assert!(
            !parse(&base).unwrap().clusters.values().any(|c| c.http2),
            "no shipped cluster is HTTP/2 yet"
        );
        let direct = base.replacen(
            "    - name: echo-v1\n",
            "    - name: echo-v1\n      http2_protocol_options: {}\n",
            1,
        );
        let typed = base.replacen(
            "    - name: echo-v1\n",
            "    - name: echo-v1\n      typed_extension_protocol_options:\n        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n          explicit_http_config:\n            http2_protocol_options: {}\n",
            1,
        );
        for yaml in [direct, typed] {
            assert_ne!(yaml, base, "fixture text not found");
            let config = parse(&yaml).unwrap();
            assert!(config.clusters["echo-v1"].http2);
            assert!(!config.clusters["jwks"].http2);
        }
    }

    /// Each mutation of the shipped file must be refused, naming this path and reason.
    #[test]
    fn unknown_or_unsupported_fields_are_refused_with_their_path() {
        let base = repo_envoy_yaml();
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "        cluster_name: echo-v1\n",
                "        cluster_name: echo-v1\n        policy: {}\n",
                "static_resources.clusters[0].load_assignment.policy",
                "unknown field `policy`",
            ),
            (
                "                        fail_open: true\n",
                "                        fail_open: true\n                        failure_policy: FAIL_RELOAD\n",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config.failure_policy",
                "unknown field `failure_policy`",
            ),
            (
                "                          route: { cluster: echo-v2 }\n                        - name: v2",
                "                          route: { cluster: echo-v2, prefix_rewrite: /x }\n                        - name: v2",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].route.prefix_rewrite",
                "unknown field `prefix_rewrite`",
            ),
            (
                "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
                // The router is the last filter: index = number of wasm filters (trace-id,
                // metric-tag, jwt-auth, ab-routing, rate-limit).
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[5].typed_config.@type",
                "unsupported HTTP filter",
            ),
            (
                "generate_request_id: false",
                "generate_request_id: true",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.generate_request_id",
                "must be set to false",
            ),
            (
                "stats_config:\n",
                "stats_config:\n  use_all_default_tags: false\n",
                "stats_config.use_all_default_tags",
                "unknown field",
            ),
            (
                "                          route: { cluster: echo-v2 }\n                        - name: v2",
                "                          route: { cluster: echo-v9 }\n                        - name: v2",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].route.cluster",
                "unknown cluster `echo-v9`",
            ),
            (
                "match: { prefix: /v2/ }",
                "match: { prefix: /v2/, path: /v2 }",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[2].match",
                "exactly one of prefix, path, safe_regex, path_separated_prefix",
            ),
            (
                "match: { prefix: /v2/ }",
                "match: { prefix: /v2/, runtime_fraction: {} }",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[2].match.runtime_fraction",
                "unknown field `runtime_fraction`",
            ),
            (
                "match: { prefix: /v2/ }",
                "match: { safe_regex: { regex: \"/v2/(\" } }",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[2].match.safe_regex.regex",
                "",
            ),
            (
                "string_match: { exact: b }",
                "string_match: { exact: b }\n                                invert_match: true\n                                invertMatch: true",
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].match.headers[0]",
                "duplicate field `invertMatch`",
            ),
            (
                "connect_timeout: 1s",
                "connect_timeout: soon",
                "static_resources.clusters[0].connect_timeout",
                "not a protobuf Duration",
            ),
        ];
        for (from, to, path, reason) in cases {
            assert!(base.contains(from), "fixture text not found: {from}");
            let text = base.replacen(from, to, 1);
            let error = parse(&text).unwrap_err();
            assert_eq!(error.path, *path, "for mutation {to:?}: {error}");
            assert!(
                error.reason.contains(reason),
                "for mutation {to:?}: {error}"
            );
        }
    }

    #[test]
    fn proto_durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1s", Some(Duration::from_secs(1))),
            ("0.25s", Some(Duration::from_millis(250))),
            ("15s", Some(Duration::from_secs(15))),
            ("1", None),
            ("-1s", None),
            ("s", None),
            ("1ms", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_proto_duration(text), *expected, "{text}");
        }
    }
}
