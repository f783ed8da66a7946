//! proxy-wasm registration: maps the SDK's callbacks to [`crate::filter`], nothing else.

use std::cell::RefCell;
use std::rc::Rc;

use meshward_core::effects::Action as CoreAction;
use meshward_core::host::proxy_wasm::ProxyWasmHost;
use meshward_core::host::{BufferKind, Host, LogLevel};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::config::Config;
use crate::filter;
use crate::logic::TokenCache;

proxy_wasm::main! {{
    meshward_core::plugin::install("callout");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CalloutRoot::default()) });
}}

/// The root context of one worker VM: owns the VM's token cache.
#[derive(Default)]
struct CalloutRoot {
    cache: Option<Rc<RefCell<TokenCache>>>,
}

impl Context for CalloutRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(cache) = &self.cache {
            filter::on_http_call_response(&ProxyWasmHost::new(), cache, token_id, num_headers);
        }
    }
}

impl RootContext for CalloutRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = ProxyWasmHost::new();
        meshward_core::plugin::sync_log_level(&host, None);
        let bytes = match host.buffer(BufferKind::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(error) => {
                host.log(
                    LogLevel::Error,
                    &format!("callout: cannot read plugin config: {error}"),
                );
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(error) => {
                host.log(
                    LogLevel::Error,
                    &format!("callout: invalid plugin config: {error}"),
                );
                return false;
            }
        };
        if let Err(error) = host.set_tick_period(config.tick_ms) {
            host.log(
                LogLevel::Error,
                &format!("callout: cannot arm the tick: {error}"),
            );
            return false;
        }
        self.cache = Some(Rc::new(RefCell::new(TokenCache::new(config))));
        true
    }

    fn on_tick(&mut self) {
        if let Some(cache) = &self.cache {
            filter::on_tick(&ProxyWasmHost::new(), cache);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Must be Some: the SDK panics on None. Without a config the stream passes untouched.
        Some(Box::new(CalloutStream {
            context_id,
            cache: self.cache.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct CalloutStream {
    context_id: u32,
    cache: Option<Rc<RefCell<TokenCache>>>,
}

impl Context for CalloutStream {
    fn on_done(&mut self) -> bool {
        if let Some(cache) = &self.cache {
            filter::on_stream_end(cache, self.context_id);
        }
        true
    }
}

impl HttpContext for CalloutStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cache) = &self.cache else {
            return Action::Continue;
        };
        match filter::on_request_headers(&ProxyWasmHost::new(), cache, self.context_id) {
            CoreAction::Continue => Action::Continue,
            CoreAction::Pause => Action::Pause,
        }
    }
}

/// `proxy_on_delete`: the SDK drops the context. Normally `on_done` already forgot it.
impl Drop for CalloutStream {
    fn drop(&mut self) {
        if let Some(cache) = &self.cache {
            filter::on_stream_end(cache, self.context_id);
        }
    }
}
