//! `make run`: the demo upstreams (one echo per `echo-*` cluster, the JWKS file server for `jwks`)
//! and the proxy in one process, then ready-to-paste `curl` examples for what the config holds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::envoy_config::{ProxyConfig, RouteActionConfig};
use crate::http;
use crate::upstreams;

/// Starts an echo upstream named `name` on `listen`; returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn start_echo(
    listen: &str,
    name: &str,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding echo {name} on {listen}"))?;
    let addr = listener.local_addr()?;
    let name = name.to_owned();
    tokio::spawn(http::serve(listener, shutdown.clone(), move |request| {
        let answer = upstreams::echo(&name, &request);
        async move { answer }
    }));
    Ok(addr)
}

/// Starts a server answering every GET with the JSON file at `file`; returns the bound address.
///
/// # Errors
/// The file cannot be read or is not JSON; the address cannot be bound.
pub async fn start_json_file(
    listen: &str,
    file: &Path,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let document = Bytes::from(text);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the JWKS server on {listen}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(http::serve(listener, shutdown.clone(), move |request| {
        let answer = upstreams::static_json(&document, &request);
        async move { answer }
    }));
    Ok(addr)
}

/// The demo upstream behind each cluster: `echo-<name>` → echo named `<name>`, `jwks` → the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoUpstream {
    Echo(String),
    JwksFile,
}

/// Which demo upstream serves each cluster (clusters without one are reported by the caller).
pub fn demo_upstreams(config: &ProxyConfig) -> BTreeMap<String, Option<DemoUpstream>> {
    config
        .clusters
        .keys()
        .map(|name| {
            let upstream = if let Some(variant) = name.strip_prefix("echo-") {
                Some(DemoUpstream::Echo(variant.to_owned()))
            } else if name == "jwks" {
                Some(DemoUpstream::JwksFile)
            } else {
                None
            };
            (name.clone(), upstream)
        })
        .collect()
}

