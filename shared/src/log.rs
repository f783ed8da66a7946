//! Logging: the `log` crate bridged to the proxy, every line prefixed with the filter name and
//! `#<context_id>`, and helpers that keep secrets out of logs.
//!
//! A filter logs with the ordinary `log` macros (`log::warn!("jwks fetch failed: {err}")`); the
//! proxy receives `trace_id #12: jwks fetch failed: …`. The prefix comes from [`set_filter_name`]
//! (once, at start-up) and [`set_context_id`] (at the top of each callback; the glue in
//! [`crate::plugin`] does both). Disabled levels cost one comparison: [`set_max_level`] sets the
//! `log` crate's static filter to the less verbose of the filter's configured level and the
//! proxy's own, so nothing crosses into the host only to be dropped.
//!
//! The bridge writes through a plain function ([`HostLogger::new`] takes a sink), so it works
//! the same over `ProxyWasmHost` in the proxy and over a test sink natively. Never log a token,
//! cookie or key: pass it through [`redact`] / [`Redacted`], and dump headers with
//! [`loggable_headers`], which redacts sensitive ones by name.

use std::cell::Cell;
use std::fmt;

use crate::host::LogLevel;

thread_local! {
    // A proxy-wasm VM is single-threaded; thread-locals are plain globals there and stay
    // isolated per test thread natively.
    static FILTER_NAME: Cell<&'static str> = const { Cell::new("meshward") };
    static CONTEXT_ID: Cell<u32> = const { Cell::new(0) };
}

/// Sets the filter name that prefixes every line (call once at start-up).
pub fn set_filter_name(name: &'static str) {
    FILTER_NAME.with(|cell| cell.set(name));
}

/// The filter name used in prefixes.
pub fn filter_name() -> &'static str {
    FILTER_NAME.with(Cell::get)
}

/// Sets the context id that prefixes the following lines (call at the top of each callback).
pub fn set_context_id(context_id: u32) {
    CONTEXT_ID.with(|cell| cell.set(context_id));
}

/// The context id used in prefixes.
pub fn context_id() -> u32 {
    CONTEXT_ID.with(Cell::get)
}

/// `"<filter> #<context_id>: <message>"`.
pub fn format_line(filter: &str, context_id: u32, message: &dyn fmt::Display) -> String {
    format!("{filter} #{context_id}: {message}")
}

/// The proxy level of a `log` crate level.
pub fn to_host_level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

/// The `log` crate filter for a proxy level (`Critical` keeps errors only).
pub fn to_level_filter(level: LogLevel) -> log::LevelFilter {
    match level {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
    }
}

/// The level to log at: the less verbose of the filter's configured level (if any) and the
/// proxy's level.
pub fn effective_level(configured: Option<LogLevel>, host: LogLevel) -> LogLevel {
    configured.map_or(host, |configured| configured.max(host))
}

/// Applies [`effective_level`] to the `log` crate's global filter.
pub fn set_max_level(configured: Option<LogLevel>, host: LogLevel) {
    log::set_max_level(to_level_filter(effective_level(configured, host)));
}

/// A `log::Log` that prefixes lines and hands them to `sink` (in the proxy, `ProxyWasmHost::log`).
#[derive(Debug, Clone, Copy)]
pub struct HostLogger {
    sink: fn(LogLevel, &str),
}

impl HostLogger {
    /// A logger writing through `sink`.
    pub const fn new(sink: fn(LogLevel, &str)) -> Self {
        Self { sink }
    }
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format_line(filter_name(), context_id(), record.args());
            (self.sink)(to_host_level(record.level()), &line);
        }
    }

    fn flush(&self) {}
}

// === secrets ===

/// A value that prints as `<redacted len=N>`: its content never reaches a log.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a [u8]);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted len={}>", self.0.len())
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `<redacted len=N>` for a secret (token, key, cookie): safe to log.
pub fn redact(secret: impl AsRef<[u8]>) -> String {
    Redacted(secret.as_ref()).to_string()
}

/// Whether a header usually carries credentials (by name, case-insensitive): `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`, and any name containing `token`, `secret`,
/// `password`, `api-key`/`apikey`, `session` or `credential`.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token",
        "secret",
        "password",
        "api-key",
        "apikey",
        "session",
        "credential",
    ]
    .iter()
    .any(|needle| name.contains(needle))
}

/// `name: value` lines joined by `, ` for a debug log, with sensitive headers redacted and
/// non-UTF-8 values shown lossily.
pub fn loggable_headers(headers: &[(String, Vec<u8>)]) -> String {
    headers
        .iter()
        .map(|(name, value)| {
            if is_sensitive_header(name) {
                format!("{name}: {}", Redacted(value))
            } else {
                format!("{name}: {}", String::from_utf8_lossy(value))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::RefCell;

    use log::Log;

    use super::*;

    thread_local! {
        static LINES: RefCell<Vec<(LogLevel, String)>> = const { RefCell::new(Vec::new()) };
    }

    fn sink(level: LogLevel, line: &str) {
        LINES.with(|lines| lines.borrow_mut().push((level, line.to_owned())));
    }

    #[test]
    fn lines_carry_filter_name_and_context_id() {
        set_filter_name("trace_id");
        set_context_id(12);
        // The global max level is shared by parallel tests: this one needs only "not Off".
        log::set_max_level(log::LevelFilter::Trace);
        let logger = HostLogger::new(sink);
        logger.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("jwks fetch failed: {}", 503))
                .build(),
        );
        let lines = LINES.with(|lines| lines.borrow().clone());
        assert_eq!(
            lines,
            [(
                LogLevel::Warn,
                "trace_id #12: jwks fetch failed: 503".to_owned()
            )]
        );
    }

    #[test]
    fn effective_level_is_the_less_verbose_one() {
        assert_eq!(effective_level(None, LogLevel::Warn), LogLevel::Warn);
        assert_eq!(
            effective_level(Some(LogLevel::Debug), LogLevel::Warn),
            LogLevel::Warn
        );
        assert_eq!(
            effective_level(Some(LogLevel::Error), LogLevel::Info),
            LogLevel::Error
        );
        assert_eq!(to_level_filter(LogLevel::Critical), log::LevelFilter::Error);
        assert_eq!(to_host_level(log::Level::Debug), LogLevel::Debug);
    }

    #[test]
    fn secrets_never_appear_in_redacted_output() {
        let token = "eyJhbGciOiJSUzI1NiJ9.secret-payload.sig";
        let shown = redact(token);
        assert_eq!(shown, format!("<redacted len={}>", token.len()));
        assert!(!format!("{:?}", Redacted(token.as_bytes())).contains("secret"));
    }

    #[test]
    fn sensitive_headers_are_redacted_in_dumps() {
        let headers = vec![
            ("authorization".to_owned(), b"Bearer abc.def.ghi".to_vec()),
            ("Cookie".to_owned(), b"sid=123".to_vec()),
            ("x-api-key".to_owned(), b"k-123".to_vec()),
            ("x-auth-token".to_owned(), b"t-123".to_vec()),
            ("x-request-id".to_owned(), b"r-1".to_vec()),
        ];
        let dump = loggable_headers(&headers);
        for secret in ["abc.def", "sid=123", "k-123", "t-123"] {
            assert!(!dump.contains(secret), "{dump}");
        }
        assert!(dump.contains("x-request-id: r-1"), "{dump}");
        assert!(
            dump.starts_with("authorization: <redacted len=18>"),
            "{dump}"
        );
    }
}
