//! A plugin (one `envoy.filters.http.wasm` filter) running on N worker VMs plus a canary, with
//! Envoy's start order, per-stream stepping, callouts, timers, queues and failure policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::Linker;

use crate::engine::{HostEngine, Module};
use crate::shared::SharedState;
use crate::types::{
    Action, CallId, CalloutOutcome, ExportCosts, FailPolicy, FilterState, FinishOutcome, HeaderMap,
    HostError, HttpCallResponse, LoadError, LocalReply, LogEntry, PendingHttpCall, PhaseOutcome,
    PluginSpec, StreamEvent, StreamId, StreamInfo,
};
use crate::vm::{
    CallReport, Deferred, FuelMark, HostState, PluginInfo, REQUEST_HEADERS, REQUEST_TRAILERS,
    RESPONSE_HEADERS, RESPONSE_TRAILERS, StreamCtx, Vm,
};

/// Root context id in every VM (cpp-host numbers roots from 1; 0 is the internal VM context).
const ROOT_CTX: u32 = 1;

/// The six HTTP stream callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `proxy_on_request_headers`
    RequestHeaders,
    /// `proxy_on_request_body`
    RequestBody,
    /// `proxy_on_request_trailers`
    RequestTrailers,
    /// `proxy_on_response_headers`
    ResponseHeaders,
    /// `proxy_on_response_body`
    ResponseBody,
    /// `proxy_on_response_trailers`
    ResponseTrailers,
}

impl Phase {
    fn export(self) -> &'static str {
        match self {
            Self::RequestHeaders => "proxy_on_request_headers",
            Self::RequestBody => "proxy_on_request_body",
            Self::RequestTrailers => "proxy_on_request_trailers",
            Self::ResponseHeaders => "proxy_on_response_headers",
            Self::ResponseBody => "proxy_on_response_body",
            Self::ResponseTrailers => "proxy_on_response_trailers",
        }
    }

    fn map_slot(self) -> Option<usize> {
        match self {
            Self::RequestHeaders => Some(REQUEST_HEADERS),
            Self::RequestTrailers => Some(REQUEST_TRAILERS),
            Self::ResponseHeaders => Some(RESPONSE_HEADERS),
            Self::ResponseTrailers => Some(RESPONSE_TRAILERS),
            Self::RequestBody | Self::ResponseBody => None,
        }
    }

    fn body_slot(self) -> Option<usize> {
        match self {
            Self::RequestBody => Some(0),
            Self::ResponseBody => Some(1),
            _ => None,
        }
    }

    /// Whether this is a request-direction (decoder) callback.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Self::RequestHeaders | Self::RequestBody | Self::RequestTrailers
        )
    }
}

#[derive(Debug)]
struct StreamRecord {
    worker: usize,
    ctx: u32,
    generation: u64,
    created: bool,
    failed_reported: bool,
    paused: Option<Phase>,
    info: StreamInfo,
    filter_state: FilterState,
}

#[derive(Debug)]
struct PendingCall {
    call: PendingHttpCall,
    generation: u64,
    /// Monotonic time at which the call times out (`None`: timeout 0, none in Envoy).
    deadline_ns: Option<u64>,
}

/// A loaded plugin: `workers` VMs (each with its root context configured) sharing a
/// [`SharedState`] with every other plugin of the same simulated proxy.
pub struct Plugin {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    module: Module,
    spec: PluginSpec,
    info: Arc<PluginInfo>,
    shared: SharedState,
    workers: Vec<Vm>,
    streams: BTreeMap<u64, StreamRecord>,
    next_stream: u64,
    pending: BTreeMap<CallId, PendingCall>,
    events: Vec<StreamEvent>,
    logs: Vec<LogEntry>,
    next_generation: u64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.spec.name)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

fn trap_outcome(
    trap: String,
    policy: FailPolicy,
    report_logs: Vec<LogEntry>,
    fuel: u64,
    hostcalls: u64,
) -> PhaseOutcome {
    let mut out = PhaseOutcome::skipped();
    out.skipped = policy == FailPolicy::FailOpen;
    out.action = if policy == FailPolicy::FailOpen {
        Action::Continue
    } else {
        Action::Failed(LocalReply::wasm_fail_stream())
    };
    out.trap = Some(trap);
    out.logs = report_logs;
    out.fuel = fuel;
    out.hostcalls = hostcalls;
    out
}

impl Plugin {
    /// Loads `module` like Envoy: load-time checks (ABI version, imports, allocator), then a
    /// canary VM and each worker VM run `_initialize` (+`main`) with restricted hostcalls,
    /// `proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`.
    ///
    /// # Errors
    /// [`LoadError::Rejected`] when `on_configure` returns false or traps (Envoy NACK);
    /// other variants for modules Envoy would refuse.
    pub fn load(
        engine: &HostEngine,
        module: &Module,
        spec: PluginSpec,
        shared: &SharedState,
    ) -> Result<Self, LoadError> {
        if spec.workers == 0 {
            return Err(LoadError::InvalidSpec(
                "workers must be at least 1".to_owned(),
            ));
        }
        crate::abi::check_module(module)?;
        let linker = crate::abi::linker(engine.wasmtime())?;
        let info = Arc::new(PluginInfo {
            uid: shared.next_plugin_uid(),
            name: spec.name.clone(),
            root_id: spec.root_id.clone(),
            vm_id: spec.vm_id.clone(),
            configuration: spec.configuration.clone(),
            vm_configuration: spec.vm_configuration.clone(),
            env: spec.env.clone(),
            log_level: spec.log_level,
            legacy_route_cache: spec.legacy_clear_route_cache_on_header_mutation,
        });
        let mut plugin = Self {
            engine: engine.wasmtime().clone(),
            linker,
            module: module.clone(),
            spec,
            info,
            shared: shared.clone(),
            workers: Vec::new(),
            streams: BTreeMap::new(),
            next_stream: 0,
            pending: BTreeMap::new(),
            events: Vec::new(),
            logs: Vec::new(),
            next_generation: 0,
        };
        // The canary is configured and dropped without on_done/on_delete.
        let canary = plugin.start_vm(None)?;
        drop(canary);
        for worker in 0..plugin.spec.workers {
            let vm = plugin.start_vm(Some(worker))?;
            plugin.workers.push(vm);
        }
        Ok(plugin)
    }

