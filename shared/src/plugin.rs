//! The glue every filter shares: start-up and the proxy-wasm contexts ([`register`], wasm only),
//! reading the plugin configuration, and turning a filter error into the configured failure
//! action. A filter implements [`HttpFilter`] over its own types and its `plugin.rs` is one line:
//!
//! ```ignore
//! proxy_wasm::main! {{ meshward_core::plugin::register::<crate::filter::Filter>("trace-id"); }}
//!
//! impl HttpFilter for Filter {
//!     type Stream = Stream;
//!     fn configure(host: &(impl Host + ?Sized)) -> Option<Self> {
//!         let config = read_plugin_config::<RawConfig, Config>(host)?; // logs path and reason
//!         Some(Filter::new(host, config))
//!     }
//!     fn on_request_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
//!         // … decide, apply; for an error the filter cannot handle itself:
//!         on_error(host, self.config.failure_mode, "meshward_trace_id_error", &err)
//!     }
//! }
//! ```
//!
//! Everything except [`install`], [`register`] and their contexts is host-agnostic and
//! unit-tested against [`crate::host::mock::MockHost`]. Do not call `proxy_wasm::set_log_level`:
//! it installs the SDK's own logger, and `log` accepts only one.

use crate::config::{ConfigError, parse_config};
use crate::effects::Action;
use crate::host::{BufferKind, Host, LocalReply, LogLevel};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// What a filter does when it cannot do its job (host failure, exhausted shared-data retries,
/// unreachable backend…) — separate from Istio's `failStrategy`, which covers VM failure.
/// In JSON: `"deny"` or `"allow"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum FailureMode {
    /// Reject the request with a 503 (the safe default).
    #[default]
    Deny,
    /// Let the request through unchanged.
    Allow,
}

/// The header naming the filter that failed a request (value: the filter name, never the error
/// text, which may hold internals).
pub const ERROR_HEADER: &str = "x-meshward-error";

/// Carries out `mode` for a request the filter cannot handle (host failure, exhausted retries,
/// unreachable backend…) and logs why with the `log` crate: `Allow` logs a warning and
/// continues; `Deny` logs an error and replies 503 with `details` (e.g.
/// `meshward_rate_limit_error`, shown in access logs) and an [`ERROR_HEADER`] naming the filter.
pub fn on_error(
    host: &(impl Host + ?Sized),
    mode: FailureMode,
    details: &'static str,
    error: &dyn std::fmt::Display,
) -> Action {
    match mode {
        FailureMode::Allow => {
            ::log::warn!("failing open: {error}");
            Action::Continue
        }
        FailureMode::Deny => {
            ::log::error!("failing closed with 503: {error}");
            let headers = [(ERROR_HEADER, crate::log::filter_name().as_bytes())];
            let reply = LocalReply {
                status: 503,
                headers: &headers,
                details,
                ..LocalReply::default()
            };
            match host.send_local_response(&reply) {
                Ok(()) => Action::Pause,
                Err(error) => {
                    ::log::error!("cannot send the failure reply: {error}");
                    Action::Continue
                }
            }
        }
    }
}

/// Reads the plugin configuration (only available in `on_configure`) and parses it with
/// [`parse_config`]. On failure logs `"<filter>: invalid plugin config: <path>: <reason>"` at
/// error level through the host and returns `None` (the filter returns `false`).
pub fn read_plugin_config<Raw, Cfg>(host: &(impl Host + ?Sized)) -> Option<Cfg>
where
    Raw: DeserializeOwned,
    Cfg: TryFrom<Raw>,
    Cfg::Error: Into<ConfigError>,
{
    let filter = crate::log::filter_name();
    let bytes = match host.buffer(BufferKind::PluginConfiguration, 0, usize::MAX) {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(error) => {
            host.log(
                LogLevel::Error,
                &format!("{filter}: cannot read plugin config: {error}"),
            );
            return None;
        }
    };
    match parse_config::<Raw, Cfg>(&bytes) {
        Ok(config) => Some(config),
        Err(error) => {
            host.log(
                LogLevel::Error,
                &format!("{filter}: invalid plugin config: {error}"),
            );
            None
        }
    }
}

