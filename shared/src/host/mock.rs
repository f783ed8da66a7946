//! An in-memory [`Host`] for unit tests, with Envoy's semantics where they matter.
//!
//! Build one with the `with_*` builders, hand `&mock` to the code under test as `&dyn Host`, then
//! inspect what it did (`local_response()`, `metric_value("…")`, `logs()`, …). State lives behind a
//! `RefCell` because [`Host`] methods take `&self`, exactly as the proxy is a shared environment.
//!
//! Behaviour copied from Envoy (see `shared/docs/proxy-wasm-abi.md`):
//! - header names are lower-cased on every write and lookup; [`Host::header`] returns the first of
//!   duplicate values; `set_header` replaces every value; call-response maps are read-only;
//! - an empty property, buffer or shared-data value reads as `None`;
//! - shared data: `cas = None` (or `Some(0)`) writes unconditionally, a CAS on an absent key
//!   inserts, a stale CAS fails with [`HostError::CasMismatch`], and every successful write gets a
//!   new token from one counter that starts at 1 and skips 0;
//! - metrics: ids are `n * 4 + kind`, re-defining a name returns a new id bound to the same value,
//!   counter increments must be `> 0`, `record` on a counter adds, histograms cannot be read;
//! - `http_call` requires `:method`, `:path` and `:authority`;
//! - `request.headers.<name>` (and `response.headers.<name>`) properties read the current map,
//!   every value joined by `,` (Envoy's CEL view), unless a test set that property itself;
//! - shared queues: ids are non-zero, dequeuing an empty queue reads `None`.
//!
//! Failures are injected per hostcall with [`MockHost::fail_next`] / [`MockHost::fail_always`]
//! (e.g. three `CasMismatch` on `set_shared_data` to exercise a retry loop).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{
    BufferKind, GrpcCall, GrpcCallout, HeaderMap, HeaderPairs, Host, HostError, HostResult,
    HttpCall, HttpCallout, LocalReply, LocalResponse, LogLevel, MapKind, MetricKind, Nanos,
    PropertyPath, SharedValue, StreamKind,
};

/// Names one [`Host`] method, to inject failures into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hostcall {
    /// [`Host::header_map`].
    HeaderMap,
    /// [`Host::header`].
    Header,
    /// [`Host::set_header`].
    SetHeader,
    /// [`Host::add_header`].
    AddHeader,
    /// [`Host::remove_header`].
    RemoveHeader,
    /// [`Host::set_header_map`].
    SetHeaderMap,
    /// [`Host::buffer`].
    Buffer,
    /// [`Host::property`].
    Property,
    /// [`Host::set_property`].
    SetProperty,
    /// [`Host::shared_data`].
    SharedData,
    /// [`Host::set_shared_data`].
    SetSharedData,
    /// [`Host::now`].
    Now,
    /// [`Host::fill_random`].
    FillRandom,
    /// [`Host::send_local_response`].
    SendLocalResponse,
    /// [`Host::continue_stream`].
    ContinueStream,
    /// [`Host::close_stream`].
    CloseStream,
    /// [`Host::set_effective_context`].
    SetEffectiveContext,
    /// [`Host::set_tick_period`].
    SetTickPeriod,
    /// [`Host::register_queue`], [`Host::resolve_queue`].
    Queue,
    /// [`Host::enqueue`].
    Enqueue,
    /// [`Host::dequeue`].
    Dequeue,
    /// [`Host::http_call`].
    HttpCall,
    /// [`Host::grpc_call`].
    GrpcCall,
    /// [`Host::grpc_cancel`], [`Host::grpc_close`].
    GrpcCancel,
    /// [`Host::call_status`].
    CallStatus,
    /// [`Host::call_foreign_function`].
    CallForeignFunction,
    /// [`Host::define_metric`].
    DefineMetric,
    /// [`Host::increment_metric`].
    IncrementMetric,
    /// [`Host::record_metric`].
    RecordMetric,
    /// [`Host::metric`].
    Metric,
}

/// How many times an injected failure still fires.
#[derive(Debug, Clone, Copy)]
enum Remaining {
    Times(usize),
    Always,
}

#[derive(Debug, Clone)]
enum RandomSource {
    /// splitmix64 state: deterministic, well-spread bytes.
    Seeded(u64),
    /// A fixed byte sequence, repeated cyclically.
    Fixed { bytes: Vec<u8>, next: usize },
}

