//! The glue between the proxy and the pure decisions, written against the core's [`Host`] so it
//! runs natively against `MockHost` in tests; `plugin` only forwards proxy-wasm callbacks here.
//!
//! Per request: read lazily only what the configured experiments need (each header through
//! Envoy's joined `request.headers.<name>` view, the cookie header, the path and the client
//! address at most once), read the clock once when a window or a sticky cookie needs it, decide,
//! apply the effects, then count cookie results.

use std::cell::{OnceCell, RefCell};
use std::net::IpAddr;

use meshward_core::effects::{self, Action, ApplyError, Effects};
use meshward_core::host::{Host, HostError, LogLevel, MapKind, PropertyPath};
use meshward_core::net::parse_peer_address;
use meshward_core::plugin::on_error;
use meshward_core::route_match::MatchInput;

use crate::config::{self, Config};
use crate::logic::{Context, Decision, Inputs};
use crate::metrics::{Metrics, Phase};

/// `details` of the local reply `failureMode: deny` sends (shown in access logs).
pub const FAILURE_DETAILS: &str = "meshward_ab_routing_error";

static SOURCE_ADDRESS: PropertyPath = PropertyPath::from_static("source\0address");
static REQUEST_PATH: PropertyPath = PropertyPath::from_static("request\0path");
static COOKIE: PropertyPath = PropertyPath::from_static("request\0headers\0cookie");

fn request_header(name: &str) -> PropertyPath {
    PropertyPath::new(&["request", "headers", name])
}

/// One configured filter on one VM: configuration, metric ids and paths.
#[derive(Debug)]
pub struct Filter {
    /// The validated configuration.
    pub config: Config,
    /// Metric families (ids of this VM).
    pub metrics: Metrics,
    request_id: PropertyPath,
    experiment_headers: Vec<PropertyPath>,
    properties: Vec<Option<PropertyPath>>,
    needs_clock: bool,
}

impl Filter {
    /// Parses the plugin configuration and defines the metrics; logs the reason and returns
    /// `None` when the configuration is invalid.
    pub fn configure(host: &(impl Host + ?Sized), bytes: &[u8]) -> Option<Self> {
        let config = match config::parse(bytes) {
            Ok(config) => config,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("ab-routing: invalid plugin config: {e}"),
                );
                return None;
            }
        };
        Some(Self {
            metrics: Metrics::define(host, &config),
            request_id: request_header(&config.request_id_header),
            experiment_headers: config
                .experiments
                .iter()
                .map(|e| request_header(&e.header))
                .collect(),
            properties: config
                .experiments
                .iter()
                .map(|e| e.property.clone())
                .collect(),
            needs_clock: config.needs_clock(),
            config,
        })
    }

    fn context(&self) -> Context<'_> {
        Context {
            config: &self.config,
            request_id: &self.request_id,
            experiment_headers: &self.experiment_headers,
        }
    }
}

/// The request as the logic sees it: each value read from the proxy on first use. The first
/// hostcall failure is kept and fails the request after the decision.
struct HostInputs<'h, H: Host + ?Sized> {
    host: &'h H,
    path: OnceCell<Option<Vec<u8>>>,
    cookie: OnceCell<Option<Vec<u8>>>,
    client_ip: OnceCell<Option<IpAddr>>,
    error: RefCell<Option<HostError>>,
}

impl<'h, H: Host + ?Sized> HostInputs<'h, H> {
    fn new(host: &'h H) -> Self {
        Self {
            host,
            path: OnceCell::new(),
            cookie: OnceCell::new(),
            client_ip: OnceCell::new(),
            error: RefCell::new(None),
        }
    }

    fn read(&self, path: &PropertyPath) -> Option<Vec<u8>> {
        match self.host.property(path) {
            Ok(value) => value,
            Err(error) => {
                self.error.borrow_mut().get_or_insert(error);
                None
            }
        }
    }
}

impl<H: Host + ?Sized> MatchInput for HostInputs<'_, H> {
    fn path(&self) -> Option<&[u8]> {
        self.path
            .get_or_init(|| self.read(&REQUEST_PATH))
            .as_deref()
    }

    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.read(&request_header(name))
            .map(std::borrow::Cow::Owned)
    }
}

impl<H: Host + ?Sized> Inputs for HostInputs<'_, H> {
    fn property(&self, path: &PropertyPath) -> Option<Vec<u8>> {
        self.read(path)
    }

    fn cookie_header(&self) -> Option<&[u8]> {
        self.cookie.get_or_init(|| self.read(&COOKIE)).as_deref()
    }

    fn client_ip(&self) -> Option<IpAddr> {
        *self.client_ip.get_or_init(|| {
            self.read(&SOURCE_ADDRESS)
                .and_then(|raw| parse_peer_address(&raw))
        })
    }
}

