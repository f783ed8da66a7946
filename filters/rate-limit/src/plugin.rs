//! proxy-wasm registration: the core's glue drives [`Filter`] (see `filter.rs`).

use crate::filter::Filter;

proxy_wasm::main! {{
    // Log prefix, `log` bridge, panic hook, and the root and stream contexts.
    meshward_core::plugin::register::<Filter>("rate-limit");
}}