    fn start_vm(&mut self, worker: Option<usize>) -> Result<Vm, LoadError> {
        self.next_generation += 1;
        let state = HostState::new(self.shared.clone(), self.info.clone(), worker);
        let mut vm = Vm::instantiate(
            &self.engine,
            &self.linker,
            &self.module,
            state,
            self.spec.fuel_per_callback,
            self.next_generation,
        )
        .map_err(|e| match e {
            LoadError::StartFailed {
                phase,
                reason,
                logs,
            } => {
                self.logs.extend(logs.iter().cloned());
                LoadError::StartFailed {
                    phase,
                    reason,
                    logs,
                }
            }
            other => other,
        })?;
        let mut logs: Vec<LogEntry> = std::mem::take(&mut vm.store.data_mut().logs);
        vm.store.data_mut().root_ctx = ROOT_CTX;
        let root = ROOT_CTX as i32;

        let report = vm.call::<(i32, i32), ()>("proxy_on_context_create", ROOT_CTX, (root, 0));
        logs.extend(report.logs.iter().cloned());
        if let Err(reason) = report.result {
            self.logs.extend(logs.iter().cloned());
            return Err(LoadError::StartFailed {
                phase: "proxy_on_context_create".to_owned(),
                reason,
                logs,
            });
        }

        let vm_cfg_len = i32::try_from(self.spec.vm_configuration.len()).unwrap_or(i32::MAX);
        let report = vm.call::<(i32, i32), i32>("proxy_on_vm_start", ROOT_CTX, (root, vm_cfg_len));
        logs.extend(report.logs.iter().cloned());
        self.absorb_root_report(worker, &mut vm, &report);
        match report.result {
            Err(reason) => {
                self.logs.extend(logs.iter().cloned());
                return Err(LoadError::StartFailed {
                    phase: "proxy_on_vm_start".to_owned(),
                    reason,
                    logs,
                });
            }
            Ok(Some(0)) => {
                self.logs.extend(logs.iter().cloned());
                return Err(LoadError::StartFailed {
                    phase: "proxy_on_vm_start".to_owned(),
                    reason: "returned false".to_owned(),
                    logs,
                });
            }
            Ok(_) => {}
        }

        let cfg_len = i32::try_from(self.spec.configuration.len()).unwrap_or(i32::MAX);
        vm.store.data_mut().plugin_config_readable = true;
        let report = vm.call::<(i32, i32), i32>("proxy_on_configure", ROOT_CTX, (root, cfg_len));
        vm.store.data_mut().plugin_config_readable = false;
        logs.extend(report.logs.iter().cloned());
        self.absorb_root_report(worker, &mut vm, &report);
        self.logs.extend(logs.iter().cloned());
        match report.result {
            Err(reason) => Err(LoadError::Rejected { reason, logs }),
            Ok(Some(0)) => Err(LoadError::Rejected {
                reason: "returned false".to_owned(),
                logs,
            }),
            Ok(_) => Ok(vm),
        }
    }

    /// Registers calls and tick changes made during a call on `vm`.
    fn absorb_root_report<R>(
        &mut self,
        worker: Option<usize>,
        vm: &mut Vm,
        report: &CallReport<R>,
    ) {
        if let Some(period) = vm.store.data_mut().tick_period_ms.take() {
            vm.tick_period_ns = u64::from(period) * 1_000_000;
            vm.tick_due_ns = (period > 0).then(|| {
                self.shared
                    .clock()
                    .monotonic_ns()
                    .saturating_add(vm.tick_period_ns)
            });
        }
        // Calls made by the canary die with it.
        let Some(worker) = worker else { return };
        for call in &report.new_calls {
            let stream = self
                .streams
                .iter()
                .find(|(_, r)| {
                    r.worker == worker && r.ctx == call.ctx && r.generation == vm.generation
                })
                .map(|(id, _)| StreamId(*id));
            let id = CallId {
                worker,
                token: call.token,
            };
            self.pending.insert(
                id,
                PendingCall {
                    call: PendingHttpCall {
                        id,
                        cluster: call.cluster.clone(),
                        headers: call.headers.clone(),
                        body: call.body.clone(),
                        trailers: call.trailers.clone(),
                        timeout_ms: call.timeout_ms,
                        stream,
                    },
                    generation: vm.generation,
                    deadline_ns: (call.timeout_ms > 0).then(|| {
                        self.shared
                            .clock()
                            .monotonic_ns()
                            .saturating_add(u64::from(call.timeout_ms).saturating_mul(1_000_000))
                    }),
                },
            );
        }
    }

    // === accessors ===

    /// The spec the plugin was loaded with.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// The process state this plugin shares.
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// Number of worker VMs.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Size of the module binary.
    pub fn module_size(&self) -> usize {
        self.module.size_bytes()
    }