/// Ready-to-paste `curl` examples for the filters and routes in `config`.
pub fn curl_examples(
    config: &ProxyConfig,
    listener: SocketAddr,
    admin: Option<SocketAddr>,
) -> String {
    let base = format!("http://{listener}");
    let mut out = String::new();
    let mut number = 0;
    let mut example = |out: &mut String, what: &str, command: String| {
        number += 1;
        let _ = writeln!(out, "  # {number}. {what}\n  {command}\n");
    };

    let modules: Vec<String> = config
        .wasm_filters
        .iter()
        .filter_map(|f| {
            f.module_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    if modules.iter().any(|m| m == "trace-id") {
        example(
            &mut out,
            "trace-id: the upstream (echo JSON) receives an x-request-id and a traceparent; the response carries x-request-id and traceresponse",
            format!("curl -si {base}/anything"),
        );
        example(
            &mut out,
            "trace-id: an invalid traceparent is not propagated: the echo shows a fresh trace instead",
            format!("curl -s -H 'traceparent: 00-ABC-not-valid-01' {base}/anything"),
        );
    }

    let rule_prefix = |module: &str| {
        config
            .wasm_filters
            .iter()
            .find(|f| f.module_path.file_stem().is_some_and(|s| s == module))
            .and_then(|f| first_rule_prefix(&f.configuration))
    };
    if let Some(prefix) = rule_prefix("jwt-auth") {
        let tokens = "tests/fixtures/jwt-auth";
        example(
            &mut out,
            "jwt-auth: a valid token: 200, the upstream sees the subject as x-jwt-sub (and no token)",
            format!(
                "curl -si -H \"authorization: Bearer $(cat {tokens}/bench-es256.token)\" {base}{prefix}demo"
            ),
        );
        example(
            &mut out,
            "jwt-auth: an expired token: 401 with WWW-Authenticate: Bearer … error=\"invalid_token\"",
            format!(
                "curl -si -H \"authorization: Bearer $(cat {tokens}/demo-expired-es256.token)\" {base}{prefix}demo"
            ),
        );
        example(
            &mut out,
            "jwt-auth: no token: 401 with WWW-Authenticate: Bearer realm=… (no error attribute)",
            format!("curl -si {base}{prefix}demo"),
        );
    }
    let ab_routing = config
        .wasm_filters
        .iter()
        .find(|f| f.module_path.file_stem().is_some_and(|s| s == "ab-routing"))
        .and_then(|f| serde_json::from_str::<serde_json::Value>(&f.configuration).ok());
    // Headers an ab-routing experiment owns: the filter sets them (and strips a client's), so a
    // route on them is shown through the filter's examples, not with a client-sent header.
    let experiment = ab_routing
        .as_ref()
        .and_then(|c| c.get("experiments")?.get(0).cloned());
    let owned_header = experiment
        .as_ref()
        .and_then(|e| e.get("header")?.as_str().map(str::to_owned));
    if let (Some(experiment), Some(header)) = (&experiment, &owned_header) {
        let prefix = experiment
            .get("match")
            .and_then(|m| m.get("prefix"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("/");
        example(
            &mut out,
            &format!(
                "ab-routing: each user (x-user-id) gets a sticky variant in {header}; b is served by echo-v2"
            ),
            format!(
                "for u in alice bob carol dave; do curl -s -H \"x-user-id: $u\" {base}{prefix}demo | grep -o '\"upstream\":\"[^\"]*\"'; done"
            ),
        );
        example(
            &mut out,
            "ab-routing: a client cannot pick its variant; QA can, with the override secret",
            format!(
                "curl -s -H '{header}: b' -H 'x-meshward-ab-secret: demo-only-qa-secret' {base}{prefix}demo | grep -o '\"upstream\":\"[^\"]*\"'"
            ),
        );
    }

    if let Some(prefix) = rule_prefix("rate-limit") {
        example(
            &mut out,
            "rate-limit: a token bucket per client; once it is empty, 429 with retry-after (headers: x-ratelimit-* and RateLimit-*)",
            format!(
                "for i in $(seq 8); do curl -si {base}{prefix}demo | grep -iE '^(HTTP|x-ratelimit|ratelimit|retry-after)'; done"
            ),
        );
    }

    for route in config.virtual_hosts.iter().flat_map(|vh| vh.routes.iter()) {
        // A path that the route's `match` accepts (regex routes have no obvious one: skipped).
        let m = &route.route_match;
        let path = if let Some(prefix) = &m.prefix {
            format!("{prefix}demo")
        } else if let Some(path) = m.path.as_ref().or(m.path_separated_prefix.as_ref()) {
            path.clone()
        } else {
            continue;
        };
        let header_flags: Vec<String> = m
            .headers
            .iter()
            .filter(|h| !h.invert_match)
            .filter_map(|h| {
                let exact = h
                    .exact_match
                    .as_ref()
                    .or(h.string_match.as_ref().and_then(|s| s.exact.as_ref()));
                match (exact, h.present_match) {
                    (Some(value), _) => Some(format!("-H '{}: {value}' ", h.name)),
                    (None, Some(true)) => Some(format!("-H '{}: 1' ", h.name)),
                    _ => None,
                }
            })
            .collect();
        let headers = header_flags.concat();
        if owned_header
            .as_ref()
            .is_some_and(|owned| m.headers.iter().any(|h| &h.name == owned))
        {
            continue;
        }
        match &route.action {
            RouteActionConfig::Direct { status, .. } => example(
                &mut out,
                &format!(
                    "route `{}`: answered by the route table itself (direct_response {status})",
                    route.name
                ),
                format!("curl -si {base}{path}"),
            ),
            RouteActionConfig::Cluster { name, .. } if !headers.is_empty() => example(
                &mut out,
                &format!(
                    "route `{}`: chosen by a header match, served by {name} (see \"upstream\")",
                    route.name
                ),
                format!("curl -s {headers}{base}{path}"),
            ),
            RouteActionConfig::Weighted { clusters, .. } => {
                let split: Vec<String> = clusters.iter().map(|(n, w)| format!("{n} {w}")).collect();
                example(
                    &mut out,
                    &format!(
                        "route `{}`: weighted clusters ({}): the picks follow the weights",
                        route.name,
                        split.join(" / ")
                    ),
                    format!(
                        "for i in $(seq 10); do curl -s {headers}{base}{path} | grep -o '\"upstream\":\"[^\"]*\"'; done"
                    ),
                );
            }
            RouteActionConfig::Cluster { .. } => {}
        }
    }
    if let Some(admin) = admin {
        example(
            &mut out,
            "metrics: the filters' counters with their tags as labels",
            format!("curl -s http://{admin}/stats/prometheus | grep meshward"),
        );
    }
    out
}

/// The `match.prefix` of a filter's first rule (rate-limit, jwt-auth), for the demo (a rule
/// without one applies to `/`).
fn first_rule_prefix(configuration: &str) -> Option<String> {
    let config: serde_json::Value = serde_json::from_str(configuration).ok()?;
    let rule = config.get("rules")?.get(0)?;
    Some(
        rule.get("match")
            .and_then(|m| m.get("prefix"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("/")
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProxyConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy-local/envoy.yaml");
        crate::envoy_config::load(&path).unwrap()
    }

    #[test]
    fn every_shipped_cluster_has_a_demo_upstream() {
        let upstreams = demo_upstreams(&config());
        assert_eq!(
            upstreams.get("echo-v1"),
            Some(&Some(DemoUpstream::Echo("v1".to_owned())))
        );
        assert_eq!(upstreams.get("jwks"), Some(&Some(DemoUpstream::JwksFile)));
        assert!(upstreams.values().all(Option::is_some), "{upstreams:?}");
    }

    #[test]
    fn examples_cover_trace_id_rate_limit_routes_and_metrics() {
        let text = curl_examples(
            &config(),
            "127.0.0.1:10000".parse().unwrap(),
            Some("127.0.0.1:9901".parse().unwrap()),
        );
        for expected in [
            "curl -si http://127.0.0.1:10000/anything",
            "traceparent: 00-ABC-not-valid-01",
            "-H 'x-meshward-variant: b' http://127.0.0.1:10000/demo",
            "curl -si http://127.0.0.1:10000/hello",
            "/split/demo",
            "http://127.0.0.1:10000/limited/demo | grep -iE",
            "bench-es256.token)\" http://127.0.0.1:10000/secure/demo",
            "demo-expired-es256.token)\" http://127.0.0.1:10000/secure/demo",
            "curl -si http://127.0.0.1:10000/secure/demo",
            "-H \"x-user-id: $u\" http://127.0.0.1:10000/ab/demo",
            "x-meshward-ab-secret: demo-only-qa-secret",
            "http://127.0.0.1:9901/stats/prometheus",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
