//! Plain data the host exchanges with its caller: header maps, plugin specs, stream info,
//! outcomes, errors. Nothing here touches wasmtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

// === HeaderMap ===

/// A header (or trailer) map as Envoy stores it: lower-case names, raw byte values,
/// duplicates kept as separate entries, pseudo-headers (`:method`, `:path`, …) first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from pairs, lower-casing names and keeping pseudo-headers first.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut map = Self::new();
        for (k, v) in pairs {
            map.append(k.as_ref(), v.as_ref());
        }
        map
    }

    /// First value of `name` (case-insensitive) as UTF-8; `None` if absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// First value of `name` (case-insensitive), as Envoy's single-value get returns it.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// All values of `name` joined with `,` (how Envoy's `request.headers.<name>` property reads).
    pub fn get_joined(&self, name: &str) -> Option<Vec<u8>> {
        let all = self.get_all(name);
        if all.is_empty() {
            return None;
        }
        Some(all.join(&b","[..]))
    }

    /// Adds an entry, keeping existing values (Envoy `addCopy`). Pseudo-headers go after the
    /// last pseudo-header, like Envoy's header map keeps them.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let name = name.to_ascii_lowercase();
        let value = value.as_ref().to_vec();
        if name.starts_with(':') {
            let at = self
                .entries
                .iter()
                .take_while(|(k, _)| k.starts_with(':'))
                .count();
            self.entries.insert(at, (name, value));
        } else {
            self.entries.push((name, value));
        }
    }

    /// Sets `name` to `value`: the first entry is overwritten in place and later duplicates
    /// are removed; appended if absent (Envoy `setCopy`).
    pub fn insert(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let name = name.to_ascii_lowercase();
        let value = value.as_ref().to_vec();
        match self.entries.iter().position(|(k, _)| *k == name) {
            Some(first) => {
                let mut index = 0;
                let mut new_value = Some(value);
                self.entries.retain_mut(|(k, v)| {
                    let keep = if *k != name {
                        true
                    } else if index == first {
                        if let Some(nv) = new_value.take() {
                            *v = nv;
                        }
                        true
                    } else {
                        false
                    };
                    index += 1;
                    keep
                });
            }
            None => self.append(&name, value),
        }
    }

    /// Removes every entry of `name`; returns whether any existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let before = self.entries.len();
        self.entries.retain(|(k, _)| *k != name);
        before != self.entries.len()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Entries in map order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Entries as owned pairs (raw bytes).
    pub fn pairs(&self) -> &[(String, Vec<u8>)] {
        &self.entries
    }

    /// Entries as strings (values decoded lossily), handy in assertions and JSON output.
    pub fn to_string_pairs(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Number of entries (pseudo-headers and duplicates included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of key and value lengths (Envoy `HeaderMap::byteSize()`).
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> FromIterator<(K, V)> for HeaderMap {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self::from_pairs(iter)
    }
}

// === Plugin specification ===

/// What a plugin does after its VM failed (trap), as Envoy's `failure_policy` / `fail_open`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailPolicy {
    /// Every stream through the plugin gets a 503 with details `wasm_fail_stream` (Envoy default).
    #[default]
    FailClosed,
    /// The filter is skipped for new streams; callbacks on existing streams return Continue.
    FailOpen,
    /// A fresh VM is created (and configured) for the next request on that worker.
    Reload,
}

/// Proxy-wasm log level (ABI numbering), also used for the level reported by `proxy_get_log_level`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    #[default]
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
    /// 6: Envoy's `wasm` logger set to "off" (spdlog's level 6). Only ever *reported* by
    /// `proxy_get_log_level` (outside the SDK's enum); `proxy_log` at 6 is a BadArgument.
    Off,
}

