//! One worker VM: a wasmtime `Store<HostState>` + instance, the per-VM host state the
//! hostcalls act on, and the machinery to call a guest export with fuel accounting.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::{
    Instance, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults,
};

use crate::engine::Module;
use crate::shared::SharedState;
use crate::types::{
    ExportCosts, FilterState, HeaderMap, HttpCallResponse, LoadError, LocalReply, LogEntry,
    LogLevel, StreamInfo,
};

/// Envoy/cpp-host cap on VM linear memory.
pub(crate) const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Which hostcalls are callable right now (V8 traps on the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restriction {
    /// Normal callbacks.
    None,
    /// `_initialize` / `main` / `_start`.
    Start,
    /// Inside the module's allocator.
    Allocator,
}

/// Immutable facts about the plugin, shared by its VMs.
#[derive(Debug)]
pub(crate) struct PluginInfo {
    pub(crate) uid: u64,
    pub(crate) name: String,
    pub(crate) root_id: String,
    pub(crate) vm_id: String,
    pub(crate) configuration: Vec<u8>,
    pub(crate) vm_configuration: Vec<u8>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log_level: LogLevel,
    pub(crate) legacy_route_cache: bool,
}

/// Map slots of a stream context (ABI map types 0..=3).
pub(crate) const REQUEST_HEADERS: usize = 0;
pub(crate) const REQUEST_TRAILERS: usize = 1;
pub(crate) const RESPONSE_HEADERS: usize = 2;
pub(crate) const RESPONSE_TRAILERS: usize = 3;

/// Host-side state of one HTTP stream context inside a VM.
#[derive(Debug, Default)]
pub(crate) struct StreamCtx {
    /// Maps readable/writable right now (current callback or held while paused).
    pub(crate) maps: [Option<HeaderMap>; 4],
    /// Request (0) / response (1) body readable right now.
    pub(crate) bodies: [Option<Vec<u8>>; 2],
    pub(crate) info: StreamInfo,
    pub(crate) filter_state: FilterState,
    /// Last request headers seen (for `request.*` properties and `proxy_on_log`).
    pub(crate) request_seen: Option<HeaderMap>,
    pub(crate) response_seen: Option<HeaderMap>,
    pub(crate) response_trailers_seen: Option<HeaderMap>,
    pub(crate) request_time_ns: i64,
    pub(crate) response_code_details: String,
    pub(crate) request_body_size: u64,
    pub(crate) response_body_size: u64,
    /// Monotonic ns when the stream started (`request.duration` counts from here).
    pub(crate) started_ns: u64,
    /// Monotonic ns when the stream completed (set before `proxy_on_log`; Envoy's
    /// `requestComplete()`, without which `request.duration` is absent).
    pub(crate) completed_ns: Option<u64>,
    /// Monotonic ns of the first request phase delivered (the upstream request's first byte).
    pub(crate) upstream_first_tx_ns: Option<u64>,
    /// Monotonic ns of the last response phase delivered (the upstream response's last byte).
    pub(crate) upstream_last_rx_ns: Option<u64>,
    /// In `proxy_on_log`: unavailable maps give NotFound instead of BadArgument.
    pub(crate) in_log: bool,
}

/// An action a hostcall queued to run after the current VM call (Envoy's "after VM call").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Deferred {
    Continue { ctx: u32, stream_type: i32 },
    Close { ctx: u32 },
    LocalReply { ctx: u32, reply: LocalReply },
}

/// An `http_call` made during the current VM call.
#[derive(Clone, Debug)]
pub(crate) struct NewCall {
    pub(crate) token: u32,
    pub(crate) ctx: u32,
    pub(crate) cluster: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: HeaderMap,
    pub(crate) timeout_ms: u32,
}

