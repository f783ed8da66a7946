//! trace-id through the real .wasm (filled in by the trace-id work).
