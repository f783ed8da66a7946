//! `meshward-host`: a proxy-wasm host on wasmtime that runs real `wasm32-wasip1` filters the
//! way Envoy does, for tests, benchmarks and the dev proxy.
//!
//! * [`HostEngine`] compiles each module once per process ([`HostEngine::global`]).
//! * [`SharedState`] is one simulated Envoy process: shared data (per vm_id, Envoy CAS rules),
//!   shared queues, stats (with a Prometheus export exactly like `/stats/prometheus`), the
//!   controllable [`FakeClock`] and the [`RandomSource`] behind WASI `random_get`.
//! * [`Plugin::load`] starts a canary plus `workers` VMs in Envoy's order and reports a
//!   rejected configuration as [`LoadError::Rejected`] (Envoy's NACK).
//! * Per-request stepping: [`Plugin::new_stream_with`], [`Plugin::request_headers`], …,
//!   [`Plugin::finish`]; callouts with [`Plugin::pending_http_calls`] /
//!   [`Plugin::deliver_http_response`]; unary gRPC callouts with [`Plugin::pending_grpc_calls`] /
//!   [`Plugin::deliver_grpc_reply`], or over real HTTP/2 with [`Plugin::run_grpc_calls`].
//! * Whole requests: [`Plugin::http_request`] (one plugin) and [`Chain::run`] (filter chain),
//!   both returning an [`HttpOutcome`] that describes state, not call sequences.
//!
//! Envoy behaviours reproduced and known gaps are listed in the crate README.
//!
//! ```no_run
//! use meshward_host::{HostEngine, Plugin, PluginSpec, Request, Response, SharedState};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = HostEngine::global()?;
//! let module = engine.load_file("dist/noop.wasm")?;
//! let shared = SharedState::new();
//! let mut plugin = Plugin::load(engine, &module, PluginSpec::new("noop", "noop").with_workers(4), &shared)?;
//! let outcome = plugin.http_request(0, Request::get("/", "example.com"), Response::new(200))?;
//! assert_eq!(outcome.response.status(), Some(200));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod abi;
mod chain;
pub mod cli;
mod clock;
mod engine;
pub mod grpc;
mod plugin;
mod properties;
mod shared;
mod types;
mod vm;
pub mod wire;

pub use abi::{ENV_IMPORTS, WASI_IMPORTS};
pub use chain::{
    CallReply, Chain, GrpcHandler, HttpOutcome, PhaseRecord, Request, Response, UpstreamRequest,
};
pub use clock::{DEFAULT_MONOTONIC_START_NS, DEFAULT_WALL_START_NS, FakeClock, RandomSource};
pub use engine::{HostEngine, Module};
pub use plugin::{Phase, Plugin};
pub use properties::{FILTER_STATE_PREFIX, SUPPORTED_PATHS};
pub use shared::{
    DEFAULT_HISTOGRAM_BUCKETS, MetricType, MetricValue, SharedState, StatsTag, WASM_STAT_PREFIX,
};
pub use types::{
    Action, CallId, CalloutOutcome, DEFAULT_FUEL_PER_CALLBACK, ExportCost, ExportCosts, FailPolicy,
    FilterState, FinishOutcome, HeaderMap, HostError, HttpCallResponse, LoadError, LocalReply,
    LogEntry, LogLevel, NodeInfo, PendingHttpCall, PhaseOutcome, PluginSpec, PropValue,
    StreamEvent, StreamId, StreamInfo, UPSTREAM_TIMEOUT_BODY,
};
pub use vm::FuelMark;