/// A `grpc_call` not answered yet (live until delivered or cancelled; a reloaded VM starts with
/// none, as Envoy cancels the calls of a destroyed VM).
#[derive(Clone, Debug)]
pub(crate) struct NewGrpcCall {
    pub(crate) ctx: u32,
    pub(crate) cluster: String,
    pub(crate) authority: String,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) metadata: HeaderMap,
    pub(crate) message: Vec<u8>,
    pub(crate) timeout_ms: u32,
}

/// State reachable from hostcalls through `Caller<'_, HostState>`.
pub(crate) struct HostState {
    pub(crate) shared: SharedState,
    pub(crate) plugin: Arc<PluginInfo>,
    pub(crate) worker: Option<usize>,
    pub(crate) limits: StoreLimits,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    pub(crate) restriction: Restriction,
    pub(crate) current_ctx: u32,
    pub(crate) effective_ctx: Option<u32>,
    pub(crate) root_ctx: u32,
    pub(crate) streams: BTreeMap<u32, StreamCtx>,
    pub(crate) plugin_config_readable: bool,
    pub(crate) call_response: Option<HttpCallResponse>,
    pub(crate) foreign_args: Option<Vec<u8>>,
    pub(crate) status: (u32, Vec<u8>),
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) hostcalls: u64,
    /// metric id → full stat name; the type is `id & 3`.
    pub(crate) metric_ids: BTreeMap<u32, String>,
    pub(crate) next_metric_id: [u32; 3],
    pub(crate) next_call_n: u32,
    pub(crate) new_calls: Vec<NewCall>,
    pub(crate) next_grpc_call_n: u32,
    /// Live unary gRPC calls by token (`n*4 + 1`).
    pub(crate) grpc_calls: BTreeMap<u32, NewGrpcCall>,
    /// The message being delivered by `proxy_on_grpc_receive` (buffer type 5).
    pub(crate) grpc_message: Option<Vec<u8>>,
    pub(crate) tick_period_ms: Option<u32>,
    pub(crate) deferred: Vec<Deferred>,
    pub(crate) route_cache_cleared: bool,
    pub(crate) root_done_pending: bool,
    pub(crate) done_called: bool,
    /// When set, every hostcall appends (its name, fuel used so far in this export call).
    pub(crate) fuel_trace: Option<Vec<FuelMark>>,
    /// Fuel given to each export call (to turn "fuel left" into "fuel used").
    pub(crate) fuel_budget: u64,
}

/// One point of a fuel trace ([`crate::Plugin::trace_fuel`]): which export or hostcall, and the
/// fuel the current export call had used when it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuelMark {
    /// `export:<name>` when an export call starts, `return` when it ends, else the hostcall.
    pub what: String,
    /// Fuel used since the export call started.
    pub fuel: u64,
}

impl HostState {
    pub(crate) fn new(shared: SharedState, plugin: Arc<PluginInfo>, worker: Option<usize>) -> Self {
        Self {
            shared,
            plugin,
            worker,
            limits: StoreLimitsBuilder::new()
                .memory_size(MAX_MEMORY_BYTES)
                .build(),
            memory: None,
            allocator: None,
            restriction: Restriction::None,
            current_ctx: 0,
            effective_ctx: None,
            root_ctx: 1,
            streams: BTreeMap::new(),
            plugin_config_readable: false,
            call_response: None,
            foreign_args: None,
            status: (0, Vec::new()),
            logs: Vec::new(),
            hostcalls: 0,
            metric_ids: BTreeMap::new(),
            next_metric_id: [0, 1, 2],
            next_call_n: 0,
            new_calls: Vec::new(),
            next_grpc_call_n: 0,
            grpc_calls: BTreeMap::new(),
            grpc_message: None,
            tick_period_ms: None,
            deferred: Vec::new(),
            route_cache_cleared: false,
            root_done_pending: false,
            done_called: false,
            fuel_trace: None,
            fuel_budget: 0,
        }
    }

    /// The context hostcalls act on: the effective one if set, else the one being called.
    pub(crate) fn acting_ctx(&self) -> u32 {
        self.effective_ctx.unwrap_or(self.current_ctx)
    }

