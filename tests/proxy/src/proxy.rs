//! The dev proxy itself: each request runs through the Wasm filter chain on `meshward-host`
//! (decode in filter order, encode in reverse, local replies back through the filters that saw the
//! request), is routed as Envoy routes it, and goes to its cluster over real HTTP/1.1.
//!
//! Route cache: like Envoy, the route is computed from the request headers before the filters run
//! and kept, unless a filter cleared the route cache (`clear_route_cache`); then it is recomputed
//! from the headers as the router sees them.
//!
//! Concurrency: the chain is driven by `meshward_host::Chain::run`, which holds the chain for the
//! whole request, so requests go through the filters one at a time (upstream and `http_call`
//! waits included). Worker VMs are still used round-robin, so cross-worker shared state behaves as
//! in Envoy. Fine for a dev proxy; not a load generator target.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use meshward_host::grpc::{GrpcClient, GrpcReply, code};
use meshward_host::{
    CallReply, Chain, FailPolicy, GrpcHandler, HeaderMap, HostEngine, HttpCallResponse,
    HttpOutcome, LoadError, LogLevel, PendingHttpCall, Plugin, PluginSpec, Request, Response,
    SharedState, StatsTag, StreamInfo, UpstreamRequest,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::envoy_config::{ClusterConfig, ProxyConfig, WasmFilterConfig};
use crate::http::{self, Message, ServerRequest};
use crate::routing::{RouteDecision, RouteTable, weight_key_of};

/// How to map envoy.yaml (written for docker compose) onto this machine.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Directory holding the modules: replaces the directory part of every
    /// `vm_config.code.local.filename` (e.g. `/etc/envoy/wasm/trace-id.wasm` → `dist/trace-id.wasm`).
    pub wasm_dir: Option<PathBuf>,
    /// `cluster name → host:port`, replacing the docker service addresses.
    pub cluster_addresses: BTreeMap<String, String>,
    /// Worker VMs per filter (Envoy `--concurrency`).
    pub workers: usize,
    /// Behave as Envoy < 1.33: request-header mutations by a filter clear the route cache, and
    /// the `clear_route_cache` foreign function does not exist.
    pub envoy_before_1_33: bool,
}

