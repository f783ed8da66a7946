//! One integration-test binary (one link of wasmtime): each module drives built `.wasm` filters
//! from `dist/` through `meshward-host`.

mod manifests;
mod trace_id;
