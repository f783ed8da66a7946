//! proxy-wasm registration: moves data between the proxy and `filter`, nothing else.

use std::rc::Rc;

use meshward_core::host::proxy_wasm::ProxyWasmHost;
use meshward_core::host::{BufferKind, Host, LogLevel, MapKind};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::config::Config;
use crate::filter::{self, Flow};
use crate::logic::ResponseMemo;
use crate::metrics::Metrics;

proxy_wasm::main! {{
    // Log prefix, `log` bridge and a panic hook that logs before the VM aborts.
    meshward_core::plugin::install("trace-id");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TraceIdRoot::default()) });
}}

#[derive(Default)]
struct TraceIdRoot {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
}

impl Context for TraceIdRoot {}

impl RootContext for TraceIdRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = ProxyWasmHost::new();
        meshward_core::log::set_max_level(None, host.log_level());
        let bytes = match host.buffer(BufferKind::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("trace-id: cannot read plugin config: {e}"),
                );
                return false;
            }
        };
        self.config = filter::configure(&host, &bytes).map(Rc::new);
        self.config.is_some()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Must be Some: the SDK panics on None. Without a config the stream passes untouched.
        Some(Box::new(TraceId {
            config: self.config.clone(),
            metrics: Rc::clone(&self.metrics),
            memo: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TraceId {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    /// Request headers are gone in the response phase (Envoy), so keep what it needs.
    memo: Option<ResponseMemo>,
}

impl Context for TraceId {}

impl HttpContext for TraceId {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = &self.config else {
            return Action::Continue;
        };
        let host = ProxyWasmHost::in_headers_callback(MapKind::RequestHeaders);
        let (flow, memo) = filter::on_request_headers(config, &self.metrics, &host);
        self.memo = memo;
        match flow {
            Flow::Continue => Action::Continue,
            Flow::Stop => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(config) = &self.config {
            filter::on_response_headers(
                config,
                &self.metrics,
                &ProxyWasmHost::in_headers_callback(MapKind::ResponseHeaders),
                self.memo.as_ref(),
            );
        }
        Action::Continue
    }
}