/// A loaded proxy: the chain, the routes and the clusters.
pub struct Proxy {
    chain: Mutex<Chain>,
    shared: SharedState,
    routes: RouteTable,
    clusters: BTreeMap<String, ClusterConfig>,
    stats_tags: Vec<StatsTag>,
    workers: usize,
    next_worker: AtomicUsize,
    next_connection: AtomicU64,
    unkeyed_weight_counter: AtomicU64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("clusters", &self.clusters)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Where a filter's module is read from, after `--wasm-dir`.
pub fn module_path(filter: &WasmFilterConfig, wasm_dir: Option<&Path>) -> PathBuf {
    match (wasm_dir, filter.module_path.file_name()) {
        (Some(dir), Some(file)) => dir.join(file),
        _ => filter.module_path.clone(),
    }
}

impl Proxy {
    /// Loads every filter of `config` into the host (N worker VMs each) and compiles the routes.
    ///
    /// # Errors
    /// A missing module, a module the host refuses, a rejected configuration.
    pub fn load(config: &ProxyConfig, options: &ProxyOptions) -> anyhow::Result<Self> {
        let workers = options.workers.max(1);
        let shared = SharedState::new();
        shared.clock().use_real_time();
        shared.random().reseed_randomly();
        shared.set_clusters(config.clusters.keys().cloned());

        let mut clusters = config.clusters.clone();
        for (name, address) in &options.cluster_addresses {
            let Some(cluster) = clusters.get_mut(name) else {
                bail!("--cluster-addr {name}={address}: no cluster `{name}` in the envoy config");
            };
            cluster.address.clone_from(address);
        }
        // Filters' gRPC callouts go over HTTP/2 to the clusters configured for it; a name that
        // does not resolve now leaves the cluster without an address (calls get UNAVAILABLE).
        for cluster in clusters.values().filter(|c| c.http2) {
            if let Some(address) = std::net::ToSocketAddrs::to_socket_addrs(&cluster.address)
                .ok()
                .and_then(|mut a| a.next())
            {
                shared.set_cluster_address(cluster.name.clone(), address);
            }
        }

        let engine = HostEngine::global().context("starting the wasm engine")?;
        let mut plugins = Vec::new();
        for filter in &config.wasm_filters {
            let path = module_path(filter, options.wasm_dir.as_deref());
            if !path.exists() {
                bail!(
                    "{}: module {} not found (from `{}`): run `make dist`",
                    filter.yaml_path,
                    path.display(),
                    filter.module_path.display()
                );
            }
            let module = engine
                .load_file(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            let spec = PluginSpec::new(filter.plugin_name.clone(), filter.root_id.clone())
                .with_vm_id(filter.vm_id.clone())
                .with_configuration(filter.configuration.as_bytes().to_vec())
                .with_workers(workers)
                .with_legacy_route_cache(options.envoy_before_1_33)
                .with_fail_policy(if filter.fail_open {
                    FailPolicy::FailOpen
                } else {
                    FailPolicy::FailClosed
                });
            let plugin = Plugin::load(engine, &module, spec, &shared).map_err(|error| {
                let logs = match &error {
                    LoadError::Rejected { logs, .. } | LoadError::StartFailed { logs, .. } => logs
                        .iter()
                        .map(|l| format!("\n    [{}] {}", l.level.name(), l.message))
                        .collect::<String>(),
                    _ => String::new(),
                };
                anyhow::anyhow!(
                    "{}: filter `{}` ({}): {error}{logs}",
                    filter.yaml_path,
                    filter.plugin_name,
                    path.display()
                )
            })?;
            plugins.push(plugin);
        }

        let routes = RouteTable::compile(&config.virtual_hosts);
        let stats_tags = config
            .stats_tags
            .iter()
            .map(|t| StatsTag::new(t.tag_name.clone(), t.regex.clone()))
            .collect();
        Ok(Self {
            chain: Mutex::new(Chain::new(plugins).with_grpc(grpc_handler(shared.clone()))),
            shared,
            routes,
            clusters,
            stats_tags,
            workers,
            next_worker: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
            unkeyed_weight_counter: AtomicU64::new(0),
        })
    }

    /// The clusters with their effective addresses.
    pub fn clusters(&self) -> &BTreeMap<String, ClusterConfig> {
        &self.clusters
    }

    /// `/stats/prometheus` as Envoy prints it (with envoy.yaml's `stats_tags`).
    pub fn prometheus(&self) -> String {
        self.shared
            .prometheus(&self.stats_tags)
            .unwrap_or_else(|e| format!("# invalid stats_tags regex: {e}\n"))
    }

    fn weight_key(&self, headers: &HeaderMap) -> u64 {
        match headers.get("x-request-id") {
            Some(id) => weight_key_of(id.as_bytes()),
            // Envoy draws a random value per stream; a mixed counter spreads like one, but repeatably.
            None => weight_key_of(
                &self
                    .unkeyed_weight_counter
                    .fetch_add(1, Ordering::Relaxed)
                    .to_le_bytes(),
            ),
        }
    }

    fn route(&self, headers: &HeaderMap) -> RouteDecision {
        let pairs = headers.to_string_pairs();
        self.routes.select(&pairs, self.weight_key(headers))
    }

    /// Serves one downstream request: filters, routing, upstream, access log.
    pub async fn handle(self: Arc<Self>, request: ServerRequest) -> Message {
        #[allow(
            clippy::disallowed_methods,
            reason = "dev proxy measures real durations"
        )]
        let started = std::time::Instant::now();
        let method = request
            .message
            .header(":method")
            .unwrap_or_default()
            .to_owned();
        let path = request
            .message
            .header(":path")
            .unwrap_or_default()
            .to_owned();
        let runtime = tokio::runtime::Handle::current();
        let proxy = Arc::clone(&self);
        let result = tokio::task::spawn_blocking(move || proxy.run_chain(&runtime, &request)).await;
        let (message, cluster, request_id) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => (
                http::plain_response(500, &format!("dev proxy: {error}\n")),
                None,
                None,
            ),
            Err(join_error) => (
                http::plain_response(500, &format!("dev proxy: {join_error}\n")),
                None,
                None,
            ),
        };
        println!(
            "access: {method} {path} {status} upstream={upstream} x-request-id={request_id} duration_ms={duration}",
            status = message.status(),
            upstream = cluster.as_deref().unwrap_or("-"),
            request_id = request_id.as_deref().unwrap_or("-"),
            duration = started.elapsed().as_millis(),
        );
        message
    }

    fn run_chain(
        &self,
        runtime: &tokio::runtime::Handle,
        request: &ServerRequest,
    ) -> anyhow::Result<(Message, Option<String>, Option<String>)> {
        let headers = HeaderMap::from_pairs(
            request
                .message
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        // Envoy computes the route before the filter chain runs and caches it.
        let cached_route = self.route(&headers);
        let (route_name, cluster_name) = match &cached_route {
            RouteDecision::Forward {
                route_name,
                cluster,
                ..
            } => (route_name.clone(), cluster.clone()),
            RouteDecision::Direct { route_name, .. } => (route_name.clone(), String::new()),
            RouteDecision::NotFound => (String::new(), String::new()),
        };
        let info = StreamInfo {
            source_address: request.peer.to_string(),
            destination_address: request.local.to_string(),
            route_name,
            cluster_name,
            protocol: "HTTP/1.1".to_owned(),
            connection_id: self.next_connection.fetch_add(1, Ordering::Relaxed),
            ..StreamInfo::default()
        };
        let host_request = Request {
            headers,
            body: request.message.body.to_vec(),
            trailers: HeaderMap::new(),
            info,
        };
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers;

        let mut chosen_cluster: Option<String> = None;
        let outcome: HttpOutcome = {
            let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
            chain.run(
                worker,
                host_request,
                |upstream| self.forward(runtime, upstream, &cached_route, &mut chosen_cluster),
                |call| self.http_call(runtime, call),
            )?
        };
        for log in outcome.logs.iter().filter(|l| l.level >= LogLevel::Warn) {
            eprintln!(
                "filter {} [{}]: {}",
                log.plugin,
                log.level.name(),
                log.message
            );
        }
        let request_id = outcome
            .request_header("x-request-id")
            .or_else(|| outcome.response_header("x-request-id"))
            .map(str::to_owned);
        let message = if outcome.reset {
            http::plain_response(
                502,
                "dev proxy: a filter reset the stream (Envoy would close it)\n",
            )
        } else if let Some(index) = outcome.stalled {
            http::plain_response(
                504,
                &format!(
                    "dev proxy: filter #{index} paused and nothing resumed it (Envoy would wait for the route timeout)\n"
                ),
            )
        } else {
            to_message(&outcome.response)
        };
        Ok((message, chosen_cluster, request_id))
    }

    /// The router: picks the route (cached unless a filter cleared it) and answers it.
    fn forward(
        &self,
        runtime: &tokio::runtime::Handle,
        upstream: &UpstreamRequest<'_>,
        cached_route: &RouteDecision,
        chosen_cluster: &mut Option<String>,
    ) -> Response {
        let decision = if upstream.route_cache_cleared {
            self.route(upstream.headers)
        } else {
            cached_route.clone()
        };
        match decision {
            RouteDecision::NotFound => Response::new(404),
            RouteDecision::Direct { status, body, .. } => {
                let mut response = Response::new(status);
                if !body.is_empty() {
                    response = response
                        .with_header("content-type", "text/plain")
                        .with_body(body.into_bytes());
                }
                response
            }
            RouteDecision::Forward {
                cluster, timeout, ..
            } => {
                *chosen_cluster = Some(cluster.clone());
                let Some(target) = self.clusters.get(&cluster) else {
                    return envoy_error(503, "no healthy upstream");
                };
                let mut headers: Vec<(String, String)> = upstream.headers.to_string_pairs();
                if !headers.iter().any(|(n, _)| n == "x-forwarded-proto") {
                    headers.push(("x-forwarded-proto".to_owned(), "http".to_owned()));
                }
                headers.push((
                    "x-envoy-expected-rq-timeout-ms".to_owned(),
                    timeout.as_millis().to_string(),
                ));
                let message = Message {
                    headers,
                    body: Bytes::copy_from_slice(upstream.body),
                };
                #[allow(
                    clippy::disallowed_methods,
                    reason = "dev proxy measures real durations"
                )]
                let sent = std::time::Instant::now();
                let result = runtime.block_on(http::send(
                    &target.address,
                    &message,
                    target.connect_timeout,
                    timeout,
                ));
                match result {
                    Ok(answer) => {
                        let mut response = from_message(&answer);
                        response.headers.insert(
                            "x-envoy-upstream-service-time",
                            sent.elapsed().as_millis().to_string(),
                        );
                        response
                    }
                    Err(http::ClientError::Timeout) => envoy_error(504, "upstream request timeout"),
                    Err(error) => envoy_error(
                        503,
                        &format!(
                            "upstream connect error or disconnect/reset before headers. reset reason: {error}"
                        ),
                    ),
                }
            }
        }
    }

    /// A filter's `http_call`, sent for real to the named cluster.
    fn http_call(&self, runtime: &tokio::runtime::Handle, call: &PendingHttpCall) -> CallReply {
        let Some(target) = self.clusters.get(&call.cluster) else {
            return CallReply::Fail;
        };
        let message = Message {
            headers: call.headers.to_string_pairs(),
            body: Bytes::copy_from_slice(&call.body),
        };
        // Envoy: a timeout of 0 means none; the dev proxy caps it so a test cannot hang forever.
        let timeout = match call.timeout_ms {
            0 => Duration::from_secs(60),
            ms => Duration::from_millis(u64::from(ms)),
        };
        match runtime.block_on(http::send(
            &target.address,
            &message,
            target.connect_timeout,
            timeout,
        )) {
            Ok(answer) => {
                let response = from_message(&answer);
                CallReply::Respond(HttpCallResponse {
                    headers: response.headers,
                    body: response.body,
                    trailers: HeaderMap::new(),
                })
            }
            // Envoy delivers an upstream timeout as a router-generated 504.
            Err(http::ClientError::Timeout) => CallReply::Timeout,
            Err(_) => CallReply::Fail,
        }
    }
}

