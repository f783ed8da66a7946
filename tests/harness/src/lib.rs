//! proxy-wasm host on wasmtime (in progress).