impl LogLevel {
    /// From the ABI value of a log line; `None` above 5 (Envoy answers BadArgument; 6, "off", is
    /// a level the proxy reports, not one a line can have).
    pub fn from_abi(level: i32) -> Option<Self> {
        Some(match level {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    /// The ABI value.
    pub fn as_abi(self) -> i32 {
        self as i32
    }

    /// Lower-case name as Envoy prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
            Self::Off => "off",
        }
    }
}

/// Configuration of one plugin (one `envoy.filters.http.wasm` filter), as Envoy's `PluginConfig`.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// Plugin name (`plugin_name` property, log prefix).
    pub name: String,
    /// Root id (`plugin_root_id` property).
    pub root_id: String,
    /// VM id: namespaces shared data and queues (`plugin_vm_id` property).
    pub vm_id: String,
    /// Plugin configuration bytes (buffer 7 during `proxy_on_configure`).
    pub configuration: Vec<u8>,
    /// VM configuration bytes (buffer 6).
    pub vm_configuration: Vec<u8>,
    /// Environment variables visible through WASI `environ_get` (`vm_config.environment_variables`).
    pub env: Vec<(String, String)>,
    /// Failure policy.
    pub fail_policy: FailPolicy,
    /// Number of worker VMs (Envoy `--concurrency`); at least 1. A canary VM is run in addition.
    pub workers: usize,
    /// Level the host reports to `proxy_get_log_level` (`LogLevel::Off` reports 6, as Envoy does
    /// with its `wasm` logger off); lines below it are still recorded.
    pub log_level: LogLevel,
    /// TEST-ONLY guard, not an Envoy feature: wasm fuel (≈ instructions) allowed per callback
    /// before the call is aborted as a trap. Envoy has no limit; this stops looping guests.
    pub fuel_per_callback: u64,
    /// Emulates Envoy < 1.33, where any request-header mutation by a Wasm filter clears the
    /// route cache and the `clear_route_cache` foreign function does not exist (NotFound).
    /// Default false (Envoy ≥ 1.33: only `clear_route_cache` does).
    pub legacy_clear_route_cache_on_header_mutation: bool,
}

impl PluginSpec {
    /// A spec with Envoy's defaults: empty vm id and configuration, fail-closed, one worker.
    pub fn new(name: impl Into<String>, root_id: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            root_id: root_id.into(),
            vm_id: String::new(),
            configuration: Vec::new(),
            vm_configuration: Vec::new(),
            env: Vec::new(),
            fail_policy: FailPolicy::FailClosed,
            workers: 1,
            log_level: LogLevel::Trace,
            fuel_per_callback: DEFAULT_FUEL_PER_CALLBACK,
            legacy_clear_route_cache_on_header_mutation: false,
        }
    }

    /// Sets the plugin configuration.
    pub fn with_configuration(mut self, configuration: impl Into<Vec<u8>>) -> Self {
        self.configuration = configuration.into();
        self
    }

    /// Sets the VM id.
    pub fn with_vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    /// Sets the number of worker VMs.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Emulates Envoy < 1.33 (see `legacy_clear_route_cache_on_header_mutation`).
    pub fn with_legacy_route_cache(mut self, legacy: bool) -> Self {
        self.legacy_clear_route_cache_on_header_mutation = legacy;
        self
    }

    /// Sets the failure policy.
    pub fn with_fail_policy(mut self, policy: FailPolicy) -> Self {
        self.fail_policy = policy;
        self
    }
}

/// Default test-only fuel budget per callback (about ten billion wasm operations).
pub const DEFAULT_FUEL_PER_CALLBACK: u64 = 10_000_000_000;

// === Properties ===

/// A property (CEL attribute) value with Envoy's wire encoding (§6.10 of the ABI notes).
#[derive(Clone, Debug, PartialEq)]
pub enum PropValue {
    /// string: raw bytes.
    String(String),
    /// bytes: raw bytes.
    Bytes(Vec<u8>),
    /// int: 8 bytes little-endian.
    Int(i64),
    /// uint: 8 bytes little-endian.
    Uint(u64),
    /// double: 8 bytes IEEE-754 little-endian.
    Double(f64),
    /// bool: one byte 0/1.
    Bool(bool),
    /// timestamp: i64 LE nanoseconds since the Unix epoch.
    Timestamp(i64),
    /// duration: i64 LE nanoseconds.
    Duration(i64),
    /// map of strings: proxy-wasm pairs encoding.
    Map(Vec<(String, String)>),
}

impl PropValue {
    /// Envoy's byte encoding of the value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::String(s) => s.as_bytes().to_vec(),
            Self::Bytes(b) => b.clone(),
            Self::Int(i) | Self::Timestamp(i) | Self::Duration(i) => i.to_le_bytes().to_vec(),
            Self::Uint(u) => u.to_le_bytes().to_vec(),
            Self::Double(d) => d.to_le_bytes().to_vec(),
            Self::Bool(b) => vec![u8::from(*b)],
            Self::Map(pairs) => {
                crate::wire::encode_map(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            }
        }
    }
}

