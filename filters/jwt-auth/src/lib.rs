//! meshward jwt-auth filter: verifies JSON Web Tokens as Envoy's `jwt_authn` does (same
//! configuration, both protobuf-JSON spellings), with RFC 8725 hardening.
//!
//! See `README.md` for the configuration reference and every difference from Envoy. In short,
//! for each request: the first `rules` entry whose Envoy `RouteMatch` holds names a requirement
//! (a provider, any/all of several, allow-missing); the token is read from the provider's
//! locations (at most one may hold one), verified ([`verify`]) against the provider's local JWKS
//! (or a PEM public key, [`pem`]) or its remote JWKS, fetched once for all worker VMs and shared through shared data
//! ([`remote`]), cached per VM ([`cache`]); then claims are written to headers (replacing what
//! the client sent: every header the filter may write is stripped from every request), the token
//! header is removed unless `forward`, and issuer/subject are published as properties — or the
//! request gets a 401/403 with an RFC 6750 `WWW-Authenticate`.
//!
//! Everything except `plugin` is pure and runs natively in tests.

pub mod cache;
pub mod config;
pub mod filter;
pub mod jwks;
pub mod pem;
pub mod remote;
pub mod verify;

#[cfg(target_arch = "wasm32")]
mod plugin;