/// One stream: what the request phase decided, for the response phase.
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
        let now = if filter.needs_clock {
            Some(host.now().map_err(ApplyError::reading)?)
        } else {
            None
        };
        let inputs = HostInputs::new(host);
        let ctx = filter.context();
        self.decision.decide(&ctx, &inputs, now);
        if let Some(error) = inputs.error.into_inner() {
            return Err(ApplyError::reading(error));
        }
        self.decided = true;
        let mut effects = Effects::new();
        self.decision
            .request_effects(&ctx, &filter.properties, &filter.metrics, &mut effects);
        let action = effects::apply(host, MapKind::RequestHeaders, &effects)?.action;
        for (i, result) in self.decision.cookies.iter().enumerate() {
            if let Some(result) = result {
                filter
                    .metrics
                    .cookies
                    .add(host, Metrics::cookie(i, *result), 1);
            }
        }
        Ok(action)
    }

    /// Request headers: decide and apply. On a host failure, every experiment header is still
    /// removed (best effort) so a client cannot pick a variant, then `failureMode` decides.
    pub fn on_request_headers(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        match self.request(filter, host) {
            Ok(action) => action,
            Err(error) => {
                self.decided = false;
                for exp in &filter.config.experiments {
                    let _ = host.remove_header(MapKind::RequestHeaders, &exp.header);
                }
                filter
                    .metrics
                    .host_failures
                    .add(host, Phase::Request as usize, 1);
                on_error(host, filter.config.failure_mode, FAILURE_DETAILS, &error)
            }
        }
    }

    /// Response headers (also of local replies from later filters): cookies and variant headers.
    pub fn on_response_headers(&self, filter: &Filter, host: &(impl Host + ?Sized)) -> Action {
        let Some(decision) = self.decision() else {
            return Action::Continue;
        };
        let mut effects = Effects::new();
        decision.response_effects(&filter.config, &mut effects);
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
        let bytes = meshward_core::plugin::plugin_configuration(host)?;
        Filter::configure(host, &bytes)
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
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use meshward_core::host::mock::{Hostcall, MockHost};

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> String {
        format!(
            r#"{{"experiments": [{{"name": "checkout", "header": "x-variant",
                "property": "ab_checkout", "responseHeader": "x-variant",
                "variants": [{{"name": "v1", "weight": 50}}, {{"name": "v2", "weight": 50}}],
                "key": {{"header": "x-user"}}, "sticky": {{}}}}],
              "cookieKeys": {{"signing": "{KEY}"}},
              "override": {{"secret": "qa-secret-0123456789"}}}}"#
        )
    }

    fn run(host: &MockHost, filter: &Filter) -> Stream {
        let mut stream = Stream::default();
        assert_eq!(stream.on_request_headers(filter, host), Action::Continue);
        host.put_header_map(
            MapKind::ResponseHeaders,
            vec![(":status".to_owned(), b"200".to_vec())],
        );
        stream.on_response_headers(filter, host);
        stream
    }

    fn cookie_of(host: &MockHost) -> String {
        let set = host.header_values(MapKind::ResponseHeaders, "set-cookie");
        set[0].split(';').next().unwrap().to_owned()
    }

    #[test]
    fn assigns_sets_header_property_cookie_and_clears_route_cache() {
        let host = MockHost::new()
            .with_request_header("x-user", "alice")
            .with_request_header("x-variant", "spoofed");
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        run(&host, &filter);
        let variant = host.request_header("x-variant").unwrap();
        assert!(variant == "v1" || variant == "v2");
        assert_eq!(
            host.property_value(&["ab_checkout"]).unwrap(),
            variant.as_bytes()
        );
        assert_eq!(
            host.header_values(MapKind::ResponseHeaders, "x-variant"),
            std::slice::from_ref(&variant)
        );
        let set = host.header_values(MapKind::ResponseHeaders, "set-cookie");
        assert_eq!(set.len(), 1);
        assert!(set[0].starts_with(&format!("ab_checkout={variant}.")));
        assert!(set[0].ends_with("; Max-Age=2592000; Path=/; SameSite=Lax; Secure; HttpOnly"));
        assert!(
            host.foreign_calls()
                .iter()
                .any(|(name, _)| name == "clear_route_cache")
        );
        assert_eq!(
            host.metric_value(&format!(
                "experiment=.=checkout;.;variant=.={variant};.;source=.=hash;.;meshward_ab_routing_exposures_total"
            )),
            Some(1)
        );
    }

    #[test]
    fn sticky_cookie_is_honoured_and_forgeries_are_counted() {
        // Find the variant alice hashes to, then present a cookie for the other one.
        let host = MockHost::new().with_request_header("x-user", "alice");
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        run(&host, &filter);
        let hashed = host.request_header("x-variant").unwrap();
        let other = if hashed == "v1" { "v2" } else { "v1" };
        // A cookie issued for `other` (as if the user was assigned before a reshuffle).
        let mac = crate::cookie::derive_key(KEY.as_bytes(), "checkout", b"checkout").unwrap();
        let now_secs = MockHost::new().now().unwrap() / 1_000_000_000;
        let value = crate::cookie::sign(&mac, other, now_secs - 10);
        let host = MockHost::new()
            .with_request_header("x-user", "alice")
            .with_request_header("cookie", format!("ab_checkout={value}"));
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        run(&host, &filter);
        assert_eq!(host.request_header("x-variant").unwrap(), other);
        assert!(
            host.header_values(MapKind::ResponseHeaders, "set-cookie")
                .is_empty()
        );
        // Forged: same shape, other variant name, no valid tag → re-assigned by hash.
        let forged = value.replacen(other, &hashed, 1);
        let host = MockHost::new()
            .with_request_header("x-user", "alice")
            .with_request_header("cookie", format!("ab_checkout={forged}"));
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        run(&host, &filter);
        assert_eq!(host.request_header("x-variant").unwrap(), hashed);
        assert_eq!(
            host.metric_value(
                "experiment=.=checkout;.;result=.=bad_signature;.;meshward_ab_routing_cookies_total"
            ),
            Some(1)
        );
        assert!(cookie_of(&host).starts_with(&format!("ab_checkout={hashed}.")));
    }

    #[test]
    fn override_needs_the_secret_and_the_secret_never_goes_upstream() {
        let with = |secret: &str| {
            MockHost::new()
                .with_request_header("x-user", "alice")
                .with_request_header("x-variant", "v2")
                .with_request_header("x-meshward-ab-secret", secret)
        };
        let host = with("qa-secret-0123456789");
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        run(&host, &filter);
        assert_eq!(host.request_header("x-variant").as_deref(), Some("v2"));
        assert_eq!(host.request_header("x-meshward-ab-secret"), None);
        let forced: Vec<_> = (0..20)
            .map(|i| {
                let host = with("wrong-secret-0123456")
                    .with_request_header("x-user", format!("user-{i}"));
                let filter = Filter::configure(&host, config().as_bytes()).unwrap();
                run(&host, &filter);
                (
                    host.request_header("x-variant").unwrap(),
                    host.metric_value(
                        "experiment=.=checkout;.;variant=.=v2;.;source=.=override;.;meshward_ab_routing_exposures_total",
                    ),
                )
            })
            .collect();
        assert!(forced.iter().all(|(_, n)| *n == Some(0)));
        assert!(forced.iter().any(|(v, _)| v == "v1"));
    }

    #[test]
    fn clear_route_cache_not_found_is_ignored() {
        let host = MockHost::new()
            .with_request_header("x-user", "alice")
            .with_foreign_function("clear_route_cache", Err(HostError::NotFound));
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        run(&host, &filter);
        assert!(host.request_header("x-variant").is_some());
    }

    #[test]
    fn host_failure_still_strips_client_headers() {
        let host = MockHost::new()
            .with_request_header("x-user", "alice")
            .with_request_header("x-variant", "v2")
            .failing_always(Hostcall::Property, HostError::BadArgument);
        let filter = Filter::configure(&host, config().as_bytes()).unwrap();
        let mut stream = Stream::default();
        assert_eq!(stream.on_request_headers(&filter, &host), Action::Continue);
        assert_eq!(host.request_header("x-variant"), None);
        assert_eq!(
            host.metric_value("phase=.=request;.;meshward_ab_routing_host_failures_total"),
            Some(1)
        );
    }

    #[test]
    fn invalid_config_is_logged_with_its_path() {
        let host = MockHost::new();
        let bad = r#"{"experiments": [{"name": "e", "header": "x-v", "variants": [{"name": "a", "weight": 0}]}]}"#;
        assert!(Filter::configure(&host, bad.as_bytes()).is_none());
        let logs = host.logs_at_least(LogLevel::Error);
        assert!(
            logs[0].starts_with("ab-routing: invalid plugin config: experiments[0].variants: "),
            "{logs:?}"
        );
        assert!(Filter::configure(&host, b"").is_some());
    }
}
