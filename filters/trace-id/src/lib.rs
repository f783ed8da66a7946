//! meshward trace-id filter: a request id on every request and a spec-exact W3C trace context.
//!
//! See `README.md` for the full behaviour and config reference. In short, for each request:
//! - `x-request-id` (configurable, with aliases) is kept when valid and allowed by the policy,
//!   otherwise replaced by a fresh UUIDv4 (optionally copying the old one elsewhere);
//! - `traceparent` is validated per W3C Trace Context Level 2; a valid one is kept (`hop`: with a
//!   new parent id; `passthrough`: unchanged), anything else starts a new trace with random ids;
//!   `restart` mode always starts a new trace; `tracestate` is combined, validated, truncated or
//!   dropped; B3 headers can be read and written;
//! - the ids are exposed as filter state (`meshward_request_id`, `meshward_trace_id`) and echoed
//!   on the response (including local replies from later filters).
//!
//! ```json
//! {"requestId": {"policy": "keepIfValid", "aliases": ["x-correlation-id"]},
//!  "traceContext": {"mode": "hop", "sampling": {"type": "fixed", "sampled": false}},
//!  "response": {"echoRequestId": true}}
//! ```
//!
//! Everything except `plugin` is pure and runs natively in tests.

pub mod b3;
pub mod config;
pub mod filter;
pub mod logic;
pub mod metrics;
pub mod outcome;
pub mod request_id;
pub mod traceparent;
pub mod tracestate;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_cases;

#[cfg(target_arch = "wasm32")]
mod plugin;
