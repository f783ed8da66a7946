//! The meshward dev proxy: serves `envoy-local/envoy.yaml` on localhost with the real `.wasm`
//! filters running in `meshward-host`, plus the demo upstreams (echo, JWKS).
//!
//! `envoy_config` reads the Envoy file (rejecting what it does not understand), `routing` selects
//! routes as Envoy does, `proxy` runs the filter chain and forwards, `http` is the HTTP/1.1
//! plumbing, `upstreams` the demo services and `demo` what `make run` starts; `bench` is
//! `make bench` (the `meshward-bench` binary).

pub mod bench;
pub mod demo;
pub mod envoy_config;
pub mod http;
pub mod proxy;
pub mod routing;
pub mod upstreams;