    /// Linear memory of a worker's VM, in bytes.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn memory_bytes(&mut self, worker: usize) -> Result<usize, HostError> {
        self.workers
            .get_mut(worker)
            .map(Vm::memory_bytes)
            .ok_or(HostError::UnknownWorker(worker))
    }

    /// Fuel, hostcalls and calls per guest export, summed over the worker VMs: every call the
    /// host made into them since [`Plugin::load`] (start-up exports included) or since the last
    /// [`Plugin::reset_export_costs`]. A VM replaced under [`FailPolicy::Reload`] keeps its
    /// worker's history; the canary VM, dropped after loading, is not counted.
    pub fn export_costs(&self) -> ExportCosts {
        let mut total = ExportCosts::default();
        for vm in &self.workers {
            total.merge(&vm.export_costs);
        }
        total
    }

    /// Turns the per-hostcall fuel trace of every worker VM on or off (off by default): with it
    /// on, each export call and each hostcall is recorded with the fuel used so far, which shows
    /// where a callback spends its instructions ([`Plugin::take_fuel_trace`]).
    pub fn trace_fuel(&mut self, on: bool) {
        for vm in &mut self.workers {
            vm.store.data_mut().fuel_trace = on.then(Vec::new);
        }
    }

    /// The fuel trace recorded since the last call, worker by worker.
    pub fn take_fuel_trace(&mut self) -> Vec<(usize, Vec<FuelMark>)> {
        self.workers
            .iter_mut()
            .enumerate()
            .filter_map(|(worker, vm)| {
                let trace = vm.store.data_mut().fuel_trace.as_mut()?;
                (!trace.is_empty()).then(|| (worker, std::mem::take(trace)))
            })
            .collect()
    }

    /// Starts [`Plugin::export_costs`] from zero (e.g. after loading, to measure requests only).
    pub fn reset_export_costs(&mut self) {
        for vm in &mut self.workers {
            vm.export_costs = ExportCosts::default();
        }
    }

    /// TEST-ONLY fault injection, not an Envoy feature: the fuel (≈ wasm instructions) each later
    /// callback of `worker`'s current VM may use. A callback that runs out traps at that point, as
    /// a VM crashing in the middle of its work (a bucket update, a callout answer); with
    /// [`FailPolicy::Reload`] the replacement VM starts again with `spec.fuel_per_callback`.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn set_worker_fuel(&mut self, worker: usize, fuel: u64) -> Result<(), HostError> {
        self.workers
            .get_mut(worker)
            .ok_or(HostError::UnknownWorker(worker))?
            .set_fuel_per_callback(fuel);
        Ok(())
    }

    /// The trap message if that worker's VM has failed.
    pub fn failure(&self, worker: usize) -> Option<&str> {
        self.workers.get(worker).and_then(|vm| vm.failed.as_deref())
    }

    /// Every log line the plugin's VMs emitted so far (canary included).
    pub fn logs(&self) -> &[LogEntry] {
        &self.logs
    }

    /// Takes the accumulated log lines.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.logs)
    }

    /// `http_call`s waiting for an answer, in token order.
    pub fn pending_http_calls(&self) -> Vec<PendingHttpCall> {
        self.pending.values().map(|p| p.call.clone()).collect()
    }

    /// Stream events produced outside the stream's own callbacks and not yet taken.
    pub fn take_events(&mut self) -> Vec<StreamEvent> {
        std::mem::take(&mut self.events)
    }

    /// The filter state of a stream (shared with the other filters of its chain).
    ///
    /// # Errors
    /// Unknown stream.
    pub fn filter_state(&self, stream: StreamId) -> Result<FilterState, HostError> {
        self.streams
            .get(&stream.0)
            .map(|r| r.filter_state.clone())
            .ok_or(HostError::UnknownStream(stream))
    }

    /// Replaces the stream info of a stream (e.g. the route chosen after a route-cache clear).
    ///
    /// # Errors
    /// Unknown stream.
    pub fn set_stream_info(&mut self, stream: StreamId, info: StreamInfo) -> Result<(), HostError> {
        let rec = self
            .streams
            .get_mut(&stream.0)
            .ok_or(HostError::UnknownStream(stream))?;
        rec.info = info.clone();
        let ctx = rec.ctx;
        if let Some(vm) = self.workers.get_mut(rec.worker)
            && let Some(s) = vm.store.data_mut().streams.get_mut(&ctx)
        {
            s.info = info;
        }
        Ok(())
    }

    // === streams ===

    /// Starts a stream on `worker` with default stream info and its own filter state.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn new_stream(&mut self, worker: usize) -> Result<StreamId, HostError> {
        self.new_stream_with(worker, &StreamInfo::default(), &FilterState::new())
    }

    /// Starts a stream on `worker`. Pass the same `filter_state` to every plugin of a chain.
    /// The context is created lazily (when request headers arrive, or at log time), as in Envoy.
    /// Under [`FailPolicy::Reload`] a failed VM is replaced here.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn new_stream_with(
        &mut self,
        worker: usize,
        info: &StreamInfo,
        filter_state: &FilterState,
    ) -> Result<StreamId, HostError> {
        let failed = self
            .workers
            .get(worker)
            .ok_or(HostError::UnknownWorker(worker))?
            .failed
            .is_some();
        if failed && self.spec.fail_policy == FailPolicy::Reload {
            self.reload_worker(worker);
        }
        let vm = self
            .workers
            .get_mut(worker)
            .ok_or(HostError::UnknownWorker(worker))?;
        let ctx = vm.next_ctx;
        vm.next_ctx += 1;
        self.next_stream += 1;
        self.streams.insert(
            self.next_stream,
            StreamRecord {
                worker,
                ctx,
                generation: vm.generation,
                created: false,
                failed_reported: false,
                paused: None,
                info: info.clone(),
                filter_state: filter_state.clone(),
            },
        );
        Ok(StreamId(self.next_stream))
    }

    fn reload_worker(&mut self, worker: usize) {
        // Calls of the failed VM die with it (its tokens will be reused by the new VM).
        self.pending.retain(|id, _| id.worker != worker);
        match self.start_vm(Some(worker)) {
            Ok(mut vm) => {
                if let Some(slot) = self.workers.get_mut(worker) {
                    // The worker's cost history outlives its VM.
                    vm.export_costs.merge(&slot.export_costs);
                    *slot = vm;
                }
            }
            Err(e) => {
                if let Some(slot) = self.workers.get_mut(worker) {
                    slot.failed = Some(format!("reload failed: {e}"));
                }
            }
        }
    }

    /// `proxy_on_request_headers`. `headers` is updated with the filter's mutations.
    ///
    /// # Errors
    /// Unknown stream.
    pub fn request_headers(
        &mut self,
        stream: StreamId,
        headers: &mut HeaderMap,
        end_of_stream: bool,
    ) -> Result<PhaseOutcome, HostError> {
        self.phase(
            stream,
            Phase::RequestHeaders,
            Some(headers),
            None,
            end_of_stream,
        )
    }

    /// `proxy_on_request_body` with the next chunk. If an earlier body callback paused (buffer),
    /// the filter sees the buffered data plus this chunk. On Continue `body` holds everything
    /// released (mutations included); on Pause it holds the buffered data, which stays in the
    /// filter — pass only new chunks next time.
    ///
    /// # Errors
    /// Unknown stream.
    pub fn request_body(
        &mut self,
        stream: StreamId,
        body: &mut Vec<u8>,
        end_of_stream: bool,
    ) -> Result<PhaseOutcome, HostError> {
        self.phase(stream, Phase::RequestBody, None, Some(body), end_of_stream)
    }

    /// `proxy_on_request_trailers`.
    ///
    /// # Errors
    /// Unknown stream.
    pub fn request_trailers(
        &mut self,
        stream: StreamId,
        trailers: &mut HeaderMap,
    ) -> Result<PhaseOutcome, HostError> {
        self.phase(stream, Phase::RequestTrailers, Some(trailers), None, true)
    }

    /// `proxy_on_response_headers` (also for local replies: pass `reply.response_headers()`).
    ///
    /// # Errors
    /// Unknown stream.
    pub fn response_headers(
        &mut self,
        stream: StreamId,
        headers: &mut HeaderMap,
        end_of_stream: bool,
    ) -> Result<PhaseOutcome, HostError> {
        self.phase(
            stream,
            Phase::ResponseHeaders,
            Some(headers),
            None,
            end_of_stream,
        )
    }

    /// `proxy_on_response_body` (same buffering rules as [`Plugin::request_body`]).
    ///
    /// # Errors
    /// Unknown stream.
    pub fn response_body(
        &mut self,
        stream: StreamId,
        body: &mut Vec<u8>,
        end_of_stream: bool,
    ) -> Result<PhaseOutcome, HostError> {
        self.phase(stream, Phase::ResponseBody, None, Some(body), end_of_stream)
    }

    /// `proxy_on_response_trailers`.
    ///
    /// # Errors
    /// Unknown stream.
    pub fn response_trailers(
        &mut self,
        stream: StreamId,
        trailers: &mut HeaderMap,
    ) -> Result<PhaseOutcome, HostError> {
        self.phase(stream, Phase::ResponseTrailers, Some(trailers), None, true)
    }

    /// Whether the stream's context was created (it saw request headers, or finished).
    pub fn stream_created(&self, stream: StreamId) -> bool {
        self.streams.get(&stream.0).is_some_and(|r| r.created)
    }

    /// Runs one stream callback.
    ///
    /// # Errors
    /// Unknown stream.
    pub fn phase(
        &mut self,
        stream: StreamId,
        phase: Phase,
        map: Option<&mut HeaderMap>,
        body: Option<&mut Vec<u8>>,
        end_of_stream: bool,
    ) -> Result<PhaseOutcome, HostError> {
        let policy = self.spec.fail_policy;
        let rec = self
            .streams
            .get_mut(&stream.0)
            .ok_or(HostError::UnknownStream(stream))?;
        let vm = self
            .workers
            .get_mut(rec.worker)
            .ok_or(HostError::UnknownWorker(rec.worker))?;
        let (ctx, worker) = (rec.ctx, rec.worker);

        if vm.generation != rec.generation || vm.failed.is_some() {
            return Ok(if policy == FailPolicy::FailOpen || rec.failed_reported {
                PhaseOutcome::skipped()
            } else {
                rec.failed_reported = true;
                let reason = vm
                    .failed
                    .clone()
                    .unwrap_or_else(|| "vm was replaced".to_owned());
                let mut out = trap_outcome(reason, policy, Vec::new(), 0, 0);
                out.trap = None;
                out
            });
        }
        let mut fuel = 0;
        let mut hostcalls = 0;
        let mut logs = Vec::new();
        if !rec.created {
            if phase != Phase::RequestHeaders {
                // Envoy: a context that never saw request headers skips the other callbacks.
                return Ok(PhaseOutcome::skipped());
            }
            let request_time_ns = rec.info.request_time_ns.unwrap_or_else(|| {
                i64::try_from(self.shared.clock().wall_ns()).unwrap_or(i64::MAX)
            });
            vm.store.data_mut().streams.insert(
                ctx,
                StreamCtx {
                    info: rec.info.clone(),
                    filter_state: rec.filter_state.clone(),
                    request_time_ns,
                    started_ns: self.shared.clock().monotonic_ns(),
                    ..StreamCtx::default()
                },
            );
            rec.created = true;
            let report = vm.call::<(i32, i32), ()>(
                "proxy_on_context_create",
                ctx,
                (ctx as i32, ROOT_CTX as i32),
            );
            fuel += report.fuel;
            hostcalls += report.hostcalls;
            logs.extend(report.logs);
            if let Err(trap) = report.result {
                rec.failed_reported = policy != FailPolicy::FailOpen;
                self.logs.extend(logs.iter().cloned());
                return Ok(trap_outcome(trap, policy, logs, fuel, hostcalls));
            }
        }

        // Put the data where the hostcalls find it.
        let count;
        {
            let now_ns = self.shared.clock().monotonic_ns();
            let Some(s) = vm.store.data_mut().streams.get_mut(&ctx) else {
                return Err(HostError::Internal("stream context missing".to_owned()));
            };
            if phase.is_request() {
                s.upstream_first_tx_ns.get_or_insert(now_ns);
            } else {
                s.upstream_last_rx_ns = Some(now_ns);
            }
            if let (Some(slot), Some(map)) = (phase.map_slot(), map.as_deref()) {
                if let Some(m) = s.maps.get_mut(slot) {
                    *m = Some(map.clone());
                }
                count = map.len();
                match phase {
                    Phase::RequestHeaders => s.request_seen = Some(map.clone()),
                    Phase::ResponseHeaders => s.response_seen = Some(map.clone()),
                    Phase::ResponseTrailers => s.response_trailers_seen = Some(map.clone()),
                    _ => {}
                }
            } else if let (Some(slot), Some(chunk)) = (phase.body_slot(), body.as_deref()) {
                if phase == Phase::RequestBody {
                    s.request_body_size += chunk.len() as u64;
                } else {
                    s.response_body_size += chunk.len() as u64;
                }
                let Some(held) = s.bodies.get_mut(slot) else {
                    return Err(HostError::Internal("body slot".to_owned()));
                };
                let mut data = held.take().unwrap_or_default();
                data.extend_from_slice(chunk);
                count = data.len();
                *held = Some(data);
            } else {
                count = 0;
            }
        }
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let eos = i32::from(end_of_stream);
        let report = match phase {
            Phase::RequestTrailers | Phase::ResponseTrailers => {
                vm.call::<(i32, i32), i32>(phase.export(), ctx, (ctx as i32, count))
            }
            _ => vm.call::<(i32, i32, i32), i32>(phase.export(), ctx, (ctx as i32, count, eos)),
        };
        fuel += report.fuel;
        hostcalls += report.hostcalls;
        logs.extend(report.logs.iter().cloned());

        // Take the (possibly mutated) data back.
        let raw_action = match &report.result {
            Ok(v) => v.unwrap_or(0),
            Err(_) => 0,
        };
        let paused = report.result.is_ok()
            && match phase {
                Phase::RequestHeaders | Phase::ResponseHeaders => {
                    raw_action != 0 && raw_action != 2
                }
                _ => raw_action != 0,
            };
        let mut local_reply = None;
        let mut reset = false;
        let mut continue_requested = false;
        for d in &report.deferred {
            match d {
                Deferred::LocalReply { ctx: c, reply } if *c == ctx && local_reply.is_none() => {
                    local_reply = Some(reply.clone());
                }
                Deferred::Close { ctx: c } if *c == ctx => reset = true,
                Deferred::Continue { ctx: c, .. } if *c == ctx => continue_requested = true,
                _ => {}
            }
        }
        let stopped = local_reply.is_some() || reset || report.result.is_err();
        let keep_held = paused && !stopped;
        if let Some(s) = vm.store.data_mut().streams.get_mut(&ctx) {
            if let (Some(slot), Some(map)) = (phase.map_slot(), map) {
                let current = s
                    .maps
                    .get_mut(slot)
                    .and_then(|m| if keep_held { m.clone() } else { m.take() });
                if let Some(current) = current {
                    *map = current;
                }
                match phase {
                    Phase::RequestHeaders => s.request_seen = Some(map.clone()),
                    Phase::ResponseHeaders => s.response_seen = Some(map.clone()),
                    Phase::ResponseTrailers => s.response_trailers_seen = Some(map.clone()),
                    _ => {}
                }
            }
            if let (Some(slot), Some(body)) = (phase.body_slot(), body) {
                let current = s
                    .bodies
                    .get_mut(slot)
                    .and_then(|b| if keep_held { b.clone() } else { b.take() });
                if let Some(current) = current {
                    *body = current;
                }
            }
            if let Some(reply) = &local_reply {
                s.response_code_details.clone_from(&reply.details);
            }
        }
        rec.paused = keep_held.then_some(phase);

        let trap = report.result.as_ref().err().cloned();
        let route_cache_cleared = report.route_cache_cleared;
        let other_deferred: Vec<Deferred> = report
            .deferred
            .iter()
            .filter(|d| !matches!(d, Deferred::LocalReply { ctx: c, .. } | Deferred::Close { ctx: c } | Deferred::Continue { ctx: c, .. } if *c == ctx))
            .cloned()
            .collect();
        let mut vm_taken = std::mem::take(&mut self.workers);
        if let Some(vm) = vm_taken.get_mut(worker) {
            self.absorb_root_report(Some(worker), vm, &report);
            let events = self.apply_deferred(worker, vm, &other_deferred);
            self.events.extend(events);
        }
        self.workers = vm_taken;
        self.logs.extend(logs.iter().cloned());

        if let Some(trap) = trap {
            if let Some(rec) = self.streams.get_mut(&stream.0) {
                rec.failed_reported = policy != FailPolicy::FailOpen;
            }
            let mut out = trap_outcome(trap, policy, logs, fuel, hostcalls);
            out.route_cache_cleared = route_cache_cleared;
            let paused_events = self.fail_paused_streams(worker, Some(stream));
            self.events.extend(paused_events);
            return Ok(out);
        }
        let action = if let Some(reply) = local_reply {
            Action::LocalReply(reply)
        } else if reset {
            Action::Reset
        } else if paused {
            Action::Pause
        } else {
            Action::Continue
        };
        Ok(PhaseOutcome {
            action,
            route_cache_cleared,
            skipped: false,
            continue_requested,
            fuel,
            hostcalls,
            logs,
            trap: None,
        })
    }

    /// Turns deferred actions aimed at other contexts of `worker` into stream events.
    fn apply_deferred(
        &mut self,
        worker: usize,
        vm: &mut Vm,
        deferred: &[Deferred],
    ) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        for d in deferred {
            let ctx = match d {
                Deferred::Continue { ctx, .. }
                | Deferred::Close { ctx }
                | Deferred::LocalReply { ctx, .. } => *ctx,
            };
            let Some((id, rec)) = self
                .streams
                .iter_mut()
                .find(|(_, r)| r.worker == worker && r.ctx == ctx && r.generation == vm.generation)
            else {
                continue;
            };
            let stream = StreamId(*id);
            let held = vm.store.data_mut().streams.get_mut(&ctx);
            match d {
                Deferred::Continue { stream_type, .. } => {
                    let Some(phase) = rec.paused else { continue };
                    if (*stream_type == 0) != phase.is_request() && *stream_type != 2 {
                        continue;
                    }
                    rec.paused = None;
                    let (headers, body) = match held {
                        Some(s) => (
                            phase
                                .map_slot()
                                .and_then(|slot| s.maps.get_mut(slot))
                                .and_then(Option::take),
                            phase
                                .body_slot()
                                .and_then(|slot| s.bodies.get_mut(slot))
                                .and_then(Option::take),
                        ),
                        None => (None, None),
                    };
                    if let (Some(s), Some(h)) =
                        (vm.store.data_mut().streams.get_mut(&ctx), headers.as_ref())
                    {
                        if phase == Phase::RequestHeaders {
                            s.request_seen = Some(h.clone());
                        } else if phase == Phase::ResponseHeaders {
                            s.response_seen = Some(h.clone());
                        }
                    }
                    events.push(StreamEvent::Resumed {
                        stream,
                        request: phase.is_request(),
                        headers,
                        body,
                    });
                }
                Deferred::LocalReply { reply, .. } => {
                    rec.paused = None;
                    if let Some(s) = held {
                        s.maps = Default::default();
                        s.bodies = Default::default();
                        s.response_code_details.clone_from(&reply.details);
                    }
                    events.push(StreamEvent::LocalReply {
                        stream,
                        reply: reply.clone(),
                    });
                }
                Deferred::Close { .. } => {
                    rec.paused = None;
                    events.push(StreamEvent::Reset { stream });
                }
            }
        }
        events
    }

    /// After a VM failure: every other paused stream on that worker gets the policy's action.
    fn fail_paused_streams(&mut self, worker: usize, except: Option<StreamId>) -> Vec<StreamEvent> {
        let policy = self.spec.fail_policy;
        let mut events = Vec::new();
        for (id, rec) in &mut self.streams {
            if rec.worker != worker || rec.paused.is_none() || Some(StreamId(*id)) == except {
                continue;
            }
            rec.paused = None;
            let action = if policy == FailPolicy::FailOpen {
                Action::Continue
            } else {
                rec.failed_reported = true;
                Action::Failed(LocalReply::wasm_fail_stream())
            };
            events.push(StreamEvent::Failed {
                stream: StreamId(*id),
                action,
            });
        }
        events
    }

    /// End of stream: `proxy_on_log` → `proxy_on_done` → `proxy_on_delete` (Envoy's HTTP order).
    /// A context that never saw request headers is created first (Envoy creates it at log
    /// time). Nothing is called on a failed VM.
    ///
    /// # Errors
    /// Unknown stream.
    pub fn finish(&mut self, stream: StreamId) -> Result<FinishOutcome, HostError> {
        let rec = self
            .streams
            .remove(&stream.0)
            .ok_or(HostError::UnknownStream(stream))?;
        let mut out = FinishOutcome::default();
        let Some(vm) = self.workers.get_mut(rec.worker) else {
            return Ok(out);
        };
        if vm.generation != rec.generation || vm.failed.is_some() {
            return Ok(out);
        }
        let ctx = rec.ctx;
        let mut steps: Vec<&str> = Vec::new();
        if !rec.created {
            let request_time_ns = rec.info.request_time_ns.unwrap_or_else(|| {
                i64::try_from(self.shared.clock().wall_ns()).unwrap_or(i64::MAX)
            });
            vm.store.data_mut().streams.insert(
                ctx,
                StreamCtx {
                    info: rec.info.clone(),
                    filter_state: rec.filter_state.clone(),
                    request_time_ns,
                    started_ns: self.shared.clock().monotonic_ns(),
                    ..StreamCtx::default()
                },
            );
            steps.push("proxy_on_context_create");
        }
        let completed_ns = self.shared.clock().monotonic_ns();
        if let Some(s) = vm.store.data_mut().streams.get_mut(&ctx) {
            s.in_log = true;
            s.completed_ns = Some(completed_ns);
            s.maps = [
                s.request_seen.clone(),
                None,
                s.response_seen.clone(),
                s.response_trailers_seen.clone(),
            ];
            s.bodies = Default::default();
        }
        steps.extend(["proxy_on_log", "proxy_on_done", "proxy_on_delete"]);
        let mut reports = Vec::new();
        for step in steps {
            let report = match step {
                "proxy_on_context_create" => vm
                    .call::<(i32, i32), ()>(step, ctx, (ctx as i32, ROOT_CTX as i32))
                    .map_result(|_| ()),
                "proxy_on_done" => vm
                    .call::<i32, i32>(step, ctx, ctx as i32)
                    .map_result(|_| ()),
                _ => vm.call::<i32, ()>(step, ctx, ctx as i32).map_result(|_| ()),
            };
            out.fuel += report.fuel;
            out.hostcalls += report.hostcalls;
            out.logs.extend(report.logs.iter().cloned());
            let failed = report.result.is_err();
            if let Err(trap) = &report.result {
                out.trap = Some(trap.clone());
            }
            reports.push(report);
            if failed {
                break;
            }
        }
        vm.store.data_mut().streams.remove(&ctx);
        let worker = rec.worker;
        let mut taken = std::mem::take(&mut self.workers);
        if let Some(vm) = taken.get_mut(worker) {
            for report in &reports {
                self.absorb_root_report(Some(worker), vm, report);
            }
        }
        self.workers = taken;
        if out.trap.is_some() {
            let events = self.fail_paused_streams(worker, None);
            self.events.extend(events);
        }
        self.logs.extend(out.logs.iter().cloned());
        Ok(out)
    }

    // === asynchronous deliveries ===

    fn root_callback<P: wasmtime::WasmParams>(
        &mut self,
        worker: usize,
        name: &str,
        params: P,
    ) -> CalloutOutcome {
        let mut taken = std::mem::take(&mut self.workers);
        let mut out = CalloutOutcome::default();
        if let Some(vm) = taken.get_mut(worker)
            && vm.failed.is_none()
        {
            let report = vm.call::<P, ()>(name, ROOT_CTX, params);
            vm.store.data_mut().call_response = None;
            out.fuel = report.fuel;
            out.hostcalls = report.hostcalls;
            out.logs.clone_from(&report.logs);
            self.absorb_root_report(Some(worker), vm, &report);
            out.events = self.apply_deferred(worker, vm, &report.deferred);
            if let Err(trap) = &report.result {
                out.trap = Some(trap.clone());
            }
        }
        self.workers = taken;
        if out.trap.is_some() {
            let events = self.fail_paused_streams(worker, None);
            out.events.extend(events);
        }
        self.logs.extend(out.logs.iter().cloned());
        out
    }

    /// Answers a pending `http_call`: `Some(response)` or `None` for a failure (reset/timeout),
    /// delivered as Envoy does (0 headers, `proxy_get_status` = (11, "reset")). The module's
    /// `proxy_on_http_call_response` runs on the root context; the SDK switches to the calling
    /// context with `proxy_set_effective_context`. Resumed/replied streams are in the events.
    ///
    /// # Errors
    /// Unknown call.
    pub fn deliver_http_response(
        &mut self,
        call: CallId,
        response: Option<HttpCallResponse>,
    ) -> Result<CalloutOutcome, HostError> {
        let pending = self
            .pending
            .remove(&call)
            .ok_or(HostError::UnknownCall(call))?;
        let Some(vm) = self.workers.get_mut(call.worker) else {
            return Err(HostError::UnknownWorker(call.worker));
        };
        if vm.generation != pending.generation || vm.failed.is_some() {
            return Ok(CalloutOutcome::default());
        }
        let (nh, nb, nt) = match &response {
            Some(r) => (r.headers.len(), r.body.len(), r.trailers.len()),
            None => (0, 0, 0),
        };
        let state = vm.store.data_mut();
        state.status = if response.is_some() {
            (0, Vec::new())
        } else {
            (11, b"reset".to_vec())
        };
        // On a failure Envoy has no response object (`http_call_response_` stays null): the call's
        // maps and body are unavailable (one header value: BadArgument; body: NotFound).
        state.call_response = response;
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let out = self.root_callback(
            call.worker,
            "proxy_on_http_call_response",
            (
                ROOT_CTX as i32,
                call.token as i32,
                as_i32(nh),
                as_i32(nb),
                as_i32(nt),
            ),
        );
        Ok(out)
    }

    /// Unary `grpc_call`s not answered (nor cancelled by the module) yet, worker by worker in
    /// token order.
    pub fn pending_grpc_calls(&self) -> Vec<crate::grpc::PendingGrpcCall> {
        let mut out = Vec::new();
        for (worker, vm) in self.workers.iter().enumerate() {
            if vm.failed.is_some() {
                continue;
            }
            for (token, call) in &vm.store.data().grpc_calls {
                let stream = self
                    .streams
                    .iter()
                    .find(|(_, r)| {
                        r.worker == worker && r.ctx == call.ctx && r.generation == vm.generation
                    })
                    .map(|(id, _)| StreamId(*id));
                out.push(crate::grpc::PendingGrpcCall {
                    id: CallId {
                        worker,
                        token: *token,
                    },
                    cluster: call.cluster.clone(),
                    authority: call.authority.clone(),
                    service: call.service.clone(),
                    method: call.method.clone(),
                    metadata: call.metadata.clone(),
                    message: call.message.clone(),
                    timeout_ms: call.timeout_ms,
                    stream,
                });
            }
        }
        out
    }

    /// Answers a pending unary `grpc_call` as Envoy's async client does: a message runs
    /// `proxy_on_grpc_receive(root, token, size)` with the message readable as buffer 5; a
    /// failure runs `proxy_on_grpc_close(root, token, code)` with `proxy_get_status` giving the
    /// code and message. (Envoy passes no metadata callbacks for unary calls.)
    ///
    /// # Errors
    /// Unknown worker, or a call that is not pending (answered, cancelled, or its VM reloaded).
    pub fn deliver_grpc_reply(
        &mut self,
        call: CallId,
        reply: crate::grpc::GrpcReply,
    ) -> Result<CalloutOutcome, HostError> {
        let vm = self
            .workers
            .get_mut(call.worker)
            .ok_or(HostError::UnknownWorker(call.worker))?;
        if vm.failed.is_some() {
            return Ok(CalloutOutcome::default());
        }
        let state = vm.store.data_mut();
        if state.grpc_calls.remove(&call.token).is_none() {
            return Err(HostError::UnknownCall(call));
        }
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let out = match reply {
            crate::grpc::GrpcReply::Message(message) => {
                let size = as_i32(message.len());
                state.status = (0, Vec::new());
                state.grpc_message = Some(message);
                self.root_callback(
                    call.worker,
                    "proxy_on_grpc_receive",
                    (ROOT_CTX as i32, call.token as i32, size),
                )
            }
            crate::grpc::GrpcReply::Status { code, message } => {
                state.status = (code, message.into_bytes());
                self.root_callback(
                    call.worker,
                    "proxy_on_grpc_close",
                    (ROOT_CTX as i32, call.token as i32, code as i32),
                )
            }
        };
        if let Some(vm) = self.workers.get_mut(call.worker) {
            let state = vm.store.data_mut();
            state.grpc_message = None;
            state.status = (0, Vec::new());
        }
        Ok(out)
    }

    /// Sends every pending gRPC call over HTTP/2 to its cluster's address
    /// ([`SharedState::set_cluster_address`]) at once, waits for all answers (each bounded by
    /// its own timeout → DEADLINE_EXCEEDED) and delivers them in token order. Calls made while
    /// delivering are left pending (call again to send them). A call the module cancelled
    /// meanwhile is dropped, as Envoy drops a cancelled call's answer.
    pub fn run_grpc_calls(&mut self, client: &crate::grpc::BlockingGrpcClient) -> CalloutOutcome {
        let calls = self.pending_grpc_calls();
        let requests = calls
            .iter()
            .map(|call| (self.shared.cluster_address(&call.cluster), call.clone()))
            .collect();
        let replies = client.call_all(requests);
        let mut out = CalloutOutcome::default();
        for (call, reply) in calls.iter().zip(replies) {
            if let Ok(o) = self.deliver_grpc_reply(call.id, reply) {
                merge(&mut out, o);
            }
        }
        out
    }

    /// Calls `proxy_on_tick` on `worker`'s root now.
    ///
    /// # Errors
    /// Unknown worker.
    pub fn tick(&mut self, worker: usize) -> Result<CalloutOutcome, HostError> {
        let vm = self
            .workers
            .get_mut(worker)
            .ok_or(HostError::UnknownWorker(worker))?;
        if vm.tick_period_ns > 0 {
            vm.tick_due_ns = Some(
                self.shared
                    .clock()
                    .monotonic_ns()
                    .saturating_add(vm.tick_period_ns),
            );
        }
        Ok(self.root_callback(worker, "proxy_on_tick", ROOT_CTX as i32))
    }

    /// Fires every tick that is due on the shared clock (once per worker, then re-armed one
    /// period later, like Envoy's timer).
    pub fn run_due_ticks(&mut self) -> CalloutOutcome {
        let now = self.shared.clock().monotonic_ns();
        let due: Vec<usize> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, vm)| vm.failed.is_none() && vm.tick_due_ns.is_some_and(|d| d <= now))
            .map(|(i, _)| i)
            .collect();
        let mut out = CalloutOutcome::default();
        for worker in due {
            if let Ok(o) = self.tick(worker) {
                merge(&mut out, o);
            }
        }
        out
    }

    /// Delivers posted `proxy_on_queue_ready` notifications addressed to this plugin's VMs.
    pub fn deliver_queue_ready(&mut self) -> CalloutOutcome {
        let uid = self.info.uid;
        let mine: Vec<(usize, u32)> = {
            let mut t = self.shared.tables();
            let all = std::mem::take(&mut t.queue_notifications);
            let (mine, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|n| n.0 == uid);
            t.queue_notifications = others;
            mine.into_iter()
                .filter_map(|(_, w, _, token)| w.map(|w| (w, token)))
                .collect()
        };
        let mut out = CalloutOutcome::default();
        for (worker, token) in mine {
            let o = self.root_callback(
                worker,
                "proxy_on_queue_ready",
                (ROOT_CTX as i32, token as i32),
            );
            merge(&mut out, o);
        }
        out
    }

    /// Fails every pending `http_call` whose timeout has passed on the shared clock the way
    /// Envoy does: `proxy_on_http_call_response` with the router's local 504 "upstream request
    /// timeout" ([`HttpCallResponse::upstream_timeout`]), oldest deadline first. Calls with
    /// timeout 0 never expire (Envoy: no timeout).
    pub fn expire_calls(&mut self) -> CalloutOutcome {
        let now = self.shared.clock().monotonic_ns();
        let mut due: Vec<(u64, CallId)> = self
            .pending
            .iter()
            .filter_map(|(id, p)| p.deadline_ns.filter(|d| *d <= now).map(|d| (d, *id)))
            .collect();
        due.sort_unstable();
        let mut out = CalloutOutcome::default();
        for (_, id) in due {
            if let Ok(o) =
                self.deliver_http_response(id, Some(HttpCallResponse::upstream_timeout()))
            {
                merge(&mut out, o);
            }
        }
        out
    }

    /// Queue notifications, expired `http_call`s and due ticks: what Envoy's event loops would
    /// run between requests.
    pub fn run_async(&mut self) -> CalloutOutcome {
        let mut out = self.deliver_queue_ready();
        merge(&mut out, self.expire_calls());
        merge(&mut out, self.run_due_ticks());
        out
    }

    /// Shuts the root contexts down (`proxy_on_done`, then `proxy_on_delete` when it returns
    /// true; no `proxy_on_log` for roots).
    pub fn shutdown(&mut self) -> FinishOutcome {
        let mut out = FinishOutcome::default();
        for vm in &mut self.workers {
            if vm.failed.is_some() {
                continue;
            }
            vm.store.data_mut().root_done_pending = true;
            let report = vm.call::<i32, i32>("proxy_on_done", ROOT_CTX, ROOT_CTX as i32);
            out.fuel += report.fuel;
            out.logs.extend(report.logs);
            let done =
                matches!(report.result, Ok(Some(v)) if v != 0) || matches!(report.result, Ok(None));
            if done || vm.store.data().done_called {
                let report = vm.call::<i32, ()>("proxy_on_delete", ROOT_CTX, ROOT_CTX as i32);
                out.fuel += report.fuel;
                out.logs.extend(report.logs);
            }
        }
        self.logs.extend(out.logs.iter().cloned());
        out
    }
}

fn merge(into: &mut CalloutOutcome, from: CalloutOutcome) {
    into.events.extend(from.events);
    into.fuel += from.fuel;
    into.hostcalls += from.hostcalls;
    into.logs.extend(from.logs);
    if into.trap.is_none() {
        into.trap = from.trap;
    }
}