/// A response Envoy's router generates itself (text body).
fn envoy_error(status: u16, body: &str) -> Response {
    Response::new(status)
        .with_header("content-type", "text/plain")
        .with_body(body.as_bytes().to_vec())
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
];

fn from_message(message: &Message) -> Response {
    let mut headers = HeaderMap::new();
    for (name, value) in &message.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name, value.as_bytes());
        }
    }
    Response {
        headers,
        body: message.body.to_vec(),
        trailers: HeaderMap::new(),
    }
}

fn to_message(response: &Response) -> Message {
    let mut headers = response.headers.to_string_pairs();
    if !headers.iter().any(|(n, _)| n == ":status") {
        headers.insert(0, (":status".to_owned(), "502".to_owned()));
    }
    headers.retain(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()));
    Message {
        headers,
        body: Bytes::copy_from_slice(&response.body),
    }
}

/// The addresses a started proxy is bound to.
#[derive(Debug, Clone, Copy)]
pub struct BoundProxy {
    pub listener: SocketAddr,
    pub admin: Option<SocketAddr>,
}

/// Binds the listener and the admin port on loopback and serves until `shutdown` turns true.
///
/// # Errors
/// A port that cannot be bound.
pub async fn start(
    proxy: Arc<Proxy>,
    listener_port: u16,
    admin_port: Option<u16>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<BoundProxy> {
    let listener = TcpListener::bind(("127.0.0.1", listener_port))
        .await
        .with_context(|| format!("binding the listener on 127.0.0.1:{listener_port}"))?;
    let listener_addr = listener.local_addr()?;
    let admin_addr = match admin_port {
        Some(port) => {
            let admin = TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("binding the admin port on 127.0.0.1:{port}"))?;
            let addr = admin.local_addr()?;
            let admin_proxy = Arc::clone(&proxy);
            tokio::spawn(http::serve(admin, shutdown.clone(), move |request| {
                let proxy = Arc::clone(&admin_proxy);
                async move { admin_response(&proxy, &request) }
            }));
            Some(addr)
        }
        None => None,
    };
    tokio::spawn(http::serve(listener, shutdown.clone(), move |request| {
        Arc::clone(&proxy).handle(request)
    }));
    Ok(BoundProxy {
        listener: listener_addr,
        admin: admin_addr,
    })
}

fn admin_response(proxy: &Proxy, request: &ServerRequest) -> Message {
    let path = request.message.header(":path").unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/ready" => http::plain_response(200, "LIVE\n"),
        "/stats/prometheus" => {
            let body = proxy.prometheus();
            Message {
                headers: vec![
                    (":status".to_owned(), "200".to_owned()),
                    (
                        "content-type".to_owned(),
                        "text/plain; version=0.0.4".to_owned(),
                    ),
                ],
                body: Bytes::from(body.into_bytes()),
            }
        }
        _ => http::plain_response(
            404,
            "the dev proxy's admin serves /ready and /stats/prometheus\n",
        ),
    }
}

/// Sends the chain's unary gRPC calls over HTTP/2 to their cluster's address (Envoy's gRPC
/// async client). Runs on the chain's blocking thread, inside the server's runtime.
fn grpc_handler(shared: SharedState) -> GrpcHandler {
    let client = GrpcClient::new();
    Box::new(move |call| {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return GrpcReply::status(code::UNAVAILABLE, "dev proxy: no runtime for gRPC");
        };
        let address = shared.cluster_address(&call.cluster);
        runtime.block_on(client.call(address, call))
    })
}