/// Istio/Envoy node information (`xds.node`, `node`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id, e.g. `sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local`.
    pub id: String,
    /// Node cluster.
    pub cluster: String,
    /// Node metadata (string values only).
    pub metadata: BTreeMap<String, String>,
}

/// Per-request connection and routing facts the caller supplies (what Envoy's stream info knows).
/// Request and response attributes (`request.*`, `response.*`) are derived from the headers the
/// stream has seen; these fields cover the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInfo {
    /// `source.address` ("ip:port"); `source.port` is derived.
    pub source_address: String,
    /// `destination.address` ("ip:port"); `destination.port` is derived.
    pub destination_address: String,
    /// `xds.route_name`.
    pub route_name: String,
    /// `xds.cluster_name`.
    pub cluster_name: String,
    /// `request.protocol`, e.g. "HTTP/1.1".
    pub protocol: String,
    /// `connection.id`.
    pub connection_id: u64,
    /// `connection.mtls`.
    pub mtls: bool,
    /// `request.time`, ns since epoch; `None` = the shared clock's wall time at stream start.
    pub request_time_ns: Option<i64>,
    /// Any further property, keyed by its dotted path (e.g. `"connection.requested_server_name"`,
    /// `"xds.route_metadata"`); looked up before the built-in ones.
    pub extra: BTreeMap<String, PropValue>,
}

impl Default for StreamInfo {
    fn default() -> Self {
        Self {
            source_address: "127.0.0.1:50000".to_owned(),
            destination_address: "127.0.0.1:8080".to_owned(),
            route_name: String::new(),
            cluster_name: String::new(),
            protocol: "HTTP/1.1".to_owned(),
            connection_id: 1,
            mtls: false,
            request_time_ns: None,
            extra: BTreeMap::new(),
        }
    }
}

/// Filter state of one stream, shared by every filter of a chain (Envoy's per-request
/// `FilterState`). `proxy_set_property(name, v)` stores `wasm.<name>`; any filter of the same
/// stream reads it with `get_property(["<name>"])` or `["wasm.<name>"]`. Cloning shares the state.
#[derive(Clone, Debug, Default)]
pub struct FilterState {
    inner: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl FilterState {
    /// An empty filter state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Value stored under the full key (e.g. `wasm.meshward_request_id`).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Stores a value under the full key.
    pub fn set(&self, key: &str, value: Vec<u8>) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), value);
    }

    /// Snapshot of all entries.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// === Logs ===

/// One log line from a VM (`proxy_log` or WASI stdout/stderr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Level (stdout → Info, stderr → Error).
    pub level: LogLevel,
    /// Message as the module wrote it.
    pub message: String,
    /// Plugin name.
    pub plugin: String,
    /// Worker index (`None` for the canary VM).
    pub worker: Option<usize>,
}

impl LogEntry {
    /// Envoy's rendering: `wasm log <plugin> <root_id> <vm_id>: <message>` (empty parts omitted).
    pub fn envoy_line(&self, root_id: &str, vm_id: &str) -> String {
        let mut prefix = String::new();
        for part in [self.plugin.as_str(), root_id, vm_id] {
            if !part.is_empty() {
                prefix.push(' ');
                prefix.push_str(part);
            }
        }
        format!("wasm log{prefix}: {}", self.message)
    }
}

// === Outcomes ===

/// A local reply requested by a filter (`proxy_send_local_response`) or made by the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u32,
    /// Headers the module asked to add (lower-case keys).
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// Response code details (whitespace replaced by `_`).
    pub details: String,
    /// gRPC status (0..=16) if any.
    pub grpc_status: Option<u32>,
}

impl LocalReply {
    /// The 503 Envoy sends after a VM failure under fail-closed.
    pub fn wasm_fail_stream() -> Self {
        Self {
            status: 503,
            headers: HeaderMap::new(),
            body: Vec::new(),
            details: "wasm_fail_stream".to_owned(),
            grpc_status: Some(14),
        }
    }

