//! The glue between the proxy and the pure decisions, written against the [`Host`] trait so it
//! runs natively against `MockHost` in tests; `plugin` only forwards proxy-wasm callbacks here.

use meshward_core::host::{Host, HostError, LocalResponse, LogLevel, MapKind};
use meshward_core::ids::HostRandom;
use meshward_core::request::RequestView;

use crate::config::{self, Config, FailureMode, Policy};
use crate::logic::{self, HeaderOp, ResponseMemo};
use crate::metrics::{HOST_FAILURES, Metrics};
use crate::request_id::parse_peer_address;

/// What the proxy should do with the stream after the request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Forward the request.
    Continue,
    /// A local reply was sent (`failureMode: deny` after a host failure); stop the request.
    Stop,
}

/// Reads and validates the plugin configuration, logging the reason when it is invalid.
pub fn configure(host: &(impl Host + ?Sized), bytes: &[u8]) -> Option<Config> {
    match config::parse(bytes) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!("trace-id: invalid plugin config: {e}"),
            );
            None
        }
    }
}

fn apply(host: &(impl Host + ?Sized), map: MapKind, ops: &[HeaderOp]) -> Result<(), HostError> {
    for op in ops {
        match op {
            HeaderOp::Set(name, value) => host.set_header(map, name, value.as_bytes())?,
            HeaderOp::Add(name, value) => host.add_header(map, name, value.as_bytes())?,
            HeaderOp::Remove(name) => host.remove_header(map, name)?,
        }
    }
    Ok(())
}

fn decide_and_apply(
    cfg: &Config,
    metrics: &Metrics,
    host: &(impl Host + ?Sized),
) -> Result<ResponseMemo, HostError> {
    let view = RequestView::from_host(host)?;
    // Only the trusted-peer policy needs the peer address: skip the hostcall otherwise.
    let source_ip = if cfg.request_id.policy == Policy::KeepIfTrusted {
        host.property(&["source", "address"])
            .ok()
            .flatten()
            .and_then(|raw| parse_peer_address(&raw))
    } else {
        None
    };
    let decision = logic::decide_request(cfg, &view, source_ip, &mut HostRandom(host))?;
    apply(host, MapKind::RequestHeaders, &decision.header_ops)?;
    for (name, value) in &decision.properties {
        if let Err(e) = host.set_property(&[name], value.as_bytes()) {
            host.log(
                LogLevel::Warn,
                &format!("trace-id: cannot set property {name}: {e}"),
            );
        }
    }
    metrics.record(host, &decision);
    Ok(decision.memo())
}

/// Request headers phase: returns what to do next and what the response phase needs.
pub fn on_request_headers(
    cfg: &Config,
    metrics: &Metrics,
    host: &(impl Host + ?Sized),
) -> (Flow, Option<ResponseMemo>) {
    match decide_and_apply(cfg, metrics, host) {
        Ok(memo) => (Flow::Continue, Some(memo)),
        Err(e) => {
            metrics.increment(host, HOST_FAILURES, &[("phase", "request")]);
            host.log(
                LogLevel::Error,
                &format!("trace-id: request headers: host failure: {e}"),
            );
            match cfg.failure_mode {
                FailureMode::Allow => (Flow::Continue, None),
                FailureMode::Deny => {
                    let reply = LocalResponse {
                        status: 500,
                        details: "meshward_trace_id_host_failure".to_owned(),
                        ..LocalResponse::default()
                    };
                    if let Err(e) = host.send_local_response(&reply) {
                        host.log(
                            LogLevel::Error,
                            &format!("trace-id: cannot send local reply: {e}"),
                        );
                        return (Flow::Continue, None);
                    }
                    (Flow::Stop, None)
                }
            }
        }
    }
}

/// Response headers phase (also for local replies of later filters): echo what was decided.
pub fn on_response_headers(
    cfg: &Config,
    metrics: &Metrics,
    host: &(impl Host + ?Sized),
    memo: Option<&ResponseMemo>,
) {
    let ops = logic::decide_response(cfg, memo);
    if let Err(e) = apply(host, MapKind::ResponseHeaders, &ops) {
        metrics.increment(host, HOST_FAILURES, &[("phase", "response")]);
        host.log(
            LogLevel::Warn,
            &format!("trace-id: response headers: host failure: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use meshward_core::host::mock::{Hostcall, MockHost};

    use super::*;

    fn cfg(json: &str) -> Config {
        config::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn request_and_response_round_trip_through_the_host() {
        let host = MockHost::new()
            .with_request_header(":method", "GET")
            .with_random_seed(7);
        let cfg = cfg(r#"{"response": {"serverTiming": true}}"#);
        let metrics = Metrics::default();
        let (flow, memo) = on_request_headers(&cfg, &metrics, &host);
        assert_eq!(flow, Flow::Continue);
        let memo = memo.unwrap();
        assert_eq!(
            host.request_header("x-request-id").as_deref(),
            Some(memo.request_id.as_str())
        );
        assert_eq!(
            host.request_header("traceparent").as_deref(),
            Some(memo.traceparent.as_str())
        );
        assert_eq!(
            host.property_value(&["meshward_request_id"]).as_deref(),
            Some(memo.request_id.as_bytes())
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
        on_response_headers(&cfg, &metrics, &host, Some(&memo));
        assert_eq!(
            host.header_values(MapKind::ResponseHeaders, "x-request-id"),
            std::slice::from_ref(&memo.request_id)
        );
        assert_eq!(
            host.header_values(MapKind::ResponseHeaders, "server-timing"),
            [format!("traceparent;desc=\"{}\"", memo.traceparent)]
        );
    }

    #[test]
    fn trusted_policy_reads_the_peer_address() {
        let cfg =
            cfg(r#"{"requestId": {"policy": "keepIfTrusted", "trustedCidrs": ["10.0.0.0/8"]}}"#);
        let host = MockHost::new()
            .with_request_header(":method", "GET")
            .with_request_header("x-request-id", "client-1")
            .with_property(&["source", "address"], "10.0.0.7:41000");
        let (_, memo) = on_request_headers(&cfg, &Metrics::default(), &host);
        assert_eq!(memo.unwrap().request_id, "client-1");
    }

    #[test]
    fn host_failure_allows_by_default_and_denies_when_configured() {
        let failing = || {
            MockHost::new()
                .with_request_header(":method", "GET")
                .failing_always(Hostcall::SetHeader, HostError::BadArgument)
        };
        let host = failing();
        let (flow, memo) = on_request_headers(&Config::default(), &Metrics::default(), &host);
        assert_eq!((flow, memo), (Flow::Continue, None));
        assert!(host.local_response().is_none());
        let host = failing();
        let (flow, _) = on_request_headers(
            &cfg(r#"{"failureMode": "deny"}"#),
            &Metrics::default(),
            &host,
        );
        assert_eq!(flow, Flow::Stop);
        assert_eq!(host.local_response().map(|r| r.status), Some(500));
    }

    #[test]
    fn invalid_config_is_logged_with_its_path() {
        let host = MockHost::new();
        assert!(configure(&host, br#"{"requestId": {"maxLength": 0}}"#).is_none());
        let logs = host.logs_at_least(LogLevel::Error);
        assert_eq!(logs.len(), 1);
        assert!(
            logs[0].starts_with("trace-id: invalid plugin config: requestId.maxLength: "),
            "{logs:?}"
        );
        assert!(configure(&host, b"").is_some());
    }
}
