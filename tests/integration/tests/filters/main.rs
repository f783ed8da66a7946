#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation should abort the test"
)]

//! One integration-test binary (one link of wasmtime): each module drives built `.wasm` filters
//! from `dist/` through `meshward-host`.

mod ab_routing;
mod abi_probe;
mod callout;
mod config_schema;
mod crash_policy;
mod faults;
mod fuzz_smoke;
mod jwt_auth;
mod jwt_remote;
mod manifests;
mod metric_tag;
mod rate_limit;
mod trace_id;
