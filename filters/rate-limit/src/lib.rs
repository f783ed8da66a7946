//! meshward rate-limit filter: token buckets with Envoy `local_ratelimit` semantics, exact across
//! every worker VM of one proxy, with a key space fixed by the configuration.
//!
//! See `README.md` for the full behaviour and config reference. In short, for each request:
//! - the first rule whose `match` (Envoy `RouteMatch`) holds picks the bucket (else the default
//!   bucket, else the request passes);
//! - the rule's key (client address, header, query parameter or fixed) selects one entry of a
//!   bounded table stored in shared data: key → `hash % slots` → one shared-data key holding at
//!   most `entriesPerSlot` entries (exact keys, idle eviction then LRU);
//! - the entry's token bucket is refilled lazily from the host clock and charged the request's
//!   cost with a compare-and-swap write (bounded retries);
//! - a limited request gets a 429 (gRPC: `RESOURCE_EXHAUSTED`); shadow rules only count.
//!
//! Everything except `plugin` is pure or written against the core's `Host`, and runs natively.

pub mod bucket;
pub mod config;
pub mod filter;
pub mod key;
pub mod metrics;
pub mod table;

#[cfg(target_arch = "wasm32")]
mod plugin;
