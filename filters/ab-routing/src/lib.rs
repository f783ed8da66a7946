//! meshward ab-routing filter: deterministic, sticky, unforgeable A/B variant assignment that
//! Envoy routes on.
//!
//! See `README.md` for the behaviour, every config field, the hash specification with test
//! vectors and the cookie format. In short, for each request and each configured experiment:
//! decide whether the request takes part (on/off, time window, route match, client CIDRs, a
//! property), then pick a variant (QA override, content rules, a signed sticky cookie, or a
//! SHA-256 hash of a configured key with the experiment's salt), write it to the experiment's
//! request header (removing any client-sent value), clear the route cache so routes see it, and
//! optionally publish it as a property, echo it on the response and set a sticky cookie.
//!
//! ```json
//! {"experiments": [{"name": "checkout", "header": "x-checkout-variant",
//!   "variants": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
//!   "key": {"header": "x-user-id"}, "sticky": {"maxAge": "720h"}}],
//!  "cookieKeys": {"signing": "a secret of at least thirty-two bytes"}}
//! ```
//!
//! Everything except `plugin` is pure and runs natively in tests.

pub mod assign;
pub mod config;
pub mod cookie;
pub mod filter;
pub mod logic;
pub mod metrics;

#[cfg(target_arch = "wasm32")]
mod plugin;