    /// The response headers Envoy's encoder chain sees for this reply: `:status`, then
    /// `content-length`/`content-type: text/plain` when there is a body, then the module's headers.
    pub fn response_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.append(":status", self.status.to_string());
        if !self.body.is_empty() {
            map.append("content-length", self.body.len().to_string());
            map.append("content-type", "text/plain");
        }
        for (k, v) in self.headers.iter() {
            map.append(k, v);
        }
        map
    }
}

/// What the filter decided in one callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Continue to the next filter.
    Continue,
    /// Stop iteration (headers: StopAllIterationAndWatermark; body: buffer; trailers: stop).
    Pause,
    /// The filter sent a local reply; the stream stops and the caller runs the response
    /// phase with `reply.response_headers()`.
    LocalReply(LocalReply),
    /// The VM failed (trap) under fail-closed: Envoy sends this 503 `wasm_fail_stream` reply.
    Failed(LocalReply),
    /// The filter closed (reset) the stream with `proxy_close_stream`.
    Reset,
}

/// Result of one stream callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseOutcome {
    /// The decision.
    pub action: Action,
    /// `clear_route_cache` was called (or, in legacy mode, request headers were mutated).
    pub route_cache_cleared: bool,
    /// The filter was skipped: VM failed under fail-open (or the context was never created).
    pub skipped: bool,
    /// `proxy_continue_stream` was called during this callback.
    pub continue_requested: bool,
    /// Wasm fuel consumed by the callback (≈ wasm operations executed).
    pub fuel: u64,
    /// Hostcalls made during the callback.
    pub hostcalls: u64,
    /// Log lines emitted during the callback.
    pub logs: Vec<LogEntry>,
    /// Trap message if the VM failed in this callback.
    pub trap: Option<String>,
}

impl PhaseOutcome {
    pub(crate) fn skipped() -> Self {
        Self {
            action: Action::Continue,
            route_cache_cleared: false,
            skipped: true,
            continue_requested: false,
            fuel: 0,
            hostcalls: 0,
            logs: Vec::new(),
            trap: None,
        }
    }
}

/// Identifies an outstanding `proxy_http_call`: tokens are per VM, so the worker is part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId {
    /// Worker index whose VM made the call.
    pub worker: usize,
    /// Token returned to the module (`n*4`).
    pub token: u32,
}

/// Handle of an HTTP stream within one plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub(crate) u64);

/// An outstanding `proxy_http_call`, waiting for the caller to answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingHttpCall {
    /// Identity for [`crate::Plugin::deliver_http_response`].
    pub id: CallId,
    /// Cluster name.
    pub cluster: String,
    /// Request headers (lower-case keys; `:method`, `:path`, `:authority` guaranteed present).
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// Timeout in ms; 0 = none (Envoy).
    pub timeout_ms: u32,
    /// The stream whose context issued the call, if any (Envoy owns calls by the root).
    pub stream: Option<StreamId>,
}

/// A response to an `http_call`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Headers including `:status`.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: HeaderMap,
}

/// Body of the response Envoy's router generates for a call past its timeout.
pub const UPSTREAM_TIMEOUT_BODY: &[u8] = b"upstream request timeout";

impl HttpCallResponse {
    /// What Envoy delivers for an `http_call` past its timeout: the async client's router
    /// answers with a local `504` (`content-length`, `content-type: text/plain`, body
    /// "upstream request timeout") and `proxy_on_http_call_response` sees it as a normal
    /// response (`proxy_get_status` (0, "")), not as a reset.
    pub fn upstream_timeout() -> Self {
        Self {
            headers: HeaderMap::from_pairs([
                (":status", "504".to_owned()),
                ("content-length", UPSTREAM_TIMEOUT_BODY.len().to_string()),
                ("content-type", "text/plain".to_owned()),
            ]),
            body: UPSTREAM_TIMEOUT_BODY.to_vec(),
            trailers: HeaderMap::new(),
        }
    }

    /// A response with `:status` and a body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            headers: HeaderMap::from_pairs([(":status", status.to_string())]),
            body: body.into(),
            trailers: HeaderMap::new(),
        }
    }
}