/// Sets the `log` crate's level from the filter's configured level (if any) and the proxy's
/// current level; call in `on_configure` (the proxy's level is not readable during start-up).
pub fn sync_log_level(host: &(impl Host + ?Sized), configured: Option<LogLevel>) {
    crate::log::set_max_level(configured, host.log_level());
}

/// What a meshward HTTP filter gives the shared proxy-wasm glue ([`register`]): how to configure
/// one per VM, its per-stream state, and a handler per callback it uses. Handlers default to
/// doing nothing; each takes the stream's state and the host, and returns what the callback
/// should return.
pub trait HttpFilter: Sized + 'static {
    /// Per-stream state (decided in the request phase, read in later phases).
    type Stream: Default + 'static;

    /// Reads and validates the plugin configuration (in `on_configure`); `None` (after logging
    /// why) refuses the configuration.
    fn configure(host: &(impl Host + ?Sized)) -> Option<Self>;

    /// `on_http_request_headers`.
    fn on_request_headers(
        &self,
        _stream: &mut Self::Stream,
        _host: &(impl Host + ?Sized),
    ) -> Action {
        Action::Continue
    }

    /// `on_http_response_headers` (also for local replies of later filters).
    fn on_response_headers(
        &self,
        _stream: &mut Self::Stream,
        _host: &(impl Host + ?Sized),
    ) -> Action {
        Action::Continue
    }

    /// `on_log`, once the stream is complete.
    fn on_log(&self, _stream: &mut Self::Stream, _host: &(impl Host + ?Sized)) {}

    /// A stream's context was created with this id (before its first callback): filters whose
    /// streams wait on the root context keep it to register in [`crate::waiters::Waiters`].
    fn on_stream_created(&self, _stream: &mut Self::Stream, _context_id: u32) {}

    /// `on_done`: the stream ended (also when the client went away while it waited).
    fn on_stream_done(&self, _stream: &mut Self::Stream) {}

    /// The root context's `on_tick` (`root_context_id` to switch back to after resuming
    /// streams with [`crate::effects::resume`]).
    fn on_tick(&self, _host: &(impl Host + ?Sized), _root_context_id: u32) {}

    /// The root context's `on_http_call_response` for the callout `token`; `num_headers` 0 is a
    /// failed delivery (reset).
    fn on_http_call_response(
        &self,
        _host: &(impl Host + ?Sized),
        _root_context_id: u32,
        _token: u32,
        _num_headers: usize,
    ) {
    }
}

/// The plugin configuration's bytes (only readable in `on_configure`); empty when absent. Logs
/// `"<filter>: cannot read plugin config: …"` and returns `None` when the host fails.
pub fn plugin_configuration(host: &(impl Host + ?Sized)) -> Option<Vec<u8>> {
    match host.buffer(BufferKind::PluginConfiguration, 0, usize::MAX) {
        Ok(bytes) => Some(bytes.unwrap_or_default()),
        Err(error) => {
            let filter = crate::log::filter_name();
            host.log(
                LogLevel::Error,
                &format!("{filter}: cannot read plugin config: {error}"),
            );
            None
        }
    }
}

/// Starts a filter VM with `F` as its filter: [`install`] (log prefix, `log` bridge, panic hook)
/// and the SDK root context that configures `F` once per VM and hands every HTTP stream to it.
/// The whole of a filter's `plugin.rs` is `proxy_wasm::main! {{ register::<Filter>("name"); }}`.
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub fn register<F: HttpFilter>(filter_name: &'static str) {
    install(filter_name);
    ::proxy_wasm::set_root_context(|context_id| -> Box<dyn ::proxy_wasm::traits::RootContext> {
        Box::new(glue::Root::<F> {
            context_id,
            filter: None,
        })
    });
}