impl RandomSource {
    fn fill(&mut self, buf: &mut [u8]) {
        match self {
            Self::Seeded(state) => {
                for chunk in buf.chunks_mut(8) {
                    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = *state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    for (dst, src) in chunk.iter_mut().zip(z.to_le_bytes()) {
                        *dst = src;
                    }
                }
            }
            Self::Fixed { bytes, next } => {
                for dst in buf.iter_mut() {
                    *dst = bytes.get(*next).copied().unwrap_or(0);
                    *next = if bytes.is_empty() {
                        0
                    } else {
                        (*next + 1) % bytes.len()
                    };
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct MetricState {
    kind: MetricKind,
    value: i64,
    samples: Vec<u64>,
}

#[derive(Debug, Clone)]
struct State {
    maps: HashMap<MapKind, HeaderPairs>,
    buffers: HashMap<BufferKind, Vec<u8>>,
    properties: BTreeMap<Vec<String>, Vec<u8>>,
    properties_set: Vec<(Vec<String>, Vec<u8>)>,
    shared: BTreeMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
    shared_writes: usize,
    now: Nanos,
    random: RandomSource,
    local_responses: Vec<LocalResponse>,
    resumed_requests: usize,
    resumed_responses: usize,
    closed_streams: Vec<StreamKind>,
    effective_contexts: Vec<u32>,
    tick_period: u32,
    queues: BTreeMap<String, (u32, VecDeque<Vec<u8>>)>,
    call_status: (u32, Option<Vec<u8>>),
    cancelled_calls: Vec<u32>,
    http_calls: Vec<HttpCallout>,
    grpc_calls: Vec<GrpcCallout>,
    callouts_made: u32,
    foreign_functions: HashMap<String, HostResult<Option<Vec<u8>>>>,
    foreign_calls: Vec<(String, Vec<u8>)>,
    metrics: BTreeMap<String, MetricState>,
    metric_ids: Vec<String>,
    logs: Vec<(LogLevel, String)>,
    log_level: LogLevel,
    failures: HashMap<Hostcall, VecDeque<(HostError, Remaining)>>,
}

impl Default for State {
    fn default() -> Self {
        let mut foreign_functions = HashMap::new();
        // Envoy always offers this one; filters that re-route call it after changing headers.
        foreign_functions.insert("clear_route_cache".to_owned(), Ok(None));
        Self {
            maps: HashMap::new(),
            buffers: HashMap::new(),
            properties: BTreeMap::new(),
            properties_set: Vec::new(),
            shared: BTreeMap::new(),
            last_cas: 0,
            shared_writes: 0,
            // 2026-01-01T00:00:00Z: a realistic wall clock, so code that rejects "time 0" works.
            now: 1_767_225_600_000_000_000,
            random: RandomSource::Seeded(0),
            local_responses: Vec::new(),
            resumed_requests: 0,
            resumed_responses: 0,
            closed_streams: Vec::new(),
            effective_contexts: Vec::new(),
            tick_period: 0,
            queues: BTreeMap::new(),
            call_status: (0, None),
            cancelled_calls: Vec::new(),
            http_calls: Vec::new(),
            grpc_calls: Vec::new(),
            callouts_made: 0,
            foreign_functions,
            foreign_calls: Vec::new(),
            metrics: BTreeMap::new(),
            metric_ids: Vec::new(),
            logs: Vec::new(),
            log_level: LogLevel::Info,
            failures: HashMap::new(),
        }
    }
}

impl State {
    /// Pops the next injected failure for `call`, if any.
    fn injected(&mut self, call: Hostcall) -> HostResult<()> {
        let Some(queue) = self.failures.get_mut(&call) else {
            return Ok(());
        };
        let Some((error, remaining)) = queue.front_mut() else {
            return Ok(());
        };
        let error = error.clone();
        match remaining {
            Remaining::Always => {}
            Remaining::Times(n) => {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    queue.pop_front();
                }
            }
        }
        Err(error)
    }

    fn next_cas(&mut self) -> u32 {
        self.last_cas = self.last_cas.wrapping_add(1);
        if self.last_cas == 0 {
            self.last_cas = 1;
        }
        self.last_cas
    }

    fn write_shared(&mut self, key: &str, value: &[u8]) {
        let cas = self.next_cas();
        self.shared.insert(key.to_owned(), (value.to_vec(), cas));
        self.shared_writes += 1;
    }

    fn metric_name(&self, id: u32) -> HostResult<String> {
        let index = (id / 4).checked_sub(1).ok_or(HostError::NotFound)?;
        self.metric_ids
            .get(index as usize)
            .cloned()
            .ok_or(HostError::NotFound)
    }
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn is_read_only(map: MapKind) -> bool {
    matches!(
        map,
        MapKind::HttpCallResponseHeaders | MapKind::HttpCallResponseTrailers
    )
}

fn path_key(path: &[&str]) -> Vec<String> {
    path.iter().map(|s| (*s).to_owned()).collect()
}

fn property_key(path: &PropertyPath) -> Vec<String> {
    path.segments()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Envoy's `request.headers.<name>`: every value of the header joined by `,`.
fn joined_header(pairs: Option<&HeaderPairs>, name: &str) -> Option<Vec<u8>> {
    let mut values = pairs?.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let mut joined = values.next()?.clone();
    for value in values {
        joined.push(b',');
        joined.extend_from_slice(value);
    }
    Some(joined)
}

/// An in-memory proxy for unit tests; see the [module docs](self).
#[derive(Debug, Default)]
pub struct MockHost {
    state: RefCell<State>,
}

// === builders ===

impl MockHost {
    /// An empty proxy: no headers, clock at 2026-01-01T00:00:00Z, random bytes from seed 0, log
    /// level `Info`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a request header (name lower-cased; repeat for duplicates).
    pub fn with_request_header(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.with_header(MapKind::RequestHeaders, name, value)
    }

    /// Adds a response header (name lower-cased; repeat for duplicates).
    pub fn with_response_header(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.with_header(MapKind::ResponseHeaders, name, value)
    }

    /// Adds an entry to any header map (name lower-cased; repeat for duplicates).
    pub fn with_header(self, map: MapKind, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.state
            .borrow_mut()
            .maps
            .entry(map)
            .or_default()
            .push((lower(name), value.as_ref().to_vec()));
        self
    }

    /// Sets a property (attribute) such as `["source", "address"]`.
    pub fn with_property(self, path: &[&str], value: impl AsRef<[u8]>) -> Self {
        self.state
            .borrow_mut()
            .properties
            .insert(path_key(path), value.as_ref().to_vec());
        self
    }

    /// Sets the clock (nanoseconds since the Unix epoch).
    pub fn with_time(self, now: Nanos) -> Self {
        self.state.borrow_mut().now = now;
        self
    }

    /// Makes `fill_random` deterministic from `seed` (splitmix64); the default seed is 0.
    pub fn with_random_seed(self, seed: u64) -> Self {
        self.state.borrow_mut().random = RandomSource::Seeded(seed);
        self
    }

    /// Makes `fill_random` return exactly these bytes, repeated cyclically (zeros when empty).
    pub fn with_random_bytes(self, bytes: impl AsRef<[u8]>) -> Self {
        self.state.borrow_mut().random = RandomSource::Fixed {
            bytes: bytes.as_ref().to_vec(),
            next: 0,
        };
        self
    }

    /// Stores a shared-data key (as another worker would have), with a fresh CAS token.
    pub fn with_shared_data(self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.put_shared_data(key, value);
        self
    }

    /// Sets the plugin configuration buffer (what `on_configure` reads).
    pub fn with_plugin_config(self, config: impl AsRef<[u8]>) -> Self {
        self.with_buffer(BufferKind::PluginConfiguration, config)
    }

    /// Sets the VM configuration buffer.
    pub fn with_vm_config(self, config: impl AsRef<[u8]>) -> Self {
        self.with_buffer(BufferKind::VmConfiguration, config)
    }

    /// Sets any buffer, e.g. a request body.
    pub fn with_buffer(self, kind: BufferKind, bytes: impl AsRef<[u8]>) -> Self {
        self.state
            .borrow_mut()
            .buffers
            .insert(kind, bytes.as_ref().to_vec());
        self
    }

    /// Sets the proxy's log level (what [`Host::log_level`] reports).
    pub fn with_log_level(self, level: LogLevel) -> Self {
        self.state.borrow_mut().log_level = level;
        self
    }

    /// Registers a foreign function and what it returns.
    pub fn with_foreign_function(self, name: &str, result: HostResult<Option<Vec<u8>>>) -> Self {
        self.state
            .borrow_mut()
            .foreign_functions
            .insert(name.to_owned(), result);
        self
    }

    // === failure injection ===

    /// Makes the next `times` calls of `call` fail with `error` (after any failures already
    /// queued for it).
    pub fn fail_next(&self, call: Hostcall, error: HostError, times: usize) -> &Self {
        if times > 0 {
            self.state
                .borrow_mut()
                .failures
                .entry(call)
                .or_default()
                .push_back((error, Remaining::Times(times)));
        }
        self
    }

    /// Makes every later call of `call` fail with `error` (after any failures already queued).
    pub fn fail_always(&self, call: Hostcall, error: HostError) -> &Self {
        self.state
            .borrow_mut()
            .failures
            .entry(call)
            .or_default()
            .push_back((error, Remaining::Always));
        self
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        self.state.borrow_mut().failures.clear();
    }

    /// Builder form of [`fail_next`](Self::fail_next).
    pub fn failing_next(self, call: Hostcall, error: HostError, times: usize) -> Self {
        self.fail_next(call, error, times);
        self
    }

    /// Builder form of [`fail_always`](Self::fail_always).
    pub fn failing_always(self, call: Hostcall, error: HostError) -> Self {
        self.fail_always(call, error);
        self
    }

    // === control ===

    /// Moves the clock forward.
    pub fn advance(&self, nanos: Nanos) {
        let mut state = self.state.borrow_mut();
        state.now = state.now.saturating_add(nanos);
    }

    /// Sets the clock (it may go backwards, as a wall clock can).
    pub fn set_time(&self, now: Nanos) {
        self.state.borrow_mut().now = now;
    }

    /// Writes a shared-data key unconditionally with a fresh CAS token, as another worker would.
    pub fn put_shared_data(&self, key: &str, value: impl AsRef<[u8]>) {
        self.state.borrow_mut().write_shared(key, value.as_ref());
    }

    /// Sets what [`Host::call_status`] reports (the callout being delivered).
    pub fn set_call_status(&self, code: u32, message: Option<&[u8]>) {
        self.state.borrow_mut().call_status = (code, message.map(<[u8]>::to_vec));
    }

    /// Replaces a whole header map (names lower-cased), e.g. to move on to the response phase.
    pub fn put_header_map(&self, map: MapKind, pairs: HeaderPairs) {
        let pairs = pairs.into_iter().map(|(k, v)| (lower(&k), v)).collect();
        self.state.borrow_mut().maps.insert(map, pairs);
    }

    /// Forgets recorded logs, local responses, calls and property writes (state is kept).
    pub fn clear_records(&self) {
        let mut state = self.state.borrow_mut();
        state.logs.clear();
        state.local_responses.clear();
        state.http_calls.clear();
        state.grpc_calls.clear();
        state.foreign_calls.clear();
        state.properties_set.clear();
        state.resumed_requests = 0;
        state.resumed_responses = 0;
        state.closed_streams.clear();
        state.effective_contexts.clear();
        state.cancelled_calls.clear();
    }

    // === inspectors ===

    /// The current entries of a header map.
    pub fn headers(&self, map: MapKind) -> HeaderPairs {
        self.state
            .borrow()
            .maps
            .get(&map)
            .cloned()
            .unwrap_or_default()
    }

    /// The current request headers.
    pub fn request_headers(&self) -> HeaderPairs {
        self.headers(MapKind::RequestHeaders)
    }

    /// The current response headers.
    pub fn response_headers(&self) -> HeaderPairs {
        self.headers(MapKind::ResponseHeaders)
    }

    /// Every value of `name` in `map`, as lossy UTF-8 strings, in order.
    pub fn header_values(&self, map: MapKind, name: &str) -> Vec<String> {
        let name = lower(name);
        self.state
            .borrow()
            .maps
            .get(&map)
            .map(|pairs| {
                pairs
                    .iter()
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first value of a request header, as lossy UTF-8.
    pub fn request_header(&self, name: &str) -> Option<String> {
        self.header_values(MapKind::RequestHeaders, name)
            .into_iter()
            .next()
    }

    /// The current value of a property (set by a builder or by the code under test).
    pub fn property_value(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.state.borrow().properties.get(&path_key(path)).cloned()
    }

    /// Every `set_property` call, in order.
    pub fn properties_set(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        self.state.borrow().properties_set.clone()
    }

    /// The last local response sent, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.state.borrow().local_responses.last().cloned()
    }

    /// Every local response sent, in order (more than one is a filter bug in Envoy).
    pub fn local_responses(&self) -> Vec<LocalResponse> {
        self.state.borrow().local_responses.clone()
    }

    /// How many times the request was resumed.
    pub fn resumed_requests(&self) -> usize {
        self.state.borrow().resumed_requests
    }

    /// How many times the response was resumed.
    pub fn resumed_responses(&self) -> usize {
        self.state.borrow().resumed_responses
    }

    /// Every stream direction closed, in order.
    pub fn closed_streams(&self) -> Vec<StreamKind> {
        self.state.borrow().closed_streams.clone()
    }

    /// Every context made effective, in order.
    pub fn effective_contexts(&self) -> Vec<u32> {
        self.state.borrow().effective_contexts.clone()
    }

    /// The current tick period in milliseconds (0: disarmed).
    pub fn tick_period(&self) -> u32 {
        self.state.borrow().tick_period
    }

    /// The items waiting in a queue, oldest first.
    pub fn queue_items(&self, name: &str) -> Vec<Vec<u8>> {
        self.state
            .borrow()
            .queues
            .get(name)
            .map(|(_, items)| items.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every gRPC token cancelled or closed, in order.
    pub fn cancelled_calls(&self) -> Vec<u32> {
        self.state.borrow().cancelled_calls.clone()
    }

    /// Every HTTP call made, in order.
    pub fn http_calls(&self) -> Vec<HttpCallout> {
        self.state.borrow().http_calls.clone()
    }

    /// Every gRPC call made, in order.
    pub fn grpc_calls(&self) -> Vec<GrpcCallout> {
        self.state.borrow().grpc_calls.clone()
    }

    /// Every foreign-function call (name, arguments), in order.
    pub fn foreign_calls(&self) -> Vec<(String, Vec<u8>)> {
        self.state.borrow().foreign_calls.clone()
    }

    /// The value of a counter or gauge by name (`None` if never defined).
    pub fn metric_value(&self, name: &str) -> Option<i64> {
        self.state.borrow().metrics.get(name).map(|m| m.value)
    }

    /// The samples recorded into a histogram by name.
    pub fn histogram_samples(&self, name: &str) -> Vec<u64> {
        self.state
            .borrow()
            .metrics
            .get(name)
            .map(|m| m.samples.clone())
            .unwrap_or_default()
    }

    /// Every defined metric by name with its kind and value (histograms: sample count).
    pub fn metrics(&self) -> BTreeMap<String, (MetricKind, i64)> {
        self.state
            .borrow()
            .metrics
            .iter()
            .map(|(name, m)| {
                let value = match m.kind {
                    MetricKind::Histogram => i64::try_from(m.samples.len()).unwrap_or(i64::MAX),
                    MetricKind::Counter | MetricKind::Gauge => m.value,
                };
                (name.clone(), (m.kind, value))
            })
            .collect()
    }

    /// How many times `define_metric` was called (all names), to check ids are cached.
    pub fn metric_definitions(&self) -> usize {
        self.state.borrow().metric_ids.len()
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state.borrow().logs.clone()
    }

    /// Log lines at `level` or above.
    pub fn logs_at_least(&self, level: LogLevel) -> Vec<String> {
        self.state
            .borrow()
            .logs
            .iter()
            .filter(|(l, _)| *l >= level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The value and CAS token of a shared-data key.
    pub fn shared_entry(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.state.borrow().shared.get(key).cloned()
    }

    /// Every shared-data key, sorted.
    pub fn shared_keys(&self) -> Vec<String> {
        self.state.borrow().shared.keys().cloned().collect()
    }

    /// How many successful shared-data writes happened (including `with_shared_data`).
    pub fn shared_writes(&self) -> usize {
        self.state.borrow().shared_writes
    }

    /// The current clock.
    pub fn time(&self) -> Nanos {
        self.state.borrow().now
    }
}

// === impl Host ===

impl Host for MockHost {
    fn header_map(&self, map: MapKind) -> HostResult<HeaderMap> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::HeaderMap)?;
        let pairs = state.maps.get(&map).map(Vec::as_slice).unwrap_or_default();
        Ok(HeaderMap::from_pairs(
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())),
        ))
    }

    fn header(&self, map: MapKind, name: &str) -> HostResult<Option<Vec<u8>>> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Header)?;
        let name = lower(name);
        Ok(state
            .maps
            .get(&map)
            .and_then(|pairs| pairs.iter().find(|(k, _)| *k == name))
            .map(|(_, v)| v.clone()))
    }

    fn set_header(&self, map: MapKind, name: &str, value: &[u8]) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SetHeader)?;
        if is_read_only(map) {
            return Err(HostError::BadArgument);
        }
        let name = lower(name);
        let pairs = state.maps.entry(map).or_default();
        // Envoy keeps the position of the first value and drops the others.
        match pairs.iter().position(|(k, _)| *k == name) {
            Some(first) => {
                let mut index = 0;
                pairs.retain(|(k, _)| {
                    let keep = *k != name || index == first;
                    index += 1;
                    keep
                });
                if let Some(entry) = pairs.iter_mut().find(|(k, _)| *k == name) {
                    entry.1 = value.to_vec();
                }
            }
            None => pairs.push((name, value.to_vec())),
        }
        Ok(())
    }

    fn add_header(&self, map: MapKind, name: &str, value: &[u8]) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::AddHeader)?;
        if is_read_only(map) {
            return Err(HostError::BadArgument);
        }
        state
            .maps
            .entry(map)
            .or_default()
            .push((lower(name), value.to_vec()));
        Ok(())
    }

    fn remove_header(&self, map: MapKind, name: &str) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::RemoveHeader)?;
        if is_read_only(map) {
            return Err(HostError::BadArgument);
        }
        let name = lower(name);
        if let Some(pairs) = state.maps.get_mut(&map) {
            pairs.retain(|(k, _)| *k != name);
        }
        Ok(())
    }

