//! ABI probe: a test-only module that calls every entry point of `meshward_core::abi` through the
//! real host and logs each result, so `tests/integration` can assert, per call, the value or the
//! typed `HostError` that a status Envoy really returns turns into (never a trap). Not shipped.
//!
//! The scenario of a request is its `x-probe` header; root-context scenarios run in
//! `on_configure` and `on_tick`. Every call is reported as one `proxy_log` line at Info,
//! `probe <call> -> Ok(<value>)` or `probe <call> -> Err(<HostError>)`, where byte strings are
//! quoted with `escape_ascii`. One scenario (`sdk-trap`) makes the same read through the SDK's
//! `proxy_wasm::hostcalls` wrapper, which panics on the status our wrapper returns as an error:
//! the reason the `abi` module exists.

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod probe;
