//! Test-only filter (not shipped, `dist/callout.wasm`): proves the core's async shape end to
//! end — a stream paused on a callout made by the **root** context is resumed (or replied to)
//! from the root's callback, on every worker VM.
//!
//! Per worker VM, the root context owns a token fetched from a cluster (default
//! `token-service`, `GET /token`) and caches it. A request that finds the token continues at
//! once with `x-callout-token: <token>`. A request that finds none pauses, registers in the
//! VM's bounded [`meshward_core::waiters::Waiters`] with a deadline and asks for the fetch; the
//! root dispatches it from its next tick (the first waiter shortens the tick period to 1 ms,
//! see [`logic::Arrival::Wait`]). The root's `on_http_call_response` then resumes every waiter
//! with the header (200 and a usable body) or answers each 503 `meshward_callout_failed`; its
//! tick answers waiters past their deadline 504 `meshward_callout_timeout`; beyond
//! `maxWaiters` a request gets 503 `meshward_callout_overloaded` at once; a stream that ends
//! while waiting is forgotten.
//!
//! Layout, as every meshward filter: [`config`] and [`logic`] are pure, [`filter`] runs each
//! callback over `Host` (unit-tested on `MockHost`), `plugin` is the SDK glue (wasm only).

pub mod config;
pub mod filter;
pub mod logic;

#[cfg(target_arch = "wasm32")]
mod plugin;