/// The SDK contexts behind [`register`].
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod glue {
    use std::rc::Rc;

    use ::proxy_wasm::traits::{Context, HttpContext, RootContext};
    use ::proxy_wasm::types::{Action as SdkAction, ContextType};

    use super::{Action, HttpFilter, sync_log_level};
    use crate::host::proxy_wasm::ProxyWasmHost;

    const fn sdk(action: Action) -> SdkAction {
        match action {
            Action::Continue => SdkAction::Continue,
            Action::Pause => SdkAction::Pause,
        }
    }

    pub(super) struct Root<F> {
        pub(super) context_id: u32,
        pub(super) filter: Option<Rc<F>>,
    }

    impl<F: HttpFilter> Context for Root<F> {
        fn on_http_call_response(
            &mut self,
            token_id: u32,
            num_headers: usize,
            _body_size: usize,
            _num_trailers: usize,
        ) {
            if let Some(filter) = &self.filter {
                filter.on_http_call_response(
                    &ProxyWasmHost,
                    self.context_id,
                    token_id,
                    num_headers,
                );
            }
        }
    }

    impl<F: HttpFilter> RootContext for Root<F> {
        fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
            let host = ProxyWasmHost::new();
            sync_log_level(&host, None);
            self.filter = F::configure(&host).map(Rc::new);
            self.filter.is_some()
        }

        fn on_tick(&mut self) {
            if let Some(filter) = &self.filter {
                filter.on_tick(&ProxyWasmHost, self.context_id);
            }
        }

        fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
            // Must be Some: the SDK panics on None. Without a configuration the VM did not start,
            // so `filter` is always set here; a stream without one passes untouched.
            let mut state = F::Stream::default();
            if let Some(filter) = &self.filter {
                filter.on_stream_created(&mut state, context_id);
            }
            Some(Box::new(Stream::<F> {
                filter: self.filter.clone(),
                state,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Stream<F: HttpFilter> {
        filter: Option<Rc<F>>,
        state: F::Stream,
    }

    impl<F: HttpFilter> Context for Stream<F> {
        fn on_done(&mut self) -> bool {
            if let Some(filter) = &self.filter {
                filter.on_stream_done(&mut self.state);
            }
            true
        }
    }

    impl<F: HttpFilter> HttpContext for Stream<F> {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> SdkAction {
            match &self.filter {
                Some(filter) => sdk(filter.on_request_headers(&mut self.state, &ProxyWasmHost)),
                None => SdkAction::Continue,
            }
        }

        fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> SdkAction {
            match &self.filter {
                Some(filter) => sdk(filter.on_response_headers(&mut self.state, &ProxyWasmHost)),
                None => SdkAction::Continue,
            }
        }

        fn on_log(&mut self) {
            if let Some(filter) = &self.filter {
                filter.on_log(&mut self.state, &ProxyWasmHost);
            }
        }
    }
}

/// `"<filter>: panic: <message> at <file>:<line>"`, the line the panic hook logs.
pub fn panic_line(filter: &str, message: &str, location: Option<(&str, u32)>) -> String {
    match location {
        Some((file, line)) => format!("{filter}: panic: {message} at {file}:{line}"),
        None => format!("{filter}: panic: {message}"),
    }
}

/// Start-up for a filter VM: sets the log prefix, installs the `log` bridge to the proxy at the
/// proxy's level, and a panic hook that logs the panic at Critical before the VM dies (a panic
/// aborts on wasm; the hook is the only trace it leaves). Call first in `proxy_wasm::main!`.
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub fn install(filter_name: &'static str) {
    use crate::host::proxy_wasm::ProxyWasmHost;

    fn sink(level: LogLevel, line: &str) {
        ProxyWasmHost::new().log(level, line);
    }
    static LOGGER: crate::log::HostLogger = crate::log::HostLogger::new(sink);

    crate::log::set_filter_name(filter_name);
    // A second install (or the SDK's logger) keeps the first logger: nothing to do about it.
    let _ = ::log::set_logger(&LOGGER);
    // `proxy_get_log_level` may not be callable during `_initialize`; start at Info and let
    // `on_configure` call `sync_log_level` with the proxy's level.
    crate::log::set_max_level(None, LogLevel::Info);
    install_panic_hook(filter_name);
}

/// Installs only the panic hook (see [`install`]).
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub fn install_panic_hook(filter_name: &'static str) {
    use crate::host::proxy_wasm::ProxyWasmHost;

    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string payload)".to_owned());
        let location = info.location().map(|l| (l.file(), l.line()));
        let line = panic_line(filter_name, &message, location);
        ProxyWasmHost::new().log(LogLevel::Critical, &line);
    }));
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::InvalidConfig;
    use crate::host::HostError;
    use crate::host::mock::{Hostcall, MockHost};

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct RawConfig {
        failure_mode: Option<FailureMode>,
        max_length: Option<u32>,
    }

    #[derive(Debug, PartialEq)]
    struct Config {
        failure_mode: FailureMode,
        max_length: u32,
    }

    impl TryFrom<RawConfig> for Config {
        type Error = InvalidConfig;
        fn try_from(raw: RawConfig) -> Result<Self, InvalidConfig> {
            let max_length = raw.max_length.unwrap_or(64);
            if max_length == 0 {
                return Err(InvalidConfig::at("maxLength", "must be positive"));
            }
            Ok(Config {
                failure_mode: raw.failure_mode.unwrap_or_default(),
                max_length,
            })
        }
    }

    #[test]
    fn reads_a_valid_plugin_config() {
        let host =
            MockHost::new().with_plugin_config(r#"{"failureMode": "allow", "maxLength": 9}"#);
        let config = read_plugin_config::<RawConfig, Config>(&host).unwrap();
        assert_eq!(
            config,
            Config {
                failure_mode: FailureMode::Allow,
                max_length: 9
            }
        );
        assert!(host.logs().is_empty());
    }

    #[test]
    fn an_absent_plugin_config_means_defaults() {
        let host = MockHost::new();
        let config = read_plugin_config::<RawConfig, Config>(&host).unwrap();
        assert_eq!(config.failure_mode, FailureMode::Deny);
    }

    #[test]
    fn an_invalid_plugin_config_is_logged_with_path_and_reason() {
        crate::log::set_filter_name("trace_id");
        let cases = [
            (
                r#"{"maxLength": 0}"#,
                "trace_id: invalid plugin config: maxLength: must be positive",
            ),
            (
                r#"{"failureMode": "maybe"}"#,
                "trace_id: invalid plugin config: failureMode: unknown variant `maybe`, expected `deny` or `allow`",
            ),
            (
                r#"{"maxLenght": 3}"#,
                "trace_id: invalid plugin config: maxLenght: unknown field `maxLenght`",
            ),
        ];
        for (json, line) in cases {
            let host = MockHost::new().with_plugin_config(json);
            assert_eq!(read_plugin_config::<RawConfig, Config>(&host), None);
            let logs = host.logs_at_least(LogLevel::Error);
            assert_eq!(logs.len(), 1, "{json}");
            assert!(logs[0].starts_with(line), "{json}: {}", logs[0]);
        }
    }

    #[test]
    fn an_unreadable_plugin_config_is_logged() {
        let host = MockHost::new().failing_next(Hostcall::Buffer, HostError::InternalFailure, 1);
        assert_eq!(read_plugin_config::<RawConfig, Config>(&host), None);
        assert!(
            host.logs_at_least(LogLevel::Error)[0]
                .contains("cannot read plugin config: internal failure")
        );
    }

    #[test]
    fn deny_replies_503_naming_the_filter_with_details() {
        crate::log::set_filter_name("rate_limit");
        let host = MockHost::new();
        let action = on_error(
            &host,
            FailureMode::Deny,
            "meshward_rate_limit_error",
            &HostError::CasMismatch,
        );
        assert_eq!(action, Action::Pause);
        let reply = host.local_response().unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.details, "meshward_rate_limit_error");
        assert_eq!(
            reply.headers,
            [(ERROR_HEADER.to_owned(), b"rate_limit".to_vec())]
        );
    }

    #[test]
    fn allow_continues() {
        let host = MockHost::new();
        assert_eq!(
            on_error(&host, FailureMode::Allow, "x", &"backend down"),
            Action::Continue
        );
        assert!(host.local_response().is_none());
        assert_eq!(FailureMode::default(), FailureMode::Deny);
    }

    #[test]
    fn panic_lines_name_filter_message_and_location() {
        assert_eq!(
            panic_line("jwt_auth", "index out of bounds", Some(("src/jwks.rs", 42))),
            "jwt_auth: panic: index out of bounds at src/jwks.rs:42"
        );
        assert_eq!(panic_line("x", "boom", None), "x: panic: boom");
    }
}
