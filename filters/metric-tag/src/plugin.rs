//! proxy-wasm registration: moves callbacks between the proxy and `filter`, nothing else.

use std::rc::Rc;

use meshward_core::host::proxy_wasm::ProxyWasmHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::filter::{Filter, Stream};

proxy_wasm::main! {{
    // Log prefix, `log` bridge and a panic hook that logs before the VM aborts.
    meshward_core::plugin::install("metric-tag");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(MetricTagRoot::default()) });
}}

#[derive(Default)]
struct MetricTagRoot {
    filter: Option<Rc<Filter>>,
}

impl Context for MetricTagRoot {}

impl RootContext for MetricTagRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = ProxyWasmHost::new();
        meshward_core::plugin::sync_log_level(&host, None);
        self.filter = Filter::configure(&host).map(Rc::new);
        self.filter.is_some()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Must be Some: the SDK panics on None. Without a config the stream passes untouched.
        Some(Box::new(MetricTag {
            filter: self.filter.clone(),
            stream: Stream::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct MetricTag {
    filter: Option<Rc<Filter>>,
    stream: Stream,
}

impl Context for MetricTag {}

impl HttpContext for MetricTag {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(filter) = &self.filter {
            self.stream.on_request_headers(filter, &ProxyWasmHost);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(filter) = &self.filter {
            self.stream.on_response_headers(filter, &ProxyWasmHost);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(filter) = &self.filter {
            self.stream.on_log(filter, &ProxyWasmHost);
        }
    }
}
