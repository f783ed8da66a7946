//! Shared core of the meshward proxy-wasm filters.
//!
//! Every filter is a pure decision over plain data plus a thin proxy-wasm glue layer. This crate
//! holds what the five filters would otherwise write five times: the [`host::Host`] trait (the one
//! narrow door to the proxy), configuration parsing and validation (serde derive + serde_json,
//! strict, errors with JSON paths), request matching, IP/CIDR parsing, the shared-data
//! compare-and-swap loop, metrics, ids and logging.
#![warn(missing_docs)]

pub mod config;
pub mod host;
pub mod ids;
pub mod log;
pub mod matcher;
pub mod metrics;
pub mod net;
pub mod plugin;
pub mod request;
pub mod shared_data;
