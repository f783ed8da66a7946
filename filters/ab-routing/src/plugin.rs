//! proxy-wasm registration: moves callbacks between the proxy and `filter`, nothing else.

use std::rc::Rc;

use meshward_core::effects::Action as CoreAction;
use meshward_core::host::proxy_wasm::ProxyWasmHost;
use meshward_core::host::{BufferKind, Host, LogLevel};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::filter::{Filter, Stream};

proxy_wasm::main! {{
    // Log prefix, `log` bridge and a panic hook that logs before the VM aborts.
    meshward_core::plugin::install("ab-routing");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AbRoutingRoot::default()) });
}}

const fn action(action: CoreAction) -> Action {
    match action {
        CoreAction::Continue => Action::Continue,
        CoreAction::Pause => Action::Pause,
    }
}

#[derive(Default)]
struct AbRoutingRoot {
    filter: Option<Rc<Filter>>,
}

impl Context for AbRoutingRoot {}

impl RootContext for AbRoutingRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = ProxyWasmHost::new();
        meshward_core::log::set_max_level(None, host.log_level());
        let bytes = match host.buffer(BufferKind::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("ab-routing: cannot read plugin config: {e}"),
                );
                return false;
            }
        };
        self.filter = Filter::configure(&host, &bytes).map(Rc::new);
        self.filter.is_some()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Must be Some: the SDK panics on None. Without a config the stream passes untouched.
        Some(Box::new(AbRouting {
            filter: self.filter.clone(),
            stream: Stream::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AbRouting {
    filter: Option<Rc<Filter>>,
    stream: Stream,
}

impl Context for AbRouting {}

impl HttpContext for AbRouting {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &self.filter {
            Some(filter) => action(self.stream.on_request_headers(filter, &ProxyWasmHost)),
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &self.filter {
            Some(filter) => action(self.stream.on_response_headers(filter, &ProxyWasmHost)),
            None => Action::Continue,
        }
    }
}
