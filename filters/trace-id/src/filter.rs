//! The glue between the proxy and the pure decisions, written against the core's [`Host`] so it
//! runs natively against `MockHost` in tests; `plugin` only forwards proxy-wasm callbacks here.
//!
//! Per request: read the few headers the configuration needs, one by one (Envoy's
//! `request.headers.<name>` view joins duplicates, which the rules need to see), draw 40 random
//! bytes once, decide, apply the effects. Nothing is read that the decision does not use.

use meshward_core::effects::{self, Action, ApplyError, Effects};
use meshward_core::host::{Host, HostError, MapKind, PropertyPath};
use meshward_core::plugin::{on_error, read_plugin_config};

use crate::config::{self, Config, Policy};
use crate::logic::{B3_HEADERS, Decision, Incoming, RANDOM_BYTES, TRACEPARENT, TRACESTATE};
use crate::metrics::{Metrics, Phase};
use crate::request_id::parse_peer_address;

/// `details` of the local reply `failureMode: deny` sends (shown in access logs).
pub const FAILURE_DETAILS: &str = "meshward_trace_id_error";

static SOURCE_ADDRESS: PropertyPath = PropertyPath::from_static("source\0address");

fn request_header(name: &str) -> PropertyPath {
    PropertyPath::new(&["request", "headers", name])
}

/// The property paths of every header the configuration reads, built once at configure time.
#[derive(Debug)]
struct Paths {
    /// `requestId.header`, then each alias.
    request_id: Vec<PropertyPath>,
    original_id: Option<PropertyPath>,
    traceparent: PropertyPath,
    tracestate: PropertyPath,
    /// Read only when B3 is read or written.
    b3: Option<[PropertyPath; 6]>,
}

/// One configured filter on one VM: configuration, metric ids and paths.
#[derive(Debug)]
pub struct Filter {
    /// The validated configuration.
    pub config: Config,
    /// Metric families (ids of this VM).
    pub metrics: Metrics,
    paths: Paths,
}

impl Filter {
    /// Reads and validates the plugin configuration (the core's glue: it logs
    /// `trace-id: invalid plugin config: <path>: <reason>` and returns `None` when invalid), then
    /// defines the metrics and the header paths.
    pub fn configure(host: &(impl Host + ?Sized)) -> Option<Self> {
        let config = read_plugin_config::<config::RawConfig, Config>(host)?;
        let rid = &config.request_id;
        let paths = Paths {
            request_id: std::iter::once(&rid.header)
                .chain(&rid.aliases)
                .map(|name| request_header(name))
                .collect(),
            original_id: rid.original_id_header.as_deref().map(request_header),
            traceparent: request_header(TRACEPARENT),
            tracestate: request_header(TRACESTATE),
            b3: (config.b3_read || config.b3_write != config::B3Write::None)
                .then(|| B3_HEADERS.map(request_header)),
        };
        Some(Self {
            metrics: Metrics::define(host),
            config,
            paths,
        })
    }
}

/// The values read from the proxy for one request; [`Incoming`] borrows them.
#[derive(Default)]
struct Read {
    request_id: Option<(usize, Vec<u8>)>,
    original_id_present: bool,
    traceparent: Option<Vec<u8>>,
    tracestate: Option<Vec<u8>>,
    b3: [Option<Vec<u8>>; 6],
    source_ip: Option<std::net::IpAddr>,
}

fn read(filter: &Filter, host: &(impl Host + ?Sized)) -> Result<Read, HostError> {
    let paths = &filter.paths;
    let mut out = Read::default();
    for (i, path) in paths.request_id.iter().enumerate() {
        if let Some(value) = host.property(path)? {
            out.request_id = Some((i, value));
            break;
        }
    }
    if let Some(path) = &paths.original_id {
        out.original_id_present = host.property(path)?.is_some();
    }
    out.traceparent = host.property(&paths.traceparent)?;
    out.tracestate = host.property(&paths.tracestate)?;
    if let Some(b3) = &paths.b3 {
        for (slot, path) in out.b3.iter_mut().zip(b3) {
            *slot = host.property(path)?;
        }
    }
    // Only the trusted-peer policy needs the peer address: skip the hostcall otherwise.
    if filter.config.request_id.policy == Policy::KeepIfTrusted {
        out.source_ip = host
            .property(&SOURCE_ADDRESS)?
            .and_then(|raw| parse_peer_address(&raw));
    }
    Ok(out)
}