    pub(crate) fn acting_stream(&self) -> Option<&StreamCtx> {
        self.streams.get(&self.acting_ctx())
    }

    pub(crate) fn acting_stream_mut(&mut self) -> Option<&mut StreamCtx> {
        let ctx = self.acting_ctx();
        self.streams.get_mut(&ctx)
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        self.logs.push(LogEntry {
            level,
            message,
            plugin: self.plugin.name.clone(),
            worker: self.worker,
        });
    }
}

/// What happened during one call into the guest.
#[derive(Debug)]
pub(crate) struct CallReport<R> {
    /// `Ok(None)` when the export does not exist (the host then behaves as if it returned
    /// the default); `Err` with the trap message when the VM failed.
    pub(crate) result: Result<Option<R>, String>,
    pub(crate) fuel: u64,
    pub(crate) hostcalls: u64,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) deferred: Vec<Deferred>,
    pub(crate) route_cache_cleared: bool,
    pub(crate) new_calls: Vec<NewCall>,
}

/// One VM instance (a worker's, or the canary).
pub(crate) struct Vm {
    pub(crate) store: Store<HostState>,
    instance: Instance,
    /// Trap message once the VM failed.
    pub(crate) failed: Option<String>,
    /// Bumped on every reload so streams of a replaced VM can be recognised.
    pub(crate) generation: u64,
    /// Next context id to hand out (1 is the root).
    pub(crate) next_ctx: u32,
    /// Monotonic ns at which the next tick is due.
    pub(crate) tick_due_ns: Option<u64>,
    /// Tick period in ns (0 = disabled).
    pub(crate) tick_period_ns: u64,
    /// Fuel and hostcalls of every export this VM ran (start-up included).
    pub(crate) export_costs: ExportCosts,
    fuel_per_callback: u64,
}

impl Vm {
    /// Test-only fault injection: the fuel each later callback of this VM may use.
    pub(crate) fn set_fuel_per_callback(&mut self, fuel: u64) {
        self.fuel_per_callback = fuel;
    }

