//! The plugin configuration: where the token comes from and how long streams may wait for it.
//!
//! ```json
//! {"cluster": "token-service", "authority": "token-service", "path": "/token",
//!  "timeoutMs": 1000, "waitMs": 2000, "maxWaiters": 64, "tickMs": 100}
//! ```
//!
//! Every field is optional (an empty configuration means all defaults). Parsed with serde_json
//! directly: the core's configuration module is being migrated and this test-only filter does
//! not depend on it.

use serde::Deserialize;

/// The configuration after validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Envoy cluster the token is fetched from.
    pub cluster: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// `:path` of the fetch (a `GET`).
    pub path: String,
    /// Timeout of the fetch, enforced by the proxy (it then delivers a failed callout).
    pub timeout_ms: u32,
    /// How long a stream may wait for the token before it gets a 504.
    pub wait_ms: u32,
    /// Most streams waiting at once per VM; beyond that a request gets a 503 at once.
    pub max_waiters: usize,
    /// Period of the root's tick, which sweeps expired waiters.
    pub tick_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: "token-service".to_owned(),
            authority: "token-service".to_owned(),
            path: "/token".to_owned(),
            timeout_ms: 1000,
            wait_ms: 2000,
            max_waiters: 64,
            tick_ms: 100,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, an unknown field, or a field of the wrong type (serde names the field).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A field with a value the filter cannot work with.
    #[error("{field}: {reason}")]
    Invalid {
        /// The JSON field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Config {
    /// Parses and validates the plugin configuration; empty bytes mean the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: Self = if bytes.iter().all(u8::is_ascii_whitespace) {
            Self::default()
        } else {
            serde_json::from_slice(bytes)?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.cluster.is_empty() {
            return invalid("cluster", "must not be empty");
        }
        if self.authority.is_empty() {
            return invalid("authority", "must not be empty");
        }
        if !self.path.starts_with('/') {
            return invalid("path", "must start with '/'");
        }
        if self.wait_ms == 0 {
            return invalid("waitMs", "must be positive");
        }
        if self.tick_ms == 0 {
            return invalid("tickMs", "must be positive");
        }
        if self.max_waiters == 0 {
            return invalid("maxWaiters", "must be positive");
        }
        Ok(())
    }

    /// The headers of the token fetch, borrowing from the configuration.
    pub fn fetch_headers(&self) -> [(&str, &[u8]); 3] {
        [
            (":method", b"GET"),
            (":path", self.path.as_bytes()),
            (":authority", self.authority.as_bytes()),
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn empty_means_defaults_and_fields_override_them() {
        assert_eq!(Config::parse(b"").unwrap(), Config::default());
        assert_eq!(Config::parse(b"  ").unwrap().cluster, "token-service");
        let config =
            Config::parse(br#"{"cluster": "idp", "maxWaiters": 2, "waitMs": 50}"#).unwrap();
        assert_eq!(
            (config.cluster.as_str(), config.max_waiters, config.wait_ms),
            ("idp", 2, 50)
        );
        assert_eq!(config.path, "/token");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 4] = [
            (br#"{"clustr": "x"}"#, "unknown field `clustr`"),
            (br#"{"waitMs": "soon"}"#, "invalid type"),
            (br#"{"maxWaiters": 0}"#, "maxWaiters: must be positive"),
            (br#"{"path": "token"}"#, "path: must start with '/'"),
        ];
        for (json, expected) in cases {
            let error = Config::parse(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