impl Read {
    fn incoming(&self) -> Incoming<'_> {
        Incoming {
            request_id: self.request_id.as_ref().map(|(i, v)| (*i, v.as_slice())),
            original_id_present: self.original_id_present,
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
            b3: match &self.b3 {
                [a, b, c, d, e, f] => [
                    a.as_deref(),
                    b.as_deref(),
                    c.as_deref(),
                    d.as_deref(),
                    e.as_deref(),
                    f.as_deref(),
                ],
            },
            source_ip: self.source_ip,
        }
    }
}

/// One stream: what the request phase decided, for the response phase (Envoy's request headers
/// are gone by then).
#[derive(Debug, Default)]
pub struct Stream {
    decision: Decision,
    decided: bool,
}

impl Stream {
    /// The decision of the request phase, once made.
    pub fn decision(&self) -> Option<&Decision> {
        self.decided.then_some(&self.decision)
    }

    fn request(
        &mut self,
        filter: &Filter,
        host: &(impl Host + ?Sized),
    ) -> Result<Action, ApplyError> {
        let read = read(filter, host).map_err(ApplyError::reading)?;
        let mut random = [0u8; RANDOM_BYTES];
        host.fill_random(&mut random).map_err(ApplyError::reading)?;
        self.decision
            .decide(&filter.config, &read.incoming(), &random);
        self.decided = true;
        let decision = &self.decision;
        let mut effects = Effects::new();
        decision.request_effects(&filter.config, &filter.metrics, &mut effects);
        Ok(effects::apply(host, MapKind::RequestHeaders, &effects)?.action)
    }

    /// Request headers: decide and apply; a host failure is counted and handled by
    /// `failureMode`.
    pub fn on_request_headers(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        match self.request(filter, host) {
            Ok(action) => action,
            Err(error) => {
                self.decided = false;
                filter
                    .metrics
                    .host_failures
                    .add(host, Phase::Request as usize, 1);
                on_error(host, filter.config.failure_mode, FAILURE_DETAILS, &error)
            }
        }
    }

    /// Response headers (also of local replies from later filters): echo what was decided.
    pub fn on_response_headers(&self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        let Some(decision) = self.decision() else {
            return Action::Continue;
        };
        // Formatted only when configured: the array alone costs its length in a bulk fill.
        let server_timing = filter
            .config
            .server_timing
            .then(|| decision.server_timing());
        let server_timing = server_timing.as_ref().map_or(&[][..], |value| &value[..]);
        let mut effects = Effects::new();
        decision.response_effects(&filter.config, server_timing, &mut effects);
        if let Err(error) = effects::apply(host, MapKind::ResponseHeaders, &effects) {
            filter
                .metrics
                .host_failures
                .add(host, Phase::Response as usize, 1);
            ::log::warn!("response headers: {error}");
        }
        Action::Continue
    }
}

/// The proxy-wasm glue is the core's ([`meshward_core::plugin::register`]); this says which
/// callbacks the filter handles.
impl meshward_core::plugin::HttpFilter for Filter {
    type Stream = Stream;

    fn configure(host: &(impl Host + ?Sized)) -> Option<Self> {
        Filter::configure(host)
    }