    /// Instantiates the module and runs `_initialize` (+ `main`) or `_start` with restricted hostcalls.
    pub(crate) fn instantiate(
        engine: &wasmtime::Engine,
        linker: &wasmtime::Linker<HostState>,
        module: &Module,
        state: HostState,
        fuel_per_callback: u64,
        generation: u64,
    ) -> Result<Self, LoadError> {
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        let _ = store.set_fuel(fuel_per_callback);
        let instance = linker
            .instantiate(&mut store, &module.inner)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| {
            LoadError::MissingExport("memory (the module must export its linear memory)".to_owned())
        })?;
        // cpp-host looks for `malloc` first, then `proxy_on_memory_allocate`.
        let allocator = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .or_else(|_| {
                instance.get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            })
            .map_err(|_| {
                LoadError::MissingExport(
                    "malloc / proxy_on_memory_allocate (missing allocator)".to_owned(),
                )
            })?;
        store.data_mut().memory = Some(memory);
        store.data_mut().allocator = Some(allocator);
        let mut vm = Self {
            store,
            instance,
            failed: None,
            generation,
            next_ctx: 2,
            tick_due_ns: None,
            tick_period_ns: 0,
            export_costs: ExportCosts::default(),
            fuel_per_callback,
        };
        vm.store.data_mut().restriction = Restriction::Start;
        let has_initialize = vm.instance.get_func(&mut vm.store, "_initialize").is_some();
        let starts: Vec<&str> = if has_initialize {
            let main = if vm.instance.get_func(&mut vm.store, "main").is_some() {
                Some("main")
            } else if vm.instance.get_func(&mut vm.store, "__main_void").is_some() {
                Some("__main_void")
            } else {
                None
            };
            std::iter::once("_initialize").chain(main).collect()
        } else {
            vec!["_start"]
        };
        for start in starts {
            let report = if start == "main" {
                vm.call::<(i32, i32), i32>(start, 0, (0, 0))
                    .map_result(|_| ())
            } else {
                vm.call::<(), ()>(start, 0, ())
            };
            if let Err(reason) = report.result {
                return Err(LoadError::StartFailed {
                    phase: start.to_owned(),
                    reason,
                    logs: report.logs,
                });
            }
            vm.store.data_mut().logs.extend(report.logs);
        }
        vm.store.data_mut().restriction = Restriction::None;
        Ok(vm)
    }

    /// Current linear memory size in bytes.
    pub(crate) fn memory_bytes(&mut self) -> usize {
        let memory = self.store.data().memory;
        memory.map_or(0, |m| m.data_size(&self.store))
    }

    /// Calls export `name` on behalf of context `ctx`. A trap marks the VM failed. Every call
    /// that reaches the guest is tallied in `export_costs`.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        ctx: u32,
        params: P,
    ) -> CallReport<R> {
        if let Some(reason) = &self.failed {
            return CallReport {
                result: Err(reason.clone()),
                fuel: 0,
                hostcalls: 0,
                logs: Vec::new(),
                deferred: Vec::new(),
                route_cache_cleared: false,
                new_calls: Vec::new(),
            };
        }
        {
            let state = self.store.data_mut();
            state.current_ctx = ctx;
            state.effective_ctx = None;
            state.hostcalls = 0;
            state.route_cache_cleared = false;
            state.fuel_budget = self.fuel_per_callback;
            if let Some(trace) = &mut state.fuel_trace {
                trace.push(FuelMark {
                    what: format!("export:{name}"),
                    fuel: 0,
                });
            }
        }
        let _ = self.store.set_fuel(self.fuel_per_callback);
        let result = match self.instance.get_typed_func::<P, R>(&mut self.store, name) {
            Ok(func) => func
                .call(&mut self.store, params)
                .map(Some)
                .map_err(|e| describe_trap(name, &e)),
            Err(e) => {
                if self.instance.get_export(&mut self.store, name).is_some() {
                    Err(format!(
                        "Function: {name} has an unexpected signature: {e:#}"
                    ))
                } else {
                    Ok(None)
                }
            }
        };
        let fuel = self
            .fuel_per_callback
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        if let Err(reason) = &result {
            self.failed = Some(reason.clone());
        }
        let state = self.store.data_mut();
        state.effective_ctx = None;
        if let Some(trace) = &mut state.fuel_trace {
            trace.push(FuelMark {
                what: "return".to_owned(),
                fuel,
            });
        }
        if !matches!(result, Ok(None)) {
            self.export_costs.record(name, fuel, state.hostcalls);
        }
        CallReport {
            result,
            fuel,
            hostcalls: state.hostcalls,
            logs: std::mem::take(&mut state.logs),
            deferred: std::mem::take(&mut state.deferred),
            route_cache_cleared: std::mem::take(&mut state.route_cache_cleared),
            new_calls: std::mem::take(&mut state.new_calls),
        }
    }
}

impl<R> CallReport<R> {
    pub(crate) fn map_result<S>(self, f: impl FnOnce(Option<R>) -> S) -> CallReport<S> {
        CallReport {
            result: self.result.map(|r| Some(f(r))),
            fuel: self.fuel,
            hostcalls: self.hostcalls,
            logs: self.logs,
            deferred: self.deferred,
            route_cache_cleared: self.route_cache_cleared,
            new_calls: self.new_calls,
        }
    }
}

fn describe_trap(name: &str, error: &wasmtime::Error) -> String {
    let fuel = matches!(
        error.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::OutOfFuel)
    );
    if fuel {
        format!("Function: {name} failed: out of fuel (test-only loop guard, not an Envoy limit)")
    } else {
        format!("Function: {name} failed: {error:#}")
    }
}