/// Something that happened to a stream outside its own callbacks (after an `http_call`
/// response, tick or queue callback), applied after that callback returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// `proxy_continue_stream` resumed a paused stream. `headers` is the held map (request or
    /// response headers, possibly mutated while paused), `body` the held body, if any.
    Resumed {
        /// The stream.
        stream: StreamId,
        /// Request (true) or response (false) direction.
        request: bool,
        /// The held headers after any mutation, if the stream was paused at headers.
        headers: Option<HeaderMap>,
        /// The held body after any mutation, if the stream was paused at body.
        body: Option<Vec<u8>>,
    },
    /// A local reply was sent from a paused stream.
    LocalReply {
        /// The stream.
        stream: StreamId,
        /// The reply.
        reply: LocalReply,
    },
    /// The stream was reset.
    Reset {
        /// The stream.
        stream: StreamId,
    },
    /// The VM failed while the stream was paused (fail-closed: 503 reply; fail-open: resumed).
    Failed {
        /// The stream.
        stream: StreamId,
        /// What Envoy does with it.
        action: Action,
    },
}

/// What the calls of one guest export cost, summed over those calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCost {
    /// Times the host called the export (a call that trapped counts; an export the module
    /// lacks is never called).
    pub calls: u64,
    /// Wasm fuel consumed (≈ wasm operations executed), including the guest allocator calls
    /// the host made inside the export's hostcalls.
    pub fuel: u64,
    /// Hostcalls made.
    pub hostcalls: u64,
}

impl ExportCost {
    fn add(&mut self, other: Self) {
        self.calls += other.calls;
        self.fuel += other.fuel;
        self.hostcalls += other.hostcalls;
    }
}

/// Cost per guest export (`proxy_on_request_headers`, `proxy_on_log`, `_initialize`, …),
/// tallied by every call the host makes into a VM; see [`Plugin::export_costs`].
///
/// [`Plugin::export_costs`]: crate::Plugin::export_costs
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportCosts {
    by_export: BTreeMap<String, ExportCost>,
}

impl ExportCosts {
    /// Adds one call of `export`.
    pub(crate) fn record(&mut self, export: &str, fuel: u64, hostcalls: u64) {
        let call = ExportCost {
            calls: 1,
            fuel,
            hostcalls,
        };
        match self.by_export.get_mut(export) {
            Some(cost) => cost.add(call),
            None => {
                self.by_export.insert(export.to_owned(), call);
            }
        }
    }

    /// Adds every export's cost of `other` to this tally.
    pub fn merge(&mut self, other: &Self) {
        for (export, cost) in &other.by_export {
            self.by_export.entry(export.clone()).or_default().add(*cost);
        }
    }

    /// The cost of `export` (zero when it was never called).
    pub fn get(&self, export: &str) -> ExportCost {
        self.by_export.get(export).copied().unwrap_or_default()
    }

    /// Every export called, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, ExportCost)> {
        self.by_export
            .iter()
            .map(|(export, cost)| (export.as_str(), *cost))
    }

    /// The sum over all exports.
    pub fn total(&self) -> ExportCost {
        let mut total = ExportCost::default();
        for cost in self.by_export.values() {
            total.add(*cost);
        }
        total
    }

    /// No export was called.
    pub fn is_empty(&self) -> bool {
        self.by_export.is_empty()
    }
}

/// Result of an asynchronous delivery (http_call response, tick, queue ready).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CalloutOutcome {
    /// Stream events produced.
    pub events: Vec<StreamEvent>,
    /// Fuel consumed.
    pub fuel: u64,
    /// Hostcalls made.
    pub hostcalls: u64,
    /// Log lines.
    pub logs: Vec<LogEntry>,
    /// Trap message if the VM failed.
    pub trap: Option<String>,
}

/// Result of the end-of-stream callbacks (`proxy_on_log` → `proxy_on_done` → `proxy_on_delete`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinishOutcome {
    /// Fuel consumed.
    pub fuel: u64,
    /// Hostcalls made.
    pub hostcalls: u64,
    /// Log lines.
    pub logs: Vec<LogEntry>,
    /// Trap message if the VM failed.
    pub trap: Option<String>,
}

// === Errors ===

