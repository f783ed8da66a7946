//! The imports a proxy-wasm module sees: `env.proxy_*` (Envoy's behaviour and status codes)
//! and the WASI preview1 subset Envoy provides. One `Linker::func_wrap` per import; any other
//! import fails the load, as in Envoy.

mod env;
mod mem;
mod wasi;

use wasmtime::Linker;

use crate::engine::Module;
use crate::types::LoadError;
use crate::vm::HostState;

/// proxy-wasm status codes (cpp `WasmResult`).
pub(crate) mod status {
    pub(crate) const OK: i32 = 0;
    pub(crate) const NOT_FOUND: i32 = 1;
    pub(crate) const BAD_ARGUMENT: i32 = 2;
    pub(crate) const SERIALIZATION_FAILURE: i32 = 3;
    pub(crate) const PARSE_FAILURE: i32 = 4;
    pub(crate) const INVALID_MEMORY_ACCESS: i32 = 6;
    pub(crate) const EMPTY: i32 = 7;
    pub(crate) const CAS_MISMATCH: i32 = 8;
    pub(crate) const INTERNAL_FAILURE: i32 = 10;
    pub(crate) const UNIMPLEMENTED: i32 = 12;
}

/// Every `env` import the host provides (the 37 the Rust SDK 0.2.x imports, plus
/// `proxy_get_buffer_status` and `proxy_get_header_map_size` for non-Rust modules).
pub const ENV_IMPORTS: &[&str] = env::NAMES;

/// Every WASI function provided, under `wasi_snapshot_preview1` and `wasi_unstable`.
pub const WASI_IMPORTS: &[&str] = wasi::NAMES;

/// Builds the linker with every import.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>, LoadError> {
    let mut linker = Linker::new(engine);
    env::define(&mut linker)
        .map_err(|e| LoadError::Instantiate(format!("defining env imports: {e:#}")))?;
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        wasi::define(&mut linker, module)
            .map_err(|e| LoadError::Instantiate(format!("defining {module}: {e:#}")))?;
    }
    Ok(linker)
}

/// Envoy's load-time checks: an ABI version export and no import outside the provided set.
pub(crate) fn check_module(module: &Module) -> Result<(), LoadError> {
    let exports = module.exports();
    let abi_known = [
        "proxy_abi_version_0_2_1",
        "proxy_abi_version_0_2_0",
        "proxy_abi_version_0_1_0",
    ]
    .iter()
    .any(|v| exports.iter().any(|e| e == v));
    if !abi_known {
        return Err(LoadError::MissingAbiVersion);
    }
    for import in module.inner.imports() {
        let provided = match import.module() {
            "env" => ENV_IMPORTS.contains(&import.name()),
            "wasi_snapshot_preview1" | "wasi_unstable" => WASI_IMPORTS.contains(&import.name()),
            _ => false,
        };
        if !provided {
            return Err(LoadError::UnknownImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    Ok(())
}