    fn on_request_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
        stream.on_request_headers(self, host)
    }

    fn on_response_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
        stream.on_response_headers(self, host)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use meshward_core::host::mock::{Hostcall, MockHost};

    use super::*;

    use meshward_core::host::{BufferKind, LogLevel};

    fn filter(host: &MockHost, json: &str) -> Filter {
        let configuring = MockHost::new().with_buffer(BufferKind::PluginConfiguration, json);
        let filter = Filter::configure(&configuring).unwrap();
        // Metric ids are per host: define them where the test sends its requests.
        Filter {
            metrics: crate::metrics::Metrics::define(host),
            ..filter
        }
    }

    #[test]
    fn request_and_response_round_trip_through_the_host() {
        let host = MockHost::new()
            .with_request_header(":method", "GET")
            .with_random_seed(7);
        let filter = filter(
            &host,
            r#"{"response": {"serverTiming": true}, "properties": true}"#,
        );
        let mut stream = Stream::default();
        assert_eq!(stream.on_request_headers(&filter, &host), Action::Continue);
        let decision = stream.decision().unwrap();
        let id = String::from_utf8(decision.request_id().to_vec()).unwrap();
        let tp = String::from_utf8(decision.traceparent().to_vec()).unwrap();
        assert_eq!(
            host.request_header("x-request-id").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            host.request_header("traceparent").as_deref(),
            Some(tp.as_str())
        );
        assert_eq!(
            host.property_value(&["meshward_request_id"]).as_deref(),
            Some(id.as_bytes())
        );
        assert_eq!(
            host.property_value(&["meshward_trace_id"]).as_deref(),
            tp.as_bytes().get(3..35)
        );
        assert_eq!(
            host.metric_value(
                "action=.=generated;.;reason=.=absent;.;meshward_trace_id_request_ids_total"
            ),
            Some(1)
        );
        host.put_header_map(
            MapKind::ResponseHeaders,
            vec![(":status".to_owned(), b"200".to_vec())],
        );
        stream.on_response_headers(&filter, &host);
        assert_eq!(
            host.header_values(MapKind::ResponseHeaders, "x-request-id"),
            [id]
        );
        assert_eq!(
            host.header_values(MapKind::ResponseHeaders, "server-timing"),
            [format!("traceparent;desc=\"{tp}\"")]
        );
    }

    #[test]
    fn reads_only_what_the_configuration_needs() {
        let host = MockHost::new().with_request_header("x-request-id", "client-1");
        let filter = filter(&host, "{}");
        Stream::default().on_request_headers(&filter, &host);
        // No peer address, no B3 and no properties by default.
        assert!(host.properties_set().is_empty());
        let host = MockHost::new()
            .with_request_header("x-request-id", "client-1")
            .with_property(&["source", "address"], "10.0.0.7:41000");
        let trusted = self::filter(
            &host,
            r#"{"requestId": {"policy": "keepIfTrusted", "trustedCidrs": ["10.0.0.0/8"]}}"#,
        );
        let mut stream = Stream::default();
        stream.on_request_headers(&trusted, &host);
        assert_eq!(stream.decision().unwrap().request_id(), b"client-1");
    }

    #[test]
    fn duplicated_headers_are_seen_through_the_joined_view() {
        let host = MockHost::new()
            .with_request_header("x-request-id", "a")
            .with_request_header("x-request-id", "b");
        let filter = filter(&host, "{}");
        let mut stream = Stream::default();
        stream.on_request_headers(&filter, &host);
        assert_eq!(
            host.metric_value(
                "action=.=replaced;.;reason=.=duplicated;.;meshward_trace_id_request_ids_total"
            ),
            Some(1)
        );
        assert_eq!(
            host.header_values(MapKind::RequestHeaders, "x-request-id")
                .len(),
            1
        );
    }

    #[test]
    fn host_failure_allows_by_default_and_denies_when_configured() {
        let failing = || {
            MockHost::new()
                .with_request_header(":method", "GET")
                .failing_always(Hostcall::SetHeader, HostError::BadArgument)
        };
        let host = failing();
        let allow = filter(&host, "{}");
        let mut stream = Stream::default();
        assert_eq!(stream.on_request_headers(&allow, &host), Action::Continue);
        assert!(stream.decision().is_none());
        assert!(host.local_response().is_none());
        assert_eq!(
            host.metric_value("phase=.=request;.;meshward_trace_id_host_failures_total"),
            Some(1)
        );
        let host = failing();
        let deny = filter(&host, r#"{"failureMode": "deny"}"#);
        assert_eq!(
            Stream::default().on_request_headers(&deny, &host),
            Action::Pause
        );
        let reply = host.local_response().unwrap();
        assert_eq!(
            (reply.status, reply.details.as_str()),
            (503, FAILURE_DETAILS)
        );
    }

    #[test]
    fn invalid_config_is_logged_with_its_path() {
        meshward_core::log::set_filter_name("trace-id");
        let host = MockHost::new().with_plugin_config(r#"{"requestId": {"maxLength": 0}}"#);
        assert!(Filter::configure(&host).is_none());
        let logs = host.logs_at_least(LogLevel::Error);
        assert_eq!(logs.len(), 1);
        assert!(
            logs[0].starts_with("trace-id: invalid plugin config: requestId.maxLength: "),
            "{logs:?}"
        );
        assert!(Filter::configure(&MockHost::new().with_plugin_config("")).is_some());
    }
}