    fn set_header_map(&self, map: MapKind, pairs: &[(&str, &[u8])]) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SetHeaderMap)?;
        if is_read_only(map) {
            return Err(HostError::BadArgument);
        }
        let pairs = pairs.iter().map(|(k, v)| (lower(k), v.to_vec())).collect();
        state.maps.insert(map, pairs);
        Ok(())
    }

    fn buffer(&self, kind: BufferKind, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Buffer)?;
        let Some(bytes) = state.buffers.get(&kind) else {
            return Ok(None);
        };
        let end = start.saturating_add(max).min(bytes.len());
        Ok(bytes
            .get(start..end)
            .filter(|slice| !slice.is_empty())
            .map(<[u8]>::to_vec))
    }

    fn property(&self, path: &PropertyPath) -> HostResult<Option<Vec<u8>>> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Property)?;
        let key = property_key(path);
        let value = match (state.properties.get(&key), key.as_slice()) {
            (Some(value), _) => Some(value.clone()),
            (None, [top, headers, name]) if headers == "headers" => {
                let map = match top.as_str() {
                    "request" => MapKind::RequestHeaders,
                    "response" => MapKind::ResponseHeaders,
                    _ => return Ok(None),
                };
                joined_header(state.maps.get(&map), &lower(name))
            }
            (None, _) => None,
        };
        Ok(value.filter(|v| !v.is_empty()))
    }

    fn set_property(&self, path: &PropertyPath, value: &[u8]) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SetProperty)?;
        let key = property_key(path);
        state.properties.insert(key.clone(), value.to_vec());
        state.properties_set.push((key, value.to_vec()));
        Ok(())
    }

    fn shared_data(&self, key: &str) -> HostResult<SharedValue> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SharedData)?;
        Ok(match state.shared.get(key) {
            None => SharedValue::default(),
            Some((value, cas)) => SharedValue {
                value: (!value.is_empty()).then(|| value.clone()),
                cas: Some(*cas),
            },
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SetSharedData)?;
        if let (Some(expected), Some((_, current))) = (cas, state.shared.get(key))
            && expected != 0
            && expected != *current
        {
            return Err(HostError::CasMismatch);
        }
        state.write_shared(key, value);
        Ok(())
    }

    fn now(&self) -> HostResult<Nanos> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Now)?;
        Ok(state.now)
    }

    fn fill_random(&self, buf: &mut [u8]) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::FillRandom)?;
        state.random.fill(buf);
        Ok(())
    }

    fn register_queue(&self, name: &str) -> HostResult<u32> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Queue)?;
        let next = u32::try_from(state.queues.len() + 1).map_err(|_| HostError::InternalFailure)?;
        Ok(state
            .queues
            .entry(name.to_owned())
            .or_insert_with(|| (next, VecDeque::new()))
            .0)
    }

    fn resolve_queue(&self, _vm_id: &str, name: &str) -> HostResult<Option<u32>> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Queue)?;
        Ok(state.queues.get(name).map(|(id, _)| *id))
    }

    fn enqueue(&self, queue: u32, value: &[u8]) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Enqueue)?;
        let (_, items) = state
            .queues
            .values_mut()
            .find(|(id, _)| *id == queue)
            .ok_or(HostError::NotFound)?;
        items.push_back(value.to_vec());
        Ok(())
    }

    fn dequeue(&self, queue: u32) -> HostResult<Option<Vec<u8>>> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Dequeue)?;
        let (_, items) = state
            .queues
            .values_mut()
            .find(|(id, _)| *id == queue)
            .ok_or(HostError::NotFound)?;
        Ok(items.pop_front())
    }

    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SetEffectiveContext)?;
        state.effective_contexts.push(context_id);
        Ok(())
    }

    fn set_tick_period(&self, millis: u32) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SetTickPeriod)?;
        state.tick_period = millis;
        Ok(())
    }

    fn send_local_response(&self, reply: &LocalReply<'_>) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::SendLocalResponse)?;
        state.local_responses.push(LocalResponse::from(reply));
        Ok(())
    }

    fn continue_stream(&self, stream: StreamKind) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::ContinueStream)?;
        match stream {
            StreamKind::Request => state.resumed_requests += 1,
            StreamKind::Response => state.resumed_responses += 1,
        }
        Ok(())
    }

    fn close_stream(&self, stream: StreamKind) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::CloseStream)?;
        state.closed_streams.push(stream);
        Ok(())
    }

    fn http_call(&self, call: &HttpCall<'_>) -> HostResult<u32> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::HttpCall)?;
        let has = |name: &str| call.headers.iter().any(|(k, _)| lower(k) == name);
        if call.cluster.is_empty() || !(has(":method") && has(":path") && has(":authority")) {
            return Err(HostError::BadArgument);
        }
        state.callouts_made += 1;
        state.http_calls.push(HttpCallout::from(call));
        Ok(state.callouts_made * 4)
    }

    fn grpc_call(&self, call: &GrpcCall<'_>) -> HostResult<u32> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::GrpcCall)?;
        if call.cluster.is_empty() || call.service.is_empty() || call.method.is_empty() {
            return Err(HostError::BadArgument);
        }
        state.callouts_made += 1;
        state.grpc_calls.push(GrpcCallout::from(call));
        Ok(state.callouts_made * 4 + 1)
    }

    fn grpc_cancel(&self, token: u32) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::GrpcCancel)?;
        state.cancelled_calls.push(token);
        Ok(())
    }

    fn grpc_close(&self, token: u32) -> HostResult<()> {
        self.grpc_cancel(token)
    }

    fn call_status(&self) -> HostResult<(u32, Option<Vec<u8>>)> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::CallStatus)?;
        Ok(state.call_status.clone())
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::CallForeignFunction)?;
        state.foreign_calls.push((name.to_owned(), args.to_vec()));
        state
            .foreign_functions
            .get(name)
            .cloned()
            .unwrap_or(Err(HostError::NotFound))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::DefineMetric)?;
        let existing = state.metrics.get(name).map(|m| m.kind);
        match existing {
            // Envoy would hand back a different stat type under the same name; a test should
            // notice that mistake.
            Some(existing) if existing != kind => return Err(HostError::BadArgument),
            Some(_) => {}
            None => {
                state.metrics.insert(
                    name.to_owned(),
                    MetricState {
                        kind,
                        value: 0,
                        samples: Vec::new(),
                    },
                );
            }
        }
        state.metric_ids.push(name.to_owned());
        let n = u32::try_from(state.metric_ids.len()).map_err(|_| HostError::InternalFailure)?;
        let kind_bits = match kind {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        };
        Ok(n * 4 + kind_bits)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::IncrementMetric)?;
        let name = state.metric_name(id)?;
        let metric = state.metrics.get_mut(&name).ok_or(HostError::NotFound)?;
        match metric.kind {
            MetricKind::Counter if delta <= 0 => Err(HostError::BadArgument),
            MetricKind::Histogram => Err(HostError::BadArgument),
            MetricKind::Counter | MetricKind::Gauge => {
                metric.value = metric.value.saturating_add(delta);
                Ok(())
            }
        }
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::RecordMetric)?;
        let name = state.metric_name(id)?;
        let metric = state.metrics.get_mut(&name).ok_or(HostError::NotFound)?;
        let signed = i64::try_from(value).unwrap_or(i64::MAX);
        match metric.kind {
            MetricKind::Counter => metric.value = metric.value.saturating_add(signed),
            MetricKind::Gauge => metric.value = signed,
            MetricKind::Histogram => metric.samples.push(value),
        }
        Ok(())
    }

    fn metric(&self, id: u32) -> HostResult<u64> {
        let mut state = self.state.borrow_mut();
        state.injected(Hostcall::Metric)?;
        let name = state.metric_name(id)?;
        let metric = state.metrics.get(&name).ok_or(HostError::NotFound)?;
        match metric.kind {
            MetricKind::Histogram => Err(HostError::BadArgument),
            // The ABI returns the raw 64 bits; a negative gauge wraps like Envoy's u64 read.
            MetricKind::Counter | MetricKind::Gauge => Ok(metric.value as u64),
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.state
            .borrow_mut()
            .logs
            .push((level, message.to_owned()));
    }

    fn log_level(&self) -> LogLevel {
        self.state.borrow().log_level
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive_and_returns_first_duplicate() {
        let host = MockHost::new()
            .with_request_header("X-Dup", "one")
            .with_request_header("x-dup", "two");
        let value = host.header(MapKind::RequestHeaders, "X-DUP").unwrap();
        assert_eq!(value.as_deref(), Some(&b"one"[..]));
        assert_eq!(
            host.header_values(MapKind::RequestHeaders, "x-dup"),
            ["one", "two"]
        );
    }

    #[test]
    fn set_header_replaces_every_value_in_place() {
        let host = MockHost::new()
            .with_request_header("a", "1")
            .with_request_header("x", "old1")
            .with_request_header("b", "2")
            .with_request_header("x", "old2");
        host.set_header(MapKind::RequestHeaders, "X", b"new")
            .unwrap();
        let names: Vec<_> = host.request_headers().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "x", "b"]);
        assert_eq!(host.request_header("x").as_deref(), Some("new"));
    }

    #[test]
    fn add_and_remove_header() {
        let host = MockHost::new();
        host.add_header(MapKind::ResponseHeaders, "Via", b"a")
            .unwrap();
        host.add_header(MapKind::ResponseHeaders, "via", b"b")
            .unwrap();
        assert_eq!(
            host.header_values(MapKind::ResponseHeaders, "via"),
            ["a", "b"]
        );
        host.remove_header(MapKind::ResponseHeaders, "VIA").unwrap();
        assert!(host.response_headers().is_empty());
        // Removing an absent header succeeds, as in Envoy.
        host.remove_header(MapKind::ResponseHeaders, "nothing")
            .unwrap();
    }

    #[test]
    fn call_response_maps_are_read_only() {
        let host = MockHost::new();
        assert_eq!(
            host.set_header(MapKind::HttpCallResponseHeaders, "a", b"b"),
            Err(HostError::BadArgument)
        );
    }

    #[test]
    fn empty_property_and_buffer_read_as_none() {
        let host = MockHost::new()
            .with_property(&["request", "id"], "")
            .with_plugin_config("");
        assert_eq!(
            host.property(&PropertyPath::new(&["request", "id"]))
                .unwrap(),
            None
        );
        assert_eq!(
            host.buffer(BufferKind::PluginConfiguration, 0, usize::MAX)
                .unwrap(),
            None
        );
    }

    #[test]
    fn buffer_reads_are_clipped() {
        let host = MockHost::new().with_plugin_config("abcdef");
        let read = |start, max| {
            host.buffer(BufferKind::PluginConfiguration, start, max)
                .unwrap()
        };
        assert_eq!(read(0, usize::MAX).as_deref(), Some(&b"abcdef"[..]));
        assert_eq!(read(2, 2).as_deref(), Some(&b"cd"[..]));
        assert_eq!(read(10, 2), None);
    }

    #[test]
    fn set_property_is_readable_and_recorded() {
        let host = MockHost::new();
        let path = PropertyPath::from_static("meshward_request_id");
        host.set_property(&path, b"abc").unwrap();
        assert_eq!(host.property(&path).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(host.properties_set().len(), 1);
    }

    #[test]
    fn shared_data_cas_rules_follow_envoy() {
        let host = MockHost::new();
        assert_eq!(host.shared_data("k").unwrap(), SharedValue::default());
        // A CAS on an absent key inserts.
        host.set_shared_data("k", b"v1", Some(42)).unwrap();
        let first = host.shared_data("k").unwrap();
        assert_eq!(first.value.as_deref(), Some(&b"v1"[..]));
        let token = first.cas.unwrap();
        host.set_shared_data("k", b"v2", Some(token)).unwrap();
        // The old token is stale now: every write gets a new one.
        assert_eq!(
            host.set_shared_data("k", b"v3", Some(token)),
            Err(HostError::CasMismatch)
        );
        let second = host.shared_data("k").unwrap();
        assert_ne!(second.cas, Some(token));
        assert_eq!(second.value.as_deref(), Some(&b"v2"[..]));
        // No CAS: unconditional.
        host.set_shared_data("k", b"v4", None).unwrap();
        assert_eq!(host.shared_entry("k").unwrap().0, b"v4");
    }

    #[test]
    fn empty_shared_value_reads_as_none_but_keeps_its_token() {
        let host = MockHost::new().with_shared_data("k", "");
        let read = host.shared_data("k").unwrap();
        assert_eq!(read.value, None);
        assert!(read.cas.is_some());
    }

    #[test]
    fn injected_failures_fire_the_requested_number_of_times() {
        let host = MockHost::new().failing_next(Hostcall::SetSharedData, HostError::CasMismatch, 2);
        assert_eq!(
            host.set_shared_data("k", b"v", None),
            Err(HostError::CasMismatch)
        );
        assert_eq!(
            host.set_shared_data("k", b"v", None),
            Err(HostError::CasMismatch)
        );
        assert_eq!(host.set_shared_data("k", b"v", None), Ok(()));
        host.fail_always(Hostcall::Now, HostError::InternalFailure);
        assert_eq!(host.now(), Err(HostError::InternalFailure));
        assert_eq!(host.now(), Err(HostError::InternalFailure));
        host.clear_failures();
        assert!(host.now().is_ok());
    }

    #[test]
    fn clock_advances() {
        let host = MockHost::new().with_time(1_000);
        host.advance(500);
        assert_eq!(host.now().unwrap(), 1_500);
    }

    #[test]
    fn random_bytes_are_deterministic() {
        let fill = |host: &MockHost| {
            let mut buf = [0u8; 20];
            host.fill_random(&mut buf).unwrap();
            buf
        };
        let a = MockHost::new().with_random_seed(7);
        let b = MockHost::new().with_random_seed(7);
        assert_eq!(fill(&a), fill(&b));
        assert_ne!(fill(&a), [0u8; 20]);
        let fixed = MockHost::new().with_random_bytes([1, 2, 3]);
        let mut buf = [0u8; 7];
        fixed.fill_random(&mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn counter_increments_must_be_positive() {
        let host = MockHost::new();
        let id = host.define_metric(MetricKind::Counter, "c").unwrap();
        host.increment_metric(id, 2).unwrap();
        assert_eq!(host.increment_metric(id, 0), Err(HostError::BadArgument));
        assert_eq!(host.increment_metric(id, -1), Err(HostError::BadArgument));
        host.record_metric(id, 3).unwrap();
        assert_eq!(host.metric_value("c"), Some(5));
        assert_eq!(host.metric(id).unwrap(), 5);
    }

    #[test]
    fn redefining_a_metric_gives_a_new_id_for_the_same_value() {
        let host = MockHost::new();
        let first = host.define_metric(MetricKind::Gauge, "g").unwrap();
        let second = host.define_metric(MetricKind::Gauge, "g").unwrap();
        assert_ne!(first, second);
        host.record_metric(first, 9).unwrap();
        host.increment_metric(second, -4).unwrap();
        assert_eq!(host.metric_value("g"), Some(5));
        assert_eq!(host.metric_definitions(), 2);
        assert_eq!(host.increment_metric(999, 1), Err(HostError::NotFound));
    }

    #[test]
    fn histograms_record_samples_and_cannot_be_read() {
        let host = MockHost::new();
        let id = host.define_metric(MetricKind::Histogram, "h").unwrap();
        host.record_metric(id, 7).unwrap();
        assert_eq!(host.histogram_samples("h"), [7]);
        assert_eq!(host.metric(id), Err(HostError::BadArgument));
    }

    #[test]
    fn http_call_needs_pseudo_headers() {
        let host = MockHost::new();
        let partial: [(&str, &[u8]); 1] = [(":method", b"GET")];
        let call = HttpCall {
            cluster: "jwks",
            headers: &partial,
            ..HttpCall::default()
        };
        assert_eq!(host.http_call(&call), Err(HostError::BadArgument));
        let full: [(&str, &[u8]); 3] = [
            (":method", b"GET"),
            (":path", b"/keys"),
            (":authority", b"idp"),
        ];
        let call = HttpCall {
            headers: &full,
            ..call
        };
        let token = host.http_call(&call).unwrap();
        assert_ne!(token, 0);
        assert_eq!(host.http_calls(), [HttpCallout::from(&call)]);
    }

    #[test]
    fn request_header_properties_join_every_value_like_envoy() {
        let host = MockHost::new()
            .with_request_header("X-Dup", "a")
            .with_request_header("x-dup", "b");
        let read = |path: &'static str| host.property(&PropertyPath::from_static(path)).unwrap();
        assert_eq!(
            read("request\0headers\0x-dup").as_deref(),
            Some(&b"a,b"[..])
        );
        assert_eq!(read("request\0headers\0absent"), None);
    }

    #[test]
    fn queues_keep_order_and_read_empty_as_none() {
        let host = MockHost::new();
        let id = host.register_queue("q").unwrap();
        assert_ne!(id, 0);
        assert_eq!(host.register_queue("q").unwrap(), id);
        assert_eq!(host.resolve_queue("", "q").unwrap(), Some(id));
        assert_eq!(host.resolve_queue("", "other").unwrap(), None);
        host.enqueue(id, b"1").unwrap();
        host.enqueue(id, b"2").unwrap();
        assert_eq!(host.dequeue(id).unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(host.dequeue(id).unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(host.dequeue(id).unwrap(), None);
        assert_eq!(host.enqueue(99, b"x"), Err(HostError::NotFound));
    }

    #[test]
    fn foreign_functions_default_to_not_found_except_clear_route_cache() {
        let host = MockHost::new();
        assert_eq!(
            host.call_foreign_function("clear_route_cache", b""),
            Ok(None)
        );
        assert_eq!(
            host.call_foreign_function("nope", b""),
            Err(HostError::NotFound)
        );
        assert_eq!(host.foreign_calls().len(), 2);
    }

    #[test]
    fn local_responses_and_logs_are_recorded() {
        let host = MockHost::new();
        host.send_local_response(&LocalReply {
            status: 503,
            details: "why",
            ..LocalReply::default()
        })
        .unwrap();
        host.log(LogLevel::Warn, "w");
        host.log(LogLevel::Debug, "d");
        assert_eq!(host.local_response().map(|r| r.status), Some(503));
        assert_eq!(host.logs_at_least(LogLevel::Info), ["w"]);
    }
}
