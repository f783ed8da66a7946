//! One wasmtime engine per process; modules compiled once and cached by content.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::types::LoadError;

/// The wasmtime engine (fuel metering on) and a cache of compiled modules.
#[derive(Debug)]
pub struct HostEngine {
    engine: wasmtime::Engine,
    cache: Mutex<HashMap<u64, Vec<Module>>>,
}

/// A compiled proxy-wasm module (cheap to clone).
#[derive(Clone, Debug)]
pub struct Module {
    pub(crate) inner: wasmtime::Module,
    bytes: Arc<[u8]>,
}

impl Module {
    /// Size of the module binary in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Names of the module's imports as `module.name`.
    pub fn imports(&self) -> Vec<String> {
        self.inner
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }

    /// Names of the module's exports.
    pub fn exports(&self) -> Vec<String> {
        self.inner.exports().map(|e| e.name().to_owned()).collect()
    }
}

static GLOBAL: OnceLock<Result<HostEngine, String>> = OnceLock::new();

impl HostEngine {
    /// A new engine with fuel metering (for measurement and the test-only loop guard).
    ///
    /// # Errors
    /// wasmtime refuses the configuration.
    pub fn new() -> Result<Self, LoadError> {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok(Self {
            engine,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The process-wide engine (created on first use), so every test shares compiled modules.
    ///
    /// # Errors
    /// The engine could not be created.
    pub fn global() -> Result<&'static Self, LoadError> {
        GLOBAL
            .get_or_init(|| Self::new().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| LoadError::Compile(e.clone()))
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Loads and compiles a module file (`.wasm`, or `.wat` text), cached by content.
    ///
    /// # Errors
    /// The file cannot be read or compiled.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Module, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load_bytes(&bytes)
    }

    /// Compiles module bytes (binary or WAT text), cached by content.
    ///
    /// # Errors
    /// The bytes are not a valid module.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Module, LoadError> {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = hasher.finish();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = cache
                .get(&key)
                .and_then(|list| list.iter().find(|m| &*m.bytes == bytes))
            {
                return Ok(found.clone());
            }
        }
        let inner = wasmtime::Module::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let module = Module {
            inner,
            bytes: Arc::from(bytes),
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push(module.clone());
        Ok(module)
    }
}