/// Why a plugin could not be loaded (what Envoy would refuse or NACK).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read wasm module {path}: {message}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        message: String,
    },
    /// The bytes are not a valid module (or wasmtime could not compile it).
    #[error("cannot compile wasm module: {0}")]
    Compile(String),
    /// No `proxy_abi_version_0_2_x` / `0_1_0` export.
    #[error(
        "missing or unknown proxy-wasm ABI version export (proxy_abi_version_0_2_1 / 0_2_0 / 0_1_0)"
    )]
    MissingAbiVersion,
    /// The module imports something Envoy does not provide.
    #[error(
        "missing import: {module}.{name} is not provided by the host (Envoy refuses such modules)"
    )]
    UnknownImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// A required export is missing (`memory`, allocator).
    #[error("missing export: {0}")]
    MissingExport(String),
    /// Instantiation failed (e.g. an import's signature does not match).
    #[error("cannot instantiate wasm module: {0}")]
    Instantiate(String),
    /// `_initialize`/`main`/`_start`/`proxy_on_vm_start` trapped or returned false.
    #[error("vm start failed in {phase}: {reason}")]
    StartFailed {
        /// Export that failed.
        phase: String,
        /// Trap message or "returned false".
        reason: String,
        /// Logs emitted so far.
        logs: Vec<LogEntry>,
    },
    /// `proxy_on_configure` returned false or trapped: Envoy NACKs the configuration.
    #[error("plugin configuration rejected (on_configure {reason})")]
    Rejected {
        /// "returned false" or the trap message.
        reason: String,
        /// Logs emitted during start and configure (the filter's explanation is usually here).
        logs: Vec<LogEntry>,
    },
    /// The spec is unusable (e.g. zero workers).
    #[error("invalid plugin spec: {0}")]
    InvalidSpec(String),
}

/// Misuse of the host API by the caller (not a guest failure: those are outcomes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    /// No such worker.
    #[error("unknown worker {0}")]
    UnknownWorker(usize),
    /// No such stream (finished or never created).
    #[error("unknown stream {0:?}")]
    UnknownStream(StreamId),
    /// No such pending call.
    #[error("unknown http call {0:?}")]
    UnknownCall(CallId),
    /// Internal error in the host (a bug here, not in the guest).
    #[error("host internal error: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_headers_stay_first_and_names_are_lower_cased() {
        let mut map = HeaderMap::from_pairs([("X-A", "1"), (":path", "/")]);
        map.append(":method", "GET");
        let names: Vec<&str> = map.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec![":path", ":method", "x-a"]);
    }

    #[test]
    fn insert_overwrites_the_first_value_and_drops_duplicates() {
        let mut map = HeaderMap::from_pairs([("a", "1"), ("b", "x"), ("a", "2")]);
        map.insert("A", "3");
        assert_eq!(
            map.to_string_pairs(),
            vec![
                ("a".to_owned(), "3".to_owned()),
                ("b".to_owned(), "x".to_owned())
            ]
        );
        map.insert("c", "4");
        assert_eq!(map.get("c"), Some("4"));
    }

    #[test]
    fn single_get_returns_the_first_of_duplicates_and_joined_returns_all() {
        let map = HeaderMap::from_pairs([("a", "1"), ("a", "2")]);
        assert_eq!(map.get("a"), Some("1"));
        assert_eq!(map.get_joined("a"), Some(b"1,2".to_vec()));
        assert_eq!(map.get_all("a").len(), 2);
    }

    #[test]
    fn local_reply_headers_follow_envoy() {
        let reply = LocalReply {
            status: 429,
            headers: HeaderMap::from_pairs([("retry-after", "1")]),
            body: b"slow down".to_vec(),
            details: String::new(),
            grpc_status: None,
        };
        let h = reply.response_headers();
        assert_eq!(
            h.to_string_pairs(),
            vec![
                (":status".to_owned(), "429".to_owned()),
                ("content-length".to_owned(), "9".to_owned()),
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("retry-after".to_owned(), "1".to_owned()),
            ]
        );
        assert_eq!(LocalReply::wasm_fail_stream().response_headers().len(), 1);
    }

    #[test]
    fn property_values_use_envoy_encodings() {
        assert_eq!(PropValue::Int(200).encode(), 200i64.to_le_bytes().to_vec());
        assert_eq!(PropValue::Bool(true).encode(), vec![1]);
        assert_eq!(PropValue::String("a".to_owned()).encode(), b"a".to_vec());
    }
}
