//! Shared core of the meshward proxy-wasm filters.
//!
//! Every filter has one shape: pure logic over plain data (configuration, the few request values
//! it reads, time, random bytes) returns an [`effects::Effects`] value; one core function,
//! [`effects::apply`], carries it out through the [`host::Host`] trait, the one narrow door to
//! the proxy; the proxy-wasm glue is thin. In the proxy, `Host` sits on [`abi`], the audited raw
//! imports (the only `unsafe` code), which read one header without copying the map, never panic
//! on a status Envoy returns, and send local replies with their `details`.
//!
//! Also here, each once: metrics defined at configure time and updated by index
//! ([`metrics`]), streams waiting on the root context ([`waiters`]), configuration (serde derive +
//! serde_json, strict, errors with JSON paths) and the failure mode ([`config`], [`plugin`]), ids and hex ([`ids`]), IP/CIDR parsing ([`net`]),
//! logging ([`log`]) and the serialized header map ([`header_map`]).
#![warn(missing_docs)]

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub mod abi;
pub mod config;
pub mod effects;
pub mod header_map;
pub mod host;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod net;
pub mod plugin;
pub mod route_match;
pub mod waiters;
